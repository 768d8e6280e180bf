//! Unit tests of the multiport console: a driver played by hand on mock
//! rings, as Linux's `virtio_console` drives it.

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::devices::test_util::CountingIrq;

/// A `Write` sink the test can read back.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
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

/// A sink that blocks every write until the test sends a permit.
struct Blocking {
    permits: mpsc::Receiver<()>,
    out: SharedBuf,
}

impl Write for Blocking {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.permits.recv();
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A sink whose reader went away.
struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const MEM: u64 = 16 << 20;
const RING_SIZE: u16 = 16;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
}

/// One split queue as the driver sees it, laid out by hand (descriptor
/// table, available ring and used ring a page apart from `base`), one
/// descriptor per chain, indexes wrapping as in a real driver.
struct Q {
    base: u64,
    /// Chains made available so far (the available index).
    avail: u16,
    /// Buffer address of each descriptor index.
    addrs: Vec<u64>,
    /// Used entries already looked at.
    seen: u16,
}

impl Q {
    fn new(base: u64) -> Self {
        Q {
            base,
            avail: 0,
            addrs: vec![0; usize::from(RING_SIZE)],
            seen: 0,
        }
    }

    fn queue(&self, mem: &GuestMemoryMmap) -> Queue {
        let mut q = Queue::new(RING_SIZE).unwrap();
        q.try_set_desc_table_address(GuestAddress(self.base))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.base + 0x1000))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.base + 0x2000))
            .unwrap();
        q.set_ready(true);
        assert!(q.is_valid(mem));
        q
    }

    /// Makes one buffer available (the descriptor slot is reused as the
    /// available index wraps: the test never has more than the ring size
    /// outstanding).
    fn post(&mut self, mem: &GuestMemoryMmap, addr: u64, len: u32, writable: bool) {
        let head = self.avail % RING_SIZE;
        let flags = if writable {
            VRING_DESC_F_WRITE as u16
        } else {
            0
        };
        let d = Descriptor::new(addr, len, flags, 0);
        mem.write_obj(d, GuestAddress(self.base + u64::from(head) * 16))
            .unwrap();
        self.addrs[usize::from(head)] = addr;
        let slot = self.base + 0x1000 + 4 + u64::from(head) * 2;
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail = self.avail.wrapping_add(1);
        mem.write_obj(self.avail, GuestAddress(self.base + 0x1002))
            .unwrap();
    }

    /// New used entries: (head, length).
    fn used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
        let used = self.base + 0x2000;
        let idx: u16 = mem.read_obj(GuestAddress(used + 2)).unwrap();
        let mut out = Vec::new();
        while self.seen != idx {
            let elem = used + 4 + u64::from(self.seen % RING_SIZE) * 8;
            let head: u32 = mem.read_obj(GuestAddress(elem)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(elem + 4)).unwrap();
            out.push((head, len));
            self.seen = self.seen.wrapping_add(1);
        }
        out
    }
}

/// The driver side: the device, its rings, a bump allocator for buffers.
struct Rig<'a> {
    mem: &'a GuestMemoryMmap,
    console: Console,
    irq: Arc<CountingIrq>,
    qs: Vec<Q>,
    bump: u64,
}

impl<'a> Rig<'a> {
    /// A console with `ports`, activated by a driver that negotiated `features`.
    fn new(mem: &'a GuestMemoryMmap, ports: Vec<PortConfig>, features: u64) -> Self {
        let mut console = Console::new(ports).unwrap();
        let nq = console.queue_max_sizes().len();
        let qs: Vec<Q> = (0..nq).map(|i| Q::new(i as u64 * 0x4000)).collect();
        console.ack_features(features);
        let queues: Vec<Queue> = qs.iter().map(|q| q.queue(mem)).collect();
        let irq = Arc::new(CountingIrq::default());
        console.activate(mem.clone(), queues, irq.clone()).unwrap();
        Rig {
            mem,
            console,
            irq,
            qs,
            bump: 0x10_0000,
        }
    }

    fn multiport(mem: &'a GuestMemoryMmap, ports: Vec<PortConfig>) -> Self {
        Self::new(mem, ports, VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_MULTIPORT)
    }

