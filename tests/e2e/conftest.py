"""End-to-end fixtures: one real `condo serve` for the whole session, and the clients users have.

Nothing here talks to condo's internals: the server is driven only through its Lambda API, with
boto3, the real `aws` CLI (configured by `condo env`), or raw SigV4-signed HTTP.

Environment:
  CONDO_BIN   the condo binary (default: <repo>/target/debug/condo; build it with `cargo build`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Mapping

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CONDO_BIN = os.environ.get("CONDO_BIN", str(REPO / "target" / "debug" / "condo"))
REGION = "us-east-1"
ROLE = "arn:aws:iam::000000000000:role/condo-e2e"

READY_TIMEOUT_S = 60  # from spawn to the "condo ready on" line
STOP_TIMEOUT_S = 10  # from SIGTERM to exit
# Quick async retries, so a test can watch all three attempts of a failing Event invoke.
ASYNC_RETRY_DELAYS = ("1", "1")

PER_TENANT = {"TenantIsolationMode": "PER_TENANT"}

# What the AWS tooling must not pick up from the machine running the tests.
_FOREIGN_ENV = re.compile(r"^(AWS_|CONDO_|BOTO_)")


def clean_environ() -> dict[str, str]:
    """This process's environment without any AWS/condo settings of the person running the tests."""
    return {k: v for k, v in os.environ.items() if not _FOREIGN_ENV.match(k)}


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class CondoServer:
    """One `condo serve` process on a private data directory."""

    def __init__(self, binary: str, data_dir: Path, log_path: Path, extra_args: Iterable[str] = ()):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.listen = "127.0.0.1:0"  # the first start picks a free port; restarts reuse it
        self.endpoint: str | None = None
        self.runtimes: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None, "already running"
        log = open(self.log_path, "ab")
        log.write(f"\n===== condo start #{self.starts + 1} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--listen", self.listen, "--data-dir", str(self.data_dir),
             "--async-retry-delays", *ASYNC_RETRY_DELAYS, *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=clean_environ(),
        )
        log.close()
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(stream) -> None:
            for raw in iter(stream.readline, b""):
                lines.put(raw.decode("utf-8", "replace"))
            lines.put(None)

        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise RuntimeError(
                    f"condo printed no ready line within {READY_TIMEOUT_S} s\n{self.log_tail()}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                rc = self.proc.wait()
                self.proc = None
                raise RuntimeError(f"condo exited with status {rc} before it was ready\n{self.log_tail()}")
            m = re.match(r"condo ready on (http://\S+)", line.strip())
            if m:
                break
        self.starts += 1
        self.endpoint = m.group(1)
        self.listen = self.endpoint.removeprefix("http://")
        found = re.findall(r"runtimes: (.+)", self.log_path.read_text("utf-8", "replace"))
        self.runtimes = [r.strip() for r in found[-1].split(",")] if found else []

    def stop(self) -> int:
        """SIGTERM, and the server must be gone within STOP_TIMEOUT_S. Returns the exit status."""
        assert self.proc is not None, "not running"
        proc, self.proc = self.proc, None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"condo did not exit within {STOP_TIMEOUT_S} s of SIGTERM\n{self.log_tail()}")
        took = time.monotonic() - started
        assert took < STOP_TIMEOUT_S, took
        return rc

    def restart(self) -> None:
        """Stops the server (asserting a clean, timely exit) and starts it again on the same data
        directory and the same address, so every client made earlier keeps working."""
        rc = self.stop()
        assert rc == 0, f"condo exited with status {rc} after SIGTERM\n{self.log_tail()}"
        self.start()

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def log_tail(self, n: int = 60) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "--- condo log (tail) ---\n" + "\n".join(text.splitlines()[-n:])


@pytest.fixture(scope="session")
def condo() -> CondoServer:
    if not os.access(CONDO_BIN, os.X_OK):
        pytest.exit(f"condo binary not found at {CONDO_BIN}: run `cargo build` or set CONDO_BIN", returncode=2)
    root = Path(tempfile.mkdtemp(prefix="condo-e2e-"))
    server = CondoServer(CONDO_BIN, root / "data", root / "condo.log")
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            rc = server.stop()
            log = server.log_tail()
            shutil.rmtree(root, ignore_errors=True)
            assert rc == 0, f"condo exited with status {rc} after SIGTERM\n{log}"
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def start_server(tmp_path):
    """`start_server(*flags, data_dir=None)`: a second, private server with its own flags and data
    directory (under the test's tmp_path unless `data_dir` says where), for tests that need a
    configuration the shared one does not have. Stopped after the test."""
    servers: list[CondoServer] = []

    def start(*flags: str, data_dir: Path | None = None) -> CondoServer:
        root = tmp_path / f"condo-{len(servers)}"
        root.mkdir()
        server = CondoServer(CONDO_BIN, data_dir or root / "data", root / "condo.log", flags)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc is not None:
            rc = server.stop()
            assert rc == 0, f"condo exited with status {rc} after SIGTERM\n{server.log_tail()}"


