//! Device access of a cgroup: which device nodes its processes may open,
//! whatever nodes they can create.
//!
//! Enforced by the kernel at `open(2)` and `mknod(2)`: on cgroup v1 by the
//! `devices` controller (`devices.deny` then `devices.allow`), on cgroup v2
//! by a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup, which
//! this module assembles from the same rules.
//!
//! ```
//! use isolate_cgroups::devices::{DeviceRule, DEFAULT_RULES};
//!
//! // Docker's default: any node may be made, only these may be opened.
//! assert!(DEFAULT_RULES.iter().any(|r| r.v1_line() == "c 1:3 rwm")); // /dev/null
//! let kvm = DeviceRule::char(10, 232, "rw");
//! assert_eq!(kvm.v1_line(), "c 10:232 rw");
//! assert!(!DeviceRule::allows_any(DEFAULT_RULES, kvm));
//! ```

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::error::CgroupError;

/// Kind of device node a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Character devices (`c`).
    Char,
    /// Block devices (`b`).
    Block,
    /// Both (`a`).
    All,
}

/// Access bits of a rule, as the kernel numbers them for BPF
/// (`BPF_DEVCG_ACC_*`).
pub const MKNOD: u8 = 1;
/// Read access.
pub const READ: u8 = 2;
/// Write access.
pub const WRITE: u8 = 4;

/// One allow rule: kind, major and minor (`None`: any), access bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Which kind of node.
    pub kind: DeviceKind,
    /// Major number, `None` for any.
    pub major: Option<u32>,
    /// Minor number, `None` for any.
    pub minor: Option<u32>,
    /// [`MKNOD`] | [`READ`] | [`WRITE`].
    pub access: u8,
}

const fn rule(kind: DeviceKind, major: Option<u32>, minor: Option<u32>, access: u8) -> DeviceRule {
    DeviceRule {
        kind,
        major,
        minor,
        access,
    }
}

const RWM: u8 = READ | WRITE | MKNOD;

/// Docker's default device access: `mknod` of any node, and read, write
/// and `mknod` of null, zero, full, random, urandom, tty, console, ptmx
/// and the pseudo-terminal slaves (major 136).
pub const DEFAULT_RULES: &[DeviceRule] = &[
    rule(DeviceKind::Char, None, None, MKNOD),
    rule(DeviceKind::Block, None, None, MKNOD),
    rule(DeviceKind::Char, Some(1), Some(3), RWM),
    rule(DeviceKind::Char, Some(1), Some(5), RWM),
    rule(DeviceKind::Char, Some(1), Some(7), RWM),
    rule(DeviceKind::Char, Some(1), Some(8), RWM),
    rule(DeviceKind::Char, Some(1), Some(9), RWM),
    rule(DeviceKind::Char, Some(5), Some(0), RWM),
    rule(DeviceKind::Char, Some(5), Some(1), RWM),
    rule(DeviceKind::Char, Some(5), Some(2), RWM),
    rule(DeviceKind::Char, Some(136), None, RWM),
];

impl DeviceRule {
    /// A rule for one character device; `access` is docker's `rwm` letters.
    pub fn char(major: u32, minor: u32, access: &str) -> DeviceRule {
        rule(
            DeviceKind::Char,
            Some(major),
            Some(minor),
            access_bits(access),
        )
    }

    /// A rule for one block device; `access` is docker's `rwm` letters.
    pub fn block(major: u32, minor: u32, access: &str) -> DeviceRule {
        rule(
            DeviceKind::Block,
            Some(major),
            Some(minor),
            access_bits(access),
        )
    }

    /// The rule as a line of v1 `devices.allow` (`c 1:3 rwm`).
    pub fn v1_line(&self) -> String {
        let kind = match self.kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
            DeviceKind::All => 'a',
        };
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        let mut acc = String::new();
        for (bit, c) in [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        format!("{kind} {}:{} {acc}", num(self.major), num(self.minor))
    }

