//! One execution environment: a sandbox running a runtime, its Runtime API, and its log
//! capture. Bound at construction to one [`PoolKey`] (function, version, tenant) for life.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use condo_runtime_api::{
    Acknowledgement, Answer, Invocation, InvocationOutcome, Phase, RuntimeApi,
};
use condo_sandbox::{ExitStatus, ExitWatch, Sandbox, SandboxError};
use condo_types::{FunctionConfig, Limits, LogFormat};

use crate::fairness::ShareGuard;
use crate::logs::{finish_tail, Capture};
use crate::placement::Placement;
use crate::pool::{PoolKey, Pooled};
use crate::runtimes::{resource_limits, sandbox_spec, EnvironmentIdentity};
use crate::EngineShared;

/// A function error as Lambda reports it: `X-Amz-Function-Error: Unhandled` and this body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    pub error_type: String,
    pub body: Bytes,
}

impl FunctionError {
    pub fn new(error_type: &str, message: &str) -> Self {
        let body =
            serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string();
        Self {
            error_type: error_type.to_owned(),
            body: Bytes::from(body),
        }
    }
}

/// How one invocation ended, from the environment's point of view.
#[derive(Debug)]
pub struct Finished {
    pub result: Result<Bytes, FunctionError>,
    /// False when the environment must not be reused (timed out, crashed).
    pub healthy: bool,
    pub tail: Option<Vec<u8>>,
    /// Holds back the runtime's `202` until the caller has its answer (see
    /// [`condo_runtime_api::Answer::ack`]): drop it once the result is handed on.
    pub runtime_ack: Option<Acknowledgement>,
}

pub struct Environment {
    id: String,
    key: PoolKey,
    config: Arc<FunctionConfig>,
    log_stream: String,
    // Field order matters on drop: stop serving and capturing, then kill the sandbox.
    api: RuntimeApi,
    capture: Capture,
    exit: ExitWatch,
    /// Its place in its tenant's CPU share (tenant isolation mode only).
    _cpu_share: Option<ShareGuard>,
    placement: Placement,
    sandbox: Sandbox,
    init_duration: Option<Duration>,
    cold_start: Option<ColdStart>,
    invocations: u64,
}

/// Where the time of a cold start went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdStart {
    /// From asking for an environment to its program running in a ready sandbox.
    pub sandbox: Duration,
    /// From the program's start to its first request for work: runtime start and init code.
    pub init: Duration,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("id", &self.id)
            .field("key", &self.key)
            .finish()
    }
}

impl Pooled for Environment {
    fn key(&self) -> &PoolKey {
        &self.key
    }
}

/// Why an environment could not be started. Each becomes a function error of the invocation
/// that asked for it, except [`StartError::Platform`], which is the platform's fault.
#[derive(Debug)]
pub enum StartError {
    Function(FunctionError),
    Platform(String),
}

impl Environment {
    /// Where its threads run (see [`crate::placement`]).
    pub(crate) fn placement(&self) -> &Placement {
        &self.placement
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn log_stream(&self) -> &str {
        &self.log_stream
    }

    /// The cold start's breakdown, until the first invocation has been served.
    pub fn take_cold_start(&mut self) -> Option<ColdStart> {
        self.cold_start.take()
    }

    /// Why the runtime's processes died: the memory limit, or something else.
    fn exit_error_type(&self) -> &'static str {
        if self.sandbox.oom_killed() {
            "Runtime.OutOfMemory"
        } else {
            "Runtime.ExitError"
        }
    }

