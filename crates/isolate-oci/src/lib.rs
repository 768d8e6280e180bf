//! isolate as an OCI runtime: runc's command line over isolate's container
//! backend, so that podman, containerd (and through it Kubernetes) can run
//! containers with isolate.
//!
//! ```no_run
//! // What the `isolate` binary does with a runc command line, e.g.
//! // `isolate --root /run/isolate-oci create --bundle /b c1`:
//! let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
//! if isolate_oci::cli::is_runc_invocation(&args) {
//!     std::process::exit(isolate_oci::cli::main(&args));
//! }
//! ```
//!
//! - [`config`]: a bundle's `config.json` (read with `oci-spec`) onto a
//!   [`isolate_core::Workload`] and the container backend's extras;
//!   anything isolate cannot do is refused by name.
//! - [`state`]: the state root (`--root`): one directory per container
//!   with its record and, until `start`, its exec FIFO.
//! - [`runtime`]: the verbs (`create`, `start`, `state`, `kill`, `delete`,
//!   `run`, `ps`, `pause`, `resume`, `update`, `features`, `spec`, `list`).
//! - [`cli`]: runc's command line and the rule that tells it from
//!   isolate's own.
//!
//! `create` leaves the container's PID 1 (isolate's shim) set up and
//! waiting on the exec FIFO; it does not depend on the isolate process,
//! which exits. `start` writes one byte to the FIFO and removes it.

pub mod cli;
pub mod config;
mod error;
pub mod hooks;
pub mod runtime;
pub mod state;

pub use error::{OciError, Result};
