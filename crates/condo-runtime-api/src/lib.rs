//! The Lambda Runtime API (2018-06-01) for one execution environment.
//!
//! Each environment gets its own server on its own listener (opened inside the environment's
//! network namespace), so the environment is identified by the connection it arrives on, never
//! by anything the function sends. A request id that is not the one in flight on this very
//! environment is refused.
#![forbid(unsafe_code)]

mod server;

pub use server::{
    Acknowledgement, Answer, Invocation, InvocationOutcome, Phase, RuntimeApi, MAX_RESPONSE_BYTES,
};