    /// Starts a new environment for `key` and waits until its runtime is initialised.
    pub async fn start(
        shared: &EngineShared,
        key: PoolKey,
        config: Arc<FunctionConfig>,
    ) -> Result<Self, StartError> {
        let started = Instant::now();
        let id = hex::encode(rand::random::<[u8; 16]>());
        let log_stream = format!(
            "{}/[{}]{}",
            chrono::Utc::now().format("%Y/%m/%d"),
            config.version,
            id
        );
        let code = shared.code.get(&config.code_id).ok_or_else(|| {
            StartError::Platform(format!(
                "code {} is missing from the code store",
                config.code_id
            ))
        })?;
        let identity = EnvironmentIdentity {
            id: &id,
            log_stream: &log_stream,
        };
        let spec = sandbox_spec(
            &shared.sandbox_base,
            &shared.runtimes,
            &config,
            &code.dir,
            &identity,
        )
        .ok_or_else(|| {
            StartError::Platform(format!(
                "runtime {} is not available on this host",
                config.runtime
            ))
        })?;

        let mut sandbox = match shared.spawner.spawn(spec).await {
            Ok(s) => s,
            Err(SandboxError::Setup(msg)) if msg.starts_with("exec ") => {
                return Err(StartError::Function(FunctionError::new(
                    "Runtime.InvalidEntrypoint",
                    &format!(
                        "RequestId: - Error: Couldn't find valid bootstrap(s): {}",
                        msg.trim_start_matches("exec ")
                    ),
                )))
            }
            Err(e) => return Err(StartError::Platform(e.to_string())),
        };
        let sandbox_ready = started.elapsed();
        let cpu_share = key.tenant.clone().map(|tenant| {
            let base = resource_limits(config.memory.get()).cpu_weight;
            shared
                .tenant_shares
                .join(config.name.clone(), tenant, sandbox.cpu_weight(), base)
        });

        let platform = |e: std::io::Error| StartError::Platform(e.to_string());
        let listener = sandbox
            .take_listener()
            .ok_or_else(|| StartError::Platform("no Runtime API listener".into()))?;
        listener.set_nonblocking(true).map_err(platform)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(platform)?;
        let mut api = RuntimeApi::serve(listener);
        let output = sandbox
            .take_output()
            .ok_or_else(|| StartError::Platform("no output pipe".into()))?;
        let tenant = key.tenant.as_ref().map(|t| t.to_string());
        let capture = Capture::start(
            output,
            config.log_group(),
            log_stream.clone(),
            tenant.clone(),
            shared.logs.clone(),
        )
        .map_err(platform)?;
        let exit = sandbox.exit_watch().map_err(platform)?;
        shared.record_log_stream(&config, &log_stream, &id, tenant);

        let phase = tokio::select! {
            phase = api.initialized() => phase,
            _ = exit.exited() => Phase::Initializing,
            _ = tokio::time::sleep(Duration::from_secs(Limits::INIT_TIMEOUT_SECS)) => {
                capture.sync();
                return Err(StartError::Function(FunctionError::new(
                    "Sandbox.Timedout",
                    &format!("INIT_REPORT Init Duration: {} ms Phase: init Status: timeout", Limits::INIT_TIMEOUT_SECS * 1000),
                )));
            }
        };
        let mut env = Self {
            id,
            key,
            config,
            log_stream,
            api,
            capture,
            exit,
            _cpu_share: cpu_share,
            placement: shared.cpu_placer.place(sandbox.cpu_affinity()),
            sandbox,
            init_duration: None,
            cold_start: None,
            invocations: 0,
        };
        match phase {
            Phase::Ready => {
                let total = started.elapsed();
                env.init_duration = Some(total);
                env.cold_start = Some(ColdStart {
                    sandbox: sandbox_ready,
                    init: total.saturating_sub(sandbox_ready),
                });
                Ok(env)
            }
            Phase::InitError { body, error_type } => {
                env.capture.sync();
                let error_type = error_type
                    .or_else(|| error_type_of(&body))
                    .unwrap_or_else(|| "Runtime.Unknown".into());
                Err(StartError::Function(FunctionError { error_type, body }))
            }
            Phase::Initializing => {
                env.capture.sync();
                let status = env.sandbox.try_wait().ok().flatten();
                Err(StartError::Function(FunctionError::new(
                    env.exit_error_type(),
                    &format!(
                        "RequestId: - Error: Runtime exited {}",
                        describe_exit(status)
                    ),
                )))
            }
        }
    }

    /// Runs one invocation to its end: response, function error, timeout or crash.
    pub async fn invoke(&mut self, mut invocation: Invocation, tail: bool) -> Finished {
        let request_id = invocation.request_id.clone();
        let timeout = Duration::from_secs(u64::from(self.config.timeout.get()));
        let started = Instant::now();
        invocation.deadline_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
            + timeout.as_millis() as u64;
        self.capture.begin(&request_id, tail);
        self.log_start(&invocation);

        let mut runtime_ack = None;
        let (result, healthy) = match self.api.deliver(invocation) {
            None => (
                Err(FunctionError::new(
                    "Runtime.ExitError",
                    "the runtime is not accepting invocations",
                )),
                false,
            ),
            Some(reply) => tokio::select! {
                answer = reply => match answer {
                    Ok(Answer { outcome, ack }) => {
                        runtime_ack = Some(ack);
                        match outcome {
                            InvocationOutcome::Response(body) => (Ok(body), true),
                            InvocationOutcome::Error { body, error_type } => {
                                let error_type = error_type.or_else(|| error_type_of(&body)).unwrap_or_else(|| "Unhandled".into());
                                (Err(FunctionError { error_type, body }), true)
                            }
                            InvocationOutcome::ResponseTooLarge => (Err(FunctionError::new(
                                "Function.ResponseSizeTooLarge",
                                &format!("Response payload size exceeded maximum allowed payload size ({} bytes).", Limits::SYNC_PAYLOAD_BYTES),
                            )), true),
                        }
                    }
                    Err(_) => (Err(FunctionError::new(self.exit_error_type(), "the runtime went away")), false),
                },
                _ = self.exit.exited() => {
                    let status = self.sandbox.try_wait().ok().flatten();
                    (Err(FunctionError::new(
                        self.exit_error_type(),
                        &format!("RequestId: {request_id} Error: Runtime exited {}", describe_exit(status)),
                    )), false)
                }
                _ = tokio::time::sleep(timeout) => {
                    (Err(FunctionError::new(
                        "Sandbox.Timedout",
                        &format!("RequestId: {request_id} Error: Task timed out after {:.2} seconds", timeout.as_secs_f64()),
                    )), false)
                }
            },
        };
        let duration = started.elapsed();
        if !healthy {
            // Stop it now so that a runaway cannot keep working after its invocation ended.
            self.sandbox.kill();
        }
        self.capture.sync();
        if let Err(e) = &result {
            if !healthy {
                self.capture
                    .platform_line(&String::from_utf8_lossy(&e.body));
            }
        }
        self.log_end(&request_id, duration, &result);
        self.invocations += 1;
        let tail = self.capture.end().map(finish_tail);
        Finished {
            result,
            healthy,
            tail,
            runtime_ack,
        }
    }

