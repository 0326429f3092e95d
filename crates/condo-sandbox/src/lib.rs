//! Linux isolation for one process tree: namespaces, a minimal read-only root, a private `/tmp`.
//!
//! The parent (a multi-threaded async server) never forks and runs Rust in the child. It starts
//! a fresh copy of its own binary with the hidden [`INIT_ARG`] argument; that process calls
//! [`init_main`] before anything else, reads a [`SandboxSpec`] from its standard input (a
//! `SOCK_SEQPACKET` socket), builds the sandbox and execs the program. This crate knows nothing
//! about Lambda, tenants or HTTP, and it is the only crate of condo with `unsafe` code, all of it
//! under `sys/`.

mod init;
mod parent;
mod plan;
mod spec;
mod sys;
mod system;

pub use init::init_main;
pub use parent::{ExitStatus, ExitWatch, Sandbox, SandboxError};
pub use plan::{mount_plan, MountStep};
pub use spec::{BindMount, FileSpec, SandboxSpec, Symlink};
pub use system::host_system_root;

/// The hidden first argument that turns the binary into the sandbox's init step.
pub const INIT_ARG: &str = "__sandbox-init";

/// Exit code of the init step when the sandbox could not be built (nothing ran).
pub const SETUP_FAILED_EXIT: i32 = 125;
