//! The workload's seccomp filter: default deny, as Docker does.
//!
//! The policy is one of three ([`isolate_core::Seccomp`]):
//! - the default ([`default`]): Docker's default profile for x86_64 and
//!   the workload's capabilities — an allowlist; everything else fails
//!   with `EPERM` — with argument rules (`clone` without namespace flags,
//!   `clone3` → `ENOSYS`, Docker's `personality` values, `socket` without
//!   `AF_ALG`/`AF_VSOCK`, `ioctl` without `TIOCSTI`/`TIOCLINUX`);
//! - a user's Docker/OCI JSON profile ([`profile`]);
//! - none (`unconfined`).
//!
//! Both profiles become the same [`Policy`] (a [`Decision`] per call
//! number) and are compiled here, by one compiler, to one classic BPF
//! program: check the architecture (any other is killed: i386 calls
//! would otherwise reach a second, unfiltered table), refuse x32 calls
//! (`EPERM`), then find the call number by binary search over the ranges
//! of numbers that share a decision (about 8 comparisons for any call).
//! A comparison whose side is one range without argument checks jumps
//! straight to a `RET` shared by every range with that action, at the end
//! of the program; argument checks are inlined at the one place of their
//! call. So the default is about one instruction per range (125 in all,
//! against 103 for the old deny list). The kernel checks, translates and
//! compiles a filter at each install, in proportion to its length, and
//! then runs it once per call number to find the calls it always allows,
//! which it never runs the filter for again: calls allowed without an
//! argument check cost nothing after the install. A profile too long for
//! 8-bit jumps to the shared returns is laid out with a `RET` per range
//! and `JA`s over long subtrees instead. (seccompiler, which this crate
//! used before, builds linear chains and has one match action per
//! filter: a JSON profile would need a filter per action.)
//!
//! Call numbers above the last one isolate knows get `ENOSYS` when the
//! default denies (as runc does), so a newer libc probing a call the
//! kernel may lack falls back instead of failing with `EPERM`.

pub mod default;
mod profile;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use std::borrow::Cow;
use std::sync::OnceLock;

use isolate_core::Seccomp;
use seccompiler::{sock_filter, BpfProgram};

#[cfg(target_arch = "x86_64")]
use x86_64::SYSCALLS;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("isolate's seccomp filter has a call table for x86_64 only");

/// `AUDIT_ARCH_*` of this architecture, as `seccomp_data.arch` holds it.
pub const AUDIT_ARCH: u32 = 0xc000_003e;

/// The x32 ABI's bit in x86_64 system call numbers.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The kernel's longest classic BPF program (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

/// Why a filter could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    /// The program is longer than the kernel accepts.
    #[error(
        "the filter has {0} instructions, more than the kernel's 4096; use fewer argument rules"
    )]
    TooLong(usize),
    /// A conditional jump does not fit in 8 bits (a rule with too many
    /// conditions).
    #[error("system call {nr}: its argument rules are too long for one filter")]
    RulesTooLong {
        /// The call number.
        nr: u32,
    },
}

/// What a filter returns (`SECCOMP_RET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run the call.
    Allow,
    /// Fail it with this errno.
    Errno(u16),
    /// Kill the process.
    KillProcess,
    /// Kill the thread.
    KillThread,
    /// `SIGSYS`.
    Trap,
    /// Tell a tracer, with this data.
    Trace(u16),
    /// Run the call and log it.
    Log,
}

impl Action {
    /// The filter's return value.
    pub fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | u32::from(e),
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Trace(d) => libc::SECCOMP_RET_TRACE | u32::from(d),
            Action::Log => libc::SECCOMP_RET_LOG,
        }
    }

    /// Whether a call with this action runs.
    fn runs(self) -> bool {
        matches!(self, Action::Allow | Action::Log)
    }
}

/// How much of an argument a condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// The low 32 bits (the kernel reads an `int` or `unsigned int`, so
    /// the high half must not decide).
    Low32,
    /// All 64 bits (libseccomp's and the JSON profiles' comparisons).
    Full64,
}

