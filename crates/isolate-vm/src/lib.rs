//! VM mode of isolate (being written).
pub mod boot;
pub mod builder;
pub mod cpu;
pub mod devices;
pub mod host;
pub mod kernel;
pub mod layout;
pub mod vcpu;
