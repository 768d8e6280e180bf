//! The VMM's seccomp filters, one per kind of thread, each installed by
//! the thread itself before any guest code runs (see [`crate::vmm`]):
//! from then on the VMM only runs vCPUs, moves bytes between file
//! descriptors and guest memory, and reports. Any other system call kills
//! the whole VMM (SIGSYS), which the library reports as such.
//!
//! What every thread is refused, beyond the calls not listed:
//! - `ioctl` except, on vCPU threads, `KVM_RUN` and the two reads of the
//!   thread's registers (`KVM_GET_REGS`, `KVM_GET_SREGS`: the state logged
//!   when a guest stops with a triple fault); every other KVM call happens
//!   while the VM is built, before the filters; the other threads make no
//!   `ioctl` at all;
//! - `mmap`/`mprotect` with `PROT_EXEC`: no new executable memory;
//! - `kill`/`tgkill` to any process but the VMM itself (panics and
//!   `abort` signal their own thread);
//! - opening files, creating processes or threads, sockets, `execve`.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `KVM_RUN` = `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = 0xae80;
/// `KVM_GET_REGS` = `_IOR(KVMIO, 0x81, struct kvm_regs)`.
pub const KVM_GET_REGS: u64 = kvm_ior(0x81, std::mem::size_of::<kvm_bindings::kvm_regs>());
/// `KVM_GET_SREGS` = `_IOR(KVMIO, 0x83, struct kvm_sregs)`.
pub const KVM_GET_SREGS: u64 = kvm_ior(0x83, std::mem::size_of::<kvm_bindings::kvm_sregs>());

/// `_IOR(KVMIO, nr, size)`.
const fn kvm_ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (0xae << 8) | nr
}

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter could not be compiled.
    #[error("cannot build the VMM's seccomp filter for its {0} thread")]
    Build(&'static str, #[source] seccompiler::BackendError),
    /// The kernel refused it.
    #[error("cannot install the VMM's seccomp filter on its {0} thread")]
    Install(&'static str, #[source] seccompiler::Error),
}

/// Which filter a thread gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A vCPU thread: `KVM_RUN`, and the device work its exits trigger
    /// (console output, disk reads and writes, interrupts through eventfds).
    Vcpu,
    /// The main thread and the stdin, signal and lifeline threads: reading
    /// and writing pipes, waiting, the final report. No `ioctl`.
    Service,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Vcpu => "vCPU",
            Role::Service => "service",
        }
    }
}

/// System calls every VMM thread may make, without argument checks.
const COMMON: &[i64] = &[
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
    // Memory allocation (mmap and mprotect: below, never executable).
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    // glibc sizes a thread's first malloc arena by the CPUs it may run on.
    libc::SYS_sched_getaffinity,
    // Signals: panics, a thread's end (std removes its alternate stack).
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getrandom,
    // Ending.
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Only the service threads: the signal thread waits for signals, the
/// main thread measures guest memory residency at the end.
const SERVICE_ONLY: &[i64] = &[libc::SYS_rt_sigtimedwait, libc::SYS_mincore];

fn cond(
    role: Role,
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, len, op, value).map_err(|e| SeccompError::Build(role.name(), e))
}

fn rule(role: Role, conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(|e| SeccompError::Build(role.name(), e))
}