    /// Makes a buffer of `len` bytes (holding `data`) available on queue `q`.
    fn post(&mut self, q: usize, len: u32, writable: bool, data: &[u8]) {
        let addr = self.bump;
        self.bump += u64::from(len).next_multiple_of(0x1000);
        assert!(self.bump <= MEM, "test ran out of guest memory");
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
        self.qs[q].post(self.mem, addr, len, writable);
    }

    /// What the device returned on queue `q` since the last call: the
    /// bytes of each used buffer (as many as the used length says).
    fn used(&mut self, q: usize) -> Vec<Vec<u8>> {
        let q = &mut self.qs[q];
        q.used(self.mem)
            .into_iter()
            .map(|(head, len)| {
                let mut b = vec![0u8; len as usize];
                self.mem
                    .read_slice(&mut b, GuestAddress(q.addrs[head as usize]))
                    .unwrap();
                b
            })
            .collect()
    }

    /// The driver sends a control message.
    fn control(&mut self, id: u32, event: u16, value: u16) {
        let m = control_message(id as usize, event, value, &[]);
        self.post(usize::from(CONTROL_TX_QUEUE), CONTROL_LEN as u32, false, &m);
        self.console.queue_notify(CONTROL_TX_QUEUE);
    }

    /// Control messages the device sent since the last call: (id, event, value, extra).
    fn received(&mut self) -> Vec<(u32, u16, u16, Vec<u8>)> {
        self.used(usize::from(CONTROL_RX_QUEUE))
            .into_iter()
            .map(|m| {
                assert!(m.len() >= CONTROL_LEN, "short control message {m:?}");
                (
                    u32::from_le_bytes(m[..4].try_into().unwrap()),
                    u16::from_le_bytes(m[4..6].try_into().unwrap()),
                    u16::from_le_bytes(m[6..8].try_into().unwrap()),
                    m[8..].to_vec(),
                )
            })
            .collect()
    }

    /// Linux's probe: control buffers, DEVICE_READY, then for each port
    /// added: receive buffers and PORT_READY.
    fn handshake(&mut self, rx_buffers: u32) {
        for _ in 0..8 {
            self.post(usize::from(CONTROL_RX_QUEUE), 4096, true, &[]);
        }
        self.console.queue_notify(CONTROL_RX_QUEUE);
        self.control(u32::MAX, DEVICE_READY, 1);
        let added: Vec<u32> = self
            .received()
            .into_iter()
            .filter(|m| m.1 == DEVICE_ADD)
            .map(|m| m.0)
            .collect();
        for id in added {
            for _ in 0..rx_buffers {
                self.post(usize::from(role_rx(id as usize)), 4096, true, &[]);
            }
            self.control(id, PORT_READY, 1);
        }
    }

    fn tx(&mut self, port: usize, data: &[u8]) {
        self.post(
            usize::from(role_rx(port) + 1),
            data.len() as u32,
            false,
            data,
        );
    }
}

fn role_rx(port: usize) -> u16 {
    if port == 0 {
        0
    } else {
        (2 * port + 2) as u16
    }
}

