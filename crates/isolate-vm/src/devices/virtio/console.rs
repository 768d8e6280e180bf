//! A multiport virtio console (`VIRTIO_CONSOLE_F_MULTIPORT`).
//!
//! One device carries several named ports. Linux shows each one as a
//! character device `/dev/vportNpM`, with its name in
//! `/sys/class/virtio-ports/vportNpM/name`. There is no tty layer on a
//! port: no line discipline or echo, no 2 KiB split of every write, no
//! spinning vCPU while the host copies (Linux's `hvc` console path waits
//! with interrupts off until the device has used each buffer). A guest
//! write of up to 32 KiB is one buffer and one notification.
//!
//! Queues (virtio 1.2, 5.3.2): port 0 receive/transmit are 0/1, the control
//! receive/transmit queues 2/3, port N's are 2N+2 / 2N+3.
//!
//! The control protocol, device side: the driver sends `DEVICE_READY`; the
//! device answers `DEVICE_ADD` for each port; the driver sends `PORT_READY`
//! for each; the device answers `PORT_NAME` and `PORT_OPEN(1)` (the host
//! end is connected). The driver sends `PORT_OPEN(1)` / `PORT_OPEN(0)` when
//! a guest process opens or closes the port.
//!
//! **Input** (host→guest, [`ConsoleInput`]) waits until a guest process has
//! the port open (Linux throws away data that arrives on a port nobody has
//! open). Its end travels in band: once every byte pushed before
//! [`ConsoleInput::close`] is in the guest's buffers, the device sends
//! `PORT_OPEN(0)`, and the guest's reads return end-of-file after the data.
//!
//! **Output** (guest→host) goes to the port's [`Output`]:
//! - [`Output::Inline`]: written on the vCPU thread as the guest transmits;
//!   for sinks that never block (the control-line parser);
//! - [`Output::Stream`]: copied into a buffer of [`STREAM_BUFFER`] bytes
//!   that a writer thread empties into the sink (a pipe, a terminal). While
//!   the buffer is full the device leaves the guest's buffers in the ring:
//!   the guest's writes wait (flow control) and no vCPU ever waits for the
//!   host's reader. [`ConsoleOutputs::flush`] writes out the rest at the end.
//!
//! Every notification from the guest is a VM exit, so the device asks for
//! them only when it needs them (`VRING_USED_F_NO_NOTIFY` otherwise): on a
//! receive queue only while input waits for buffers, on a transmit queue
//! only while the device is ready to take more.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{
    read_stream, write_stream, ActiveQueue, SplitChain, VirtioDevice, TYPE_CONSOLE,
    VIRTIO_F_VERSION_1,
};
use crate::devices::{lock, DeviceError, Interrupt};

/// Feature bit: the device has several ports and a control queue pair.
pub const VIRTIO_CONSOLE_F_MULTIPORT: u64 = 1 << 1;
/// Feature bit: the driver may put a chain's descriptors in an indirect
/// table (Linux then splices a whole pipe, up to 256 pages, as one chain).
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 =
    1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
/// Size of each receive queue offered to the driver: Linux posts one page
/// per buffer, so a port holds at most 512 KiB of input in flight.
pub const QUEUE_SIZE: u16 = 128;
/// Size of each transmit queue: a guest writer has at most this many
/// buffers in flight (32 KiB each from `write`, up to one pipe from
/// `splice`), pinned in guest memory until the host takes them.
pub const TX_QUEUE_SIZE: u16 = QUEUE_SIZE;
/// Index of the control receive queue (device→driver messages).
pub const CONTROL_RX_QUEUE: u16 = 2;
/// Index of the control transmit queue (driver→device messages).
pub const CONTROL_TX_QUEUE: u16 = 3;
/// Most ports one console carries.
pub const MAX_PORTS: usize = 16;
/// Guest output a stream port buffers on the host before the guest waits.
pub const STREAM_BUFFER: usize = 1 << 20;
/// Most bytes taken from one guest buffer chain; the rest of a longer
/// chain is dropped (Linux sends at most 32 KiB per write, and a splice
/// of at most one pipe: 1 MiB with the largest pipes).
pub const MAX_CHAIN: u64 = 2 << 20;
/// What [`ConsoleOutputs::flush`] takes from the rings beyond the buffer.
const FLUSH_LIMIT: usize = 8 * STREAM_BUFFER;
/// Device→driver control messages kept while the driver posts no buffers
/// (a driver that asks again and again without reading gets no more).
const MAX_CONTROL_BACKLOG: usize = 4 * MAX_PORTS;

