//! `condo bench`: starts its own servers on fresh data directories, deploys its own functions,
//! runs the scenarios side by side with their peers, and writes `report.md`, `report.json` and
//! SVG charts.
//!
//! Timings never fail the run: only a broken harness does (a server that will not start, a
//! function that cannot be deployed, requests that error). Targets are compared and reported.

mod charts;
mod machine;
mod peer;
mod report;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::loadgen::{self, percentile, LoadResult, LoadSpec, Tenants};
use server::BenchServer;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenarios to run (default: all): warm, cold, churn, noisy, density.
    scenarios: Vec<String>,
    /// Where the report goes.
    #[arg(long, default_value = "bench-report")]
    out: PathBuf,
    /// Small sizes, for CI: checks the harness works; its figures are not the report's.
    #[arg(long)]
    quick: bool,
    /// Skip the `cargo lambda watch` peer (it is built from crates.io on first use).
    #[arg(long)]
    no_peer: bool,
}

pub const SCENARIOS: [&str; 5] = ["warm", "cold", "churn", "noisy", "density"];

/// Scenario sizes: (quick, full).
struct Sizes {
    warm_requests: usize,
    cold_tenants: usize,
    churn_tenants: usize,
    churn_visits: usize,
    noisy_seconds: u64,
    density_envs: usize,
    /// Rounds of the warm and noisy-neighbour measurements, interleaved so that a burst of
    /// noise on the shared machine lands on every contender alike; samples are pooled.
    rounds: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                warm_requests: 300,
                cold_tenants: 15,
                churn_tenants: 300,
                churn_visits: 3,
                noisy_seconds: 3,
                density_envs: 10,
                rounds: 1,
            }
        } else {
            Self {
                warm_requests: 5000,
                cold_tenants: 200,
                churn_tenants: 10_000,
                churn_visits: 3,
                noisy_seconds: 15,
                density_envs: 200,
                rounds: 3,
            }
        }
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    for s in &args.scenarios {
        if !SCENARIOS.contains(&s.as_str()) {
            bail!("unknown scenario {s}: choose from {}", SCENARIOS.join(", "));
        }
    }
    let chosen: Vec<&str> = if args.scenarios.is_empty() {
        SCENARIOS.to_vec()
    } else {
        SCENARIOS
            .iter()
            .copied()
            .filter(|s| args.scenarios.iter().any(|a| a == s))
            .collect()
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let functions = Functions::build(chosen.contains(&"warm") && !args.no_peer)?;
    let sizes = Sizes::new(args.quick);
    let mut results = serde_json::Map::new();
    for scenario in &chosen {
        eprintln!("== {scenario}");
        let value = rt
            .block_on(async {
                match *scenario {
                    "warm" => warm(&functions, &sizes, args.quick, args.no_peer).await,
                    "cold" => cold(&functions, &sizes).await,
                    "churn" => churn(&functions, &sizes).await,
                    "noisy" => noisy(&functions, &sizes).await,
                    _ => density(&functions, &sizes).await,
                }
            })
            .with_context(|| format!("scenario {scenario}"))?;
        results.insert((*scenario).to_owned(), value);
    }
    let report = json!({
        "condo_version": env!("CARGO_PKG_VERSION"),
        "quick": args.quick,
        "machine": machine::describe(),
        "duration_s": started.elapsed().as_secs_f64(),
        "scenarios": Value::Object(results),
    });
    report::write(&args.out, &report)?;
    eprintln!(
        "report: {} ({:.0} s)",
        args.out.join("report.md").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The benchmark functions' code, as ZIPs.
struct Functions {
    rust_echo: Vec<u8>,
    raw_echo: Vec<u8>,
    rust_echo_dir: PathBuf,
    python: Vec<u8>,
    node: Vec<u8>,
}

const PYTHON_ECHO: &str = "def handler(event, context):\n    return event\n";
const NODE_ECHO: &str = "export const handler = async (event) => event;\n";

impl Functions {
    fn build(_with_peer: bool) -> anyhow::Result<Self> {
        let examples = repo_root()?.join("examples");
        eprintln!("building the Rust echo functions (lambda_runtime, and std only)...");
        let bootstrap = build_example(&examples.join("rust-echo"), "bootstrap")?;
        let raw = build_example(&examples.join("raw-echo"), "raw-echo")?;
        Ok(Self {
            rust_echo: zip_one("bootstrap", &bootstrap, true)?,
            raw_echo: zip_one("bootstrap", &raw, true)?,
            rust_echo_dir: examples.join("rust-echo"),
            python: zip_one("app.py", PYTHON_ECHO.as_bytes(), false)?,
            node: zip_one("index.mjs", NODE_ECHO.as_bytes(), false)?,
        })
    }
}

/// Builds one of the checkout's example crates and returns its binary `bin`.
fn build_example(dir: &std::path::Path, bin: &str) -> anyhow::Result<Vec<u8>> {
    let target = repo_root()?.join("target").join("examples");
    let status = std::process::Command::new("cargo")
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building {} failed", dir.display());
    }
    Ok(std::fs::read(target.join("release").join(bin))?)
}

/// The workspace root: the benchmark builds its functions from the checkout's examples.
fn repo_root() -> anyhow::Result<PathBuf> {
    let mut dir = std::env::current_dir()?;
    loop {
        if dir.join("examples").join("rust-echo").is_dir() && dir.join("Cargo.toml").is_file() {
            return Ok(dir);
        }
        if !dir.pop() {
            bail!("condo bench runs from a condo checkout (it builds examples/rust-echo)");
        }
    }
}

fn zip_one(name: &str, contents: &[u8], executable: bool) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(if executable {
            0o755
        } else {
            0o644
        });
        z.start_file(name, opts)?;
        z.write_all(contents)?;
        z.finish()?;
    }
    Ok(buf.into_inner())
}

