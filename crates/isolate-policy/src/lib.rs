//! The privileges a workload holds, the same under both boundaries:
//! Docker's default capability set changed by `--cap-add`/`--cap-drop`
//! ([`caps`]), and Docker's default seccomp filter or the user's profile
//! ([`seccomp`]). Container mode applies them to the workload's process;
//! VM mode hands them to the guest init, which applies them to the
//! workload inside the guest, so that a guest-kernel bug needs a second
//! step and the same workload sees the same privileges under either
//! boundary.
//!
//! ```
//! use isolate_core::{Capabilities, Seccomp};
//!
//! let mask = isolate_policy::caps::mask(&Capabilities::default()).unwrap();
//! assert_eq!(mask, isolate_policy::caps::default_mask());
//! let filters = isolate_policy::seccomp::filters(&Seccomp::Default, mask).unwrap();
//! assert!(!filters.is_empty());
//! ```

pub mod caps;
pub mod seccomp;
