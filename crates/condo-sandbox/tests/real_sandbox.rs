//! Builds real sandboxes (needs root) and checks, from inside, what a program can see and do.
//!
//! The test binary doubles as the init step: `main` hands over to `init_main` when re-executed.
#![allow(clippy::unwrap_used)] // a test that cannot read its own tree should fail loudly

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use condo_sandbox::{
    host_system_root, BaseRoot, BindMount, ExitStatus, FileSpec, Launcher, LauncherConfig, Network,
    ResourceLimits, Sandbox, SandboxSpec, INIT_ARG,
};

/// Host ids the tests' sandboxes run as.
const FIRST_HOST_ID: u32 = 2_099_000_000;

fn main() {
    if std::env::args().nth(1).as_deref() == Some(INIT_ARG) {
        condo_sandbox::init_main();
    }
    if !nix::unistd::geteuid().is_root() {
        println!("real_sandbox: skipped, needs root (CI runs as root)");
        return;
    }
    let tests: [(&str, fn()); 14] = [
        (
            "sees_only_its_own_minimal_root",
            sees_only_its_own_minimal_root,
        ),
        (
            "spec_mounts_arrive_after_the_pivot_with_their_flags",
            spec_mounts_arrive_after_the_pivot_with_their_flags,
        ),
        (
            "runs_unprivileged_as_pid_1_with_private_tmp",
            runs_unprivileged_as_pid_1_with_private_tmp,
        ),
        (
            "listener_lives_in_the_sandbox_network_namespace",
            listener_lives_in_the_sandbox_network_namespace,
        ),
        (
            "outbound_network_has_a_route_and_its_helper_ends_with_the_sandbox",
            outbound_network_has_a_route_and_its_helper_ends_with_the_sandbox,
        ),
        (
            "setup_failure_is_reported_not_hung",
            setup_failure_is_reported_not_hung,
        ),
        (
            "runs_as_its_own_host_uid_with_no_capabilities",
            runs_as_its_own_host_uid_with_no_capabilities,
        ),
        (
            "seccomp_refuses_namespaces_and_mounts_but_threads_work",
            seccomp_refuses_namespaces_and_mounts_but_threads_work,
        ),
        (
            "memory_limit_ends_in_an_oom_kill",
            memory_limit_ends_in_an_oom_kill,
        ),
        (
            "memory_peak_is_read_afresh_each_time",
            memory_peak_is_read_afresh_each_time,
        ),
        (
            "process_limit_caps_a_fork_bomb",
            process_limit_caps_a_fork_bomb,
        ),
        ("open_files_are_limited", open_files_are_limited),
        (
            "teardown_leaves_no_cgroup_and_frees_the_id",
            teardown_leaves_no_cgroup_and_frees_the_id,
        ),
        (
            "a_new_launcher_removes_leftovers",
            a_new_launcher_removes_leftovers,
        ),
    ];
    for (name, test) in tests {
        test();
        println!("test {name} ... ok");
    }
    // Leave no empty groups behind on the machine running the tests.
    for parent in ["plain", "listen"] {
        launcher_with(None, parent, 1).remove_parent_cgroup();
    }
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
        tests.len()
    );
}

fn launcher_with(listen: Option<SocketAddrV4>, parent: &str, ids: u32) -> Launcher {
    Launcher::new(launcher_config(listen, parent, ids)).unwrap()
}

fn launcher_config(listen: Option<SocketAddrV4>, parent: &str, ids: u32) -> LauncherConfig {
    LauncherConfig {
        init_program: PathBuf::from("/proc/self/exe"),
        cgroup_parent: PathBuf::from(format!("condo-test/{parent}-{}", std::process::id())),
        host_ids: FIRST_HOST_ID..FIRST_HOST_ID + ids,
        listen,
        network_helper: pasta(),
        setup_timeout: Duration::from_secs(10),
        base: base_root(),
    }
}

