//! The virtio-mmio transport, version 2 ("modern" virtio 1.x register layout).
//!
//! The guest driver discovers the device through the read-only identification
//! registers, negotiates features, configures each queue and sets
//! `DRIVER_OK`; the transport then activates the [`VirtioDevice`] with the
//! queues. Everything the guest writes is validated: a register write with a
//! bad value is ignored (and counted in [`MmioTransport::guest_errors`]), an
//! activation that fails sets `DEVICE_NEEDS_RESET`. Writing 0 to `Status`
//! resets the device.

use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{VirtioDevice, VirtioInterrupt, INT_CONFIG, VIRTIO_F_VERSION_1};
use crate::devices::{BusDevice, DeviceError, Interrupt};

/// Size of the MMIO window of one device (registers + config space).
pub const MMIO_LEN: u64 = 0x1000;

/// "virt" in little endian.
const MAGIC: u32 = 0x7472_6976;
/// The modern virtio-mmio layout.
const VERSION: u32 = 2;
/// Vendor id reported to the guest ("ISOL").
const VENDOR_ID: u32 = 0x4c4f_5349;

// Register offsets (virtio 1.2, 4.2.2).
const MAGIC_VALUE: u64 = 0x000;
const VERSION_REG: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const VENDOR_ID_REG: u64 = 0x00c;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_AVAIL_LOW: u64 = 0x090;
const QUEUE_AVAIL_HIGH: u64 = 0x094;
const QUEUE_USED_LOW: u64 = 0x0a0;
const QUEUE_USED_HIGH: u64 = 0x0a4;
const SHM_SEL: u64 = 0x0ac;
const SHM_LEN_LOW: u64 = 0x0b0;
const SHM_LEN_HIGH: u64 = 0x0b4;
const SHM_BASE_LOW: u64 = 0x0b8;
const SHM_BASE_HIGH: u64 = 0x0bc;
const CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG: u64 = 0x100;

/// The `Status` bits a driver may set, in the order it sets them.
const STATUS_BITS: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
    | VIRTIO_CONFIG_S_DRIVER
    | VIRTIO_CONFIG_S_FEATURES_OK
    | VIRTIO_CONFIG_S_DRIVER_OK
    | VIRTIO_CONFIG_S_FAILED;

/// A virtio device behind the virtio-mmio register interface.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    activated: bool,
    config_generation: u32,
    guest_errors: u64,
}

