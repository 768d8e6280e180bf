//! The default seccomp filter, at least as strict as Docker's default
//! profile for the calls it names: it denies (EPERM) mounting, rebooting,
//! kernel modules and kexec, bpf, perf, keyrings, ptrace and cross-process
//! memory access, new namespaces (clone/unshare with `CLONE_NEW*`, setns),
//! swap, accounting, clock setting, file handles, userfaultfd, port I/O,
//! quotas, non-default personalities and the kernel log; `clone3` gets
//! ENOSYS, so that libc falls back to `clone`, whose flags can be checked.
//!
//! On x86_64, calls of the x32 ABI (numbers from `0x4000_0000`) are
//! denied as well.
//!
//! The filter is one classic BPF program, built here once per process and
//! installed by the child last, just before `execve`. It finds the call
//! number by binary search (a few comparisons for any call), so it is small
//! (about 110 instructions): the kernel checks, translates and compiles a
//! filter, and runs it for every system call number to build its cache of
//! always-allowed calls, at each install, which costs in proportion to its
//! size. (The same rules through `seccompiler`'s linear chains took two
//! programs of 408 and 10 instructions; the tests check that both decide
//! alike for every call number and the arguments that matter.)

use std::sync::OnceLock;

use seccompiler::{sock_filter, BpfProgram};

use crate::error::ContainerError;

/// `AUDIT_ARCH_*` of this architecture, as `seccomp_data.arch` holds it.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// The x32 ABI's bit in x86_64 system call numbers.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

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

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH_OFFSET: u32 = 4;
/// Low and high 32 bits of the first argument (little-endian).
const ARG0_LO: u32 = 16;
const ARG0_HI: u32 = 20;

/// Where a call number leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Allow,
    Eperm,
    Enosys,
    /// clone/unshare: EPERM if a namespace flag is set in the first argument.
    NsFlags,
    /// personality: EPERM unless the first argument is one of PERSONALITIES.
    Personality,
}

/// A jump to be resolved once the targets' places are known.
#[derive(Debug, Clone)]
enum Insn {
    /// A finished instruction.
    Raw(sock_filter),
    /// `if A <cmp> k goto (jt) else goto (jf)`, each an index or a target.
    Jump {
        code: u16,
        k: u32,
        jt: Dest,
        jf: Dest,
    },
    /// `goto` a target (BPF_JA, 32-bit offset).
    Always(Target),
}

#[derive(Debug, Clone, Copy)]
enum Dest {
    /// The next instruction.
    Next,
    /// Instruction `n` of the program being built.
    At(usize),
    To(Target),
}

fn raw(code: u32, k: u32) -> Insn {
    Insn::Raw(sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    })
}

