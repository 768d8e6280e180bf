//! Virtio devices behind the virtio-mmio transport (virtio 1.x, split rings).
//!
//! [`MmioTransport`] speaks the register protocol with the guest driver,
//! negotiates features, collects the queue configuration and, when the driver
//! sets `DRIVER_OK`, hands the queues to the [`VirtioDevice`] (console or
//! block). Queue notifications are handled synchronously on the vCPU thread.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

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

/// One descriptor of a chain, as the device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A descriptor chain split into its device-readable part followed by its
/// device-writable part, as the virtio spec requires (2.7.4.2).
#[derive(Debug, Default)]
pub(crate) struct SplitChain {
    pub readable: Vec<Segment>,
    pub writable: Vec<Segment>,
    /// A readable descriptor came after a writable one.
    pub misordered: bool,
}

impl SplitChain {
    /// Collects the descriptors of `chain`. The chain iterator itself bounds
    /// the length (queue size) and follows at most one indirect table.
    pub fn collect<M>(chain: virtio_queue::DescriptorChain<M>) -> Self
    where
        M: std::ops::Deref,
        M::Target: vm_memory::GuestMemory,
    {
        let mut out = SplitChain::default();
        for desc in chain {
            let seg = Segment {
                addr: desc.addr(),
                len: desc.len(),
            };
            if desc.is_write_only() {
                out.writable.push(seg);
            } else {
                if !out.writable.is_empty() {
                    out.misordered = true;
                }
                out.readable.push(seg);
            }
        }
        out
    }

    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }

    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// Visits the guest ranges covering bytes `offset..offset + len` of the
/// byte stream formed by `segs`. `f` gets (guest address, position in the
/// stream relative to `offset`, length) and returns `false` to stop early.
/// Returns the number of bytes covered before the segments ran out or `f`
/// stopped.
pub(crate) fn for_each_range(
    segs: &[Segment],
    mut offset: u64,
    len: u64,
    mut f: impl FnMut(GuestAddress, u64, u64) -> bool,
) -> u64 {
    let mut done = 0u64;
    for seg in segs {
        if done == len {
            break;
        }
        let seg_len = u64::from(seg.len);
        if offset >= seg_len {
            offset -= seg_len;
            continue;
        }
        let take = (seg_len - offset).min(len - done);
        let Some(addr) = seg.addr.0.checked_add(offset) else {
            break;
        };
        if !f(GuestAddress(addr), done, take) {
            break;
        }
        done += take;
        offset = 0;
    }
    done
}

/// Reads exactly `buf.len()` bytes at `offset` of the stream formed by
/// `segs`; `false` if the segments are too short or leave guest memory.
pub(crate) fn read_stream(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    offset: u64,
    buf: &mut [u8],
) -> bool {
    let len = buf.len() as u64;
    let done = for_each_range(segs, offset, len, |addr, pos, n| {
        // `pos + n <= len == buf.len()`.
        let range = pos as usize..(pos + n) as usize;
        mem.read_slice(&mut buf[range], addr).is_ok()
    });
    done == len
}

/// Writes all of `buf` at `offset` of the stream formed by `segs`; `false`
/// if the segments are too short or leave guest memory.
pub(crate) fn write_stream(
    mem: &GuestMemoryMmap,
    segs: &[Segment],
    offset: u64,
    buf: &[u8],
) -> bool {
    let len = buf.len() as u64;
    let done = for_each_range(segs, offset, len, |addr, pos, n| {
        let range = pos as usize..(pos + n) as usize;
        mem.write_slice(&buf[range], addr).is_ok()
    });
    done == len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(lens: &[u32]) -> Vec<Segment> {
        let mut addr = 0x1000;
        lens.iter()
            .map(|&len| {
                let s = Segment {
                    addr: GuestAddress(addr),
                    len,
                };
                addr += 0x1000;
                s
            })
            .collect()
    }

    #[test]
    fn ranges_cover_the_stream_across_segments() {
        let mut seen = Vec::new();
        let done = for_each_range(&segs(&[4, 0, 6, 8]), 2, 10, |a, pos, n| {
            seen.push((a.0, pos, n));
            true
        });
        assert_eq!(done, 10);
        assert_eq!(seen, vec![(0x1002, 0, 2), (0x3000, 2, 6), (0x4000, 8, 2)]);
    }

    #[test]
    fn ranges_stop_when_segments_run_out() {
        let done = for_each_range(&segs(&[4, 4]), 6, 10, |_, _, _| true);
        assert_eq!(done, 2);
        let done = for_each_range(&segs(&[4]), 9, 1, |_, _, _| true);
        assert_eq!(done, 0);
        let overflow = [Segment {
            addr: GuestAddress(u64::MAX),
            len: 8,
        }];
        assert_eq!(for_each_range(&overflow, 2, 4, |_, _, _| true), 0);
    }

    #[test]
    fn streams_round_trip_through_guest_memory() {
        let mem = crate::devices::test_util::guest_memory();
        let s = segs(&[3, 5, 100]);
        assert!(write_stream(&mem, &s, 1, b"abcdefghij"));
        let mut back = [0u8; 10];
        assert!(read_stream(&mem, &s, 1, &mut back));
        assert_eq!(&back, b"abcdefghij");
        let mut too_long = [0u8; 200];
        assert!(!read_stream(&mem, &s, 0, &mut too_long));
        let outside = [Segment {
            addr: GuestAddress(0xf_fffe),
            len: 8,
        }];
        assert!(!write_stream(&mem, &outside, 0, b"1234"));
    }
}