fn port(name: &str, output: Option<Output>) -> PortConfig {
    PortConfig {
        name: name.into(),
        output,
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[test]
fn queue_indexes_follow_the_multiport_layout() {
    assert_eq!(role(0), Role::Rx(0));
    assert_eq!(role(1), Role::Tx(0));
    assert_eq!(role(2), Role::ControlRx);
    assert_eq!(role(3), Role::ControlTx);
    assert_eq!(role(4), Role::Rx(1));
    assert_eq!(role(5), Role::Tx(1));
    assert_eq!(role(7), Role::Tx(2));
    for p in 0..MAX_PORTS {
        assert_eq!(role(role_rx(p)), Role::Rx(p));
    }
}

#[test]
fn config_space_announces_the_ports() {
    let c = Console::new(vec![port("a", None), port("b", None), port("c", None)]).unwrap();
    assert_ne!(c.features() & VIRTIO_CONSOLE_F_MULTIPORT, 0);
    assert_eq!(c.queue_max_sizes().len(), 8);
    let mut max_nr_ports = [0u8; 4];
    c.read_config(4, &mut max_nr_ports);
    assert_eq!(u32::from_le_bytes(max_nr_ports), 3);
    let mut past = [0xffu8; 8];
    c.read_config(10, &mut past);
    assert_eq!(past, [0; 8]);
    c.read_config(u64::MAX, &mut past);
    assert_eq!(past, [0; 8]);
}

#[test]
fn port_counts_are_bounded() {
    assert!(Console::new(vec![]).is_err());
    let many = (0..=MAX_PORTS)
        .map(|i| port(&i.to_string(), None))
        .collect();
    assert!(Console::new(many).is_err());
}

#[test]
fn handshake_adds_names_and_connects_every_port() {
    let mem = memory();
    let mut rig = Rig::multiport(&mem, vec![port("isolate.a", None), port("isolate.b", None)]);
    for _ in 0..8 {
        rig.post(usize::from(CONTROL_RX_QUEUE), 4096, true, &[]);
    }
    rig.console.queue_notify(CONTROL_RX_QUEUE);
    rig.control(u32::MAX, DEVICE_READY, 1);
    assert_eq!(
        rig.received(),
        vec![(0, DEVICE_ADD, 0, vec![]), (1, DEVICE_ADD, 0, vec![])]
    );
    rig.control(1, PORT_READY, 1);
    assert_eq!(
        rig.received(),
        vec![
            (1, PORT_NAME, 0, b"isolate.b".to_vec()),
            (1, PORT_OPEN, 1, vec![])
        ]
    );
    assert!(rig.irq.count() > 0);
}

#[test]
fn input_waits_until_a_guest_process_opens_the_port() {
    let mem = memory();
    let mut rig = Rig::multiport(&mem, vec![port("in", None)]);
    rig.handshake(2);
    let input = rig.console.input(0);
    input.push(b"early");
    // Linux drops data on a port nobody has open: nothing may be delivered.
    assert!(rig.used(0).is_empty());
    assert!(!input.is_open());
    rig.control(0, PORT_OPEN, 1);
    assert!(input.is_open());
    assert_eq!(rig.used(0), vec![b"early".to_vec()]);
    assert_eq!(input.pending_len(), 0);
}

#[test]
fn end_of_input_is_sent_after_the_last_byte() {
    let mem = memory();
    let mut rig = Rig::multiport(&mem, vec![port("in", None)]);
    rig.handshake(2);
    rig.received();
    rig.control(0, PORT_OPEN, 1);
    let input = rig.console.input(0);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    input.push(&data);
    input.close();
    // Two page buffers: 8 KiB delivered, the end must wait for the rest.
    let mut got: Vec<u8> = rig.used(0).concat();
    assert_eq!(got.len(), 8192);
    assert!(rig.received().is_empty(), "end of input overtook the data");
    rig.post(0, 4096, true, &[]);
    rig.console.queue_notify(0);
    got.extend(rig.used(0).concat());
    assert_eq!(got, data);
    assert_eq!(rig.received(), vec![(0, PORT_OPEN, 0, vec![])]);
    // Said once.
    rig.console.queue_notify(0);
    assert!(rig.received().is_empty());
}

#[test]
fn input_ended_before_the_port_is_ready_ends_once_it_is() {
    let mem = memory();
    let mut rig = Rig::multiport(&mem, vec![port("in", None)]);
    rig.console.input(0).close();
    rig.handshake(1);
    assert_eq!(
        rig.received(),
        vec![
            (0, PORT_NAME, 0, b"in".to_vec()),
            (0, PORT_OPEN, 1, vec![]),
            (0, PORT_OPEN, 0, vec![])
        ]
    );
}

#[test]
fn inline_output_is_written_during_the_notification() {
    let mem = memory();
    let out = SharedBuf::default();
    let mut rig = Rig::multiport(
        &mem,
        vec![port("ctl", Some(Output::Inline(Box::new(out.clone()))))],
    );
    rig.handshake(1);
    rig.tx(0, b"{\"t\":\"started\"}\n");
    rig.tx(0, b"more");
    rig.console.queue_notify(1);
    assert_eq!(out.bytes(), b"{\"t\":\"started\"}\nmore");
    assert_eq!(rig.used(1).len(), 2);
}

#[test]
fn stream_output_reaches_the_sink_in_order() {
    let mem = memory();
    let out = SharedBuf::default();
    let mut rig = Rig::multiport(
        &mem,
        vec![
            port("in", None),
            port("out", Some(Output::Stream(Box::new(out.clone())))),
        ],
    );
    rig.handshake(1);
    let mut want = Vec::new();
    for i in 0..10u8 {
        let chunk = vec![b'a' + i; 1000 + usize::from(i)];
        rig.tx(1, &chunk);
        want.extend_from_slice(&chunk);
        rig.console.queue_notify(5);
    }
    assert!(rig.console.outputs().flush(soon()));
    assert_eq!(out.bytes(), want);
    assert_eq!(rig.used(5).len(), 10);
}

/// The host's reader stops reading: the vCPU must not wait for it, the
/// guest's buffers stay in the ring past the bound, and everything arrives
/// in order once the reader is back.
#[test]
fn a_stalled_reader_holds_the_guest_back_not_the_vcpu() {
    let mem = memory();
    let out = SharedBuf::default();
    let (permit, permits) = mpsc::channel();
    let sink = Blocking {
        permits,
        out: out.clone(),
    };
    let mut rig = Rig::multiport(
        &mem,
        vec![port("out", Some(Output::Stream(Box::new(sink))))],
    );
    rig.handshake(1);
    const CHUNK: usize = 256 * 1024;
    const CHAINS: usize = 14;
    let mut want = Vec::new();
    for i in 0..CHAINS {
        let chunk: Vec<u8> = (0..CHUNK).map(|j| (i * 7 + j % 251) as u8).collect();
        rig.tx(0, &chunk);
        want.extend_from_slice(&chunk);
    }
    let t = Instant::now();
    rig.console.queue_notify(1);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the notification waited for the reader"
    );
    // Let the writer take what it can (it blocks in its first write).
    std::thread::sleep(Duration::from_millis(100));
    rig.console.queue_notify(1);
    let taken = rig.used(1).len();
    assert!(
        taken * CHUNK <= 2 * STREAM_BUFFER + CHUNK,
        "{taken} buffers taken: the host buffered past its bound"
    );
    assert!(taken < CHAINS);
    assert!(!rig
        .console
        .outputs()
        .flush(Instant::now() + Duration::from_millis(50)));

    // The reader is back.
    std::thread::spawn(move || while permit.send(()).is_ok() {});
    assert!(rig.console.outputs().flush(soon()));
    assert_eq!(rig.used(1).len(), CHAINS - taken);
    let got = out.bytes();
    assert_eq!(got.len(), want.len());
    let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
    if let Some(d) = first_diff {
        let chains: Vec<u8> = got.chunks(CHUNK).map(|c| c[0]).collect();
        panic!("output altered at byte {d}: chain first bytes {chains:?}");
    }
}

#[test]
fn a_broken_sink_drops_output_and_keeps_the_guest_going() {
    let mem = memory();
    let mut rig = Rig::multiport(
        &mem,
        vec![port("out", Some(Output::Stream(Box::new(Broken))))],
    );
    rig.handshake(1);
    for _ in 0..6 {
        rig.tx(0, &vec![b'x'; 300 * 1024]);
        rig.console.queue_notify(1);
    }
    assert!(rig.console.outputs().flush(soon()));
    rig.console.queue_notify(1);
    assert_eq!(rig.used(1).len(), 6);
    assert!(rig.console.outputs().dropped() > 0);
}

#[test]
fn an_oversized_chain_is_cut() {
    let mem = memory();
    let out = SharedBuf::default();
    let mut rig = Rig::multiport(
        &mem,
        vec![port("out", Some(Output::Stream(Box::new(out.clone()))))],
    );
    rig.handshake(1);
    rig.tx(0, &vec![b'y'; 3 << 20]);
    rig.console.queue_notify(1);
    assert!(rig.console.outputs().flush(soon()));
    assert_eq!(out.bytes().len() as u64, MAX_CHAIN);
    assert_eq!(rig.console.outputs().dropped(), (3 << 20) - MAX_CHAIN);
}

#[test]
fn hostile_control_messages_are_ignored() {
    let mem = memory();
    let mut rig = Rig::multiport(&mem, vec![port("a", None)]);
    for _ in 0..8 {
        rig.post(usize::from(CONTROL_RX_QUEUE), 4096, true, &[]);
    }
    rig.console.queue_notify(CONTROL_RX_QUEUE);
    rig.control(99, PORT_READY, 1);
    rig.control(u32::MAX, PORT_OPEN, 1);
    rig.control(0, 0xffff, 7);
    rig.control(0, DEVICE_READY, 0);
    // A message shorter than its header, and one outside guest memory.
    rig.post(usize::from(CONTROL_TX_QUEUE), 4, false, &[0; 4]);
    rig.qs[usize::from(CONTROL_TX_QUEUE)].post(&mem, u64::MAX - 4, 8, false);
    rig.console.queue_notify(CONTROL_TX_QUEUE);
    assert!(rig.received().is_empty());
    assert!(!rig.console.input(0).is_open());
    // Notifications of queues that do not exist are ignored.
    rig.console.queue_notify(200);
}

#[test]
fn control_messages_wait_for_driver_buffers() {
    let mem = memory();
    let mut rig = Rig::multiport(&mem, vec![port("a", None), port("b", None)]);
    rig.control(u32::MAX, DEVICE_READY, 1);
    assert!(rig.received().is_empty());
    rig.post(usize::from(CONTROL_RX_QUEUE), 4096, true, &[]);
    rig.console.queue_notify(CONTROL_RX_QUEUE);
    assert_eq!(rig.received(), vec![(0, DEVICE_ADD, 0, vec![])]);
    // A buffer too small for a message goes back empty; the message
    // takes the next one.
    rig.post(usize::from(CONTROL_RX_QUEUE), 4, true, &[]);
    rig.post(usize::from(CONTROL_RX_QUEUE), 4096, true, &[]);
    rig.console.queue_notify(CONTROL_RX_QUEUE);
    assert_eq!(
        rig.used(usize::from(CONTROL_RX_QUEUE)),
        vec![vec![], control_message(1, DEVICE_ADD, 0, &[])]
    );
}

#[test]
fn a_single_port_driver_gets_port_0_live() {
    let mem = memory();
    let out = SharedBuf::default();
    let mut rig = Rig::new(
        &mem,
        vec![port("io", Some(Output::Inline(Box::new(out.clone()))))],
        VIRTIO_F_VERSION_1,
    );
    rig.post(0, 64, true, &[]);
    rig.console.queue_notify(0);
    rig.console.input(0).push(b"in");
    assert_eq!(rig.used(0), vec![b"in".to_vec()]);
    rig.tx(0, b"out");
    rig.console.queue_notify(1);
    assert_eq!(out.bytes(), b"out");
}

#[test]
fn reset_closes_ports_and_keeps_pending_input() {
    let mem = memory();
    let mut rig = Rig::multiport(&mem, vec![port("a", None)]);
    rig.handshake(1);
    rig.control(0, PORT_OPEN, 1);
    let input = rig.console.input(0);
    assert!(input.is_open());
    rig.console.reset();
    assert!(!input.is_open());
    input.push(b"kept");
    for q in 0..4 {
        rig.console.queue_notify(q);
    }
    assert_eq!(input.pending_len(), 4);
}

#[test]
fn input_from_another_thread_is_delivered() {
    let mem = memory();
    let mut rig = Rig::multiport(&mem, vec![port("a", None)]);
    rig.handshake(1);
    rig.control(0, PORT_OPEN, 1);
    let input = rig.console.input(0);
    std::thread::spawn(move || input.push(b"from a thread"))
        .join()
        .unwrap();
    assert_eq!(rig.used(0), vec![b"from a thread".to_vec()]);
}

#[test]
fn waiting_for_the_backlog_ends_when_the_guest_takes_input() {
    let mem = memory();
    let mut rig = Rig::multiport(&mem, vec![port("a", None)]);
    rig.handshake(0);
    rig.control(0, PORT_OPEN, 1);
    let input = rig.console.input(0);
    input.push(&[1u8; 5000]);
    assert!(!input.wait_pending_below(100, Instant::now() + Duration::from_millis(20)));
    rig.post(0, 4096, true, &[]);
    rig.post(0, 4096, true, &[]);
    rig.console.queue_notify(0);
    assert!(input.wait_pending_below(100, Instant::now()));
}

/// Like the Linux driver: a ring full of page-sized receive buffers, each
/// re-posted as soon as the guest has read it, while much more input than
/// the ring holds is pending. The ring indexes wrap around. (The ring is
/// laid out by hand: the mock's layout is only good for a few entries.)
#[test]
fn bulk_input_flows_through_reposted_buffers() {
    const SIZE: u16 = 16;
    const BUF: u32 = 4096;
    let (desc, avail, used) = (0x8_0000u64, 0x8_1000u64, 0x8_2000u64);
    let mem = memory();
    let mut console = Console::new(vec![port("io", None)]).unwrap();
    console.ack_features(VIRTIO_F_VERSION_1);
    let mut rxq = Queue::new(SIZE).unwrap();
    rxq.try_set_desc_table_address(GuestAddress(desc)).unwrap();
    rxq.try_set_avail_ring_address(GuestAddress(avail)).unwrap();
    rxq.try_set_used_ring_address(GuestAddress(used)).unwrap();
    rxq.set_ready(true);
    let txq: Queue = MockSplitQueue::create(&mem, GuestAddress(0x9_0000), 16)
        .create_queue()
        .unwrap();
    let mut queues = vec![rxq, txq];
    queues.push(Queue::new(QUEUE_SIZE).unwrap());
    queues.push(Queue::new(QUEUE_SIZE).unwrap());
    let irq = Arc::new(CountingIrq::default());
    console.activate(mem.clone(), queues, irq.clone()).unwrap();

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
    console.queue_notify(0);

    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let handle = console.input(0);
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
            post(head as u16, &mut avail_idx);
            console.queue_notify(0);
        }
    }
    assert!(received == input, "input arrived altered or out of order");
    assert_eq!(handle.pending_len(), 0);
    assert!(irq.count() > 1);
}

