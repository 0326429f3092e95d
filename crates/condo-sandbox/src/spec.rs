//! The typed description of one sandbox, sent from the parent to the init step.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ResourceLimits;

/// Everything the init step needs to build one sandbox and start its program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// An existing, empty host directory on which the new root is mounted (inside the sandbox's
    /// own mount namespace, so the host never sees it used).
    pub new_root: PathBuf,
    /// Host paths made visible inside, read-only unless `writable`.
    pub binds: Vec<BindMount>,
    /// Symbolic links created in the new root (e.g. `/bin -> usr/bin` on merged-/usr hosts).
    pub symlinks: Vec<Symlink>,
    /// Small files written into the new root before it becomes read-only (`/etc/passwd`...).
    pub files: Vec<FileSpec>,
    /// Size of the private, writable `/tmp`.
    pub tmp_size_bytes: u64,
    pub hostname: String,
    /// The unprivileged identity the program runs as inside its user namespace. Outside, it is
    /// a host uid of its own that no other live sandbox has (see [`crate::LauncherConfig`]).
    pub uid: u32,
    pub gid: u32,
    /// Working directory inside the sandbox.
    pub cwd: PathBuf,
    /// Program and arguments; `argv[0]` is the path inside the sandbox.
    pub argv: Vec<String>,
    /// The program's whole environment: nothing is inherited from the host.
    pub env: Vec<(String, String)>,
    /// Memory, CPU, processes and open files.
    pub limits: ResourceLimits,
    /// What the sandbox's network namespace reaches besides its own loopback.
    #[serde(default)]
    pub network: Network,
}

/// A sandbox's network: loopback only, or outbound connections through the launcher's
/// network helper (see `network.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    #[default]
    LoopbackOnly,
    Outbound,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub writable: bool,
}

impl BindMount {
    pub fn read_only(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            target: target.into(),
            writable: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symlink {
    pub link: PathBuf,
    pub target: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    pub path: PathBuf,
    pub contents: String,
}
