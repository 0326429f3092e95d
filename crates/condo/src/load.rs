//! `condo load`: invoke one function under load and print latency percentiles and throughput.

use std::time::Duration;

use crate::loadgen::{self, percentile, LoadSpec, Tenants};

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
    let tenants = if args.cold {
        Tenants::EachNew {
            prefix: format!("load-{}", rand::random::<u32>()),
        }
    } else {
        Tenants::Fixed(args.tenant_id.clone())
    };
    let spec = LoadSpec {
        endpoint: args.conn.endpoint.clone(),
        credentials: crate::client::credentials(&args.conn)?,
        region: args.conn.region.clone(),
        function: args.name.clone(),
        tenants,
        concurrency: args.concurrency.max(1),
        requests: args.requests,
        warm_up: !args.cold,
        payload_bytes: args.payload_bytes,
        pause: Duration::from_millis(args.pause_ms),
        interval: Duration::ZERO,
        stop: None,
    };
    let r = rt.block_on(loadgen::run(spec, None))?;
    if let Some(e) = &r.first_error {
        anyhow::bail!("{} of the requests failed; the first: {e}", r.errors);
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "requests={} concurrency={} p50={:.0}us p90={:.0}us p99={:.0}us max={:.0}us throughput={:.0}/s throttled={}",
        r.latencies.len(),
        args.concurrency,
        us(percentile(&r.latencies, 0.50)),
        us(percentile(&r.latencies, 0.90)),
        us(percentile(&r.latencies, 0.99)),
        us(percentile(&r.latencies, 1.0)),
        r.throughput(),
        r.throttled,
    );
    if !r.cold_phases.is_empty() {
        let ms = |i: usize| {
            let mut v: Vec<Duration> = r.cold_phases.iter().map(|p| p[i]).collect();
            v.sort();
            percentile(&v, 0.5).as_secs_f64() * 1e3
        };
        println!(
            "cold starts={} median: sandbox={:.2}ms init={:.2}ms invoke+api={:.2}ms",
            r.cold_phases.len(),
            ms(0),
            ms(1),
            ms(2)
        );
    }
    Ok(())
}
