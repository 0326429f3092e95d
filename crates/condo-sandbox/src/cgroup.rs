//! Control groups: one per sandbox, holding its memory, CPU and process limits, on either the
//! cgroup v1 hierarchies or the unified v2 tree, whichever the host's memory controller uses.
//!
//! Every sandbox's group lives under one parent (`<controller mount>/<parent>/<id>`), so a new
//! platform start can find and remove whatever a crashed one left behind. What to write is
//! computed by pure functions ([`limit_writes`]) and unit-tested for both versions; this host
//! runs v1, so v1 is also tested for real.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// The resources one sandbox may use. Sent with the spec; applied before the program starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// Memory, including its `/tmp` (tmpfs pages are charged to the group that writes them).
    pub memory_bytes: u64,
    /// Relative CPU weight under contention, on cgroup v2's scale: 100 is the default share.
    pub cpu_weight: u32,
    /// The most CPU the sandbox may use, in thousandths of a CPU.
    pub cpu_max_millis: u32,
    /// Processes and threads, together.
    pub max_pids: u32,
    /// `RLIMIT_NOFILE` of the program.
    pub open_files: u64,
}

/// Which cgroup version holds the memory controller, and where its hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// One mount point per controller (they may coincide, as in `cpu,cpuacct`).
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
    },
    V2 {
        root: PathBuf,
    },
}

/// A controller whose files a limit is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

/// One file write that applies a limit. `optional` writes may fail where the kernel lacks
/// the file (swap accounting turned off, for instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitWrite {
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
    pub optional: bool,
}

/// The CFS period both versions use for CPU quotas, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

impl CgroupLayout {
    /// Reads the layout of this host from `/proc/self/mountinfo`.
    pub fn detect() -> io::Result<Self> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        parse_layout(&mountinfo).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "no cgroup hierarchy with the memory, pids and cpu controllers is mounted",
            )
        })
    }

    fn dir_of(&self, controller: Controller) -> &Path {
        match (self, controller) {
            (CgroupLayout::V1 { memory, .. }, Controller::Memory) => memory,
            (CgroupLayout::V1 { pids, .. }, Controller::Pids) => pids,
            (CgroupLayout::V1 { cpu, .. }, Controller::Cpu) => cpu,
            (CgroupLayout::V2 { root }, _) => root,
        }
    }

    /// The distinct hierarchy mount points a group must exist in.
    fn mounts(&self) -> Vec<&Path> {
        let set: BTreeSet<&Path> = [Controller::Memory, Controller::Pids, Controller::Cpu]
            .into_iter()
            .map(|c| self.dir_of(c))
            .collect();
        set.into_iter().collect()
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, CgroupLayout::V2 { .. })
    }
}

/// Finds the controllers' mount points in a mountinfo text. v1 wins when it holds the memory
/// controller (a hybrid host mounts an empty v2 tree beside it).
pub fn parse_layout(mountinfo: &str) -> Option<CgroupLayout> {
    let (mut memory, mut pids, mut cpu, mut unified) = (None, None, None, None);
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let (fstype, _source, options) = (right.next(), right.next(), right.next());
        match fstype {
            Some("cgroup") => {
                for opt in options.unwrap_or_default().split(',') {
                    let slot = match opt {
                        "memory" => &mut memory,
                        "pids" => &mut pids,
                        "cpu" => &mut cpu,
                        _ => continue,
                    };
                    slot.get_or_insert_with(|| PathBuf::from(unescape(mount_point)));
                }
            }
            Some("cgroup2") => {
                unified.get_or_insert_with(|| PathBuf::from(unescape(mount_point)));
            }
            _ => {}
        }
    }
    match (memory, pids, cpu, unified) {
        (Some(memory), Some(pids), Some(cpu), _) => Some(CgroupLayout::V1 { memory, pids, cpu }),
        (None, _, _, Some(root)) => Some(CgroupLayout::V2 { root }),
        _ => None,
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(b) = u8::from_str_radix(&code, 8) {
                out.push(char::from(b));
                continue;
            }
            out.push(c);
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    out
}

