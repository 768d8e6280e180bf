//! Emulated devices of the VM: the 8250 serial port, a minimal i8042, and
//! virtio-mmio console and block devices.
//!
//! Every device is a state machine driven by the vCPU thread through a
//! [`Bus`]: a guest port or MMIO access is routed to the device that owns the
//! address with an offset relative to the device's base. Interrupts and output
//! are passed in as traits ([`Interrupt`], `std::io::Write`), so each device is
//! unit-tested without KVM.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use isolate_vm::devices::{Bus, BusDevice};
//!
//! struct Scratch(u8);
//! impl BusDevice for Scratch {
//!     fn read(&mut self, _offset: u64, data: &mut [u8]) { data.fill(self.0) }
//!     fn write(&mut self, _offset: u64, data: &[u8]) { self.0 = data[0] }
//! }
//!
//! let mut pio = Bus::new();
//! pio.insert(0x80, 1, Arc::new(Mutex::new(Scratch(0)))).unwrap();
//! assert!(pio.write(0x80, &[7]));
//! let mut byte = [0u8];
//! assert!(pio.read(0x80, &mut byte));
//! assert_eq!(byte, [7]);
//! assert!(!pio.read(0x81, &mut byte)); // nobody there: the caller ignores it
//! ```

use std::sync::{Arc, Mutex};

use isolate_core::sys::lock;

pub mod i8042;
pub mod serial;
pub mod virtio;