fn load(offset: u32) -> Insn {
    raw(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

fn ret(action: u32) -> Insn {
    raw(libc::BPF_RET | libc::BPF_K, action)
}

fn jump(op: u32, k: u32, jt: Dest, jf: Dest) -> Insn {
    Insn::Jump {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        k,
        jt,
        jf,
    }
}

/// Emits the binary search over `keys` (sorted); the accumulator holds
/// the call number.
fn search(keys: &[(u32, Target)], out: &mut Vec<Insn>) {
    if keys.len() <= 3 {
        for &(nr, t) in keys {
            out.push(jump(libc::BPF_JEQ, nr, Dest::To(t), Dest::Next));
        }
        out.push(Insn::Always(Target::Allow));
        return;
    }
    let mid = keys.len() / 2;
    let at = out.len();
    // Patched below once the left half's length is known.
    out.push(jump(libc::BPF_JGE, keys[mid].0, Dest::Next, Dest::Next));
    search(&keys[..mid], out);
    let right = out.len();
    if let Insn::Jump { jt, .. } = &mut out[at] {
        *jt = Dest::At(right);
    }
    search(&keys[mid..], out);
}

/// The whole filter as unresolved instructions.
fn program() -> Vec<Insn> {
    let mut keys: Vec<(u32, Target)> = denied()
        .into_iter()
        .map(|n| (n as u32, Target::Eperm))
        .collect();
    keys.extend([
        (libc::SYS_clone as u32, Target::NsFlags),
        (libc::SYS_unshare as u32, Target::NsFlags),
        (libc::SYS_personality as u32, Target::Personality),
        (libc::SYS_clone3 as u32, Target::Enosys),
    ]);
    keys.sort_unstable_by_key(|k| k.0);
    keys.dedup_by_key(|k| k.0);

    let mut p = vec![
        load(ARCH_OFFSET),
        jump(libc::BPF_JEQ, AUDIT_ARCH, Dest::At(3), Dest::Next),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
        load(NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.push(jump(
        libc::BPF_JGE,
        X32_SYSCALL_BIT,
        Dest::To(Target::Eperm),
        Dest::Next,
    ));
    search(&keys, &mut p);
    p
}

/// Resolves the jumps of `p` and appends the targets' code.
fn assemble(p: Vec<Insn>) -> Result<BpfProgram, ContainerError> {
    // The targets' code follows the search (jumps only go forward): the
    // argument checks, then the returns they lead to.
    let base = p.len();
    let ns_mask = NS_FLAGS.iter().fold(0u64, |m, f| m | f) as u32;
    let ns = base;
    let pers = ns + 2;
    let eperm = pers + 3 + PERSONALITIES.len();
    let allow = eperm + 1;
    let enosys = eperm + 2;
    let mut tail = vec![
        // ns: the namespace flags all lie in the low 32 bits.
        load(ARG0_LO),
        jump(libc::BPF_JSET, ns_mask, Dest::At(eperm), Dest::At(allow)),
        // pers: the high half must be 0 and the low half one of the list.
        load(ARG0_HI),
        jump(libc::BPF_JEQ, 0, Dest::Next, Dest::At(eperm)),
        load(ARG0_LO),
    ];
    for &v in &PERSONALITIES {
        tail.push(jump(libc::BPF_JEQ, v as u32, Dest::At(allow), Dest::Next));
    }
    // None matched: on to eperm, next.
    tail.extend([
        ret(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ret(libc::SECCOMP_RET_ALLOW),
        ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ]);
    debug_assert_eq!(base + tail.len(), enosys + 1);
    let all: Vec<Insn> = p.into_iter().chain(tail).collect();

    let index_of = |t: Target| match t {
        Target::Allow => allow,
        Target::Eperm => eperm,
        Target::Enosys => enosys,
        Target::NsFlags => ns,
        Target::Personality => pers,
    };
    let bad = |what: String| ContainerError::Seccomp(what);
    let offset = |from: usize, d: Dest| -> Result<u8, ContainerError> {
        let to = match d {
            Dest::Next => from + 1,
            Dest::At(i) => i,
            Dest::To(t) => index_of(t),
        };
        to.checked_sub(from + 1)
            .and_then(|o| u8::try_from(o).ok())
            .ok_or_else(|| bad(format!("jump from {from} to {to} does not fit")))
    };
    let mut out = Vec::with_capacity(all.len());
    for (i, insn) in all.iter().enumerate() {
        out.push(match insn {
            Insn::Raw(f) => sock_filter { ..*f },
            &Insn::Jump { code, k, jt, jf } => sock_filter {
                code,
                jt: offset(i, jt)?,
                jf: offset(i, jf)?,
                k,
            },
            &Insn::Always(t) => sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JA) as u16,
                jt: 0,
                jf: 0,
                k: (index_of(t) - (i + 1)) as u32,
            },
        });
    }
    Ok(out)
}

/// Builds the filter: the EPERM deny list (with its argument checks) and
/// clone3 → ENOSYS, in one program.
pub fn build() -> Result<Vec<BpfProgram>, ContainerError> {
    Ok(vec![assemble(program())?])
}

/// The filters, built once per process.
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

    use std::collections::BTreeMap;

    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    #[cfg(target_arch = "x86_64")]
    const ARCH: TargetArch = TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    const ARCH: TargetArch = TargetArch::aarch64;

    fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).unwrap()
    }

    fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> BpfProgram {
        SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            ARCH,
        )
        .unwrap()
        .try_into()
        .unwrap()
    }

    /// The same rules written for seccompiler (linear chains): the
    /// reference the hand-built program is checked against.
    fn reference() -> Vec<BpfProgram> {
        let any_ns_flag = || -> Vec<SeccompRule> {
            NS_FLAGS
                .iter()
                .map(|&f| SeccompRule::new(vec![cond(0, SeccompCmpOp::MaskedEq(f), f)]).unwrap())
                .collect()
        };
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            denied().into_iter().map(|n| (n, Vec::new())).collect();
        rules.insert(libc::SYS_clone, any_ns_flag());
        rules.insert(libc::SYS_unshare, any_ns_flag());
        let not_allowed: Vec<SeccompCondition> = PERSONALITIES
            .iter()
            .map(|&p| cond(0, SeccompCmpOp::Ne, p))
            .collect();
        rules.insert(
            libc::SYS_personality,
            vec![SeccompRule::new(not_allowed).unwrap()],
        );
        let mut rules3 = BTreeMap::new();
        rules3.insert(libc::SYS_clone3, Vec::new());
        vec![compile(rules, libc::EPERM), compile(rules3, libc::ENOSYS)]
    }

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
                c if c & 0x07 == libc::BPF_ALU && c & 0xf0 == libc::BPF_AND => acc &= f.k,
                other => panic!("instruction {other:#x} not emulated"),
            }
        }
    }

    /// The kernel's verdict over several filters: the one of highest
    /// precedence (lowest action, signed).
    fn verdict(progs: &[BpfProgram], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        progs
            .iter()
            .map(|p| run(p, nr, arch, args))
            .min_by_key(|r| (r & 0xffff_0000) as i32)
            .unwrap()
    }

    #[test]
    fn one_small_filter() {
        let f = filters().unwrap();
        assert_eq!(f.len(), 1);
        assert!(f[0].len() < 150, "{}", f[0].len());
        let old: usize = reference().iter().map(Vec::len).sum();
        assert!(f[0].len() * 3 < old, "{} vs {old}", f[0].len());
    }

    #[test]
    fn decides_like_the_seccompiler_rules() {
        let new = filters().unwrap();
        let old = reference();
        let mut args_to_try: Vec<u64> = vec![
            0,
            libc::SIGCHLD as u64,
            (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND) as u64,
            (libc::CLONE_THREAD | libc::CLONE_SETTLS) as u64,
            0xffff_ffff,
            0x1_0000_0000,
            0xffff_ffff_ffff_ffff,
            0x1_0000_0008,
        ];
        for f in NS_FLAGS {
            args_to_try.extend([f, f | libc::SIGCHLD as u64, f | 0x1_0000_0000]);
        }
        args_to_try.extend(PERSONALITIES);
        args_to_try.extend(PERSONALITIES.map(|p| p + 1));
        let mut checked = 0;
        for arch in [AUDIT_ARCH, 0x4000_0003 /* i386 */, 0] {
            for nr in 0..1024u32 {
                for &a0 in &args_to_try {
                    let args = [a0, 1, 2, 3, 4, 5];
                    assert_eq!(
                        verdict(new, nr, arch, args),
                        verdict(&old, nr, arch, args),
                        "call {nr} arch {arch:#x} arg0 {a0:#x}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 10_000);
        // The answers that matter, spelled out.
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let v = |nr: i64, a0: u64| verdict(new, nr as u32, AUDIT_ARCH, [a0, 0, 0, 0, 0, 0]);
        assert_eq!(v(libc::SYS_mount, 0), eperm);
        assert_eq!(v(libc::SYS_getpid, 0), libc::SECCOMP_RET_ALLOW);
        assert_eq!(
            v(libc::SYS_clone, libc::SIGCHLD as u64),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(v(libc::SYS_clone, libc::CLONE_NEWNS as u64), eperm);
        assert_eq!(v(libc::SYS_unshare, libc::CLONE_NEWUSER as u64), eperm);
        assert_eq!(
            v(libc::SYS_clone3, 0),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(
            v(libc::SYS_personality, 0xffff_ffff),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(v(libc::SYS_personality, 0x1_0000_0000), eperm);
        assert_eq!(v(libc::SYS_personality, 0x0040_0000), eperm);
        assert_eq!(
            verdict(new, 0, 0x4000_0003, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_are_denied() {
        let new = filters().unwrap();
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        for nr in [
            0,
            libc::SYS_mount as u32,
            libc::SYS_getpid as u32,
            512,
            0xffff,
        ] {
            let x32 = nr | X32_SYSCALL_BIT;
            assert_eq!(verdict(new, x32, AUDIT_ARCH, [0; 6]), eperm, "{x32:#x}");
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