def env_of(server: CondoServer) -> dict[str, str]:
    """What `condo env` tells a user to export for `server` (endpoint, access key pair, region)."""
    out = subprocess.run(
        [CONDO_BIN, "env", "--data-dir", str(server.data_dir), "--endpoint", server.endpoint],
        capture_output=True, text=True, timeout=30, env=clean_environ(),
    )
    assert out.returncode == 0, out.stderr
    exports = dict(re.findall(r"^export ([A-Z_]+)=(.*)$", out.stdout, re.M))
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        assert exports.get(key), f"`condo env` printed no {key}:\n{out.stdout}"
    assert exports["AWS_ENDPOINT_URL"] == server.endpoint
    return exports


def instance_cgroups(data_dir: Path) -> list[Path]:
    """A server's cgroup directories (`condo/<digest of its data dir>`) in every hierarchy that
    has one, v1 or v2; v1 hierarchies mounted twice (`cpu` and `cpu,cpuacct`) count once."""
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]
    root = Path("/sys/fs/cgroup")
    found = {p.resolve() for p in root.glob(f"*/condo/{digest}") if p.is_dir()}
    found |= {p for p in [root / "condo" / digest] if p.is_dir()}
    return sorted(found)


def client_for(server: CondoServer):
    """A boto3 Lambda client for `server`, configured from `condo env`."""
    env = env_of(server)
    return make_lambda_client(server.endpoint, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="session")
def condo_env(condo: CondoServer) -> dict[str, str]:
    """What `condo env` tells a user to export (endpoint, access key pair, region)."""
    return env_of(condo)


@pytest.fixture(scope="session")
def endpoint(condo: CondoServer) -> str:
    return condo.endpoint


@pytest.fixture(scope="session")
def credentials(condo_env) -> Credentials:
    return Credentials(condo_env["AWS_ACCESS_KEY_ID"], condo_env["AWS_SECRET_ACCESS_KEY"])


def make_lambda_client(endpoint: str, access_key: str, secret_key: str, **config):
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=REGION)
    return session.client(
        "lambda", endpoint_url=endpoint,
        config=Config(retries={"max_attempts": 1}, read_timeout=120, connect_timeout=10, **config))


@pytest.fixture(scope="session")
def lambda_client(endpoint, credentials):
    return make_lambda_client(endpoint, credentials.access_key, credentials.secret_key)


# --------------------------------------------------------------------------------------------
# The aws CLI
# --------------------------------------------------------------------------------------------


def _aws_executable() -> str:
    beside = Path(sys.executable).parent / "aws"  # the venv running pytest
    if beside.exists():
        return str(beside)
    found = shutil.which("aws")
    if not found:
        pytest.exit("the `aws` CLI is not installed (pip install awscli)", returncode=2)
    return found


@pytest.fixture(scope="session")
def aws_environ(condo_env, tmp_path_factory) -> dict[str, str]:
    env = clean_environ()
    env.update(condo_env)
    home = tmp_path_factory.mktemp("aws-home")
    env.update({
        # No config or credentials from the machine's ~/.aws.
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_RETRY_MODE": "standard",
        "AWS_DEFAULT_OUTPUT": "json",
        "AWS_PAGER": "",
    })
    return env


@pytest.fixture(scope="session")
def aws(aws_environ) -> Callable[..., tuple[int, str, str]]:
    """`aws(*args)` runs the real aws CLI against condo; returns (rc, stdout, stderr)."""
    exe = _aws_executable()

    def run(*args: str, timeout: float = 120) -> tuple[int, str, str]:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout,
                             env=aws_environ, stdin=subprocess.DEVNULL)
        return out.returncode, out.stdout, out.stderr

    return run


# --------------------------------------------------------------------------------------------
# Raw signed HTTP (for requests the SDKs refuse to send)
# --------------------------------------------------------------------------------------------


class RawResponse:
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self):
        return json.loads(self.body)

    @property
    def error_type(self) -> str | None:
        return self.headers.get("x-amzn-errortype")

    @property
    def message(self) -> str:
        try:
            data = self.json()
        except ValueError:
            return ""
        return data.get("message") or data.get("Message") or ""

    def __repr__(self) -> str:
        return f"RawResponse({self.status}, {self.error_type}, {self.body[:300]!r})"


