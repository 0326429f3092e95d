//! condo's native attacker: a `provided.al2023` function that runs one attack per invocation and
//! answers with raw evidence (errno names, listings, counts), never a verdict; the tests in
//! `tests/e2e/test_attacks.py` decide whether the boundary held.
//!
//! It speaks the Runtime API itself, one TCP connection per request, so it can also misuse the
//! protocol. Events without an "attack" key are victim operations (`plant`, `check`), so one
//! function serves victims and attackers. The process is single-threaded, which keeps `fork` safe.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

const PREFIX: &str = "/2018-06-01/runtime";

/// Set where glibc's loader runs in non-secure mode: it then complains about a preload library
/// that does not exist. A set-uid exec that raised privileges runs in secure mode (AT_SECURE)
/// and ignores such a path silently, so the complaint proves the exec changed no credentials.
const ABSENT_PRELOAD: &str = "/tmp/condo-attacker-absent-preload.so";

/// The names in a directory, sorted.
fn sorted_names(dir: &str) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn main() {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").unwrap_or_else(|_| "127.0.0.1:9001".into());
    let env_id = random_hex(8);
    let mut victim = Victim::default();
    loop {
        let next = match http(&api, "GET", &format!("{PREFIX}/invocation/next"), b"", None) {
            Ok(r) if r.status == 200 => r,
            Ok(r) if r.status == 410 => std::process::exit(0),
            Ok(r) => fatal(&format!("/next answered {}", r.status)),
            Err(e) => fatal(&format!("/next: {e}")),
        };
        let id = next
            .header("lambda-runtime-aws-request-id")
            .unwrap_or_default();
        let tenant = next.header("lambda-runtime-aws-tenant-id");
        let event: Value = serde_json::from_slice(&next.body).unwrap_or(Value::Null);
        let mut out = match event.get("attack").and_then(Value::as_str) {
            Some(name) => attack(name, &event, &api, &id),
            None => victim.handle(&event),
        };
        if let Value::Object(map) = &mut out {
            map.insert("env".into(), env_id.clone().into());
            map.insert("tenant".into(), tenant.into());
            map.insert("flavour".into(), "native".into());
        }
        let body = out.to_string();
        let path = format!("{PREFIX}/invocation/{id}/response");
        if let Err(e) = http(&api, "POST", &path, body.as_bytes(), None) {
            fatal(&format!("posting the response: {e}"));
        }
    }
}

fn fatal(message: &str) -> ! {
    eprintln!("attacker: {message}");
    std::process::exit(2)
}

fn attack(name: &str, event: &Value, api: &str, request_id: &str) -> Value {
    match name {
        "whoami" => whoami(),
        "proc" => proc_scan(event),
        "fs_walk" => fs_walk(event),
        "read_paths" => {
            json!({ "paths": strings(&event["paths"]).iter().map(|p| probe_path(p)).collect::<Vec<_>>() })
        }
        "write_paths" => write_paths(event),
        "devices" => devices(event),
        "setuid" => setuid_binaries(event),
        "syscalls" => syscalls(),
        "net" => net(event),
        "fork_bomb" => fork_bomb(event),
        "nofile" => nofile(event),
        "fill_tmp" => fill_tmp(event),
        "memory_bomb" => memory_bomb(event),
        "loop" => endless_loop(),
        "runtime_api" => runtime_api(event, api, request_id),
        other => json!({ "error": format!("unknown attack {other}") }),
    }
}

// ------------------------------------------------------------------------------------------
// Helpers: errno names, HTTP, small conversions
// ------------------------------------------------------------------------------------------

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ename(code: i32) -> String {
    let name = match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETDOWN => "ENETDOWN",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EDQUOT => "EDQUOT",
        _ => return format!("E{code}"),
    };
    name.into()
}

fn ioerr(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EAGAIN) if e.kind() == io::ErrorKind::WouldBlock => "timeout".into(),
        Some(code) => ename(code),
        None if e.kind() == io::ErrorKind::TimedOut => "timeout".into(),
        None => e.to_string(),
    }
}

/// "ok" for a successful libc call (anything but -1), else the errno name.
fn rc(ret: i64) -> String {
    if ret == -1 {
        ename(errno())
    } else {
        "ok".into()
    }
}

