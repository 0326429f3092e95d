//! Starts sandboxes from dedicated, long-lived threads: one keeps a few empty sandboxes prepared
//! ahead of demand, the other starts environments in them.
//!
//! A sandbox's init step dies with its parent through a parent-death signal, and Linux ties
//! that signal to the *thread* that spawned it, not the process. Tokio's blocking threads are
//! retired after a few idle seconds, which would kill every warm environment they had started;
//! these threads live as long as the engine.
//!
//! Prepared sandboxes take the slow part of a cold start (joining a cgroup, which on cgroup v1
//! waits for an RCU grace period, and making the network namespace) off the request path. They
//! hold nothing of any function or tenant until `start`, so handing one to whoever asks first
//! is safe; each is used once. Preparing runs on its own thread so that a start never waits
//! behind one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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

/// The prepared sandboxes, shared by the two threads.
struct Ready {
    queue: Mutex<VecDeque<Prepared>>,
    /// Signalled when one was taken (or on stop), so the preparer makes another.
    taken: Condvar,
    stopped: AtomicBool,
    target: usize,
}

impl Ready {
    fn take(&self) -> Option<Prepared> {
        let p = self.queue.lock().ok()?.pop_front();
        self.taken.notify_one();
        p
    }
}

pub(crate) struct Spawner {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Spawner {
    /// Starts the threads; `prepared` empty sandboxes are kept ready.
    pub(crate) fn start(launcher: Launcher, prepared: usize) -> std::io::Result<Self> {
        let launcher = Arc::new(launcher);
        let ready = Arc::new(Ready {
            queue: Mutex::new(VecDeque::new()),
            taken: Condvar::new(),
            stopped: AtomicBool::new(false),
            target: prepared,
        });
        if prepared > 0 {
            let (launcher, ready) = (launcher.clone(), ready.clone());
            std::thread::Builder::new()
                .name("condo-sandbox-preparer".into())
                .spawn(move || prepare_ahead(&launcher, &ready))?;
        }
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("condo-sandbox-spawner".into())
            .spawn(move || serve(&launcher, &ready, rx))?;
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

/// The preparer thread: keeps `target` sandboxes ready until stopped.
fn prepare_ahead(launcher: &Launcher, ready: &Ready) {
    loop {
        {
            let Ok(mut queue) = ready.queue.lock() else {
                return;
            };
            while queue.len() >= ready.target && !ready.stopped.load(Ordering::SeqCst) {
                queue = match ready.taken.wait(queue) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
        }
        if ready.stopped.load(Ordering::SeqCst) {
            return;
        }
        let started = Instant::now();
        match launcher.prepare() {
            Ok(p) => {
                tracing::trace!(us = started.elapsed().as_micros() as u64, "prepared");
                if let Ok(mut queue) = ready.queue.lock() {
                    // A stop may have come while this one was being made.
                    if !ready.stopped.load(Ordering::SeqCst) {
                        queue.push_back(p);
                    }
                }
            }
            Err(e) => {
                // For instance every host id in use: try again when a sandbox is taken, or
                // after a pause, never in a busy loop.
                tracing::warn!("could not prepare a sandbox ahead of demand: {e}");
                if let Ok(queue) = ready.queue.lock() {
                    let _ = ready.taken.wait_timeout(queue, Duration::from_secs(1));
                }
            }
        }
    }
}

/// The spawner thread: starts each requested sandbox, in a prepared one when there is one.
fn serve(launcher: &Launcher, ready: &Ready, jobs: mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Start(spec, reply) => {
                let started = Instant::now();
                let taken = ready.take();
                let was_ready = taken.is_some();
                let prepared = match taken {
                    Some(p) => Ok(p),
                    None => launcher.prepare(),
                };
                let result = prepared.and_then(|p| p.start(&spec));
                tracing::trace!(
                    us = started.elapsed().as_micros() as u64,
                    was_ready,
                    "started"
                );
                let _ = reply.send(result);
            }
            Job::Stop(reply) => {
                stop(launcher, ready);
                let _ = reply.send(());
            }
        }
    }
    stop(launcher, ready);
}

fn stop(launcher: &Launcher, ready: &Ready) {
    ready.stopped.store(true, Ordering::SeqCst);
    ready.taken.notify_all();
    if let Ok(mut queue) = ready.queue.lock() {
        queue.clear();
    }
    launcher.remove_parent_cgroup();
}
