//! virtio-blk over a host file (being written).

/// The virtio block device model.
pub struct Block;