#[test]
fn activation_needs_port_0_and_the_right_queue_count() {
    let mem = memory();
    let mut c = Console::new(vec![port("a", None)]).unwrap();
    let irq: Arc<dyn Interrupt> = Arc::new(CountingIrq::default());
    assert!(c
        .activate(mem.clone(), vec![Queue::new(16).unwrap()], irq.clone())
        .is_err());
    let not_ready: Vec<Queue> = (0..4).map(|_| Queue::new(16).unwrap()).collect();
    assert!(c.activate(mem.clone(), not_ready, irq).is_err());
}

/// `VRING_USED_F_NO_NOTIFY` in queue `q`'s used ring.
fn notifications_off(rig: &Rig<'_>, q: usize) -> bool {
    let flags: u16 = rig
        .mem
        .read_obj(GuestAddress(rig.qs[q].base + 0x2000))
        .unwrap();
    flags & virtio_bindings::virtio_ring::VRING_USED_F_NO_NOTIFY as u16 != 0
}

/// Every notification is a VM exit: a receive queue asks for them only
/// while input waits for buffers.
#[test]
fn receive_notifications_only_while_input_waits() {
    let mem = memory();
    let mut rig = Rig::multiport(&mem, vec![port("in", None)]);
    rig.handshake(0);
    rig.control(0, PORT_OPEN, 1);
    let input = rig.console.input(0);
    input.push(&[7u8; 6000]);
    assert!(
        !notifications_off(&rig, 0),
        "input waits: buffers must be announced"
    );
    rig.post(0, 4096, true, &[]);
    rig.post(0, 4096, true, &[]);
    rig.console.queue_notify(0);
    assert_eq!(input.pending_len(), 0);
    assert!(notifications_off(&rig, 0), "nothing waits: no exits wanted");
    // A buffer posted without a notification is used by the next push.
    rig.post(0, 4096, true, &[]);
    input.push(b"more");
    assert_eq!(rig.used(0).concat().len(), 6004);
}

