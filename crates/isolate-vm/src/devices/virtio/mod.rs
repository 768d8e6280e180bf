//! Virtio devices behind the virtio-mmio transport (virtio 1.x, split rings).
//!
//! [`MmioTransport`] speaks the register protocol with the guest driver,
//! negotiates features, collects the queue configuration and, when the driver
//! sets `DRIVER_OK`, hands the queues to the [`VirtioDevice`] (console or
//! block). Queue notifications are handled synchronously on the vCPU thread.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{DeviceError, Interrupt};

pub mod block;
pub mod console;
pub mod mmio;

pub use block::Block;
pub use console::{Console, ConsoleInput};
pub use mmio::MmioTransport;

/// Feature bit: the device follows virtio 1.x (required by this transport).
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// Device type of a virtio console.
pub const TYPE_CONSOLE: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
/// Device type of a virtio block device.
pub const TYPE_BLOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;

/// Interrupt status bit: the device used buffers in a queue.
pub const INT_VRING: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
/// Interrupt status bit: the device configuration changed (or the device needs a reset).
pub const INT_CONFIG: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

/// A virtio device model, driven by [`MmioTransport`].
pub trait VirtioDevice: Send {
    /// Virtio device id ([`TYPE_CONSOLE`], [`TYPE_BLOCK`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue (powers of two); the length is the queue count.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features offered to the driver, including [`VIRTIO_F_VERSION_1`].
    fn features(&self) -> u64;
    /// Features the driver accepted (always a subset of [`features`](Self::features)).
    fn ack_features(&mut self, features: u64);
    /// Reads the device configuration space at `offset`; bytes past its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space; devices ignore what they do not support.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the queues the driver configured (all of them,
    /// in index order, already validated against `mem`).
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<dyn Interrupt>,
    ) -> Result<(), DeviceError>;
    /// The driver notified queue `queue_index` (only called once activated).
    fn queue_notify(&mut self, queue_index: u16);
    /// The driver reset the device: drop queues and guest memory, keep host-side setup.
    fn reset(&mut self) {}
}

/// The interrupt state a transport shares with its device: the
/// `InterruptStatus` register and the guest interrupt line.
///
/// Devices receive it as an `Arc<dyn Interrupt>`: [`trigger`](Interrupt::trigger)
/// sets the used-buffer bit ([`INT_VRING`]) then raises the line, so the
/// guest's interrupt handler sees why it was interrupted.
pub struct VirtioInterrupt {
    status: AtomicU32,
    irq: Arc<dyn Interrupt>,
}

impl VirtioInterrupt {
    /// Wraps the guest interrupt line `irq`.
    pub fn new(irq: Arc<dyn Interrupt>) -> Arc<Self> {
        Arc::new(Self {
            status: AtomicU32::new(0),
            irq,
        })
    }

    /// Current `InterruptStatus` register value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver acknowledged the bits in `mask`.
    pub fn ack(&self, mask: u32) {
        self.status.fetch_and(!mask, Ordering::SeqCst);
    }

    /// Sets `bits` in the status register and raises the line.
    pub fn signal(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.irq.trigger();
    }

    /// Clears the status register (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

impl Interrupt for VirtioInterrupt {
    fn trigger(&self) {
        self.signal(INT_VRING);
    }
}

/// A queue a device runs, with the guest memory and interrupt it needs.
pub(crate) struct ActiveQueue {
    pub queue: Queue,
    pub mem: GuestMemoryMmap,
    pub interrupt: Arc<dyn Interrupt>,
}

impl ActiveQueue {
    /// Raises the interrupt if the driver wants one for the buffers just used.
    pub fn notify_guest(&mut self) {
        if self.queue.needs_notification(&self.mem).unwrap_or(true) {
            self.interrupt.trigger();
        }
    }
}
