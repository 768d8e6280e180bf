//! VM mode (being written).
pub mod devices;
