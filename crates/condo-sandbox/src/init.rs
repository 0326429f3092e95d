//! The sandbox's init step: runs in a fresh, single-threaded copy of the binary, builds the
//! sandbox described by the spec on its stdin, and execs the program.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::socket::{send, sendmsg, ControlMessage, MsgFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Uid};

use crate::parent::InitReport;
use crate::plan::{mount_plan, MountStep};
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
                &InitReport::Failed {
                    message: message.clone(),
                },
                None,
            );
            let _ = writeln!(io::stderr(), "condo sandbox: {message}");
            sys::exit_now(SETUP_FAILED_EXIT)
        }
    }
}

/// Builds the sandbox, starts the program, and waits for it. Returns the exit code to mirror.
fn run(control: &OwnedFd) -> Result<i32, String> {
    // If the platform dies, so does this step (and, through the same setting, the program).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("pdeathsig: {e}"))?;
    let spec = read_spec(control)?;
    let plan = mount_plan(&spec).map_err(|e| e.to_string())?;

    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS,
    )
    .map_err(|e| format!("unshare namespaces: {e}"))?;

    let listener = match spec.listen {
        Some(addr) => {
            sys::loopback_up().map_err(|e| format!("bring up loopback: {e}"))?;
            Some(TcpListener::bind(addr).map_err(|e| format!("listen on {addr}: {e}"))?)
        }
        None => None,
    };

    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    match sys::fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(status_r);
            drop(listener);
            let err = build_and_exec(&spec, &plan);
            // Only reached if something failed before or in exec.
            let mut w = std::fs::File::from(status_w);
            let _ = w.write_all(err.as_bytes());
            sys::exit_now(SETUP_FAILED_EXIT)
        }
        ForkResult::Parent { child } => {
            drop(status_w);
            let mut failure = String::new();
            let _ = std::fs::File::from(status_r).read_to_string(&mut failure);
            if !failure.is_empty() {
                let _ = waitpid(child, None);
                return Err(failure);
            }
            let pid = u32::try_from(child.as_raw()).map_err(|e| e.to_string())?;
            report(
                control,
                &InitReport::Ready { init_pid: pid },
                listener.as_ref(),
            );
            drop(listener);
            Ok(wait_for(child))
        }
    }
}

fn read_spec(control: &OwnedFd) -> Result<SandboxSpec, String> {
    let mut buf = vec![0u8; MAX_SPEC_BYTES];
    let n = nix::sys::socket::recv(control.as_raw_fd(), &mut buf, MsgFlags::empty())
        .map_err(|e| format!("read spec: {e}"))?;
    serde_json::from_slice(&buf[..n]).map_err(|e| format!("decode spec: {e}"))
}

fn report(control: &OwnedFd, report: &InitReport, fd: Option<&TcpListener>) {
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

/// Runs in the forked child, which is PID 1 of the new PID namespace. Returns only on failure.
fn build_and_exec(spec: &SandboxSpec, plan: &[MountStep]) -> String {
    match prepare(spec, plan) {
        Ok((argv, env)) => {
            let Some(program) = argv.first() else {
                return "empty argv".into();
            };
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

fn prepare(spec: &SandboxSpec, plan: &[MountStep]) -> Result<(Vec<CString>, Vec<CString>), String> {
    for step in plan {
        execute(step).map_err(|e| format!("{step:?}: {e}"))?;
    }
    nix::unistd::sethostname(&spec.hostname).map_err(|e| format!("sethostname: {e}"))?;
    nix::unistd::chdir(&spec.cwd).map_err(|e| format!("chdir {:?}: {e}", spec.cwd))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    nix::unistd::dup2(null.as_raw_fd(), 0).map_err(|e| format!("stdin: {e}"))?;

    let argv = to_cstrings(spec.argv.iter().map(String::as_str))?;
    let env = to_cstrings(
        spec.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    )?;

    let (uid, gid) = (Uid::from_raw(spec.uid), Gid::from_raw(spec.gid));
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
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

fn execute(step: &MountStep) -> io::Result<()> {
    let none: Option<&str> = None;
    match step {
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
