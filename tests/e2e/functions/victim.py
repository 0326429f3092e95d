"""Victim tenant code for condo's isolation tests: plants a secret and later proves it is intact.

The attacker function (attacker.py) hands every event without an "attack" key to this module, so
victims and attackers are tenants of one and the same function, the way one SaaS function serves
every customer.

The secret lives in four places an attacker might reach: a file in /tmp whose name and contents
are the secret, a module global, and the argv and environment of a long-lived child process.
"""

import errno
import os
import subprocess
import sys

ENV = os.urandom(8).hex()  # drawn once per execution environment
count = 0
secret = None
child = None


def _tmp_path(value):
    return "/tmp/condo-secret-%s.txt" % value


def _child_alive():
    if child is None or child.poll() is not None:
        return False
    try:
        with open("/proc/%d/cmdline" % child.pid, "rb") as f:
            return secret.encode() in f.read()
    except OSError:
        return False


def handler(event, context):
    global count, secret, child
    count += 1
    op = event.get("op", "check")
    out = {"env": ENV, "count": count, "tenant": context.tenant_id}
    if op == "plant":
        secret = event["secret"]
        with open(_tmp_path(secret), "w") as f:
            f.write(secret)
        # A process that carries the secret in its argv and environment for the environment's life.
        child = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", "import time; time.sleep(3600)", secret],
            env={"VICTIM_CHILD_SECRET": secret}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif op == "check":
        try:
            with open(_tmp_path(secret)) as f:
                out["tmp_ok"] = f.read() == secret
        except (OSError, TypeError):
            out["tmp_ok"] = False
        out["memory_ok"] = secret is not None and secret == event.get("secret")
        out["child_ok"] = _child_alive()
        out["tmp_entries"] = sorted(os.listdir("/tmp"))
    elif op == "write_tmp":
        # Proves this tenant's /tmp still has room after a neighbour filled its own.
        path = "/tmp/condo-victim-write.bin"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                written = 0
                block = b"v" * (1 << 20)
                while written < event["bytes"]:
                    written += os.write(fd, block[: event["bytes"] - written])
            finally:
                os.close(fd)
            out["write_tmp"] = written
        except OSError as e:
            out["write_tmp"] = errno.errorcode.get(e.errno, str(e.errno))
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
    return out