/// Errors of device setup (never of guest accesses: those are absorbed by the
/// devices, a guest cannot make the VMM fail).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A device range of zero length, or one that wraps around the address space.
    #[error("device range at {base:#x} with length {len:#x} is empty or wraps around")]
    InvalidRange {
        /// Base address requested.
        base: u64,
        /// Length requested.
        len: u64,
    },
    /// Two devices would share an address.
    #[error(
        "device range {base:#x}+{len:#x} overlaps the device already at {existing_base:#x}+{existing_len:#x}"
    )]
    Overlap {
        /// Base address requested.
        base: u64,
        /// Length requested.
        len: u64,
        /// Base of the device already registered.
        existing_base: u64,
        /// Length of the device already registered.
        existing_len: u64,
    },
    /// A virtio device declared a queue size the virtio spec does not allow.
    #[error(
        "virtio queue {index} has invalid maximum size {size} (must be a power of two, 1..=32768)"
    )]
    InvalidQueueMaxSize {
        /// Queue index.
        index: usize,
        /// Declared maximum size.
        size: u16,
    },
    /// The driver activated a device with fewer queues than it needs, or a
    /// queue that is not ready / not inside guest memory.
    #[error("virtio {device} device: queue {index} is not usable ({reason})")]
    QueueNotUsable {
        /// Device kind ("console", "block").
        device: &'static str,
        /// Queue index.
        index: usize,
        /// Why.
        reason: &'static str,
    },
    /// A host-side I/O operation failed while setting up a device.
    #[error("{context}")]
    Io {
        /// What was being done, with the path if there is one.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A device reachable through port I/O or MMIO.
///
/// Devices never fail on a guest access: a read the device does not implement
/// leaves zeros (or all-ones, device-specific) in `data`, a write it does not
/// understand is ignored.
pub trait BusDevice: Send {
    /// Guest read of `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset` from the device's base.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Raises a guest interrupt.
///
/// The VMM implements it with an `EventFd` registered with `KVM_IRQFD`; tests
/// count the calls.
pub trait Interrupt: Send + Sync {
    /// Signals the interrupt line (edge).
    fn trigger(&self);
}

struct BusEntry {
    base: u64,
    len: u64,
    dev: Arc<Mutex<dyn BusDevice>>,
}

/// An address space (port I/O or MMIO) of non-overlapping device ranges.
#[derive(Default)]
pub struct Bus {
    /// Sorted by `base`, non-overlapping.
    entries: Vec<BusEntry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for e in &self.entries {
            list.entry(&format_args!("{:#x}+{:#x}", e.base, e.len));
        }
        list.finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `dev` for the addresses `base..base + len`.
    ///
    /// Fails if the range is empty, wraps around, or overlaps a device
    /// already registered.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        dev: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), DeviceError> {
        let end = match base.checked_add(len) {
            Some(end) if len > 0 => end,
            _ => return Err(DeviceError::InvalidRange { base, len }),
        };
        let pos = self.entries.partition_point(|e| e.base < base);
        let neighbours = [pos.checked_sub(1), Some(pos)];
        for e in neighbours
            .into_iter()
            .flatten()
            .filter_map(|i| self.entries.get(i))
        {
            // Ranges are half-open: [base, end) and [e.base, e.base + e.len).
            if base < e.base + e.len && e.base < end {
                return Err(DeviceError::Overlap {
                    base,
                    len,
                    existing_base: e.base,
                    existing_len: e.len,
                });
            }
        }
        self.entries.insert(pos, BusEntry { base, len, dev });
        Ok(())
    }

    /// The device whose range holds the whole access `addr..addr + size`,
    /// with the offset of `addr` inside it.
    fn find(&self, addr: u64, size: usize) -> Option<(&BusEntry, u64)> {
        let pos = self.entries.partition_point(|e| e.base <= addr);
        let e = self.entries.get(pos.checked_sub(1)?)?;
        let offset = addr - e.base;
        let last = offset.checked_add(u64::try_from(size).ok()?)?;
        (last <= e.len).then_some((e, offset))
    }

    /// Routes a guest read; returns `false` (and leaves `data` untouched) if
    /// no device covers the whole access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, offset)) => {
                lock(&e.dev).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Routes a guest write; returns `false` if no device covers the whole access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, offset)) => {
                lock(&e.dev).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Test doubles for device tests and the fuzz targets (feature
/// `test-hooks`; never in a release build).
#[cfg(any(test, feature = "test-hooks"))]
pub mod test_util {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::Interrupt;

    /// Counts interrupt triggers.
    #[derive(Default)]
    pub struct CountingIrq(pub AtomicUsize);

    impl CountingIrq {
        /// Interrupts raised so far.
        pub fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Interrupt for CountingIrq {
        fn trigger(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A `Write` sink a test reads back (a console's output).
    #[derive(Clone, Default)]
    pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

    impl SharedBuf {
        /// Takes what was written so far.
        pub fn take(&self) -> Vec<u8> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Guest memory for virtio tests: 1 MiB at guest address 0.
    pub fn guest_memory() -> vm_memory::GuestMemoryMmap {
        guest_memory_with(0x10_0000, &[])
    }

    /// Guest memory of `size` bytes at address 0 holding `image` (zeros
    /// after it).
    pub fn guest_memory_with(size: usize, image: &[u8]) -> vm_memory::GuestMemoryMmap {
        use vm_memory::Bytes;
        let mem =
            vm_memory::GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), size)]).unwrap();
        let n = image.len().min(size);
        mem.write_slice(&image[..n], vm_memory::GuestAddress(0))
            .unwrap();
        mem
    }

    #[cfg(test)]
    /// Writes one descriptor chain at descriptor index `first` (using
    /// `first..first + segs.len()`) and makes it available.
    /// Each segment is (guest address, length, device-writable).
    pub fn add_chain(
        vq: &virtio_queue::mock::MockSplitQueue<'_, vm_memory::GuestMemoryMmap>,
        first: u16,
        segs: &[(u64, u32, bool)],
    ) {
        use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
        use virtio_queue::desc::{split::Descriptor, RawDescriptor};
        let descs: Vec<RawDescriptor> = segs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, writable))| {
                let i = i as u16;
                let mut flags = 0;
                if writable {
                    flags |= VRING_DESC_F_WRITE as u16;
                }
                if usize::from(i) + 1 < segs.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                RawDescriptor::from(Descriptor::new(addr, len, flags, first + i + 1))
            })
            .collect();
        vq.add_desc_chains(&descs, first).unwrap();
    }

    #[cfg(test)]
    /// The used ring entries (head index, length) written so far.
    pub fn used_entries(
        vq: &virtio_queue::mock::MockSplitQueue<'_, vm_memory::GuestMemoryMmap>,
    ) -> Vec<(u32, u32)> {
        let n = vq.used().idx().load();
        (0..n)
            .map(|i| {
                let e = vq.used().ring().ref_at(usize::from(i)).unwrap().load();
                (e.id(), e.len())
            })
            .collect()
    }

    /// A tiny deterministic PRNG (xorshift64*) for fuzz-style loops.
    pub struct Rng(pub u64);

    impl Rng {
        /// The next number.
        pub fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// A number below `n` (0 for 0).
        pub fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n.max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder {
        last: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last = Some((offset, data.to_vec()));
        }
    }

    fn recorder() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder { last: None }))
    }

    #[test]
    fn routes_accesses_with_relative_offsets() {
        let mut bus = Bus::new();
        let a = recorder();
        let b = recorder();
        bus.insert(0x1000, 0x100, a.clone()).unwrap();
        bus.insert(0x3f8, 8, b.clone()).unwrap();

        assert!(bus.write(0x1010, &[1, 2, 3, 4]));
        assert_eq!(a.lock().unwrap().last, Some((0x10, vec![1, 2, 3, 4])));
        assert!(bus.write(0x3ff, &[9]));
        assert_eq!(b.lock().unwrap().last, Some((7, vec![9])));

        let mut data = [0u8; 2];
        assert!(bus.read(0x10fe, &mut data));
        assert_eq!(data, [0xfe, 0xfe]);
    }

    #[test]
    fn reports_unclaimed_and_straddling_accesses() {
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x100, recorder()).unwrap();
        let mut data = [0xaau8; 4];
        assert!(!bus.read(0xfff, &mut data));
        assert!(!bus.read(0x1100, &mut data));
        // Starts inside, ends past the device.
        assert!(!bus.read(0x10fe, &mut data));
        assert_eq!(data, [0xaa; 4]);
        assert!(!bus.write(u64::MAX, &[0, 0]));
    }

    #[test]
    fn rejects_overlapping_and_empty_ranges() {
        let mut bus = Bus::new();
        bus.insert(0x100, 0x10, recorder()).unwrap();
        bus.insert(0x120, 0x10, recorder()).unwrap();
        for (base, len) in [(0x10f, 1), (0xf0, 0x11), (0x110, 0x11), (0x90, 0x200)] {
            assert!(
                matches!(
                    bus.insert(base, len, recorder()),
                    Err(DeviceError::Overlap { .. })
                ),
                "{base:#x}+{len:#x} accepted"
            );
        }
        assert!(matches!(
            bus.insert(0x200, 0, recorder()),
            Err(DeviceError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(u64::MAX, 2, recorder()),
            Err(DeviceError::InvalidRange { .. })
        ));
        // Adjacent ranges are fine.
        bus.insert(0x110, 0x10, recorder()).unwrap();
        bus.insert(0xf0, 0x10, recorder()).unwrap();
    }
}
