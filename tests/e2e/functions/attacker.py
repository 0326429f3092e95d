"""Attacker function for condo's isolation tests: each event names one attack, the answer is raw evidence.

Event: {"attack": NAME, ...arguments}. The answer says what was tried and what came back (errno
names, file lists, bytes read, counts), never a verdict: the test decides whether the boundary
held. Events without "attack" go to victim.py, so one function serves victims and attackers.

Only the standard library: condo's Python runtime starts the interpreter with -I -S.
"""

import ctypes
import errno
import os
import platform
import resource
import signal
import socket
import stat
import subprocess
import time

import victim

ENV = os.urandom(8).hex()  # drawn once per execution environment

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

CLONE = {
    "user": 0x10000000, "mount": 0x00020000, "net": 0x40000000, "pid": 0x20000000,
    "uts": 0x04000000, "ipc": 0x08000000, "cgroup": 0x02000000, "time": 0x00000080,
}
SIGCHLD = 17
PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206
S_IFCHR, S_IFBLK = 0o020000, 0o060000

# Syscalls without a glibc wrapper that ctypes can call by name.
SYSCALLS = {
    "x86_64": {"clone": 56, "bpf": 321, "perf_event_open": 298, "keyctl": 250, "init_module": 175,
               "finit_module": 313, "kexec_load": 246},
    "aarch64": {"clone": 220, "bpf": 280, "perf_event_open": 241, "keyctl": 219, "init_module": 105,
                "finit_module": 273, "kexec_load": 104},
}.get(platform.machine(), {})


def errname(code):
    return errno.errorcode.get(code, "E%d" % code)


def oserr(e):
    return errname(e.errno) if isinstance(e, OSError) and e.errno else repr(e)


def rc(ret):
    """"ok" for a successful libc call, else the errno name."""
    return "ok" if ret != -1 else errname(ctypes.get_errno())


def read_head(path, limit=4096):
    with open(path, "rb") as f:
        return f.read(limit)


def text(data):
    return data.decode("utf-8", "replace")


