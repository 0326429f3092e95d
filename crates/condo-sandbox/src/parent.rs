//! The platform's side: prepare empty sandboxes ahead of demand, start a program in one, and keep
//! a handle on it until every process of it is gone.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddrV4, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType};
use nix::sys::time::TimeVal;
use serde::{Deserialize, Serialize};

use crate::cgroup::{Cgroup, CgroupLayout, CgroupTree};
use crate::network::NetworkHelper;
use crate::{sys, BaseRoot, Network, SandboxSpec, INIT_ARG};

/// What the platform tells the init step, in order: first `Prepare`, later `Start`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToInit {
    /// Make the namespaces (the process is already in its cgroup), open the listener, and
    /// build the base root.
    Prepare {
        listen: Option<SocketAddrV4>,
        base: BaseRoot,
    },
    /// Finish the root and run the program as `host_uid`/`host_gid` seen from outside. Comes
    /// with one detached mount per bind of the spec, in order.
    Start {
        spec: Box<SandboxSpec>,
        host_uid: u32,
        host_gid: u32,
    },
}

/// What the init step answers.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromInit {
    /// Namespaces made; the listener, if any, travels with this message.
    Prepared,
    /// The program was exec'd as `init_pid` (a host pid).
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
    #[error("sandbox cgroup: {0}")]
    Cgroup(#[source] io::Error),
    #[error("every sandbox user id is in use ({0} of them)")]
    NoFreeIds(usize),
}

/// How the sandboxed program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

/// How sandboxes are made on this host.
#[derive(Debug, Clone)]
pub struct LauncherConfig {
    /// The binary to start as the init step: normally `/proc/self/exe`, whose `main` calls
    /// [`crate::init_main`] when its first argument is [`INIT_ARG`].
    pub init_program: PathBuf,
    /// The cgroup (relative to each hierarchy's root) under which every sandbox's group is made.
    /// One platform instance owns it alone: leftovers in it are removed at start.
    pub cgroup_parent: PathBuf,
    /// Host uids, each also used as a gid, handed out one per live sandbox.
    pub host_ids: std::ops::Range<u32>,
    /// A TCP address every sandbox listens on inside its own network namespace.
    pub listen: Option<SocketAddrV4>,
    /// `pasta`, for sandboxes whose spec asks for [`Network::Outbound`]; without it they
    /// fail to start.
    pub network_helper: Option<PathBuf>,
    pub setup_timeout: Duration,
    /// The root every sandbox shares, built while it is prepared.
    pub base: BaseRoot,
}

/// Makes sandboxes. Cheap to share; every method blocks, so call them off the async runtime,
/// from a thread that lives as long as the sandboxes (see [`Launcher::prepare`]).
#[derive(Debug)]
pub struct Launcher {
    config: LauncherConfig,
    cgroups: CgroupTree,
    ids: Arc<Mutex<VecDeque<u32>>>,
    id_count: usize,
    sequence: AtomicU64,
    /// Leftover groups of an earlier run that `new` removed.
    pub leftovers_removed: usize,
}

impl Launcher {
    /// Detects the cgroup layout, creates the parent group, and removes what a crashed
    /// earlier run of the same instance left in it.
    pub fn new(config: LauncherConfig) -> Result<Self, SandboxError> {
        let layout = CgroupLayout::detect().map_err(SandboxError::Cgroup)?;
        let cgroups =
            CgroupTree::open(layout, &config.cgroup_parent).map_err(SandboxError::Cgroup)?;
        let leftovers_removed = cgroups.remove_leftovers().map_err(SandboxError::Cgroup)?;
        let ids: VecDeque<u32> = config.host_ids.clone().collect();
        Ok(Self {
            id_count: ids.len(),
            ids: Arc::new(Mutex::new(ids)),
            config,
            cgroups,
            sequence: AtomicU64::new(0),
            leftovers_removed,
        })
    }

    pub fn cgroup_layout(&self) -> &CgroupLayout {
        self.cgroups.layout()
    }