fn cstr(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn lossy(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_head(path: &str, limit: usize) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    fs::File::open(path)?
        .take(limit as u64)
        .read_to_end(&mut data)?;
    Ok(data)
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Option<Duration>,
) -> io::Result<Reply> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(timeout)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no end of headers"))?;
    let head = lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Runs `f` in a forked child, so a syscall that works cannot change the runtime process, and
/// returns what it returned.
fn in_child(f: impl FnOnce() -> String) -> String {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array it is given.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return format!("pipe: {}", ename(errno()));
    }
    // SAFETY: this process is single-threaded, so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let answer = f();
        let bytes = answer.as_bytes();
        // SAFETY: writes from a live buffer, then leaves without running destructors twice.
        unsafe {
            libc::write(fds[1], bytes.as_ptr().cast(), bytes.len().min(4000));
            libc::_exit(0);
        }
    }
    // SAFETY: closes our copy of the write end; the descriptors are ours.
    unsafe { libc::close(fds[1]) };
    if pid < 0 {
        // SAFETY: as above.
        unsafe { libc::close(fds[0]) };
        return format!("fork: {}", ename(errno()));
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into a live buffer of the given length.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    let mut status = 0;
    // SAFETY: closes our descriptor and reaps our own child.
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(pid, &mut status, 0);
    }
    if !out.is_empty() {
        lossy(&out)
    } else if libc::WIFSIGNALED(status) {
        // A filter may kill instead of refusing: that is evidence too.
        format!("killed by {}", signame(libc::WTERMSIG(status)))
    } else {
        "child gave no answer".into()
    }
}

fn signame(sig: i32) -> String {
    match sig {
        libc::SIGSYS => "SIGSYS".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        other => format!("signal {other}"),
    }
}

// ------------------------------------------------------------------------------------------
// Victim operations (the neighbour tenant of this same function)
// ------------------------------------------------------------------------------------------

#[derive(Default)]
struct Victim {
    count: u64,
    secret: Option<String>,
}

impl Victim {
    fn handle(&mut self, event: &Value) -> Value {
        self.count += 1;
        let mut out = json!({ "count": self.count });
        let op = event.get("op").and_then(Value::as_str).unwrap_or("check");
        if op == "plant" {
            let secret = event["secret"].as_str().unwrap_or_default().to_owned();
            let ok = fs::write(format!("/tmp/condo-secret-{secret}.txt"), &secret).is_ok();
            out["planted"] = ok.into();
            self.secret = Some(secret);
        } else if op == "write_tmp" {
            // Proves this tenant's /tmp still has room after a neighbour filled its own.
            let path = "/tmp/condo-victim-write.bin";
            let n = event["bytes"].as_u64().unwrap_or(0) as usize;
            out["write_tmp"] = match fs::write(path, vec![b'v'; n]) {
                Ok(()) => n.into(),
                Err(e) => ioerr(&e).into(),
            };
            let _ = fs::remove_file(path);
        } else {
            let secret = self.secret.clone().unwrap_or_default();
            let tmp = fs::read_to_string(format!("/tmp/condo-secret-{secret}.txt")).ok();
            out["tmp_ok"] =
                (self.secret.is_some() && tmp.as_deref() == Some(secret.as_str())).into();
            out["memory_ok"] =
                (self.secret.is_some() && event["secret"].as_str() == Some(secret.as_str())).into();
            out["child_ok"] = true.into(); // no child process in the native victim
        }
        out
    }
}

// ------------------------------------------------------------------------------------------
// Who am I
// ------------------------------------------------------------------------------------------

fn whoami() -> Value {
    let mut status = Map::new();
    if let Ok(text) = fs::read_to_string("/proc/self/status") {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(':') {
                if [
                    "Uid",
                    "Gid",
                    "Groups",
                    "CapInh",
                    "CapPrm",
                    "CapEff",
                    "CapBnd",
                    "CapAmb",
                    "NoNewPrivs",
                    "Seccomp",
                    "Seccomp_filters",
                ]
                .contains(&k)
                {
                    status.insert(k.into(), v.trim().into());
                }
            }
        }
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let mut nproc = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut nproc) };
    let mut out = json!({
        // SAFETY: these identity getters cannot fail.
        "pid": unsafe { libc::getpid() }, "ppid": unsafe { libc::getppid() },
        "uid": unsafe { libc::getuid() }, "euid": unsafe { libc::geteuid() },
        "gid": unsafe { libc::getgid() }, "egid": unsafe { libc::getegid() },
        "status": status,
        "rlimit_nofile": [lim.rlim_cur, lim.rlim_max],
        "rlimit_nproc": [nproc.rlim_cur, nproc.rlim_max],
        "hostname": fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default(),
    });
    for name in ["uid_map", "gid_map", "cgroup", "mountinfo"] {
        out[name] = match read_head(&format!("/proc/self/{name}"), 65536) {
            Ok(d) => lossy(&d).into(),
            Err(e) => ioerr(&e).into(),
        };
    }
    let mut ns = Map::new();
    for n in ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        let v = match fs::read_link(format!("/proc/self/ns/{n}")) {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) => ioerr(&e),
        };
        ns.insert(n.into(), v.into());
    }
    out["ns"] = ns.into();
    out
}

// ------------------------------------------------------------------------------------------
// Other tenants' data
// ------------------------------------------------------------------------------------------

