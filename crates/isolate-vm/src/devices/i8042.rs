//! A minimal i8042 keyboard controller at ports 0x60..0x64.
//!
//! It exists for one reason: a guest booted with `reboot=k` resets the machine
//! by writing 0xFE (pulse the reset line) to the command port 0x64, which
//! ends the VM. It also answers the kernel's probes consistently (controller
//! self-test, command byte, interface test) so that a guest with the i8042
//! driver sees a controller with no keyboard or mouse attached.

use std::collections::VecDeque;

use crate::devices::BusDevice;

/// First port of the controller (data port 0x60).
pub const I8042_PORT: u64 = 0x60;
/// Ports decoded: 0x60 (data) to 0x64 (status/command).
pub const I8042_LEN: u64 = 5;

const DATA: u64 = 0;
const COMMAND: u64 = 4;

/// Status register: output buffer full (a byte waits at port 0x60).
const STATUS_OBF: u8 = 0x01;
/// Status register: system flag, set once the self-test passed.
const STATUS_SYS: u8 = 0x04;
/// Status register: the last write was to the command port.
const STATUS_CMD: u8 = 0x08;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_TEST_KBD: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_OUTPORT: u8 = 0xd0;
const CMD_WRITE_OUTPORT: u8 = 0xd1;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

/// Controller command byte: keyboard interrupt on, system flag, translation on.
const CTR_DEFAULT: u8 = 0x45;
/// Output port bit 0: when cleared, the CPU is held in reset.
const OUTPORT_RESET_BIT: u8 = 0x01;
/// Reply of a device that is not there (keyboard/mouse commands).
const NO_DEVICE: u8 = 0xfe;
/// Bounded reply queue: the guest cannot make it grow.
const MAX_OUTPUT: usize = 16;

/// The data byte the next write to port 0x60 carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Keyboard,
    CommandByte,
    OutputPort,
    AuxByte,
}

/// The i8042 state machine; calls the reset callback when the guest resets
/// the machine through it.
pub struct I8042 {
    on_reset: Box<dyn FnMut() + Send>,
    reset_requested: bool,
    output: VecDeque<u8>,
    ctr: u8,
    outport: u8,
    expect: Expect,
    last_was_command: bool,
}

impl I8042 {
    /// A controller that calls `on_reset` (e.g. sets an `AtomicBool` the vCPU
    /// loop checks, or writes an `EventFd`) each time the guest asks for a
    /// CPU reset.
    pub fn new(on_reset: impl FnMut() + Send + 'static) -> Self {
        Self {
            on_reset: Box::new(on_reset),
            reset_requested: false,
            output: VecDeque::new(),
            ctr: CTR_DEFAULT,
            outport: OUTPORT_RESET_BIT,
            expect: Expect::Keyboard,
            last_was_command: false,
        }
    }

    /// Whether the guest has asked for a reset.
    pub fn reset_requested(&self) -> bool {
        self.reset_requested
    }

    fn reply(&mut self, byte: u8) {
        if self.output.len() < MAX_OUTPUT {
            self.output.push_back(byte);
        }
    }

    fn request_reset(&mut self) {
        self.reset_requested = true;
        (self.on_reset)();
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_SYS;
        if !self.output.is_empty() {
            status |= STATUS_OBF;
        }
        if self.last_was_command {
            status |= STATUS_CMD;
        }
        status
    }