fn base_root() -> BaseRoot {
    let new_root = std::env::temp_dir().join("condo-sandbox-test-root");
    std::fs::create_dir_all(&new_root).unwrap();
    let (binds, symlinks) = host_system_root().unwrap();
    BaseRoot {
        new_root,
        binds,
        symlinks,
    }
}

/// The network helper; CI installs it (Debian package passt).
fn pasta() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("pasta"))
        .find(|p| p.is_file())
}

fn launcher() -> Launcher {
    launcher_with(None, "plain", 8)
}

fn limits() -> ResourceLimits {
    ResourceLimits {
        memory_bytes: 256 << 20,
        cpu_weight: 100,
        cpu_max_millis: 1000,
        max_pids: 64,
        open_files: 1024,
    }
}

fn spec(script: &str) -> SandboxSpec {
    SandboxSpec {
        binds: vec![],
        symlinks: vec![],
        files: vec![FileSpec {
            path: "/etc/passwd".into(),
            contents: "sbx:x:990:990::/tmp:/bin/false\n".into(),
        }],
        tmp_size_bytes: 8 << 20,
        hostname: "sandbox".into(),
        uid: 990,
        gid: 990,
        cwd: "/".into(),
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        limits: limits(),
        network: Network::LoopbackOnly,
    }
}

/// Runs the script to completion and returns (status, output).
fn run(spec: &SandboxSpec) -> (ExitStatus, String) {
    let mut sb = launcher().spawn(spec).unwrap();
    let mut out = String::new();
    std::fs::File::from(sb.take_output().unwrap())
        .read_to_string(&mut out)
        .unwrap();
    let status = sb.kill_and_wait().unwrap();
    (status, out)
}

/// The function's own mounts are opened by the platform and attached after the sandbox left
/// the host's tree: each one is there, read-only unless asked, and nothing beside it.
fn spec_mounts_arrive_after_the_pivot_with_their_flags() {
    let dir = std::env::temp_dir().join(format!("condo-sandbox-test-code-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/hello.txt"), "hello from the host\n").unwrap();
    let scratch = dir.with_extension("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut s = spec(
        "cat /var/task/sub/hello.txt; cat /etc/extra.conf; \
         touch /var/task/new 2>&1 || echo task-ro; touch /etc/extra.conf 2>&1 || echo file-ro; \
         touch /mnt/scratch/made && echo scratch-rw; \
         grep -E ' /var/task | /etc/extra.conf | /mnt/scratch ' /proc/self/mountinfo",
    );
    s.binds = vec![
        BindMount::read_only(&dir, "/var/task"),
        BindMount::read_only(dir.join("sub/hello.txt"), "/etc/extra.conf"),
        BindMount {
            source: scratch.clone(),
            target: "/mnt/scratch".into(),
            writable: true,
        },
    ];
    // The sandbox's uid owns nothing on the host: let it write into the scratch directory.
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (status, out) = run(&s);
    assert_eq!(status, ExitStatus::Exited(0), "{out}");
    assert_eq!(out.matches("hello from the host").count(), 2, "{out}");
    for expect in ["task-ro", "file-ro", "scratch-rw"] {
        assert!(out.contains(expect), "{expect}: {out}");
    }
    let mounts: Vec<&str> = out.lines().filter(|l| l.contains(" - ")).collect();
    assert_eq!(mounts.len(), 3, "{out}");
    for line in mounts {
        let options = line.split_whitespace().nth(5).unwrap_or("");
        assert!(
            options.contains("nosuid") && options.contains("nodev"),
            "{line}"
        );
        assert_eq!(
            options.starts_with("ro"),
            !line.contains("/mnt/scratch"),
            "{line}"
        );
    }
    assert!(scratch.join("made").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&scratch).unwrap();
}

