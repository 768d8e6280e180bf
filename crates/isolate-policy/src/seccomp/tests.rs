//! The compiled programs, run on a classic BPF emulator, against the
//! policies they come from and against the decisions that matter.

use super::*;

use isolate_core::SeccompProfile;

const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const I386: u32 = 0x4000_0003;

/// Runs a classic BPF seccomp program (the instructions these filters
/// use) on `struct seccomp_data` given as its fields.
fn run(prog: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let f = &prog[pc];
        let code = u32::from(f.code);
        pc += 1;
        match code {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                let o = f.k as usize;
                assert!(o & 3 == 0 && o + 4 <= 64, "load at {o}");
                acc = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
            }
            c if c == libc::BPF_RET | libc::BPF_K => return f.k,
            c if c == libc::BPF_JMP | libc::BPF_JA => pc += f.k as usize,
            c if c & 0x07 == libc::BPF_JMP => {
                let taken = match c & 0xf0 {
                    x if x == libc::BPF_JEQ => acc == f.k,
                    x if x == libc::BPF_JGE => acc >= f.k,
                    x if x == libc::BPF_JGT => acc > f.k,
                    x if x == libc::BPF_JSET => acc & f.k != 0,
                    other => panic!("jump {other:#x} not emulated"),
                };
                assert_eq!(c & 0x08, libc::BPF_K, "only constant operands");
                pc += usize::from(if taken { f.jt } else { f.jf });
            }
            c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= f.k,
            other => panic!("instruction {other:#x} not emulated"),
        }
        assert!(pc < prog.len(), "ran off the end");
    }
}

fn nr(name: &str) -> u32 {
    syscall_number(name).unwrap_or_else(|| panic!("{name}"))
}

/// Argument values where the rules change their minds.
fn interesting() -> Vec<u64> {
    let mut v = vec![
        0,
        1,
        libc::SIGCHLD as u64,
        (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND) as u64,
        (libc::CLONE_THREAD | libc::CLONE_SETTLS) as u64,
        37,
        38,
        39,
        40,
        41,
        0x1_0000_0026,
        0x1_0000_0028,
        libc::TCGETS,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0008,
        u64::MAX,
        0x8000_0000_0000_0000,
    ];
    v.extend(default::REFUSED_IOCTLS);
    v.extend(default::REFUSED_IOCTLS.map(|r| r | 0x7_0000_0000));
    for f in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
        0x80,
    ] {
        v.extend([f as u64, f as u64 | libc::SIGCHLD as u64]);
    }
    v.extend(default::PERSONALITIES);
    v.extend(default::PERSONALITIES.map(|p| p + 1));
    v
}

