//! `Invoke`: request headers and payload checks, the tenancy rules, and the response headers.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use condo_engine::InvokeRequest;
use condo_types::{Limits, TenantId};

use crate::error::ApiError;
use crate::functions::{function_ref, QualifierQuery};
use crate::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::validation(format!("Header {name} must be ASCII text"))),
    }
}

fn enum_error(value: &str, member: &str, allowed: &str) -> ApiError {
    ApiError::validation(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: Member must satisfy enum value set: [{allowed}]"
    ))
}

pub(crate) async fn invoke(
    State(state): State<AppState>,
    Path(function): Path<String>,
    Query(q): Query<QualifierQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (name, qualifier) = function_ref(&state, &function, q.qualifier.as_deref())?;
    let invocation_type = match header(&headers, "x-amz-invocation-type")? {
        None | Some("RequestResponse") => InvocationType::RequestResponse,
        Some("Event") => InvocationType::Event,
        Some("DryRun") => InvocationType::DryRun,
        Some(other) => {
            return Err(enum_error(
                other,
                "invocationType",
                "Event, RequestResponse, DryRun",
            ))
        }
    };
    let log_tail = match header(&headers, "x-amz-log-type")? {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => return Err(enum_error(other, "logType", "None, Tail")),
    };
    // The AWS clients check only the minimum length of a tenant id; this is the real check.
    let tenant = header(&headers, "x-amz-tenant-id")?
        .map(TenantId::parse)
        .transpose()?;
    let client_context = match header(&headers, "x-amz-client-context")? {
        None => None,
        Some(c) if c.len() > Limits::CLIENT_CONTEXT_BYTES => {
            return Err(ApiError::validation(
                "1 validation error detected: Value at 'clientContext' failed to satisfy constraint: Member must have length less than or equal to 3583",
            ))
        }
        Some(c) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(c.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok())
                .ok_or_else(|| ApiError::invalid_parameter("Client context must be a valid Base64-encoded JSON object."))?;
            Some(decoded)
        }
    };

    let limit = match invocation_type {
        InvocationType::Event => Limits::ASYNC_PAYLOAD_BYTES,
        _ => Limits::SYNC_PAYLOAD_BYTES,
    };
    if body.len() > limit {
        return Err(ApiError::too_large(format!(
            "{} byte payload is too large for the {} invocation type (limit {limit} bytes)",
            body.len(),
            if invocation_type == InvocationType::Event {
                "Event"
            } else {
                "RequestResponse"
            },
        )));
    }
    let payload = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    if serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
        return Err(ApiError::invalid_content(
            "Could not parse request body into json: the payload is not valid JSON.",
        ));
    }

    let req = InvokeRequest {
        function: name,
        qualifier,
        tenant,
        payload,
        client_context,
        log_tail,
    };
    match invocation_type {
        InvocationType::DryRun => {
            let config = state.engine.resolve(&req)?;
            let mut resp = StatusCode::NO_CONTENT.into_response();
            set(
                &mut resp,
                "x-amz-executed-version",
                &config.version.to_string(),
            );
            Ok(resp)
        }
        InvocationType::Event => {
            let request_id = state.engine.enqueue(req)?;
            let mut resp = StatusCode::ACCEPTED.into_response();
            set(&mut resp, "x-amzn-requestid", &request_id);
            Ok(resp)
        }
        InvocationType::RequestResponse => {
            let out = state.engine.invoke(req).await?;
            let (payload, failed) = match out.result {
                Ok(body) => (body, false),
                Err(e) => (e.body, true),
            };
            let mut resp = (
                StatusCode::OK,
                [("content-type", "application/json")],
                payload,
            )
                .into_response();
            set(&mut resp, "x-amzn-requestid", &out.request_id);
            set(
                &mut resp,
                "x-amz-executed-version",
                &out.executed_version.to_string(),
            );
            if failed {
                set(&mut resp, "x-amz-function-error", "Unhandled");
            }
            if let Some(tail) = out.log_tail {
                set(
                    &mut resp,
                    "x-amz-log-result",
                    &base64::engine::general_purpose::STANDARD.encode(tail),
                );
            }
            if let Some(cold) = out.cold_start {
                // condo's own header: where a cold start's time went, for benchmarks.
                set(
                    &mut resp,
                    COLD_START_HEADER,
                    &format!(
                        "sandbox={:.3}ms; init={:.3}ms",
                        cold.sandbox.as_secs_f64() * 1000.0,
                        cold.init.as_secs_f64() * 1000.0
                    ),
                );
            }
            Ok(resp)
        }
    }
}

/// Set on an invoke that started a new environment: `sandbox=<ms>ms; init=<ms>ms`.
pub const COLD_START_HEADER: &str = "x-condo-cold-start";

fn set(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}