/// `struct virtio_console_control`: id (u32), event (u16), value (u16).
const CONTROL_LEN: usize = 8;
/// Size of `struct virtio_console_config` (cols, rows, max_nr_ports, emerg_wr).
const CONFIG_LEN: usize = 12;

// Control events (virtio 1.2, 5.3.6.2).
const DEVICE_READY: u16 = 0;
const DEVICE_ADD: u16 = 1;
const PORT_READY: u16 = 3;
const PORT_OPEN: u16 = 6;
const PORT_NAME: u16 = 7;

/// Where a port's guest output goes.
pub enum Output {
    /// Written on the vCPU thread; the sink must never block.
    Inline(Box<dyn Write + Send>),
    /// Buffered and written by a writer thread; the sink may block.
    Stream(Box<dyn Write + Send>),
}

/// One port of the console.
pub struct PortConfig {
    /// The name the guest reads in `/sys/class/virtio-ports/*/name`.
    pub name: String,
    /// Its guest output; `None` drops it.
    pub output: Option<Output>,
}

/// What a queue index is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Rx(usize),
    Tx(usize),
    ControlRx,
    ControlTx,
}

fn role(index: u16) -> Role {
    match index {
        0 => Role::Rx(0),
        1 => Role::Tx(0),
        CONTROL_RX_QUEUE => Role::ControlRx,
        CONTROL_TX_QUEUE => Role::ControlTx,
        i => {
            let port = usize::from(i) / 2 - 1;
            if i % 2 == 0 {
                Role::Rx(port)
            } else {
                Role::Tx(port)
            }
        }
    }
}

/// A control message, as the wire has it (little endian: virtio 1.x).
fn control_message(id: usize, event: u16, value: u16, extra: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTROL_LEN + extra.len());
    m.extend_from_slice(&(id as u32).to_le_bytes());
    m.extend_from_slice(&event.to_le_bytes());
    m.extend_from_slice(&value.to_le_bytes());
    m.extend_from_slice(extra);
    m
}

/// The host buffer of a stream port.
#[derive(Default)]
struct Stream {
    buf: Vec<u8>,
    /// The writer thread is writing bytes it took out of `buf`.
    busy: bool,
    /// The sink failed (e.g. its reader went away): output is dropped.
    failed: bool,
}

struct Port {
    name: String,
    rx: Option<ActiveQueue>,
    tx: Option<ActiveQueue>,
    /// The driver sent `PORT_READY`.
    ready: bool,
    /// A guest process has the port open: input may be delivered.
    guest_open: bool,
    input: VecDeque<u8>,
    /// The host's input ended (after `input`).
    input_closed: bool,
    /// `PORT_OPEN(0)` was sent for the end of input.
    close_sent: bool,
    inline: Option<Box<dyn Write + Send>>,
    stream: Option<Stream>,
    /// Guest output bytes dropped (failed sink, cut chains, unreadable buffers).
    dropped: u64,
}

struct State {
    ports: Vec<Port>,
    control_rx: Option<ActiveQueue>,
    control_tx: Option<ActiveQueue>,
    /// Device→driver control messages not yet delivered.
    control_out: VecDeque<Vec<u8>>,
    /// The device is gone: writer threads finish and end.
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Notified when a stream buffer gains or loses bytes and when input
    /// is taken by the guest.
    changed: Condvar,
}

impl State {
    /// Queues a device→driver control message, unless too many wait.
    fn queue_control(&mut self, msg: Vec<u8>) {
        if self.control_out.len() < MAX_CONTROL_BACKLOG {
            self.control_out.push_back(msg);
        }
    }