fn proc_scan(event: &Value) -> Value {
    let mut listed: Vec<u64> = fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    listed.sort_unstable();
    let scan = event["scan_pids"].as_u64().unwrap_or(4096);
    let reachable: Vec<u64> = (1..=scan)
        .filter(|n| fs::symlink_metadata(format!("/proc/{n}")).is_ok())
        .collect();
    let mut all: Vec<u64> = listed.iter().chain(reachable.iter()).copied().collect();
    all.sort_unstable();
    all.dedup();
    let mut procs = Vec::new();
    for pid in all {
        let base = format!("/proc/{pid}");
        let mut p = json!({ "pid": pid });
        for name in ["cmdline", "environ", "comm"] {
            p[name] = match read_head(&format!("{base}/{name}"), 8192) {
                Ok(d) => lossy(&d).into(),
                Err(e) => ioerr(&e).into(),
            };
        }
        p["uid"] = fs::read_to_string(format!("{base}/status"))
            .ok()
            .and_then(|t| t.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
            .unwrap_or_default()
            .into();
        p["root"] = match fs::read_link(format!("{base}/root")) {
            Ok(l) => l.to_string_lossy().into_owned().into(),
            Err(e) => ioerr(&e).into(),
        };
        let tmp = format!("{base}/root/tmp");
        p["tmp"] = match sorted_names(&tmp) {
            Ok(names) => {
                let mut m = Map::new();
                for n in names.into_iter().take(50) {
                    let v = match read_head(&format!("{tmp}/{n}"), 512) {
                        Ok(d) => lossy(&d),
                        Err(e) => ioerr(&e),
                    };
                    m.insert(n, v.into());
                }
                m.into()
            }
            Err(e) => ioerr(&e).into(),
        };
        p["mem"] = match read_head(&format!("{base}/mem"), 16) {
            Ok(d) => format!("read {} bytes", d.len()).into(),
            Err(e) => ioerr(&e).into(),
        };
        procs.push(p);
    }
    json!({ "listed": listed, "reachable": reachable, "procs": procs })
}

fn fs_walk(event: &Value) -> Value {
    let needles: Vec<Vec<u8>> = strings(&event["needles"])
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let skip = strings(&event["skip"]);
    let no_read: Vec<String> = strings(&event["no_read"])
        .iter()
        .map(|p| format!("{}/", p.trim_end_matches('/')))
        .collect();
    let cap = event["max_file_bytes"].as_u64().unwrap_or(1 << 20);
    let started = Instant::now();
    let mut hits = Vec::new();
    let mut errors: Map<String, Value> = Map::new();
    let mut unreadable = Vec::new();
    let (mut dirs, mut files, mut files_read, mut bytes_read, mut other) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut note = |path: &str, e: &io::Error, errors: &mut Map<String, Value>| {
        let name = ioerr(e);
        let n = errors.get(&name).and_then(Value::as_u64).unwrap_or(0);
        errors.insert(name.clone(), (n + 1).into());
        if unreadable.len() < 50 {
            unreadable.push(json!([path, name]));
        }
    };
    let search = |path: &str, data: &[u8], place: &str, hits: &mut Vec<Value>| {
        for (i, n) in needles.iter().enumerate() {
            if !n.is_empty() && data.windows(n.len()).any(|w| w == n.as_slice()) {
                hits.push(json!({ "path": path, "needle": i, "in": place }));
            }
        }
    };
    let mut stack = vec!["/".to_owned()];
    while let Some(dir) = stack.pop() {
        dirs += 1;
        let entries = match fs::read_dir(&dir) {
            Ok(d) => d,
            Err(e) => {
                note(&dir, &e, &mut errors);
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            };
            search(&path, name.as_bytes(), "name", &mut hits);
            // The entry's type comes from the directory itself: no stat unless the file is read.
            let kind = match entry.file_type() {
                Ok(k) => k,
                Err(e) => {
                    note(&path, &e, &mut errors);
                    continue;
                }
            };
            if kind.is_dir() {
                if !skip.contains(&path) {
                    stack.push(path);
                }
                continue;
            }
            if !kind.is_file() {
                other += 1;
                continue;
            }
            files += 1;
            if no_read.iter().any(|p| path.starts_with(p.as_str())) {
                continue;
            }
            match fs::symlink_metadata(&path) {
                Ok(m) if m.len() > cap => continue,
                Ok(_) => {}
                Err(e) => {
                    note(&path, &e, &mut errors);
                    continue;
                }
            }
            match read_head(&path, cap as usize) {
                Ok(data) => {
                    files_read += 1;
                    bytes_read += data.len() as u64;
                    search(&path, &data, "contents", &mut hits);
                }
                Err(e) => note(&path, &e, &mut errors),
            }
        }
    }
    let mut root: Vec<String> = fs::read_dir("/")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    root.sort();
    json!({
        "hits": hits, "errors": errors, "unreadable": unreadable, "root": root,
        "counts": { "dirs": dirs, "files": files, "files_read": files_read, "bytes_read": bytes_read, "other": other },
        "seconds": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    })
}

fn probe_path(path: &str) -> Value {
    let mut out = json!({ "path": path });
    out["stat"] = match fs::metadata(path) {
        Ok(m) => {
            out["mode"] = format!("{:o}", m.mode()).into();
            "ok".into()
        }
        Err(e) => ioerr(&e).into(),
    };
    out["list"] = match sorted_names(path) {
        Ok(mut names) => {
            names.truncate(100);
            names.into()
        }
        Err(e) => ioerr(&e).into(),
    };
    out["read"] = match read_head(path, 4096) {
        Ok(d) => {
            out["head"] = lossy(&d[..d.len().min(512)]).into();
            "ok".into()
        }
        Err(e) => ioerr(&e).into(),
    };
    out
}

// ------------------------------------------------------------------------------------------
// Writes and devices
// ------------------------------------------------------------------------------------------

fn write_paths(event: &Value) -> Value {
    let mut results = Vec::new();
    let mut push = |op: &str, path: &str, r: io::Result<()>| {
        let result = match r {
            Ok(()) => "ok".to_owned(),
            Err(e) => ioerr(&e),
        };
        results.push(json!({ "op": op, "path": path, "result": result }));
    };
    for p in strings(&event["create"]) {
        let r = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .and_then(|mut f| f.write_all(b"attacker was here\n"));
        push("create", &p, r);
    }
    for p in strings(&event["open_write"]) {
        push(
            "open_write",
            &p,
            fs::OpenOptions::new().append(true).open(&p).map(drop),
        );
    }
    for p in strings(&event["mkdir"]) {
        push("mkdir", &p, fs::create_dir(&p));
    }
    for p in strings(&event["chmod"]) {
        // SAFETY: chmod reads a NUL-terminated path that outlives the call.
        let r = unsafe { libc::chmod(cstr(&p).as_ptr(), 0o777) };
        push(
            "chmod",
            &p,
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            },
        );
    }
    for p in strings(&event["symlink"]) {
        push("symlink", &p, std::os::unix::fs::symlink("/tmp", &p));
    }
    json!({ "results": results })
}

