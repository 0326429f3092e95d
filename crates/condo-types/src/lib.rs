//! Domain types of condo: names, tenant ids, runtimes, function configuration and limits.
//!
//! Every type here can only be built valid ("parse, don't validate"), so the engine never sees a
//! malformed value. This crate does no I/O.
#![forbid(unsafe_code)]

mod config;
mod limits;
mod names;
mod runtime;
mod tags;
mod tenant;

pub use config::{
    Architecture, EnvironmentVariables, FunctionConfig, LogFormat, LoggingConfig, MemorySize,
    Timeout, TmpSize,
};
pub use limits::Limits;
pub use names::{Arn, FunctionName, FunctionRef, Qualifier, Version};
pub use runtime::{Runtime, RuntimeFamily};
pub use tags::{NetworkAccess, TagSettings, Tags, MAX_TENANT_CONCURRENCY, TENANT_CONCURRENCY_TAG};
pub use tenant::{TenancyConfig, TenantId, TenantIsolationMode};

/// A value that failed validation: which member, and the constraint it broke.
///
/// The message follows AWS's validation wording so that clients show something familiar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}")]
pub struct ValidationError {
    pub member: &'static str,
    pub value: String,
    pub constraint: String,
}

impl ValidationError {
    pub fn new(
        member: &'static str,
        value: impl Into<String>,
        constraint: impl Into<String>,
    ) -> Self {
        let mut value = value.into();
        // A hostile client may send megabytes; echo only a prefix.
        if value.len() > 300 {
            let mut cut = 300;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            value.push_str("...");
        }
        Self {
            member,
            value,
            constraint: constraint.into(),
        }
    }
}
