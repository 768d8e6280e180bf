//! The default seccomp filter, at least as strict as Docker's default
//! profile for the calls it names: it denies (EPERM) mounting, rebooting,
//! kernel modules and kexec, bpf, perf, keyrings, ptrace and cross-process
//! memory access, new namespaces (clone/unshare with `CLONE_NEW*`, setns),
//! swap, accounting, clock setting, file handles, userfaultfd, port I/O,
//! quotas, non-default personalities and the kernel log; `clone3` gets
//! ENOSYS, so that libc falls back to `clone`, whose flags can be checked.
//!
//! The filters are compiled once per process and installed by the child
//! last, just before `execve`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::error::ContainerError;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// Every namespace flag of clone/unshare.
const NS_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80, // CLONE_NEWTIME
];

/// Personalities glibc and Docker allow: PER_LINUX, UNAME26, PER_LINUX32,
/// PER_LINUX32|UNAME26, and the query value.
const PERSONALITIES: [u64; 5] = [0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Calls denied outright.
fn denied() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_reboot,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_setns,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_userfaultfd,
        libc::SYS_lookup_dcookie,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_mount_setattr,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_nfsservctl,
        libc::SYS_vhangup,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS_ustat,
        libc::SYS_sysfs,
        libc::SYS__sysctl,
    ]);
    v
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, ContainerError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| ContainerError::Seccomp(e.to_string()))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, ContainerError> {
    SeccompRule::new(conds).map_err(|e| ContainerError::Seccomp(e.to_string()))
}

/// One rule per namespace flag: the call matches if any flag is set.
fn any_ns_flag(arg: u8) -> Result<Vec<SeccompRule>, ContainerError> {
    NS_FLAGS
        .iter()
        .map(|&f| rule(vec![cond(arg, SeccompCmpOp::MaskedEq(f), f)?]))
        .collect()
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    errno: i32,
) -> Result<BpfProgram, ContainerError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        ARCH,
    )
    .map_err(|e| ContainerError::Seccomp(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| ContainerError::Seccomp(e.to_string()))
}

/// Builds the two filters: the EPERM deny list and the clone3 → ENOSYS one.
pub fn build() -> Result<Vec<BpfProgram>, ContainerError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        denied().into_iter().map(|n| (n, Vec::new())).collect();
    rules.insert(libc::SYS_clone, any_ns_flag(0)?);
    rules.insert(libc::SYS_unshare, any_ns_flag(0)?);
    let not_allowed: Vec<SeccompCondition> = PERSONALITIES
        .iter()
        .map(|&p| cond(0, SeccompCmpOp::Ne, p))
        .collect::<Result<_, _>>()?;
    rules.insert(libc::SYS_personality, vec![rule(not_allowed)?]);
    let eperm = compile(rules, libc::EPERM)?;

    let mut rules3 = BTreeMap::new();
    rules3.insert(libc::SYS_clone3, Vec::new());
    let enosys = compile(rules3, libc::ENOSYS)?;
    Ok(vec![eperm, enosys])
}

/// The filters, compiled once per process.
pub fn filters() -> Result<&'static [BpfProgram], ContainerError> {
    static FILTERS: OnceLock<Result<Vec<BpfProgram>, String>> = OnceLock::new();
    match FILTERS.get_or_init(|| build().map_err(|e| e.to_string())) {
        Ok(f) => Ok(f),
        Err(e) => Err(ContainerError::Seccomp(e.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_and_are_small() {
        let f = filters().unwrap();
        assert_eq!(f.len(), 2);
        for p in f {
            assert!(!p.is_empty() && p.len() < u16::MAX as usize);
        }
    }

    #[test]
    fn deny_list_names_dockers_key_calls() {
        let d = denied();
        for n in [
            libc::SYS_mount,
            libc::SYS_reboot,
            libc::SYS_bpf,
            libc::SYS_keyctl,
            libc::SYS_ptrace,
            libc::SYS_setns,
        ] {
            assert!(d.contains(&n), "{n} missing");
        }
    }
}