fn devices(event: &Value) -> Value {
    let mut opened = Vec::new();
    for p in strings(&event["open"]) {
        for (mode, write) in [("read", false), ("write", true)] {
            let r = fs::OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(libc::O_NONBLOCK)
                .open(&p);
            opened.push(match r {
                Ok(mut f) => {
                    let detail = if write {
                        "opened".to_owned()
                    } else {
                        let mut buf = [0u8; 16];
                        match f.read(&mut buf) {
                            Ok(n) => format!("read {n} bytes"),
                            Err(e) => format!("opened, read {}", ioerr(&e)),
                        }
                    };
                    json!({ "path": p, "mode": mode, "result": "ok", "detail": detail })
                }
                Err(e) => json!({ "path": p, "mode": mode, "result": ioerr(&e) }),
            });
        }
    }
    let mut made = Vec::new();
    for spec in event["mknod"].as_array().cloned().unwrap_or_default() {
        let path = spec[0].as_str().unwrap_or_default().to_owned();
        let kind = if spec[1].as_str() == Some("b") {
            libc::S_IFBLK
        } else {
            libc::S_IFCHR
        };
        let (major, minor) = (
            spec[2].as_u64().unwrap_or(0) as u32,
            spec[3].as_u64().unwrap_or(0) as u32,
        );
        // SAFETY: mknod reads a NUL-terminated path that outlives the call.
        let r = unsafe {
            libc::mknod(
                cstr(&path).as_ptr(),
                kind | 0o666,
                libc::makedev(major, minor),
            )
        };
        let mut entry = json!({ "path": path, "result": rc(i64::from(r)) });
        if r == 0 {
            entry["open"] = match fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(_) => "ok".into(),
                Err(e) => ioerr(&e).into(),
            };
        }
        made.push(entry);
    }
    json!({ "open": opened, "mknod": made })
}

// ------------------------------------------------------------------------------------------
// Privilege escalation
// ------------------------------------------------------------------------------------------