fn sees_only_its_own_minimal_root() {
    let (status, out) = run(&spec("ls -A /; echo; ls /dev; touch /usr/x 2>&1 || echo usr-ro; touch /x 2>&1 || echo root-ro; hostname"));
    assert_eq!(status, ExitStatus::Exited(0), "{out}");
    let mut lines = out.lines();
    let root: Vec<&str> = lines.by_ref().take_while(|l| !l.is_empty()).collect();
    for entry in &root {
        assert!(
            ["bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr", "lib32"]
                .contains(entry),
            "unexpected {entry} in / : {root:?}"
        );
    }
    assert!(
        !root.contains(&"root") && !root.contains(&"home") && !root.contains(&"work"),
        "{root:?}"
    );
    assert!(out.contains("usr-ro") && out.contains("root-ro"), "{out}");
    assert!(out.trim_end().ends_with("sandbox"), "{out}");
}

fn runs_unprivileged_as_pid_1_with_private_tmp() {
    let (status, out) = run(&spec(
        "echo pid=$$; id -u; echo secret > /tmp/f && cat /tmp/f; ls /proc | grep -c '^[0-9]'",
    ));
    assert_eq!(status, ExitStatus::Exited(0), "{out}");
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("990\n"), "{out}");
    assert!(out.contains("secret\n"), "{out}");
    // Two processes at most: the shell and ls/grep of the pipeline; the host's are invisible.
    let procs: usize = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(procs <= 3, "sees {procs} processes");
    // The host's /tmp never received the file.
    assert!(
        !std::path::Path::new("/tmp/f").exists()
            || std::fs::read_to_string("/tmp/f").unwrap() != "secret\n"
    );
}

fn listener_lives_in_the_sandbox_network_namespace() {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001);
    let mut sb = launcher_with(Some(addr), "listen", 2)
        .spawn(&spec("exec sleep 30"))
        .unwrap();
    let listener = sb.take_listener().expect("listener passed back");
    assert_eq!(
        listener.local_addr().unwrap(),
        std::net::SocketAddr::V4(addr)
    );
    // From the host's network namespace the sandbox's 127.0.0.1:9001 is unreachable (unless
    // something else on the host happens to listen there, in which case it is not ours).
    if let Ok(mut c) =
        std::net::TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200))
    {
        listener.set_nonblocking(true).unwrap();
        let _ = c.write_all(b"x");
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            listener.accept().is_err(),
            "host connection reached the sandbox listener"
        );
    }
    assert!(sb.try_wait().unwrap().is_none());
    assert!(matches!(sb.kill_and_wait(), Some(ExitStatus::Signaled(9))));
}

/// Host pids of the network helpers this test process started.
fn our_helpers() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid ..."
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            // Debian's pasta re-executes itself as passt.avx2 where the CPU has AVX2.
            (stat.contains("(pasta") || stat.contains("(passt"))
                && after.split_whitespace().nth(1) == Some(me.as_str())
        })
        .collect()
}

fn outbound_network_has_a_route_and_its_helper_ends_with_the_sandbox() {
    assert!(
        pasta().is_some(),
        "pasta (Debian package passt) is not installed"
    );
    let routes = "cat /proc/net/route | tail -n +2; echo end-of-routes; exec sleep 30";
    // Loopback only: no route at all.
    let mut closed = launcher().spawn(&spec(routes)).unwrap();
    let out = read_until(&mut closed, "end-of-routes");
    assert!(out.trim_start().starts_with("end-of-routes"), "{out}");
    assert!(our_helpers().is_empty());
    drop(closed);

    let mut open_spec = spec(routes);
    open_spec.network = Network::Outbound;
    let mut open = launcher().spawn(&open_spec).unwrap();
    let out = read_until(&mut open, "end-of-routes");
    // A default route (destination 00000000) through the helper's interface, ready before
    // the program ran.
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("00000000")),
        "{out}"
    );
    assert_eq!(our_helpers().len(), 1);
    drop(open);
    assert!(our_helpers().is_empty(), "the helper outlived its sandbox");
}

