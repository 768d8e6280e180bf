//! The VMM's seccomp filter, installed on all its threads once the VM is
//! built: from then on the VMM only runs vCPUs, moves bytes between file
//! descriptors and guest memory, and reports. Any other system call kills
//! the VMM (SIGSYS), which the library reports as such.
//!
//! `ioctl` is limited to `KVM_RUN` (every other KVM call happens before the
//! filter is installed) and `prctl` to `PR_SET_NAME` (threads started just
//! before the filter name themselves).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `KVM_RUN` = `_IO(KVMIO, 0x80)`.
const KVM_RUN: u64 = 0xae80;

/// Errors building or installing the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter could not be compiled.
    #[error("cannot build the VMM's seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    /// The kernel refused it.
    #[error("cannot install the VMM's seccomp filter")]
    Install(#[source] seccompiler::Error),
}

/// System calls the running VMM makes, without argument checks.
const ALLOWED: &[i64] = &[
    // Guest I/O and reports.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_close,
    // Rust's std checks an fd with F_GETFD before closing it (debug builds).
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    // Threads waiting for each other, timers.
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_restart_syscall,
    // Memory allocation.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    // glibc sizes a new thread's malloc arena by the CPUs it may run on.
    libc::SYS_sched_getaffinity,
    // A thread started just before the filter registers these as it starts.
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    // Measuring guest memory residency at the end.
    libc::SYS_mincore,
    // Signals: the forwarding thread, panics.
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_sigaltstack,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_getrandom,
    // Ending.
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The filter as a BPF program.
pub fn filter() -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    let kvm_run = SeccompRule::new(vec![SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        KVM_RUN,
    )
    .map_err(SeccompError::Build)?])
    .map_err(SeccompError::Build)?;
    rules.insert(libc::SYS_ioctl, vec![kvm_run]);
    // A thread started just before the filter names itself when it starts.
    let set_name = SeccompRule::new(vec![SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::PR_SET_NAME as u64,
    )
    .map_err(SeccompError::Build)?])
    .map_err(SeccompError::Build)?;
    rules.insert(libc::SYS_prctl, vec![set_name]);
    let f = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(SeccompError::Build)?;
    f.try_into().map_err(SeccompError::Build)
}

/// Installs [`filter`] on every thread of the process.
pub fn install() -> Result<(), SeccompError> {
    let prog = filter()?;
    seccompiler::apply_filter_all_threads(&prog).map_err(SeccompError::Install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_compiles() {
        let prog = filter().unwrap();
        assert!(prog.len() > ALLOWED.len());
    }
}