/// Checks that `prog` decides as `policy` for every call number this
/// architecture has (and some beyond), with the interesting values in
/// the first two arguments.
fn assert_same(prog: &[sock_filter], policy: &Policy) -> usize {
    let vals = interesting();
    let mut numbers: Vec<u32> = (0..=max_syscall() + 40).collect();
    numbers.extend([
        1000,
        0x3fff_ffff,
        X32_SYSCALL_BIT,
        X32_SYSCALL_BIT | 2,
        u32::MAX,
    ]);
    let mut checked = 0;
    for &n in &numbers {
        for &a0 in &vals {
            for a1 in [0, vals[checked % vals.len()], a0] {
                let args = [a0, a1, 2, 3, 4, 5];
                assert_eq!(
                    run(prog, n, AUDIT_ARCH, args),
                    policy.decide(n, &args).ret(),
                    "call {n} args {a0:#x} {a1:#x}"
                );
                checked += 1;
            }
        }
        assert_eq!(run(prog, n, I386, [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);
    }
    checked
}

fn default_prog(caps: u64) -> (BpfProgram, Policy) {
    let p = default::policy(caps);
    (compile(&p).unwrap(), p)
}

#[test]
fn default_decides_as_its_policy_for_every_call() {
    for caps in [crate::caps::default_mask(), 0, u64::MAX >> 23] {
        let (prog, policy) = default_prog(caps);
        assert!(assert_same(&prog, &policy) > 50_000);
    }
}

#[test]
fn default_is_one_small_program() {
    let f = filters(&Seccomp::Default, crate::caps::default_mask()).unwrap();
    assert_eq!(f.len(), 1);
    assert!(f[0].len() < 140, "{} instructions", f[0].len());
    // Built once: the same program again.
    let g = filters(&Seccomp::Default, crate::caps::default_mask()).unwrap();
    assert!(std::ptr::eq(f[0].as_ptr(), g[0].as_ptr()));
}

#[test]
fn unconfined_has_no_filter() {
    assert!(filters(&Seccomp::Unconfined, 0).unwrap().is_empty());
}

/// The verdict of the default program for Docker's default capabilities.
fn v(name: &str, args: [u64; 6]) -> u32 {
    let f = filters(&Seccomp::Default, crate::caps::default_mask()).unwrap();
    run(&f[0], nr(name), AUDIT_ARCH, args)
}

fn a(a0: u64, a1: u64) -> [u64; 6] {
    [a0, a1, 0, 0, 0, 0]
}

#[test]
fn default_allows_ordinary_calls() {
    for name in [
        "read",
        "write",
        "openat",
        "execve",
        "exit_group",
        "mmap",
        "rt_sigaction",
        "wait4",
        "getpid",
        "futex",
        "clock_nanosleep",
        "statx",
        "arch_prctl",
        "seccomp",
        "prctl",
        "chroot",
        "mknodat",
        "setuid",
        "rseq",
        "getrandom",
    ] {
        assert_eq!(v(name, a(0, 0)), ALLOW, "{name}");
    }
    assert_eq!(v("clone", a(libc::SIGCHLD as u64, 0)), ALLOW);
    let thread = libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID;
    assert_eq!(v("clone", a(thread as u64, 0)), ALLOW);
    assert_eq!(v("socket", a(libc::AF_INET as u64, 0)), ALLOW);
    assert_eq!(v("socket", a(libc::AF_UNIX as u64, 0)), ALLOW);
    assert_eq!(v("socket", a(39, 0)), ALLOW);
    assert_eq!(v("socket", a(41, 0)), ALLOW);
    assert_eq!(v("ioctl", a(1, libc::TCGETS)), ALLOW);
    assert_eq!(v("ioctl", a(1, libc::TIOCGWINSZ)), ALLOW);
    assert_eq!(v("personality", a(0xffff_ffff, 0)), ALLOW);
    assert_eq!(v("personality", a(0x0008, 0)), ALLOW);
}

#[test]
fn default_refuses_what_docker_refuses() {
    for name in [
        "mount",
        "umount2",
        "pivot_root",
        "unshare",
        "setns",
        "reboot",
        "kexec_load",
        "init_module",
        "finit_module",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "kcmp",
        "pidfd_getfd",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "swapon",
        "acct",
        "settimeofday",
        "clock_settime",
        "open_by_handle_at",
        "userfaultfd",
        "syslog",
        "iopl",
        "ioperm",
        "fsopen",
        "open_tree",
        "move_mount",
        "sethostname",
        "setdomainname",
        "quotactl",
        "vhangup",
        "mbind",
        "_sysctl",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ] {
        assert_eq!(v(name, a(0, 0)), EPERM, "{name}");
    }
    for f in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWCGROUP,
    ] {
        assert_eq!(v("clone", a(f as u64 | libc::SIGCHLD as u64, 0)), EPERM);
        assert_eq!(v("unshare", a(f as u64, 0)), EPERM);
    }
    assert_eq!(v("clone3", a(0, 0)), ENOSYS);
    assert_eq!(v("personality", a(0x0040_0000, 0)), EPERM);
    assert_eq!(v("personality", a(0x1_0000_0000, 0)), EPERM);
}

#[test]
fn default_refuses_vsock_alg_and_terminal_injection_on_the_low_32_bits() {
    for fam in [libc::AF_VSOCK as u64, libc::AF_ALG as u64] {
        assert_eq!(v("socket", a(fam, 0)), EPERM, "{fam}");
        // The kernel reads an int: the high half must not get it through.
        assert_eq!(v("socket", a(fam | 0x1_0000_0000, 0)), EPERM, "{fam}");
    }
    for req in [libc::TIOCSTI, libc::TIOCLINUX] {
        assert_eq!(v("ioctl", a(0, req)), EPERM, "{req:#x}");
        assert_eq!(v("ioctl", a(0, req | 0xffff_0000_0000)), EPERM, "{req:#x}");
    }
}

#[test]
fn default_refuses_other_abis_and_unknown_numbers() {
    let f = filters(&Seccomp::Default, crate::caps::default_mask()).unwrap();
    for n in [0, nr("mount"), nr("getpid"), 512, 0xffff] {
        assert_eq!(run(&f[0], n | X32_SYSCALL_BIT, AUDIT_ARCH, [0; 6]), EPERM);
        assert_eq!(run(&f[0], n, I386, [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);
    }
    // Newer than the table: ENOSYS, so libc falls back.
    assert_eq!(run(&f[0], max_syscall() + 1, AUDIT_ARCH, [0; 6]), ENOSYS);
    assert_eq!(run(&f[0], 1000, AUDIT_ARCH, [0; 6]), ENOSYS);
    // A hole in the table (x86_64 numbers 336 to 423 are unused): EPERM.
    assert_eq!(run(&f[0], 400, AUDIT_ARCH, [0; 6]), EPERM);
}

#[test]
fn capabilities_open_what_docker_opens() {
    let with = |caps: &[&str]| {
        let mask = caps.iter().fold(crate::caps::default_mask(), |m, c| {
            m | 1 << crate::caps::number(c).unwrap()
        });
        compile(&default::policy(mask)).unwrap()
    };
    let admin = with(&["SYS_ADMIN"]);
    for name in ["mount", "umount2", "unshare", "setns", "sethostname", "bpf"] {
        assert_eq!(run(&admin, nr(name), AUDIT_ARCH, [0; 6]), ALLOW, "{name}");
    }
    let newns = a(libc::CLONE_NEWNS as u64, 0);
    assert_eq!(run(&admin, nr("clone"), AUDIT_ARCH, newns), ALLOW);
    assert_eq!(run(&admin, nr("clone3"), AUDIT_ARCH, [0; 6]), ALLOW);
    // Isolate's own refusals hold whatever the capabilities.
    let sti = a(0, libc::TIOCSTI);
    assert_eq!(run(&admin, nr("ioctl"), AUDIT_ARCH, sti), EPERM);
    assert_eq!(run(&admin, nr("io_uring_setup"), AUDIT_ARCH, [0; 6]), EPERM);

    let ptrace = with(&["SYS_PTRACE"]);
    assert_eq!(run(&ptrace, nr("kcmp"), AUDIT_ARCH, [0; 6]), ALLOW);
    assert_eq!(run(&ptrace, nr("ptrace"), AUDIT_ARCH, [0; 6]), ALLOW);
    assert_eq!(run(&ptrace, nr("mount"), AUDIT_ARCH, [0; 6]), EPERM);
    let time = with(&["SYS_TIME"]);
    assert_eq!(run(&time, nr("settimeofday"), AUDIT_ARCH, [0; 6]), ALLOW);

    let none = compile(&default::policy(0)).unwrap();
    assert_eq!(run(&none, nr("chroot"), AUDIT_ARCH, [0; 6]), EPERM);
    assert_eq!(run(&none, nr("getpid"), AUDIT_ARCH, [0; 6]), ALLOW);
}

/// Every comparison, on both widths, at values around the 32-bit halves.
#[test]
fn argument_comparisons_match_their_meaning() {
    let vals: Vec<u64> = vec![
        0,
        1,
        5,
        0xffff_fffe,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0005,
        0x2_0000_0004,
        0x2_0000_0006,
        u64::MAX,
    ];
    let ops = [Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::MaskedEq];
    let mut policy = Policy::new(Action::KillThread, Action::KillThread);
    let mut n = 0;
    let mut cases = Vec::new();
    for width in [Width::Low32, Width::Full64] {
        for op in ops {
            for &value in &[5u64, 0x1_0000_0005, 0xffff_ffff] {
                let c = Cond::new((n % 6) as u8, width, op, value, value & 0x1_0000_0004);
                policy.set(
                    n,
                    Decision {
                        rules: vec![Rule::new(c, Action::Allow)],
                        otherwise: Action::Errno(libc::EPERM as u16),
                    },
                );
                cases.push((n, c));
                n += 1;
            }
        }
    }
    let prog = compile(&policy).unwrap();
    for (n, c) in cases {
        for &x in &vals {
            let mut args = [0u64; 6];
            args[usize::from(c.arg)] = x;
            let want = if c.holds(x) { ALLOW } else { EPERM };
            assert_eq!(run(&prog, n, AUDIT_ARCH, args), want, "{c:?} on {x:#x}");
        }
    }
}

fn profile(json: &str) -> SeccompProfile {
    SeccompProfile::from_json(json).unwrap()
}

fn profile_prog(json: &str, caps: u64) -> (BpfProgram, Policy) {
    let p = profile::policy(&profile(json), caps);
    (compile(&p).unwrap(), p)
}

#[test]
fn a_json_profile_is_honoured() {
    let (prog, policy) = profile_prog(
        r#"{
          "defaultAction": "SCMP_ACT_ALLOW",
          "architectures": ["SCMP_ARCH_X86_64"],
          "syscalls": [
            {"names": ["mkdir", "mkdirat", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getppid"], "action": "SCMP_ACT_TRAP"},
            {"names": ["getpgrp"], "action": "SCMP_ACT_LOG"},
            {"names": ["getsid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
            {"names": ["gettid"], "action": "SCMP_ACT_KILL"}
          ]
        }"#,
        0,
    );
    assert_same(&prog, &policy);
    let r = |name: &str, args| run(&prog, nr(name), AUDIT_ARCH, args);
    assert_eq!(r("mkdir", [0; 6]), libc::SECCOMP_RET_ERRNO | 13);
    assert_eq!(r("mkdirat", [0; 6]), libc::SECCOMP_RET_ERRNO | 13);
    assert_eq!(r("kill", [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);
    assert_eq!(r("socket", a(10, 0)), EPERM);
    assert_eq!(r("socket", a(2, 0)), ALLOW);
    assert_eq!(r("getppid", [0; 6]), libc::SECCOMP_RET_TRAP);
    assert_eq!(r("getpgrp", [0; 6]), libc::SECCOMP_RET_LOG);
    assert_eq!(r("getsid", [0; 6]), libc::SECCOMP_RET_TRACE | 7);
    assert_eq!(r("gettid", [0; 6]), libc::SECCOMP_RET_KILL_THREAD);
    assert_eq!(r("mount", [0; 6]), ALLOW);
    // An allowing default lets unknown numbers through; x32 never.
    assert_eq!(run(&prog, 1000, AUDIT_ARCH, [0; 6]), ALLOW);
    assert_eq!(run(&prog, X32_SYSCALL_BIT | 83, AUDIT_ARCH, [0; 6]), EPERM);
}

#[test]
fn docker_includes_excludes_and_shared_indexes() {
    let json = r#"{
      "defaultAction": "SCMP_ACT_ERRNO",
      "defaultErrnoRet": 1,
      "syscalls": [
        {"names": ["getpid", "exit_group"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
         "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390x"]}},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm"]}},
        {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        {"names": ["kcmp"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}]}
      ]
    }"#;
    let plain = crate::caps::default_mask();
    let admin = plain | 1 << 21;
    let (p, policy) = profile_prog(json, plain);
    assert_same(&p, &policy);
    let (q, policy) = profile_prog(json, admin);
    assert_same(&q, &policy);
    let r = |prog: &[sock_filter], name: &str, args| run(prog, nr(name), AUDIT_ARCH, args);
    assert_eq!(r(&p, "getpid", [0; 6]), ALLOW);
    assert_eq!(r(&p, "mount", [0; 6]), EPERM);
    assert_eq!(r(&q, "mount", [0; 6]), ALLOW);
    let newns = a(libc::CLONE_NEWNS as u64, 0);
    assert_eq!(r(&p, "clone", a(libc::SIGCHLD as u64, 0)), ALLOW);
    assert_eq!(r(&p, "clone", newns), EPERM);
    assert_eq!(r(&q, "clone", newns), ALLOW);
    assert_eq!(r(&p, "arch_prctl", [0; 6]), ALLOW);
    assert_eq!(r(&p, "ptrace", [0; 6]), ALLOW);
    assert_eq!(r(&p, "kcmp", [0; 6]), EPERM);
    // Two conditions on argument 0: either value (runc's reading).
    assert_eq!(r(&p, "personality", a(0, 0)), ALLOW);
    assert_eq!(r(&p, "personality", a(8, 0)), ALLOW);
    assert_eq!(r(&p, "personality", a(9, 0)), EPERM);
    // Conditions on two arguments: both.
    assert_eq!(r(&p, "socket", a(1, 1)), ALLOW);
    assert_eq!(r(&p, "socket", a(1, 2)), EPERM);
    // A denying default: numbers beyond the table get ENOSYS.
    assert_eq!(run(&p, 1000, AUDIT_ARCH, [0; 6]), ENOSYS);
}

/// A profile whose decisions change at every call number: the search
/// tree's subtrees are too long for 8-bit jumps and go behind `JA`s.
#[test]
fn long_programs_use_far_jumps() {
    let names: Vec<String> = SYSCALLS
        .iter()
        .filter(|(_, n)| n % 2 == 0)
        .map(|(name, _)| format!("{name:?}"))
        .collect();
    let json = format!(
        r#"{{"defaultAction": "SCMP_ACT_ERRNO",
             "syscalls": [{{"names": [{}], "action": "SCMP_ACT_ALLOW"}}]}}"#,
        names.join(",")
    );
    let (prog, policy) = profile_prog(&json, 0);
    assert!(prog.len() > 600, "{}", prog.len());
    assert!(prog
        .iter()
        .any(|f| u32::from(f.code) == libc::BPF_JMP | libc::BPF_JA));
    assert_same(&prog, &policy);
}

#[test]
fn too_long_a_program_is_an_error() {
    let mut policy = Policy::new(Action::Allow, Action::Allow);
    for n in 0..300 {
        let rules = (0..4)
            .map(|v| {
                Rule::new(
                    Cond::new(0, Width::Full64, Op::Gt, v, 0),
                    Action::Errno(n as u16),
                )
            })
            .collect();
        policy.set(
            n,
            Decision {
                rules,
                otherwise: Action::Allow,
            },
        );
    }
    assert!(matches!(compile(&policy), Err(SeccompError::TooLong(_))));
}

#[test]
fn the_call_table_is_sorted_and_complete() {
    assert!(SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(syscall_number("read"), Some(0));
    assert_eq!(syscall_number("mount"), Some(libc::SYS_mount as u32));
    assert_eq!(syscall_number("clone3"), Some(libc::SYS_clone3 as u32));
    assert_eq!(syscall_number("no_such_call"), None);
    let mut numbers: Vec<u32> = SYSCALLS.iter().map(|&(_, n)| n).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), SYSCALLS.len(), "a number appears twice");
}

/// Checks the default against Docker's own `profiles/seccomp/default.json`
/// (not kept here), compiled as a user profile would be:
///
/// ```text
/// ISOLATE_DOCKER_SECCOMP_JSON=/path/to/default.json \
///     cargo test -p isolate-container --lib -- --ignored same_as_dockers_profile
/// ```
///
/// They must agree on every call and argument tried, except for the
/// documented differences (all stricter here).
#[test]
#[ignore]
fn same_as_dockers_profile() {
    let Some(path) = std::env::var_os("ISOLATE_DOCKER_SECCOMP_JSON") else {
        eprintln!("SKIP same_as_dockers_profile: set ISOLATE_DOCKER_SECCOMP_JSON");
        return;
    };
    let docker = SeccompProfile::load(std::path::Path::new(&path)).unwrap();
    let cap = |n: &str| 1u64 << crate::caps::number(n).unwrap();
    let plain = crate::caps::default_mask();
    for (caps, allowed_diffs) in [
        (
            plain,
            &[
                "ioctl",
                "socket",
                "ptrace",
                "process_vm_readv",
                "process_vm_writev",
            ][..],
        ),
        (
            0,
            &[
                "ioctl",
                "socket",
                "ptrace",
                "process_vm_readv",
                "process_vm_writev",
            ][..],
        ),
        (
            plain | cap("SYS_ADMIN"),
            &[
                "ioctl",
                "socket",
                "ptrace",
                "process_vm_readv",
                "process_vm_writev",
            ][..],
        ),
        (plain | cap("SYS_PTRACE"), &["ioctl", "socket"][..]),
    ] {
        let ours = default::policy(caps);
        let theirs = profile::policy(&docker, caps);
        let vals = interesting();
        let mut differ = std::collections::BTreeSet::new();
        for nr in 0..=max_syscall() + 2 {
            for &a0 in &vals {
                for &a1 in &vals {
                    let args = [a0, a1, 0, 0, 0, 0];
                    let (o, t) = (ours.decide(nr, &args), theirs.decide(nr, &args));
                    if o != t {
                        assert_eq!(
                            o,
                            Action::Errno(libc::EPERM as u16),
                            "call {nr} {a0:#x} {a1:#x}: isolate is laxer than Docker"
                        );
                        let name = SYSCALLS.iter().find(|s| s.1 == nr).map_or("?", |s| s.0);
                        differ.insert(name);
                    }
                }
            }
        }
        let differ: Vec<&str> = differ.into_iter().collect();
        let mut want = allowed_diffs.to_vec();
        want.sort_unstable();
        assert_eq!(differ, want, "caps {caps:#x}");
    }
}
