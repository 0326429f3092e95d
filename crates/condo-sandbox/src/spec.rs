//! The typed description of one sandbox, sent from the parent to the init step.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ResourceLimits;

/// What every sandbox of a launcher has, whatever it will run: built while the sandbox is
/// prepared, ahead of demand, so none of it (and above all not the `pivot_root` and the
/// detaching of the host's mounts) is on a cold start's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRoot {
    /// An existing, empty host directory on which the new root is mounted (inside the sandbox's
    /// own mount namespace, so the host never sees it used).
    pub new_root: PathBuf,
    /// Host paths every sandbox sees (system libraries, interpreters), read-only unless
    /// `writable`.
    pub binds: Vec<BindMount>,
    /// Symbolic links of the base (e.g. `/bin -> usr/bin` on merged-/usr hosts).
    pub symlinks: Vec<Symlink>,
}

/// Everything the init step needs to finish one prepared sandbox and start its program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Host paths made visible inside on top of the base (the function's code, its runtime,
    /// its layers), read-only unless `writable`. The platform opens each one and hands the
    /// sandbox a detached copy of the mount, since the sandbox no longer sees the host's tree.
    pub binds: Vec<BindMount>,
    /// Symbolic links created in the new root, on top of the base's.
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
