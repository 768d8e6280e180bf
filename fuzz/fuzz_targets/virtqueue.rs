//! Descriptor chains into the console and block devices, with guest memory
//! entirely chosen by the fuzzer. The driver side (ring addresses, queue
//! sizes, what it writes between notifications, host input) comes from the
//! fuzzer too. After every event the target checks the device against an
//! independent reading of the same rings (virtio-queue's own chain walker):
//! no panic, the used index moves by the number of chains the device had to
//! take, every used entry names the head that was offered, its length lies
//! within the chain, what the console transmits is what the chains held,
//! what it receives is the host's input in order, and a block device never
//! grows its disk nor writes a read-only one.
//!
//! The checks assume the device's own writes (data, status bytes, used
//! ring) do not land on the rings or tables it reads; once a driver makes
//! them overlap, the outcome is its own problem, and the rest of that input
//! is only checked for panics.

#![no_main]

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use isolate_fuzz::{activate, guest_memory, reg, write_reg, CountingIrq, Rings, SharedBuf};
use isolate_vm::devices::virtio::{Block, Console, ConsoleInput, MmioTransport};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x1_0000;
const DISK_LEN: u64 = 16 * 512;
const VRING_DESC_F_INDIRECT: u16 = 4;

#[derive(Arbitrary, Debug)]
struct QueueSetup {
    size_log2: u8,
    desc: u16,
    avail: u16,
    used: u16,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The driver notifies a queue (maybe one that does not exist).
    Notify(u8),
    /// The driver writes guest memory (new chains, a new avail index, junk).
    Write { addr: u16, bytes: Vec<u8> },
    /// The driver publishes chains: avail index of queue `q` set to `idx`.
    AvailIdx { q: u8, idx: u16 },
    /// Host input for the console.
    Input(Vec<u8>),
    /// The host declares the console port open.
    OpenInput,
    /// The driver resets the device and sets it up again.
    Reset,
}

#[derive(Arbitrary, Debug)]
struct Input {
    block: bool,
    read_only: bool,
    queues: [QueueSetup; 2],
    ops: Vec<Op>,
    memory: Vec<u8>,
}

/// Half-open guest range `[start, start + len)`.
#[derive(Clone, Copy, Debug)]
struct Range(u64, u64);

impl Range {
    fn overlaps(self, o: Range) -> bool {
        self.1 > 0
            && o.1 > 0
            && self.0 < o.0.saturating_add(o.1)
            && o.0 < self.0.saturating_add(self.1)
    }
    fn inside(self) -> bool {
        self.0
            .checked_add(self.1)
            .is_some_and(|end| end <= MEM_SIZE as u64)
    }
}

/// One chain as an independent walker sees it.
#[derive(Debug)]
struct Chain {
    head: u16,
    readable: Vec<Range>,
    writable: Vec<Range>,
}

impl Chain {
    fn writable_len(&self) -> u64 {
        self.writable.iter().map(|r| r.1).sum()
    }
}

/// What the target knows about one queue.
struct Shadow {
    rings: Rings,
    next_avail: u16,
    next_used: u16,
}

impl Shadow {
    fn queue(&self) -> Queue {
        let mut q = Queue::new(self.rings.size).unwrap();
        q.try_set_size(self.rings.size).unwrap();
        q.try_set_desc_table_address(GuestAddress(self.rings.desc))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.rings.avail))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.rings.used))
            .unwrap();
        q.set_ready(true);
        q.set_next_avail(self.next_avail);
        q
    }

    /// The chains the device may take now, in order.
    fn chains(&self, mem: &GuestMemoryMmap) -> Vec<Chain> {
        let mut q = self.queue();
        let Ok(iter) = q.iter(mem) else {
            return Vec::new();
        };
        iter.map(|chain| {
            let head = chain.head_index();
            let mut c = Chain {
                head,
                readable: Vec::new(),
                writable: Vec::new(),
            };
            for d in chain {
                let r = Range(d.addr().0, d.len().into());
                if d.is_write_only() {
                    c.writable.push(r);
                } else {
                    c.readable.push(r);
                }
            }
            c
        })
        .collect()
    }

    fn used_ring(&self) -> Range {
        Range(self.rings.used, 6 + 8 * u64::from(self.rings.size))
    }

    /// What the device reads to find chains: descriptor table, available
    /// ring, and every indirect table the descriptor table points at.
    fn read_by_device(&self, mem: &GuestMemoryMmap) -> Vec<Range> {
        let size = u64::from(self.rings.size);
        let mut out = vec![
            Range(self.rings.desc, 16 * size),
            Range(self.rings.avail, 6 + 2 * size),
        ];
        for i in 0..size {
            let at = GuestAddress(self.rings.desc + 16 * i);
            let addr: u64 = mem.read_obj(at).unwrap_or(0);
            let len: u32 = mem.read_obj(at.unchecked_add(8)).unwrap_or(0);
            let flags: u16 = mem.read_obj(at.unchecked_add(12)).unwrap_or(0);
            if flags & VRING_DESC_F_INDIRECT != 0 {
                out.push(Range(addr, len.into()));
            }
        }
        out
    }

    fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.rings.used + 2)).unwrap()
    }

    fn used_entry(&self, mem: &GuestMemoryMmap, n: u16) -> (u32, u32) {
        let slot = u64::from(n % self.rings.size);
        let at = GuestAddress(self.rings.used + 4 + 8 * slot);
        (
            mem.read_obj(at).unwrap(),
            mem.read_obj(at.unchecked_add(4)).unwrap(),
        )
    }

    fn interrupts_wanted(&self, mem: &GuestMemoryMmap) -> bool {
        let flags: u16 = mem.read_obj(GuestAddress(self.rings.avail)).unwrap();
        flags & 1 == 0 // VRING_AVAIL_F_NO_INTERRUPT
    }
}