/// A transmit queue stops asking while the host buffer is full, and asks
/// again once the writer has room and has taken what was queued.
#[test]
fn transmit_notifications_stop_while_the_host_buffer_is_full() {
    let mem = memory();
    let out = SharedBuf::default();
    let (permit, permits) = mpsc::channel();
    let sink = Blocking {
        permits,
        out: out.clone(),
    };
    let mut rig = Rig::multiport(
        &mem,
        vec![port("out", Some(Output::Stream(Box::new(sink))))],
    );
    rig.handshake(1);
    assert!(!notifications_off(&rig, 1));
    for _ in 0..12 {
        rig.tx(0, &vec![1u8; 256 * 1024]);
    }
    rig.console.queue_notify(1);
    std::thread::sleep(Duration::from_millis(100));
    rig.console.queue_notify(1);
    assert!(
        notifications_off(&rig, 1),
        "full: guest notifications are useless exits"
    );
    std::thread::spawn(move || while permit.send(()).is_ok() {});
    assert!(rig.console.outputs().flush(soon()));
    assert_eq!(out.bytes().len(), 12 * 256 * 1024);
    assert!(
        !notifications_off(&rig, 1),
        "drained: the next buffer must be announced"
    );
}

/// Linux splices a pipe as one chain of many pages in an indirect table.
#[test]
fn chains_in_indirect_tables_are_taken_whole() {
    use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
    let mem = memory();
    let out = SharedBuf::default();
    let mut rig = Rig::multiport(
        &mem,
        vec![port("out", Some(Output::Stream(Box::new(out.clone()))))],
    );
    assert_ne!(rig.console.features() & VIRTIO_RING_F_INDIRECT_DESC, 0);
    rig.handshake(1);
    // 64 pages, each its own descriptor, in an indirect table.
    let table = 0x80_0000u64;
    let mut want = Vec::new();
    for i in 0..64u16 {
        let addr = 0x90_0000 + u64::from(i) * 4096;
        let page = vec![i as u8; 4096];
        mem.write_slice(&page, GuestAddress(addr)).unwrap();
        want.extend_from_slice(&page);
        let flags = if i < 63 { VRING_DESC_F_NEXT as u16 } else { 0 };
        let d = Descriptor::new(addr, 4096, flags, i + 1);
        mem.write_obj(d, GuestAddress(table + u64::from(i) * 16))
            .unwrap();
    }
    let q = &mut rig.qs[1];
    let head = q.avail % RING_SIZE;
    let d = Descriptor::new(table, 64 * 16, VRING_DESC_F_INDIRECT as u16, 0);
    mem.write_obj(d, GuestAddress(q.base + u64::from(head) * 16))
        .unwrap();
    mem.write_obj(
        head,
        GuestAddress(q.base + 0x1000 + 4 + u64::from(head) * 2),
    )
    .unwrap();
    q.avail = q.avail.wrapping_add(1);
    mem.write_obj(q.avail, GuestAddress(q.base + 0x1002))
        .unwrap();
    rig.console.queue_notify(1);
    assert!(rig.console.outputs().flush(soon()));
    assert!(out.bytes() == want, "the indirect chain arrived altered");
}