/// The writes that apply `limits` on a host of the given version.
pub fn limit_writes(v2: bool, limits: &ResourceLimits) -> Vec<LimitWrite> {
    let w = |controller, file, value: String, optional| LimitWrite {
        controller,
        file,
        value,
        optional,
    };
    // The kernel refuses quotas under 1 ms per period.
    let quota_us = (u64::from(limits.cpu_max_millis) * CPU_PERIOD_US / 1000).max(1000);
    if v2 {
        vec![
            w(
                Controller::Memory,
                "memory.max",
                limits.memory_bytes.to_string(),
                false,
            ),
            w(Controller::Memory, "memory.swap.max", "0".into(), true),
            w(
                Controller::Pids,
                "pids.max",
                limits.max_pids.to_string(),
                false,
            ),
            cpu_weight_write(true, limits.cpu_weight, 1),
            w(
                Controller::Cpu,
                "cpu.max",
                format!("{quota_us} {CPU_PERIOD_US}"),
                false,
            ),
        ]
    } else {
        vec![
            w(
                Controller::Memory,
                "memory.limit_in_bytes",
                limits.memory_bytes.to_string(),
                false,
            ),
            w(
                Controller::Memory,
                "memory.memsw.limit_in_bytes",
                limits.memory_bytes.to_string(),
                true,
            ),
            w(
                Controller::Pids,
                "pids.max",
                limits.max_pids.to_string(),
                false,
            ),
            cpu_weight_write(false, limits.cpu_weight, 1),
            w(
                Controller::Cpu,
                "cpu.cfs_period_us",
                CPU_PERIOD_US.to_string(),
                false,
            ),
            w(
                Controller::Cpu,
                "cpu.cfs_quota_us",
                quota_us.to_string(),
                false,
            ),
        ]
    }
}

/// The write that gives a group `weight` (cgroup v2's scale) divided by `divisor`, in the finest
/// unit the version offers: v1 shares are on a 1024 scale where v2 weights are on a 100 scale.
pub fn cpu_weight_write(v2: bool, weight: u32, divisor: u32) -> LimitWrite {
    let weight = u64::from(weight.clamp(1, 10_000));
    let divisor = u64::from(divisor.max(1));
    let (file, value) = if v2 {
        ("cpu.weight", (weight / divisor).max(1))
    } else {
        ("cpu.shares", (weight * 1024 / 100 / divisor).max(2))
    };
    LimitWrite {
        controller: Controller::Cpu,
        file,
        value: value.to_string(),
        optional: false,
    }
}

/// One sandbox's CPU weight, adjustable while it runs and apart from it, so a caller can
/// rebalance a set of sandboxes (one tenant's) without owning them. Once the sandbox is gone,
/// its group is too, and a write fails harmlessly.
#[derive(Debug, Clone)]
pub struct CpuWeight {
    dir: PathBuf,
    v2: bool,
}

impl CpuWeight {
    /// Sets the weight to `weight` (cgroup v2's scale) divided by `divisor`.
    pub fn set(&self, weight: u32, divisor: u32) -> io::Result<()> {
        let w = cpu_weight_write(self.v2, weight, divisor);
        write_file(&self.dir.join(w.file), &w.value)
    }
}

/// Which CPUs one sandbox's threads run on, changeable while it runs and apart from it (like
/// [`CpuWeight`]). A placement for speed, not a limit: a function may widen its own threads'
/// affinity again, and loses nothing by it but its place (its weight and quota still hold).
#[derive(Debug, Clone)]
pub struct CpuAffinity {
    /// The group's file listing every thread: threads, not processes, carry an affinity.
    threads: PathBuf,
}

