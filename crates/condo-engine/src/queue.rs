//! Asynchronous (`Event`) invocations: queued durably, run in the background, retried twice on
//! function errors as Lambda does, and retried with backoff when throttled.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use condo_store::AsyncInvocation;
use condo_types::{FunctionName, Qualifier, TenantId};
use tokio::sync::Semaphore;

use crate::invoke::InvokeRequest;
use crate::{Engine, EngineError, EngineShared};

/// An invocation being run is leased for this long; after a crash it becomes due again.
const LEASE: Duration = Duration::from_secs(16 * 60);
/// At most this many queued invocations run at once.
const PARALLEL: usize = 16;

impl Engine {
    /// Queues an `Event` invocation after checking everything a synchronous one would (the
    /// function exists, the tenancy rules hold). Returns its request id.
    pub fn enqueue(&self, req: InvokeRequest) -> Result<String, EngineError> {
        if self
            .shared
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(EngineError::ShuttingDown);
        }
        self.resolve(&req)?;
        let id = uuid::Uuid::new_v4().to_string();
        let now = chrono::Utc::now().timestamp_millis();
        self.shared.store.enqueue_async(
            &AsyncInvocation {
                id: id.clone(),
                function: req.function.to_string(),
                qualifier: req.qualifier.map(|q| q.to_string()),
                tenant: req.tenant.map(|t| t.to_string()),
                payload: req.payload.to_vec(),
                attempts: 0,
                next_attempt_ms: now,
            },
            now,
        )?;
        self.shared.queue_wake.notify_one();
        Ok(id)
    }
}

pub(crate) async fn worker(shared: Weak<EngineShared>) {
    let slots = Arc::new(Semaphore::new(PARALLEL));
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let now = chrono::Utc::now().timestamp_millis();
        let free = slots.available_permits();
        let due = if free > 0
            && !strong
                .shutting_down
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            strong.store.due_async(now, free).unwrap_or_default()
        } else {
            Vec::new()
        };
        for item in due {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let leased_until = now + LEASE.as_millis() as i64;
            if strong
                .store
                .reschedule_async(&item.id, item.attempts, leased_until)
                .is_err()
            {
                continue;
            }
            let engine = Engine {
                shared: strong.clone(),
            };
            tokio::spawn(async move {
                process(&engine, item).await;
                drop(permit);
                engine.shared.queue_wake.notify_one();
            });
        }
        let next_due = strong.store.next_async_due().ok().flatten();
        let wait = next_due
            .map(|t| {
                Duration::from_millis(
                    (t - chrono::Utc::now().timestamp_millis()).clamp(0, 1000) as u64
                )
            })
            .unwrap_or(Duration::from_secs(1));
        let wake = strong.clone();
        drop(strong);
        tokio::select! {
            _ = wake.queue_wake.notified() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
        }
    }
}

async fn process(engine: &Engine, item: AsyncInvocation) {
    let store = &engine.shared.store;
    let Some(req) = request_of(&item) else {
        tracing::warn!(
            id = item.id,
            "dropping a queued invocation that no longer parses"
        );
        let _ = store.finish_async(&item.id);
        return;
    };
    let now = chrono::Utc::now().timestamp_millis();
    match engine.invoke(req).await {
        Ok(resp) => match resp.result {
            Ok(_) => {
                let _ = store.finish_async(&item.id);
            }
            Err(error) => {
                let attempts = item.attempts + 1;
                let delays = engine.shared.config.async_retry_delays;
                match delays.get(attempts as usize - 1) {
                    Some(delay) => {
                        tracing::info!(
                            id = item.id,
                            attempts,
                            error = error.error_type,
                            "async invocation failed; will retry"
                        );
                        let _ = store.reschedule_async(
                            &item.id,
                            attempts,
                            now + delay.as_millis() as i64,
                        );
                    }
                    None => {
                        tracing::warn!(
                            id = item.id,
                            error = error.error_type,
                            "async invocation failed after all retries; discarded"
                        );
                        let _ = store.finish_async(&item.id);
                    }
                }
            }
        },
        Err(
            EngineError::FunctionNotFound(_)
            | EngineError::TenantIdRequired(_)
            | EngineError::TenantIdNotAllowed(_),
        ) => {
            let _ = store.finish_async(&item.id);
        }
        Err(e) => {
            // Throttled or a platform fault: try again later without spending a retry.
            tracing::info!(id = item.id, "async invocation deferred: {e}");
            let _ = store.reschedule_async(&item.id, item.attempts, now + 1000);
        }
    }
}

fn request_of(item: &AsyncInvocation) -> Option<InvokeRequest> {
    Some(InvokeRequest {
        function: FunctionName::parse(&item.function).ok()?,
        qualifier: item
            .qualifier
            .as_deref()
            .map(Qualifier::parse)
            .transpose()
            .ok()?,
        tenant: item
            .tenant
            .as_deref()
            .map(TenantId::parse)
            .transpose()
            .ok()?,
        payload: Bytes::from(item.payload.clone()),
        client_context: None,
        log_tail: false,
    })
}
