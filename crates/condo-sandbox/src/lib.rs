//! Linux isolation for one process tree: user, mount, PID, network, IPC, UTS and cgroup
//! namespaces; a minimal read-only root and a private `/tmp`; a cgroup with memory, CPU and
//! process limits; a seccomp filter; a host uid of its own.
//!
//! The parent (a multi-threaded async server) never forks and runs Rust in the child. A
//! [`Launcher`] starts a fresh copy of its own binary with the hidden [`INIT_ARG`] argument; that
//! process calls [`init_main`] before anything else and talks with the parent over its standard
//! input (a `SOCK_SEQPACKET` socket): ahead of demand it makes the namespaces and the part of the
//! root every sandbox shares, pivots into it and lets go of the host's tree ([`Prepared`]);
//! then it receives a [`SandboxSpec`] with the function's own mounts, finishes the root, and
//! execs the program ([`Sandbox`]). This crate knows nothing
//! about Lambda, tenants or HTTP, and it is the only crate of condo with `unsafe` code, all of it
//! under `sys/`.

mod cgroup;
mod init;
mod network;
mod parent;
mod plan;
mod seccomp;
mod spec;
mod sys;
mod system;

pub use cgroup::{allowed_cpus, CgroupLayout, CpuAffinity, CpuWeight, ResourceLimits};
pub use init::init_main;
pub use network::DNS_FORWARD_ADDR;
pub use parent::{
    ExitStatus, ExitWatch, Launcher, LauncherConfig, Prepared, Sandbox, SandboxError,
};
pub use plan::{base_plan, start_plan, MountStep};
pub use seccomp::refused_calls;
pub use spec::{BaseRoot, BindMount, FileSpec, Network, SandboxSpec, Symlink};
pub use system::host_system_root;

/// The hidden first argument that turns the binary into the sandbox's init step.
pub const INIT_ARG: &str = "__sandbox-init";

/// Exit code of the init step when the sandbox could not be built (nothing ran).
pub const SETUP_FAILED_EXIT: i32 = 125;
