"""Sandbox lifecycles leave nothing behind: 10,000 environments started and stopped, and a crash.

Counted from outside, on the host: the server's descendant processes, its open file descriptors,
the host's mounts, the instance's cgroups, and memory (the server's and its descendants').
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CONDO_BIN, PER_TENANT, ROLE, client_for, clean_environ, env_of, instance_cgroups, poll
from test_rust_runtime import bootstrap_zip, build_example

LIFECYCLES = 10_000
PREPARED = 2
# A prepared sandbox is two processes: its init step and the child that has already built the
# shared part of the root and waits to become the program.
PROCESSES_PER_PREPARED = 2


def sandbox_groups(data_dir: Path) -> int:
    """Sandbox groups of the instance, in any hierarchy (a group left in one counts)."""
    return len({c.name for d in instance_cgroups(data_dir) for c in d.iterdir() if c.is_dir()})


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        children = [c for c, pp in parents.items() if pp == p]
        found += children
        frontier += children
    return found


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def snapshot(server) -> dict[str, int]:
    pid = server.proc.pid
    kids = descendants(pid)
    return {
        "processes": len(kids),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "host_mounts": len(Path(f"/proc/{pid}/mountinfo").read_text().splitlines()),
        "cgroups": sandbox_groups(server.data_dir),
        "server_rss_kib": rss_kib(pid),
        "descendants_rss_kib": sum(rss_kib(k) for k in kids),
    }


def quiesce(server) -> dict[str, int]:
    """Waits until every environment was reaped: only the prepared sandboxes remain."""
    def settled():
        s = snapshot(server)
        idle = s["processes"] == PREPARED * PROCESSES_PER_PREPARED and s["cgroups"] == PREPARED
        return s if idle else None
    return poll(settled, 60, "environments to be reaped", interval=0.2)


def load(server, env, name: str, requests: int) -> str:
    out = subprocess.run(
        [CONDO_BIN, "load", name, "--cold", "--concurrency", "4", "--requests", str(requests)],
        env={**clean_environ(), **env, "CONDO_ENDPOINT": server.endpoint,
             "CONDO_DATA_DIR": str(server.data_dir)},
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr + server.log_tail()
    return out.stdout


@pytest.fixture(scope="module")
def echo_zip() -> bytes:
    return bootstrap_zip(build_example("rust-echo"))


def test_ten_thousand_lifecycles_leak_nothing(start_server, echo_zip):
    server = start_server("--max-environments", "8", "--idle-timeout", "1",
                          "--prepared-sandboxes", str(PREPARED))
    env = env_of(server)
    client_for(server).create_function(
        FunctionName="leak", Runtime="provided.al2023", Role=ROLE, Handler="bootstrap",
        Code={"ZipFile": echo_zip}, TenancyConfig=PER_TENANT)
    # Warm the server's own caches and allocator first, so growth means a leak.
    load(server, env, "leak", 200)
    before = quiesce(server)
    report = load(server, env, "leak", LIFECYCLES)
    after = quiesce(server)
    print(f"\n{LIFECYCLES} lifecycles: {report.strip()}\nbefore: {before}\nafter:  {after}")
    for key in ("processes", "fds", "host_mounts", "cgroups"):
        assert after[key] == before[key], f"{key}: {before[key]} -> {after[key]}"
    # Memory: the server keeps nothing per environment once it is gone. Allow for allocator
    # fragmentation and SQLite's page cache, not for anything that grows with the count.
    growth = after["server_rss_kib"] - before["server_rss_kib"]
    assert growth < 32 * 1024, f"server RSS grew by {growth} KiB over {LIFECYCLES} lifecycles"
    assert after["descendants_rss_kib"] <= before["descendants_rss_kib"] * 1.5 + 4096, (before, after)


def test_a_crash_leaves_nothing_the_next_start_does_not_remove(start_server, echo_zip):
    server = start_server("--prepared-sandboxes", str(PREPARED))
    env = env_of(server)
    client = client_for(server)
    client.create_function(
        FunctionName="crash", Runtime="provided.al2023", Role=ROLE, Handler="bootstrap",
        Code={"ZipFile": echo_zip}, TenancyConfig=PER_TENANT)
    for tenant in ("a", "b", "c"):
        client.invoke(FunctionName="crash", Payload=b"{}", TenantId=tenant)
    kids = descendants(server.proc.pid)
    assert len(kids) >= 3 + PREPARED, kids
    assert sandbox_groups(server.data_dir) == 3 + PREPARED

    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server.proc = None
    # Every sandbox process dies with the platform...
    poll(lambda: not any(Path(f"/proc/{k}").exists() for k in kids), 10, "sandboxes to die")
    # ...but their cgroups outlive it, until the next start of the same instance.
    assert sandbox_groups(server.data_dir) == 3 + PREPARED

    server.start()
    assert "removed 5 sandboxes left by an earlier run" in server.log_path.read_text()
    poll(lambda: sandbox_groups(server.data_dir) == PREPARED, 10, "only the new prepared sandboxes")
    out = client_for(server).invoke(FunctionName="crash", Payload=b'{"x": 1}', TenantId="a")
    assert "FunctionError" not in out