fn setup_failure_is_reported_not_hung() {
    let mut s = spec("true");
    s.argv = vec!["/no/such/program".into()];
    let err = launcher().spawn(&s).unwrap_err();
    assert!(err.to_string().contains("/no/such/program"), "{err}");

    // A spec mount that cannot be opened fails the start, not the platform.
    let mut s = spec("true");
    s.binds = vec![BindMount::read_only("/no/such/code", "/var/task")];
    let err = launcher().spawn(&s).unwrap_err();
    assert!(err.to_string().contains("/no/such/code"), "{err}");

    // So does a base that cannot be built, at prepare time.
    let mut config = launcher_config(None, "plain", 1);
    config
        .base
        .binds
        .push(BindMount::read_only("/no/such/dir", "/opt/x"));
    let err = Launcher::new(config).unwrap().prepare().unwrap_err();
    assert!(err.to_string().contains("base root"), "{err}");
}

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

fn runs_as_its_own_host_uid_with_no_capabilities() {
    let l = launcher();
    let mut sb = l
        .spawn(&spec(
            "cat /proc/self/uid_map /proc/self/status /proc/self/cgroup; exec sleep 30",
        ))
        .unwrap();
    let out = read_until(&mut sb, "Seccomp_filters");
    // Inside: uid 990, mapped to the sandbox's own host id and nothing else.
    let map: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["990", &sb.host_uid().to_string(), "1"], "{out}");
    assert_eq!(status_field(&out, "Uid:"), "990\t990\t990\t990", "{out}");
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(&out, caps), "0000000000000000", "{caps} {out}");
    }
    assert_eq!(status_field(&out, "NoNewPrivs:"), "1", "{out}");
    assert_eq!(status_field(&out, "Seccomp:"), "2", "{out}");
    // Its cgroup namespace is rooted at its own group.
    assert!(
        out.lines()
            .filter(|l| l.contains(":/"))
            .all(|l| l.ends_with(":/")),
        "{out}"
    );
    // Outside: the program's real uid is the sandbox's host id.
    let host_status =
        std::fs::read_to_string(format!("/proc/{}/status", sb.program_pid())).unwrap();
    let uid = sb.host_uid().to_string();
    assert_eq!(
        status_field(&host_status, "Uid:"),
        [uid.as_str(); 4].join("\t")
    );
    // Two sandboxes alive at once never share a host id.
    let other = l.spawn(&spec("exec sleep 30")).unwrap();
    assert_ne!(other.host_uid(), sb.host_uid());
}

/// Reads `pipe` until `marker` has appeared.
fn read_to_marker(pipe: &mut std::fs::File, marker: &str) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 4096];
    while !out.contains(marker) {
        let n = pipe.read(&mut buf).unwrap();
        assert!(n > 0, "output ended before {marker:?}: {out}");
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    out
}