def in_child(fn):
    """Runs `fn` in a forked child, so a syscall that works cannot change the runtime process;
    returns what `fn` returned (a string) or the exception it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                res = fn()
            except BaseException as e:  # noqa: BLE001 - any failure is evidence
                res = "raised " + repr(e)
            os.write(w, str(res).encode()[:4000])
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        data = os.read(r, 4096)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks and os.WIFSIGNALED(status):
        # A filter may kill instead of refusing: that is evidence too.
        return "killed by " + signal.Signals(os.WTERMSIG(status)).name
    return b"".join(chunks).decode() or "child gave no answer"


# ---------------------------------------------------------------------------------------------
# Who am I, and what does this environment look like
# ---------------------------------------------------------------------------------------------


def attack_whoami(event):
    status = {}
    for line in read_head("/proc/self/status", 65536).decode().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                   "NoNewPrivs", "Seccomp", "Seccomp_filters"):
            status[key] = value.strip()
    out = {
        "pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(), "euid": os.geteuid(),
        "gid": os.getgid(), "egid": os.getegid(), "status": status,
        "rlimit_nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "rlimit_nproc": list(resource.getrlimit(resource.RLIMIT_NPROC)),
        "hostname": socket.gethostname(),
    }
    for name in ("uid_map", "gid_map", "cgroup", "mountinfo"):
        try:
            out[name] = text(read_head("/proc/self/" + name, 65536))
        except OSError as e:
            out[name] = oserr(e)
    out["ns"] = {}
    for ns in ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup"):
        try:
            out["ns"][ns] = os.readlink("/proc/self/ns/" + ns)
        except OSError as e:
            out["ns"][ns] = oserr(e)
    return out


# ---------------------------------------------------------------------------------------------
# Other tenants' data: /proc, the whole file system, named paths
# ---------------------------------------------------------------------------------------------


def attack_proc(event):
    """Every process this environment can see, with what /proc tells about it, including the
    files under its /proc/<pid>/root/tmp. Returned raw: if another tenant's secret shows up in
    any of it, the test sees it."""
    listed = sorted(int(n) for n in os.listdir("/proc") if n.isdigit())
    # Pids hidden from the listing but reachable by number would also be a leak.
    reachable = [n for n in range(1, event.get("scan_pids", 4096) + 1) if os.path.exists("/proc/%d" % n)]
    procs = []
    for pid in sorted(set(listed) | set(reachable)):
        base = "/proc/%d" % pid
        p = {"pid": pid}
        for name in ("cmdline", "environ", "comm"):
            try:
                p[name] = text(read_head(base + "/" + name, 8192))
            except OSError as e:
                p[name] = oserr(e)
        try:
            p["uid"] = [l for l in read_head(base + "/status", 65536).decode().splitlines() if l.startswith("Uid:")][0]
        except (OSError, IndexError) as e:
            p["uid"] = oserr(e)
        try:
            p["root"] = os.readlink(base + "/root")
        except OSError as e:
            p["root"] = oserr(e)
        tmp = base + "/root/tmp"
        try:
            names = sorted(os.listdir(tmp))
            p["tmp"] = {}
            for n in names[:50]:
                try:
                    p["tmp"][n] = text(read_head(tmp + "/" + n, 512))
                except OSError as e:
                    p["tmp"][n] = oserr(e)
        except OSError as e:
            p["tmp"] = oserr(e)
        try:
            p["mem"] = "read %d bytes" % len(read_head(base + "/mem", 16))
        except OSError as e:
            p["mem"] = oserr(e)
        procs.append(p)
    return {"listed": listed, "reachable": reachable, "procs": procs}


def attack_fs_walk(event):
    """Walks the whole tree (without following links), reads every readable regular file up to
    a size cap and looks for the needles in names and contents. Reports hits by needle index and
    never echoes the needles."""
    needles = [n.encode() for n in event["needles"]]
    skip = set(event.get("skip", ["/proc", "/sys"]))
    no_read = tuple(p.rstrip("/") + "/" for p in event.get("no_read", []))
    cap = event.get("max_file_bytes", 1 << 20)
    hits, errors, unreadable = [], {}, []
    counts = {"dirs": 0, "files": 0, "files_read": 0, "bytes_read": 0, "other": 0}

    def note(path, e):
        name = oserr(e)
        errors[name] = errors.get(name, 0) + 1
        if len(unreadable) < 50:
            unreadable.append([path, name])

    def search(path, data, where):
        for i, n in enumerate(needles):
            if n in data:
                hits.append({"path": path, "needle": i, "in": where})

    started = time.monotonic()
    stack = ["/"]
    while stack:
        top = stack.pop()
        counts["dirs"] += 1
        try:
            entries = list(os.scandir(top))
        except OSError as e:
            note(top, e)
            continue
        for entry in entries:
            path = entry.path if top != "/" else "/" + entry.name
            search(path, entry.name.encode(), "name")
            try:
                if entry.is_dir(follow_symlinks=False):
                    if path not in skip:
                        stack.append(path)
                    continue
                if not entry.is_file(follow_symlinks=False):
                    counts["other"] += 1
                    continue
                counts["files"] += 1
                if path.startswith(no_read) or entry.stat(follow_symlinks=False).st_size > cap:
                    continue
                data = read_head(path, cap)
            except OSError as e:
                note(path, e)
                continue
            counts["files_read"] += 1
            counts["bytes_read"] += len(data)
            search(path, data, "contents")
    return {"hits": hits, "counts": counts, "errors": errors, "unreadable": unreadable,
            "root": sorted(os.listdir("/")), "seconds": round(time.monotonic() - started, 2)}


def probe_path(path):
    out = {"path": path}
    try:
        st = os.stat(path)
        out["stat"] = "ok"
        out["mode"] = oct(st.st_mode)
    except OSError as e:
        out["stat"] = oserr(e)
    try:
        out["list"] = sorted(os.listdir(path))[:100]
    except OSError as e:
        out["list"] = oserr(e)
    try:
        data = read_head(path, 4096)
        out["read"] = "ok"
        out["head"] = text(data[:512])
    except OSError as e:
        out["read"] = oserr(e)
    return out


def attack_read_paths(event):
    return {"paths": [probe_path(p) for p in event["paths"]]}


# ---------------------------------------------------------------------------------------------
# Writing where nothing may be written; devices
# ---------------------------------------------------------------------------------------------


def attack_write_paths(event):
    results = []

    def attempt(op, path, fn):
        try:
            fn()
            results.append({"op": op, "path": path, "result": "ok"})
        except OSError as e:
            results.append({"op": op, "path": path, "result": oserr(e)})

    for path in event.get("create", []):
        def create(path=path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"attacker was here\n")
            os.close(fd)
        attempt("create", path, create)
    for path in event.get("open_write", []):
        attempt("open_write", path, lambda path=path: os.close(os.open(path, os.O_WRONLY | os.O_APPEND)))
    for path in event.get("mkdir", []):
        attempt("mkdir", path, lambda path=path: os.mkdir(path))
    for path in event.get("chmod", []):
        attempt("chmod", path, lambda path=path: os.chmod(path, 0o777))
    for path in event.get("symlink", []):
        attempt("symlink", path, lambda path=path: os.symlink("/tmp", path))
    return {"results": results}


def attack_devices(event):
    opened = []
    for path in event.get("open", []):
        for mode, flags in (("read", os.O_RDONLY), ("write", os.O_RDWR)):
            try:
                fd = os.open(path, flags | os.O_NONBLOCK)
                try:
                    got = "read %d bytes" % len(os.read(fd, 16)) if mode == "read" else "opened"
                except OSError as e:
                    got = "opened, read " + oserr(e)
                os.close(fd)
                opened.append({"path": path, "mode": mode, "result": "ok", "detail": got})
            except OSError as e:
                opened.append({"path": path, "mode": mode, "result": oserr(e)})
    made = []
    for path, kind, major, minor in event.get("mknod", []):
        mode = (S_IFCHR if kind == "c" else S_IFBLK) | 0o666
        try:
            os.mknod(path, mode, os.makedev(major, minor))
            entry = {"path": path, "result": "ok"}
            try:
                os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
                entry["open"] = "ok"
            except OSError as e:
                entry["open"] = oserr(e)
        except OSError as e:
            entry = {"path": path, "result": oserr(e)}
        made.append(entry)
    return {"open": opened, "mknod": made}


# ---------------------------------------------------------------------------------------------
# Privilege escalation
# ---------------------------------------------------------------------------------------------

# Set where glibc's loader runs in non-secure mode: it then complains about a preload library
# that does not exist. A set-uid exec that raised privileges runs in secure mode (AT_SECURE)
# and ignores a preload path with a slash silently. So the complaint proves the exec did not
# change credentials, whatever the binary itself prints.
ABSENT_PRELOAD = "/tmp/condo-attacker-absent-preload.so"


def attack_setuid(event):
    found = []
    for d in event.get("dirs", ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/lib/openssh"]):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for n in names:
            path = os.path.join(d, n)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                found.append({"path": path, "mode": oct(st.st_mode), "owner": st.st_uid})
    prefer = ["/usr/bin/su", "/usr/bin/mount", "/usr/bin/passwd", "/usr/bin/newgrp", "/usr/bin/chsh"]
    chosen = [f["path"] for f in found if f["path"] in prefer]
    chosen += [f["path"] for f in found if f["path"] not in chosen]
    runs = []
    for path in chosen[: event.get("max", 5)]:
        try:
            p = subprocess.run([path, "--version"], capture_output=True, timeout=5, stdin=subprocess.DEVNULL,
                               env={"LD_PRELOAD": ABSENT_PRELOAD, "PATH": "/usr/bin:/bin", "LANG": "C"})
            runs.append({"path": path, "rc": p.returncode, "stdout": text(p.stdout[:300]),
                         "stderr": text(p.stderr[:600])})
        except (OSError, subprocess.SubprocessError) as e:
            runs.append({"path": path, "error": repr(e)})
    # The set-uid mount(8), asked to mount: it must neither run as root nor leave a mount.
    mount_try = None
    if os.path.exists("/usr/bin/mount"):
        target = "/tmp/condo-attacker-mnt"
        os.makedirs(target, exist_ok=True)
        p = subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "none", target], capture_output=True,
                           timeout=5, stdin=subprocess.DEVNULL)
        mount_try = {"rc": p.returncode, "stderr": text(p.stderr[:300]),
                     "mounted": any(" %s " % target in l for l in read_head("/proc/self/mountinfo", 65536).decode().splitlines())}
    return {"found": found, "runs": runs, "mount": mount_try, "preload": ABSENT_PRELOAD}


def _sys(name, *args):
    return rc(libc.syscall(ctypes.c_long(SYSCALLS[name]), *args))


def _unshare(flags):
    return lambda: rc(libc.unshare(flags))


def _userns_then_mount():
    """The classic chain: a new user namespace makes us "root" there, then mount a tmpfs."""
    steps = [rc(libc.unshare(CLONE["user"] | CLONE["mount"]))]
    os.makedirs("/tmp/condo-userns-mnt", exist_ok=True)
    steps.append(rc(libc.mount(b"none", b"/tmp/condo-userns-mnt", b"tmpfs", 0, None)))
    return ",".join(steps)


def _clone(flag):
    """A fork-like raw clone(2) into a new namespace; the child leaves at once."""
    def run():
        pid = libc.syscall(ctypes.c_long(SYSCALLS["clone"]), ctypes.c_long(flag | SIGCHLD), None, None, None, None)
        if pid == 0:
            os._exit(0)
        if pid == -1:
            return errname(ctypes.get_errno())
        os.waitpid(pid, 0)
        return "ok"
    return run


def _clone3_newuser():
    """clone3(2) takes its flags in a struct that a seccomp filter cannot read: a filter that
    inspects clone's flags must refuse clone3 altogether (ENOSYS makes libc fall back)."""
    args = (ctypes.c_uint64 * 8)(CLONE["user"], 0, 0, 0, SIGCHLD, 0, 0, 0)  # flags .. exit_signal
    pid = libc.syscall(ctypes.c_long(435), args, ctypes.c_long(64))
    if pid == 0:
        os._exit(0)
    if pid == -1:
        return errname(ctypes.get_errno())
    os.waitpid(pid, 0)
    return "ok"