    /// Copies pending input of `p` into the guest's buffers (if a guest
    /// process has the port open), then sends the end of input once all of
    /// it is delivered.
    fn deliver(&mut self, p: usize, changed: &Condvar) {
        let Some(port) = self.ports.get_mut(p) else {
            return;
        };
        if port.guest_open && !port.input.is_empty() {
            if let Some(rx) = port.rx.as_mut() {
                let mut used = false;
                let mut rechecked = false;
                while !port.input.is_empty() {
                    let Some(chain) = rx.queue.pop_descriptor_chain(&rx.mem) else {
                        // Out of buffers: the driver's next ones must be
                        // announced, unless some came in meanwhile (looked
                        // at once: a garbage ring must not loop forever).
                        if !rechecked && rx.queue.enable_notification(&rx.mem).unwrap_or(false) {
                            rechecked = true;
                            continue;
                        }
                        break;
                    };
                    let head = chain.head_index();
                    let chain = SplitChain::collect(chain);
                    // The front part only: making the whole backlog
                    // contiguous would move up to a megabyte per buffer.
                    let data = port.input.as_slices().0;
                    let want = (data.len() as u64).min(chain.writable_len()) as usize;
                    let written = if write_stream(&rx.mem, &chain.writable, 0, &data[..want]) {
                        want
                    } else {
                        0
                    };
                    port.input.drain(..written);
                    // `written` is bounded by the chain length, which fits in u32.
                    let _ = rx.queue.add_used(&rx.mem, head, written as u32);
                    used = true;
                }
                if port.input.is_empty() {
                    // Nothing waits for buffers: new ones need no exit (the
                    // next push looks at the ring anyway).
                    let _ = rx.queue.disable_notification(&rx.mem);
                }
                if used {
                    rx.notify_guest();
                    changed.notify_all();
                }
            }
        }
        if port.ready && port.input_closed && port.input.is_empty() && !port.close_sent {
            port.close_sent = true;
            self.queue_control(control_message(p, PORT_OPEN, 0, &[]));
            self.send_control();
        }
    }

    /// Takes the guest's output buffers of port `p`: into its sink (inline),
    /// or into its stream buffer while that holds less than `limit` bytes.
    fn pull_tx(&mut self, p: usize, limit: usize, changed: &Condvar) {
        let Some(port) = self.ports.get_mut(p) else {
            return;
        };
        let Some(tx) = port.tx.as_mut() else {
            return;
        };
        let mut used = false;
        let mut grew = false;
        let mut rechecked = false;
        loop {
            if let Some(s) = &port.stream {
                if !s.failed && s.buf.len() >= limit {
                    // Full: the writer thread takes more once it has room;
                    // until then the guest's notifications are useless exits.
                    let _ = tx.queue.disable_notification(&tx.mem);
                    break;
                }
            }
            let Some(chain) = tx.queue.pop_descriptor_chain(&tx.mem) else {
                // All taken: the next buffer must be announced, unless one
                // came in meanwhile (looked at once, as above).
                if !rechecked && tx.queue.enable_notification(&tx.mem).unwrap_or(false) {
                    rechecked = true;
                    continue;
                }
                break;
            };
            let head = chain.head_index();
            let chain = SplitChain::collect(chain);
            let total = chain.readable_len();
            let len = total.min(MAX_CHAIN);
            port.dropped += total - len;
            // `len` <= MAX_CHAIN, which fits in usize.
            let len = len as usize;
            match (&mut port.stream, &mut port.inline) {
                (Some(s), _) if !s.failed => {
                    let start = s.buf.len();
                    s.buf.resize(start + len, 0);
                    if read_stream(&tx.mem, &chain.readable, 0, &mut s.buf[start..]) {
                        grew |= len > 0;
                    } else {
                        s.buf.truncate(start);
                        port.dropped += len as u64;
                    }
                }
                (None, Some(sink)) => {
                    let mut data = vec![0u8; len];
                    if !read_stream(&tx.mem, &chain.readable, 0, &mut data)
                        || sink.write_all(&data).is_err()
                    {
                        port.dropped += len as u64;
                    }
                }
                _ => port.dropped += len as u64,
            }
            let _ = tx.queue.add_used(&tx.mem, head, 0);
            used = true;
        }
        if let Some(sink) = port.inline.as_mut() {
            let _ = sink.flush();
        }
        if used {
            tx.notify_guest();
        }
        if grew {
            changed.notify_all();
        }
    }

