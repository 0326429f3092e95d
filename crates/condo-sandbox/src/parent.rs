//! The platform's side: start the init step, hand it the spec, and keep a handle on the result.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::socket::{
    send, setsockopt, socketpair, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
};
use nix::sys::time::TimeVal;
use serde::{Deserialize, Serialize};

use crate::{sys, SandboxSpec, INIT_ARG};

/// What the init step tells the platform once the sandbox is built (or could not be).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InitReport {
    /// The program was exec'd as `init_pid` (a host pid); the listener, if any, travels with it.
    Ready {
        init_pid: u32,
    },
    Failed {
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("could not start the sandbox init step: {0}")]
    Spawn(#[source] io::Error),
    #[error("sandbox set-up failed: {0}")]
    Setup(String),
    #[error("sandbox set-up did not answer within {0:?}")]
    Timeout(Duration),
    #[error("sandbox control channel: {0}")]
    Channel(String),
}

/// How the sandboxed program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

/// One running sandbox. Dropping it kills every process inside.
#[derive(Debug)]
pub struct Sandbox {
    init: Child,
    exit_fd: OwnedFd,
    program_pid: u32,
    listener: Option<TcpListener>,
    output: Option<OwnedFd>,
    exited: Option<ExitStatus>,
}

impl Sandbox {
    /// Starts `init_program` (normally `/proc/self/exe`) as the init step and waits until the
    /// program inside has been exec'd or set-up failed. Blocking: call it off the async runtime.
    pub fn spawn(
        spec: &SandboxSpec,
        init_program: &Path,
        setup_timeout: Duration,
    ) -> Result<Self, SandboxError> {
        let chan = |e: nix::Error| SandboxError::Channel(e.to_string());
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(chan)?;
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(chan)?;
        let out_w2 = out_w.try_clone().map_err(SandboxError::Spawn)?;

        let mut cmd = Command::new(init_program);
        cmd.arg(INIT_ARG)
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(out_w2));
        let init = cmd.spawn().map_err(SandboxError::Spawn)?;
        drop(cmd); // closes our copies of the child's ends

        let exit_fd = sys::pidfd_open(init.id()).map_err(SandboxError::Spawn)?;
        let mut sandbox = Sandbox {
            init,
            exit_fd,
            program_pid: 0,
            listener: None,
            output: Some(out_r),
            exited: None,
        };

        let spec_bytes =
            serde_json::to_vec(spec).map_err(|e| SandboxError::Channel(e.to_string()))?;
        send(
            std::os::fd::AsRawFd::as_raw_fd(&ours),
            &spec_bytes,
            MsgFlags::empty(),
        )
        .map_err(chan)?;
        let timeout = TimeVal::new(
            setup_timeout.as_secs() as _,
            setup_timeout.subsec_micros() as _,
        );
        setsockopt(&ours, sockopt::ReceiveTimeout, &timeout).map_err(chan)?;

        let mut buf = vec![0u8; 64 * 1024];
        let (n, fd) = match sys::recv_with_fd(ours.as_fd(), &mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(SandboxError::Timeout(setup_timeout))
            }
            Err(e) => return Err(SandboxError::Channel(e.to_string())),
        };
        if n == 0 {
            return Err(SandboxError::Setup(
                "the init step exited before reporting".into(),
            ));
        }
        match serde_json::from_slice::<InitReport>(&buf[..n]) {
            Ok(InitReport::Ready { init_pid }) => {
                sandbox.program_pid = init_pid;
                sandbox.listener = fd.map(TcpListener::from);
                Ok(sandbox)
            }
            Ok(InitReport::Failed { message }) => Err(SandboxError::Setup(message)),
            Err(e) => Err(SandboxError::Channel(format!("bad report: {e}"))),
        }
    }

    /// The listener opened inside the sandbox's network namespace (once).
    pub fn take_listener(&mut self) -> Option<TcpListener> {
        self.listener.take()
    }

    /// The read end of the pipe that is the program's stdout and stderr (once).
    pub fn take_output(&mut self) -> Option<OwnedFd> {
        self.output.take()
    }

    /// A watch that resolves when the sandbox has ended. Needs a Tokio runtime.
    pub fn exit_watch(&self) -> io::Result<ExitWatch> {
        let fd = self.exit_fd.as_fd().try_clone_to_owned()?;
        Ok(ExitWatch {
            fd: sys::register_async(fd)?,
        })
    }

    /// Host pid of the program inside (PID 1 of its namespace).
    pub fn program_pid(&self) -> u32 {
        self.program_pid
    }

    /// Reaps the sandbox if it has ended.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            if let Some(status) = self.init.try_wait()? {
                self.exited = Some(mirror(status));
            }
        }
        Ok(self.exited)
    }

    /// Kills every process of the sandbox. Idempotent.
    pub fn kill(&mut self) {
        if self.exited.is_some() {
            return;
        }
        // While the init step lives, the program's pid cannot have been reused: the init step
        // has not reaped it yet. Killing PID 1 of the namespace ends every process in it.
        if let Ok(None) = self.init.try_wait() {
            if let Ok(pid) = i32::try_from(self.program_pid) {
                if pid > 0 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = self.init.kill();
    }

    /// Kills and reaps. The init step has nothing to tear down, so this returns quickly.
    pub fn kill_and_wait(&mut self) -> Option<ExitStatus> {
        self.kill();
        if self.exited.is_none() {
            if let Ok(status) = self.init.wait() {
                self.exited = Some(mirror(status));
            }
        }
        self.exited
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}

/// The init step exits with the program's code, or 128+signal when the program was killed.
fn mirror(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) if code > 128 && code < 128 + 65 => ExitStatus::Signaled(code - 128),
        (Some(code), _) => ExitStatus::Exited(code),
        (None, Some(sig)) => ExitStatus::Signaled(sig),
        (None, None) => ExitStatus::Exited(-1),
    }
}

/// Resolves when a sandbox has ended (its pidfd became readable).
#[derive(Debug)]
pub struct ExitWatch {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl ExitWatch {
    /// Waits until the sandbox has ended. Reap it afterwards with [`Sandbox::try_wait`].
    pub async fn exited(&self) {
        // A pidfd reports readable once, forever; errors mean the same: nothing more to wait for.
        let _ = self.fd.readable().await;
    }
}