impl MmioTransport {
    /// Wraps `device`, whose queues live in `mem` and whose interrupt is `irq`.
    ///
    /// Fails if the device declares a queue size that is not a power of two
    /// in 1..=32768.
    pub fn new(
        mem: GuestMemoryMmap,
        irq: Arc<dyn Interrupt>,
        device: Box<dyn VirtioDevice>,
    ) -> Result<Self, DeviceError> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .enumerate()
            .map(|(index, &size)| {
                Queue::new(size).map_err(|_| DeviceError::InvalidQueueMaxSize { index, size })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            device,
            mem,
            interrupt: VirtioInterrupt::new(irq),
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            activated: false,
            config_generation: 0,
            guest_errors: 0,
        })
    }

    /// The interrupt state shared with the device.
    pub fn interrupt(&self) -> &Arc<VirtioInterrupt> {
        &self.interrupt
    }

    /// The device `Status` register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the driver set `DRIVER_OK` and the device accepted its queues.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// How many invalid accesses or values the guest produced (ignored).
    pub fn guest_errors(&self) -> u64 {
        self.guest_errors
    }

    /// The virtio device type (for the kernel command line / logs).
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// Counts a refused guest access and logs it (level debug).
    fn refuse(&mut self, what: std::fmt::Arguments<'_>) {
        self.guest_errors += 1;
        log::debug!(
            "virtio-mmio (device type {}, status {:#x}, queue {}): refused {what}",
            self.device.device_type(),
            self.status,
            self.queue_sel
        );
    }

    /// The selected queue, if the selection is in range and the queue may
    /// still be configured (device not yet live).
    fn configurable_queue(&mut self) -> Option<&mut Queue> {
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u64) -> u32 {
        match offset {
            MAGIC_VALUE => MAGIC,
            VERSION_REG => VERSION,
            DEVICE_ID => self.device.device_type(),
            VENDOR_ID_REG => VENDOR_ID,
            DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            INTERRUPT_STATUS => self.interrupt.status(),
            STATUS => self.status,
            // No shared memory regions: length all-ones means "none".
            SHM_LEN_LOW | SHM_LEN_HIGH => u32::MAX,
            SHM_BASE_LOW | SHM_BASE_HIGH => u32::MAX,
            CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        let ok = match offset {
            DEVICE_FEATURES_SEL => {
                self.device_features_sel = value;
                true
            }
            DRIVER_FEATURES_SEL => {
                self.driver_features_sel = value;
                true
            }
            DRIVER_FEATURES => self.write_driver_features(value),
            QUEUE_SEL => {
                self.queue_sel = value;
                true
            }
            QUEUE_NUM => match self.configurable_queue() {
                Some(q) if !q.ready() => q.try_set_size(value.try_into().unwrap_or(0)).is_ok(),
                _ => false,
            },
            QUEUE_READY => match self.configurable_queue() {
                Some(q) if value <= 1 => {
                    q.set_ready(value == 1);
                    true
                }
                _ => false,
            },
            QUEUE_DESC_LOW | QUEUE_DESC_HIGH | QUEUE_AVAIL_LOW | QUEUE_AVAIL_HIGH
            | QUEUE_USED_LOW | QUEUE_USED_HIGH => self.write_queue_address(offset, value),
            QUEUE_NOTIFY => self.notify(value),
            INTERRUPT_ACK => {
                self.interrupt.ack(value);
                true
            }
            STATUS => self.write_status(value),
            SHM_SEL => true,
            _ => false,
        };
        if !ok {
            self.refuse(format_args!("write {value:#x} to register {offset:#x}"));
        }
    }

    fn write_driver_features(&mut self, value: u32) -> bool {
        // Features are frozen once FEATURES_OK is set.
        if self.status & (VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK) != 0 {
            return false;
        }
        let value = u64::from(value);
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (value << 32),
            // Feature words past 64 bits: only zero is acceptable.
            _ => return value == 0,
        }
        true
    }

    fn write_queue_address(&mut self, offset: u64, value: u32) -> bool {
        let Some(q) = self.configurable_queue() else {
            return false;
        };
        if q.ready() {
            return false;
        }
        // Each setter keeps the old address if the new one is misaligned.
        let result = match offset {
            QUEUE_DESC_LOW | QUEUE_DESC_HIGH => {
                let addr = merge_half(q.desc_table(), offset == QUEUE_DESC_HIGH, value);
                q.try_set_desc_table_address(GuestAddress(addr))
            }
            QUEUE_AVAIL_LOW | QUEUE_AVAIL_HIGH => {
                let addr = merge_half(q.avail_ring(), offset == QUEUE_AVAIL_HIGH, value);
                q.try_set_avail_ring_address(GuestAddress(addr))
            }
            _ => {
                let addr = merge_half(q.used_ring(), offset == QUEUE_USED_HIGH, value);
                q.try_set_used_ring_address(GuestAddress(addr))
            }
        };
        result.is_ok()
    }

    fn notify(&mut self, value: u32) -> bool {
        // Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index.
        match u16::try_from(value) {
            Ok(index) if self.activated && usize::from(index) < self.queues.len() => {
                self.device.queue_notify(index);
                true
            }
            _ => false,
        }
    }

    fn write_status(&mut self, value: u32) -> bool {
        if value == 0 {
            self.reset();
            return true;
        }
        let old = self.status;
        // The driver may only add bits (a reset is the only way back), and
        // only the bits it owns; it may echo NEEDS_RESET back once set.
        let writable = STATUS_BITS | (old & VIRTIO_CONFIG_S_NEEDS_RESET);
        if value & !writable != 0 || value & old != old {
            return false;
        }
        let added = value & !old;
        let mut new = old | added;
        let mut ok = true;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.accept_features() {
            // The driver reads Status back and sees FEATURES_OK missing.
            new &= !VIRTIO_CONFIG_S_FEATURES_OK;
            ok = false;
        }
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            if new & VIRTIO_CONFIG_S_FEATURES_OK == 0 || old & VIRTIO_CONFIG_S_NEEDS_RESET != 0 {
                new &= !VIRTIO_CONFIG_S_DRIVER_OK;
                ok = false;
            } else {
                self.status = new;
                if let Err(e) = self.activate() {
                    self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                    self.interrupt.signal(INT_CONFIG);
                    log::debug!(
                        "virtio-mmio (device type {}): activation failed: {e}",
                        self.device.device_type()
                    );
                    return false;
                }
                return true;
            }
        }
        self.status = new;
        ok
    }

    /// Checks the driver's feature set and, if valid, gives it to the device.
    fn accept_features(&mut self) -> bool {
        let offered = self.device.features();
        if self.driver_features & !offered != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
            return false;
        }
        self.device.ack_features(self.driver_features);
        true
    }

    /// Validates every queue and starts the device with copies of them.
    fn activate(&mut self) -> Result<(), DeviceError> {
        let mut live = Vec::with_capacity(self.queues.len());
        for (index, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(&self.mem) {
                return Err(DeviceError::QueueNotUsable {
                    device: "virtio-mmio",
                    index,
                    reason: "rings outside guest memory",
                });
            }
            live.push(copy_queue(q)?);
        }
        let interrupt: Arc<dyn Interrupt> = self.interrupt.clone();
        self.device.activate(self.mem.clone(), live, interrupt)?;
        self.activated = true;
        Ok(())
    }

    /// Returns the transport and the device to their power-on state.
    fn reset(&mut self) {
        if self.activated || self.status != 0 {
            self.device.reset();
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.activated = false;
        self.interrupt.clear();
    }
}

