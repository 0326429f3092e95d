"""Adversarial end-to-end tests: attacker functions try to cross every isolation boundary condo promises.

Two attackers run the same attacks: `functions/attacker.py` (Python, through condo's managed
runtime) and `functions/attacker-native` (a Rust binary that speaks the Runtime API itself, so it
also attacks the protocol). Both answer with raw evidence (errno names, listings, counts); the
assertions here decide whether an attack failed, never the attacker's own opinion.

Victims are tenants of the attacked functions and of another function. Each plants a secret (a
file in its /tmp, a value in memory, a child process carrying it in argv and environment); the
other function also holds one in its configured environment and its code. No attacker answer may
ever contain any of them, and after every attack each victim must still answer from the same
environment with its counter continuing, and the platform must keep serving.

The native attacker is built like the Rust examples:

    cargo build --release --manifest-path tests/e2e/functions/attacker-native/Cargo.toml --target-dir target/examples
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import PER_TENANT, REPO, ROLE, client_for, zip_files
from test_rust_runtime import _cargo, bootstrap_zip, build_release

FUNCTIONS = Path(__file__).resolve().parent / "functions"
NATIVE_MANIFEST = Path("tests") / "e2e" / "functions" / "attacker-native" / "Cargo.toml"
NATIVE_BINARY = "attacker"  # not `bootstrap`: the examples share the target directory

ATTACKER = "Mallory"
VICTIM = "Blue"
FLAVOURS = ["python", "native"]
RUNTIME = {"python": ("python3.11", "attacker.handler"), "native": ("provided.al2023", None)}
# The runtime's argv as /proc/<pid>/cmdline shows it: pid 1 of every environment.
PID1_CMDLINE = {"python": "/var/runtime/bootstrap.py", "native": "/var/task/bootstrap"}

REFUSED = {"EPERM", "EACCES", "ENOSYS"}  # a privileged syscall's acceptable answers
WRITE_REFUSED = {"EROFS", "EACCES", "EPERM"}
PIDS_MAX = 1024  # the environment's pids limit
NOFILE_MAX = 1024  # RLIMIT_NOFILE
LATENCY_BOUND_S = 1.0  # a neighbour's warm answer under attack
CONTROL_NEEDLE = "sbx_user1051"  # in every environment's own /etc/passwd: proves the walk reads files


# --------------------------------------------------------------------------------------------
# Code
# --------------------------------------------------------------------------------------------


def python_zip(**extra: str) -> bytes:
    return zip_files({
        "attacker.py": (FUNCTIONS / "attacker.py").read_text(),
        "victim.py": (FUNCTIONS / "victim.py").read_text(),
        **extra,
    })


def build_native_attacker() -> bytes | None:
    """The native attacker's ZIP (`bootstrap`, 0755), or None when cargo is missing."""
    if _cargo() is None:
        return None
    return bootstrap_zip(build_release(NATIVE_MANIFEST, NATIVE_BINARY))


@pytest.fixture(scope="module")
def native_zip() -> bytes | None:
    return build_native_attacker()


def code_for(flavour: str, native_zip: bytes | None) -> bytes:
    if flavour == "native":
        if native_zip is None:
            pytest.skip("cargo is not installed: cannot build the native attacker")
        return native_zip
    return python_zip()


def function_args(flavour: str) -> dict:
    runtime, handler = RUNTIME[flavour]
    return {"runtime": runtime, "handler": handler, "tenancy": True}


# --------------------------------------------------------------------------------------------
# Victims, attackers and the world they share
# --------------------------------------------------------------------------------------------


def secret() -> str:
    return "S3CR3T" + uuid.uuid4().hex