def http_request(method: str, url: str, body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float = 60) -> RawResponse:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return RawResponse(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as e:
        return RawResponse(e.code, dict(e.headers), e.read())


@pytest.fixture(scope="session")
def signed_request(endpoint, credentials) -> Callable[..., RawResponse]:
    """`signed_request(method, path, body=None, headers=None)`: a SigV4-signed request (service
    `lambda`) built with botocore's own signer, sent with urllib."""

    def send(method: str, path: str, body: bytes | str | dict | None = None,
             headers: Mapping[str, str] | None = None, creds: Credentials | None = None) -> RawResponse:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        request = AWSRequest(method=method, url=endpoint + path, data=body or b"", headers=hdrs)
        SigV4Auth(creds or credentials, "lambda", REGION).add_auth(request)
        return http_request(method, request.url, body, dict(request.headers.items()))

    return send


# --------------------------------------------------------------------------------------------
# Function code
# --------------------------------------------------------------------------------------------


def zip_files(files: Mapping[str, str | bytes], executable: Iterable[str] = ()) -> bytes:
    """A ZIP, in memory, of `{path: contents}`; paths in `executable` get mode 0755."""
    executable = set(executable)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, contents in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so the mode below counts
            info.external_attr = ((0o100755 if name in executable else 0o100644) & 0xFFFF) << 16
            z.writestr(info, contents)
    return buf.getvalue()


def zip_dir(directory: Path, extra: Mapping[str, str | bytes] | None = None) -> bytes:
    """A ZIP, in memory, of everything under `directory`, keeping executable bits."""
    directory = Path(directory)
    files: dict[str, bytes] = {}
    executable = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(directory).as_posix()
            files[rel] = path.read_bytes()
            if os.access(path, os.X_OK):
                executable.append(rel)
    files.update(extra or {})
    return zip_files(files, executable)


def example_zip(name: str) -> bytes:
    """The ZIP of `examples/<name>`."""
    path = EXAMPLES / name
    assert path.is_dir(), f"no example {path}"
    return zip_dir(path)


# A multi-purpose Python function for the tests. Every answer carries `env`, an id drawn when the
# environment started, `memory`, a counter kept in memory, and the tenant id.
PROBE_PY = '''\
import json, os, sys, time

ENV = os.urandom(8).hex()  # drawn once per execution environment
memory = 0


def handler(event, context):
    global memory
    op = event.get("op", "count") if isinstance(event, dict) else "echo"
    if op != "peek":
        memory += 1
    out = {"env": ENV, "memory": memory, "tenant": context.tenant_id}
    if op == "echo":
        out["event"] = event
    elif op == "getenv":
        out["value"] = os.environ.get(event["name"])
    elif op == "context":
        out.update(
            memory_limit_in_mb=context.memory_limit_in_mb,
            function_name=context.function_name,
            function_version=context.function_version,
            invoked_function_arn=context.invoked_function_arn,
            remaining_ms=context.get_remaining_time_in_millis(),
            env_memory=os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
            client_context=context.client_context.custom if context.client_context else None,
        )
    elif op == "print":
        print(event["text"])
    elif op == "raise":
        raise ValueError(event.get("message", "probe failed on purpose"))
    elif op == "sleep":
        time.sleep(event["seconds"])
    elif op == "exit":
        os._exit(1)
    elif op == "py":  # run a snippet; it leaves its answer in `result`
        scope = {"event": event, "context": context}
        exec(event["code"], scope)
        out["result"] = scope.get("result")
    return out
'''


def probe_zip(**extra: str | bytes) -> bytes:
    return zip_files({"probe.py": PROBE_PY, **extra})


# --------------------------------------------------------------------------------------------
# Per-test helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def unique_name(request) -> Callable[[str], str]:
    """`unique_name("suffix")`: a function name no other test (or run) uses."""
    base = re.sub(r"[^A-Za-z0-9-]+", "-", request.node.name).strip("-")[:40]
    tag = uuid.uuid4().hex[:6]

    def make(suffix: str = "") -> str:
        return "-".join(p for p in ("e2e", base, suffix, tag) if p)

    return make


@pytest.fixture
def make_function(lambda_client, unique_name):
    """`make_function(zip, runtime=..., handler=..., tenancy=False, **CreateFunction members)`
    creates a function with boto3 and returns its configuration; it is deleted after the test."""
    created: list[str] = []

    def make(zip_bytes: bytes, runtime: str = "python3.11", handler: str | None = "probe.handler",
             tenancy: bool = False, name: str | None = None, **kwargs) -> dict:
        name = name or unique_name(str(len(created)) if created else "")
        args = dict(FunctionName=name, Runtime=runtime, Role=ROLE, Code={"ZipFile": zip_bytes}, **kwargs)
        if handler is not None:
            args["Handler"] = handler
        if tenancy:
            args["TenancyConfig"] = PER_TENANT
        config = lambda_client.create_function(**args)
        created.append(name)
        return config

    yield make
    for name in created:
        try:
            lambda_client.delete_function(FunctionName=name)
        except Exception:
            pass


def invoke_json(client, name: str, payload: dict | None = None, **kwargs) -> tuple[dict, dict]:
    """Synchronous boto3 invoke; returns (decoded payload, raw response)."""
    resp = client.invoke(FunctionName=name, Payload=json.dumps(payload or {}), **kwargs)
    body = resp["Payload"].read()
    return json.loads(body), resp


def error_of(error) -> tuple[int, str, str]:
    """(HTTP status, error code, message) of a botocore ClientError, given either the error
    itself or the `pytest.raises` record of one."""
    err = getattr(error, "value", error).response
    return (err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"], err["Error"].get("Message", ""))


def poll(check: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Calls `check` until it returns something truthy, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