/// Reads the sandbox's output until `marker` has appeared.
fn read_until(sb: &mut Sandbox, marker: &str) -> String {
    let mut pipe = std::fs::File::from(sb.take_output().unwrap());
    let mut out = read_to_marker(&mut pipe, marker);
    let mut buf = [0u8; 4096];
    // Read whatever else is already there, up to the end of the line.
    while !out.ends_with('\n') {
        let n = pipe.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    out
}

fn seccomp_refuses_namespaces_and_mounts_but_threads_work() {
    let (status, out) = run(&spec(
        "unshare -U true 2>&1 || echo userns-refused; \
         unshare -n true 2>&1 || echo netns-refused; \
         mount -t tmpfs none /tmp 2>&1 || echo mount-refused; \
         python3 -I -c 'import threading; t = threading.Thread(target=print, args=(\"thread-ran\",)); t.start(); t.join()'",
    ));
    assert_eq!(status, ExitStatus::Exited(0), "{out}");
    for expect in [
        "userns-refused",
        "netns-refused",
        "mount-refused",
        "thread-ran",
    ] {
        assert!(out.contains(expect), "{expect}: {out}");
    }
    assert!(out.contains("Operation not permitted"), "{out}");
}

fn memory_limit_ends_in_an_oom_kill() {
    let mut s = spec("python3 -I -c 'b = bytearray(200 << 20); print(\"survived\")'");
    s.limits.memory_bytes = 48 << 20;
    let mut sb = launcher().spawn(&s).unwrap();
    let mut out = String::new();
    std::fs::File::from(sb.take_output().unwrap())
        .read_to_string(&mut out)
        .unwrap();
    let status = sb.kill_and_wait().unwrap();
    assert!(!out.contains("survived"), "{out}");
    assert_eq!(status, ExitStatus::Signaled(9), "{out}");
    assert!(sb.oom_killed());
    let peak = sb.memory_peak_bytes().unwrap();
    assert!(peak <= 48 << 20, "peak {peak}");
}

/// The peak-memory file stays open between reads; each read must still see the current peak.
fn memory_peak_is_read_afresh_each_time() {
    let mut sb = launcher()
        .spawn(&spec(
            "exec python3 -I -c '
import signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
a = b\"x\" * (8 << 20)
print(\"one\", flush=True)
signal.sigwait({signal.SIGUSR1})
b = b\"y\" * (64 << 20)
print(\"two\", flush=True)
signal.sigwait({signal.SIGUSR1})
'",
        ))
        .unwrap();
    let mut pipe = std::fs::File::from(sb.take_output().unwrap());
    let mut wait_for = |marker: &str| read_to_marker(&mut pipe, marker);
    let usr1 = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sb.program_pid() as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .unwrap()
    };
    wait_for("one");
    let before = sb.memory_peak_bytes().unwrap();
    usr1();
    wait_for("two");
    let after = sb.memory_peak_bytes().unwrap();
    assert!(before >= 8 << 20, "peak {before}");
    assert!(after >= before + (60 << 20), "peak {before} then {after}");
    sb.kill_and_wait();
}

fn process_limit_caps_a_fork_bomb() {
    let mut s = spec(
        "exec python3 -I -c '
import os, time
forks = 0
try:
    for _ in range(100):
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        forks += 1
except OSError as e:
    print(\"refused\", e.errno)
print(\"running=%d\" % len([p for p in os.listdir(\"/proc\") if p.isdigit()]), flush=True)
os._exit(0)
'",
    );
    s.limits.max_pids = 20;
    let (status, out) = run(&s);
    let running: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("running="))
        .unwrap_or_else(|| panic!("{status:?} {out:?}"))
        .parse()
        .unwrap();
    // The init step (outside the namespace) counts against the limit too.
    assert!(out.contains("refused 11"), "{out}"); // EAGAIN
    assert!(running <= 20, "{running} processes: {out}");
    assert!(running >= 5, "the limit is too tight to test: {out}");
}

fn open_files_are_limited() {
    let mut s = spec("ulimit -n; ulimit -Hn");
    s.limits.open_files = 256;
    let (_, out) = run(&s);
    assert_eq!(out, "256\n256\n");
}

fn teardown_leaves_no_cgroup_and_frees_the_id() {
    let l = launcher_with(None, "teardown", 1);
    for _ in 0..3 {
        let mut sb = l.spawn(&spec("exec sleep 30")).unwrap();
        let pid = sb.program_pid();
        assert_eq!(l.live_cgroups().unwrap().len(), 1);
        // With one id, a second sandbox must wait for the first to be gone.
        assert!(l.prepare().is_err());
        assert!(sb.kill_and_wait().is_some());
        drop(sb);
        assert!(l.live_cgroups().unwrap().is_empty());
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    l.remove_parent_cgroup();
}

fn a_new_launcher_removes_leftovers() {
    let first = launcher_with(None, "crash", 4);
    let prepared = first.prepare().unwrap();
    // A crash: the platform's handles are lost without their destructors running.
    std::mem::forget(prepared);
    assert_eq!(first.live_cgroups().unwrap().len(), 1);
    let second = launcher_with(None, "crash", 4);
    assert_eq!(second.leftovers_removed, 1);
    assert!(second.live_cgroups().unwrap().is_empty());
    second.remove_parent_cgroup();
}