class Victim:
    """A tenant that planted a secret and must keep answering from the same environment."""

    def __init__(self, client, function: str, flavour: str, tenant: str = VICTIM):
        self.client, self.function, self.flavour, self.tenant = client, function, flavour, tenant
        self.secret = secret()
        self.env: str | None = None
        self.count = 0
        self.request_ids: list[str] = []

    def _invoke(self, payload: dict) -> tuple[dict, dict, float]:
        started = time.monotonic()
        resp = self.client.invoke(FunctionName=self.function, TenantId=self.tenant, Payload=json.dumps(payload))
        body = json.loads(resp["Payload"].read())
        took = time.monotonic() - started
        assert "FunctionError" not in resp, f"victim {self.function}/{self.tenant} failed: {body}"
        self.request_ids.append(resp["ResponseMetadata"]["RequestId"])
        return body, resp, took

    def plant(self) -> "Victim":
        body, _, _ = self._invoke({"op": "plant", "secret": self.secret})
        assert body["count"] == 1, body
        self.env, self.count = body["env"], 1
        return self

    def request(self, op: str, **args) -> dict:
        """One more request: same environment, counter continues."""
        body, _, took = self._invoke({"op": op, "secret": self.secret, **args})
        where = f"victim {self.function}/{self.tenant}"
        assert body["env"] == self.env, f"{where} lost its environment: {body}"
        assert body["count"] == self.count + 1, f"{where} lost its memory: {body}"
        self.count += 1
        body["took"] = took
        return body

    def check(self) -> dict:
        """One more request, and every copy of the secret is intact."""
        body = self.request("check")
        assert body["tmp_ok"] and body["memory_ok"] and body["child_ok"], \
            f"victim {self.function}/{self.tenant} lost its secret: {body}"
        return body


class World:
    """The attacked functions with their victims, plus a victim in another function."""

    def __init__(self, client):
        self.client = client
        self.functions: dict[str, str] = {}  # flavour -> the attacker's function
        self.victims: list[Victim] = []
        self.needles: list[str] = []  # every secret planted anywhere during this module
        self.created: list[str] = []

    def create(self, code: bytes, flavour: str, **kwargs) -> str:
        name = f"e2e-attacks-{flavour}-{uuid.uuid4().hex[:8]}"
        runtime, handler = RUNTIME[flavour]
        args = dict(FunctionName=name, Runtime=runtime, Role=ROLE, Code={"ZipFile": code},
                    TenancyConfig=PER_TENANT, Timeout=10, **kwargs)
        if handler:
            args["Handler"] = handler
        self.client.create_function(**args)
        self.created.append(name)
        return name

    def add_victim(self, function: str, flavour: str) -> Victim:
        v = Victim(self.client, function, flavour).plant()
        self.needles.append(v.secret)
        return v

    def attack(self, flavour: str, attack: str, function: str | None = None, tenant: str = ATTACKER,
               expect_error: bool = False, **args) -> tuple[dict, dict]:
        """Runs one attack; whatever it returns must not carry any planted secret."""
        function = function or self.functions[flavour]
        resp = self.client.invoke(FunctionName=function, TenantId=tenant,
                                  Payload=json.dumps({"attack": attack, **args}))
        raw = resp["Payload"].read()
        self.assert_no_leak(raw, attack)
        result = json.loads(raw)
        if not expect_error:
            assert "FunctionError" not in resp, f"{attack} ({flavour}) failed: {result}"
        return result, resp

    def assert_no_leak(self, raw: bytes, attack: str) -> None:
        text = raw.decode("utf-8", "replace")
        leaked = [n for n in self.needles if n in text]
        assert not leaked, f"{attack}: the attacker's answer contains a victim's secret:\n{text[:4000]}"

    def bystanders_ok(self, *extra: Victim) -> None:
        """Every victim still answers from its environment with its state; the control API serves."""
        for v in [*self.victims, *extra]:
            v.check()
        listed = {f["FunctionName"] for f in self.client.list_functions(MaxItems=50)["Functions"]}
        assert set(self.functions.values()) <= listed, listed


@pytest.fixture(scope="module")
def world(lambda_client, native_zip):
    w = World(lambda_client)
    try:
        w.functions["python"] = w.create(python_zip(), "python")
        w.victims.append(w.add_victim(w.functions["python"], "python"))
        # Another function: a secret in its configuration and one in its code, on top of the
        # victim's own.
        env_secret, code_secret = secret(), secret()
        w.needles += [env_secret, code_secret]
        other = w.create(python_zip(**{"marker.txt": code_secret}), "python",
                         Environment={"Variables": {"VICTIM_SECRET": env_secret}})
        w.victims.append(w.add_victim(other, "python"))
        if native_zip is not None:
            w.functions["native"] = w.create(native_zip, "native")
            w.victims.append(w.add_victim(w.functions["native"], "native"))
        yield w
    finally:
        for name in w.created:
            try:
                lambda_client.delete_function(FunctionName=name)
            except Exception:
                pass


@pytest.fixture(params=FLAVOURS)
def flavour(request, world) -> str:
    if request.param not in world.functions:
        pytest.skip("cargo is not installed: cannot build the native attacker")
    return request.param


