//! The isolate contract: a [`Workload`] describes what to run and within
//! which limits; an [`Isolator`] (a KVM microVM or a namespaces + cgroups
//! container) runs it and returns an [`Outcome`].
//!
//! This crate holds no KVM and no namespace code: the backends
//! (`isolate-vm`, `isolate-container`) implement [`Isolator`], and the
//! `isolate` crate picks one.
//!
//! ```
//! use isolate_core::{Workload, Outcome, Status, Volume};
//! use std::time::Duration;
//!
//! // Build the workload once...
//! let mut w = Workload::new("/bin/sh");
//! w.args(["-c", "echo hello > /data/greeting"])
//!     .memory(128 << 20)
//!     .pids(64)
//!     .volume(Volume::named("scratch", "/data"))
//!     .timeout(Duration::from_secs(10));
//! // ...validate it once, here, before any backend sees it...
//! w.validate()?;
//! // ...and read outcomes the same way whichever boundary ran it.
//! let done = Outcome::new(Status::Exited(0), Duration::from_millis(12));
//! assert_eq!(done.exit_code(), 0);
//! # Ok::<(), isolate_core::Error>(())
//! ```

mod error;
pub mod exec;
mod isolator;
pub mod logger;
mod outcome;
pub mod parse;
pub mod paths;
pub mod protocol;
pub mod pty;
mod seccomp;
pub mod state;
pub mod sys;
mod workload;

pub use error::{chain as error_chain, Error, ExecFailure, Result};
pub use isolator::{ExecRequest, Isolator, Mode, Running};
pub use outcome::{Outcome, Stats, Status};
pub use seccomp::{
    parse_kernel_version, Seccomp, SeccompAction, SeccompArchMap, SeccompArg, SeccompFilter,
    SeccompOp, SeccompProfile, SeccompSyscall, MAX_ERRNO,
};
pub use workload::{
    check_name, Capabilities, Device, Limits, Network, Protocol, Publish, Stdio, User, VmOptions,
    Volume, VolumeSource, Workload, MAX_ID, MIN_MEMORY,
};