def _setns_net():
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    return rc(libc.setns(fd, CLONE["net"]))


def _mount_tmpfs():
    os.makedirs("/tmp/condo-attacker-mnt2", exist_ok=True)
    return rc(libc.mount(b"none", b"/tmp/condo-attacker-mnt2", b"tmpfs", 0, None))


def _ptrace_child():
    """PTRACE_ATTACH to a process of our own (same uid: allowed unless a filter forbids ptrace)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    try:
        return rc(libc.ptrace(PTRACE_ATTACH, pid, None, None))
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def _ptrace_init():
    """PTRACE_SEIZE (no stop, auto-detached when we exit) of pid 1, the runtime, our parent."""
    return rc(libc.ptrace(PTRACE_SEIZE, 1, None, None))


def _bpf():
    attr = ctypes.create_string_buffer(72)
    ctypes.memmove(attr, (ctypes.c_uint32 * 4)(2, 4, 4, 1), 16)  # BPF_MAP_TYPE_ARRAY, 4, 4, 1 entry
    return _sys("bpf", ctypes.c_long(0), attr, ctypes.c_long(72))  # BPF_MAP_CREATE


def _perf_event_open():
    attr = ctypes.create_string_buffer(128)
    ctypes.memmove(attr, (ctypes.c_uint32 * 2)(1, 128), 8)  # PERF_TYPE_SOFTWARE, size
    ctypes.memmove(ctypes.byref(attr, 40), (ctypes.c_uint64 * 1)(1 | 32 | 64), 8)  # disabled, no kernel/hv
    return _sys("perf_event_open", attr, ctypes.c_long(0), ctypes.c_long(-1), ctypes.c_long(-1), ctypes.c_long(0))


def _keyctl():
    return _sys("keyctl", ctypes.c_long(1), None)  # KEYCTL_JOIN_SESSION_KEYRING, anonymous


def _finit_module():
    fd = os.open("/dev/null", os.O_RDONLY)
    return _sys("finit_module", ctypes.c_long(fd), b"", ctypes.c_long(0))


SYSCALL_ATTACKS = {
    **{"unshare_" + name: _unshare(flag) for name, flag in CLONE.items()},
    "clone3_newuser": _clone3_newuser,
    "userns_then_mount": _userns_then_mount,
    # clone(2) has no room for CLONE_NEWTIME (its low byte is the exit signal).
    **{"clone_new" + name: _clone(flag) for name, flag in CLONE.items() if name != "time"},
    "setns_net": _setns_net,
    "mount_tmpfs": _mount_tmpfs,
    "setuid_root": lambda: rc(libc.setuid(0)),
    "setgid_root": lambda: rc(libc.setgid(0)),
    "chroot": lambda: rc(libc.chroot(b"/tmp")),
    "sethostname": lambda: rc(libc.sethostname(b"pwned", 5)),
    "ptrace_child": _ptrace_child,
    "ptrace_init": _ptrace_init,
    "bpf": _bpf,
    "perf_event_open": _perf_event_open,
    "keyctl": _keyctl,
    "init_module": lambda: _sys("init_module", None, ctypes.c_long(0), b""),
    "finit_module": _finit_module,
    "kexec_load": lambda: _sys("kexec_load", ctypes.c_long(0), ctypes.c_long(0), None, ctypes.c_long(0)),
}


def attack_syscalls(event):
    return {"results": {name: in_child(fn) for name, fn in SYSCALL_ATTACKS.items()},
            "pid": os.getpid()}


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


def attack_net(event):
    timeout = event.get("timeout", 1.0)
    tcp = []
    for host, port in event.get("tcp", []):
        entry = {"host": host, "port": port}
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((host, port))
            entry["result"] = "connected"
            # Whoever answers: the Lambda API (control plane) and the Runtime API answer differently.
            s.sendall(b"GET /2015-03-31/functions/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            try:
                while len(data) < 2048:
                    chunk = s.recv(2048)
                    if not chunk:
                        break
                    data += chunk
            except OSError as e:
                entry["recv"] = oserr(e)
            entry["answer"] = text(data[:2048])
        except socket.timeout:
            entry["result"] = "timeout"
        except OSError as e:
            entry["result"] = oserr(e)
        finally:
            s.close()
        tcp.append(entry)
    udp = []
    for host, port in event.get("udp", []):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(b"\x00" * 12, (host, port))
            udp.append({"host": host, "port": port, "result": "sent"})
        except OSError as e:
            udp.append({"host": host, "port": port, "result": oserr(e)})
        finally:
            s.close()
    dns = []
    for name in event.get("dns", []):
        try:
            dns.append({"name": name, "result": sorted({a[4][0] for a in socket.getaddrinfo(name, 80)})})
        except OSError as e:
            dns.append({"name": name, "result": "error " + repr(e)})
    interfaces = []
    try:
        interfaces = [n for _, n in socket.if_nameindex()]
    except OSError as e:
        interfaces = oserr(e)
    return {"tcp": tcp, "udp": udp, "dns": dns, "interfaces": interfaces,
            "routes": text(read_head("/proc/net/route", 8192))}


# ---------------------------------------------------------------------------------------------
# Resource exhaustion
# ---------------------------------------------------------------------------------------------


def attack_fork_bomb(event):
    """Forks until fork fails or `max` children exist (a bound so that a host without a pids
    limit survives the test), holds them `hold_s` seconds, then releases and reaps them."""
    r, w = os.pipe()
    kids, stopped = [], None
    started = time.time()
    while len(kids) < event["max"]:
        try:
            pid = os.fork()
        except OSError as e:
            stopped = oserr(e)
            break
        if pid == 0:
            try:
                os.close(w)
                os.read(r, 1)  # until the parent closes its end
            finally:
                os._exit(0)
        kids.append(pid)
    peak = time.time()
    visible = len([n for n in os.listdir("/proc") if n.isdigit()])
    time.sleep(event.get("hold_s", 0))
    released = time.time()
    os.close(w)
    os.close(r)
    for pid in kids:
        os.waitpid(pid, 0)
    return {"children": len(kids), "stopped_by": stopped, "visible_pids": visible,
            "t_start": started, "t_peak": peak, "t_release": released}


def attack_nofile(event):
    before = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    fds, stopped = [], None
    while len(fds) < event.get("max", 4096):
        try:
            fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as e:
            stopped = oserr(e)
            break
    for fd in fds:
        os.close(fd)
    raised = {}
    soft, hard = before
    for label, value in (("to_hard", (hard, hard)), ("beyond_hard", (hard * 4, hard * 4))):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, value)
            raised[label] = "ok"
        except (OSError, ValueError) as e:
            raised[label] = oserr(e)
    after = list(resource.getrlimit(resource.RLIMIT_NOFILE))
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, after[1]), after[1]))
    return {"opened": len(fds), "stopped_by": stopped, "rlimit_before": before,
            "rlimit_after_raise": after, "raise": raised}


def attack_fill_tmp(event):
    path = "/tmp/condo-attacker-fill.bin"
    block = b"\xa5" * (1 << 20)
    written, stopped = 0, None
    st = os.statvfs("/tmp")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while written < event["max_bytes"]:
            try:
                n = os.write(fd, block)
            except OSError as e:
                stopped = oserr(e)
                break
            if n == 0:
                stopped = "short write"
                break
            written += n
    finally:
        os.close(fd)
        os.unlink(path)  # give the memory back; the count is the evidence
    return {"written": written, "stopped_by": stopped, "tmp_size": st.f_blocks * st.f_frsize}


def attack_memory_bomb(event):
    chunk = 8 << 20
    held = []
    for _ in range(event["mb"] * (1 << 20) // chunk):
        held.append(b"\xa5" * chunk)  # filled, so every page is really resident
    return {"allocated_mb": len(held) * chunk >> 20}


def attack_loop(event):
    n = 0
    while True:
        n += 1


ATTACKS = {name[len("attack_"):]: fn for name, fn in globals().items() if name.startswith("attack_")}


def handler(event, context):
    if not isinstance(event, dict) or "attack" not in event:
        return victim.handler(event, context)
    out = ATTACKS[event["attack"]](event)
    out.update(env=ENV, tenant=context.tenant_id, flavour="python")
    return out
