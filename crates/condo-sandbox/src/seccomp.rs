//! The system-call filter every sandboxed program runs under: a list of calls a function never
//! needs, refused with an error (never a kill, so a runtime that probes for a feature falls back).
//!
//! Two filters are installed. The kernel runs both and the stricter answer wins, which lets
//! `clone3` and `io_uring` answer `ENOSYS` (so libc and libuv fall back to calls the first filter
//! can inspect) while everything else refused answers `EPERM`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Calls refused with `EPERM` whatever their arguments: mounting, namespaces, tracing other
/// processes, loading code into the kernel, keyrings, the clock, the machine's state.
const DENIED: &[(i64, &str)] = &[
    (libc::SYS_mount, "mount"),
    (libc::SYS_umount2, "umount2"),
    (libc::SYS_pivot_root, "pivot_root"),
    (libc::SYS_chroot, "chroot"),
    (libc::SYS_fsopen, "fsopen"),
    (libc::SYS_fsconfig, "fsconfig"),
    (libc::SYS_fsmount, "fsmount"),
    (libc::SYS_fspick, "fspick"),
    (libc::SYS_move_mount, "move_mount"),
    (libc::SYS_open_tree, "open_tree"),
    (libc::SYS_mount_setattr, "mount_setattr"),
    (libc::SYS_unshare, "unshare"),
    (libc::SYS_setns, "setns"),
    (libc::SYS_ptrace, "ptrace"),
    (libc::SYS_process_vm_readv, "process_vm_readv"),
    (libc::SYS_process_vm_writev, "process_vm_writev"),
    (libc::SYS_pidfd_getfd, "pidfd_getfd"),
    (libc::SYS_kcmp, "kcmp"),
    (libc::SYS_kexec_load, "kexec_load"),
    (libc::SYS_kexec_file_load, "kexec_file_load"),
    (libc::SYS_init_module, "init_module"),
    (libc::SYS_finit_module, "finit_module"),
    (libc::SYS_delete_module, "delete_module"),
    (libc::SYS_bpf, "bpf"),
    (libc::SYS_perf_event_open, "perf_event_open"),
    (libc::SYS_userfaultfd, "userfaultfd"),
    (libc::SYS_keyctl, "keyctl"),
    (libc::SYS_add_key, "add_key"),
    (libc::SYS_request_key, "request_key"),
    (libc::SYS_open_by_handle_at, "open_by_handle_at"),
    (libc::SYS_name_to_handle_at, "name_to_handle_at"),
    (libc::SYS_fanotify_init, "fanotify_init"),
    (libc::SYS_swapon, "swapon"),
    (libc::SYS_swapoff, "swapoff"),
    (libc::SYS_reboot, "reboot"),
    (libc::SYS_acct, "acct"),
    (libc::SYS_quotactl, "quotactl"),
    (libc::SYS_syslog, "syslog"),
    (libc::SYS_vhangup, "vhangup"),
    (libc::SYS_settimeofday, "settimeofday"),
    (libc::SYS_clock_settime, "clock_settime"),
    (libc::SYS_clock_adjtime, "clock_adjtime"),
    (libc::SYS_adjtimex, "adjtimex"),
    (libc::SYS_sethostname, "sethostname"),
    (libc::SYS_setdomainname, "setdomainname"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_iopl, "iopl"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_ioperm, "ioperm"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_uselib, "uselib"),
];

/// Calls answered `ENOSYS`, as if this kernel did not have them.
const ABSENT: &[(i64, &str)] = &[
    // Its flags live in a struct a filter cannot read; libc falls back to `clone`.
    (libc::SYS_clone3, "clone3"),
    // A large, often-exploited kernel surface; libuv falls back to threads.
    (libc::SYS_io_uring_setup, "io_uring_setup"),
    (libc::SYS_io_uring_enter, "io_uring_enter"),
    (libc::SYS_io_uring_register, "io_uring_register"),
];

/// `clone` flags that would make a new namespace.
const NAMESPACE_FLAGS: [i32; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

/// Compiled filters, ready to install in order.
#[derive(Debug, Clone)]
pub(crate) struct Filters(Vec<BpfProgram>);

#[derive(Debug, thiserror::Error)]
#[error("seccomp filter: {0}")]
pub struct SeccompError(String);

impl Filters {
    /// Compiles both filters for the architecture this binary runs on.
    pub(crate) fn compile() -> Result<Self, SeccompError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|e| SeccompError(format!("{e:?}")))?;
        let err = |e: seccompiler::BackendError| SeccompError(e.to_string());

        let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&(nr, _)| (nr, Vec::new())).collect();
        // `clone` is refused only when asked for a namespace: one rule per flag, any may match.
        let clone_rules = NAMESPACE_FLAGS
            .iter()
            .map(|&flag| {
                let flag = flag as u64;
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .and_then(|c| SeccompRule::new(vec![c]))
                .map_err(err)
            })
            .collect::<Result<Vec<_>, _>>()?;
        denied.insert(libc::SYS_clone, clone_rules);
        let refuse = SeccompFilter::new(
            denied,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .map_err(err)?;

        let absent = SeccompFilter::new(
            ABSENT.iter().map(|&(nr, _)| (nr, Vec::new())).collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .map_err(err)?;

        let compile =
            |f: SeccompFilter| BpfProgram::try_from(f).map_err(|e| SeccompError(e.to_string()));
        Ok(Self(vec![compile(refuse)?, compile(absent)?]))
    }

    /// Installs the filters on the calling thread; they pass to every child and across exec.
    /// Needs `no_new_privs` (or privilege) first.
    pub(crate) fn install(&self) -> Result<(), SeccompError> {
        for program in &self.0 {
            seccompiler::apply_filter(program).map_err(|e| SeccompError(e.to_string()))?;
        }
        Ok(())
    }
}

/// Names of the calls the filter refuses, for documentation and tests.
pub fn refused_calls() -> Vec<&'static str> {
    let mut names: Vec<_> = DENIED.iter().chain(ABSENT).map(|&(_, n)| n).collect();
    names.push("clone (with namespace flags)");
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_machine() {
        let filters = Filters::compile().unwrap();
        assert_eq!(filters.0.len(), 2);
        assert!(filters.0.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn the_list_covers_what_the_threat_model_names() {
        let names = refused_calls();
        for must in [
            "mount",
            "unshare",
            "setns",
            "ptrace",
            "kexec_load",
            "bpf",
            "perf_event_open",
            "keyctl",
            "init_module",
            "finit_module",
            "clone3",
        ] {
            assert!(names.contains(&must), "{must} is not refused");
        }
        // Nothing is listed twice (a duplicate would hide a typo).
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }
}
