//! A single-port virtio console (no `VIRTIO_CONSOLE_F_MULTIPORT`).
//!
//! Queue 0 (receiveq) carries host→guest bytes, queue 1 (transmitq)
//! guest→host bytes. Output goes to a `Write` sink chosen by the VMM
//! (stdout, stderr, a control-line parser). Input comes from any thread
//! through a [`ConsoleInput`] handle; bytes the guest has no buffers for yet
//! wait in a pending buffer and are delivered when buffers arrive.
//!
//! # When input may flow
//!
//! Without `VIRTIO_CONSOLE_F_MULTIPORT` the guest never says when its port
//! is ready. Linux posts its receive buffers while it is still setting the
//! port up, and throws away (or frees) whatever arrives before the port is
//! registered. Input is therefore held until the port is known to be open:
//! either the guest has transmitted on this console, or the VMM calls
//! [`ConsoleInput::open`] (e.g. once the guest init reported in on another
//! console).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use isolate_core::sys::lock;
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::{ActiveQueue, VirtioDevice, TYPE_CONSOLE, VIRTIO_F_VERSION_1};
use crate::devices::{DeviceError, Interrupt};

/// Index of the receive queue (host→guest).
pub const RX_QUEUE: u16 = 0;
/// Index of the transmit queue (guest→host).
pub const TX_QUEUE: u16 = 1;
/// Size of each queue offered to the driver.
pub const QUEUE_SIZE: u16 = 256;

/// Size of `struct virtio_console_config` (cols, rows, max_nr_ports, emerg_wr).
const CONFIG_LEN: u64 = 12;
/// Bounce buffer for guest→host copies.
const TX_CHUNK: usize = 4096;

/// Receive side, shared between the device (vCPU thread) and [`ConsoleInput`]s.
#[derive(Default)]
struct RxState {
    pending: VecDeque<u8>,
    active: Option<ActiveQueue>,
    /// The guest port is known to be set up: input may be delivered.
    open: bool,
}

impl RxState {
    /// Copies pending bytes into the buffers the guest made available,
    /// and interrupts it if any buffer was used.
    fn deliver(&mut self) {
        if !self.open {
            return;
        }
        let Some(rx) = self.active.as_mut() else {
            return;
        };
        let mut used = false;
        while !self.pending.is_empty() {
            let Some(chain) = rx.queue.pop_descriptor_chain(&rx.mem) else {
                break;
            };
            let head = chain.head_index();
            // A chain that leaves guest memory is returned unfilled.
            let written = match Writer::<()>::new(&rx.mem, chain) {
                Ok(mut w) => {
                    let data = self.pending.make_contiguous();
                    let want = data.len().min(w.available_bytes());
                    let _ = w.write_all(&data[..want]);
                    w.bytes_written()
                }
                Err(_) => 0,
            };
            self.pending.drain(..written);
            // `written` is bounded by the chain's length, a u32 sum (the
            // queue size bounds the descriptors). A head past the queue size
            // cannot be returned (the chain is dropped); only returned
            // chains are worth an interrupt.
            let written = u32::try_from(written).unwrap_or(u32::MAX);
            used |= rx.queue.add_used(&rx.mem, head, written).is_ok();
        }
        if used {
            rx.notify_guest();
        }
    }
}

/// A cloneable handle that feeds bytes to the guest's console input.
#[derive(Clone)]
pub struct ConsoleInput {
    rx: Arc<Mutex<RxState>>,
}

impl ConsoleInput {
    /// Queues `data` for the guest and delivers as much as the guest has
    /// buffers for now; the rest is delivered when the guest adds buffers.
    /// Never blocks on the guest. Callable from any thread.
    pub fn push(&self, data: &[u8]) {
        let mut rx = lock(&self.rx);
        rx.pending.extend(data);
        rx.deliver();
    }

    /// Declares the guest port ready for input (see the module docs) and
    /// delivers what is pending. Idempotent; a device reset closes it again.
    pub fn open(&self) {
        let mut rx = lock(&self.rx);
        rx.open = true;
        rx.deliver();
    }

    /// Whether input is being delivered (the port is open, see [`open`](Self::open)).
    pub fn is_open(&self) -> bool {
        lock(&self.rx).open
    }

    /// Bytes pushed but not yet taken by the guest (for back-pressure: a
    /// reader of host stdin can wait while this is large).
    pub fn pending_len(&self) -> usize {
        lock(&self.rx).pending.len()
    }
}