/// A driver that asks again and again without posting buffers cannot make
/// the device queue messages without bound.
#[test]
fn control_messages_waiting_for_buffers_are_bounded() {
    let mem = memory();
    let mut rig = Rig::multiport(&mem, vec![port("a", None), port("b", None)]);
    for _ in 0..RING_SIZE {
        rig.control(u32::MAX, DEVICE_READY, 1);
    }
    for _ in 0..1000 {
        // Re-use one descriptor slot: the device takes it at once.
        rig.control(u32::MAX, DEVICE_READY, 1);
    }
    assert_eq!(
        lock(&rig.console.shared.state).control_out.len(),
        MAX_CONTROL_BACKLOG
    );
}

/// A guest that resets the device on its way down (reboot) loses none of
/// what it transmitted, even what waited in the ring for host room.
#[test]
fn reset_takes_what_waits_in_the_ring() {
    let mem = memory();
    let out = SharedBuf::default();
    let (permit, permits) = mpsc::channel();
    let sink = Blocking {
        permits,
        out: out.clone(),
    };
    let mut rig = Rig::multiport(
        &mem,
        vec![port("out", Some(Output::Stream(Box::new(sink))))],
    );
    rig.handshake(1);
    let mut want = Vec::new();
    for i in 0..12u8 {
        let chunk = vec![i; 256 * 1024];
        rig.tx(0, &chunk);
        want.extend_from_slice(&chunk);
    }
    rig.console.queue_notify(1);
    std::thread::sleep(Duration::from_millis(100));
    rig.console.queue_notify(1);
    assert!(rig.used(1).len() < 12, "the ring must still hold buffers");
    rig.console.reset();
    std::thread::spawn(move || while permit.send(()).is_ok() {});
    assert!(rig.console.outputs().flush(soon()));
    assert!(out.bytes() == want, "output lost or altered at reset");
}
