//! The load generator behind `condo load` and `condo bench`: keep-alive connections to the
//! Invoke API, every request signed like a real client's, latencies and cold-start phases
//! recorded per request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use condo_api::sigv4;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

/// Which tenant each request names.
#[derive(Debug, Clone)]
pub enum Tenants {
    /// Always the same one (or none, for a function without tenant isolation).
    Fixed(Option<String>),
    /// A new tenant for every request: every request is a cold start.
    EachNew { prefix: String },
    /// Every tenant is invoked `visits` times: new once, then warm. Tenants come in windows
    /// of [`VISIT_WINDOW`], each visited round-robin, so a tenant's visits follow each other
    /// closely but never overlap (which would scale it out instead of reusing its environment).
    Visits { prefix: String, visits: usize },
}

impl Tenants {
    fn for_request(&self, i: usize) -> Option<String> {
        match self {
            Self::Fixed(t) => t.clone(),
            Self::EachNew { prefix } => Some(format!("{prefix}-{i}")),
            Self::Visits { prefix, visits } => {
                let block = VISIT_WINDOW * (*visits).max(1);
                let tenant = (i / block) * VISIT_WINDOW + (i % block) % VISIT_WINDOW;
                Some(format!("{prefix}-{tenant}"))
            }
        }
    }
}

/// Tenants visited together by [`Tenants::Visits`].
pub const VISIT_WINDOW: usize = 64;

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub endpoint: String,
    pub credentials: sigv4::Credentials,
    pub region: String,
    pub function: String,
    pub tenants: Tenants,
    pub concurrency: usize,
    /// Measured requests in all.
    pub requests: usize,
    /// With a fixed tenant: one unmeasured request per connection first, which warms the
    /// connection and the environment.
    pub warm_up: bool,
    pub payload_bytes: usize,
    /// Each connection waits this long between its requests.
    pub pause: Duration,
    /// Requests start on a fixed schedule, this far apart per connection (open-loop pacing);
    /// zero sends back to back.
    pub interval: Duration,
    /// Ends the run early once set (for a background load of unknown length).
    pub stop: Option<Arc<AtomicBool>>,
}

/// What a run measured.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Latency of every successful measured request, sorted.
    pub latencies: Vec<Duration>,
    /// Cold starts: (sandbox, init, rest of the request).
    pub cold_phases: Vec<[Duration; 3]>,
    /// Answers `429 TooManyRequestsException`: documented back-pressure, not failures.
    pub throttled: usize,
    /// Anything else that did not succeed, with the first message.
    pub errors: usize,
    pub first_error: Option<String>,
    /// Time spent sending, pauses excluded.
    pub busy: Duration,
}

impl LoadResult {
    pub fn throughput(&self) -> f64 {
        let done = self.latencies.len() + self.throttled;
        if self.busy.is_zero() {
            0.0
        } else {
            done as f64 / self.busy.as_secs_f64()
        }
    }
}