/// A comparison of an argument, unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `arg == value`
    Eq,
    /// `arg != value`
    Ne,
    /// `arg < value`
    Lt,
    /// `arg <= value`
    Le,
    /// `arg > value`
    Gt,
    /// `arg >= value`
    Ge,
    /// `arg & value == value_two`
    MaskedEq,
}

/// A condition on one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index, 0 to 5.
    pub arg: u8,
    /// How much of it.
    pub width: Width,
    /// The comparison.
    pub op: Op,
    /// The value (the mask for [`Op::MaskedEq`]).
    pub value: u64,
    /// The masked value for [`Op::MaskedEq`].
    pub value_two: u64,
}

impl Cond {
    /// A condition.
    pub fn new(arg: u8, width: Width, op: Op, value: u64, value_two: u64) -> Cond {
        Cond {
            arg,
            width,
            op,
            value,
            value_two,
        }
    }

    /// Evaluates the condition on an argument (what the BPF code does).
    #[cfg(test)]
    pub fn holds(&self, arg: u64) -> bool {
        let (a, v, v2) = match self.width {
            Width::Low32 => (arg & 0xffff_ffff, self.value & 0xffff_ffff, self.value_two),
            Width::Full64 => (arg, self.value, self.value_two),
        };
        match self.op {
            Op::Eq => a == v,
            Op::Ne => a != v,
            Op::Lt => a < v,
            Op::Le => a <= v,
            Op::Gt => a > v,
            Op::Ge => a >= v,
            Op::MaskedEq => match self.width {
                Width::Low32 => a & v == v2 & 0xffff_ffff,
                Width::Full64 => a & v == v2,
            },
        }
    }
}

/// Conditions that must all hold, and the action when they do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The conditions (all must hold).
    pub conds: Vec<Cond>,
    /// The action.
    pub action: Action,
}

impl Rule {
    /// A rule of one condition.
    pub fn new(cond: Cond, action: Action) -> Rule {
        Rule {
            conds: vec![cond],
            action,
        }
    }
}

/// What one call number gets: the first rule whose conditions hold
/// decides, else `otherwise`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Rules, tried in order.
    pub rules: Vec<Rule>,
    /// The action when no rule matches.
    pub otherwise: Action,
}

impl Decision {
    /// The same action whatever the arguments.
    pub fn always(action: Action) -> Decision {
        Decision {
            rules: Vec::new(),
            otherwise: action,
        }
    }

    /// The action for these arguments.
    #[cfg(test)]
    pub fn decide(&self, args: &[u64; 6]) -> Action {
        self.rules
            .iter()
            .find(|r| r.conds.iter().all(|c| c.holds(args[usize::from(c.arg)])))
            .map_or(self.otherwise, |r| r.action)
    }
}

/// A whole policy for native calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Decisions by call number, for every number up to the last one
    /// isolate knows.
    calls: Vec<Decision>,
    /// Call numbers above the last one isolate knows.
    above: Decision,
}

impl Policy {
    /// `default` for every call isolate knows, `above` for higher numbers.
    pub fn new(default: Action, above: Action) -> Policy {
        Policy {
            calls: vec![Decision::always(default); max_syscall() as usize + 1],
            above: Decision::always(above),
        }
    }

    /// Sets the decision for a call (a number from the call table).
    pub fn set(&mut self, nr: u32, d: Decision) {
        if let Some(slot) = self.calls.get_mut(nr as usize) {
            *slot = d;
        }
    }

    /// The action for a native call (the reference the BPF program is
    /// tested against).
    #[cfg(test)]
    pub fn decide(&self, nr: u32, args: &[u64; 6]) -> Action {
        if nr >= X32_SYSCALL_BIT {
            return X32_ACTION;
        }
        self.calls
            .get(nr as usize)
            .unwrap_or(&self.above)
            .decide(args)
    }
}

/// What x32 calls get, whatever the policy: a blocklist written for
/// x86_64 numbers must not be bypassed through the x32 table.
const X32_ACTION: Action = Action::Errno(libc::EPERM as u16);

