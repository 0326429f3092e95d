//! Starts sandboxes from one dedicated, long-lived thread, which also keeps a few empty sandboxes
//! prepared ahead of demand.
//!
//! A sandbox's init step dies with its parent through a parent-death signal, and Linux ties
//! that signal to the *thread* that spawned it, not the process. Tokio's blocking threads are
//! retired after a few idle seconds, which would kill every warm environment they had started;
//! this thread lives as long as the engine.
//!
//! Prepared sandboxes take the slow part of a cold start (joining a cgroup, which on cgroup v1
//! waits for an RCU grace period, and making the network namespace) off the request path. They
//! hold nothing of any function or tenant until `start`, so handing one to whoever asks first
//! is safe; each is used once.

use std::collections::VecDeque;
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Mutex;
use std::time::Duration;

use condo_sandbox::{Launcher, Prepared, Sandbox, SandboxError, SandboxSpec};
use tokio::sync::oneshot;

enum Job {
    Start(
        Box<SandboxSpec>,
        oneshot::Sender<Result<Sandbox, SandboxError>>,
    ),
    /// Drop the prepared sandboxes and the launcher's parent group.
    Stop(oneshot::Sender<()>),
}

pub(crate) struct Spawner {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Spawner {
    /// Moves `launcher` onto the spawner thread, which keeps `prepared` empty sandboxes ready.
    pub(crate) fn start(launcher: Launcher, prepared: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("condo-sandbox-spawner".into())
            .spawn(move || run(launcher, prepared, rx))?;
        Ok(Self {
            jobs: Mutex::new(tx),
        })
    }

    pub(crate) async fn spawn(&self, spec: SandboxSpec) -> Result<Sandbox, SandboxError> {
        let gone = || SandboxError::Channel("the sandbox spawner thread is gone".into());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .lock()
            .map_err(|_| gone())?
            .send(Job::Start(Box::new(spec), reply))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Removes the prepared sandboxes (and, if no sandbox is left, the parent cgroup).
    pub(crate) async fn stop(&self) {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .jobs
            .lock()
            .map(|jobs| jobs.send(Job::Stop(reply)).is_ok())
            .unwrap_or(false);
        if sent {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer).await;
        }
    }
}

fn run(launcher: Launcher, target: usize, jobs: mpsc::Receiver<Job>) {
    let mut ready: VecDeque<Prepared> = VecDeque::new();
    // After a failed prepare, wait for the next job before trying again (no busy loop when,
    // say, every host id is in use).
    let mut refill = true;
    loop {
        let job = if refill && ready.len() < target {
            match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => {
                    match launcher.prepare() {
                        Ok(p) => ready.push_back(p),
                        Err(e) => {
                            tracing::warn!("could not prepare a sandbox ahead of demand: {e}");
                            refill = false;
                        }
                    }
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        match job {
            Job::Start(spec, reply) => {
                refill = true;
                let prepared = match ready.pop_front() {
                    Some(p) => Ok(p),
                    None => launcher.prepare(),
                };
                let _ = reply.send(prepared.and_then(|p| p.start(&spec)));
            }
            Job::Stop(reply) => {
                ready.clear();
                refill = false;
                launcher.remove_parent_cgroup();
                let _ = reply.send(());
            }
        }
    }
    ready.clear();
    launcher.remove_parent_cgroup();
}
