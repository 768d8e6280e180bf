//! A Docker/OCI JSON profile as a [`Policy`], with runc's and Docker's
//! reading of it:
//! - names this architecture does not have are skipped;
//! - Docker's `includes`/`excludes` are decided here: `caps` against the
//!   workload's bounding set, `arches` against `amd64`, `minKernel`
//!   against the running kernel;
//! - a rule's argument conditions must all hold, except that conditions
//!   on the same argument each make a rule of their own (runc's rule, on
//!   which Docker's own profiles rely);
//! - for one call, rules with conditions are tried first, in the order of
//!   the file; then its first rule without conditions; then the default.
//!
//! Comparisons are libseccomp's: unsigned, on all 64 bits.

use std::collections::BTreeMap;

use isolate_core::{SeccompAction, SeccompFilter, SeccompOp, SeccompProfile};

use super::{syscall_number, Action, Cond, Decision, Op, Policy, Rule, Width};

/// This architecture in Go's names (Docker's `includes.arches`).
const GO_ARCH: &str = "amd64";

/// The action of a profile's action and errno.
fn action(a: SeccompAction, errno: Option<u32>) -> Action {
    let errno = errno.map_or(libc::EPERM as u16, |e| e as u16);
    match a {
        SeccompAction::Allow => Action::Allow,
        SeccompAction::Errno => Action::Errno(errno),
        SeccompAction::Kill | SeccompAction::KillThread => Action::KillThread,
        SeccompAction::KillProcess => Action::KillProcess,
        SeccompAction::Trap => Action::Trap,
        SeccompAction::Trace => Action::Trace(errno),
        SeccompAction::Log => Action::Log,
        // Refused by SeccompProfile::validate; never reached.
        SeccompAction::Notify => Action::KillProcess,
    }
}

fn op(o: SeccompOp) -> Op {
    match o {
        SeccompOp::NotEqual => Op::Ne,
        SeccompOp::LessThan => Op::Lt,
        SeccompOp::LessOrEqual => Op::Le,
        SeccompOp::Equal => Op::Eq,
        SeccompOp::GreaterOrEqual => Op::Ge,
        SeccompOp::GreaterThan => Op::Gt,
        SeccompOp::MaskedEqual => Op::MaskedEq,
    }
}

/// The running kernel's `(major, minor)`.
fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    isolate_core::parse_kernel_version(release.trim())
}

/// The facts `includes`/`excludes` are decided on.
struct Host {
    caps: u64,
    kernel: Option<(u32, u32)>,
}

impl Host {
    /// Whether every part of `f` holds (`all`: includes) or any does
    /// (`!all`: excludes); an empty filter is `all`.
    /// A capability isolate does not know is not held.
    fn matches(&self, f: &SeccompFilter, all: bool) -> bool {
        let mut parts = Vec::new();
        for c in &f.caps {
            let held = crate::caps::number(c).is_some_and(|n| self.caps & (1u64 << n) != 0);
            parts.push(held);
        }
        if !f.arches.is_empty() {
            parts.push(f.arches.iter().any(|a| a == GO_ARCH));
        }
        // Checked by SeccompProfile::validate.
        if let Ok(Some(min)) = f.min_kernel() {
            parts.push(self.kernel.is_some_and(|k| k >= min));
        }
        if all {
            parts.iter().all(|&p| p)
        } else {
            parts.iter().any(|&p| p)
        }
    }
}

/// The policy of a profile for a workload with bounding set `caps`.
pub fn policy(p: &SeccompProfile, caps: u64) -> Policy {
    let host = Host {
        caps,
        kernel: kernel_version(),
    };
    let default = action(p.default_action, p.default_errno_ret);
    // Per call: conditional rules in order, then unconditional actions.
    let mut conditional: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
    let mut unconditional: BTreeMap<u32, Action> = BTreeMap::new();
    for s in &p.syscalls {
        if s.includes.as_ref().is_some_and(|f| !host.matches(f, true))
            || s.excludes.as_ref().is_some_and(|f| host.matches(f, false))
        {
            continue;
        }
        let act = action(s.action, s.errno_ret);
        let conds: Vec<Cond> = s
            .args
            .iter()
            .map(|a| Cond::new(a.index as u8, Width::Full64, op(a.op), a.value, a.value_two))
            .collect();
        let shared_index = conds
            .iter()
            .enumerate()
            .any(|(i, c)| conds[..i].iter().any(|d| d.arg == c.arg));
        let rules: Vec<Rule> = if shared_index {
            conds.iter().map(|&c| Rule::new(c, act)).collect()
        } else if conds.is_empty() {
            Vec::new()
        } else {
            vec![Rule { conds, action: act }]
        };
        for nr in s.all_names().filter_map(syscall_number) {
            if rules.is_empty() {
                unconditional.entry(nr).or_insert(act);
            } else {
                conditional
                    .entry(nr)
                    .or_default()
                    .extend(rules.iter().cloned());
            }
        }
    }
    let above = if default.runs() {
        default
    } else {
        Action::Errno(libc::ENOSYS as u16)
    };
    let mut policy = Policy::new(default, above);
    for (&nr, &a) in &unconditional {
        policy.set(nr, Decision::always(a));
    }
    for (nr, rules) in conditional {
        let otherwise = unconditional.get(&nr).copied().unwrap_or(default);
        policy.set(nr, Decision { rules, otherwise });
    }
    policy
}
