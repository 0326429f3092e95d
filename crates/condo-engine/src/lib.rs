//! The engine: functions, their execution environments, and invocations. Every front door
//! (the Lambda API, the CLI, later the gateway) goes through [`Engine`].
//!
//! Architecture invariant: the engine alone owns environment state; an environment gets its
//! (function, version, tenant) at construction and keeps it for life.
#![forbid(unsafe_code)]

mod completion;
mod control;
mod environment;
mod fairness;
mod invoke;
mod logs;
mod placement;
mod pool;
mod queue;
mod runtimes;
mod spawner;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use condo_store::{CodeError, CodeStore, LogStreamInfo, Store, StoreError};
use condo_types::{FunctionConfig, FunctionName, Version};

pub use control::{ConfigurationUpdate, CreateFunction, FunctionSettings};
pub use environment::{ColdStart, FunctionError};
pub use invoke::{InvokeRequest, InvokeResponse};
pub use pool::{PoolLimits, Throttle};
pub use runtimes::{HostRuntimes, RESERVED_VARIABLES};

use environment::Environment;
use pool::Pool;
use runtimes::SandboxBase;

/// How the engine is set up; the binary fills it from flags.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub region: String,
    pub account_id: String,
    pub limits: PoolLimits,
    /// Idle environments are stopped after this long.
    pub idle_timeout: Duration,
    /// The binary to re-execute as the sandbox's init step (normally `/proc/self/exe`).
    pub init_program: PathBuf,
    /// The first of the host uids (each also a gid) given to sandboxes, one per live sandbox.
    /// The engine uses `max_environments + prepared_sandboxes + 16` of them from here.
    pub sandbox_host_id_base: u32,
    /// Empty sandboxes kept ready ahead of demand.
    pub prepared_sandboxes: usize,
    /// The user-mode network helper (`pasta`) that gives `condo:network=outbound` functions
    /// their connections; without it such functions are refused.
    pub network_helper: Option<PathBuf>,
    /// Delays before the two retries of a failed asynchronous invocation (Lambda: 1 and 2 min).
    pub async_retry_delays: [Duration; 2],
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("Function not found: {0}")]
    FunctionNotFound(String),
    #[error("Function already exist: {0}")]
    FunctionExists(String),
    #[error("The function {0} uses tenant isolation mode: every invocation must carry a tenant id (X-Amz-Tenant-Id)")]
    TenantIdRequired(String),
    #[error("The function {0} does not use tenant isolation mode: a tenant id (X-Amz-Tenant-Id) is not allowed")]
    TenantIdNotAllowed(String),
    #[error("TenancyConfig cannot be modified after function creation")]
    TenancyImmutable,
    #[error("The runtime parameter of {runtime} is not supported on this host. Supported runtimes: {supported}")]
    UnsupportedRuntime { runtime: String, supported: String },
    #[error("Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {0}")]
    ReservedVariables(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error(
        "Could not unzip uploaded file. Please check your file, then try to upload again. ({0})"
    )]
    InvalidCode(#[source] CodeError),
    #[error("Unzipped size must be smaller than 262144000 bytes")]
    CodeTooLarge,
    #[error("The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id")]
    RevisionMismatch,
    #[error("Rate Exceeded.")]
    Throttled(Throttle),
    #[error("The server is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("storage error: {0}")]
    Store(#[from] StoreError),
}

/// What every part of the engine shares.
pub(crate) struct EngineShared {
    pub(crate) config: EngineConfig,
    pub(crate) store: Arc<Store>,
    pub(crate) code: CodeStore,
    pub(crate) runtimes: HostRuntimes,
    pub(crate) sandbox_base: SandboxBase,
    pub(crate) spawner: spawner::Spawner,
    pub(crate) logs: logs::LogSink,
    pub(crate) pool: Mutex<Pool<Environment>>,
    /// CPU weight shared by each tenant's environments.
    pub(crate) tenant_shares: Arc<fairness::TenantShares>,
    /// Which CPU each busy environment runs on under contention.
    pub(crate) cpu_placer: placement::CpuPlacer,
    /// Resolved configurations, so invocations do not hit the database.
    pub(crate) configs: RwLock<HashMap<(FunctionName, Version), Arc<FunctionConfig>>>,
    pub(crate) queue_wake: tokio::sync::Notify,
    pub(crate) shutting_down: std::sync::atomic::AtomicBool,
}

impl EngineShared {
    fn record_log_stream(
        &self,
        config: &FunctionConfig,
        stream: &str,
        env_id: &str,
        tenant: Option<String>,
    ) {
        let info = LogStreamInfo {
            log_group: config.log_group(),
            log_stream: stream.to_owned(),
            function: config.name.to_string(),
            version: config.version.to_string(),
            tenant_id: tenant,
            environment_id: env_id.to_owned(),
            created_ms: chrono::Utc::now().timestamp_millis(),
        };
        if let Err(e) = self.store.create_log_stream(&info) {
            tracing::warn!("could not record log stream {stream}: {e}");
        }
    }

    /// Stops environments off the async threads (killing and reaping blocks briefly).
    fn stop_all(&self, envs: Vec<Environment>) {
        if !envs.is_empty() {
            tokio::task::spawn_blocking(move || drop(envs));
        }
    }
}

/// The engine handle; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<EngineShared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.shared.config.data_dir)
            .finish()
    }
}

