//! The sandbox's init step: runs in a fresh, single-threaded copy of the binary, makes the
//! namespaces, then builds the sandbox described by the spec it receives and execs the program.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    send, sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Uid};

use crate::parent::{FromInit, ToInit};
use crate::plan::{base_plan, start_plan, MountStep};
use crate::seccomp::Filters;
use crate::{sys, SandboxSpec, SETUP_FAILED_EXIT};

/// Largest spec the init step accepts.
const MAX_SPEC_BYTES: usize = 1 << 20;

/// Entry point of the init step. Call it first thing in `main` when `argv[1]` is
/// [`crate::INIT_ARG`], before any thread or async runtime exists.
pub fn init_main() -> ! {
    let control = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            let _ = writeln!(io::stderr(), "condo sandbox: no control socket: {e}");
            sys::exit_now(SETUP_FAILED_EXIT)
        }
    };
    match run(&control) {
        Ok(code) => sys::exit_now(code),
        Err(message) => {
            report(
                &control,
                &FromInit::Failed {
                    message: message.clone(),
                },
                None,
            );
            let _ = writeln!(io::stderr(), "condo sandbox: {message}");
            sys::exit_now(SETUP_FAILED_EXIT)
        }
    }
}

/// Prepares the namespaces and, in a forked child, the base root; then waits for the spec,
/// passes it (with the mounts the platform sent) to the child, which finishes the root and
/// execs the program. Waits for it and returns an exit code that mirrors how it ended.
fn run(control: &OwnedFd) -> Result<i32, String> {
    // If the platform dies, so does this step (and, through the same setting, the program).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("pdeathsig: {e}"))?;
    let (ToInit::Prepare { listen, base }, _) = receive(control)? else {
        return Err("expected Prepare first".into());
    };
    let filters = Filters::compile().map_err(|e| e.to_string())?;
    let base_steps = base_plan(&base).map_err(|e| e.to_string())?;

    // The platform has already moved this process into the sandbox's cgroup, so the new cgroup
    // namespace is rooted there.
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(|e| format!("unshare namespaces: {e}"))?;

    let listener = match listen {
        Some(addr) => {
            sys::loopback_up().map_err(|e| format!("bring up loopback: {e}"))?;
            Some(TcpListener::bind(addr).map_err(|e| format!("listen on {addr}: {e}"))?)
        }
        None => None,
    };
    // The child's pivot_root also moves this process's root (they share the mount namespace),
    // so the host's /proc, where the child's id maps are written, is held open from here.
    let host_proc = std::fs::File::open("/proc").map_err(|e| format!("open /proc: {e}"))?;

    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let pipe = || nix::unistd::pipe2(cloexec).map_err(|e| format!("pipe: {e}"));
    let (status_r, status_w) = pipe()?;
    let (unshared_r, unshared_w) = pipe()?;
    let (mapped_r, mapped_w) = pipe()?;
    let (to_child, child_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("socketpair: {e}"))?;
    match sys::fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop((
                status_r, unshared_r, mapped_w, host_proc, to_child, listener,
            ));
            let handshake = Handshake {
                unshared: unshared_w,
                mapped: mapped_r,
            };
            let err = build_and_exec(&base_steps, &filters, &child_end, handshake);
            // Only reached if something failed before or in exec.
            let mut w = std::fs::File::from(status_w);
            let _ = w.write_all(err.as_bytes());
            sys::exit_now(SETUP_FAILED_EXIT)
        }
        ForkResult::Parent { child } => {
            drop((status_w, unshared_w, mapped_r, child_end));
            let fail = |message: String| {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                Err(message)
            };
            // The child built the base and left the host's tree, or it failed and exited.
            let mut answer = [0u8; 2];
            match nix::sys::socket::recv(to_child.as_raw_fd(), &mut answer, MsgFlags::empty()) {
                Ok(n) if answer[..n] == *BASE_READY => {}
                _ => {
                    let mut failure = String::new();
                    let _ = std::fs::File::from(status_r).read_to_string(&mut failure);
                    return fail(format!("base root: {failure}"));
                }
            }
            report(control, &FromInit::Prepared, listener.as_ref());
            drop(listener); // the platform holds it now

            let (
                ToInit::Start {
                    spec,
                    host_uid,
                    host_gid,
                },
                mounts,
            ) = receive(control)?
            else {
                return fail("expected Start".into());
            };
            let bytes = serde_json::to_vec(&spec).map_err(|e| e.to_string())?;
            if let Err(e) = sys::send_with_fds(to_child.as_fd(), &bytes, &mounts) {
                return fail(format!("pass the spec on: {e}"));
            }
            drop(mounts);

            // The child asks for its user namespace's id maps, which only a process outside
            // that namespace with privilege over the host ids may write.
            let mut byte = [0u8; 1];
            if let Ok(1) = nix::unistd::read(unshared_r.as_raw_fd(), &mut byte) {
                if let Err(e) = write_id_maps(&host_proc, child, &spec, host_uid, host_gid) {
                    return fail(format!("user namespace id maps: {e}"));
                }
                if let Err(e) = nix::unistd::write(&mapped_w, b"m") {
                    return fail(format!("handshake: {e}"));
                }
            }
            drop((unshared_r, mapped_w));
            let mut failure = String::new();
            let _ = std::fs::File::from(status_r).read_to_string(&mut failure);
            if !failure.is_empty() {
                return fail(failure);
            }
            let pid = u32::try_from(child.as_raw()).map_err(|e| e.to_string())?;
            report(control, &FromInit::Ready { init_pid: pid }, None);
            Ok(wait_for(child))
        }
    }
}