fn setuid_binaries(event: &Value) -> Value {
    let mut found = Vec::new();
    for dir in [
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/lib/openssh",
    ] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let path = format!("{dir}/{n}");
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            if m.is_file() && m.mode() & (libc::S_ISUID | libc::S_ISGID) != 0 {
                found.push(
                    json!({ "path": path, "mode": format!("{:o}", m.mode()), "owner": m.uid() }),
                );
            }
        }
    }
    let paths: Vec<String> = found
        .iter()
        .filter_map(|f| f["path"].as_str().map(str::to_owned))
        .collect();
    let prefer = [
        "/usr/bin/su",
        "/usr/bin/mount",
        "/usr/bin/passwd",
        "/usr/bin/newgrp",
        "/usr/bin/chsh",
    ];
    let mut chosen: Vec<String> = paths
        .iter()
        .filter(|p| prefer.contains(&p.as_str()))
        .cloned()
        .collect();
    chosen.extend(
        paths
            .iter()
            .filter(|p| !prefer.contains(&p.as_str()))
            .cloned(),
    );
    chosen.truncate(event["max"].as_u64().unwrap_or(5) as usize);
    let mut runs = Vec::new();
    for path in chosen {
        let out = Command::new(&path)
            .arg("--version")
            .env_clear()
            .env("LD_PRELOAD", ABSENT_PRELOAD)
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C")
            .stdin(Stdio::null())
            .output();
        runs.push(match out {
            Ok(o) => json!({
                "path": path, "rc": o.status.code(),
                "stdout": lossy(&o.stdout[..o.stdout.len().min(300)]),
                "stderr": lossy(&o.stderr[..o.stderr.len().min(600)]),
            }),
            Err(e) => json!({ "path": path, "error": e.to_string() }),
        });
    }
    let mut mount_try = Value::Null;
    if fs::metadata("/usr/bin/mount").is_ok() {
        let target = "/tmp/condo-attacker-mnt";
        let _ = fs::create_dir_all(target);
        if let Ok(o) = Command::new("/usr/bin/mount")
            .args(["-t", "tmpfs", "none", target])
            .stdin(Stdio::null())
            .output()
        {
            let mounted = fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains(&format!(" {target} ")));
            mount_try = json!({ "rc": o.status.code(), "stderr": lossy(&o.stderr[..o.stderr.len().min(300)]), "mounted": mounted });
        }
    }
    json!({ "found": found, "runs": runs, "mount": mount_try, "preload": ABSENT_PRELOAD })
}

fn sys(ret: libc::c_long) -> String {
    rc(ret)
}

fn syscalls() -> Value {
    const NEWTIME: libc::c_int = 0x80;
    let namespaces: [(&str, libc::c_int); 8] = [
        ("user", libc::CLONE_NEWUSER),
        ("mount", libc::CLONE_NEWNS),
        ("net", libc::CLONE_NEWNET),
        ("pid", libc::CLONE_NEWPID),
        ("uts", libc::CLONE_NEWUTS),
        ("ipc", libc::CLONE_NEWIPC),
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("time", NEWTIME),
    ];
    let mut results = Map::new();
    for (name, flag) in namespaces {
        // SAFETY: unshare only takes flags.
        results.insert(
            format!("unshare_{name}"),
            in_child(|| rc(i64::from(unsafe { libc::unshare(flag) }))).into(),
        );
    }
    // clone(2) has no room for CLONE_NEWTIME (its low byte is the exit signal).
    for (name, flag) in namespaces.into_iter().filter(|(n, _)| *n != "time") {
        let r = in_child(|| {
            // SAFETY: a fork-like clone (no new stack, no CLONE_VM); the child leaves at once.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (flag | libc::SIGCHLD) as libc::c_long,
                    0,
                    0,
                    0,
                    0,
                )
            };
            if pid == 0 {
                // SAFETY: leaving the clone child without touching shared state.
                unsafe { libc::_exit(0) };
            }
            if pid > 0 {
                // SAFETY: reaps our own child.
                unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
            }
            sys(pid)
        });
        results.insert(format!("clone_new{name}"), r.into());
    }
    results.insert("clone3_newuser".into(), in_child(clone3_newuser).into());
    other_abis(&mut results);
    let mnt = |dir: &'static str| {
        move || {
            let _ = fs::create_dir_all(dir);
            let (src, target, fstype) = (cstr("none"), cstr(dir), cstr("tmpfs"));
            // SAFETY: every pointer is a live NUL-terminated string or null.
            rc(i64::from(unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            }))
        }
    };
    results.insert(
        "userns_then_mount".into(),
        in_child(|| {
            // SAFETY: unshare only takes flags.
            let first = rc(i64::from(unsafe {
                libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS)
            }));
            format!("{first},{}", mnt("/tmp/condo-userns-mnt")())
        })
        .into(),
    );
    results.insert(
        "mount_tmpfs".into(),
        in_child(mnt("/tmp/condo-attacker-mnt2")).into(),
    );
    results.insert(
        "setns_net".into(),
        in_child(|| match fs::File::open("/proc/self/ns/net") {
            // SAFETY: setns takes a descriptor we own and flags.
            Ok(f) => rc(i64::from(unsafe {
                libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET)
            })),
            Err(e) => ioerr(&e),
        })
        .into(),
    );
    // SAFETY (all below): plain syscalls on constants, live buffers or null pointers.
    results.insert(
        "setuid_root".into(),
        in_child(|| rc(i64::from(unsafe { libc::setuid(0) }))).into(),
    );
    results.insert(
        "setgid_root".into(),
        in_child(|| rc(i64::from(unsafe { libc::setgid(0) }))).into(),
    );
    results.insert(
        "chroot".into(),
        in_child(|| rc(i64::from(unsafe { libc::chroot(cstr("/tmp").as_ptr()) }))).into(),
    );
    results.insert(
        "sethostname".into(),
        in_child(|| {
            rc(i64::from(unsafe {
                libc::sethostname(b"pwned".as_ptr().cast(), 5)
            }))
        })
        .into(),
    );
    results.insert("ptrace_child".into(), in_child(ptrace_own_child).into());
    results.insert(
        "ptrace_init".into(),
        // PTRACE_SEIZE does not stop pid 1 (the runtime, our parent) and ends when we exit.
        in_child(|| {
            sys(unsafe { libc::ptrace(libc::PTRACE_SEIZE, 1 as libc::pid_t, 0usize, 0usize) })
        })
        .into(),
    );
    results.insert(
        "bpf".into(),
        in_child(|| {
            let mut attr = [0u32; 18];
            attr[..4].copy_from_slice(&[2, 4, 4, 1]); // BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
            sys(unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    0 as libc::c_long,
                    attr.as_ptr(),
                    72 as libc::c_long,
                )
            })
        })
        .into(),
    );
    results.insert(
        "perf_event_open".into(),
        in_child(|| {
            let mut attr = [0u64; 16];
            attr[0] = 1 | (128 << 32); // PERF_TYPE_SOFTWARE, size 128 (little-endian)
            attr[5] = 1 | 32 | 64; // disabled, exclude_kernel, exclude_hv
            sys(unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) })
        })
        .into(),
    );
    results.insert(
        "keyctl".into(),
        in_child(|| {
            sys(unsafe { libc::syscall(libc::SYS_keyctl, 1 as libc::c_long, 0 as libc::c_long) })
        })
        .into(),
    );
    results.insert(
        "init_module".into(),
        in_child(|| {
            sys(unsafe { libc::syscall(libc::SYS_init_module, 0usize, 0usize, c"".as_ptr()) })
        })
        .into(),
    );
    results.insert(
        "finit_module".into(),
        in_child(|| match fs::File::open("/dev/null") {
            Ok(f) => sys(unsafe {
                libc::syscall(
                    libc::SYS_finit_module,
                    std::os::fd::AsRawFd::as_raw_fd(&f) as libc::c_long,
                    c"".as_ptr(),
                    0,
                )
            }),
            Err(e) => ioerr(&e),
        })
        .into(),
    );
    results.insert(
        "kexec_load".into(),
        in_child(|| {
            sys(unsafe { libc::syscall(libc::SYS_kexec_load, 0usize, 0usize, 0usize, 0usize) })
        })
        .into(),
    );
    // SAFETY: getpid cannot fail.
    json!({ "results": results, "pid": unsafe { libc::getpid() } })
}

