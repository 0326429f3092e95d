//! Turns a [`BaseRoot`] and a [`SandboxSpec`] into the ordered mount operations that build a
//! sandbox's root: the base while the sandbox is prepared (ending with `pivot_root`), the
//! function's own part when it starts.
//!
//! Pure, so the shape of every sandbox is unit-tested without privileges; `init` executes it.

use std::path::{Component, Path, PathBuf};

use crate::{BaseRoot, SandboxSpec};

/// Device nodes a program may need; everything else under `/dev` is absent.
pub const DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// One step of building the root. Base steps run before `pivot_root`, so their paths are
/// absolute host paths under the new root; start steps run after it, with paths inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountStep {
    /// Stop mount events from propagating back to the host.
    MakeRootPrivate,
    Tmpfs {
        target: PathBuf,
        options: String,
    },
    /// Bind `source` onto `target` (creating a directory or an empty file to mount on), then
    /// remount it with `nosuid,nodev` and read-only unless `writable`.
    Bind {
        source: PathBuf,
        target: PathBuf,
        writable: bool,
        device: bool,
    },
    /// Attach the `index`-th mount the platform passed (a detached copy of a host path, its
    /// flags already set) onto `target`, creating a directory or an empty file to mount on.
    Attach {
        index: usize,
        target: PathBuf,
    },
    Symlink {
        link: PathBuf,
        target: PathBuf,
    },
    WriteFile {
        path: PathBuf,
        contents: String,
    },
    Proc {
        target: PathBuf,
    },
    /// `pivot_root` into `new_root` and detach the old root entirely.
    PivotRoot {
        new_root: PathBuf,
    },
    RemountRootReadOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sandbox path {0:?} must be absolute and must not contain '..'")]
pub struct BadPath(pub PathBuf);

/// What a prepared sandbox builds: a private tmpfs root with the base's mounts, `/dev`, `/proc`,
/// then `pivot_root` into it, after which nothing of the host's tree is reachable.
pub fn base_plan(base: &BaseRoot) -> Result<Vec<MountStep>, BadPath> {
    let root = &base.new_root;
    let inside = |p: &Path| -> Result<PathBuf, BadPath> { join_inside(root, p) };
    let mut steps = vec![
        MountStep::MakeRootPrivate,
        MountStep::Tmpfs {
            target: root.clone(),
            options: "size=4m,mode=0755".into(),
        },
    ];
    for bind in &base.binds {
        steps.push(MountStep::Bind {
            source: bind.source.clone(),
            target: inside(&bind.target)?,
            writable: bind.writable,
            device: false,
        });
    }
    steps.push(MountStep::Tmpfs {
        target: inside(Path::new("/dev"))?,
        options: "size=64k,mode=0755".into(),
    });
    for dev in DEVICES {
        steps.push(MountStep::Bind {
            source: dev.into(),
            target: inside(Path::new(dev))?,
            writable: true,
            device: true,
        });
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        steps.push(MountStep::Symlink {
            link: inside(Path::new(link))?,
            target: target.into(),
        });
    }
    for link in &base.symlinks {
        steps.push(MountStep::Symlink {
            link: inside(&link.link)?,
            target: link.target.clone(),
        });
    }
    steps.push(MountStep::Proc {
        target: inside(Path::new("/proc"))?,
    });
    steps.push(MountStep::PivotRoot {
        new_root: root.clone(),
    });
    Ok(steps)
}

/// What starting a program adds inside the pivoted root: the spec's mounts (the `i`-th bind
/// arrives as the `i`-th passed mount), its private `/tmp`, files and links; then the root
/// becomes read-only.
pub fn start_plan(spec: &SandboxSpec) -> Result<Vec<MountStep>, BadPath> {
    let root = Path::new("/");
    let inside = |p: &Path| -> Result<PathBuf, BadPath> { join_inside(root, p) };
    let mut steps = Vec::new();
    for (index, bind) in spec.binds.iter().enumerate() {
        steps.push(MountStep::Attach {
            index,
            target: inside(&bind.target)?,
        });
    }
    steps.push(MountStep::Tmpfs {
        target: inside(Path::new("/tmp"))?,
        options: format!("size={},mode=1777", spec.tmp_size_bytes),
    });
    for file in &spec.files {
        steps.push(MountStep::WriteFile {
            path: inside(&file.path)?,
            contents: file.contents.clone(),
        });
    }
    for link in &spec.symlinks {
        steps.push(MountStep::Symlink {
            link: inside(&link.link)?,
            target: link.target.clone(),
        });
    }
    steps.push(MountStep::RemountRootReadOnly);
    Ok(steps)
}

