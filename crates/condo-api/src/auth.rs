//! SigV4 on every request: the body is read (bounded), the signature checked, and only then
//! does a handler run. Every response carries a request id.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};

use crate::error::ApiError;
use crate::sigv4::{self, RequestParts};
use crate::{AppState, MAX_REQUEST_BYTES};

/// The access key pair clients must sign with.
#[derive(Clone)]
pub struct ApiCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn authenticate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = match check(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    if !resp.headers().contains_key("x-amzn-requestid") {
        // From the thread's generator: `new_v4` would make a getrandom call per response, and
        // a flood of refused requests is where responses are cheapest otherwise.
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
            resp.headers_mut().insert("x-amzn-requestid", v);
        }
    }
    resp
}

async fn check(state: &AppState, req: Request) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    // Refuse an oversized invoke before reading it.
    let declared = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES) {
        return Err(ApiError::too_large(format!(
            "Request must be smaller than {MAX_REQUEST_BYTES} bytes"
        )));
    }
    let bytes = Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|_| {
            ApiError::too_large(format!(
                "Request must be smaller than {MAX_REQUEST_BYTES} bytes"
            ))
        })?
        .to_bytes();
    let creds = &state.credentials;
    let parts_for_sig = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body: &bytes,
    };
    let lookup = |key: &str| (key == creds.access_key_id).then(|| creds.secret_access_key.clone());
    sigv4::verify(&parts_for_sig, lookup, chrono::Utc::now(), &["lambda"])?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}