/// The used entries a device wrote for the chains it took (`offered`):
/// one per chain with a valid head, in order, each naming that head.
/// Returns each such chain with its used length.
fn check_used<'a>(
    mem: &GuestMemoryMmap,
    s: &Shadow,
    offered: &'a [Chain],
    moved: usize,
) -> Vec<(&'a Chain, u32)> {
    let valid: Vec<&Chain> = offered.iter().filter(|c| c.head < s.rings.size).collect();
    assert_eq!(moved, valid.len(), "used entries vs chains taken");
    valid
        .into_iter()
        .enumerate()
        .map(|(j, chain)| {
            let (id, len) = s.used_entry(mem, s.next_used.wrapping_add(j as u16));
            assert_eq!(id, u32::from(chain.head), "used entry names another head");
            (chain, len)
        })
        .collect()
}

fn read_stream(mem: &GuestMemoryMmap, ranges: &[Range], len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for r in ranges {
        let take = r.1.min(len - out.len() as u64) as usize;
        let start = out.len();
        out.resize(start + take, 0);
        mem.read_slice(&mut out[start..], GuestAddress(r.0))
            .unwrap();
        if out.len() as u64 == len {
            break;
        }
    }
    out
}

fn disk() -> &'static File {
    static DISK: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    DISK.get_or_init(|| tempfile::tempfile().unwrap())
}

fn disk_pattern() -> Vec<u8> {
    (0..DISK_LEN)
        .map(|i| (i / 512 + 1) as u8 ^ i as u8)
        .collect()
}

fn rings(setup: &QueueSetup) -> Rings {
    Rings {
        size: 1 << (setup.size_log2 % 9),
        desc: u64::from(setup.desc & !15),
        avail: u64::from(setup.avail & !1),
        used: u64::from(setup.used & !3),
    }
}