/// clone3(2) takes its flags in a struct that a seccomp filter cannot read: a filter that
/// inspects clone's flags must refuse clone3 altogether (ENOSYS makes libc fall back).
fn clone3_newuser() -> String {
    let mut args = [0u64; 8]; // flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls
    args[0] = libc::CLONE_NEWUSER as u64;
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: a fork-like clone3 (no new stack, no CLONE_VM); the child leaves at once.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), 64usize) };
    if pid == 0 {
        // SAFETY: leaving the child without touching shared state.
        unsafe { libc::_exit(0) };
    }
    if pid > 0 {
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
    }
    sys(pid)
}

/// unshare(CLONE_NEWUSER) through the i386 (`int 0x80`) and x32 system call tables: a filter
/// that checks only x86_64 numbers, not the architecture, would let these through.
#[cfg(target_arch = "x86_64")]
fn other_abis(results: &mut Map<String, Value>) {
    const I386_UNSHARE: i64 = 310;
    const X32_BIT: libc::c_long = 0x4000_0000;
    let i386 = in_child(|| {
        let ret: i64;
        // SAFETY: one compat system call with a flags argument; rbx is saved around it.
        unsafe {
            std::arch::asm!(
                "xchg rbx, {arg}", "int 0x80", "xchg rbx, {arg}",
                arg = inout(reg) i64::from(libc::CLONE_NEWUSER) => _,
                inlateout("rax") I386_UNSHARE => ret,
            );
        }
        let ret = ret as i32; // the compat ABI answers in eax
        if ret < 0 {
            ename(-ret)
        } else {
            "ok".into()
        }
    });
    results.insert("unshare_user_i386".into(), i386.into());
    let x32 = in_child(|| {
        // SAFETY: unshare only takes flags.
        sys(unsafe {
            libc::syscall(
                X32_BIT | libc::SYS_unshare,
                libc::CLONE_NEWUSER as libc::c_long,
            )
        })
    });
    results.insert("unshare_user_x32".into(), x32.into());
}

#[cfg(not(target_arch = "x86_64"))]
fn other_abis(_results: &mut Map<String, Value>) {}

