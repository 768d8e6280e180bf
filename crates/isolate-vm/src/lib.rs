//! VM mode of isolate (being written).
pub mod boot;
pub mod builder;
pub mod config;
pub mod cpu;
pub mod devices;
pub mod host;
mod isolator;
pub mod kernel;
pub mod layout;
pub mod mptable;
mod probe;
pub mod seccomp;
pub mod sizing;
pub mod vcpu;
pub mod vmm;

pub use isolator::{VmError, VmIsolator, VmRunning};

/// Most vCPUs a VM gets.
pub const MAX_VCPUS: u8 = 32;