    /// Moves pending device→driver control messages into the driver's buffers.
    fn send_control(&mut self) {
        let Some(rx) = self.control_rx.as_mut() else {
            return;
        };
        let mut used = false;
        while let Some(msg) = self.control_out.front() {
            let Some(chain) = rx.queue.pop_descriptor_chain(&rx.mem) else {
                break;
            };
            let head = chain.head_index();
            let chain = SplitChain::collect(chain);
            // A buffer too small for the message goes back empty; the
            // message waits for the next one.
            let len = if chain.writable_len() >= msg.len() as u64
                && write_stream(&rx.mem, &chain.writable, 0, msg)
            {
                let len = msg.len() as u32;
                self.control_out.pop_front();
                len
            } else {
                0
            };
            let _ = rx.queue.add_used(&rx.mem, head, len);
            used = true;
        }
        if used {
            rx.notify_guest();
        }
    }

    /// Reads the driver's control messages and acts on them.
    fn process_control(&mut self, changed: &Condvar) {
        let mut messages = Vec::new();
        if let Some(tx) = self.control_tx.as_mut() {
            let mut used = false;
            while let Some(chain) = tx.queue.pop_descriptor_chain(&tx.mem) {
                let head = chain.head_index();
                let chain = SplitChain::collect(chain);
                let mut m = [0u8; CONTROL_LEN];
                if read_stream(&tx.mem, &chain.readable, 0, &mut m) {
                    messages.push(m);
                }
                let _ = tx.queue.add_used(&tx.mem, head, 0);
                used = true;
            }
            if used {
                tx.notify_guest();
            }
        }
        for m in messages {
            let id = u32::from_le_bytes([m[0], m[1], m[2], m[3]]) as usize;
            let event = u16::from_le_bytes([m[4], m[5]]);
            let value = u16::from_le_bytes([m[6], m[7]]);
            self.control_event(id, event, value, changed);
        }
        self.send_control();
    }

    fn control_event(&mut self, id: usize, event: u16, value: u16, changed: &Condvar) {
        match event {
            DEVICE_READY if value == 1 => {
                for p in 0..self.ports.len() {
                    self.queue_control(control_message(p, DEVICE_ADD, 0, &[]));
                }
            }
            PORT_READY if value == 1 => {
                let Some(port) = self.ports.get_mut(id) else {
                    return;
                };
                port.ready = true;
                let name = port.name.clone().into_bytes();
                self.queue_control(control_message(id, PORT_NAME, 0, &name));
                self.queue_control(control_message(id, PORT_OPEN, 1, &[]));
                self.deliver(id, changed);
            }
            PORT_OPEN => {
                let Some(port) = self.ports.get_mut(id) else {
                    return;
                };
                port.guest_open = value != 0;
                self.deliver(id, changed);
            }
            // DEVICE_READY(0) (the driver failed), RESIZE, unknown events.
            _ => {}
        }
    }
}

/// A cloneable handle that feeds bytes to one port's guest input.
#[derive(Clone)]
pub struct ConsoleInput {
    shared: Arc<Shared>,
    port: usize,
}

impl ConsoleInput {
    /// Queues `data` for the guest and delivers what the guest has buffers
    /// for; the rest goes when it adds buffers. Never blocks on the guest.
    pub fn push(&self, data: &[u8]) {
        let mut st = lock(&self.shared.state);
        st.ports[self.port].input.extend(data);
        st.deliver(self.port, &self.shared.changed);
    }

    /// Ends the input: the guest reads end-of-file after what was pushed.
    pub fn close(&self) {
        let mut st = lock(&self.shared.state);
        st.ports[self.port].input_closed = true;
        st.deliver(self.port, &self.shared.changed);
    }

    /// Whether a guest process has the port open (input is delivered).
    pub fn is_open(&self) -> bool {
        lock(&self.shared.state).ports[self.port].guest_open
    }

    /// Bytes pushed but not yet taken by the guest.
    pub fn pending_len(&self) -> usize {
        lock(&self.shared.state).ports[self.port].input.len()
    }