/// The number of a system call of this architecture, by name.
pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| SYSCALLS[i].1)
}

/// The highest call number isolate knows.
fn max_syscall() -> u32 {
    const MAX: u32 = {
        let mut max = 0;
        let mut i = 0;
        while i < SYSCALLS.len() {
            if SYSCALLS[i].1 > max {
                max = SYSCALLS[i].1;
            }
            i += 1;
        }
        max
    };
    MAX
}

/// The programs a workload installs, in order (none when unconfined).
pub type Filters = Cow<'static, [BpfProgram]>;

/// The filters for a workload's policy and bounding capability set
/// (`caps`: bit `n` for capability `n`). The default for Docker's default
/// capabilities is built once per process.
pub fn filters(policy: &Seccomp, caps: u64) -> Result<Filters, SeccompError> {
    match policy {
        Seccomp::Unconfined => Ok(Cow::Borrowed(&[])),
        Seccomp::Default if caps == crate::caps::default_mask() => {
            static DEFAULT: OnceLock<Result<Vec<BpfProgram>, SeccompError>> = OnceLock::new();
            match DEFAULT.get_or_init(|| Ok(vec![compile(&default::policy(caps))?])) {
                Ok(f) => Ok(Cow::Borrowed(f.as_slice())),
                Err(e) => Err(e.clone()),
            }
        }
        Seccomp::Default => Ok(Cow::Owned(vec![compile(&default::policy(caps))?])),
        Seccomp::Profile(p) => Ok(Cow::Owned(vec![compile(&profile::policy(p, caps))?])),
    }
}

// ---------------------------------------------------------------------
// The compiler.

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// Low and high 32 bits of argument `i` (little-endian).
fn arg_lo(i: u8) -> u32 {
    16 + 8 * u32::from(i)
}
fn arg_hi(i: u8) -> u32 {
    arg_lo(i) + 4
}

fn insn(code: u32, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn ld(offset: u32) -> sock_filter {
    insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, offset)
}

fn ret(k: u32) -> sock_filter {
    insn(libc::BPF_RET | libc::BPF_K, 0, 0, k)
}

/// Compiles a policy to one program.
pub fn compile(p: &Policy) -> Result<BpfProgram, SeccompError> {
    let mut prog = vec![
        ld(ARCH),
        insn(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            1,
            0,
            AUDIT_ARCH,
        ),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
        ld(NR),
        insn(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            0,
            1,
            X32_SYSCALL_BIT,
        ),
        ret(X32_ACTION.ret()),
    ];
    let iv = intervals(p);
    match compact(&iv) {
        Some(code) => prog.extend(code),
        None => prog.extend(tree(&iv)?),
    }
    if prog.len() > MAX_INSNS {
        return Err(SeccompError::TooLong(prog.len()));
    }
    Ok(prog)
}

/// The native call numbers `0..X32_SYSCALL_BIT` as ranges that share a
/// decision: `(first number, decision)`, sorted.
fn intervals(p: &Policy) -> Vec<(u32, &Decision)> {
    let mut out: Vec<(u32, &Decision)> = Vec::new();
    let all = p.calls.iter().chain(std::iter::once(&p.above));
    for (nr, d) in all.enumerate() {
        match out.last() {
            Some((_, last)) if *last == d => {}
            _ => out.push((nr as u32, d)),
        }
    }
    out
}

/// The binary search with one shared `RET` per action at the end, to
/// which every range that needs no argument check jumps straight from
/// its comparison: about one instruction per range, plus the argument
/// checks. `None` when a jump would not fit in 8 bits (a long profile),
/// for [`tree`] to lay the program out instead.
fn compact(iv: &[(u32, &Decision)]) -> Option<Vec<sock_filter>> {
    let mut c = Compact::default();
    c.emit(iv);
    for (k, l) in std::mem::take(&mut c.returns) {
        c.code.push(Asm::Label(l));
        c.code.push(Asm::Insn(ret(k)));
    }
    resolve(&c.code, c.labels).ok()
}

