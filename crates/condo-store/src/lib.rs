//! condo's persistent state: the SQLite database (functions, versions, concurrency, the async
//! invocation queue, log events, settings) and the content-addressed code store.
//!
//! This is the only crate that speaks SQL. Calls are synchronous and short; callers on an async
//! runtime keep them off hot paths or move long ones to a blocking thread.
#![forbid(unsafe_code)]

pub mod code;
mod db;

pub use code::{CodeError, CodeStore, StoredCode};
pub use db::{AsyncInvocation, LogEvent, LogStreamInfo, Store, StoreError};
