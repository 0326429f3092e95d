//! Builds real sandboxes (needs root) and checks, from inside, what a program can see and do.
//!
//! The test binary doubles as the init step: `main` hands over to `init_main` when re-executed.
#![allow(clippy::unwrap_used)] // a test that cannot read its own tree should fail loudly

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use condo_sandbox::{host_system_root, ExitStatus, FileSpec, Sandbox, SandboxSpec, INIT_ARG};

fn main() {
    if std::env::args().nth(1).as_deref() == Some(INIT_ARG) {
        condo_sandbox::init_main();
    }
    if !nix::unistd::geteuid().is_root() {
        println!("real_sandbox: skipped, needs root (CI runs as root)");
        return;
    }
    let tests: [(&str, fn()); 4] = [
        (
            "sees_only_its_own_minimal_root",
            sees_only_its_own_minimal_root,
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
            "setup_failure_is_reported_not_hung",
            setup_failure_is_reported_not_hung,
        ),
    ];
    for (name, test) in tests {
        test();
        println!("test {name} ... ok");
    }
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
        tests.len()
    );
}

fn spec(script: &str) -> SandboxSpec {
    let root = std::env::temp_dir().join("condo-sandbox-test-root");
    std::fs::create_dir_all(&root).unwrap();
    let (binds, symlinks) = host_system_root().unwrap();
    SandboxSpec {
        new_root: root,
        binds,
        symlinks,
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
        listen: None,
    }
}

/// Runs the script to completion and returns (status, output).
fn run(spec: &SandboxSpec) -> (ExitStatus, String) {
    let mut sb = Sandbox::spawn(
        spec,
        &PathBuf::from("/proc/self/exe"),
        Duration::from_secs(10),
    )
    .unwrap();
    let mut out = String::new();
    std::fs::File::from(sb.take_output().unwrap())
        .read_to_string(&mut out)
        .unwrap();
    let status = sb.kill_and_wait().unwrap();
    (status, out)
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
    let mut s = spec("exec sleep 30");
    s.listen = Some(addr);
    let mut sb = Sandbox::spawn(
        &s,
        &PathBuf::from("/proc/self/exe"),
        Duration::from_secs(10),
    )
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

fn setup_failure_is_reported_not_hung() {
    let mut s = spec("true");
    s.argv = vec!["/no/such/program".into()];
    let err = Sandbox::spawn(
        &s,
        &PathBuf::from("/proc/self/exe"),
        Duration::from_secs(10),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/no/such/program"), "{err}");
}
