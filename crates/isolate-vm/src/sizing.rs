//! How much RAM the guest gets.
//!
//! The workload's memory limit is what the *workload* may use: the guest
//! init puts it in a guest cgroup with `memory.max` = the limit. The guest
//! kernel, the init and the unpacked initramfs need memory of their own, so
//! guest RAM is
//!
//! ```text
//! guest RAM = limit + GUEST_OVERHEAD + 2 × initrd size   (rounded up to 2 MiB)
//! ```
//!
//! (the initrd is in RAM twice while it is unpacked). Without a limit the
//! guest gets [`DEFAULT_GUEST_MEMORY`] (or more if the initrd needs it) and
//! the workload no `memory.max`. Guest RAM must fit below the MMIO window
//! ([`crate::layout::MAX_GUEST_MEMORY`]) and in the host's RAM.

use crate::layout::MAX_GUEST_MEMORY;

/// Guest RAM for a workload without a memory limit.
pub const DEFAULT_GUEST_MEMORY: u64 = 256 << 20;
/// RAM the guest kernel and init need besides the workload and the initrd.
pub const GUEST_OVERHEAD: u64 = 40 << 20;

const ALIGN: u64 = 2 << 20;

/// Why a guest cannot be sized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizingError {
    /// More than VM mode can address.
    #[error("a memory limit of {limit_mib} MiB needs {needed_mib} MiB of guest RAM (limit + {overhead} MiB for the guest kernel + the initrd), more than the {max_mib} MiB VM mode supports")]
    AboveMax {
        /// The limit, MiB.
        limit_mib: u64,
        /// Guest RAM needed, MiB.
        needed_mib: u64,
        /// Overhead, MiB.
        overhead: u64,
        /// Maximum, MiB.
        max_mib: u64,
    },
    /// More than the host has.
    #[error("a memory limit of {limit_mib} MiB needs {needed_mib} MiB of guest RAM, more than this host's {host_mib} MiB")]
    AboveHost {
        /// The limit, MiB.
        limit_mib: u64,
        /// Guest RAM needed, MiB.
        needed_mib: u64,
        /// Host RAM, MiB.
        host_mib: u64,
    },
}

/// Guest RAM for `limit` (None: unlimited) and an initrd of `initrd_len`
/// bytes on a host with `host_mem` bytes of RAM (None: unknown).
pub fn guest_memory(
    limit: Option<u64>,
    initrd_len: u64,
    host_mem: Option<u64>,
) -> Result<u64, SizingError> {
    let base = GUEST_OVERHEAD + 2 * initrd_len;
    let needed = match limit {
        Some(l) => l.saturating_add(base),
        None => DEFAULT_GUEST_MEMORY.max(base + (32 << 20)),
    }
    .next_multiple_of(ALIGN);
    let limit_mib = limit.unwrap_or(0) >> 20;
    if needed > MAX_GUEST_MEMORY {
        return Err(SizingError::AboveMax {
            limit_mib,
            needed_mib: needed >> 20,
            overhead: GUEST_OVERHEAD >> 20,
            max_mib: MAX_GUEST_MEMORY >> 20,
        });
    }
    if let Some(host) = host_mem {
        if needed > host {
            return Err(SizingError::AboveHost {
                limit_mib,
                needed_mib: needed >> 20,
                host_mib: host >> 20,
            });
        }
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_plus_overhead_plus_initrd() {
        let m = guest_memory(Some(128 << 20), 3 << 20, None).unwrap();
        assert_eq!(m, (128 + 40 + 6) << 20);
        assert_eq!(m % ALIGN, 0);
    }

    #[test]
    fn default_without_limit() {
        assert_eq!(
            guest_memory(None, 1 << 20, None).unwrap(),
            DEFAULT_GUEST_MEMORY
        );
        // A large initrd raises the default.
        assert_eq!(
            guest_memory(None, 200 << 20, None).unwrap(),
            (40 + 400 + 32) << 20
        );
    }

    #[test]
    fn refuses_more_than_host_or_mmio_window() {
        let e = guest_memory(Some(8 << 30), 0, None).unwrap_err();
        assert!(matches!(e, SizingError::AboveMax { .. }), "{e}");
        let e = guest_memory(Some(1 << 30), 0, Some(512 << 20)).unwrap_err();
        assert!(
            e.to_string().contains("more than this host's 512 MiB"),
            "{e}"
        );
    }
}