impl CpuAffinity {
    /// Lets every thread of the sandbox run on `cpus` only. Threads started later inherit it
    /// from the thread that starts them.
    pub fn set(&self, cpus: &[usize]) -> io::Result<()> {
        let mut set = nix::sched::CpuSet::new();
        for &cpu in cpus {
            set.set(cpu).map_err(io::Error::from)?;
        }
        for tid in std::fs::read_to_string(&self.threads)?
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            // A thread id could in theory be reused by a host thread between the read and the
            // call; the worst outcome is that thread running on fewer CPUs, a matter of speed.
            match nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set) {
                // A thread that exited since the list was read needs no placing.
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The CPUs this process may run on: the ones it can place sandboxes on.
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The `oom_kill` counter of a v1 `memory.oom_control` or a v2 `memory.events` text.
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The parent group under which every sandbox of one platform instance lives.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    layout: CgroupLayout,
    parent: PathBuf,
}

impl CgroupTree {
    /// Creates (or reuses) the parent group `parent` (a relative path such as `condo/ab12`)
    /// and, on v2, delegates the controllers down to it.
    pub fn open(layout: CgroupLayout, parent: &Path) -> io::Result<Self> {
        if parent.is_absolute() || parent.components().count() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cgroup parent {parent:?} must be a non-empty relative path"),
            ));
        }
        let tree = Self {
            layout,
            parent: parent.to_owned(),
        };
        tree.make_parent()?;
        Ok(tree)
    }

    fn make_parent(&self) -> io::Result<()> {
        for mount in self.layout.mounts() {
            std::fs::create_dir_all(mount.join(&self.parent))?;
        }
        if let CgroupLayout::V2 { root } = &self.layout {
            // Each level must hand the controllers to its children, from the root down.
            let mut dir = root.clone();
            for part in self.parent.components() {
                write_file(&dir.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
                dir.push(part);
            }
            write_file(&dir.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
        }
        Ok(())
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// Creates the group of one sandbox.
    pub fn create(&self, name: &str) -> io::Result<Cgroup> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cgroup name {name:?}"),
            ));
        }
        let group = Cgroup {
            layout: self.layout.clone(),
            relative: self.parent.join(name),
            peak_file: OnceLock::new(),
        };
        for dir in group.dirs() {
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                // Someone removed the parent (an operator, or a cleanup): make it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.make_parent()?;
                    std::fs::create_dir(&dir)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(group)
    }

    /// Names of the sandbox groups that exist now.
    pub fn children(&self) -> io::Result<Vec<String>> {
        let dir = self.layout.dir_of(Controller::Memory).join(&self.parent);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Kills and removes every sandbox group under the parent: what a crashed platform left.
    /// Returns how many groups were removed.
    pub fn remove_leftovers(&self) -> io::Result<usize> {
        let names = self.children()?;
        for name in &names {
            let group = Cgroup {
                layout: self.layout.clone(),
                relative: self.parent.join(name),
                peak_file: OnceLock::new(),
            };
            group.kill_all();
            group.remove()?;
        }
        Ok(names.len())
    }

    /// Removes the (empty) parent group, and its ancestors that are empty too, for a clean
    /// shutdown. A group still in use elsewhere is not empty, so it stays.
    pub fn remove_parent(&self) {
        for mount in self.layout.mounts() {
            let mut dir = self.parent.as_path();
            while dir.components().count() > 0 {
                if std::fs::remove_dir(mount.join(dir)).is_err() {
                    break;
                }
                dir = dir.parent().unwrap_or(Path::new(""));
            }
        }
    }
}

/// The group of one sandbox.
#[derive(Debug)]
pub struct Cgroup {
    layout: CgroupLayout,
    relative: PathBuf,
    /// The peak-memory file, opened on first use: it is read after every invocation, and one
    /// `pread` costs a third of an open, read and close.
    peak_file: OnceLock<Option<std::fs::File>>,
}

impl Cgroup {
    fn dirs(&self) -> Vec<PathBuf> {
        self.layout
            .mounts()
            .into_iter()
            .map(|m| m.join(&self.relative))
            .collect()
    }

    fn file(&self, controller: Controller, name: &str) -> PathBuf {
        self.layout
            .dir_of(controller)
            .join(&self.relative)
            .join(name)
    }