/// Runs `spec` to the end; a request that fails is counted, never aborts the run.
pub async fn run(
    spec: LoadSpec,
    progress: Option<Arc<dyn Fn(usize) + Send + Sync>>,
) -> anyhow::Result<LoadResult> {
    let spec = Arc::new(spec);
    let host = spec
        .endpoint
        .trim_end_matches('/')
        .split("://")
        .nth(1)
        .unwrap_or(&spec.endpoint)
        .to_owned();
    let filler = "x".repeat(spec.payload_bytes.saturating_sub(12));
    let payload = Bytes::from(format!("{{\"data\":\"{filler}\"}}"));
    let path = format!("/2015-03-31/functions/{}/invocations", spec.function);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..spec.concurrency.max(1) {
        let (spec, host, path, payload, next, progress) = (
            spec.clone(),
            host.clone(),
            path.clone(),
            payload.clone(),
            next.clone(),
            progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&host)
                .await
                .with_context(|| format!("connect to {host}"))?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let target = Target {
                spec: &spec,
                host: &host,
                path: &path,
                payload: &payload,
            };
            let mut out = LoadResult::default();
            let mut paused = Duration::ZERO;
            let schedule = Instant::now();
            let mut sent = 0u32;
            if let (true, Tenants::Fixed(tenant)) = (spec.warm_up, &spec.tenants) {
                let _ = target.invoke(&mut sender, tenant.as_deref()).await;
            }
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let stopped = spec
                    .stop
                    .as_ref()
                    .is_some_and(|s| s.load(Ordering::Relaxed));
                if i >= spec.requests || stopped {
                    break;
                }
                if !spec.interval.is_zero() {
                    let due = schedule + spec.interval * sent;
                    let now = Instant::now();
                    if due > now {
                        tokio::time::sleep(due - now).await;
                        paused += due - now;
                    }
                    sent += 1;
                } else if !spec.pause.is_zero() && i >= spec.concurrency {
                    tokio::time::sleep(spec.pause).await;
                    paused += spec.pause;
                }
                let tenant = spec.tenants.for_request(i);
                let t0 = Instant::now();
                match target.invoke(&mut sender, tenant.as_deref()).await {
                    Ok(Answer::Ok(phases)) => {
                        let total = t0.elapsed();
                        out.latencies.push(total);
                        if let Some((sandbox, init)) = phases {
                            out.cold_phases.push([
                                sandbox,
                                init,
                                total.saturating_sub(sandbox + init),
                            ]);
                        }
                    }
                    Ok(Answer::Throttled) => out.throttled += 1,
                    Ok(Answer::Failed(message)) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(message);
                    }
                    Err(e) => return Err(e),
                }
                if let Some(p) = &progress {
                    p(1);
                }
            }
            out.busy = schedule.elapsed().saturating_sub(paused);
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut all = LoadResult::default();
    for t in tasks {
        let r = t.await??;
        all.latencies.extend(r.latencies);
        all.cold_phases.extend(r.cold_phases);
        all.throttled += r.throttled;
        all.errors += r.errors;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
        all.busy = all.busy.max(r.busy);
    }
    if all.busy.is_zero() {
        all.busy = started.elapsed();
    }
    all.latencies.sort();
    Ok(all)
}

enum Answer {
    Ok(Option<(Duration, Duration)>),
    Throttled,
    Failed(String),
}

/// What every request of a run sends: the same function, endpoint and payload.
struct Target<'a> {
    spec: &'a LoadSpec,
    host: &'a str,
    path: &'a str,
    payload: &'a Bytes,
}

impl Target<'_> {
    async fn invoke(
        &self,
        sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        tenant: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", self.host.parse()?);
        headers.insert("content-type", "application/json".parse()?);
        if let Some(t) = tenant {
            headers.insert("x-amz-tenant-id", t.parse()?);
        }
        for (k, v) in sigv4::sign(
            "POST",
            self.path,
            None,
            &headers,
            self.payload,
            &self.spec.credentials,
            &self.spec.region,
            "lambda",
            chrono::Utc::now(),
        ) {
            headers.insert(http::HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
        }
        let mut req = http::Request::post(self.path).body(Full::new(self.payload.clone()))?;
        *req.headers_mut() = headers;
        let resp = sender.send_request(req).await.context("send")?;
        let status = resp.status();
        let failed = resp.headers().contains_key("x-amz-function-error");
        let phases = resp
            .headers()
            .get(condo_api::COLD_START_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_cold_start);
        let body = resp
            .into_body()
            .collect()
            .await
            .context("read answer")?
            .to_bytes();
        Ok(if status.as_u16() == 429 {
            Answer::Throttled
        } else if !status.is_success() || failed {
            Answer::Failed(format!("{status} {}", String::from_utf8_lossy(&body)))
        } else {
            Answer::Ok(phases)
        })
    }
}

/// Reads `sandbox=<ms>ms; init=<ms>ms` (condo's cold-start header).
pub fn parse_cold_start(value: &str) -> Option<(Duration, Duration)> {
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

/// The value at percentile `p` (0..=1) of sorted `values`.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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

    #[test]
    fn tenants_and_percentiles() {
        let v = Tenants::Visits {
            prefix: "t".into(),
            visits: 3,
        };
        let ids: Vec<_> = (0..VISIT_WINDOW * 3 + 1)
            .map(|i| v.for_request(i).unwrap())
            .collect();
        assert_eq!(ids[0], "t-0");
        assert_eq!(ids[1], "t-1");
        assert_eq!(ids[VISIT_WINDOW], "t-0");
        assert_eq!(ids[2 * VISIT_WINDOW + 5], "t-5");
        assert_eq!(ids[3 * VISIT_WINDOW], format!("t-{VISIT_WINDOW}"));
        // Every tenant of a window gets exactly `visits` requests.
        assert_eq!(ids.iter().filter(|t| *t == "t-7").count(), 3);
        assert_eq!(Tenants::Fixed(None).for_request(5), None);
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.5), 50);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&sorted, 1.0), 100);
        assert_eq!(percentile::<u32>(&[], 0.5), 0);
    }
}