/// The state of [`compact`].
#[derive(Default)]
struct Compact {
    code: Vec<Asm>,
    labels: usize,
    /// Shared returns: (return value, label).
    returns: Vec<(u32, usize)>,
}

impl Compact {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }

    /// Where a range without argument checks goes; `None` if it has some.
    fn simple(&mut self, iv: &[(u32, &Decision)]) -> Option<To> {
        match iv {
            [(_, d)] if d.rules.is_empty() => {
                let k = d.otherwise.ret();
                let l = match self.returns.iter().find(|r| r.0 == k) {
                    Some(&(_, l)) => l,
                    None => {
                        let l = self.label();
                        self.returns.push((k, l));
                        l
                    }
                };
                Some(To::L(l))
            }
            _ => None,
        }
    }

    fn emit(&mut self, iv: &[(u32, &Decision)]) {
        if let [(_, d)] = iv {
            let mut next = self.labels;
            rules_block(d, &mut self.code, &mut || {
                next += 1;
                next - 1
            });
            self.labels = next;
            return;
        }
        let mid = iv.len() / 2;
        let (left, right) = (&iv[..mid], &iv[mid..]);
        let jf = self.simple(left);
        let jt = self.simple(right);
        let right_label = self.label();
        self.code.push(Asm::Jump {
            op: libc::BPF_JGE,
            k: iv[mid].0,
            jt: jt.unwrap_or(To::L(right_label)),
            jf: jf.unwrap_or(To::Next),
        });
        if jf.is_none() {
            self.emit(left);
        }
        self.code.push(Asm::Label(right_label));
        if jt.is_none() {
            self.emit(right);
        }
    }
}

/// The binary search over `iv`; the accumulator holds the call number,
/// known to be at least `iv[0].0`. Every jump is relative and short: a
/// subtree too long to jump over goes behind a `JA`.
fn tree(iv: &[(u32, &Decision)]) -> Result<Vec<sock_filter>, SeccompError> {
    if iv.len() == 1 {
        return leaf(iv[0].0, iv[0].1);
    }
    let mid = iv.len() / 2;
    let left = tree(&iv[..mid])?;
    let right = tree(&iv[mid..])?;
    let jge = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
    let mut out = Vec::with_capacity(left.len() + right.len() + 2);
    match u8::try_from(left.len()) {
        Ok(skip) => out.push(insn(jge, skip, 0, iv[mid].0)),
        Err(_) => {
            out.push(insn(jge, 0, 1, iv[mid].0));
            out.push(insn(libc::BPF_JMP | libc::BPF_JA, 0, 0, left.len() as u32));
        }
    }
    out.extend(left);
    out.extend(right);
    Ok(out)
}

/// A jump target inside a leaf.
#[derive(Debug, Clone, Copy)]
enum To {
    /// The next instruction.
    Next,
    /// A label.
    L(usize),
}

/// A leaf's instruction before its labels are resolved.
#[derive(Debug)]
enum Asm {
    Insn(sock_filter),
    Jump { op: u32, k: u32, jt: To, jf: To },
    Label(usize),
}

/// The code of one range of call numbers: a return, or the argument
/// rules of one call.
fn leaf(nr: u32, d: &Decision) -> Result<Vec<sock_filter>, SeccompError> {
    if d.rules.is_empty() {
        return Ok(vec![ret(d.otherwise.ret())]);
    }
    let mut a = Vec::new();
    let mut labels = 0;
    rules_block(d, &mut a, &mut || {
        labels += 1;
        labels - 1
    });
    resolve(&a, labels).map_err(|()| SeccompError::RulesTooLong { nr })
}

/// Emits the rules of one call, each ending in its `RET`, then the
/// `RET` of `otherwise`; `label` makes fresh labels.
fn rules_block(d: &Decision, a: &mut Vec<Asm>, label: &mut impl FnMut() -> usize) {
    for r in &d.rules {
        let fail = label();
        for c in &r.conds {
            let pass = label();
            cond(c, To::L(pass), To::L(fail), a);
            a.push(Asm::Label(pass));
        }
        a.push(Asm::Insn(ret(r.action.ret())));
        a.push(Asm::Label(fail));
    }
    a.push(Asm::Insn(ret(d.otherwise.ret())));
}