    /// Moves a process (with its threads) into the group in every hierarchy.
    pub fn attach(&self, pid: u32) -> io::Result<()> {
        for dir in self.dirs() {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    pub fn apply(&self, limits: &ResourceLimits) -> io::Result<()> {
        for w in limit_writes(self.layout.is_v2(), limits) {
            match write_file(&self.file(w.controller, w.file), &w.value) {
                Ok(()) => {}
                Err(_) if w.optional => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cgroup {} = {}: {e}", w.file, w.value),
                    ))
                }
            }
        }
        Ok(())
    }

    pub fn cpu_weight(&self) -> CpuWeight {
        CpuWeight {
            dir: self.layout.dir_of(Controller::Cpu).join(&self.relative),
            v2: self.layout.is_v2(),
        }
    }

    pub fn cpu_affinity(&self) -> CpuAffinity {
        let file = if self.layout.is_v2() {
            "cgroup.threads"
        } else {
            "tasks"
        };
        CpuAffinity {
            threads: self.file(Controller::Cpu, file),
        }
    }

    /// How many times the kernel's OOM killer ended a process of this group.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.layout.is_v2() {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.file(Controller::Memory, file))
            .map(|t| parse_oom_kills(&t))
            .unwrap_or(0)
    }

    /// The group's peak memory use, in bytes.
    pub fn memory_peak(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let file = self
            .peak_file
            .get_or_init(|| {
                let name = if self.layout.is_v2() {
                    "memory.peak"
                } else {
                    "memory.max_usage_in_bytes"
                };
                std::fs::File::open(self.file(Controller::Memory, name)).ok()
            })
            .as_ref()?;
        // Reading from offset 0 makes the kernel render the value afresh.
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }

    /// Host pids of every process in the group.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.file(Controller::Pids, "cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process in the group. On v2 the kernel does it atomically; on v1 the
    /// sandbox's PID namespace guarantees the same once its PID 1 is gone, so killing the
    /// listed processes is enough even if one forks meanwhile (its child dies with the namespace).
    pub fn kill_all(&self) {
        if self.layout.is_v2()
            && write_file(&self.file(Controller::Memory, "cgroup.kill"), "1").is_ok()
        {
            return;
        }
        for pid in self.pids() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Removes the group. Its processes must be gone (reaped) first; waits briefly for the
    /// kernel to finish releasing exiting tasks.
    pub fn remove(&self) -> io::Result<()> {
        for dir in self.dirs() {
            let mut tries = 0;
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 200 => {
                        tries += 1;
                        self.kill_all();
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PURE_V2: &str = "\
25 1 0:22 / / rw - ext4 /dev/vda rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn layouts_are_recognised() {
        let check = |text: &str, expect: Option<CgroupLayout>| {
            assert_eq!(parse_layout(text), expect, "{text}");
        };
        check(
            HYBRID,
            Some(CgroupLayout::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct".into(),
            }),
        );
        check(
            PURE_V2,
            Some(CgroupLayout::V2 {
                root: "/sys/fs/cgroup".into(),
            }),
        );
        // A v1 host without the pids controller cannot hold our limits.
        check(&HYBRID.replace("rw,pids", "rw,freezer"), None);
        check("", None);
        check(
            "41 31 0:38 / /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n",
            Some(CgroupLayout::V2 {
                root: "/sys/fs/cgroup x".into(),
            }),
        );
    }

    #[test]
    fn v1_mounts_are_deduplicated() {
        let layout = CgroupLayout::V1 {
            memory: "/m".into(),
            pids: "/c".into(),
            cpu: "/c".into(),
        };
        assert_eq!(layout.mounts(), vec![Path::new("/c"), Path::new("/m")]);
    }

    fn limits(memory_mb: u64, weight: u32, millis: u32) -> ResourceLimits {
        ResourceLimits {
            memory_bytes: memory_mb << 20,
            cpu_weight: weight,
            cpu_max_millis: millis,
            max_pids: 1024,
            open_files: 1024,
        }
    }

    fn values(writes: &[LimitWrite]) -> Vec<(&'static str, &str)> {
        writes.iter().map(|w| (w.file, w.value.as_str())).collect()
    }

    #[test]
    fn v1_limits() {
        assert_eq!(
            values(&limit_writes(false, &limits(128, 7, 1000))),
            vec![
                ("memory.limit_in_bytes", "134217728"),
                ("memory.memsw.limit_in_bytes", "134217728"),
                ("pids.max", "1024"),
                ("cpu.shares", "71"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "100000"),
            ]
        );
        // The smallest weight still maps to the kernel's minimum share.
        let w = limit_writes(false, &limits(128, 0, 0));
        assert!(values(&w).contains(&("cpu.shares", "10")));
        assert!(values(&w).contains(&("cpu.cfs_quota_us", "1000")));
    }

    #[test]
    fn a_divided_weight_keeps_the_finest_unit_and_a_floor() {
        let value = |v2, weight, divisor| cpu_weight_write(v2, weight, divisor).value;
        assert_eq!(value(false, 7, 1), "71");
        assert_eq!(value(false, 7, 16), "4");
        assert_eq!(value(false, 7, 1000), "2");
        assert_eq!(value(true, 200, 3), "66");
        assert_eq!(value(true, 7, 16), "1");
        assert_eq!(value(true, 7, 0), "7");
        assert_eq!(cpu_weight_write(true, 7, 2).file, "cpu.weight");
        assert_eq!(cpu_weight_write(false, 7, 2).file, "cpu.shares");
    }

    #[test]
    fn v2_limits() {
        assert_eq!(
            values(&limit_writes(true, &limits(3538, 200, 2000))),
            vec![
                ("memory.max", "3709861888"),
                ("memory.swap.max", "0"),
                ("pids.max", "1024"),
                ("cpu.weight", "200"),
                ("cpu.max", "200000 100000"),
            ]
        );
    }

    #[test]
    fn oom_counters() {
        let check = |text: &str, n: u64| assert_eq!(parse_oom_kills(text), n, "{text}");
        check("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", 3);
        check(
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
            1,
        );
        check("oom_kill_disable 0\nunder_oom 0\n", 0);
        check("", 0);
    }
}