/// PTRACE_ATTACH to a process of our own (same uid: allowed unless a filter forbids ptrace).
fn ptrace_own_child() -> String {
    let mut fds = [0; 2];
    // SAFETY: pipe fills the array; fork in a single-threaded process; the child only blocks
    // on read and leaves.
    unsafe {
        if libc::pipe(fds.as_mut_ptr()) != 0 {
            return ename(errno());
        }
        let pid = libc::fork();
        if pid == 0 {
            libc::close(fds[1]);
            let mut b = 0u8;
            libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
        libc::close(fds[0]);
        let r = sys(libc::ptrace(libc::PTRACE_ATTACH, pid, 0usize, 0usize));
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        r
    }
}

// ------------------------------------------------------------------------------------------
// Network
// ------------------------------------------------------------------------------------------

fn socket_addr(host: &str, port: u16) -> Option<SocketAddr> {
    let text = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    text.parse().ok()
}

fn net(event: &Value) -> Value {
    let timeout = Duration::from_secs_f64(event["timeout"].as_f64().unwrap_or(1.0));
    let mut tcp = Vec::new();
    for t in event["tcp"].as_array().cloned().unwrap_or_default() {
        let (host, port) = (
            t[0].as_str().unwrap_or_default().to_owned(),
            t[1].as_u64().unwrap_or(0) as u16,
        );
        let mut entry = json!({ "host": host, "port": port });
        match socket_addr(&host, port).map(|a| TcpStream::connect_timeout(&a, timeout)) {
            None => entry["result"] = "bad address".into(),
            Some(Err(e)) => entry["result"] = ioerr(&e).into(),
            Some(Ok(mut s)) => {
                entry["result"] = "connected".into();
                // Whoever answers: the Lambda API and the Runtime API answer differently.
                let _ = s.set_read_timeout(Some(timeout));
                let _ = s.write_all(
                    b"GET /2015-03-31/functions/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                );
                let mut data = Vec::new();
                if let Err(e) = s.take(2048).read_to_end(&mut data) {
                    entry["recv"] = ioerr(&e).into();
                }
                entry["answer"] = lossy(&data).into();
            }
        }
        tcp.push(entry);
    }
    let mut udp = Vec::new();
    for t in event["udp"].as_array().cloned().unwrap_or_default() {
        let (host, port) = (
            t[0].as_str().unwrap_or_default().to_owned(),
            t[1].as_u64().unwrap_or(0) as u16,
        );
        let result = match (UdpSocket::bind("0.0.0.0:0"), socket_addr(&host, port)) {
            (Ok(s), Some(a)) => match s.send_to(&[0u8; 12], a) {
                Ok(_) => "sent".to_owned(),
                Err(e) => ioerr(&e),
            },
            (Err(e), _) => ioerr(&e),
            (_, None) => "bad address".into(),
        };
        udp.push(json!({ "host": host, "port": port, "result": result }));
    }
    let mut dns = Vec::new();
    for name in strings(&event["dns"]) {
        let result: Value = match (name.as_str(), 80).to_socket_addrs() {
            Ok(addrs) => addrs.map(|a| a.ip().to_string()).collect::<Vec<_>>().into(),
            Err(e) => format!("error {e}").into(),
        };
        dns.push(json!({ "name": name, "result": result }));
    }
    let interfaces: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_else(|_| {
            fs::read_to_string("/proc/net/dev")
                .unwrap_or_default()
                .lines()
                .skip(2)
                .filter_map(|l| l.split(':').next().map(|s| s.trim().to_owned()))
                .collect()
        });
    json!({
        "tcp": tcp, "udp": udp, "dns": dns, "interfaces": interfaces,
        "routes": fs::read_to_string("/proc/net/route").unwrap_or_default(),
    })
}

// ------------------------------------------------------------------------------------------
// Resource exhaustion
// ------------------------------------------------------------------------------------------

/// Forks until fork fails or `max` children exist (a bound so that a host without a pids limit
/// survives the test), holds them `hold_s` seconds, then releases and reaps them.
fn fork_bomb(event: &Value) -> Value {
    let max = event["max"].as_u64().unwrap_or(1500) as usize;
    let hold = Duration::from_secs_f64(event["hold_s"].as_f64().unwrap_or(0.0));
    let mut fds = [0; 2];
    // SAFETY: pipe fills the array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return json!({ "error": ename(errno()) });
    }
    let started = now();
    let mut kids = Vec::new();
    let mut stopped = Value::Null;
    while kids.len() < max {
        // SAFETY: single-threaded; the child only blocks on read and leaves.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::close(fds[1]);
                let mut b = 0u8;
                libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        if pid < 0 {
            stopped = ename(errno()).into();
            break;
        }
        kids.push(pid);
    }
    let peak = now();
    let visible = fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u64>().is_ok())
                .count()
        })
        .unwrap_or(0);
    std::thread::sleep(hold);
    let released = now();
    // SAFETY: closing our pipe ends lets every child's read return; then reap them.
    unsafe {
        libc::close(fds[1]);
        libc::close(fds[0]);
        for pid in &kids {
            libc::waitpid(*pid, std::ptr::null_mut(), 0);
        }
    }
    json!({
        "children": kids.len(), "stopped_by": stopped, "visible_pids": visible,
        "t_start": started, "t_peak": peak, "t_release": released,
    })
}