/// `root` + `p`, refusing anything that could climb out of `root`.
fn join_inside(root: &Path, p: &Path) -> Result<PathBuf, BadPath> {
    if !p.is_absolute() {
        return Err(BadPath(p.to_owned()));
    }
    let mut out = root.to_path_buf();
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(BadPath(p.to_owned()))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BindMount, FileSpec, Symlink};

    fn base() -> BaseRoot {
        BaseRoot {
            new_root: "/run/condo/root".into(),
            binds: vec![BindMount::read_only("/usr", "/usr")],
            symlinks: vec![Symlink {
                link: "/bin".into(),
                target: "usr/bin".into(),
            }],
        }
    }

    fn spec() -> SandboxSpec {
        SandboxSpec {
            binds: vec![
                BindMount::read_only("/data/code/abc", "/var/task"),
                BindMount::read_only("/data/runtimes/python", "/var/runtime"),
            ],
            symlinks: vec![],
            files: vec![FileSpec {
                path: "/etc/passwd".into(),
                contents: "x".into(),
            }],
            tmp_size_bytes: 512 << 20,
            hostname: "h".into(),
            uid: 1000,
            gid: 1000,
            cwd: "/var/task".into(),
            argv: vec!["/var/task/bootstrap".into()],
            env: vec![],
            limits: crate::ResourceLimits {
                memory_bytes: 128 << 20,
                cpu_weight: 7,
                cpu_max_millis: 1000,
                max_pids: 1024,
                open_files: 1024,
            },
            network: crate::Network::LoopbackOnly,
        }
    }

    #[test]
    fn the_base_is_built_under_the_new_root_then_pivoted_into() {
        let steps = base_plan(&base()).unwrap();
        assert_eq!(steps[0], MountStep::MakeRootPrivate);
        assert!(
            matches!(&steps[1], MountStep::Tmpfs { target, .. } if target == Path::new("/run/condo/root"))
        );
        assert!(steps.contains(&MountStep::Bind {
            source: "/usr".into(),
            target: "/run/condo/root/usr".into(),
            writable: false,
            device: false,
        }));
        assert!(steps.contains(&MountStep::Symlink {
            link: "/run/condo/root/bin".into(),
            target: "usr/bin".into(),
        }));
        assert_eq!(
            steps.last(),
            Some(&MountStep::PivotRoot {
                new_root: "/run/condo/root".into()
            })
        );
        // Only the listed devices, and nothing of the host's /dev otherwise.
        let devices: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                MountStep::Bind {
                    source,
                    device: true,
                    ..
                } => Some(source.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(devices.len(), DEVICES.len());
        // Nothing of any function is in the base.
        assert!(!steps.iter().any(|s| matches!(s, MountStep::Attach { .. })));
    }

    #[test]
    fn a_start_attaches_the_spec_mounts_in_order_then_seals_the_root() {
        let steps = start_plan(&spec()).unwrap();
        assert_eq!(
            steps[..2],
            [
                MountStep::Attach {
                    index: 0,
                    target: "/var/task".into()
                },
                MountStep::Attach {
                    index: 1,
                    target: "/var/runtime".into()
                },
            ]
        );
        assert!(steps.contains(&MountStep::Tmpfs {
            target: "/tmp".into(),
            options: "size=536870912,mode=1777".into(),
        }));
        assert_eq!(steps.last(), Some(&MountStep::RemountRootReadOnly));
        // No step of a start unmounts anything or pivots again.
        assert!(!steps
            .iter()
            .any(|s| matches!(s, MountStep::PivotRoot { .. } | MountStep::Bind { .. })));
    }

    #[test]
    fn paths_cannot_climb_out_of_the_root() {
        for bad in ["relative", "/var/../../etc", "/./x/../y"] {
            let mut s = spec();
            s.binds.push(BindMount::read_only("/etc", bad));
            assert!(start_plan(&s).is_err(), "{bad}");
            let mut b = base();
            b.binds.push(BindMount::read_only("/etc", bad));
            assert!(base_plan(&b).is_err(), "{bad}");
        }
        let mut s = spec();
        s.files.push(FileSpec {
            path: "../escape".into(),
            contents: String::new(),
        });
        assert!(start_plan(&s).is_err());
    }
}
