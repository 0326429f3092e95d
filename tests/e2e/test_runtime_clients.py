"""AWS's own runtime interface clients, unchanged, against condo's Runtime API."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, invoke_json, zip_dir

SYSTEM_PYTHON = "/usr/bin/python3.11"  # what examples/python-awslambdaric/bootstrap runs


def _pip_install(target: Path) -> subprocess.CompletedProcess:
    """awslambdaric has a C extension: install it for the interpreter the function will run on."""
    has_pip = subprocess.run([SYSTEM_PYTHON, "-m", "pip", "--version"], capture_output=True).returncode == 0
    if has_pip:
        cmd = [SYSTEM_PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-warn-script-location", "--target", str(target), "awslambdaric"]
    else:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--target", str(target), "--python-version", "3.11", "--only-binary=:all:",
               "--platform", "manylinux2014_x86_64", "--implementation", "cp", "awslambdaric"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_TARGET")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def awslambdaric_package(tmp_path_factory) -> Path:
    """examples/python-awslambdaric with awslambdaric (and its dependencies) installed beside it."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is not on this host; the example's bootstrap runs it")
    build = tmp_path_factory.mktemp("awslambdaric")
    out = _pip_install(build)
    if out.returncode != 0 or not (build / "awslambdaric").is_dir():
        pytest.skip(f"awslambdaric could not be installed: {out.stderr.strip()[-500:]}")
    for item in (EXAMPLES / "python-awslambdaric").iterdir():
        shutil.copy2(item, build / item.name)
    for cache in build.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return build


def test_awslambdaric_function_gets_the_tenant_id(awslambdaric_package, lambda_client, make_function):
    name = make_function(zip_dir(awslambdaric_package), runtime="provided.al2023", handler=None,
                         tenancy=True, MemorySize=256)["FunctionName"]
    for tenant in ("BlueTenant", "Blue Tenant:1/a.b=c+d-e@f_g", "GreenTenant", "BlueTenant"):
        result, resp = invoke_json(lambda_client, name, {"hello": "world"}, TenantId=tenant)
        assert resp["StatusCode"] == 200
        assert "FunctionError" not in resp, result
        assert result["tenant"] == tenant
        # The request id the client saw is the one the Invoke API answered with.
        assert result["requestId"] == resp["ResponseMetadata"]["RequestId"]


def test_awslambdaric_without_tenant_on_a_shared_function(awslambdaric_package, lambda_client, make_function):
    name = make_function(zip_dir(awslambdaric_package), runtime="provided", handler=None,
                         MemorySize=256)["FunctionName"]
    result, resp = invoke_json(lambda_client, name, {})
    assert "FunctionError" not in resp, result
    assert result["tenant"] is None


def test_awslambdaric_function_error(awslambdaric_package, lambda_client, make_function, tmp_path):
    # The same package, with the client pointed at a handler that raises.
    package = tmp_path / "pkg"
    shutil.copytree(awslambdaric_package, package)
    bootstrap = package / "bootstrap"
    bootstrap.write_text(bootstrap.read_text().replace("app.handler", "fail.handler"))
    (package / "fail.py").write_text("def handler(event, context):\n    raise KeyError('missing-key')\n")
    name = make_function(zip_dir(package), runtime="provided", handler=None, tenancy=True,
                         MemorySize=256)["FunctionName"]
    result, resp = invoke_json(lambda_client, name, {}, TenantId="T")
    assert resp["FunctionError"] == "Unhandled"
    assert result["errorType"] == "KeyError", result
    assert "missing-key" in result["errorMessage"]