/// The virtio console device model.
pub struct Console {
    out: Box<dyn Write + Send>,
    rx: Arc<Mutex<RxState>>,
    tx: Option<ActiveQueue>,
    acked_features: u64,
    output_errors: u64,
}

impl Console {
    /// A console whose guest output goes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            rx: Arc::default(),
            tx: None,
            acked_features: 0,
            output_errors: 0,
        }
    }

    /// A handle to send input to the guest, usable from other threads.
    pub fn input(&self) -> ConsoleInput {
        ConsoleInput {
            rx: self.rx.clone(),
        }
    }

    /// How many writes to the output sink failed (the bytes were dropped).
    pub fn output_errors(&self) -> u64 {
        self.output_errors
    }

    /// Writes what the guest transmitted to the sink and returns the buffers.
    fn process_tx(&mut self) {
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        let out = &mut self.out;
        let errors = &mut self.output_errors;
        let mut buf = [0u8; TX_CHUNK];
        let mut used = false;
        while let Some(chain) = tx.queue.pop_descriptor_chain(&tx.mem) {
            let head = chain.head_index();
            // A chain that leaves guest memory is returned unread.
            if let Ok(mut r) = Reader::<()>::new(&tx.mem, chain) {
                while let Ok(n @ 1..) = r.read(&mut buf) {
                    if out.write_all(&buf[..n]).is_err() {
                        *errors += 1;
                    }
                }
            }
            used |= tx.queue.add_used(&tx.mem, head, 0).is_ok();
        }
        if out.flush().is_err() {
            *errors += 1;
        }
        if used {
            tx.notify_guest();
            // The guest wrote through its port: the port is set up.
            let mut rx = lock(&self.rx);
            if !rx.open {
                rx.open = true;
                rx.deliver();
            }
        }
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports and emerg_wr are all 0: no size, one port.
        let _ = (offset, CONFIG_LEN);
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // emerg_wr needs VIRTIO_CONSOLE_F_EMERG_WRITE, which is not offered.
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<dyn Interrupt>,
    ) -> Result<(), DeviceError> {
        let count = queues.len();
        let mut queues = queues.into_iter();
        let (Some(rxq), Some(txq), None) = (queues.next(), queues.next(), queues.next()) else {
            return Err(DeviceError::QueueNotUsable {
                device: "console",
                index: count.min(2),
                reason: "the console needs exactly 2 queues",
            });
        };
        for (index, q) in [&rxq, &txq].into_iter().enumerate() {
            if !q.ready() {
                return Err(DeviceError::QueueNotUsable {
                    device: "console",
                    index,
                    reason: "not ready",
                });
            }
        }
        self.tx = Some(ActiveQueue {
            queue: txq,
            mem: mem.clone(),
            interrupt: interrupt.clone(),
        });
        let mut rx = lock(&self.rx);
        rx.active = Some(ActiveQueue {
            queue: rxq,
            mem,
            interrupt,
        });
        rx.deliver();
        Ok(())
    }

    fn queue_notify(&mut self, queue_index: u16) {
        match queue_index {
            RX_QUEUE => lock(&self.rx).deliver(),
            TX_QUEUE => self.process_tx(),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.tx = None;
        self.acked_features = 0;
        // Pending input stays: it is delivered once the driver is back and
        // its port is open again.
        let mut rx = lock(&self.rx);
        rx.active = None;
        rx.open = false;
    }
}

#[cfg(test)]
mod tests {
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::test_util::{
        add_chain, guest_memory, used_entries, CountingIrq, SharedBuf,
    };