@pytest.fixture
def neighbour_function(world, make_function, native_zip):
    """`neighbour_function(flavour, **config)`: a fresh attacked function (for limits the shared
    one does not have) with a victim tenant already planted in it."""

    def make(flavour: str, **config) -> tuple[str, Victim]:
        name = make_function(code_for(flavour, native_zip), **function_args(flavour), **config)["FunctionName"]
        return name, world.add_victim(name, flavour)

    return make


def run_with_probes(attack, probes) -> tuple[object, list[tuple[str, float, float, float]]]:
    """Runs `attack()` in a thread and, until it returns, calls each probe in turn from this one.
    Returns the attack's result and (probe, wall start, wall end, seconds) for every probe call."""
    box: dict[str, object] = {}
    done = threading.Event()

    def run():
        try:
            box["result"] = attack()
        except BaseException as e:  # re-raised below, in the test's thread
            box["error"] = e
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    records = []
    while not done.is_set():
        for name, probe in probes:
            t0, m0 = time.time(), time.monotonic()
            probe()
            records.append((name, t0, time.time(), time.monotonic() - m0))
        done.wait(0.05)
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"], records


def probes_within(records, start: float, end: float) -> list[tuple[str, float, float, float]]:
    return [r for r in records if r[1] >= start and r[2] <= end]


# --------------------------------------------------------------------------------------------
# Identity and privileges
# --------------------------------------------------------------------------------------------


def host_uid(who: dict) -> int | None:
    """The uid that the environment's uid maps to outside its user namespace."""
    for line in who["uid_map"].splitlines():
        inside, outside, count = (int(x) for x in line.split())
        if inside <= who["uid"] < inside + count:
            return outside + who["uid"] - inside
    return None


@pytest.fixture(scope="module")
def identities(world):
    """whoami of the attacker and of the victim tenant of each attacked function (one call each)."""
    out = {}
    for flavour, function in world.functions.items():
        out[flavour] = {t: world.attack(flavour, "whoami", tenant=t)[0] for t in (ATTACKER, VICTIM)}
    world.bystanders_ok()
    return out


def test_the_environment_runs_as_an_unprivileged_user_with_no_new_privs(flavour, identities):
    who = identities[flavour][ATTACKER]
    assert who["uid"] != 0 and who["euid"] != 0 and who["gid"] != 0, who
    assert who["status"]["NoNewPrivs"] == "1", who["status"]
    assert who["hostname"] != socket.gethostname(), who["hostname"]


@pytest.mark.parametrize("field", ["CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd"])
def test_capability_sets_are_empty(flavour, identities, field):
    status = identities[flavour][ATTACKER]["status"]
    assert int(status[field], 16) == 0, f"{field} = {status[field]}: {status}"


def test_a_seccomp_filter_is_installed(flavour, identities):
    status = identities[flavour][ATTACKER]["status"]
    assert status.get("Seccomp") == "2", f"Seccomp mode {status.get('Seccomp')} (2 = filter): {status}"


def test_every_environment_has_its_own_namespaces_and_host_uid(flavour, identities):
    attacker, victim = identities[flavour][ATTACKER], identities[flavour][VICTIM]
    host = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in attacker["ns"]}
    for ns in ("mnt", "pid", "net", "ipc", "uts"):
        assert attacker["ns"][ns] != host[ns], f"{ns} namespace shared with the host"
        assert attacker["ns"][ns] != victim["ns"][ns], f"{ns} namespace shared by two tenants"
    # A user namespace, mapping each environment to its own unprivileged host uid.
    assert attacker["ns"]["user"] != host["user"], f"no user namespace (uid_map {attacker['uid_map']!r})"
    uids = (host_uid(attacker), host_uid(victim))
    assert None not in uids and 0 not in uids, (uids, attacker["uid_map"], victim["uid_map"])
    assert uids[0] != uids[1], f"two tenants' environments run as the same host uid {uids[0]}"


# --------------------------------------------------------------------------------------------
# Reading other tenants' data
# --------------------------------------------------------------------------------------------


def test_proc_shows_only_this_environment(flavour, world):
    result, _ = world.attack(flavour, "proc", scan_pids=4096)
    world.bystanders_ok()
    procs = {p["pid"]: p for p in result["procs"]}
    assert result["reachable"] == result["listed"], "pids reachable by number but not listed"
    assert 1 in procs, result["listed"]
    init = procs[1]["cmdline"].split("\0")
    assert PID1_CMDLINE[flavour] in init, f"pid 1 is not this environment's runtime: {init}"
    for pid, p in procs.items():
        # Only the runtime itself (no child of the victim, no process of the host).
        assert p["cmdline"] == procs[1]["cmdline"], f"pid {pid} is someone else's: {p}"
        if isinstance(p["tmp"], dict):
            assert not [n for n in p["tmp"] if n.startswith("condo-secret-")], f"pid {pid}'s /tmp: {p['tmp']}"


