//! `condo load`: a small load generator for the Invoke API (keep-alive connections, every request
//! signed like a real client's), printing latency percentiles and throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use condo_api::sigv4;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Function to invoke.
    name: String,
    #[arg(long)]
    tenant_id: Option<String>,
    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured requests in total (after a warm-up of one per connection).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Size of the JSON payload sent.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Use a new tenant id for every request: measures cold starts instead.
    #[arg(long)]
    cold: bool,
    /// Pause between one connection's requests, in milliseconds: measures requests that
    /// arrive on a settled host rather than back to back.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    #[command(flatten)]
    conn: crate::client::Connection,
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(load(args))
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let creds = Arc::new(crate::client::credentials(&args.conn)?);
    let endpoint = args.conn.endpoint.trim_end_matches('/').to_owned();
    let host = endpoint.split("://").nth(1).unwrap_or(&endpoint).to_owned();
    let filler = "x".repeat(args.payload_bytes.saturating_sub(12));
    let payload = Bytes::from(format!("{{\"data\":\"{filler}\"}}"));
    let path = format!("/2015-03-31/functions/{}/invocations", args.name);
    let per_conn = args.requests.div_ceil(args.concurrency.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let (creds, host, path, payload, region) = (
            creds.clone(),
            host.clone(),
            path.clone(),
            payload.clone(),
            args.conn.region.clone(),
        );
        let tenant = args.tenant_id.clone();
        let cold = args.cold;
        let pause = Duration::from_millis(args.pause_ms);
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&host)
                .await
                .context("connect")?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(per_conn);
            let mut breakdown = Vec::new();
            for i in 0..=per_conn {
                if i > 0 && !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let tenant = if cold {
                    Some(format!("load-{worker}-{i}-{}", rand::random::<u32>()))
                } else {
                    tenant.clone()
                };
                let mut headers = http::HeaderMap::new();
                headers.insert("host", host.parse()?);
                headers.insert("content-type", "application/json".parse()?);
                if let Some(t) = &tenant {
                    headers.insert("x-amz-tenant-id", t.parse()?);
                }
                let t0 = Instant::now();
                for (k, v) in sigv4::sign(
                    "POST",
                    &path,
                    None,
                    &headers,
                    &payload,
                    &creds,
                    &region,
                    "lambda",
                    chrono::Utc::now(),
                ) {
                    headers.insert(http::HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
                }
                let mut req = http::Request::post(&path).body(Full::new(payload.clone()))?;
                *req.headers_mut() = headers;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                let failed = resp.headers().contains_key("x-amz-function-error");
                let phases = resp
                    .headers()
                    .get(condo_api::COLD_START_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_cold_start);
                let body = resp.into_body().collect().await?.to_bytes();
                if !status.is_success() || failed {
                    bail!("invoke failed: {status} {}", String::from_utf8_lossy(&body));
                }
                // The first request of each connection warms it (and, unless --cold, the environment).
                if i > 0 || cold {
                    let total = t0.elapsed();
                    latencies.push(total);
                    if let Some((sandbox, init)) = phases {
                        breakdown.push([sandbox, init, total.saturating_sub(sandbox + init)]);
                    }
                }
            }
            Ok::<_, anyhow::Error>((latencies, breakdown))
        }));
    }
    let mut all = Vec::new();
    let mut phases = Vec::new();
    for t in tasks {
        let (latencies, breakdown) = t.await??;
        all.extend(latencies);
        phases.extend(breakdown);
    }
    let wall = started.elapsed().saturating_sub(pause_total(&args));
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "requests={} concurrency={} p50={:.0}us p90={:.0}us p99={:.0}us max={:.0}us throughput={:.0}/s",
        all.len(),
        args.concurrency,
        us(pct(0.50)),
        us(pct(0.90)),
        us(pct(0.99)),
        us(pct(1.0)),
        all.len() as f64 / wall.as_secs_f64()
    );
    if !phases.is_empty() {
        let ms = |i: usize| {
            let mut v: Vec<Duration> = phases.iter().map(|p: &[Duration; 3]| p[i]).collect();
            v.sort();
            v[v.len() / 2].as_secs_f64() * 1e3
        };
        println!(
            "cold starts={} median: sandbox={:.2}ms init={:.2}ms invoke+api={:.2}ms",
            phases.len(),
            ms(0),
            ms(1),
            ms(2)
        );
    }
    Ok(())
}

/// Time one connection spent pausing, left out of the throughput.
fn pause_total(args: &LoadArgs) -> Duration {
    let per_conn = args.requests.div_ceil(args.concurrency.max(1)) as u32;
    Duration::from_millis(args.pause_ms) * per_conn
}

/// Reads `sandbox=<ms>ms; init=<ms>ms` (condo's cold-start header).
fn parse_cold_start(value: &str) -> Option<(Duration, Duration)> {
    let mut sandbox = None;
    let mut init = None;
    for part in value.split(';') {
        let (k, v) = part.trim().split_once('=')?;
        let ms: f64 = v.trim_end_matches("ms").parse().ok()?;
        let d = Duration::from_secs_f64(ms.max(0.0) / 1e3);
        match k {
            "sandbox" => sandbox = Some(d),
            "init" => init = Some(d),
            _ => {}
        }
    }
    Some((sandbox?, init?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_start_header() {
        assert_eq!(
            parse_cold_start("sandbox=1.500ms; init=30.000ms"),
            Some((Duration::from_micros(1500), Duration::from_millis(30)))
        );
        assert_eq!(parse_cold_start("sandbox=1ms"), None);
        assert_eq!(parse_cold_start("garbage"), None);
    }
}