    fn json_logs(&self) -> bool {
        self.config.logging.log_format == LogFormat::Json
    }

    fn log_start(&self, inv: &Invocation) {
        if self.json_logs() {
            let mut record = serde_json::json!({ "requestId": inv.request_id, "version": self.config.version.to_string() });
            if let Some(t) = &inv.tenant_id {
                record["tenantId"] = t.clone().into();
            }
            self.platform_event("platform.start", record);
        } else {
            self.capture.platform_line(&format!(
                "START RequestId: {} Version: {}",
                inv.request_id, self.config.version
            ));
        }
    }

    fn log_end(&self, request_id: &str, duration: Duration, result: &Result<Bytes, FunctionError>) {
        let duration_ms = duration.as_secs_f64() * 1000.0;
        let billed = duration_ms.ceil().max(1.0) as u64;
        let memory = self.config.memory.get();
        let used = self.max_memory_used_mb();
        let init = if self.invocations == 0 {
            self.init_duration
        } else {
            None
        };
        if self.json_logs() {
            let status = match result {
                Ok(_) => "success",
                Err(e) if e.error_type == "Sandbox.Timedout" => "timeout",
                Err(_) => "error",
            };
            let tenant = self.key.tenant.as_ref().map(|t| t.to_string());
            let mut metrics = serde_json::json!({
                "durationMs": round2(duration_ms), "billedDurationMs": billed,
                "memorySizeMB": memory, "maxMemoryUsedMB": used,
            });
            if let Some(init) = init {
                metrics["initDurationMs"] = round2(init.as_secs_f64() * 1000.0).into();
            }
            let mut done = serde_json::json!({ "requestId": request_id, "status": status, "metrics": { "durationMs": round2(duration_ms) } });
            let mut report = serde_json::json!({ "requestId": request_id, "status": status, "metrics": metrics });
            if let Some(t) = tenant {
                done["tenantId"] = t.clone().into();
                report["tenantId"] = t.into();
            }
            self.platform_event("platform.runtimeDone", done);
            self.platform_event("platform.report", report);
        } else {
            self.capture
                .platform_line(&format!("END RequestId: {request_id}"));
            let mut line = format!(
                "REPORT RequestId: {request_id}\tDuration: {duration_ms:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {memory} MB\tMax Memory Used: {used} MB\t"
            );
            if let Some(init) = init {
                line.push_str(&format!(
                    "Init Duration: {:.2} ms\t",
                    init.as_secs_f64() * 1000.0
                ));
            }
            match result {
                Err(e) if e.error_type == "Sandbox.Timedout" => line.push_str("Status: timeout\t"),
                Err(e) if e.error_type.starts_with("Runtime.") => {
                    line.push_str(&format!("Status: error\tError Type: {}\t", e.error_type))
                }
                _ => {}
            }
            self.capture.platform_line(&line);
        }
    }

    fn platform_event(&self, kind: &str, record: serde_json::Value) {
        let event = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "type": kind,
            "record": record,
        });
        self.capture.platform_line(&event.to_string());
    }

    /// Peak memory of the environment in MB: its cgroup's figure (processes, page cache and
    /// `/tmp`), or the runtime process's peak where the cgroup cannot tell.
    fn max_memory_used_mb(&self) -> u64 {
        if let Some(bytes) = self.sandbox.memory_peak_bytes() {
            return bytes.div_ceil(1 << 20);
        }
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.sandbox.program_pid()))
                .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb.div_ceil(1024))
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn error_type_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("errorType")?
        .as_str()
        .map(|s| s.chars().take(256).collect())
}

fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(ExitStatus::Exited(0)) => "without providing a reason".into(),
        Some(ExitStatus::Exited(code)) => format!("with error: exit status {code}"),
        Some(ExitStatus::Signaled(9)) => "with error: signal: killed".into(),
        Some(ExitStatus::Signaled(sig)) => format!("with error: signal: {sig}"),
        None => "with error: unknown".into(),
    }
}