    /// Sandbox groups that exist now (prepared, running, or not yet removed).
    pub fn live_cgroups(&self) -> io::Result<Vec<String>> {
        self.cgroups.children()
    }

    /// Removes the parent group; call after every sandbox has been dropped.
    pub fn remove_parent_cgroup(&self) {
        self.cgroups.remove_parent();
    }

    fn lease_id(&self) -> Result<IdLease, SandboxError> {
        let mut ids = self
            .ids
            .lock()
            .map_err(|_| SandboxError::Channel("id pool lock poisoned".into()))?;
        let id = ids
            .pop_front()
            .ok_or(SandboxError::NoFreeIds(self.id_count))?;
        Ok(IdLease {
            id,
            pool: Arc::clone(&self.ids),
        })
    }

    /// Builds an empty sandbox: an init step in its own cgroup and namespaces, holding the
    /// listener, waiting for a spec. Nothing of any function or tenant is in it yet, so it may
    /// be handed to whoever needs one first. Joining the cgroup is the slow part on cgroup v1
    /// hosts (the kernel waits for an RCU grace period), which is why this runs ahead of demand.
    ///
    /// The init step dies with the *thread* that calls this (a parent-death signal), so call it
    /// from a thread that outlives the sandbox.
    pub fn prepare(&self) -> Result<Prepared, SandboxError> {
        let lease = self.lease_id()?;
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let name = format!("sb{}-{seq}", lease.id);
        let cgroup = self.cgroups.create(&name).map_err(SandboxError::Cgroup)?;

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

        let mut cmd = Command::new(&self.config.init_program);
        cmd.arg(INIT_ARG)
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(out_w2));
        let init = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = cgroup.remove();
                return Err(SandboxError::Spawn(e));
            }
        };
        drop(cmd); // closes our copies of the child's ends

        let exit_fd = sys::pidfd_open(init.id());
        let mut prepared = Prepared {
            process: InitProcess {
                init,
                program_pid: 0,
                exited: None,
                cgroup,
                network: None,
                _lease: lease,
            },
            control: ours,
            exit_fd: exit_fd.map_err(SandboxError::Spawn)?,
            listener: None,
            output: Some(out_r),
            setup_timeout: self.config.setup_timeout,
            network_helper: self.config.network_helper.clone(),
            name,
        };
        let pid = prepared.process.init.id();
        prepared
            .process
            .cgroup
            .attach(pid)
            .map_err(SandboxError::Cgroup)?;
        prepared.send(
            &ToInit::Prepare {
                listen: self.config.listen,
                base: self.config.base.clone(),
            },
            &[],
        )?;
        match prepared.receive()? {
            (FromInit::Prepared, fd) => {
                prepared.listener = fd.map(TcpListener::from);
                if self.config.listen.is_some() && prepared.listener.is_none() {
                    return Err(SandboxError::Channel("the listener did not arrive".into()));
                }
                Ok(prepared)
            }
            (FromInit::Failed { message }, _) => Err(SandboxError::Setup(message)),
            (other, _) => Err(SandboxError::Channel(format!("unexpected {other:?}"))),
        }
    }

    /// Prepares a sandbox and starts `spec` in it at once.
    pub fn spawn(&self, spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
        self.prepare()?.start(spec)
    }
}

/// A host uid (and gid) lent to one sandbox; back in the pool once every process is gone.
#[derive(Debug)]
struct IdLease {
    id: u32,
    pool: Arc<Mutex<VecDeque<u32>>>,
}

impl Drop for IdLease {
    fn drop(&mut self) {
        if let Ok(mut ids) = self.pool.lock() {
            // Reused last: the pool is a queue, so an id rests as long as possible.
            ids.push_back(self.id);
        }
    }
}

/// The init process and everything that must outlive it: its group and its host id. Dropping it
/// kills every process, waits for them, removes the group, and only then frees the id.
#[derive(Debug)]
struct InitProcess {
    init: Child,
    program_pid: u32,
    exited: Option<ExitStatus>,
    cgroup: Cgroup,
    network: Option<NetworkHelper>,
    // Declared last: dropped after the group is gone.
    _lease: IdLease,
}

