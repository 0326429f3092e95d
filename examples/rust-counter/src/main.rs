//! Counter demo for condo's tenant isolation mode.
//!
//! Every invocation bumps two counters and reports them with the tenant id it was invoked for:
//! - `memory`: a process-wide counter, which lives as long as the execution environment;
//! - `disk`: a counter kept in `/tmp/count`, which lives as long as the environment's `/tmp`.
//!
//! With `TenancyConfig: PER_TENANT`, each tenant gets its own environments, so each tenant's
//! counters start at 1 and never see another tenant's invocations.

use std::sync::atomic::{AtomicU64, Ordering};

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

const COUNT_FILE: &str = "/tmp/count";

static MEMORY_COUNT: AtomicU64 = AtomicU64::new(0);

/// Reads the counter in `path` (missing or unreadable counts as 0), adds one and writes it back.
fn bump_disk_counter(path: &str) -> std::io::Result<u64> {
    let current = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let next = current + 1;
    std::fs::write(path, next.to_string())?;
    Ok(next)
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let memory = MEMORY_COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let disk = bump_disk_counter(COUNT_FILE)?;
    Ok(json!({
        "tenant": event.context.tenant_id,
        "memory": memory,
        "disk": disk,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