/// Emits a test of `c` that jumps to `pass` or `fail`.
fn cond(c: &Cond, pass: To, fail: To, a: &mut Vec<Asm>) {
    let lo = |v: u64| v as u32;
    let hi = |v: u64| (v >> 32) as u32;
    let j = |op: u32, k: u32, jt: To, jf: To| Asm::Jump { op, k, jt, jf };
    let (jeq, jgt, jge) = (libc::BPF_JEQ, libc::BPF_JGT, libc::BPF_JGE);
    let load = |off: u32| Asm::Insn(ld(off));
    let and = |k: u32| Asm::Insn(insn(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, 0, 0, k));
    let (v, v2) = (c.value, c.value_two);
    let i = c.arg;
    match c.width {
        Width::Low32 => {
            a.push(load(arg_lo(i)));
            if c.op == Op::MaskedEq {
                a.push(and(lo(v)));
            }
            a.push(match c.op {
                Op::Eq => j(jeq, lo(v), pass, fail),
                Op::Ne => j(jeq, lo(v), fail, pass),
                Op::Gt => j(jgt, lo(v), pass, fail),
                Op::Ge => j(jge, lo(v), pass, fail),
                Op::Lt => j(jge, lo(v), fail, pass),
                Op::Le => j(jgt, lo(v), fail, pass),
                Op::MaskedEq => j(jeq, lo(v2), pass, fail),
            });
        }
        Width::Full64 => match c.op {
            Op::Eq | Op::Ne => {
                let (t, f) = if c.op == Op::Eq {
                    (pass, fail)
                } else {
                    (fail, pass)
                };
                a.extend([
                    load(arg_hi(i)),
                    j(jeq, hi(v), To::Next, f),
                    load(arg_lo(i)),
                    j(jeq, lo(v), t, f),
                ]);
            }
            Op::MaskedEq => a.extend([
                load(arg_hi(i)),
                and(hi(v)),
                j(jeq, hi(v2), To::Next, fail),
                load(arg_lo(i)),
                and(lo(v)),
                j(jeq, lo(v2), pass, fail),
            ]),
            Op::Gt | Op::Ge | Op::Lt | Op::Le => {
                // Greater (or equal) when the high half is greater, or
                // equal and the low half is; Lt/Le are their negations.
                let (last, t, f) = match c.op {
                    Op::Gt => (jgt, pass, fail),
                    Op::Ge => (jge, pass, fail),
                    Op::Lt => (jge, fail, pass),
                    _ => (jgt, fail, pass),
                };
                a.extend([
                    load(arg_hi(i)),
                    j(jgt, hi(v), t, To::Next),
                    j(jeq, hi(v), To::Next, f),
                    load(arg_lo(i)),
                    j(last, lo(v), t, f),
                ]);
            }
        },
    }
}

/// Resolves the labels of a leaf; `Err` if a jump does not fit.
fn resolve(a: &[Asm], labels: usize) -> Result<Vec<sock_filter>, ()> {
    let mut at = vec![usize::MAX; labels];
    let mut pc = 0;
    for x in a {
        match x {
            Asm::Label(l) => at[*l] = pc,
            _ => pc += 1,
        }
    }
    let mut out = Vec::with_capacity(pc);
    for x in a {
        match x {
            Asm::Label(_) => {}
            Asm::Insn(f) => out.push(sock_filter { ..*f }),
            &Asm::Jump { op, k, jt, jf } => {
                let here = out.len();
                let off = |t: To| -> Result<u8, ()> {
                    match t {
                        To::Next => Ok(0),
                        To::L(l) => u8::try_from(at[l] - here - 1).map_err(drop),
                    }
                };
                out.push(insn(
                    libc::BPF_JMP | op | libc::BPF_K,
                    off(jt)?,
                    off(jf)?,
                    k,
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