impl InitProcess {
    /// Kills the program, PID 1 of its namespace, which ends every process in the namespace;
    /// the init step then reaps it and exits by itself. Before a program runs, kills the init
    /// step instead. Idempotent.
    fn kill(&mut self) {
        if self.exited.is_some() {
            return;
        }
        // While the init step lives, the program's pid cannot have been reused: the init step
        // has not reaped it.
        if let Ok(None) = self.init.try_wait() {
            match i32::try_from(self.program_pid) {
                Ok(pid) if pid > 0 => {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                _ => {
                    let _ = self.init.kill();
                }
            }
        }
    }

    /// Kills and reaps: when this returns, no process of the sandbox exists any more.
    fn kill_and_wait(&mut self, exit_fd: &OwnedFd) -> Option<ExitStatus> {
        self.kill();
        if self.exited.is_none() {
            // The kernel ends a PID namespace's processes before its PID 1 is reaped, so the
            // init step exits promptly; if it does not, it is killed too.
            if !sys::wait_readable(exit_fd.as_fd(), INIT_EXIT_GRACE) {
                let _ = self.init.kill();
            }
            if let Ok(status) = self.init.wait() {
                self.exited = Some(mirror(status));
            }
        }
        self.exited
    }
}

/// How long the init step may take to exit after its program was killed.
const INIT_EXIT_GRACE: Duration = Duration::from_secs(5);

impl Drop for InitProcess {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.kill();
            let _ = self.init.kill();
            let _ = self.init.wait();
        }
        self.cgroup.kill_all();
        let _ = self.cgroup.remove();
    }
}

/// An empty sandbox waiting for a spec. Dropping it kills its init step.
#[derive(Debug)]
pub struct Prepared {
    process: InitProcess,
    control: OwnedFd,
    exit_fd: OwnedFd,
    listener: Option<TcpListener>,
    output: Option<OwnedFd>,
    setup_timeout: Duration,
    network_helper: Option<PathBuf>,
    name: String,
}

impl Prepared {
    fn send(&self, msg: &ToInit, fds: &[OwnedFd]) -> Result<(), SandboxError> {
        let bytes = serde_json::to_vec(msg).map_err(|e| SandboxError::Channel(e.to_string()))?;
        sys::send_with_fds(self.control.as_fd(), &bytes, fds)
            .map_err(|e| SandboxError::Channel(e.to_string()))
    }