    /// Whether some rule of `rules` grants all of `want`'s access to the
    /// device `want` names (the same decision the kernel makes).
    pub fn allows_any(rules: &[DeviceRule], want: DeviceRule) -> bool {
        rules.iter().any(|r| {
            (r.kind == DeviceKind::All || r.kind == want.kind)
                && want.access & !r.access == 0
                && (r.major.is_none() || r.major == want.major)
                && (r.minor.is_none() || r.minor == want.minor)
        })
    }
}

/// Docker's `rwm` letters as access bits (other letters are ignored;
/// callers validate them).
pub fn access_bits(letters: &str) -> u8 {
    letters.chars().fold(0, |acc, c| {
        acc | match c {
            'r' => READ,
            'w' => WRITE,
            'm' => MKNOD,
            _ => 0,
        }
    })
}

/// Applies `rules` to a v1 `devices` cgroup directory: deny all, then
/// allow each rule.
pub(crate) fn apply_v1(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    crate::fs::write(&dir.join("devices.deny"), "a")?;
    for r in rules {
        crate::fs::write(&dir.join("devices.allow"), &r.v1_line())?;
    }
    Ok(())
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used (see linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54; // dst = (u32)dst & imm
const ALU32_RSH_K: u8 = 0x74; // dst = (u32)dst >> imm
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const ALU64_MOV_X: u8 = 0xbf; // dst = src
const JMP_JNE_K: u8 = 0x55; // if dst != imm: pc += off
const EXIT: u8 = 0x95;

/// Assembles the cgroup-device program for `rules`: it returns 1 (allow)
/// when a rule matches the access, else 0 (deny).
///
/// Registers: r1 the context (`struct bpf_cgroup_dev_ctx`: `access_type`
/// with the device type in the low 16 bits and the access bits in the
/// high 16, then `major`, `minor`), r2 type, r3 access, r4 major, r5 minor.
pub(crate) fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_MOV_X, 3, 2, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules {
        // Each test jumps past this rule's block when it does not match.
        let mut tests: Vec<(u8, i32)> = Vec::new();
        match r.kind {
            DeviceKind::Char => tests.push((2, 2)),  // BPF_DEVCG_DEV_CHAR
            DeviceKind::Block => tests.push((2, 1)), // BPF_DEVCG_DEV_BLOCK
            DeviceKind::All => {}
        }
        if let Some(m) = r.major {
            tests.push((4, m as i32));
        }
        if let Some(m) = r.minor {
            tests.push((5, m as i32));
        }
        // Access: (r3 & !allowed) must be 0; r0 is the scratch register.
        let n = tests.len() + 3 + 2; // tests, access (3), r0 = 1, exit
        let mut left = n as i16;
        for (reg, imm) in tests {
            left -= 1;
            p.push(insn(JMP_JNE_K, reg, 0, left, imm));
        }
        p.push(insn(ALU64_MOV_X, 0, 3, 0, 0));
        p.push(insn(ALU32_AND_K, 0, 0, 0, !(r.access as i32) & 0xffff));
        p.push(insn(JMP_JNE_K, 0, 0, 2, 0));
        p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// Loads the program for `rules` and attaches it to the v2 cgroup `dir`.
/// The cgroup keeps the program; no descriptor stays open.
pub(crate) fn apply_v2(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    let fail = |what: &'static str, source: std::io::Error| CgroupError::Devices {
        path: dir.to_owned(),
        what,
        source,
    };
    let prog = program(rules);
    let license = c"GPL";
    // bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, then
    // fields left zero (no log).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(prog.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: `attr` is a bpf_attr of the size passed; the pointers in it
    // (`prog`, `license`) are valid for the call; the kernel copies them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        return Err(fail(
            "load the device filter (BPF_PROG_LOAD)",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` is a new descriptor this process owns alone.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cg = std::fs::File::open(dir).map_err(|e| fail("open the cgroup", e))?;
    // bpf_attr for BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type,
    // attach_flags (0: this cgroup's only program, not overridable).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(cg.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog_fd.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    // SAFETY: `attr` is a bpf_attr of the size passed, holding descriptors
    // this process owns; the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            attr.as_ptr(),
            attr.len() as u32,
        )
    };
    if rc < 0 {
        return Err(fail(
            "attach the device filter (BPF_PROG_ATTACH)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the assembled program on one access, as the kernel would.
    fn run(p: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [kind | (access << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                ALU32_AND_K => r[dst] = u64::from((r[dst] as u32) & (i.imm as u32)),
                ALU32_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc = (pc as i64 + i64::from(i.off)) as usize;
                    }
                }
                EXIT => return r[0],
                c => panic!("unknown opcode {c:#x}"),
            }
            assert!(pc < p.len(), "ran off the end");
        }
    }

    #[test]
    fn default_program_decides_as_the_rules_do() {
        let p = program(DEFAULT_RULES);
        for kind in [1u32, 2] {
            for access in 1u32..8 {
                for (major, minor) in [(1, 3), (1, 9), (5, 2), (136, 7), (10, 232), (7, 0), (1, 1)]
                {
                    let want = DeviceRule {
                        kind: if kind == 1 {
                            DeviceKind::Block
                        } else {
                            DeviceKind::Char
                        },
                        major: Some(major),
                        minor: Some(minor),
                        access: access as u8,
                    };
                    let expect = DeviceRule::allows_any(DEFAULT_RULES, want);
                    assert_eq!(
                        run(&p, kind, access, major, minor) == 1,
                        expect,
                        "{kind} {major}:{minor} access {access}"
                    );
                }
            }
        }
    }

    #[test]
    fn host_devices_are_refused_but_may_be_made() {
        let kvm = DeviceRule::char(10, 232, "rw");
        assert!(!DeviceRule::allows_any(DEFAULT_RULES, kvm));
        assert!(DeviceRule::allows_any(
            DEFAULT_RULES,
            DeviceRule::char(10, 232, "m")
        ));
        assert!(!DeviceRule::allows_any(
            DEFAULT_RULES,
            DeviceRule::block(7, 0, "r")
        ));
        assert!(DeviceRule::allows_any(
            DEFAULT_RULES,
            DeviceRule::char(1, 3, "rw")
        ));
    }

    /// The cgroup2 mount of this host (the root on unified hosts, usually
    /// `/sys/fs/cgroup/unified` on hybrid ones).
    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| f[1].into())
        })
    }

    /// Whether `sh`, moved into `dir`, can open `dev` for reading.
    fn can_open(dir: &Path, dev: &str) -> bool {
        let script = format!("echo $$ > {}/cgroup.procs && exec 3< {dev}", dir.display());
        std::process::Command::new("/bin/sh")
            .args(["-c", &script])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    #[test]
    fn v2_program_is_enforced_by_the_kernel() {
        if isolate_core::sys::rootless() {
            eprintln!("SKIP v2_program_is_enforced_by_the_kernel: needs root");
            return;
        }
        let Some(root) = cgroup2_mount() else {
            eprintln!("SKIP v2_program_is_enforced_by_the_kernel: no cgroup2 mount on this host");
            return;
        };
        let dir = root.join(format!("isolate-devtest-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let r = apply_v2(&dir, DEFAULT_RULES);
        let null = can_open(&dir, "/dev/null");
        let loop_control = can_open(&dir, "/dev/loop-control");
        let _ = std::fs::remove_dir(&dir);
        r.unwrap();
        assert!(null, "/dev/null must open");
        assert!(!loop_control, "/dev/loop-control must not open");
    }

    #[test]
    fn v1_lines_use_stars_for_any() {
        assert_eq!(DEFAULT_RULES[0].v1_line(), "c *:* m");
        assert_eq!(DEFAULT_RULES[10].v1_line(), "c 136:* rwm");
    }
}
