"""A `provided.al2023` function written in Rust with the AWS Lambda Rust runtime (`lambda_runtime`).

The examples under `examples/rust-counter` and `examples/rust-echo` are built here exactly as CI
builds them (their own cargo roots, not workspace members):

    cargo build --release --manifest-path examples/<x>/Cargo.toml --target-dir target/examples

Both produce `target/examples/release/bootstrap`, so each build's binary is read right after that
build, before the other one can replace it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PER_TENANT, REPO, invoke_json, zip_files

RUNTIME = "provided.al2023"
TARGET_DIR = Path("target") / "examples"  # relative to the repository, as CI passes it
BUILD_TIMEOUT_S = 1200  # a clean release build takes about a minute on a 2-core machine

# (tenant, expected memory and disk counter): the launch-talk demo.
SCRIPT = [("Blue", n) for n in range(1, 6)] + [("Green", 1), ("Blue", 6), ("Orange", 1)]


def _cargo() -> str | None:
    found = shutil.which("cargo")
    if found:
        return found
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin" / "cargo"
    return str(home) if os.access(home, os.X_OK) else None


def build_release(manifest: Path, binary_name: str) -> bytes:
    """Builds the crate at `manifest` (relative to the repository) in release mode into the shared
    target directory and returns its executable `binary_name`. Skips when cargo is missing."""
    cargo = _cargo()
    if cargo is None:
        pytest.skip("cargo is not installed: cannot build the Rust test functions")
    assert (REPO / manifest).is_file(), f"no crate at {manifest}"
    started = time.monotonic()
    out = subprocess.run(
        [cargo, "build", "--release", "--manifest-path", str(manifest), "--target-dir", str(TARGET_DIR)],
        cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL,
    )
    took = time.monotonic() - started
    assert out.returncode == 0, f"building {manifest} failed after {took:.0f} s:\n{out.stderr[-6000:]}"
    print(f"built {manifest.parent} in {took:.1f} s")
    binary = REPO / TARGET_DIR / "release" / binary_name
    assert os.access(binary, os.X_OK), f"{binary} is missing or not executable"
    data = binary.read_bytes()
    assert data[:4] == b"\x7fELF", f"{binary} is not an ELF executable"
    return data


def build_example(name: str) -> bytes:
    """Builds `examples/<name>` in release mode and returns its `bootstrap` executable."""
    return build_release(Path("examples") / name / "Cargo.toml", "bootstrap")


def bootstrap_zip(binary: bytes) -> bytes:
    return zip_files({"bootstrap": binary}, executable=["bootstrap"])


@pytest.fixture(scope="module")
def counter_zip() -> bytes:
    return bootstrap_zip(build_example("rust-counter"))


@pytest.fixture(scope="module")
def echo_zip() -> bytes:
    return bootstrap_zip(build_example("rust-echo"))


def test_the_code_package_keeps_the_executable_bit(counter_zip):
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(counter_zip)) as z:
        (info,) = z.infolist()
    assert info.filename == "bootstrap"
    assert (info.external_attr >> 16) & 0o777 == 0o755


def test_rust_counter_demo_per_tenant(lambda_client, make_function, counter_zip):
    created = make_function(counter_zip, runtime=RUNTIME, handler=None, tenancy=True)
    name = created["FunctionName"]
    assert created["Runtime"] == RUNTIME
    assert created["TenancyConfig"] == PER_TENANT
    assert created["State"] == "Active"

    for i, (tenant, count) in enumerate(SCRIPT):
        result, resp = invoke_json(lambda_client, name, {"step": i}, TenantId=tenant)
        assert resp["StatusCode"] == 200
        assert "FunctionError" not in resp, (i, tenant, result)
        # `tenant` is what the Rust runtime put in `event.context.tenant_id`.
        assert result == {"tenant": tenant, "memory": count, "disk": count}, (i, tenant)


@pytest.mark.parametrize("tenant", [
    "Tenant 1:a.b/c=d+e-f@g_",
    "t",
    ("acme-" * 60)[:256],
], ids=["punctuation", "one-char", "256-chars"])
def test_the_tenant_id_reaches_the_rust_context_unchanged(tenant, lambda_client, make_function, counter_zip):
    name = make_function(counter_zip, runtime=RUNTIME, handler=None, tenancy=True)["FunctionName"]
    for count in (1, 2):
        result, resp = invoke_json(lambda_client, name, {}, TenantId=tenant)
        assert "FunctionError" not in resp, result
        assert result == {"tenant": tenant, "memory": count, "disk": count}


def test_without_tenancy_the_rust_context_has_no_tenant(lambda_client, make_function, counter_zip):
    name = make_function(counter_zip, runtime=RUNTIME, handler=None)["FunctionName"]
    for count in (1, 2):
        result, resp = invoke_json(lambda_client, name, {})
        assert "FunctionError" not in resp, result
        assert result == {"tenant": None, "memory": count, "disk": count}


def test_a_warm_environment_survives_fifteen_idle_seconds(lambda_client, make_function, counter_zip):
    name = make_function(counter_zip, runtime=RUNTIME, handler=None, tenancy=True)["FunctionName"]
    result, _ = invoke_json(lambda_client, name, {}, TenantId="Idle")
    assert result == {"tenant": "Idle", "memory": 1, "disk": 1}
    time.sleep(15)  # well within the server's idle timeout (600 s by default)
    result, resp = invoke_json(lambda_client, name, {}, TenantId="Idle")
    assert "FunctionError" not in resp, result
    assert result == {"tenant": "Idle", "memory": 2, "disk": 2}


def test_rust_echo_returns_the_payload_unchanged(lambda_client, make_function, echo_zip):
    name = make_function(echo_zip, runtime=RUNTIME, handler=None)["FunctionName"]
    for payload in ({"a": [1, 2.5, {"b": None}], "s": "h\u00e9llo \u2603"}, [1, "two", True], "text", 42, None):
        resp = lambda_client.invoke(FunctionName=name, Payload=json.dumps(payload))
        body = resp["Payload"].read()
        assert "FunctionError" not in resp, body
        assert json.loads(body) == payload
