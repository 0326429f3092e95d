//! Turns a [`SandboxSpec`] into the ordered list of mount operations that build its root.
//!
//! Pure, so the shape of every sandbox is unit-tested without privileges; `init` executes it.

use std::path::{Component, Path, PathBuf};

use crate::SandboxSpec;

/// Device nodes a program may need; everything else under `/dev` is absent.
pub const DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// One step of building the root. Paths under `new_root` are absolute host paths, because the
/// steps run before `pivot_root`.
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

/// The mount plan of a sandbox, in execution order.
pub fn mount_plan(spec: &SandboxSpec) -> Result<Vec<MountStep>, BadPath> {
    let root = &spec.new_root;
    let inside = |p: &Path| -> Result<PathBuf, BadPath> { join_inside(root, p) };
    let mut steps = vec![
        MountStep::MakeRootPrivate,
        MountStep::Tmpfs {
            target: root.clone(),
            options: "size=4m,mode=0755".into(),
        },
    ];
    for bind in &spec.binds {
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
    steps.push(MountStep::Proc {
        target: inside(Path::new("/proc"))?,
    });
    steps.push(MountStep::PivotRoot {
        new_root: root.clone(),
    });
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

    fn spec() -> SandboxSpec {
        SandboxSpec {
            new_root: "/run/condo/root".into(),
            binds: vec![
                BindMount::read_only("/usr", "/usr"),
                BindMount::read_only("/data/code/abc", "/var/task"),
            ],
            symlinks: vec![Symlink {
                link: "/bin".into(),
                target: "usr/bin".into(),
            }],
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
    fn plan_builds_everything_under_the_new_root_then_pivots_and_seals() {
        let steps = mount_plan(&spec()).unwrap();
        assert_eq!(steps[0], MountStep::MakeRootPrivate);
        assert!(
            matches!(&steps[1], MountStep::Tmpfs { target, .. } if target == Path::new("/run/condo/root"))
        );
        assert!(steps.contains(&MountStep::Bind {
            source: "/data/code/abc".into(),
            target: "/run/condo/root/var/task".into(),
            writable: false,
            device: false,
        }));
        assert!(steps.contains(&MountStep::Tmpfs {
            target: "/run/condo/root/tmp".into(),
            options: "size=536870912,mode=1777".into(),
        }));
        let n = steps.len();
        assert_eq!(
            steps[n - 2],
            MountStep::PivotRoot {
                new_root: "/run/condo/root".into()
            }
        );
        assert_eq!(steps[n - 1], MountStep::RemountRootReadOnly);
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
    }

    #[test]
    fn paths_cannot_climb_out_of_the_root() {
        for bad in ["relative", "/var/../../etc", "/./x/../y"] {
            let mut s = spec();
            s.binds.push(BindMount::read_only("/etc", bad));
            assert!(mount_plan(&s).is_err(), "{bad}");
        }
        let mut s = spec();
        s.files.push(FileSpec {
            path: "../escape".into(),
            contents: String::new(),
        });
        assert!(mount_plan(&s).is_err());
    }
}
