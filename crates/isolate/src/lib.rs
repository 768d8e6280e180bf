//! isolate runs one [`Workload`] behind either of two isolation boundaries,
//! chosen per run: a KVM microVM with its own guest kernel ([`Mode::Vm`]),
//! or host processes in namespaces and cgroups ([`Mode::Container`]).
//! Both implement [`Isolator`]; [`isolator`] picks one, [`compare`] runs the
//! same workload under both and measures the difference.
//!
//! The guest kernel, default rootfs and guest init are found without
//! configuration (see [`paths`]); the library never exits the process.
//!
//! ```no_run
//! use isolate::{isolator, Mode, Stdio, Workload};
//!
//! let mut w = Workload::new("/bin/sh");
//! w.args(["-c", "echo hello from $(hostname)"])
//!     .hostname("sandbox")
//!     .memory(128 << 20)
//!     .stdout(Stdio::Piped);
//! w.validate()?;
//! for mode in Mode::ALL {
//!     let backend = isolator(mode)?;
//!     if let Err(why) = backend.check_host() {
//!         eprintln!("{mode}: {why}");
//!         continue;
//!     }
//!     let running = backend.spawn(&w)?;
//!     let mut out = String::new();
//!     std::io::Read::read_to_string(&mut running.take_stdout().unwrap(), &mut out).ok();
//!     let outcome = running.wait()?;
//!     println!("{mode}: {} in {:?}: {out}", outcome.status, outcome.wall_time);
//! }
//! # Ok::<(), isolate::Error>(())
//! ```

pub mod compare;
pub mod detached;
pub mod named;

pub use isolate_core::*;

/// The [`Isolator`] of `mode`, if this build has it (cargo features `vm`
/// and `container`, both on by default).
pub fn isolator(mode: Mode) -> Result<Box<dyn Isolator>> {
    match mode {
        #[cfg(feature = "vm")]
        Mode::Vm => Ok(Box::new(isolate_vm::VmIsolator::new())),
        #[cfg(feature = "container")]
        Mode::Container => Ok(Box::new(isolate_container::ContainerIsolator::new())),
        #[allow(unreachable_patterns)]
        other => Err(Error::Unsupported(format!(
            "this build of isolate has no {other} mode; build it with the cargo feature `{other}`"
        ))),
    }
}

/// Validates `workload` and runs it to its end under `mode`.
pub fn run(mode: Mode, workload: &Workload) -> Result<Outcome> {
    workload.validate()?;
    let backend = isolator(mode)?;
    backend.check_host()?;
    backend.run(workload)
}
