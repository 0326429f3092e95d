//! The data plane: one invocation through the pool, from checkout to release.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use condo_runtime_api::Invocation;
use condo_types::{Arn, FunctionConfig, FunctionName, Qualifier, TenantId, Version};
use tracing::Instrument;

use crate::completion::RunToCompletion;
use crate::environment::{ColdStart, Environment, FunctionError, StartError};
use crate::pool::{Checkout, PoolKey};
use crate::{Engine, EngineError, EngineShared};

#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub function: FunctionName,
    pub qualifier: Option<Qualifier>,
    pub tenant: Option<TenantId>,
    pub payload: Bytes,
    /// The client context as JSON text (already base64-decoded).
    pub client_context: Option<String>,
    /// Collect the last 4 KB of the invocation's log.
    pub log_tail: bool,
}

#[derive(Debug, Clone)]
pub struct InvokeResponse {
    pub request_id: String,
    pub executed_version: Version,
    /// The function's answer, or its error (`X-Amz-Function-Error: Unhandled`).
    pub result: Result<Bytes, FunctionError>,
    pub log_tail: Option<Vec<u8>>,
    /// Set when this invocation started a new environment.
    pub cold_start: Option<ColdStart>,
}

impl Engine {
    /// Resolves the version and checks the tenancy rules, without running anything.
    pub fn resolve(&self, req: &InvokeRequest) -> Result<Arc<FunctionConfig>, EngineError> {
        let config = self.function(&req.function, req.qualifier.as_ref())?;
        match (config.is_per_tenant(), &req.tenant) {
            (true, None) => Err(EngineError::TenantIdRequired(req.function.to_string())),
            (false, Some(_)) => Err(EngineError::TenantIdNotAllowed(req.function.to_string())),
            _ => Ok(config),
        }
    }

    /// Runs one synchronous invocation. It runs to its end even if the caller goes away, so a
    /// client that hangs up does not cut an invocation (or its environment) in half.
    pub async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, EngineError> {
        if self
            .shared
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(EngineError::ShuttingDown);
        }
        let config = self.resolve(&req)?;
        // From the thread's generator: `new_v4` would make a getrandom call per invocation.
        let request_id = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .to_string();
        // Debug level: at the default level a span per invocation costs formatting and bookkeeping
        // on the request path for nothing.
        let span = tracing::debug_span!("invoke", request_id = %request_id, function = %req.function,
            tenant = req.tenant.as_ref().map(|t| t.as_str()).unwrap_or("-"));
        let shared = self.shared.clone();
        RunToCompletion::new(run(shared, config, req, request_id).instrument(span))
            .await
            .ok_or_else(|| EngineError::Internal("invocation polled after it finished".into()))?
    }
}

async fn run(
    shared: Arc<EngineShared>,
    config: Arc<FunctionConfig>,
    req: InvokeRequest,
    request_id: String,
) -> Result<InvokeResponse, EngineError> {
    let key = PoolKey {
        function: config.name.clone(),
        version: config.version,
        revision: config.revision_id.clone(),
        tenant: req.tenant.clone(),
    };
    let checkout = shared
        .pool
        .lock()
        .map_err(|_| EngineError::Internal("pool lock poisoned".into()))?
        .checkout(&key)
        .map_err(EngineError::Throttled)?;
    let mut env = match checkout {
        Checkout::Warm(env) => env,
        Checkout::Cold { evicted } => {
            shared.stop_all(evicted);
            let started = Instant::now();
            match Environment::start(&shared, key.clone(), config.clone()).await {
                Ok(env) => {
                    tracing::debug!(
                        env = env.id(),
                        log_stream = env.log_stream(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "cold start"
                    );
                    env
                }
                Err(failure) => {
                    if let Ok(mut p) = shared.pool.lock() {
                        p.cold_start_failed(&key);
                    }
                    return match failure {
                        StartError::Function(error) => Ok(InvokeResponse {
                            request_id,
                            executed_version: config.version,
                            log_tail: req.log_tail.then(|| error.body.to_vec()),
                            result: Err(error),
                            cold_start: None,
                        }),
                        StartError::Platform(msg) => Err(EngineError::Internal(msg)),
                    };
                }
            }
        }
    };

    let invoked_function_arn = match &req.qualifier {
        Some(q) => Arn::qualified_function(
            &shared.config.region,
            &shared.config.account_id,
            &config.name,
            q,
        ),
        None => Arn::function(
            &shared.config.region,
            &shared.config.account_id,
            &config.name,
        ),
    };
    let invocation = Invocation {
        request_id: request_id.clone(),
        payload: req.payload,
        deadline_ms: 0,
        invoked_function_arn,
        tenant_id: req.tenant.as_ref().map(|t| t.to_string()),
        client_context: req.client_context,
        trace_id: trace_id(),
    };
    let cold_start = env.take_cold_start();
    let busy = shared.cpu_placer.busy(env.placement());
    let finished = env.invoke(invocation, req.log_tail).await;
    drop(busy);
    let healthy = finished.healthy
        && !shared
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed);
    let unhealthy = shared
        .pool
        .lock()
        .map_err(|_| EngineError::Internal("pool lock poisoned".into()))?
        .release(env, healthy, Instant::now());
    shared.stop_all(unhealthy.into_iter().collect());
    // Releasing the runtime's `202` wakes its connection onto this thread's queue without
    // waking another worker; it runs once this task has written the caller's answer.
    drop(finished.runtime_ack);
    Ok(InvokeResponse {
        request_id,
        executed_version: config.version,
        result: finished.result,
        log_tail: finished.tail,
        cold_start,
    })
}

/// An X-Ray style trace header, so SDKs that read `_X_AMZN_TRACE_ID` find one.
fn trace_id() -> String {
    let now = chrono::Utc::now().timestamp() as u32;
    let r: [u8; 12] = rand::random();
    let p: [u8; 8] = rand::random();
    format!(
        "Root=1-{now:08x}-{};Parent={};Sampled=0",
        hex::encode(r),
        hex::encode(p)
    )
}
