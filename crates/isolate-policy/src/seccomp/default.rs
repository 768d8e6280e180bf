//! The default filter: Docker's default seccomp profile for x86_64 and
//! the workload's capabilities, written out as rules, plus isolate's own
//! refusals (`TIOCSTI`/`TIOCLINUX` ioctls; `io_uring`, which Docker's
//! current profile leaves out as well).
//!
//! Differences from Docker's profile, all stricter:
//! - `ptrace`, `process_vm_readv` and `process_vm_writev` need
//!   `CAP_SYS_PTRACE`, as before Docker's Linux 4.8 rule: the workload's
//!   parent is isolate's shim, which must not become its tracer through
//!   `PTRACE_TRACEME` (its wait loop would take a stop for the end), and
//!   the security suite holds tracing refused;
//! - `socket`, `ioctl` and `personality` compare the low 32 bits of
//!   their argument where the kernel reads an `int`/`unsigned int`
//!   (Docker's 64-bit compare lets `socket(0x1_0000_0028, ...)` reach
//!   `AF_VSOCK`);
//! - i386 and x32 calls are refused (Docker allows them with the same
//!   rules).

use super::{Action, Cond, Decision, Op, Policy, Rule, Width, SYSCALLS};

/// Calls every workload may make, whatever its capabilities: Docker's
/// unconditional allowlist as it applies to x86_64, in call-number order
/// (`ioctl` and `socket` have rules of their own, below).
const ALLOWED: &[&str] = &[
    "read",
    "write",
    "open",
    "close",
    "stat",
    "fstat",
    "lstat",
    "poll",
    "lseek",
    "mmap",
    "mprotect",
    "munmap",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "access",
    "pipe",
    "select",
    "sched_yield",
    "mremap",
    "msync",
    "mincore",
    "madvise",
    "shmget",
    "shmat",
    "shmctl",
    "dup",
    "dup2",
    "pause",
    "nanosleep",
    "getitimer",
    "alarm",
    "setitimer",
    "getpid",
    "sendfile",
    "connect",
    "accept",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "shutdown",
    "bind",
    "listen",
    "getsockname",
    "getpeername",
    "socketpair",
    "setsockopt",
    "getsockopt",
    "fork",
    "vfork",
    "execve",
    "exit",
    "wait4",
    "kill",
    "uname",
    "semget",
    "semop",
    "semctl",
    "shmdt",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "truncate",
    "ftruncate",
    "getdents",
    "getcwd",
    "chdir",
    "fchdir",
    "rename",
    "mkdir",
    "rmdir",
    "creat",
    "link",
    "unlink",
    "symlink",
    "readlink",
    "chmod",
    "fchmod",
    "chown",
    "fchown",
    "lchown",
    "umask",
    "gettimeofday",
    "getrlimit",
    "getrusage",
    "sysinfo",
    "times",
    "getuid",
    "getgid",
    "setuid",
    "setgid",
    "geteuid",
    "getegid",
    "setpgid",
    "getppid",
    "getpgrp",
    "setsid",
    "setreuid",
    "setregid",
    "getgroups",
    "setgroups",
    "setresuid",
    "getresuid",
    "setresgid",
    "getresgid",
    "getpgid",
    "setfsuid",
    "setfsgid",
    "getsid",
    "capget",
    "capset",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "rt_sigsuspend",
    "sigaltstack",
    "utime",
    "mknod",
    "statfs",
    "fstatfs",
    "getpriority",
    "setpriority",
    "sched_setparam",
    "sched_getparam",
    "sched_setscheduler",
    "sched_getscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "mlock",
    "munlock",
    "mlockall",
    "munlockall",
    "prctl",
    "adjtimex",
    "setrlimit",
    "sync",
    "gettid",
    "readahead",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "tkill",
    "time",
    "futex",
    "sched_setaffinity",
    "sched_getaffinity",
    "set_thread_area",
    "io_setup",
    "io_destroy",
    "io_getevents",
    "io_submit",
    "io_cancel",
    "get_thread_area",
    "epoll_create",
    "epoll_ctl_old",
    "epoll_wait_old",
    "remap_file_pages",
    "getdents64",
    "set_tid_address",
    "restart_syscall",
    "semtimedop",
    "fadvise64",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "exit_group",
    "epoll_wait",
    "epoll_ctl",
    "tgkill",
    "utimes",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    "waitid",
    "ioprio_set",
    "ioprio_get",
    "inotify_init",
    "inotify_add_watch",
    "inotify_rm_watch",
    "openat",
    "mkdirat",
    "mknodat",
    "fchownat",
    "futimesat",
    "newfstatat",
    "unlinkat",
    "renameat",
    "linkat",
    "symlinkat",
    "readlinkat",
    "fchmodat",
    "faccessat",
    "pselect6",
    "ppoll",
    "set_robust_list",
    "get_robust_list",
    "splice",
    "tee",
    "sync_file_range",
    "vmsplice",
    "utimensat",
    "epoll_pwait",
    "signalfd",
    "timerfd_create",
    "eventfd",
    "fallocate",
    "timerfd_settime",
    "timerfd_gettime",
    "accept4",
    "signalfd4",
    "eventfd2",
    "epoll_create1",
    "dup3",
    "pipe2",
    "inotify_init1",
    "preadv",
    "pwritev",
    "rt_tgsigqueueinfo",
    "recvmmsg",
    "fanotify_mark",
    "prlimit64",
    "name_to_handle_at",
    "clock_adjtime",
    "syncfs",
    "sendmmsg",
    "getcpu",
    "sched_setattr",
    "sched_getattr",
    "renameat2",
    "seccomp",
    "getrandom",
    "memfd_create",
    "execveat",
    "membarrier",
    "mlock2",
    "copy_file_range",
    "preadv2",
    "pwritev2",
    "pkey_mprotect",
    "pkey_alloc",
    "pkey_free",
    "statx",
    "io_pgetevents",
    "rseq",
    "uretprobe",
    "pidfd_send_signal",
    "pidfd_open",
    "close_range",
    "openat2",
    "faccessat2",
    "epoll_pwait2",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "memfd_secret",
    "process_mrelease",
    "futex_waitv",
    "cachestat",
    "fchmodat2",
    "map_shadow_stack",
    "futex_wake",
    "futex_wait",
    "futex_requeue",
    "statmount",
    "listmount",
    "mseal",
    "setxattrat",
    "getxattrat",
    "listxattrat",
    "removexattrat",
];