/// The filter of `role` as a BPF program; `own_pid` is the VMM's pid as
/// the VMM sees it (1 in its own pid namespace), the only process it may
/// signal.
pub fn filter(role: Role, own_pid: i32) -> Result<BpfProgram, SeccompError> {
    use SeccompCmpArgLen::Dword;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        COMMON.iter().map(|&nr| (nr, Vec::new())).collect();
    if role == Role::Service {
        rules.extend(SERVICE_ONLY.iter().map(|&nr| (nr, Vec::new())));
    }
    if role == Role::Vcpu {
        let mut allowed = Vec::new();
        for request in [KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS] {
            let c = cond(role, 1, Dword, SeccompCmpOp::Eq, request)?;
            allowed.push(rule(role, vec![c])?);
        }
        rules.insert(libc::SYS_ioctl, allowed);
    }
    // mmap(addr, len, prot, …) and mprotect(addr, len, prot): prot without PROT_EXEC.
    let exec = libc::PROT_EXEC as u64;
    for nr in [libc::SYS_mmap, libc::SYS_mprotect] {
        let no_exec = cond(role, 2, Dword, SeccompCmpOp::MaskedEq(exec), 0)?;
        rules.insert(nr, vec![rule(role, vec![no_exec])?]);
    }
    // kill(pid, sig) and tgkill(tgid, tid, sig): only the VMM itself.
    let own = own_pid as u32 as u64;
    for nr in [libc::SYS_kill, libc::SYS_tgkill] {
        let to_self = cond(role, 0, Dword, SeccompCmpOp::Eq, own)?;
        rules.insert(nr, vec![rule(role, vec![to_self])?]);
    }
    let f = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Build(role.name(), e))?;
    f.try_into()
        .map_err(|e| SeccompError::Build(role.name(), e))
}

/// Installs the filter of `role` on the calling thread (and on threads it
/// starts afterwards, which the VMM does not do).
pub fn apply(role: Role) -> Result<(), SeccompError> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let prog = filter(role, pid)?;
    seccompiler::apply_filter(&prog).map_err(|e| SeccompError::Install(role.name(), e))
}

/// Orders the filters of the VMM's threads: each thread installs its own
/// ([`FilterGate::install`]); vCPU threads then wait
/// ([`FilterGate::install_and_wait`]) until the main thread has seen every
/// thread filtered and installed its own filter ([`FilterGate::seal`]), so
/// no guest instruction runs while any thread of the VMM is unfiltered.
#[derive(Clone)]
pub struct FilterGate(Arc<(Mutex<GateState>, Condvar)>);

#[derive(Default)]
struct GateState {
    enabled: bool,
    installed: usize,
    failed: Option<String>,
    open: bool,
}

impl FilterGate {
    /// A closed gate; `enabled: false` installs no filters (debug builds only).
    pub fn new(enabled: bool) -> Self {
        Self(Arc::new((
            Mutex::new(GateState {
                enabled,
                ..GateState::default()
            }),
            Condvar::new(),
        )))
    }

    fn state(&self) -> MutexGuard<'_, GateState> {
        self.0 .0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs the filter of `role` on the calling thread and counts it.
    pub fn install(&self, role: Role) -> Result<(), String> {
        let enabled = self.state().enabled;
        let r = if enabled {
            apply(role).map_err(|e| isolate_core::error_chain(&e))
        } else {
            Ok(())
        };
        let mut st = self.state();
        match &r {
            Ok(()) => st.installed += 1,
            Err(e) => st.failed = Some(e.clone()),
        }
        self.0 .1.notify_all();
        r
    }