    fn command(&mut self, cmd: u8) {
        self.expect = Expect::Keyboard;
        match cmd {
            CMD_READ_CTR => self.reply(self.ctr),
            CMD_WRITE_CTR => self.expect = Expect::CommandByte,
            CMD_DISABLE_AUX => self.ctr |= 0x20,
            CMD_ENABLE_AUX => self.ctr &= !0x20,
            CMD_DISABLE_KBD => self.ctr |= 0x10,
            CMD_ENABLE_KBD => self.ctr &= !0x10,
            // Interface tests: 0x00 means no error on the clock/data lines.
            CMD_TEST_AUX | CMD_TEST_KBD => self.reply(0x00),
            CMD_SELF_TEST => self.reply(0x55),
            CMD_READ_OUTPORT => self.reply(self.outport),
            CMD_WRITE_OUTPORT => self.expect = Expect::OutputPort,
            CMD_WRITE_AUX => self.expect = Expect::AuxByte,
            CMD_RESET_CPU => self.request_reset(),
            // 0xf0..=0xff pulse output-port lines; bit 0 low pulses reset.
            0xf0..=0xff if cmd & OUTPORT_RESET_BIT == 0 => self.request_reset(),
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        match std::mem::replace(&mut self.expect, Expect::Keyboard) {
            Expect::CommandByte => self.ctr = byte,
            Expect::OutputPort => {
                self.outport = byte;
                if byte & OUTPORT_RESET_BIT == 0 {
                    self.request_reset();
                }
            }
            // No keyboard and no mouse are attached.
            Expect::Keyboard | Expect::AuxByte => self.reply(NO_DEVICE),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA => self.output.pop_front().unwrap_or(0),
            COMMAND => self.status(),
            _ => 0,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&byte) = data.first() else {
            return;
        };
        match offset {
            DATA => {
                self.last_was_command = false;
                self.data(byte);
            }
            COMMAND => {
                self.last_was_command = true;
                self.command(byte);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::devices::test_util::Rng;

    fn controller() -> (I8042, Arc<AtomicUsize>) {
        let resets = Arc::new(AtomicUsize::new(0));
        let counter = resets.clone();
        let dev = I8042::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        (dev, resets)
    }

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_signals_stop() {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let mut dev = I8042::new(move || flag.store(true, Ordering::SeqCst));
        // What the kernel's `reboot=k` path does: wait for IBF clear, write 0xFE.
        assert_eq!(read(&mut dev, COMMAND) & 0x02, 0);
        dev.write(COMMAND, &[0xfe]);
        assert!(stop.load(Ordering::SeqCst));
        assert!(dev.reset_requested());
    }

    #[test]
    fn reset_through_output_port_signals_stop() {
        let (mut dev, resets) = controller();
        dev.write(COMMAND, &[CMD_WRITE_OUTPORT]);
        dev.write(DATA, &[0x00]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn other_traffic_does_not_reset() {
        let (mut dev, resets) = controller();
        for cmd in [0x20, 0xaa, 0xab, 0xad, 0xae, 0xa7, 0xa8, 0xd0, 0xff] {
            dev.write(COMMAND, &[cmd]);
        }
        dev.write(DATA, &[0xfe]); // 0xFE on the data port is a keyboard byte
        assert_eq!(resets.load(Ordering::SeqCst), 0);
        assert!(!dev.reset_requested());
    }

    #[test]
    fn answers_probes() {
        let (mut dev, _) = controller();
        assert_eq!(read(&mut dev, COMMAND) & STATUS_OBF, 0, "nothing to read");
        dev.write(COMMAND, &[CMD_SELF_TEST]);
        assert_ne!(read(&mut dev, COMMAND) & STATUS_OBF, 0);
        assert_eq!(read(&mut dev, DATA), 0x55);
        dev.write(COMMAND, &[CMD_WRITE_CTR]);
        dev.write(DATA, &[0x47]);
        dev.write(COMMAND, &[CMD_READ_CTR]);
        assert_eq!(read(&mut dev, DATA), 0x47);
        dev.write(COMMAND, &[CMD_TEST_KBD]);
        assert_eq!(read(&mut dev, DATA), 0x00);
        // A keyboard command gets "no device".
        dev.write(DATA, &[0xff]);
        assert_eq!(read(&mut dev, DATA), NO_DEVICE);
        assert_eq!(read(&mut dev, COMMAND) & STATUS_OBF, 0);
    }

    #[test]
    fn random_traffic_is_bounded_and_never_panics() {
        let (mut dev, _) = controller();
        let mut rng = Rng(7);
        for _ in 0..20_000 {
            let offset = rng.below(6);
            let mut buf = vec![rng.next_u64() as u8; rng.below(3) as usize];
            if rng.below(2) == 0 {
                dev.read(offset, &mut buf);
            } else {
                dev.write(offset, &buf);
            }
            assert!(dev.output.len() <= MAX_OUTPUT);
        }
    }
}
