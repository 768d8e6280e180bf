//! Capabilities: Docker's default set of 14, changed by
//! [`Capabilities`](isolate_core::Capabilities) `add`/`drop`, as a bit mask
//! the child applies to its bounding, permitted and effective sets.

/// A capability name no kernel knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {0:?}; use names like NET_ADMIN or CAP_NET_ADMIN")]
pub struct UnknownCapability(pub String);

/// Every capability name the kernel knows, indexed by number.
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capabilities.
pub const DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The name (without `CAP_`) of capability `n`, if isolate knows it.
pub fn name(n: u32) -> Option<&'static str> {
    NAMES.get(n as usize).copied()
}

/// The number of a capability name (with or without `CAP_`, any case).
pub fn number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|i| i as u32)
}

/// The mask of Docker's default set.
pub fn default_mask() -> u64 {
    DEFAULT
        .iter()
        .map(|n| 1u64 << number(n).expect("default capability names are known"))
        .sum()
}

/// The mask the workload gets: the default set, minus `drop` (`ALL` drops
/// everything), plus `add` (`ALL` adds everything the kernel knows).
pub fn mask(caps: &isolate_core::Capabilities) -> Result<u64, UnknownCapability> {
    let all = (1u64 << NAMES.len()) - 1;
    let parse = |name: &String| -> Result<u64, UnknownCapability> {
        if name.eq_ignore_ascii_case("ALL") {
            return Ok(all);
        }
        number(name)
            .map(|n| 1u64 << n)
            .ok_or_else(|| UnknownCapability(name.clone()))
    };
    let mut m = default_mask();
    for d in &caps.drop {
        m &= !parse(d)?;
    }
    for a in &caps.add {
        m |= parse(a)?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_has_fourteen_known_caps() {
        assert_eq!(default_mask().count_ones(), 14);
        // CHOWN(0) DAC_OVERRIDE(1) FOWNER(3) FSETID(4) KILL(5) SETGID(6)
        // SETUID(7) SETPCAP(8) NET_BIND_SERVICE(10) NET_RAW(13)
        // SYS_CHROOT(18) MKNOD(27) AUDIT_WRITE(29) SETFCAP(31)
        assert_eq!(default_mask(), 0xa80425fb);
    }

    #[test]
    fn names_accept_prefix_and_case() {
        assert_eq!(number("CAP_NET_ADMIN"), Some(12));
        assert_eq!(number("net_admin"), Some(12));
        assert_eq!(number("NOPE"), None);
    }

    #[test]
    fn add_and_drop_change_the_default() {
        let c = isolate_core::Capabilities {
            add: vec!["NET_ADMIN".into()],
            drop: vec!["CAP_CHOWN".into()],
        };
        let m = mask(&c).unwrap();
        assert_eq!(m, (default_mask() | 1 << 12) & !1);
        let none = isolate_core::Capabilities {
            add: vec![],
            drop: vec!["all".into()],
        };
        assert_eq!(mask(&none).unwrap(), 0);
    }

    #[test]
    fn rejects_unknown_names() {
        let c = isolate_core::Capabilities {
            add: vec!["FLY".into()],
            drop: vec![],
        };
        assert!(matches!(mask(&c), Err(UnknownCapability(_))));
    }
}