fn nofile(event: &Value) -> Value {
    let max = event["max"].as_u64().unwrap_or(4096) as usize;
    let get = || {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct it is given.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
        l
    };
    let before = get();
    let mut files = Vec::new();
    let mut stopped = Value::Null;
    while files.len() < max {
        match fs::File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) => {
                stopped = ioerr(&e).into();
                break;
            }
        }
    }
    let opened = files.len();
    drop(files);
    let mut raise = Map::new();
    for (label, value) in [
        ("to_hard", before.rlim_max),
        ("beyond_hard", before.rlim_max.saturating_mul(4)),
    ] {
        let l = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit reads the struct it is given.
        raise.insert(
            label.into(),
            rc(i64::from(unsafe {
                libc::setrlimit(libc::RLIMIT_NOFILE, &l)
            }))
            .into(),
        );
    }
    let after = get();
    json!({
        "opened": opened, "stopped_by": stopped,
        "rlimit_before": [before.rlim_cur, before.rlim_max],
        "rlimit_after_raise": [after.rlim_cur, after.rlim_max], "raise": raise,
    })
}

fn fill_tmp(event: &Value) -> Value {
    let path = "/tmp/condo-attacker-fill.bin";
    let max = event["max_bytes"].as_u64().unwrap_or(1 << 30);
    let block = vec![0xa5u8; 1 << 20];
    let mut written = 0u64;
    let mut stopped = Value::Null;
    // SAFETY: statvfs fills the struct it is given from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statvfs(cstr("/tmp").as_ptr(), &mut st) };
    match fs::File::create(path) {
        Ok(mut f) => {
            while written < max {
                match f.write(&block) {
                    Ok(0) => {
                        stopped = "short write".into();
                        break;
                    }
                    Ok(n) => written += n as u64,
                    Err(e) => {
                        stopped = ioerr(&e).into();
                        break;
                    }
                }
            }
        }
        Err(e) => stopped = ioerr(&e).into(),
    }
    let _ = fs::remove_file(path); // give the memory back; the count is the evidence
    json!({ "written": written, "stopped_by": stopped, "tmp_size": st.f_blocks * st.f_frsize })
}

fn memory_bomb(event: &Value) -> Value {
    let chunk = 8usize << 20;
    let total = event["mb"].as_u64().unwrap_or(512) as usize * (1 << 20);
    let mut held: Vec<Vec<u8>> = Vec::new();
    while held.len() * chunk < total {
        held.push(vec![0xa5u8; chunk]); // filled, so every page is really resident
    }
    json!({ "allocated_mb": (held.len() * chunk) >> 20 })
}

fn endless_loop() -> Value {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

// ------------------------------------------------------------------------------------------
// The Runtime API itself
// ------------------------------------------------------------------------------------------

/// Misuses this environment's Runtime API while our own invocation is in flight: answers for
/// request ids that are not ours (made up, or another environment's), a late init error, and
/// optionally a second /next on another connection. Every outcome is returned raw.
fn runtime_api(event: &Value, api: &str, own_id: &str) -> Value {
    let attempt = |method: &str, path: &str, body: &[u8], timeout: Duration| -> Value {
        match http(api, method, path, body, Some(timeout)) {
            Ok(r) => json!({
                "method": method, "path": path, "status": r.status,
                "request_id": r.header("lambda-runtime-aws-request-id"),
                "body": lossy(&r.body[..r.body.len().min(300)]),
            }),
            Err(e) => json!({ "method": method, "path": path, "status": ioerr(&e) }),
        }
    };
    let pwned = br#"{"pwned": true}"#;
    let mut foreign = vec![format!(
        "{}-0000-4000-8000-{}",
        random_hex(4),
        random_hex(6)
    )];
    foreign.extend(strings(&event["request_ids"]));
    let mut posts = Vec::new();
    for id in &foreign {
        for kind in ["response", "error"] {
            posts.push(attempt(
                "POST",
                &format!("{PREFIX}/invocation/{id}/{kind}"),
                pwned,
                Duration::from_secs(5),
            ));
        }
    }
    let init_error = attempt(
        "POST",
        &format!("{PREFIX}/init/error"),
        pwned,
        Duration::from_secs(5),
    );
    let second_next = match event["next_timeout_s"].as_f64() {
        Some(t) => attempt(
            "GET",
            &format!("{PREFIX}/invocation/next"),
            b"",
            Duration::from_secs_f64(t),
        ),
        None => Value::Null,
    };
    json!({ "own_id": own_id, "posts": posts, "init_error": init_error, "second_next": second_next })
}