/// x86_64-only calls Docker allows.
const ALLOWED_X86_64: &[&str] = &["arch_prctl", "modify_ldt"];

/// Capability numbers (`linux/capability.h`).
mod cap {
    pub const DAC_READ_SEARCH: u32 = 2;
    pub const SYS_MODULE: u32 = 16;
    pub const SYS_RAWIO: u32 = 17;
    pub const SYS_CHROOT: u32 = 18;
    pub const SYS_PTRACE: u32 = 19;
    pub const SYS_PACCT: u32 = 20;
    pub const SYS_ADMIN: u32 = 21;
    pub const SYS_BOOT: u32 = 22;
    pub const SYS_NICE: u32 = 23;
    pub const SYS_TIME: u32 = 25;
    pub const SYS_TTY_CONFIG: u32 = 26;
    pub const SYSLOG: u32 = 34;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;
}

/// Calls allowed only to a workload holding a capability (in its bounding
/// set, as Docker decides it).
const BY_CAPABILITY: &[(u32, &[&str])] = &[
    (cap::DAC_READ_SEARCH, &["open_by_handle_at"]),
    (
        cap::SYS_ADMIN,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount2",
            "unshare",
        ],
    ),
    (cap::SYS_BOOT, &["reboot"]),
    (cap::SYS_CHROOT, &["chroot"]),
    (
        cap::SYS_MODULE,
        &["delete_module", "init_module", "finit_module"],
    ),
    (cap::SYS_PACCT, &["acct"]),
    (
        cap::SYS_PTRACE,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (cap::SYS_RAWIO, &["iopl", "ioperm"]),
    (cap::SYS_TIME, &["settimeofday", "clock_settime"]),
    (cap::SYS_TTY_CONFIG, &["vhangup"]),
    (
        cap::SYS_NICE,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (cap::SYSLOG, &["syslog"]),
    (cap::BPF, &["bpf"]),
    (cap::PERFMON, &["perf_event_open"]),
];

/// The namespace flags `clone` may not carry without `CAP_SYS_ADMIN`
/// (Docker's mask: `CLONE_NEWTIME` cannot be given to `clone`, whose low
/// byte is the exit signal).
pub const CLONE_NS_MASK: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// Personalities Docker allows: PER_LINUX, UNAME26, PER_LINUX32,
/// PER_LINUX32|UNAME26, and the query value.
pub const PERSONALITIES: [u64; 5] = [0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Address families `socket` refuses (Docker's profile): `AF_ALG` (the
/// kernel's crypto API) and `AF_VSOCK` (host-guest sockets).
pub const REFUSED_FAMILIES: [u64; 2] = [libc::AF_ALG as u64, libc::AF_VSOCK as u64];

/// ioctls refused to every workload: faking terminal input (`TIOCSTI`)
/// and the virtual console's `TIOCLINUX` (which can do the same).
pub const REFUSED_IOCTLS: [u64; 2] = [libc::TIOCSTI, libc::TIOCLINUX];

const EPERM: Action = Action::Errno(libc::EPERM as u16);

/// The default policy for a workload whose bounding capability set is
/// `caps` (bit `n` for capability `n`).
pub fn policy(caps: u64) -> Policy {
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut p = Policy::new(EPERM, Action::Errno(libc::ENOSYS as u16));
    for nr in ALLOWED_NUMBERS {
        p.set(nr, Decision::always(Action::Allow));
    }
    for (c, names) in BY_CAPABILITY {
        if has(*c) {
            for name in *names {
                p.set(number(name), Decision::always(Action::Allow));
            }
        }
    }
    if !has(cap::SYS_ADMIN) {
        // No new namespaces; clone3 hides its flags in memory, so it gets
        // ENOSYS and libc falls back to clone.
        p.set(
            number("clone"),
            Decision {
                rules: vec![Rule::new(
                    Cond::new(0, Width::Full64, Op::MaskedEq, CLONE_NS_MASK, 0),
                    Action::Allow,
                )],
                otherwise: EPERM,
            },
        );
        p.set(
            number("clone3"),
            Decision::always(Action::Errno(libc::ENOSYS as u16)),
        );
    }
    p.set(
        number("personality"),
        Decision {
            rules: PERSONALITIES
                .iter()
                .map(|&v| Rule::new(Cond::new(0, Width::Full64, Op::Eq, v, 0), Action::Allow))
                .collect(),
            otherwise: EPERM,
        },
    );
    p.set(
        number("socket"),
        Decision {
            rules: REFUSED_FAMILIES
                .iter()
                .map(|&f| Rule::new(Cond::new(0, Width::Low32, Op::Eq, f, 0), EPERM))
                .collect(),
            otherwise: Action::Allow,
        },
    );
    p.set(
        number("ioctl"),
        Decision {
            rules: REFUSED_IOCTLS
                .iter()
                .map(|&r| Rule::new(Cond::new(1, Width::Low32, Op::Eq, r, 0), EPERM))
                .collect(),
            otherwise: Action::Allow,
        },
    );
    p
}

/// Every call allowed whatever the capabilities, by number: resolved
/// when isolate is compiled (a name missing from the call table does not
/// compile), so building the default costs no name look-ups.
const ALLOWED_NUMBERS: [u32; ALLOWED.len() + ALLOWED_X86_64.len()] =
    numbers(&[ALLOWED, ALLOWED_X86_64]);

/// The numbers of `lists`' names, in order.
const fn numbers<const N: usize>(lists: &[&[&str]]) -> [u32; N] {
    let mut out = [0u32; N];
    let mut n = 0;
    let mut l = 0;
    while l < lists.len() {
        let mut i = 0;
        while i < lists[l].len() {
            out[n] = number(lists[l][i]);
            n += 1;
            i += 1;
        }
        l += 1;
    }
    assert!(n == N, "the lists hold N names");
    out
}

/// The number of a call in the table; panics (at compile time in a
/// const) if it is not there.
const fn number(name: &str) -> u32 {
    let (mut lo, mut hi) = (0, SYSCALLS.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        match compare(SYSCALLS[mid].0.as_bytes(), name.as_bytes()) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return SYSCALLS[mid].1,
        }
    }
    panic!("a name of the default profile is not in the call table")
}

/// Byte-wise order of two strings, usable in a const.
const fn compare(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return if a[i] < b[i] {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            };
        }
        i += 1;
    }
    if a.len() < b.len() {
        std::cmp::Ordering::Less
    } else if a.len() > b.len() {
        std::cmp::Ordering::Greater
    } else {
        std::cmp::Ordering::Equal
    }
}