/// What the child sends once the base root is built and the host's tree is gone.
const BASE_READY: &[u8; 2] = b"ok";

/// Maps the program's uid and gid inside its user namespace to its own host ids, and nothing
/// else: every other id (the host's root included) shows as the overflow id inside.
fn write_id_maps(
    host_proc: &std::fs::File,
    child: nix::unistd::Pid,
    spec: &SandboxSpec,
    host_uid: u32,
    host_gid: u32,
) -> io::Result<()> {
    let pid = child.as_raw();
    let dir = host_proc.as_fd();
    sys::write_at(dir, &format!("{pid}/setgroups"), b"deny")?;
    let uid_map = format!("{} {host_uid} 1\n", spec.uid);
    sys::write_at(dir, &format!("{pid}/uid_map"), uid_map.as_bytes())?;
    let gid_map = format!("{} {host_gid} 1\n", spec.gid);
    sys::write_at(dir, &format!("{pid}/gid_map"), gid_map.as_bytes())
}

fn receive(control: &OwnedFd) -> Result<(ToInit, Vec<OwnedFd>), String> {
    let mut buf = vec![0u8; MAX_SPEC_BYTES];
    let (n, fds) = sys::recv_with_fds(control.as_fd(), &mut buf)
        .map_err(|e| format!("read from platform: {e}"))?;
    if n == 0 {
        return Err("the platform closed the control channel".into());
    }
    let msg = serde_json::from_slice(&buf[..n]).map_err(|e| format!("decode message: {e}"))?;
    Ok((msg, fds))
}

fn report(control: &OwnedFd, report: &FromInit, fd: Option<&TcpListener>) {
    let Ok(bytes) = serde_json::to_vec(report) else {
        return;
    };
    let iov = [io::IoSlice::new(&bytes)];
    let result = match fd {
        Some(l) => {
            let fds = [l.as_raw_fd()];
            sendmsg::<()>(
                control.as_raw_fd(),
                &iov,
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
        }
        None => send(control.as_raw_fd(), &bytes, MsgFlags::empty()),
    };
    if let Err(e) = result {
        let _ = writeln!(io::stderr(), "condo sandbox: report to platform: {e}");
    }
}

/// Waits for the program and returns an exit code that mirrors how it ended.
fn wait_for(child: nix::unistd::Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return SETUP_FAILED_EXIT,
        }
    }
}

/// The child's ends of the user-namespace handshake with the init step.
struct Handshake {
    unshared: OwnedFd,
    mapped: OwnedFd,
}

/// Runs in the forked child, which is PID 1 of the new PID namespace: builds the base root,
/// says so, waits for the spec and its mounts, finishes the root and execs the program.
/// Returns only on failure.
fn build_and_exec(
    base_steps: &[MountStep],
    filters: &Filters,
    channel: &OwnedFd,
    handshake: Handshake,
) -> String {
    // A prepared sandbox whose init step dies must not linger.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return format!("pdeathsig: {e}");
    }
    for step in base_steps {
        if let Err(e) = execute(step, &[]) {
            return format!("{step:?}: {e}");
        }
    }
    if let Err(e) = send(channel.as_raw_fd(), BASE_READY, MsgFlags::empty()) {
        return format!("report the base: {e}");
    }
    let mut buf = vec![0u8; MAX_SPEC_BYTES];
    let (spec, mounts) = match sys::recv_with_fds(channel.as_fd(), &mut buf) {
        Ok((0, _)) => return "the init step went away".into(),
        Ok((n, mounts)) => match serde_json::from_slice::<SandboxSpec>(&buf[..n]) {
            Ok(spec) => (spec, mounts),
            Err(e) => return format!("decode spec: {e}"),
        },
        Err(e) => return format!("receive spec: {e}"),
    };
    match finish(&spec, &mounts, handshake) {
        Ok((argv, env)) => {
            drop(mounts);
            let Some(program) = argv.first() else {
                return "empty argv".into();
            };
            // Last, so that nothing above runs under the filter; execve itself is allowed.
            if let Err(e) = filters.install() {
                return e.to_string();
            }
            let err = nix::unistd::execve(program, &argv, &env).err();
            format!(
                "exec {}: {}",
                spec.argv[0],
                err.map(|e| e.to_string()).unwrap_or_default()
            )
        }
        Err(e) => e,
    }
}