def test_no_secret_anywhere_in_the_file_system(flavour, world, identities):
    # /usr is the host's own system tree, bound read-only (no tenant can write it): listed for
    # names, not read, to keep the walk fast. The mount table check below proves nothing else
    # is bound in.
    needles = [*world.needles, CONTROL_NEEDLE]
    result, _ = world.attack(flavour, "fs_walk", needles=needles, skip=["/proc", "/sys"], no_read=["/usr"],
                             max_file_bytes=1 << 20)
    world.bystanders_ok()
    control = len(needles) - 1
    found = [h for h in result["hits"] if h["needle"] != control]
    assert not found, f"secrets found: {[(h, needles[h['needle']][:6]) for h in found]}"
    assert any(h["needle"] == control and h["path"] == "/etc/passwd" for h in result["hits"]), \
        f"the walk did not even find the control needle in /etc/passwd: {result}"
    assert result["counts"]["files"] > 1000, result["counts"]  # /usr was listed

    mountinfo = identities[flavour][ATTACKER]["mountinfo"]
    points = {line.split()[4] for line in mountinfo.splitlines()}
    allowed = {"/", "/usr", "/var/task", "/var/runtime", "/dev", "/tmp", "/proc", "/etc/ld.so.cache",
               "/etc/ssl/certs", "/bin", "/sbin", "/lib", "/lib64", "/lib32",
               "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}
    extra = sorted(p for p in points if p not in allowed and not p.startswith("/usr/"))
    assert not extra, f"unexpected mounts in the environment: {extra}\n{mountinfo}"


def test_var_task_holds_only_the_functions_own_code(flavour, world):
    result, _ = world.attack(flavour, "read_paths", paths=["/var/task"])
    world.bystanders_ok()
    own = {"python": ["attacker.py", "victim.py"], "native": ["bootstrap"]}[flavour]
    assert result["paths"][0]["list"] == own, result


@pytest.fixture
def private_server(start_server):
    """A private server whose data directory is NOT under /tmp, so that "absent in the sandbox"
    cannot come from the sandbox's own /tmp hiding it."""
    parent = Path("/var/tmp") if Path("/var/tmp").is_dir() else REPO / "target"
    root = Path(tempfile.mkdtemp(prefix="condo-e2e-attacks-", dir=parent))
    try:
        server = start_server(data_dir=root / "data")
        yield server
        rc = server.stop()  # before its data directory goes
        assert rc == 0, f"condo exited with status {rc} after SIGTERM\n{server.log_tail()}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_data_dir_other_code_and_host_files_are_absent(flavour, private_server, native_zip):
    client = client_for(private_server)
    data = private_server.data_dir
    assert not str(data).startswith("/tmp/")
    marker = secret()
    other = "other-code"
    client.create_function(FunctionName=other, Runtime="python3.11", Handler="attacker.handler", Role=ROLE,
                           Code={"ZipFile": python_zip(**{"marker.txt": marker})}, TenancyConfig=PER_TENANT)
    attacker = "attacker"
    runtime, handler = RUNTIME[flavour]
    client.create_function(FunctionName=attacker, Runtime=runtime, Role=ROLE, TenancyConfig=PER_TENANT,
                           Code={"ZipFile": code_for(flavour, native_zip)},
                           **({"Handler": handler} if handler else {}))
    resp = client.invoke(FunctionName=other, TenantId=VICTIM, Payload=json.dumps({"op": "plant", "secret": marker}))
    assert "FunctionError" not in resp, resp["Payload"].read()
    markers = [str(p) for p in (data / "code").rglob("marker.txt")]
    assert markers, f"no extracted code under {data / 'code'}: the test would prove nothing"

    absent = [str(data), str(data / "condo.db"), str(data / "credentials.json"), str(data / "code"),
              *markers, *(str(Path(m).parent) for m in markers), str(data / "run" / "root"),
              "/root", "/root/.local/share/condo", "/home", "/etc/shadow", "/etc/hostname", "/etc/machine-id",
              "/var/lib", "/var/log", "/var/tmp", "/run", "/boot", "/mnt", "/opt", "/srv", "/sys/fs/cgroup",
              "/sys/class/net", str(REPO), f"/proc/1/root{data}"]
    paths = ["/etc/passwd", *absent]  # /etc/passwd: the probe does see what exists
    payload = json.dumps({"attack": "read_paths", "paths": paths})
    resp = client.invoke(FunctionName=attacker, TenantId=ATTACKER, Payload=payload)
    raw = resp["Payload"].read()
    assert "FunctionError" not in resp, raw
    assert marker.encode() not in raw
    # The other function's tenant still has its state; the control API still serves.
    resp = client.invoke(FunctionName=other, TenantId=VICTIM, Payload=json.dumps({"op": "check", "secret": marker}))
    neighbour = json.loads(resp["Payload"].read())
    assert neighbour["count"] == 2 and neighbour["tmp_ok"] and neighbour["memory_ok"], neighbour
    assert {f["FunctionName"] for f in client.list_functions()["Functions"]} == {other, attacker}
    result = {p["path"]: p for p in json.loads(raw)["paths"]}
    assert result["/etc/passwd"]["read"] == "ok", result["/etc/passwd"]
    visible = {p: (r["stat"], r["read"], r.get("list")) for p, r in result.items()
               if p != "/etc/passwd" and r["stat"] != "ENOENT"}
    assert not visible, f"present in the sandbox (must be ENOENT, not merely unreadable): {visible}"


# --------------------------------------------------------------------------------------------
# Writing, devices
# --------------------------------------------------------------------------------------------


def test_nothing_outside_tmp_is_writable(flavour, world):
    own_file = {"python": "/var/task/attacker.py", "native": "/var/task/bootstrap"}[flavour]
    dirs = ["/var/task", "/", "/usr", "/usr/bin", "/etc", "/dev", "/var"]
    if flavour == "python":
        dirs.append("/var/runtime")
    result, _ = world.attack(
        flavour, "write_paths",
        create=[f"{d.rstrip('/')}/condo-attacker-{flavour}" for d in dirs] + [f"/tmp/condo-attacker-ok-{flavour}"],
        open_write=[own_file, "/etc/passwd", "/usr/bin/env", "/proc/sys/kernel/hostname",
                    "/proc/sys/vm/drop_caches"],
        mkdir=["/var/task/d", "/usr/d", "/etc/d", "/dev/d", "/d"],
        chmod=[own_file, "/usr/bin/env", "/etc/passwd", "/tmp"],
        symlink=["/dev/condo-evil", "/etc/condo-evil", "/var/task/condo-evil"],
    )
    world.bystanders_ok()
    outcomes = {(r["op"], r["path"]): r["result"] for r in result["results"]}
    assert outcomes.pop(("create", f"/tmp/condo-attacker-ok-{flavour}")) == "ok", "cannot even write /tmp"
    wrong = {k: v for k, v in outcomes.items() if v not in WRITE_REFUSED}
    assert not wrong, f"writes that were not refused with EROFS/EACCES/EPERM: {wrong}"


# Host devices a sandbox must not even see (absent, not merely unopenable).
HOST_DEVICES = ["/dev/kvm", "/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/xvda", "/dev/loop0",
                "/dev/loop-control", "/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/console",
                "/dev/tty", "/dev/tty0", "/dev/ptmx", "/dev/fuse", "/dev/net/tun", "/dev/mapper/control",
                "/dev/btrfs-control", "/dev/hwrng", "/dev/cpu/0/msr", "/dev/shm"]
MINIMAL_DEV = {"null", "zero", "full", "random", "urandom", "fd", "stdin", "stdout", "stderr"}


def test_only_the_minimal_devices_exist_and_mknod_is_refused(flavour, world):
    result, _ = world.attack(
        flavour, "devices", open=["/dev/null", "/dev/urandom", *HOST_DEVICES],
        mknod=[["/tmp/condo-mem", "c", 1, 1], ["/tmp/condo-vda", "b", 254, 0], ["/tmp/condo-kvm", "c", 10, 232],
               ["/dev/condo-null", "c", 1, 3]])
    listing, _ = world.attack(flavour, "read_paths", paths=["/dev"])
    world.bystanders_ok()
    opened = {(o["path"], o["mode"]): o for o in result["open"]}
    assert opened[("/dev/urandom", "read")]["detail"] == "read 16 bytes", opened[("/dev/urandom", "read")]
    assert opened[("/dev/null", "write")]["result"] == "ok"
    present = {k: v for k, v in opened.items() if k[0] in HOST_DEVICES and v["result"] != "ENOENT"}
    assert not present, f"devices that exist in the sandbox: {present}"
    made = {m["path"]: m for m in result["mknod"]}
    wrong = {p: m for p, m in made.items() if m["result"] not in {"EPERM", "EACCES"}}
    assert not wrong, f"mknod not refused: {wrong}"
    dev = listing["paths"][0]["list"]
    assert set(dev) <= MINIMAL_DEV, f"/dev holds more than the minimal set: {sorted(set(dev) - MINIMAL_DEV)}"


# --------------------------------------------------------------------------------------------
# Escalation
# --------------------------------------------------------------------------------------------


def host_setuid_binaries() -> set[str]:
    found = set()
    for d in ("/usr/bin", "/usr/sbin"):
        for entry in os.scandir(d):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_file(follow_symlinks=False) and st.st_mode & 0o6000:
                found.add(entry.path)
    return found


def test_setuid_binaries_do_not_raise_privileges(flavour, world):
    on_host = host_setuid_binaries()
    if not on_host:
        pytest.skip("this host has no set-uid binaries under /usr to try")
    result, _ = world.attack(flavour, "setuid", max=5)
    world.bystanders_ok()
    seen = {f["path"] for f in result["found"]}
    assert on_host <= seen, f"the attacker missed set-uid binaries the host has: {sorted(on_host - seen)}"
    assert result["runs"], result
    for run in result["runs"]:
        # The loader complains about the absent preload only when the exec did NOT switch to
        # secure mode, i.e. when the set-uid bit gave nothing (see ABSENT_PRELOAD in the attackers).
        assert "cannot be preloaded" in run.get("stderr", ""), f"{run['path']} ran privileged: {run}"
    if result["mount"] is not None:
        assert result["mount"]["rc"] != 0 and not result["mount"]["mounted"], result["mount"]


SYSCALLS = [
    *(f"unshare_{ns}" for ns in ("user", "mount", "net", "pid", "uts", "ipc", "cgroup", "time")),
    *(f"clone_new{ns}" for ns in ("user", "mount", "net", "pid", "uts", "ipc", "cgroup")),
    "clone3_newuser", "userns_then_mount", "setns_net", "mount_tmpfs",
    "setuid_root", "setgid_root", "chroot", "sethostname", "ptrace_child", "ptrace_init", "bpf",
    "perf_event_open", "keyctl", "init_module", "finit_module", "kexec_load",
]


@pytest.fixture(scope="module")
def syscall_evidence(world):
    """One `syscalls` attack per flavour, shared by the per-syscall tests below."""
    cache: dict[str, dict] = {}

    def get(flavour: str) -> dict:
        if flavour not in cache:
            result, _ = world.attack(flavour, "syscalls")
            world.bystanders_ok()
            cache[flavour] = result["results"]
        return cache[flavour]

    return get


@pytest.mark.parametrize("call", SYSCALLS)
def test_privileged_syscall_is_refused(flavour, call, syscall_evidence):
    results = syscall_evidence(flavour)
    assert call in results, f"the {flavour} attacker did not try {call}: {sorted(results)}"
    steps = results[call].split(",")
    # uid/gid 0 may simply not exist in the environment's user namespace.
    refused = REFUSED | {"EINVAL"} if call in ("setuid_root", "setgid_root") else REFUSED
    # For the chain (new user namespace, then mount), its first step must already be refused.
    assert steps[0] in refused, f"{call}: {results[call]}"
    assert "ok" not in steps, f"{call}: {results[call]}"


def test_privileged_syscall_is_refused_through_the_32_bit_abis(world, syscall_evidence):
    # Only the native attacker can issue `int 0x80` and x32 calls; only x86_64 has them.
    if "native" not in world.functions:
        pytest.skip("cargo is not installed: cannot build the native attacker")
    if platform.machine() != "x86_64":
        pytest.skip("the i386 and x32 system call tables exist on x86_64 only")
    results = syscall_evidence("native")
    for call in ("unshare_user_i386", "unshare_user_x32"):
        # A filter that kills a foreign-ABI call outright refuses it too.
        assert results.get(call) in REFUSED | {"killed by SIGSYS"}, f"{call}: {results.get(call)}"


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


def host_addresses() -> tuple[list[str], list[str]]:
    """(this host's non-loopback addresses, its default gateways)."""
    addrs: set[str] = set()
    try:
        out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[2] in ("inet", "inet6"):
                addrs.add(parts[3].split("/")[0])
    except (OSError, subprocess.SubprocessError):
        try:
            addrs.update(socket.gethostbyname_ex(socket.gethostname())[2])
        except OSError:
            pass
    addrs = {a for a in addrs if not a.startswith("127.") and a != "::1" and not a.startswith("fe80")}
    gateways = []
    try:
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            f = line.split()
            if f[1] == "00000000" and f[2] != "00000000":
                gateways.append(socket.inet_ntoa(bytes.fromhex(f[2])[::-1]))
    except OSError:
        pass
    return sorted(addrs), gateways


def test_the_network_reaches_only_the_own_runtime_api(flavour, world, condo):
    port = int(condo.listen.rsplit(":", 1)[1])
    addrs, gateways = host_addresses()
    control = [("127.0.0.1", port), ("::1", port), *((a, port) for a in addrs)]
    loopback = [("127.0.0.1", p) for p in (22, 80, 443, 2375, 6443, 8080, 9000, 9002, 9700)]
    loopback += [("127.0.0.2", 9001), ("::1", 9001)]
    outbound = [("1.1.1.1", 443), ("8.8.8.8", 53), *((g, 80) for g in gateways)]
    result, _ = world.attack(
        flavour, "net", timeout=1.0,
        tcp=[["127.0.0.1", 9001], *map(list, control), *map(list, loopback), *map(list, outbound)],
        udp=[["8.8.8.8", 53], ["1.1.1.1", 53], *([g, 53] for g in gateways)], dns=["example.com", "localhost"])
    world.bystanders_ok()
    connected = [(t["host"], t["port"]) for t in result["tcp"] if t["result"] == "connected"]
    assert connected == [("127.0.0.1", 9001)], f"reachable from the sandbox: {connected}\n{result['tcp']}"
    own = result["tcp"][0]
    # The Runtime API (not the Lambda API) answers on 9001: it knows no /2015-03-31 path.
    assert own["answer"].startswith("HTTP/1.1 404") and "InvalidRequest" in own["answer"], own
    sent = [u for u in result["udp"] if u["result"] == "sent"]
    assert not sent, f"UDP left the sandbox: {sent}"
    assert result["dns"][0]["result"].startswith("error"), result["dns"]
    assert set(result["interfaces"]) == {"lo"}, result["interfaces"]


# --------------------------------------------------------------------------------------------
# Resource exhaustion
# --------------------------------------------------------------------------------------------


def test_memory_bomb_is_an_out_of_memory_error_and_the_tenant_recovers(flavour, world, neighbour_function):
    name, neighbour = neighbour_function(flavour, MemorySize=128, Timeout=15)
    before, _ = world.attack(flavour, "whoami", function=name)
    result, resp = world.attack(flavour, "memory_bomb", function=name, expect_error=True, mb=4 * 128)
    after, _ = world.attack(flavour, "whoami", function=name)
    world.bystanders_ok(neighbour)
    assert resp.get("FunctionError") == "Unhandled", f"allocating 4x MemorySize succeeded: {result}"
    assert result.get("errorType") == "Runtime.OutOfMemory", result
    assert after["env"] != before["env"], "the environment that ran out of memory was reused"


def test_fork_bomb_is_capped_and_neighbours_keep_answering(flavour, world, neighbour_function):
    # Memory enough for 1023 forked Python runtimes (about 0.6 MB each), so the pids limit is what
    # stops the bomb.
    name, neighbour = neighbour_function(flavour, MemorySize=2048, Timeout=20)
    neighbour.check()  # warm, so every probe below measures a warm answer
    def bomb():
        # At most 1500 children, so that a host without a pids limit survives the test.
        return world.attack(flavour, "fork_bomb", function=name, max=1500, hold_s=2.0)

    (result, resp), records = run_with_probes(bomb, [
        ("neighbour", neighbour.check),
        ("list_functions", lambda: world.client.list_functions(MaxItems=5)),
    ])
    world.bystanders_ok(neighbour)
    inside = probes_within(records, result["t_peak"], result["t_release"])
    assert {r[0] for r in inside} == {"neighbour", "list_functions"}, \
        f"no probe ran while the bomb held its processes: {records}"
    slow = [r for r in inside if r[3] > LATENCY_BOUND_S]
    assert not slow, f"answers slower than {LATENCY_BOUND_S} s during the fork bomb: {slow}"
    assert result["children"] < PIDS_MAX, f"forked {result['children']} processes: {result}"
    assert result["stopped_by"] == "EAGAIN", result


def test_filling_tmp_stops_at_the_ephemeral_storage_size(flavour, world, neighbour_function):
    size_mb = 512
    name, neighbour = neighbour_function(flavour, MemorySize=1024, Timeout=20, EphemeralStorage={"Size": size_mb})
    result, _ = world.attack(flavour, "fill_tmp", function=name, max_bytes=2 * size_mb << 20)
    room = neighbour.request("write_tmp", bytes=64 << 20)
    world.bystanders_ok(neighbour)
    assert room.get("write_tmp") == 64 << 20, f"the neighbour's /tmp was affected: {room}"
    assert result["written"] <= size_mb << 20, result
    assert result["stopped_by"] == "ENOSPC", result
    assert result["tmp_size"] <= size_mb << 20, result


def test_an_endless_loop_times_out_while_the_neighbour_answers(flavour, world, neighbour_function):
    name, neighbour = neighbour_function(flavour, Timeout=2)
    neighbour.check()
    before, _ = world.attack(flavour, "whoami", function=name)

    def spin():
        started = time.time()
        result, resp = world.attack(flavour, "loop", function=name, expect_error=True)
        return result, resp, started, time.time()

    (result, resp, started, ended), records = run_with_probes(spin, [("neighbour", neighbour.check)])
    after, _ = world.attack(flavour, "whoami", function=name)
    world.bystanders_ok(neighbour)
    assert resp.get("FunctionError") == "Unhandled" and result.get("errorType") == "Sandbox.Timedout", result
    assert 1.9 <= ended - started < 4.0, f"answered after {ended - started:.2f} s for a 2 s timeout"
    inside = probes_within(records, started + 0.2, ended - 0.2)
    assert inside, f"no neighbour probe ran during the loop: {records}"
    slow = [r for r in inside if r[3] > LATENCY_BOUND_S]
    assert not slow, f"the neighbour was slow during the loop: {slow}"
    assert after["env"] != before["env"], "the timed-out environment was reused"


def test_file_descriptors_are_capped(flavour, world):
    result, _ = world.attack(flavour, "nofile", max=4 * NOFILE_MAX)
    world.bystanders_ok()
    assert result["opened"] < NOFILE_MAX, f"opened {result['opened']} descriptors: {result}"
    assert result["stopped_by"] == "EMFILE", result
    assert result["rlimit_before"][1] <= NOFILE_MAX, result
    assert result["raise"]["beyond_hard"] != "ok", result


# --------------------------------------------------------------------------------------------
# The Runtime API protocol (native attacker only: it speaks the protocol itself)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def native(world) -> str:
    if "native" not in world.functions:
        pytest.skip("cargo is not installed: cannot build the native attacker")
    return world.functions["native"]


def test_runtime_api_refuses_request_ids_that_are_not_in_flight_here(world, native):
    # Request ids of the victims' earlier answers: in other functions and in this very one.
    ids = [v.request_ids[-1] for v in world.victims]
    result, resp = world.attack("native", "runtime_api", request_ids=ids)
    world.bystanders_ok()
    # Our own invocation was answered with the evidence, not with a forged body.
    assert result["own_id"] == resp["ResponseMetadata"]["RequestId"], result
    assert len(result["posts"]) == 2 * (len(ids) + 1), result
    accepted = [p for p in result["posts"] if not (isinstance(p["status"], int) and 400 <= p["status"] < 500)]
    assert not accepted, f"answers for foreign request ids were not refused: {accepted}"
    init_error = result["init_error"]
    assert isinstance(init_error["status"], int) and 400 <= init_error["status"] < 500, init_error


def test_runtime_api_refuses_a_second_next_while_an_invocation_is_in_flight(world, native_zip, make_function):
    if native_zip is None:
        pytest.skip("cargo is not installed: cannot build the native attacker")
    name = make_function(native_zip, **function_args("native"), Timeout=4)["FunctionName"]
    result, _ = world.attack("native", "runtime_api", function=name, request_ids=[], next_timeout_s=2.0)
    # The same tenant's next request must still be served (by this or a fresh environment).
    resp = world.client.invoke(FunctionName=name, TenantId=ATTACKER, Payload=json.dumps({"attack": "whoami"}))
    follow_up = json.loads(resp["Payload"].read())
    world.bystanders_ok()
    second = result["second_next"]
    served = "FunctionError" not in resp
    assert isinstance(second["status"], int) and 400 <= second["status"] < 500, \
        f"a second /next while in flight was not refused: {second}; the tenant's next request then " \
        f"{'was served' if served else 'failed: ' + json.dumps(follow_up)}"
    assert served, f"the tenant's next request failed after the attack: {follow_up}"
