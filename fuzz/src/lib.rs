//! Helpers shared by isolate's fuzz targets (see README.md).

use isolate_vm::devices::BusDevice;
use vm_memory::GuestMemoryMmap;

pub use isolate_vm::devices::test_util::{CountingIrq, SharedBuf};

/// Guest memory of `size` bytes at address 0 holding `image` (zeros after it).
pub fn guest_memory(size: usize, image: &[u8]) -> GuestMemoryMmap {
    isolate_vm::devices::test_util::guest_memory_with(size, image)
}

/// virtio-mmio register offsets (virtio 1.2, 4.2.2) and status bits.
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    pub const CONFIG: u64 = 0x100;

    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// A 4-byte register write.
pub fn write_reg(dev: &mut dyn BusDevice, offset: u64, value: u32) {
    dev.write(offset, &value.to_le_bytes());
}

/// A 4-byte register read.
pub fn read_reg(dev: &mut dyn BusDevice, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// Where a driver put one queue's rings.
#[derive(Clone, Copy, Debug)]
pub struct Rings {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// The handshake of a Linux driver up to `FEATURES_OK` (accepting only
/// `VIRTIO_F_VERSION_1`), then each queue, then `DRIVER_OK`.
pub fn activate(dev: &mut dyn BusDevice, rings: &[Rings]) {
    use reg::*;
    write_reg(dev, STATUS, ACKNOWLEDGE);
    write_reg(dev, STATUS, ACKNOWLEDGE | DRIVER);
    write_reg(dev, DRIVER_FEATURES_SEL, 1);
    write_reg(dev, DRIVER_FEATURES, 1); // VIRTIO_F_VERSION_1 is bit 32
    write_reg(dev, DRIVER_FEATURES_SEL, 0);
    write_reg(dev, DRIVER_FEATURES, 0);
    write_reg(dev, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    for (sel, r) in rings.iter().enumerate() {
        write_reg(dev, QUEUE_SEL, sel as u32);
        write_reg(dev, QUEUE_NUM, r.size.into());
        write_reg(dev, QUEUE_DESC_LOW, r.desc as u32);
        write_reg(dev, QUEUE_AVAIL_LOW, r.avail as u32);
        write_reg(dev, QUEUE_USED_LOW, r.used as u32);
        write_reg(dev, QUEUE_READY, 1);
    }
    write_reg(dev, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
}
