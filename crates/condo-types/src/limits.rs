//! Service quotas, as AWS documents them, in one place.

/// The limits condo enforces at its edge. Values follow the Lambda quotas.
#[derive(Debug, Clone, Copy)]
pub struct Limits;

impl Limits {
    /// Synchronous invoke request and response payloads: 6 MB.
    pub const SYNC_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
    /// Asynchronous (`Event`) invoke payloads: 1 MB.
    pub const ASYNC_PAYLOAD_BYTES: usize = 1024 * 1024;
    /// A ZIP uploaded directly in CreateFunction/UpdateFunctionCode: 50 MB.
    pub const ZIP_BYTES: usize = 50 * 1024 * 1024;
    /// Unzipped code size: 250 MB.
    pub const UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;
    /// Files in one code package; bounds the work a hostile archive can ask for.
    pub const ZIP_ENTRIES: usize = 20_000;
    /// Total size of environment variable names and values: 4 KB.
    pub const ENVIRONMENT_BYTES: usize = 4 * 1024;
    /// `X-Amz-Log-Result` carries the last 4 KB of the invocation's log.
    pub const LOG_TAIL_BYTES: usize = 4 * 1024;
    /// `X-Amz-Client-Context`: up to 3,583 bytes of base64.
    pub const CLIENT_CONTEXT_BYTES: usize = 3583;
    /// A function may take this long to initialise before the environment is abandoned.
    pub const INIT_TIMEOUT_SECS: u64 = 10;
}