/// Replaces the low or high 32 bits of `addr` with `value`.
fn merge_half(addr: u64, high: bool, value: u32) -> u64 {
    if high {
        (addr & 0xffff_ffff) | (u64::from(value) << 32)
    } else {
        (addr & !0xffff_ffff) | u64::from(value)
    }
}

/// A fresh queue with the same configuration (the device owns the live one;
/// the transport keeps its copy to answer register reads).
fn copy_queue(q: &Queue) -> Result<Queue, DeviceError> {
    let bad = |_| DeviceError::InvalidQueueMaxSize {
        index: 0,
        size: q.max_size(),
    };
    let mut live = Queue::new(q.max_size()).map_err(bad)?;
    live.try_set_size(q.size()).map_err(bad)?;
    // Addresses were validated when the guest wrote them.
    let _ = live.try_set_desc_table_address(GuestAddress(q.desc_table()));
    let _ = live.try_set_avail_ring_address(GuestAddress(q.avail_ring()));
    let _ = live.try_set_used_ring_address(GuestAddress(q.used_ring()));
    live.set_ready(q.ready());
    Ok(live)
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            self.device.read_config(offset - CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.refuse(format_args!("{}-byte read at {offset:#x}", data.len()));
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG {
            self.device.write_config(offset - CONFIG, data);
            return;
        }
        let bytes = match <[u8; 4]>::try_from(data) {
            Ok(bytes) if offset.is_multiple_of(4) => bytes,
            _ => {
                self.refuse(format_args!("{}-byte write at {offset:#x}", data.len()));
                return;
            }
        };
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use virtio_queue::mock::MockSplitQueue;

    use super::*;
    use crate::devices::test_util::{guest_memory, CountingIrq, Rng};

    const ACK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
    const DRIVER: u32 = VIRTIO_CONFIG_S_DRIVER;
    const FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
    const DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;

    /// What the dummy device saw.
    #[derive(Default)]
    struct Seen {
        acked: Option<u64>,
        activated_with: Option<Vec<(u16, bool, u64)>>,
        notified: Vec<u16>,
        resets: usize,
        config_writes: Vec<(u64, Vec<u8>)>,
    }

    struct Dummy {
        seen: Arc<Mutex<Seen>>,
        fail_activate: bool,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | (1 << 5)
        }
        fn ack_features(&mut self, features: u64) {
            self.seen.lock().unwrap().acked = Some(features);
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = (offset as u8).wrapping_add(i as u8);
            }
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            self.seen
                .lock()
                .unwrap()
                .config_writes
                .push((offset, data.to_vec()));
        }
        fn activate(
            &mut self,
            _mem: GuestMemoryMmap,
            queues: Vec<Queue>,
            interrupt: Arc<dyn Interrupt>,
        ) -> Result<(), DeviceError> {
            if self.fail_activate {
                return Err(DeviceError::QueueNotUsable {
                    device: "dummy",
                    index: 0,
                    reason: "test",
                });
            }
            self.seen.lock().unwrap().activated_with = Some(
                queues
                    .iter()
                    .map(|q| (q.size(), q.ready(), q.desc_table()))
                    .collect(),
            );
            interrupt.trigger();
            Ok(())
        }
        fn queue_notify(&mut self, queue_index: u16) {
            self.seen.lock().unwrap().notified.push(queue_index);
        }
        fn reset(&mut self) {
            self.seen.lock().unwrap().resets += 1;
        }
    }

    struct Fixture {
        t: MmioTransport,
        seen: Arc<Mutex<Seen>>,
        irq: Arc<CountingIrq>,
    }

    fn fixture_with(fail_activate: bool) -> Fixture {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let irq = Arc::new(CountingIrq::default());
        let dev = Dummy {
            seen: seen.clone(),
            fail_activate,
        };
        let t = MmioTransport::new(guest_memory(), irq.clone(), Box::new(dev)).unwrap();
        Fixture { t, seen, irq }
    }

    fn fixture() -> Fixture {
        fixture_with(false)
    }

    fn rd(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &mut MmioTransport, offset: u64, value: u32) {
        t.write(offset, &value.to_le_bytes());
    }

    /// Drives the handshake up to FEATURES_OK with `features`; returns Status.
    fn negotiate(t: &mut MmioTransport, features: u64) -> u32 {
        wr(t, STATUS, ACK);
        wr(t, STATUS, ACK | DRIVER);
        wr(t, DRIVER_FEATURES_SEL, 0);
        wr(t, DRIVER_FEATURES, features as u32);
        wr(t, DRIVER_FEATURES_SEL, 1);
        wr(t, DRIVER_FEATURES, (features >> 32) as u32);
        wr(t, STATUS, ACK | DRIVER | FEATURES_OK);
        rd(t, STATUS)
    }

    /// Configures queue `sel` like the Linux driver does, at `base`.
    fn setup_queue(t: &mut MmioTransport, sel: u32, size: u32, base: u64) {
        wr(t, QUEUE_SEL, sel);
        assert_eq!(rd(t, QUEUE_READY), 0);
        wr(t, QUEUE_NUM, size);
        let (desc, avail, used) = (base, base + 0x1000, base + 0x2000);
        wr(t, QUEUE_DESC_LOW, desc as u32);
        wr(t, QUEUE_DESC_HIGH, (desc >> 32) as u32);
        wr(t, QUEUE_AVAIL_LOW, avail as u32);
        wr(t, QUEUE_AVAIL_HIGH, (avail >> 32) as u32);
        wr(t, QUEUE_USED_LOW, used as u32);
        wr(t, QUEUE_USED_HIGH, (used >> 32) as u32);
        wr(t, QUEUE_READY, 1);
    }

    #[test]
    fn identification_registers() {
        let Fixture { mut t, .. } = fixture();
        assert_eq!(rd(&mut t, MAGIC_VALUE), 0x7472_6976);
        assert_eq!(rd(&mut t, VERSION_REG), 2);
        assert_eq!(rd(&mut t, DEVICE_ID), 42);
        assert_eq!(rd(&mut t, VENDOR_ID_REG), VENDOR_ID);
        wr(&mut t, QUEUE_SEL, 0);
        assert_eq!(rd(&mut t, QUEUE_NUM_MAX), 16);
        wr(&mut t, QUEUE_SEL, 1);
        assert_eq!(rd(&mut t, QUEUE_NUM_MAX), 8);
        wr(&mut t, QUEUE_SEL, 2);
        assert_eq!(rd(&mut t, QUEUE_NUM_MAX), 0, "no third queue");
    }

    #[test]
    fn device_features_are_paged_by_select() {
        let Fixture { mut t, .. } = fixture();
        wr(&mut t, DEVICE_FEATURES_SEL, 0);
        assert_eq!(rd(&mut t, DEVICE_FEATURES), 1 << 5);
        wr(&mut t, DEVICE_FEATURES_SEL, 1);
        assert_eq!(
            rd(&mut t, DEVICE_FEATURES),
            1,
            "VIRTIO_F_VERSION_1 is bit 32"
        );
        wr(&mut t, DEVICE_FEATURES_SEL, 7);
        assert_eq!(rd(&mut t, DEVICE_FEATURES), 0);
    }

    #[test]
    fn accepts_offered_features() {
        let Fixture { mut t, seen, .. } = fixture();
        let status = negotiate(&mut t, VIRTIO_F_VERSION_1 | (1 << 5));
        assert_eq!(status, ACK | DRIVER | FEATURES_OK);
        assert_eq!(
            seen.lock().unwrap().acked,
            Some(VIRTIO_F_VERSION_1 | (1 << 5))
        );
    }

    #[test]
    fn refuses_unoffered_features_and_legacy_drivers() {
        for features in [VIRTIO_F_VERSION_1 | (1 << 6), 1 << 5] {
            let Fixture { mut t, seen, .. } = fixture();
            let status = negotiate(&mut t, features);
            assert_eq!(status & FEATURES_OK, 0, "features {features:#x} accepted");
            assert_eq!(seen.lock().unwrap().acked, None);
        }
    }

    #[test]
    fn queue_setup_and_driver_ok_activate_the_device() {
        let Fixture {
            mut t, seen, irq, ..
        } = fixture();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 16, 0x1_0000);
        setup_queue(&mut t, 1, 4, 0x2_0000);
        wr(&mut t, STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);

        assert!(t.is_activated());
        assert_eq!(rd(&mut t, STATUS), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        assert_eq!(
            seen.lock().unwrap().activated_with,
            Some(vec![(16, true, 0x1_0000), (4, true, 0x2_0000)])
        );
        // The device's trigger() sets the used-buffer bit, the guest acks it.
        assert_eq!(irq.count(), 1);
        assert_eq!(rd(&mut t, INTERRUPT_STATUS), 1);
        wr(&mut t, INTERRUPT_ACK, 1);
        assert_eq!(rd(&mut t, INTERRUPT_STATUS), 0);

        wr(&mut t, QUEUE_NOTIFY, 1);
        wr(&mut t, QUEUE_NOTIFY, 0);
        wr(&mut t, QUEUE_NOTIFY, 2); // no such queue
        assert_eq!(seen.lock().unwrap().notified, vec![1, 0]);
        // Queue configuration is frozen once live.
        wr(&mut t, QUEUE_SEL, 0);
        wr(&mut t, QUEUE_READY, 0);
        assert_eq!(rd(&mut t, QUEUE_READY), 1);
    }

    #[test]
    fn driver_ok_without_features_ok_is_refused() {
        let Fixture { mut t, seen, .. } = fixture();
        wr(&mut t, STATUS, ACK);
        wr(&mut t, STATUS, ACK | DRIVER);
        wr(&mut t, STATUS, ACK | DRIVER | DRIVER_OK);
        assert!(!t.is_activated());
        assert_eq!(rd(&mut t, STATUS), ACK | DRIVER);
        assert!(seen.lock().unwrap().activated_with.is_none());
    }

    #[test]
    fn notify_before_activation_is_ignored() {
        let Fixture { mut t, seen, .. } = fixture();
        wr(&mut t, QUEUE_NOTIFY, 0);
        assert!(seen.lock().unwrap().notified.is_empty());
        assert_eq!(t.guest_errors(), 1);
    }

    #[test]
    fn rings_outside_memory_set_needs_reset() {
        let Fixture { mut t, seen, irq } = fixture();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 16, 0x1_0000);
        setup_queue(&mut t, 1, 8, 0x10_0000_0000);
        wr(&mut t, STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        assert!(!t.is_activated());
        assert_ne!(rd(&mut t, STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        assert_eq!(rd(&mut t, INTERRUPT_STATUS), INT_CONFIG);
        assert_eq!(irq.count(), 1);
        assert!(seen.lock().unwrap().activated_with.is_none());
        // Notifications to a device that is not live go nowhere.
        wr(&mut t, QUEUE_NOTIFY, 0);
        assert!(seen.lock().unwrap().notified.is_empty());
        // The driver gives up: it writes back what it read, plus FAILED.
        let failed = rd(&mut t, STATUS) | VIRTIO_CONFIG_S_FAILED;
        wr(&mut t, STATUS, failed);
        assert_eq!(rd(&mut t, STATUS), failed);
        wr(&mut t, STATUS, 0);
        assert_eq!(rd(&mut t, STATUS), 0);
    }

    #[test]
    fn failed_activation_sets_needs_reset() {
        let Fixture { mut t, .. } = fixture_with(true);
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 16, 0x1_0000);
        setup_queue(&mut t, 1, 8, 0x2_0000);
        wr(&mut t, STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        assert!(!t.is_activated());
        assert_ne!(rd(&mut t, STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    }

    #[test]
    fn reset_clears_state() {
        let Fixture { mut t, seen, .. } = fixture();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 8, 0x1_0000);
        setup_queue(&mut t, 1, 8, 0x2_0000);
        wr(&mut t, STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        assert!(t.is_activated());

        wr(&mut t, STATUS, 0);

        assert!(!t.is_activated());
        assert_eq!(rd(&mut t, STATUS), 0);
        assert_eq!(rd(&mut t, INTERRUPT_STATUS), 0);
        assert_eq!(seen.lock().unwrap().resets, 1);
        for sel in 0..2 {
            wr(&mut t, QUEUE_SEL, sel);
            assert_eq!(rd(&mut t, QUEUE_READY), 0);
        }
        // The driver can start over.
        assert_eq!(
            negotiate(&mut t, VIRTIO_F_VERSION_1) & FEATURES_OK,
            FEATURES_OK
        );
    }

    #[test]
    fn bad_queue_sizes_are_refused() {
        let Fixture { mut t, seen, .. } = fixture();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        wr(&mut t, QUEUE_SEL, 0);
        for bad in [0, 3, 32, 0x1_0010] {
            wr(&mut t, QUEUE_NUM, bad);
        }
        assert_eq!(t.guest_errors(), 4);
        // The queue kept its default (maximum) size.
        setup_queue(&mut t, 1, 8, 0x2_0000);
        wr(&mut t, QUEUE_SEL, 0);
        wr(&mut t, QUEUE_READY, 1);
        wr(&mut t, STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        // Queue 0 kept default addresses (0, 0, 0) which are inside memory.
        let with = seen.lock().unwrap().activated_with.clone().unwrap();
        assert_eq!(with[0].0, 16);
    }

    #[test]
    fn misaligned_ring_addresses_are_refused() {
        let Fixture { mut t, .. } = fixture();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        wr(&mut t, QUEUE_SEL, 0);
        wr(&mut t, QUEUE_DESC_LOW, 0x1_0008); // needs 16-byte alignment
        wr(&mut t, QUEUE_AVAIL_LOW, 0x1_0001); // needs 2
        wr(&mut t, QUEUE_USED_LOW, 0x1_0002); // needs 4
        assert_eq!(t.guest_errors(), 3);
        assert_eq!(t.queues[0].desc_table(), 0);
    }

    #[test]
    fn register_accesses_must_be_aligned_words() {
        let Fixture { mut t, .. } = fixture();
        let mut b = [0xffu8; 2];
        t.read(MAGIC_VALUE, &mut b);
        assert_eq!(b, [0, 0]);
        let mut w = [0u8; 4];
        t.read(MAGIC_VALUE + 1, &mut w);
        assert_eq!(w, [0; 4]);
        t.write(STATUS, &[1]);
        assert_eq!(rd(&mut t, STATUS), 0);
        assert_eq!(t.guest_errors(), 3);
    }

    #[test]
    fn config_space_is_forwarded_with_relative_offsets() {
        let Fixture { mut t, seen, .. } = fixture();
        let mut b = [0u8; 2];
        t.read(CONFIG + 8, &mut b);
        assert_eq!(b, [8, 9]);
        t.write(CONFIG + 3, &[7]);
        assert_eq!(seen.lock().unwrap().config_writes, vec![(3, vec![7])]);
    }

    #[test]
    fn status_bits_cannot_be_cleared_without_reset() {
        let Fixture { mut t, .. } = fixture();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        wr(&mut t, STATUS, ACK);
        assert_eq!(rd(&mut t, STATUS), ACK | DRIVER | FEATURES_OK);
        wr(&mut t, STATUS, ACK | DRIVER | FEATURES_OK | 0x40);
        assert_eq!(rd(&mut t, STATUS), ACK | DRIVER | FEATURES_OK);
    }

    #[test]
    fn works_with_mock_driver_queues() {
        // Rings laid out by virtio-queue's mock are accepted by is_valid.
        let Fixture { mut t, seen, .. } = fixture();
        let mem = guest_memory();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x8000), 16);
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        wr(&mut t, QUEUE_SEL, 0);
        wr(&mut t, QUEUE_DESC_LOW, vq.desc_table_addr().0 as u32);
        wr(&mut t, QUEUE_AVAIL_LOW, vq.avail_addr().0 as u32);
        wr(&mut t, QUEUE_USED_LOW, vq.used_addr().0 as u32);
        wr(&mut t, QUEUE_READY, 1);
        wr(&mut t, STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        assert!(t.is_activated());
        let with = seen.lock().unwrap().activated_with.clone().unwrap();
        assert_eq!(with[0], (16, true, 0x8000));
        assert!(!with[1].1, "queue 1 was never made ready");
    }

    /// Drives a real device through the handshake with rings at random
    /// places in guest memory full of random bytes, then notifies at random:
    /// garbage descriptors must never panic the device, and after every
    /// notification the device must have kept the rules a driver relies on:
    /// the used index moves forward by at most the queue size, every used
    /// entry it wrote names a head inside the queue, the interrupt status
    /// holds only the two defined bits, and the device stays live (or says
    /// it needs a reset). Returns how many chains the device returned in
    /// total (to show the fuzzing reached it).
    fn fuzz_device(make: &dyn Fn() -> Box<dyn VirtioDevice>, seed: u64) -> u64 {
        use vm_memory::Bytes;
        let mut rng = Rng(seed);
        let mem = guest_memory();
        let mut used = 0u64;
        for _ in 0..100 {
            let mut junk = vec![0u8; 0x10_0000];
            for chunk in junk.chunks_mut(8) {
                let v = match rng.below(3) {
                    0 => rng.next_u64(),
                    1 => rng.below(0x10_0000) | (rng.below(16) << 32),
                    _ => rng.below(8),
                };
                chunk.copy_from_slice(&v.to_le_bytes());
            }
            mem.write_slice(&junk, GuestAddress(0)).unwrap();
            let irq = Arc::new(CountingIrq::default());
            let mut t = MmioTransport::new(mem.clone(), irq, make()).unwrap();
            negotiate(&mut t, VIRTIO_F_VERSION_1);
            let queues = t.queues.len() as u32;
            let mut used_rings = Vec::new();
            let mut sizes = Vec::new();
            for sel in 0..queues {
                let size = 1 << rng.below(9);
                let base = rng.below(0xf0) << 12;
                setup_queue(&mut t, sel, size, base);
                // The driver starts with a zeroed used ring.
                mem.write_obj(0u32, GuestAddress(base + 0x2000)).unwrap();
                // Some chains are available (their contents are junk).
                let avail_idx = rng.below(u64::from(size) + 1) as u16;
                mem.write_obj(avail_idx, GuestAddress(base + 0x1002))
                    .unwrap();
                used_rings.push(base + 0x2000);
                sizes.push(size);
            }
            wr(&mut t, STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
            assert!(t.is_activated());
            for _ in 0..20 {
                let addr = match rng.below(2) {
                    0 => rng.below(0x10_0000 - 8),
                    _ => used_rings[0] - 0x2000 + rng.below(0x2000),
                };
                let _ = mem.write_obj(rng.next_u64(), GuestAddress(addr));
                let idx = |ring: u64| mem.read_obj::<u16>(GuestAddress(ring + 2)).unwrap();
                let before: Vec<u16> = used_rings.iter().map(|&r| idx(r)).collect();
                wr(
                    &mut t,
                    QUEUE_NOTIFY,
                    rng.below(u64::from(queues) + 1) as u32,
                );
                for ((&ring, &size), &old) in used_rings.iter().zip(&sizes).zip(&before) {
                    let moved = idx(ring).wrapping_sub(old);
                    assert!(
                        u32::from(moved) <= size,
                        "used index moved by {moved} (queue of {size})"
                    );
                    for i in 0..moved {
                        let slot = u64::from(old.wrapping_add(i)) % u64::from(size);
                        let id: u32 = mem.read_obj(GuestAddress(ring + 4 + 8 * slot)).unwrap();
                        assert!(id < size, "used entry names head {id} (queue of {size})");
                    }
                }
                let isr = rd(&mut t, INTERRUPT_STATUS);
                assert_eq!(isr & !0x3, 0, "interrupt status {isr:#x}");
                let status = rd(&mut t, STATUS);
                assert!(
                    t.is_activated() || status & VIRTIO_CONFIG_S_NEEDS_RESET != 0,
                    "device stopped without asking for a reset (status {status:#x})"
                );
            }
            for ring in used_rings {
                used += u64::from(mem.read_obj::<u16>(GuestAddress(ring + 2)).unwrap());
            }
        }
        used
    }

    #[test]
    fn console_survives_garbage_rings() {
        let used = fuzz_device(
            &|| Box::new(super::super::Console::new(Box::new(std::io::sink()))),
            11,
        );
        assert!(used > 0, "no chain reached the device");
        eprintln!("fuzz: {used} chains returned");
    }

    #[test]
    fn block_survives_garbage_rings() {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(64 * 1024).unwrap();
        let path = file.path().to_owned();
        let used = fuzz_device(
            &|| Box::new(super::super::Block::open(&path, false).unwrap()),
            12,
        );
        assert!(used > 0, "no chain reached the device");
        eprintln!("fuzz: {used} chains returned");
    }

    #[test]
    fn random_register_traffic_never_panics() {
        let registers = [
            MAGIC_VALUE,
            DEVICE_FEATURES,
            DEVICE_FEATURES_SEL,
            DRIVER_FEATURES,
            DRIVER_FEATURES_SEL,
            QUEUE_SEL,
            QUEUE_NUM_MAX,
            QUEUE_NUM,
            QUEUE_READY,
            QUEUE_NOTIFY,
            INTERRUPT_STATUS,
            INTERRUPT_ACK,
            STATUS,
            QUEUE_DESC_LOW,
            QUEUE_DESC_HIGH,
            QUEUE_AVAIL_LOW,
            QUEUE_AVAIL_HIGH,
            QUEUE_USED_LOW,
            QUEUE_USED_HIGH,
            CONFIG_GENERATION,
        ];
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for round in 0..200 {
            let Fixture { mut t, .. } = fixture();
            for _ in 0..500 {
                let offset = match rng.below(4) {
                    0 => rng.below(MMIO_LEN + 16),
                    _ => registers[rng.below(registers.len() as u64) as usize],
                };
                let value = match rng.below(4) {
                    0 => rng.next_u64() as u32,
                    1 => rng.below(16) as u32,
                    2 => 1 << rng.below(32),
                    _ => {
                        [ACK, ACK | DRIVER, ACK | DRIVER | FEATURES_OK, 0xf][rng.below(4) as usize]
                    }
                };
                let len = [1usize, 2, 4, 4, 4, 8][rng.below(6) as usize];
                let bytes = u64::from(value).to_le_bytes();
                if rng.below(3) == 0 {
                    let mut buf = vec![0u8; len];
                    t.read(offset, &mut buf);
                } else {
                    t.write(offset, &bytes[..len]);
                }
            }
            let _ = round;
        }
    }
}