    struct Fixture<'a> {
        console: Console,
        out: SharedBuf,
        irq: Arc<CountingIrq>,
        rxq: MockSplitQueue<'a, GuestMemoryMmap>,
        txq: MockSplitQueue<'a, GuestMemoryMmap>,
    }

    fn fixture(mem: &GuestMemoryMmap) -> Fixture<'_> {
        let out = SharedBuf::default();
        let console = Console::new(Box::new(out.clone()));
        let rxq = MockSplitQueue::create(mem, GuestAddress(0), 16);
        let txq = MockSplitQueue::create(mem, GuestAddress(0x4000), 16);
        Fixture {
            console,
            out,
            irq: Arc::new(CountingIrq::default()),
            rxq,
            txq,
        }
    }

    /// Activates the console and declares its port open.
    fn activate(f: &mut Fixture<'_>, mem: &GuestMemoryMmap) {
        activate_closed(f, mem);
        f.console.input().open();
    }

    /// Activates the console like a driver that has not set its port up yet.
    fn activate_closed(f: &mut Fixture<'_>, mem: &GuestMemoryMmap) {
        let queues = vec![f.rxq.create_queue().unwrap(), f.txq.create_queue().unwrap()];
        f.console
            .activate(mem.clone(), queues, f.irq.clone())
            .unwrap();
    }

    #[test]
    fn transmitted_bytes_reach_the_sink_in_order() {
        let mem = guest_memory();
        let mut f = fixture(&mem);
        activate(&mut f, &mem);
        mem.write_slice(b"hello, ", GuestAddress(0x1_0000)).unwrap();
        mem.write_slice(b"world", GuestAddress(0x2_0000)).unwrap();
        mem.write_slice(b"!\n", GuestAddress(0x3_0000)).unwrap();
        // One chain of two readable buffers, then a one-buffer chain.
        add_chain(&f.txq, 0, &[(0x1_0000, 7, false), (0x2_0000, 5, false)]);
        add_chain(&f.txq, 2, &[(0x3_0000, 2, false)]);

        f.console.queue_notify(TX_QUEUE);

        assert_eq!(&*f.out.0.lock().unwrap(), b"hello, world!\n");
        assert_eq!(used_entries(&f.txq), vec![(0, 0), (2, 0)]);
        assert_eq!(f.irq.count(), 1);
    }

    /// Makes `n` chains available whose heads all lie past the queue
    /// size (16): the device takes them but cannot return them.
    fn offer_bad_heads(vq: &MockSplitQueue<'_, GuestMemoryMmap>, n: u16) {
        for i in 0..n {
            vq.avail().ring().ref_at(usize::from(i)).unwrap().store(257);
        }
        vq.avail().idx().store(n);
    }

    #[test]
    fn chains_with_a_head_past_the_queue_are_dropped_without_an_interrupt() {
        // Kept from the virtqueue fuzz target (fuzz/, target `virtqueue`):
        // a transmit chain with head 257 in a 256-entry queue made the
        // device interrupt the guest with nothing in the used ring.
        let mem = guest_memory();
        let mut f = fixture(&mem);
        activate(&mut f, &mem);
        offer_bad_heads(&f.txq, 2);
        f.console.queue_notify(TX_QUEUE);
        assert_eq!(f.txq.used().idx().load(), 0);
        assert_eq!(f.irq.count(), 0, "interrupt without used buffers");

        offer_bad_heads(&f.rxq, 1);
        f.console.input().push(b"x");
        assert_eq!(f.rxq.used().idx().load(), 0);
        assert_eq!(f.irq.count(), 0, "interrupt without used buffers");
        assert_eq!(f.console.input().pending_len(), 1, "the input is kept");
    }

    #[test]
    fn pushed_bytes_fill_guest_buffers() {
        let mem = guest_memory();
        let mut f = fixture(&mem);
        activate(&mut f, &mem);
        add_chain(&f.rxq, 0, &[(0x1_0000, 4, true), (0x2_0000, 4, true)]);
        f.console.queue_notify(RX_QUEUE);
        assert_eq!(f.irq.count(), 0, "no input yet, no interrupt");

        f.console.input().push(b"abcdef");

        let mut got = [0u8; 6];
        mem.read_slice(&mut got[..4], GuestAddress(0x1_0000))
            .unwrap();
        mem.read_slice(&mut got[4..], GuestAddress(0x2_0000))
            .unwrap();
        assert_eq!(&got, b"abcdef");
        assert_eq!(used_entries(&f.rxq), vec![(0, 6)]);
        assert_eq!(f.irq.count(), 1);
        assert_eq!(f.console.input().pending_len(), 0);
    }

    #[test]
    fn pending_bytes_arrive_when_buffers_are_added() {
        let mem = guest_memory();
        let mut f = fixture(&mem);
        let input = f.console.input();
        // Before activation.
        input.push(b"early ");
        activate(&mut f, &mem);
        // After activation, with no buffers.
        input.push(b"late");
        assert_eq!(input.pending_len(), 10);
        assert_eq!(f.irq.count(), 0);

        // A buffer smaller than the pending input: delivered in two rounds.
        add_chain(&f.rxq, 0, &[(0x1_0000, 8, true)]);
        f.console.queue_notify(RX_QUEUE);
        assert_eq!(input.pending_len(), 2);
        add_chain(&f.rxq, 1, &[(0x2_0000, 8, true)]);
        f.console.queue_notify(RX_QUEUE);
        assert_eq!(input.pending_len(), 0);

        let mut a = [0u8; 8];
        let mut b = [0u8; 2];
        mem.read_slice(&mut a, GuestAddress(0x1_0000)).unwrap();
        mem.read_slice(&mut b, GuestAddress(0x2_0000)).unwrap();
        assert_eq!(&a, b"early la");
        assert_eq!(&b, b"te");
        assert_eq!(used_entries(&f.rxq), vec![(0, 8), (1, 2)]);
        assert_eq!(f.irq.count(), 2);
    }

    /// Like the Linux driver: a ring full of page-sized receive buffers,
    /// each re-posted as soon as the guest has read it, while much more
    /// input than the ring holds is pending. The ring indexes wrap around.
    /// (The rings are laid out by hand: the mock's layout is only good for a
    /// few entries.)
    #[test]
    fn bulk_input_flows_through_reposted_buffers() {
        use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
        use virtio_queue::desc::split::Descriptor;

        const SIZE: u16 = 16;
        const BUF: u32 = 4096;
        let (desc, avail, used) = (0x8_0000u64, 0x8_1000u64, 0x8_2000u64);
        let mem = guest_memory();
        let mut f = fixture(&mem);
        let mut rxq = Queue::new(SIZE).unwrap();
        rxq.try_set_desc_table_address(GuestAddress(desc)).unwrap();
        rxq.try_set_avail_ring_address(GuestAddress(avail)).unwrap();
        rxq.try_set_used_ring_address(GuestAddress(used)).unwrap();
        rxq.set_ready(true);
        assert!(rxq.is_valid(&mem));
        let txq = f.txq.create_queue().unwrap();
        f.console
            .activate(mem.clone(), vec![rxq, txq], f.irq.clone())
            .unwrap();
        f.console.input().open();

        let mut avail_idx = 0u16;
        let post = |head: u16, idx: &mut u16| {
            let slot = avail + 4 + u64::from(*idx % SIZE) * 2;
            mem.write_obj(head, GuestAddress(slot)).unwrap();
            *idx = idx.wrapping_add(1);
            mem.write_obj(*idx, GuestAddress(avail + 2)).unwrap();
        };
        for head in 0..SIZE {
            let addr = 0x1_0000 + u64::from(head) * u64::from(BUF);
            let d = Descriptor::new(addr, BUF, VRING_DESC_F_WRITE as u16, 0);
            mem.write_obj(d, GuestAddress(desc + u64::from(head) * 16))
                .unwrap();
            post(head, &mut avail_idx);
        }
        f.console.queue_notify(RX_QUEUE);

        let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let handle = f.console.input();
        handle.push(&input);

        let mut received = Vec::new();
        let mut used_seen = 0u16;
        let mut rounds = 0;
        while received.len() < input.len() {
            rounds += 1;
            assert!(rounds < 1000, "input stalled at {} bytes", received.len());
            let used_idx: u16 = mem.read_obj(GuestAddress(used + 2)).unwrap();
            assert_ne!(used_idx, used_seen, "no buffer used while input is pending");
            while used_seen != used_idx {
                let elem = used + 4 + u64::from(used_seen % SIZE) * 8;
                let head: u32 = mem.read_obj(GuestAddress(elem)).unwrap();
                let len: u32 = mem.read_obj(GuestAddress(elem + 4)).unwrap();
                let addr = 0x1_0000 + u64::from(head) * u64::from(BUF);
                let mut chunk = vec![0u8; len as usize];
                mem.read_slice(&mut chunk, GuestAddress(addr)).unwrap();
                received.extend_from_slice(&chunk);
                used_seen = used_seen.wrapping_add(1);
                // The driver gives the buffer back and kicks.
                post(head as u16, &mut avail_idx);
                f.console.queue_notify(RX_QUEUE);
            }
        }
        assert_eq!(received.len(), input.len());
        assert!(received == input, "input arrived altered or out of order");
        assert_eq!(handle.pending_len(), 0);
        assert!(f.irq.count() > 1);
    }

    #[test]
    fn input_waits_until_the_port_is_opened() {
        let mem = guest_memory();
        let mut f = fixture(&mem);
        activate_closed(&mut f, &mem);
        add_chain(&f.rxq, 0, &[(0x1_0000, 64, true)]);
        f.console.queue_notify(RX_QUEUE);
        let input = f.console.input();
        input.push(b"early");
        // Linux would discard this: nothing may be delivered yet.
        assert!(used_entries(&f.rxq).is_empty());
        assert_eq!(f.irq.count(), 0);
        assert!(!input.is_open());

        input.open();

        assert_eq!(used_entries(&f.rxq), vec![(0, 5)]);
        let mut got = [0u8; 5];
        mem.read_slice(&mut got, GuestAddress(0x1_0000)).unwrap();
        assert_eq!(&got, b"early");
    }

    #[test]
    fn guest_transmission_opens_the_port() {
        let mem = guest_memory();
        let mut f = fixture(&mem);
        activate_closed(&mut f, &mem);
        let input = f.console.input();
        input.push(b"reply");
        add_chain(&f.rxq, 0, &[(0x1_0000, 64, true)]);
        f.console.queue_notify(RX_QUEUE);
        assert_eq!(input.pending_len(), 5);

        mem.write_slice(b"{\"t\":\"started\"}\n", GuestAddress(0x2_0000))
            .unwrap();
        add_chain(&f.txq, 0, &[(0x2_0000, 16, false)]);
        f.console.queue_notify(TX_QUEUE);

        assert!(input.is_open());
        assert_eq!(input.pending_len(), 0);
        assert_eq!(used_entries(&f.rxq), vec![(0, 5)]);
    }

    #[test]
    fn reset_closes_the_port_again() {
        let mem = guest_memory();
        let mut f = fixture(&mem);
        activate(&mut f, &mem);
        assert!(f.console.input().is_open());
        f.console.reset();
        assert!(!f.console.input().is_open());
    }

    #[test]
    fn input_from_another_thread_is_delivered() {
        let mem = guest_memory();
        let mut f = fixture(&mem);
        activate(&mut f, &mem);
        add_chain(&f.rxq, 0, &[(0x1_0000, 64, true)]);
        let input = f.console.input();
        std::thread::spawn(move || input.push(b"from a thread"))
            .join()
            .unwrap();
        let mut got = [0u8; 13];
        mem.read_slice(&mut got, GuestAddress(0x1_0000)).unwrap();
        assert_eq!(&got, b"from a thread");
    }

    #[test]
    fn reset_keeps_pending_input_and_drops_queues() {
        let mem = guest_memory();
        let mut f = fixture(&mem);
        activate(&mut f, &mem);
        f.console.reset();
        f.console.input().push(b"kept");
        // No queues: notifications are ignored, nothing is written.
        f.console.queue_notify(RX_QUEUE);
        f.console.queue_notify(TX_QUEUE);
        assert_eq!(f.console.input().pending_len(), 4);
        assert_eq!(f.irq.count(), 0);
    }

    #[test]
    fn bad_guest_buffers_do_not_panic() {
        let mem = guest_memory();
        let mut f = fixture(&mem);
        activate(&mut f, &mem);
        // TX: a buffer outside guest memory, one that straddles its end, a
        // writable one (ignored), and a huge length.
        add_chain(&f.txq, 0, &[(0x10_0000_0000, 16, false)]);
        add_chain(&f.txq, 1, &[(0xf_fff0, 0x100, false)]);
        add_chain(&f.txq, 2, &[(0x1_0000, 16, true)]);
        add_chain(&f.txq, 3, &[(0x1_0000, u32::MAX, false)]);
        f.console.queue_notify(TX_QUEUE);
        assert_eq!(used_entries(&f.txq).len(), 4);
        // RX: a readable-only chain and an out-of-memory buffer.
        add_chain(&f.rxq, 0, &[(0x1_0000, 16, false)]);
        add_chain(&f.rxq, 1, &[(u64::MAX - 4, 16, true)]);
        f.console.input().push(b"x");
        assert_eq!(used_entries(&f.rxq), vec![(0, 0), (1, 0)]);
        assert_eq!(f.console.input().pending_len(), 1);
    }

    #[test]
    fn activation_needs_two_ready_queues() {
        let mem = guest_memory();
        let mut f = fixture(&mem);
        let one = vec![f.rxq.create_queue().unwrap()];
        assert!(f.console.activate(mem.clone(), one, f.irq.clone()).is_err());
        let mut txq: Queue = f.txq.create_queue().unwrap();
        txq.set_ready(false);
        let two = vec![f.rxq.create_queue().unwrap(), txq];
        assert!(f.console.activate(mem.clone(), two, f.irq.clone()).is_err());
    }
}