    /// Waits until fewer than `limit` bytes are pending, or `deadline`;
    /// returns whether they are.
    pub fn wait_pending_below(&self, limit: usize, deadline: Instant) -> bool {
        let mut st = lock(&self.shared.state);
        loop {
            if st.ports[self.port].input.len() < limit {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// A handle on the console's stream outputs, for the end of a run.
#[derive(Clone)]
pub struct ConsoleOutputs {
    shared: Arc<Shared>,
}

impl ConsoleOutputs {
    /// Takes what the guest has queued on its stream ports (past the
    /// buffer bound: the guest has nothing left to say) and waits until the
    /// writer threads wrote it all, or until `deadline`. Returns whether
    /// everything was written (or dropped by a failed sink).
    pub fn flush(&self, deadline: Instant) -> bool {
        let mut st = lock(&self.shared.state);
        for p in 0..st.ports.len() {
            if st.ports[p].stream.is_some() {
                st.pull_tx(p, FLUSH_LIMIT, &self.shared.changed);
            }
        }
        loop {
            let idle = st.ports.iter().all(|p| {
                p.stream
                    .as_ref()
                    .is_none_or(|s| s.failed || (s.buf.is_empty() && !s.busy))
            });
            if idle {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Guest output bytes dropped so far, all ports.
    pub fn dropped(&self) -> u64 {
        lock(&self.shared.state)
            .ports
            .iter()
            .map(|p| p.dropped)
            .sum()
    }
}

/// Writes a stream port's buffer to its sink until the device is gone.
fn writer(shared: Arc<Shared>, p: usize, mut sink: Box<dyn Write + Send>) {
    let mut chunk = Vec::new();
    loop {
        {
            let mut st = lock(&shared.state);
            loop {
                let shutdown = st.shutdown;
                let Some(s) = st.ports[p].stream.as_mut() else {
                    return;
                };
                s.busy = false;
                if !s.buf.is_empty() {
                    std::mem::swap(&mut chunk, &mut s.buf);
                    s.busy = true;
                    break;
                }
                if shutdown {
                    shared.changed.notify_all();
                    return;
                }
                // The buffer is empty: take more from the ring (it may have
                // stopped at the bound), or wait, waking a waiting flush.
                st.pull_tx(p, STREAM_BUFFER, &shared.changed);
                if st.ports[p]
                    .stream
                    .as_ref()
                    .is_some_and(|s| s.buf.is_empty())
                {
                    shared.changed.notify_all();
                    st = shared
                        .changed
                        .wait(st)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
            }
        }
        let ok = sink.write_all(&chunk).and_then(|()| sink.flush()).is_ok();
        let mut st = lock(&shared.state);
        if !ok {
            st.ports[p].dropped += chunk.len() as u64;
            if let Some(s) = st.ports[p].stream.as_mut() {
                s.failed = true;
                s.buf.clear();
            }
        }
        chunk.clear();
        // Room again: take what the guest queued meanwhile.
        st.pull_tx(p, STREAM_BUFFER, &shared.changed);
        shared.changed.notify_all();
    }
}

/// The multiport virtio console device model.
pub struct Console {
    shared: Arc<Shared>,
    queue_sizes: Vec<u16>,
    acked_features: u64,
}

impl Console {
    /// A console with `ports` (port 0 first); starts one writer thread per
    /// stream port.
    pub fn new(ports: Vec<PortConfig>) -> Result<Self, DeviceError> {
        if ports.is_empty() || ports.len() > MAX_PORTS {
            return Err(DeviceError::ConsolePorts {
                count: ports.len(),
                max: MAX_PORTS,
            });
        }
        let mut sinks = Vec::new();
        let state_ports = ports
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let (inline, stream) = match c.output {
                    Some(Output::Inline(w)) => (Some(w), None),
                    Some(Output::Stream(w)) => {
                        sinks.push((i, c.name.clone(), w));
                        (None, Some(Stream::default()))
                    }
                    None => (None, None),
                };
                Port {
                    name: c.name,
                    rx: None,
                    tx: None,
                    ready: false,
                    guest_open: false,
                    input: VecDeque::new(),
                    input_closed: false,
                    close_sent: false,
                    inline,
                    stream,
                    dropped: 0,
                }
            })
            .collect::<Vec<_>>();
        let n = state_ports.len();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ports: state_ports,
                control_rx: None,
                control_tx: None,
                control_out: VecDeque::new(),
                shutdown: false,
            }),
            changed: Condvar::new(),
        });
        for (i, name, sink) in sinks {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("console-{name}"))
                .spawn(move || writer(s, i, sink))
                .map_err(|source| DeviceError::Io {
                    context: format!("cannot start the writer thread of console port {name}"),
                    source,
                })?;
        }
        let queue_sizes = (0..2 * n + 2)
            .map(|i| match role(i as u16) {
                Role::Rx(_) | Role::ControlRx => QUEUE_SIZE,
                Role::Tx(_) | Role::ControlTx => TX_QUEUE_SIZE,
            })
            .collect();
        Ok(Self {
            shared,
            queue_sizes,
            acked_features: 0,
        })
    }

    /// A handle to send input to port `port` (panics if there is no such port).
    pub fn input(&self, port: usize) -> ConsoleInput {
        assert!(
            port < lock(&self.shared.state).ports.len(),
            "no console port {port}"
        );
        ConsoleInput {
            shared: self.shared.clone(),
            port,
        }
    }

    /// A handle on the stream outputs.
    pub fn outputs(&self) -> ConsoleOutputs {
        ConsoleOutputs {
            shared: self.shared.clone(),
        }
    }

    fn multiport(&self) -> bool {
        self.acked_features & VIRTIO_CONSOLE_F_MULTIPORT != 0
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.changed.notify_all();
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_MULTIPORT | VIRTIO_RING_F_INDIRECT_DESC
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols and rows 0 (no size), max_nr_ports, emerg_wr 0.
        let mut config = [0u8; CONFIG_LEN];
        let ports = lock(&self.shared.state).ports.len() as u32;
        config[4..8].copy_from_slice(&ports.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|at| config.get(at).copied())
                .unwrap_or(0);
        }
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
        if queues.len() != self.queue_sizes.len() {
            return Err(DeviceError::QueueNotUsable {
                device: "console",
                index: queues.len().min(self.queue_sizes.len()),
                reason: "wrong number of queues",
            });
        }
        let multiport = self.multiport();
        // Port 0's queues are always needed; the rest only with MULTIPORT.
        for (index, q) in queues.iter().enumerate().take(2) {
            if !q.ready() {
                return Err(DeviceError::QueueNotUsable {
                    device: "console",
                    index,
                    reason: "not ready",
                });
            }
        }
        let mut st = lock(&self.shared.state);
        for (index, queue) in queues.into_iter().enumerate() {
            if !queue.ready() || (!multiport && index >= 2) {
                continue;
            }
            let active = Some(ActiveQueue {
                queue,
                mem: mem.clone(),
                interrupt: interrupt.clone(),
            });
            match role(index as u16) {
                Role::Rx(p) => st.ports[p].rx = active,
                Role::Tx(p) => st.ports[p].tx = active,
                Role::ControlRx => st.control_rx = active,
                Role::ControlTx => st.control_tx = active,
            }
        }
        if !multiport {
            // A single-port driver never sends PORT_READY or PORT_OPEN: its
            // port 0 is live from the start.
            st.ports[0].ready = true;
            st.ports[0].guest_open = true;
            st.deliver(0, &self.shared.changed);
        }
        Ok(())
    }

    fn queue_notify(&mut self, queue_index: u16) {
        let changed = &self.shared.changed;
        let mut st = lock(&self.shared.state);
        match role(queue_index) {
            Role::Rx(p) => st.deliver(p, changed),
            Role::Tx(p) => st.pull_tx(p, STREAM_BUFFER, changed),
            Role::ControlRx => st.send_control(),
            Role::ControlTx => st.process_control(changed),
        }
    }

    fn reset(&mut self) {
        self.acked_features = 0;
        let mut st = lock(&self.shared.state);
        // What the guest transmitted and the device did not take yet (its
        // buffer was full) is taken now: a guest that resets the device on
        // its way down (reboot) has said it, and its memory is still there.
        for p in 0..st.ports.len() {
            st.pull_tx(p, FLUSH_LIMIT, &self.shared.changed);
        }
        // Pending input and buffered output stay: the input is delivered
        // once the driver is back and a guest process opens the port again.
        st.control_rx = None;
        st.control_tx = None;
        st.control_out.clear();
        for port in &mut st.ports {
            port.rx = None;
            port.tx = None;
            port.ready = false;
            port.guest_open = false;
            port.close_sent = false;
        }
    }
}

#[cfg(test)]
mod tests;