    /// [`install`](Self::install), then waits for [`seal`](Self::seal).
    pub fn install_and_wait(&self, role: Role) -> Result<(), String> {
        self.install(role)?;
        let mut st = self.state();
        while !st.open {
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            st = self.0 .1.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    /// On the main thread, once it has started `threads` threads: waits
    /// until each has installed its filter, installs the service filter
    /// on the calling thread, and lets the vCPUs run.
    pub fn seal(&self, threads: usize) -> Result<(), String> {
        let mut st = self.state();
        while st.installed < threads {
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            st = self.0 .1.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let enabled = st.enabled;
        drop(st);
        if enabled {
            if let Err(e) = apply(Role::Service) {
                let msg = isolate_core::error_chain(&e);
                self.state().failed = Some(msg.clone());
                self.0 .1.notify_all();
                return Err(msg);
            }
        }
        self.state().open = true;
        self.0 .1.notify_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        for role in [Role::Vcpu, Role::Service] {
            let prog = filter(role, 1).unwrap();
            assert!(prog.len() > COMMON.len());
        }
    }

    /// Runs `call` in a forked child under the filter of `role`; returns
    /// the signal that ended the child, or 0 if it exited.
    fn under_filter(role: Role, call: fn() -> i64) -> i32 {
        // SAFETY: fork in a test binary; the child only installs a filter,
        // makes raw system calls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = apply(role).is_ok();
            let _ = call();
            // SAFETY: ends the forked child without running the test
            // harness's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 99 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above; `status` is a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if libc::WIFSIGNALED(status) {
            libc::WTERMSIG(status)
        } else {
            assert_eq!(libc::WEXITSTATUS(status), 0, "the filter was not installed");
            0
        }
    }

    fn ioctl(request: u64) -> i64 {
        // SAFETY: an ioctl on fd -1 touches no memory; it fails with EBADF
        // unless the filter kills the process first.
        unsafe { libc::syscall(libc::SYS_ioctl, -1, request, 0) }
    }

    #[test]
    fn vcpu_threads_may_run_the_vcpu() {
        assert_eq!(under_filter(Role::Vcpu, || ioctl(KVM_RUN)), 0);
        assert_eq!(under_filter(Role::Vcpu, || ioctl(KVM_GET_REGS)), 0);
        assert_eq!(under_filter(Role::Vcpu, || ioctl(KVM_GET_SREGS)), 0);
    }

    #[test]
    fn register_reads_have_the_kernels_numbers() {
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
    }

    #[test]
    fn vcpu_threads_may_make_no_other_ioctl() {
        // KVM_CREATE_VM = _IO(KVMIO, 0x01).
        assert_eq!(under_filter(Role::Vcpu, || ioctl(0xae01)), libc::SIGSYS);
    }

    #[test]
    fn service_threads_make_no_ioctl() {
        assert_eq!(under_filter(Role::Service, || ioctl(KVM_RUN)), libc::SIGSYS);
    }

    #[test]
    fn executable_mappings_are_refused() {
        fn mmap_exec() -> i64 {
            // SAFETY: an anonymous mapping the call does not use; the
            // filter kills the process before it is made.
            unsafe {
                libc::syscall(
                    libc::SYS_mmap,
                    0,
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            }
        }
        fn mprotect_exec() -> i64 {
            // SAFETY: a fresh anonymous page, then a prot change on it only.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                libc::syscall(
                    libc::SYS_mprotect,
                    p,
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                )
            }
        }
        for role in [Role::Vcpu, Role::Service] {
            assert_eq!(under_filter(role, mmap_exec), libc::SIGSYS);
            assert_eq!(under_filter(role, mprotect_exec), libc::SIGSYS);
        }
    }

    #[test]
    fn only_the_vmm_itself_may_be_signalled() {
        fn signal_own_thread() -> i64 {
            // SAFETY: signal 0 only checks that the thread exists.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), 0) }
        }
        fn signal_init() -> i64 {
            // SAFETY: signal 0 to pid 1 only checks that it exists.
            unsafe { libc::syscall(libc::SYS_kill, 1, 0) }
        }
        fn tgkill_init() -> i64 {
            // SAFETY: signal 0 only checks that the thread exists.
            unsafe { libc::syscall(libc::SYS_tgkill, 1, 1, 0) }
        }
        assert_eq!(under_filter(Role::Service, signal_own_thread), 0);
        assert_eq!(under_filter(Role::Service, signal_init), libc::SIGSYS);
        assert_eq!(under_filter(Role::Vcpu, tgkill_init), libc::SIGSYS);
    }

    #[test]
    fn opening_files_is_refused() {
        fn open_passwd() -> i64 {
            // SAFETY: a NUL-terminated path; the filter kills the process
            // before the kernel reads it.
            unsafe {
                libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    c"/etc/passwd".as_ptr(),
                    libc::O_RDONLY,
                )
            }
        }
        assert_eq!(under_filter(Role::Vcpu, open_passwd), libc::SIGSYS);
        assert_eq!(under_filter(Role::Service, open_passwd), libc::SIGSYS);
    }
}
