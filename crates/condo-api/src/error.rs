//! AWS-shaped errors: the status, `X-Amzn-ErrorType`, and a JSON body botocore parses.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use condo_engine::{EngineError, Throttle};
use condo_types::ValidationError;

use crate::sigv4::SigV4Error;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Lambda's shapes disagree on `message` vs `Message`; use the model's.
    capital_message: bool,
    reason: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            capital_message: false,
            reason: None,
        }
    }

    fn capital(mut self) -> Self {
        self.capital_message = true;
        self
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    pub fn invalid_content(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            message,
        )
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message).capital()
    }

    pub fn service(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            message,
        )
        .capital()
    }

    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::validation(e.to_string())
    }
}

impl From<SigV4Error> for ApiError {
    fn from(e: SigV4Error) -> Self {
        let (status, code) = match &e {
            SigV4Error::MissingAuthentication => {
                (StatusCode::FORBIDDEN, "MissingAuthenticationTokenException")
            }
            SigV4Error::IncompleteSignature(_) => {
                (StatusCode::BAD_REQUEST, "IncompleteSignatureException")
            }
            SigV4Error::UnknownAccessKey => (StatusCode::FORBIDDEN, "UnrecognizedClientException"),
            SigV4Error::InvalidCredentialScope(_)
            | SigV4Error::SignatureMismatch
            | SigV4Error::RequestExpired(_)
            | SigV4Error::ContentHashMismatch => {
                (StatusCode::FORBIDDEN, "InvalidSignatureException")
            }
        };
        Self::new(status, code, e.to_string())
    }
}

/// The one mapping from engine errors to AWS errors. No wildcard arm: a new engine error must
/// be given its AWS shape here.
impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::FunctionNotFound(_) => Self::not_found(message),
            EngineError::FunctionExists(_) => {
                Self::new(StatusCode::CONFLICT, "ResourceConflictException", message)
            }
            EngineError::TenantIdRequired(_)
            | EngineError::TenantIdNotAllowed(_)
            | EngineError::TenancyImmutable
            | EngineError::UnsupportedRuntime { .. }
            | EngineError::ReservedVariables(_)
            | EngineError::InvalidParameter(_)
            | EngineError::InvalidCode(_) => Self::invalid_parameter(message),
            EngineError::CodeTooLarge => Self::invalid_parameter(message),
            EngineError::RevisionMismatch => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailedException",
                message,
            ),
            EngineError::Throttled(throttle) => {
                let (reason, message) = match throttle {
                    Throttle::ConcurrentInvocationLimitExceeded => {
                        ("ConcurrentInvocationLimitExceeded", "Rate Exceeded.")
                    }
                    Throttle::ReservedFunctionConcurrentInvocationLimitExceeded => (
                        "ReservedFunctionConcurrentInvocationLimitExceeded",
                        "Rate Exceeded.",
                    ),
                    // Not in AWS's ThrottleReason enum (AWS documents only "Rate exceeded" for
                    // it); botocore passes unknown reasons through as strings.
                    Throttle::TenantEnvironmentLimitExceeded => (
                        "TenantEnvironmentLimitExceeded",
                        "Rate exceeded: every tenant environment this function may keep (2,500 per 1,000 concurrency) is busy.",
                    ),
                    Throttle::HostEnvironmentLimitExceeded => (
                        "HostEnvironmentLimitExceeded",
                        "Rate exceeded: this host runs as many execution environments as it is configured to, and none is idle.",
                    ),
                    Throttle::TenantConcurrencyLimitExceeded => (
                        "TenantConcurrencyLimitExceeded",
                        "Rate exceeded: this tenant has as many invocations in flight as the function's condo:tenant-max-concurrency tag allows.",
                    ),
                };
                let mut err = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsException",
                    message,
                );
                err.reason = Some(reason);
                err
            }
            EngineError::ShuttingDown => Self::service(message),
            EngineError::Internal(detail) => {
                tracing::error!("internal error: {detail}");
                Self::service("An internal error occurred.")
            }
            EngineError::Store(detail) => {
                tracing::error!("storage error: {detail}");
                Self::service("An internal error occurred.")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "Type": if self.status.is_server_error() { "Service" } else { "User" } });
        body[if self.capital_message {
            "Message"
        } else {
            "message"
        }] = self.message.into();
        if let Some(reason) = self.reason {
            body["Reason"] = reason.into();
        }
        let mut resp = (
            self.status,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response();
        resp.headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        if self.reason.is_some() {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        resp
    }
}

pub(crate) async fn unknown_operation(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        format!("condo does not implement {method} {}", uri.path()),
    )
}
