//! The raw system calls of the sandbox, each behind a safe function. The only `unsafe` in condo.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::unistd::ForkResult;

/// `fork()` for the init step, which must be single-threaded: forking a multi-threaded process
/// can leave locks held by threads that do not exist in the child.
pub(crate) fn fork_single_threaded() -> io::Result<ForkResult> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "the sandbox init step must be single-threaded to fork, it has {threads} threads"
        )));
    }
    // SAFETY: the process has exactly one thread (checked just above and nothing in the init
    // step starts threads), so the child inherits no lock held by another thread.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// Ends the process at once, without running exit handlers or flushing buffers shared with the
/// parent of a fork.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Brings up `lo` in the current network namespace (a new namespace starts with it down).
pub(crate) fn loopback_up() -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is plain old data for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sock` is an open socket, `req` is a valid, initialised ifreq naming "lo", and
    // SIOCGIFFLAGS writes only the flags member of the union.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union's `ifru_flags` member was just written by SIOCGIFFLAGS.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags from `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd for `pid`: readable once the process exits, immune to pid reuse.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Receives one message and at most one passed file descriptor from a `SOCK_SEQPACKET` socket.
pub(crate) fn recv_with_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut passed = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: SCM_RIGHTS installed these fds in our table for us alone; taking
                // ownership closes any extra ones instead of leaking them.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if passed.is_none() {
                    passed = Some(owned);
                }
            }
        }
    }
    Ok((msg.bytes, passed))
}

/// Registers an owned fd with the async runtime's reactor.
pub(crate) fn register_async(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of `fd`, so the descriptor stays open (and is not
    // reused for anything else) for exactly as long as it is registered.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// Empties the capability bounding set and the ambient set of the calling thread, so nothing
/// it execs can ever gain a capability back. Needs `CAP_SETPCAP` in the current user namespace.
pub(crate) fn drop_all_capabilities() -> io::Result<()> {
    // SAFETY: PR_CAP_AMBIENT with PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
            let err = io::Error::last_os_error();
            // EINVAL: past the last capability this kernel knows; we are done.
            if err.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(err);
        }
    }
    Ok(())
}

/// Writes `contents` to the existing file `path`, resolved relative to the directory `dir`.
pub(crate) fn write_at(dir: BorrowedFd<'_>, path: &str, contents: &[u8]) -> io::Result<()> {
    use nix::fcntl::{openat, OFlag};
    let fd = openat(
        Some(dir.as_raw_fd()),
        path,
        OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: openat just returned this fd to us; nothing else owns it.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::Write::write_all(&mut file, contents)
}

/// Waits until `fd` is readable (a pidfd: its process has exited), at most `timeout`.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Makes the process `cmd` starts receive SIGKILL when the calling thread ends, so a helper
/// never outlives the platform that started it.
pub(crate) fn die_with_parent_thread(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and makes one async-signal-safe syscall
    // (prctl); it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)
        });
    }
}