impl Engine {
    /// Opens the data directory and starts the background work (reaper, async queue, logs).
    /// Must be called inside a Tokio runtime.
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let internal =
            |what: &str, e: std::io::Error| EngineError::Internal(format!("{what}: {e}"));
        std::fs::create_dir_all(&config.data_dir).map_err(|e| internal("create data dir", e))?;
        let store = Arc::new(Store::open(&config.data_dir.join("condo.db"))?);
        let code =
            CodeStore::open(config.data_dir.join("code")).map_err(EngineError::InvalidCode)?;
        let swept = code.sweep_partial().map_err(EngineError::InvalidCode)?;
        if swept > 0 {
            tracing::info!("removed {swept} partial code extractions left by an earlier crash");
        }
        let runtimes_dir = config.data_dir.join("runtimes");
        runtimes::install_bootstraps(&runtimes_dir).map_err(|e| internal("install runtimes", e))?;
        let new_root = config.data_dir.join("run").join("root");
        std::fs::create_dir_all(&new_root).map_err(|e| internal("create sandbox root", e))?;
        let (system_binds, system_links) =
            condo_sandbox::host_system_root().map_err(|e| internal("probe host", e))?;
        let sandbox_base = SandboxBase {
            runtimes_dir,
            region: config.region.clone(),
        };
        let launcher = condo_sandbox::Launcher::new(condo_sandbox::LauncherConfig {
            init_program: config.init_program.clone(),
            cgroup_parent: cgroup_parent(&config.data_dir),
            host_ids: host_id_range(&config),
            listen: Some(runtimes::RUNTIME_API_ADDR),
            network_helper: config.network_helper.clone(),
            setup_timeout: Duration::from_secs(condo_types::Limits::INIT_TIMEOUT_SECS),
            base: condo_sandbox::BaseRoot {
                new_root,
                binds: system_binds,
                symlinks: system_links,
            },
        })
        .map_err(|e| EngineError::Internal(format!("sandbox launcher: {e}")))?;
        if launcher.leftovers_removed > 0 {
            tracing::info!(
                "removed {} sandboxes left by an earlier run",
                launcher.leftovers_removed
            );
        }
        tracing::info!(cgroups = ?launcher.cgroup_layout(), "sandbox launcher ready");
        let mut pool = Pool::new(config.limits);
        for (name, n) in store.all_reserved_concurrency()? {
            if let Ok(name) = FunctionName::parse(&name) {
                pool.set_reserved(&name, Some(n));
            }
        }
        for (name, tags) in store.all_tags()? {
            let cap = tags
                .check_settable()
                .ok()
                .and_then(|s| s.tenant_max_concurrency);
            if let (Ok(name), Some(cap)) = (FunctionName::parse(&name), cap) {
                pool.set_tenant_cap(&name, Some(cap));
            }
        }
        let shared = Arc::new(EngineShared {
            spawner: spawner::Spawner::start(launcher, config.prepared_sandboxes)
                .map_err(|e| internal("start sandbox spawner", e))?,
            logs: logs::LogSink::spawn(store.clone()),
            config,
            store,
            code,
            runtimes: HostRuntimes::probe(),
            sandbox_base,
            pool: Mutex::new(pool),
            tenant_shares: fairness::TenantShares::new(),
            cpu_placer: placement::CpuPlacer::new(condo_sandbox::allowed_cpus()),
            configs: RwLock::new(HashMap::new()),
            queue_wake: tokio::sync::Notify::new(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(reaper(Arc::downgrade(&shared)));
        tokio::spawn(queue::worker(Arc::downgrade(&shared)));
        Ok(Self { shared })
    }

    pub fn region(&self) -> &str {
        &self.shared.config.region
    }

    pub fn account_id(&self) -> &str {
        &self.shared.config.account_id
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn code_store(&self) -> &CodeStore {
        &self.shared.code
    }

    pub fn runtimes(&self) -> &HostRuntimes {
        &self.shared.runtimes
    }

    pub fn limits(&self) -> PoolLimits {
        self.shared.config.limits
    }

    /// Environments alive now (busy or idle), and invocations in flight.
    pub fn stats(&self) -> (u32, u32) {
        self.shared
            .pool
            .lock()
            .map(|p| (p.environment_count(), p.in_flight()))
            .unwrap_or((0, 0))
    }

    /// Stops taking work, stops every idle environment, and waits (bounded) for invocations in
    /// flight. Environments still running after that die with the process: each sandbox is
    /// bound to the platform's life by a parent-death signal.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared
            .shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let (idle, in_flight) = match self.shared.pool.lock() {
                Ok(mut p) => (p.drain(), p.in_flight()),
                Err(_) => break,
            };
            let _ = tokio::task::spawn_blocking(move || drop(idle)).await;
            if in_flight == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shared.spawner.stop().await;
        self.shared.logs.flush().await;
    }
}

/// Stops environments that have been idle longer than the configured time.
async fn reaper(shared: std::sync::Weak<EngineShared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let idle_timeout = shared.config.idle_timeout;
        let reaped = match shared.pool.lock() {
            Ok(mut p) => p.reap(std::time::Instant::now(), idle_timeout),
            Err(_) => return,
        };
        if !reaped.is_empty() {
            tracing::debug!(count = reaped.len(), "reaped idle environments");
        }
        shared.stop_all(reaped);
    }
}

/// The cgroup under which this instance's sandboxes live: one per data directory, so a restart
/// finds (and removes) what a crash of the same instance left, and never touches another's.
pub fn cgroup_parent(data_dir: &std::path::Path) -> PathBuf {
    use sha2::Digest;
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    PathBuf::from("condo").join(hex::encode(&digest[..6]))
}

fn host_id_range(config: &EngineConfig) -> std::ops::Range<u32> {
    let count = (config.limits.max_environments as u64)
        .saturating_add(config.prepared_sandboxes as u64)
        .saturating_add(16)
        .min(u64::from(u32::MAX - config.sandbox_host_id_base)) as u32;
    config.sandbox_host_id_base..config.sandbox_host_id_base + count
}
