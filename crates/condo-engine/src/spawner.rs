//! Starts sandboxes from one dedicated, long-lived thread.
//!
//! A sandbox's init step dies with its parent through a parent-death signal, and Linux ties
//! that signal to the *thread* that spawned it, not the process. Tokio's blocking threads are
//! retired after a few idle seconds, which would kill every warm environment they had started;
//! this thread lives as long as the engine.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use condo_sandbox::{Sandbox, SandboxError, SandboxSpec};
use tokio::sync::oneshot;

type Job = (SandboxSpec, oneshot::Sender<Result<Sandbox, SandboxError>>);

pub(crate) struct Spawner {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Spawner {
    pub(crate) fn start(init_program: PathBuf, setup_timeout: Duration) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("condo-sandbox-spawner".into())
            .spawn(move || {
                while let Ok((spec, reply)) = rx.recv() {
                    let _ = reply.send(Sandbox::spawn(&spec, &init_program, setup_timeout));
                }
            })?;
        Ok(Self {
            jobs: Mutex::new(tx),
        })
    }

    pub(crate) async fn spawn(&self, spec: SandboxSpec) -> Result<Sandbox, String> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .lock()
            .map_err(|_| "spawner lock poisoned".to_owned())?
            .send((spec, reply))
            .map_err(|_| "the sandbox spawner thread is gone".to_owned())?;
        match answer.await {
            Ok(result) => result.map_err(|e| match e {
                SandboxError::Setup(msg) => format!("setup:{msg}"),
                other => other.to_string(),
            }),
            Err(_) => Err("the sandbox spawner thread is gone".into()),
        }
    }
}