fn finish(
    spec: &SandboxSpec,
    mounts: &[OwnedFd],
    handshake: Handshake,
) -> Result<(Vec<CString>, Vec<CString>), String> {
    // Everything that needs the host's privilege happens first, in namespaces the host's user
    // namespace owns: the program can never change them, whatever it becomes inside its own.
    if mounts.len() != spec.binds.len() {
        return Err(format!(
            "{} mounts arrived for {} binds",
            mounts.len(),
            spec.binds.len()
        ));
    }
    for step in start_plan(spec).map_err(|e| e.to_string())? {
        execute(&step, mounts).map_err(|e| format!("{step:?}: {e}"))?;
    }
    nix::unistd::sethostname(&spec.hostname).map_err(|e| format!("sethostname: {e}"))?;
    nix::unistd::chdir(&spec.cwd).map_err(|e| format!("chdir {:?}: {e}", spec.cwd))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    nix::unistd::dup2(null.as_raw_fd(), 0).map_err(|e| format!("stdin: {e}"))?;
    let files = spec.limits.open_files;
    setrlimit(Resource::RLIMIT_NOFILE, files, files).map_err(|e| format!("nofile: {e}"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("core: {e}"))?;

    let argv = to_cstrings(spec.argv.iter().map(String::as_str))?;
    let env = to_cstrings(
        spec.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    )?;

    // Host root's supplementary groups would survive into the user namespace: drop them here.
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare user namespace: {e}"))?;
    nix::unistd::write(&handshake.unshared, b"u").map_err(|e| format!("handshake: {e}"))?;
    let mut byte = [0u8; 1];
    match nix::unistd::read(handshake.mapped.as_raw_fd(), &mut byte) {
        Ok(1) => {}
        other => return Err(format!("user namespace was not mapped: {other:?}")),
    }
    drop(handshake);

    sys::drop_all_capabilities().map_err(|e| format!("capabilities: {e}"))?;
    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    // Changing credentials clears the parent-death signal, so set it again last.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("pdeathsig: {e}"))?;
    Ok((argv, env))
}

fn to_cstrings<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<CString>, String> {
    items
        .map(|s| CString::new(s).map_err(|_| format!("NUL byte in {s:?}")))
        .collect()
}

fn execute(step: &MountStep, mounts: &[OwnedFd]) -> io::Result<()> {
    let none: Option<&str> = None;
    match step {
        MountStep::Attach { index, target } => {
            let mount = mounts.get(*index).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("no mount {index}"))
            })?;
            if nix::sys::stat::fstat(mount.as_raw_fd())
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .map_err(io::Error::from)?
            {
                std::fs::create_dir_all(target)?;
            } else {
                create_parent(target)?;
                std::fs::File::create(target)?;
            }
            sys::attach_mount(mount.as_fd(), target)?;
        }
        MountStep::MakeRootPrivate => {
            mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
        }
        MountStep::Tmpfs { target, options } => {
            std::fs::create_dir_all(target)?;
            mount(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(options.as_str()),
            )?;
        }
        MountStep::Bind {
            source,
            target,
            writable,
            device,
        } => {
            if std::fs::metadata(source)?.is_dir() {
                std::fs::create_dir_all(target)?;
            } else {
                create_parent(target)?;
                std::fs::File::create(target)?;
            }
            mount(
                Some(source),
                target,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )?;
            let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID;
            if !device {
                flags |= MsFlags::MS_NODEV;
            } else {
                flags |= MsFlags::MS_NOEXEC;
            }
            if !writable {
                flags |= MsFlags::MS_RDONLY;
            }
            mount(none, target, none, flags, none)?;
        }
        MountStep::Symlink { link, target } => {
            create_parent(link)?;
            symlink(target, link)?;
        }
        MountStep::WriteFile { path, contents } => {
            create_parent(path)?;
            std::fs::write(path, contents)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
        }
        MountStep::Proc { target } => {
            std::fs::create_dir_all(target)?;
            mount(
                Some("proc"),
                target,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                none,
            )?;
        }
        MountStep::PivotRoot { new_root } => {
            // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves
            // nothing of the host reachable, with no put-old directory to clean up.
            nix::unistd::chdir(new_root)?;
            nix::unistd::pivot_root(".", ".")?;
            umount2(".", MntFlags::MNT_DETACH)?;
            nix::unistd::chdir("/")?;
        }
        MountStep::RemountRootReadOnly => {
            mount(
                none,
                "/",
                none,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                none,
            )?;
        }
    }
    Ok(())
}

fn create_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(p) => std::fs::create_dir_all(p),
        None => Ok(()),
    }
}