fuzz_target!(|input: Input| {
    let mem = guest_memory(MEM_SIZE, &input.memory);
    let irq = Arc::new(CountingIrq::default());
    let out = SharedBuf::default();
    let mut console_input: Option<ConsoleInput> = None;
    let dev: Box<dyn isolate_vm::devices::virtio::VirtioDevice> = if input.block {
        let file = disk();
        file.set_len(0).unwrap();
        file.write_all_at(&disk_pattern(), 0).unwrap();
        Box::new(Block::new(file.try_clone().unwrap(), input.read_only, "fuzz").unwrap())
    } else {
        let c = Console::new(Box::new(out.clone()));
        console_input = Some(c.input());
        Box::new(c)
    };
    let nqueues = if input.block { 1 } else { 2 };
    let mut shadows: Vec<Shadow> = input.queues[..nqueues]
        .iter()
        .map(|s| Shadow {
            rings: rings(s),
            next_avail: 0,
            next_used: 0,
        })
        .collect();
    let ring_list: Vec<Rings> = shadows.iter().map(|s| s.rings).collect();
    let mut t = MmioTransport::new(mem.clone(), irq.clone(), dev).unwrap();
    activate(&mut t, &ring_list);
    let all_valid = ring_list.iter().all(|r| {
        r.avail != 0
            && Range(r.desc, 16 * u64::from(r.size)).inside()
            && Range(r.avail, 6 + 2 * u64::from(r.size)).inside()
            && Range(r.used, 6 + 8 * u64::from(r.size)).inside()
    });
    if !t.is_activated() {
        return;
    }
    assert!(ring_list
        .iter()
        .all(|r| r.used + 6 + 8 * u64::from(r.size) <= MEM_SIZE as u64));

    // Host input not yet taken by the guest, as the device must hold it.
    let mut pending: VecDeque<u8> = VecDeque::new();
    // Set once the driver made the device's writes overlap what it reads.
    let mut tainted = !all_valid;

    for op in input.ops.iter().take(64) {
        let mut pushed: &[u8] = &[];
        let mut notified = None;
        match op {
            Op::Write { addr, bytes } => {
                let addr = usize::from(*addr);
                let n = bytes.len().min(MEM_SIZE - addr);
                mem.write_slice(&bytes[..n], GuestAddress(addr as u64))
                    .unwrap();
                continue;
            }
            Op::AvailIdx { q, idx } => {
                if let Some(s) = shadows.get(usize::from(*q) % nqueues) {
                    mem.write_obj(*idx, GuestAddress(s.rings.avail + 2))
                        .unwrap();
                }
                continue;
            }
            Op::Reset => {
                write_reg(&mut t, reg::STATUS, 0);
                assert!(!t.is_activated());
                activate(&mut t, &ring_list);
                assert!(t.is_activated());
                for s in &mut shadows {
                    s.next_avail = 0;
                    s.next_used = 0;
                }
                // Activation delivers nothing: a reset closed the port.
                continue;
            }
            Op::Notify(q) => notified = Some(u32::from(*q)),
            Op::Input(data) => pushed = data,
            Op::OpenInput => {}
        }

        // A well-behaved driver never writes the used ring: keep its index
        // where the device left it so the movement can be measured.
        for s in &shadows {
            mem.write_obj(s.next_used, GuestAddress(s.rings.used + 2))
                .unwrap();
        }
        let expected: Vec<Vec<Chain>> = shadows.iter().map(|s| s.chains(&mem)).collect();
        if !tainted {
            let mut device_reads = Vec::new();
            for s in &shadows {
                device_reads.extend(s.read_by_device(&mem));
            }
            let used_rings: Vec<Range> = shadows.iter().map(Shadow::used_ring).collect();
            for w in expected
                .iter()
                .flatten()
                .flat_map(|c| &c.writable)
                .chain(&used_rings)
            {
                if device_reads.iter().any(|r| r.overlaps(*w)) {
                    tainted = true;
                }
            }
            for w in expected.iter().flatten().flat_map(|c| &c.writable) {
                if used_rings.iter().any(|u| u.overlaps(*w)) {
                    tainted = true;
                }
            }
            if used_rings.len() == 2 && used_rings[0].overlaps(used_rings[1]) {
                tainted = true;
            }
        }
        // What the device can transmit, as it is before the event (the
        // console may deliver input into guest memory after transmitting).
        let mut image = vec![0u8; MEM_SIZE];
        if !input.block {
            mem.read_slice(&mut image, GuestAddress(0)).unwrap();
        }
        let irq_before = irq.count();
        let open_before = console_input.as_ref().is_some_and(ConsoleInput::is_open);

        match op {
            Op::Notify(_) => write_reg(&mut t, reg::QUEUE_NOTIFY, notified.unwrap()),
            Op::Input(data) => console_input.as_ref().map_or((), |i| i.push(data)),
            Op::OpenInput => console_input.as_ref().map_or((), ConsoleInput::open),
            _ => unreachable!(),
        }
        let output = out.take();
        if console_input.is_some() {
            pending.extend(pushed);
        }
        if tainted {
            continue;
        }

        // How far each used ring moved: one entry per chain taken whose
        // head is inside the queue (a chain with a head past the queue
        // size is taken, but cannot be returned).
        let moved: Vec<usize> = shadows
            .iter()
            .map(|s| usize::from(s.used_idx(&mem).wrapping_sub(s.next_used)))
            .collect();
        let mut consumed = vec![0usize; nqueues];

        if input.block {
            if notified == Some(0) {
                consumed[0] = expected[0].len();
            }
            for (chain, len) in check_used(&mem, &shadows[0], &expected[0][..consumed[0]], moved[0])
            {
                assert!(u64::from(len) <= chain.writable_len(), "{len} > {chain:?}");
                if len > 0 && chain.writable.iter().all(|r| r.inside()) {
                    let wl = chain.writable_len();
                    let status = read_stream(&mem, &chain.writable, wl)[wl as usize - 1];
                    assert!(status <= 2, "status byte {status}");
                }
            }
            let file = disk();
            assert_eq!(
                file.metadata().unwrap().len(),
                DISK_LEN,
                "the disk changed size"
            );
            if input.read_only {
                let mut now = vec![0u8; DISK_LEN as usize];
                file.read_exact_at(&mut now, 0).unwrap();
                assert!(now == disk_pattern(), "a read-only disk was written");
            }
        } else {
            let input_handle = console_input.as_ref().unwrap();
            let (rx, tx) = (0usize, 1usize);
            // Transmit: every chain when notified, none otherwise; each
            // returned with length 0; the output is their bytes in order.
            if notified == Some(tx as u32) {
                consumed[tx] = expected[tx].len();
            }
            let s = &shadows[tx];
            let mut sent = Vec::new();
            let mut exact = true;
            for (chain, len) in check_used(&mem, s, &expected[tx][..consumed[tx]], moved[tx]) {
                assert_eq!(len, 0, "tx chain returned with a length");
                exact &= chain
                    .readable
                    .iter()
                    .all(|r| r.inside() && !r.overlaps(s.used_ring()));
                if exact {
                    for r in &chain.readable {
                        sent.extend_from_slice(&image[r.0 as usize..(r.0 + r.1) as usize]);
                    }
                }
            }
            if exact {
                assert!(output == sent, "console output differs from the chains");
            }

            // Receive: the bytes taken leave the pending input, in order.
            let taken = pending
                .len()
                .checked_sub(input_handle.pending_len())
                .expect("the device holds more input than the host gave it");
            let open = input_handle.is_open();
            assert!(open || !open_before, "the port closed without a reset");
            if !open {
                assert_eq!(
                    (moved[rx], taken),
                    (0, 0),
                    "input delivered to a closed port"
                );
            }
            // Whenever the device looked at the receive queue with input
            // pending, it took chains until the input or the chains ran out.
            let looked = matches!(op, Op::Input(_) | Op::OpenInput)
                || notified == Some(rx as u32)
                || (notified == Some(tx as u32) && !open_before && moved[tx] > 0);
            let size = shadows[rx].rings.size;
            consumed[rx] = if looked && open && input_handle.pending_len() > 0 {
                expected[rx].len()
            } else {
                // The chain that took the last byte was the last one taken.
                expected[rx]
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.head < size)
                    .nth(moved[rx].wrapping_sub(1))
                    .map_or(
                        if moved[rx] == 0 {
                            0
                        } else {
                            expected[rx].len()
                        },
                        |(i, _)| i + 1,
                    )
            };
            let s = &shadows[rx];
            let mut total = 0u64;
            let mut delivered = Vec::new();
            let mut exact = true;
            let mut seen: Vec<Range> = Vec::new();
            for (chain, len) in check_used(&mem, s, &expected[rx][..consumed[rx]], moved[rx]) {
                assert!(u64::from(len) <= chain.writable_len());
                total += u64::from(len);
                let mut left = u64::from(len);
                for r in &chain.writable {
                    let part = Range(r.0, r.1.min(left));
                    left -= part.1;
                    exact &= part.inside() && !seen.iter().any(|o| o.overlaps(part));
                    seen.push(part);
                }
                if exact {
                    delivered.extend(read_stream(&mem, &chain.writable, len.into()));
                }
            }
            assert_eq!(total, taken as u64, "used lengths vs input taken");
            let expect: Vec<u8> = pending.drain(..taken).collect();
            if exact {
                assert!(delivered == expect, "the guest received other bytes");
            }
        }

        // An interrupt when buffers were used (unless the driver said
        // not to), none when nothing was.
        let used_any = moved.iter().any(|&k| k > 0);
        if !used_any {
            assert_eq!(irq.count(), irq_before, "interrupt without used buffers");
        } else if shadows
            .iter()
            .zip(&moved)
            .any(|(s, &k)| k > 0 && s.interrupts_wanted(&mem))
        {
            assert!(
                irq.count() > irq_before,
                "used buffers without an interrupt"
            );
        }
        for ((s, &k), &c) in shadows.iter_mut().zip(&moved).zip(&consumed) {
            s.next_avail = s.next_avail.wrapping_add(c as u16);
            s.next_used = s.next_used.wrapping_add(k as u16);
        }
    }
});