fn progress(len: usize, what: &str) -> (ProgressBar, Arc<dyn Fn(usize) + Send + Sync>) {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("  {msg:<28} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    let b = bar.clone();
    (bar, Arc::new(move |n| b.inc(n as u64)))
}

async fn load(
    server: &BenchServer,
    function: &str,
    tenants: Tenants,
    concurrency: usize,
    requests: usize,
    what: &str,
) -> anyhow::Result<LoadResult> {
    let (bar, tick) = progress(requests, what);
    let spec = LoadSpec {
        warm_up: matches!(tenants, Tenants::Fixed(_)),
        endpoint: server.endpoint.clone(),
        credentials: server.credentials.clone(),
        region: "us-east-1".into(),
        function: function.into(),
        tenants,
        concurrency,
        requests,
        payload_bytes: 1024,
        pause: Duration::ZERO,
        interval: Duration::ZERO,
        stop: None,
    };
    let r = loadgen::run(spec, Some(tick)).await;
    bar.finish_and_clear();
    let r = r?;
    if let Some(e) = &r.first_error {
        bail!("{what}: {} requests failed; the first: {e}", r.errors);
    }
    Ok(r)
}

/// Median, p90, p99, max and count of latencies, in microseconds.
fn stats(latencies: &[Duration]) -> Value {
    let us = |p: f64| (percentile(latencies, p).as_secs_f64() * 1e6).round();
    json!({
        "p50_us": us(0.5), "p90_us": us(0.9), "p99_us": us(0.99), "max_us": us(1.0),
        "count": latencies.len(),
    })
}

/// One measurement over several rounds: latencies pooled, throughput the median round's.
#[derive(Default)]
struct Rounds {
    latencies: Vec<Duration>,
    throughputs: Vec<f64>,
}

impl Rounds {
    fn add(&mut self, r: LoadResult) {
        self.throughputs.push(r.throughput());
        self.latencies.extend(r.latencies);
    }

    fn stats(&mut self) -> Value {
        self.latencies.sort();
        stats(&self.latencies)
    }

    fn percentile_us(&mut self, p: f64) -> f64 {
        self.latencies.sort();
        percentile(&self.latencies, p).as_secs_f64() * 1e6
    }

    fn throughput(&self) -> f64 {
        let mut t = self.throughputs.clone();
        t.sort_by(f64::total_cmp);
        t.get(t.len() / 2).copied().unwrap_or(0.0).round()
    }
}

fn median_ms(values: impl Iterator<Item = Duration>) -> f64 {
    let mut v: Vec<Duration> = values.collect();
    v.sort();
    (percentile(&v, 0.5).as_secs_f64() * 1e3 * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

async fn warm(f: &Functions, sizes: &Sizes, quick: bool, no_peer: bool) -> anyhow::Result<Value> {
    let levels: &[usize] = if quick { &[1, 4, 16] } else { &[1, 4, 16, 64] };
    let server = BenchServer::start(&[]).await?;
    server
        .deploy("echo", "provided.al2023", None, &f.rust_echo, false, &[])
        .await?;
    server
        .deploy("raw-echo", "provided.al2023", None, &f.raw_echo, false, &[])
        .await?;
    let floor = peer::Floor::start().await?;
    let peer = if quick || no_peer {
        Err(if quick {
            "not run in --quick mode".to_owned()
        } else {
            "--no-peer".to_owned()
        })
    } else {
        peer::CargoLambda::start(&f.rust_echo_dir)
            .await
            .map_err(|e| format!("{e:#}"))
    };
    let mut rows = Vec::new();
    for &c in levels {
        let n = sizes.warm_requests.max(c * 20);
        let (mut condo, mut raw, mut fl, mut pr) = Default::default();
        for round in 1..=sizes.rounds {
            let of = format!("c={c}, round {round}/{}", sizes.rounds);
            Rounds::add(
                &mut condo,
                load(
                    &server,
                    "echo",
                    Tenants::Fixed(None),
                    c,
                    n,
                    &format!("condo {of}"),
                )
                .await?,
            );
            Rounds::add(
                &mut raw,
                load(
                    &server,
                    "raw-echo",
                    Tenants::Fixed(None),
                    c,
                    n,
                    &format!("condo, std-only runtime, {of}"),
                )
                .await?,
            );
            Rounds::add(&mut fl, floor.run(c, n).await?);
            if let Ok(p) = &peer {
                Rounds::add(&mut pr, p.run(&server, c, n).await?);
            }
        }
        let mut row = json!({
            "concurrency": c,
            "condo": condo.stats(),
            "condo_throughput": condo.throughput(),
            "condo_std_runtime": raw.stats(),
            "condo_std_runtime_throughput": raw.throughput(),
            "floor": fl.stats(),
            "floor_throughput": fl.throughput(),
        });
        if peer.is_ok() {
            row["peer"] = pr.stats();
            row["peer_throughput"] = json!(pr.throughput());
        }
        rows.push(row);
    }
    Ok(json!({
        "function": "Rust lambda_runtime echo, provided.al2023, 1 KB payload, Invoke API",
        "std_runtime_function": "the same echo with a std-only Runtime API client (examples/raw-echo)",
        "rounds": sizes.rounds,
        "levels": rows,
        "peer": match &peer { Ok(_) => json!("cargo lambda watch"), Err(e) => json!({"skipped": e}) },
    }))
}

async fn cold(f: &Functions, sizes: &Sizes) -> anyhow::Result<Value> {
    let server = BenchServer::start(&[]).await?;
    let mut out = Vec::new();
    let runtimes: [(&str, &str, Option<&str>, &Vec<u8>); 3] = [
        ("provided", "provided.al2023", None, &f.rust_echo),
        ("python", "python3.11", Some("app.handler"), &f.python),
        ("nodejs", "nodejs20.x", Some("index.handler"), &f.node),
    ];
    for (label, runtime, handler, code) in runtimes {
        server
            .deploy(label, runtime, handler, code, true, &[])
            .await?;
        let r = load(
            &server,
            label,
            Tenants::EachNew {
                prefix: format!("cold-{label}"),
            },
            1,
            sizes.cold_tenants,
            &format!("cold {label}"),
        )
        .await?;
        out.push(json!({
            "runtime": label,
            "total": stats(&r.latencies),
            "median_ms": {
                "sandbox": median_ms(r.cold_phases.iter().map(|p| p[0])),
                "init": median_ms(r.cold_phases.iter().map(|p| p[1])),
                "invoke_and_api": median_ms(r.cold_phases.iter().map(|p| p[2])),
                "total": median_ms(r.latencies.iter().copied()),
            },
            "live_environments_after": server.environments(),
        }));
    }
    Ok(
        json!({ "what": "first invoke of a never-seen tenant, end to end, concurrency 1", "runtimes": out }),
    )
}

async fn churn(f: &Functions, sizes: &Sizes) -> anyhow::Result<Value> {
    const MAX_ENVS: usize = 512;
    let server = BenchServer::start(&[
        "--max-environments",
        &MAX_ENVS.to_string(),
        "--idle-timeout",
        "5",
    ])
    .await?;
    server
        .deploy("echo", "provided.al2023", None, &f.rust_echo, true, &[])
        .await?;
    let sampler = server.sample_every(Duration::from_millis(200));
    let requests = sizes.churn_tenants * sizes.churn_visits;
    let r = load(
        &server,
        "echo",
        Tenants::Visits {
            prefix: "churn".into(),
            visits: sizes.churn_visits,
        },
        16,
        requests,
        "churn",
    )
    .await?;
    let samples = sampler.stop().await;
    Ok(json!({
        "tenants": sizes.churn_tenants,
        "requests_per_tenant": sizes.churn_visits,
        "concurrency": 16,
        "max_environments": MAX_ENVS,
        "latency": stats(&r.latencies),
        "throughput": r.throughput().round(),
        "throttled_429": r.throttled,
        "errors": r.errors,
        "peak_environments": samples.peak_environments,
        "peak_platform_rss_mb": samples.peak_platform_rss_mb,
        "peak_total_memory_mb": ((samples.peak_sandbox_memory_mb + samples.peak_platform_rss_mb) * 10.0).round() / 10.0,
        "environments_started": r.cold_phases.len(),
        "environments_reaped_or_evicted": r.cold_phases.len().saturating_sub(server.environments()),
    }))
}

/// Invocations the noisy tenant may have in flight in the run with limits.
const NOISY_TENANT_CAP: u32 = 2;

async fn noisy(f: &Functions, sizes: &Sizes) -> anyhow::Result<Value> {
    let server = BenchServer::start(&[]).await?;
    server
        .deploy("echo", "provided.al2023", None, &f.rust_echo, true, &[])
        .await?;
    let cap = NOISY_TENANT_CAP.to_string();
    server
        .deploy(
            "echo-capped",
            "provided.al2023",
            None,
            &f.rust_echo,
            true,
            &[(condo_types::TENANT_CONCURRENCY_TAG, cap.as_str())],
        )
        .await?;
    let mut runs = serde_json::Map::new();
    for (label, function) in [("without_limits", "echo"), ("with_limits", "echo-capped")] {
        runs.insert(
            label.into(),
            noisy_run(&server, function, sizes.noisy_seconds, sizes.rounds).await?,
        );
    }
    Ok(json!({
        "runs": runs,
        "rounds": sizes.rounds,
        "tenant_cap": NOISY_TENANT_CAP,
        "limits": format!("without: the account and tenant-environment caps only; with: condo:tenant-max-concurrency={NOISY_TENANT_CAP} on the function, so the flooding tenant is answered 429 past {NOISY_TENANT_CAP} invocations in flight (the flooder does not back off)"),
    }))
}

/// The quiet tenant alone, then beside a flooding tenant of the same function.
async fn noisy_run(
    server: &BenchServer,
    function: &str,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<Value> {
    let (mut solo, mut shared, mut flood) =
        (Rounds::default(), Rounds::default(), Rounds::default());
    let (mut served, mut throttled, mut errors) = (0, 0, 0);
    for round in 1..=rounds {
        let r = noisy_round(
            server,
            function,
            seconds,
            &format!("round {round}/{rounds}"),
        )
        .await?;
        solo.add(r.solo);
        shared.add(r.shared);
        served += r.flood.latencies.len();
        (throttled, errors) = (throttled + r.flood.throttled, errors + r.flood.errors);
        flood.add(r.flood);
    }
    Ok(json!({
        "quiet_solo": solo.stats(),
        "quiet_with_neighbour": shared.stats(),
        "p50_ratio": (shared.percentile_us(0.5) / solo.percentile_us(0.5) * 100.0).round() / 100.0,
        "p99_ratio": (shared.percentile_us(0.99) / solo.percentile_us(0.99) * 100.0).round() / 100.0,
        "neighbour": { "latency": flood.stats(), "answers_per_s": flood.throughput(), "served": served, "throttled_429": throttled, "errors": errors },
    }))
}

struct NoisyRound {
    solo: LoadResult,
    shared: LoadResult,
    flood: LoadResult,
}

async fn noisy_round(
    server: &BenchServer,
    function: &str,
    seconds: u64,
    round: &str,
) -> anyhow::Result<NoisyRound> {
    let quiet_requests = (20 * seconds) as usize;
    let quiet = || LoadSpec {
        endpoint: server.endpoint.clone(),
        credentials: server.credentials.clone(),
        region: "us-east-1".into(),
        function: function.into(),
        tenants: Tenants::Fixed(Some("quiet".into())),
        concurrency: 1,
        requests: quiet_requests,
        warm_up: true,
        payload_bytes: 1024,
        pause: Duration::ZERO,
        interval: Duration::from_millis(50),
        stop: None,
    };
    eprintln!("  {function}, {round}: quiet tenant alone, 20 rps for {seconds} s");
    let solo = on_own_thread(quiet()).await?;
    eprintln!(
        "  {function}, {round}: quiet tenant at 20 rps while another floods at concurrency 16"
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood_spec = LoadSpec {
        tenants: Tenants::Fixed(Some("noisy".into())),
        concurrency: 16,
        requests: usize::MAX / 4,
        interval: Duration::ZERO,
        warm_up: true,
        stop: Some(stop.clone()),
        ..quiet()
    };
    let flood = tokio::spawn(loadgen::run(flood_spec, None));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shared = on_own_thread(quiet()).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flood = flood.await??;
    if solo.errors + shared.errors + solo.throttled + shared.throttled > 0 {
        bail!(
            "the quiet tenant of {function} saw {} errors and {} 429s",
            solo.errors + shared.errors,
            solo.throttled + shared.throttled
        );
    }
    Ok(NoisyRound {
        solo,
        shared,
        flood,
    })
}

/// Runs a load on a thread and runtime of its own. The quiet tenant's client stands for a
/// caller elsewhere: inside the harness its requests must not queue behind the flood's tasks.
async fn on_own_thread(spec: LoadSpec) -> anyhow::Result<LoadResult> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("quiet-client".into())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(loadgen::run(spec, None)));
            let _ = done.send(outcome);
        })?;
    result.await?
}

async fn density(f: &Functions, sizes: &Sizes) -> anyhow::Result<Value> {
    let mut out = Vec::new();
    for (label, runtime, handler, code) in [
        ("provided", "provided.al2023", None, &f.rust_echo),
        ("python", "python3.11", Some("app.handler"), &f.python),
    ] {
        let server = BenchServer::start(&["--prepared-sandboxes", "0"]).await?;
        server
            .deploy(label, runtime, handler, code, true, &[])
            .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let base = server.memory();
        let (bar, tick) = progress(sizes.density_envs, &format!("density {label}"));
        let mut curve = vec![json!([0, base.sandboxes_mb])];
        let step = (sizes.density_envs / 20).max(1);
        for i in 0..sizes.density_envs {
            server
                .invoke_once(label, &format!("idle-{i}"))
                .await
                .with_context(|| format!("environment {i}"))?;
            tick(1);
            if (i + 1) % step == 0 {
                curve.push(json!([i + 1, server.memory().sandboxes_mb]));
            }
        }
        bar.finish_and_clear();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = server.memory();
        let per_env = (after.sandboxes_mb - base.sandboxes_mb) / sizes.density_envs as f64;
        out.push(json!({
            "runtime": label,
            "environments": sizes.density_envs,
            "per_environment_mb": (per_env * 100.0).round() / 100.0,
            "fit_in_4_gib": if per_env > 0.0 { (4096.0 / per_env).floor() } else { 0.0 },
            "platform_rss_mb": after.platform_rss_mb,
            "curve": curve,
        }));
    }
    Ok(
        json!({ "what": "idle warm environments, memory charged to their cgroups (processes, /tmp, page cache)", "runtimes": out }),
    )
}
