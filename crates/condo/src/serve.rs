//! `condo serve`: the engine and the API on one listener, until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use condo_api::ApiCredentials;
use condo_engine::{Engine, EngineConfig, PoolLimits};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address of the Lambda API.
    #[arg(long, default_value = "127.0.0.1:9700", env = "CONDO_LISTEN")]
    listen: SocketAddr,
    /// Where state lives: the SQLite database, code, logs.
    #[arg(long, env = "CONDO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Invocations in flight at once, over all functions (the account concurrency).
    #[arg(long, default_value_t = 64)]
    max_concurrency: u32,
    /// Execution environments (busy or idle) kept at most on this host.
    #[arg(long, default_value_t = 1024)]
    max_environments: u32,
    /// Seconds an idle environment is kept warm before it is stopped.
    #[arg(long, default_value_t = 600)]
    idle_timeout: u64,
    /// Seconds before the first and the second retry of a failed asynchronous invocation.
    #[arg(long, num_args = 2, default_values_t = [60, 120])]
    async_retry_delays: Vec<u64>,
    /// Region reported in ARNs and printed by `condo env` (signatures from any region are accepted, as a local endpoint should).
    #[arg(long, default_value = "us-east-1", env = "CONDO_REGION")]
    region: String,
    /// First host uid (and gid) given to environments: each live environment runs as one of
    /// its own, from this one up. Pick a range no account of this host uses.
    #[arg(long, default_value_t = 2_100_000_000)]
    sandbox_host_id_base: u32,
    /// Empty sandboxes kept ready ahead of demand, so cold starts skip their set-up.
    #[arg(long, default_value_t = 4)]
    prepared_sandboxes: usize,
    /// The `pasta` binary (Debian package `passt`) that gives functions tagged
    /// `condo:network=outbound` their connections. Default: `pasta` on PATH, if there is one.
    #[arg(long)]
    network_helper: Option<PathBuf>,
    /// Threads running the platform's own work (HTTP, Runtime API, scheduling). Default: one
    /// per core. Fewer leave more of the host to functions and keep an invocation's hand-offs
    /// between tasks on one thread more often; on a 2-core host, 1 and 2 measured the same
    /// within noise (`condo bench warm`).
    #[arg(long, env = "CONDO_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
}

pub const ACCOUNT_ID: &str = "000000000000";

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONDO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if !nix_is_root() {
        anyhow::bail!("condo serve builds a sandbox (namespaces, mounts) for every environment and needs root");
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(crate::default_data_dir);
    let credentials = load_or_create_credentials(&data_dir)?;
    let workers = args
        .worker_threads
        .map_or_else(default_worker_threads, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args, data_dir, credentials))
}

fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The configured helper (which must exist), or `pasta` from PATH, or none.
fn network_helper(configured: Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = configured {
        if !path.is_file() {
            anyhow::bail!("--network-helper {}: no such file", path.display());
        }
        return Ok(Some(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pasta"))
            .find(|candidate| candidate.is_file())
    });
    match &found {
        Some(path) => tracing::info!("outbound network helper: {}", path.display()),
        None => tracing::info!(
            "no pasta on PATH: functions tagged condo:network=outbound will be refused"
        ),
    }
    Ok(found)
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

async fn serve(
    args: ServeArgs,
    data_dir: PathBuf,
    credentials: ApiCredentials,
) -> anyhow::Result<()> {
    let delays = [
        Duration::from_secs(args.async_retry_delays.first().copied().unwrap_or(60)),
        Duration::from_secs(args.async_retry_delays.get(1).copied().unwrap_or(120)),
    ];
    let engine = Engine::start(EngineConfig {
        data_dir: data_dir.clone(),
        region: args.region.clone(),
        account_id: ACCOUNT_ID.into(),
        limits: PoolLimits {
            account_concurrency: args.max_concurrency.max(1),
            tenant_envs_per_mille: 2500,
            max_environments: args.max_environments.max(1),
        },
        idle_timeout: Duration::from_secs(args.idle_timeout),
        init_program: PathBuf::from("/proc/self/exe"),
        sandbox_host_id_base: args.sandbox_host_id_base,
        prepared_sandboxes: args.prepared_sandboxes,
        network_helper: network_helper(args.network_helper.clone())?,
        async_retry_delays: delays,
    })
    .context("starting the engine")?;
    let app = condo_api::router(engine.clone(), credentials);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "condo listening on http://{addr} (data in {}); runtimes: {}",
        data_dir.display(),
        engine.runtimes().supported().join(", ")
    );
    // Tests and scripts wait for this line on stdout.
    println!("condo ready on http://{addr}");
    // Every response leaves at once: a body written in parts must not wait for an ACK.
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("could not set TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("shutting down: stopping execution environments");
    engine.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `CONDO_ACCESS_KEY_ID`/`CONDO_SECRET_ACCESS_KEY` if set, else the pair kept in the data dir
/// (generated on first start, readable by its owner only).
pub fn load_or_create_credentials(data_dir: &Path) -> anyhow::Result<ApiCredentials> {
    if let (Ok(id), Ok(secret)) = (
        std::env::var("CONDO_ACCESS_KEY_ID"),
        std::env::var("CONDO_SECRET_ACCESS_KEY"),
    ) {
        if !id.is_empty() && !secret.is_empty() {
            return Ok(ApiCredentials {
                access_key_id: id,
                secret_access_key: secret,
            });
        }
    }
    let path = data_dir.join("credentials.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let v: serde_json::Value =
            serde_json::from_str(&text).context("reading credentials.json")?;
        if let (Some(id), Some(secret)) = (v["AccessKeyId"].as_str(), v["SecretAccessKey"].as_str())
        {
            return Ok(ApiCredentials {
                access_key_id: id.into(),
                secret_access_key: secret.into(),
            });
        }
        anyhow::bail!("{} is malformed", path.display());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let creds = ApiCredentials {
        access_key_id: format!(
            "AKIA{}",
            random_text(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        ),
        secret_access_key: random_text(
            40,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        ),
    };
    let text = serde_json::json!({ "AccessKeyId": creds.access_key_id, "SecretAccessKey": creds.secret_access_key }).to_string();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(text.as_bytes())?;
    Ok(creds)
}

fn random_text(len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| alphabet[rand::random::<usize>() % alphabet.len()] as char)
        .collect()
}