    fn receive(&self) -> Result<(FromInit, Option<OwnedFd>), SandboxError> {
        let t = self.setup_timeout;
        let timeout = TimeVal::new(t.as_secs() as _, t.subsec_micros() as _);
        setsockopt(&self.control, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| SandboxError::Channel(e.to_string()))?;
        let mut buf = vec![0u8; 64 * 1024];
        let (n, fd) = match sys::recv_with_fd(self.control.as_fd(), &mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(SandboxError::Timeout(t))
            }
            Err(e) => return Err(SandboxError::Channel(e.to_string())),
        };
        if n == 0 {
            return Err(SandboxError::Setup(
                "the init step exited before reporting".into(),
            ));
        }
        let msg = serde_json::from_slice::<FromInit>(&buf[..n])
            .map_err(|e| SandboxError::Channel(format!("bad report: {e}")))?;
        Ok((msg, fd))
    }

    fn start_network_helper(&self) -> Result<NetworkHelper, SandboxError> {
        let helper = self.network_helper.as_deref().ok_or_else(|| {
            SandboxError::Setup(
                "outbound network asked for, but no network helper is configured".into(),
            )
        })?;
        // The init step made the namespace and stays in it for the sandbox's whole life.
        let netns = std::fs::File::open(format!("/proc/{}/ns/net", self.process.init.id()))
            .map_err(|e| SandboxError::Setup(format!("network namespace: {e}")))?;
        NetworkHelper::start(helper, netns.into(), self.setup_timeout)
            .map_err(|e| SandboxError::Setup(e.to_string()))
    }

    /// Applies the spec's limits to the group, then builds the root and starts the program.
    pub fn start(mut self, spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
        let started = Instant::now();
        self.process
            .cgroup
            .apply(&spec.limits)
            .map_err(SandboxError::Cgroup)?;
        if spec.network == Network::Outbound {
            // Before the program starts, so its first connection already has a route.
            self.process.network = Some(self.start_network_helper()?);
        }
        if spec.binds.len() > sys::MAX_PASSED_FDS {
            return Err(SandboxError::Setup(format!(
                "{} binds; a sandbox takes at most {}",
                spec.binds.len(),
                sys::MAX_PASSED_FDS
            )));
        }
        // The sandbox left the host's tree when it was prepared, so it gets each host path as
        // a detached copy of its mount, opened here, with its flags already set.
        let mounts = spec
            .binds
            .iter()
            .map(|b| {
                sys::clone_mount(&b.source, b.writable).map_err(|e| {
                    SandboxError::Setup(format!("open {} for the sandbox: {e}", b.source.display()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let id = self.process._lease.id;
        self.send(
            &ToInit::Start {
                spec: Box::new(spec.clone()),
                host_uid: id,
                host_gid: id,
            },
            &mounts,
        )?;
        drop(mounts);
        match self.receive()? {
            (FromInit::Ready { init_pid }, _) => {
                self.process.program_pid = init_pid;
                Ok(Sandbox {
                    process: self.process,
                    exit_fd: self.exit_fd,
                    listener: self.listener,
                    output: self.output,
                    name: self.name,
                    start_duration: started.elapsed(),
                })
            }
            (FromInit::Failed { message }, _) => Err(SandboxError::Setup(message)),
            (other, _) => Err(SandboxError::Channel(format!("unexpected {other:?}"))),
        }
    }
}

/// One running sandbox. Dropping it kills every process inside, removes its cgroup and frees
/// its host id.
#[derive(Debug)]
pub struct Sandbox {
    process: InitProcess,
    exit_fd: OwnedFd,
    listener: Option<TcpListener>,
    output: Option<OwnedFd>,
    name: String,
    start_duration: Duration,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}

impl Sandbox {
    /// The sandbox's name, also its cgroup's name: unique within the launcher's lifetime.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host uid (and gid) the program runs as, seen from outside its user namespace.
    pub fn host_uid(&self) -> u32 {
        self.process._lease.id
    }

    /// How long [`Prepared::start`] took: limits, root, user namespace, filter, exec.
    pub fn start_duration(&self) -> Duration {
        self.start_duration
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
        self.process.program_pid
    }

    /// Host pids of every process of the sandbox, its init step included.
    pub fn pids(&self) -> Vec<u32> {
        self.process.cgroup.pids()
    }

    /// True once the kernel's OOM killer has ended a process of this sandbox.
    pub fn oom_killed(&self) -> bool {
        self.process.cgroup.oom_kills() > 0
    }

    /// A handle on the sandbox's CPU weight under contention, usable apart from it.
    pub fn cpu_weight(&self) -> crate::CpuWeight {
        self.process.cgroup.cpu_weight()
    }

    /// A handle on which CPUs the sandbox's threads run on, usable apart from it.
    pub fn cpu_affinity(&self) -> crate::CpuAffinity {
        self.process.cgroup.cpu_affinity()
    }

    /// Peak memory of the whole sandbox (its processes and its `/tmp`), in bytes.
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        self.process.cgroup.memory_peak()
    }

    /// Reaps the sandbox if it has ended.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.process.exited.is_none() {
            if let Some(status) = self.process.init.try_wait()? {
                self.process.exited = Some(mirror(status));
            }
        }
        Ok(self.process.exited)
    }

    /// Kills every process of the sandbox. Idempotent.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kills and reaps. Every process of the sandbox is gone when this returns.
    pub fn kill_and_wait(&mut self) -> Option<ExitStatus> {
        self.process.kill_and_wait(&self.exit_fd)
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
