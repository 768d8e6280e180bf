//! The 8250/16550A UART at port 0x3f8 (COM1), used for kernel messages.
//!
//! The register model is `vm_superio::Serial`; its output goes to a
//! [`SerialLog`], a ring of the last lines the guest printed (for "the guest
//! failed to boot, last console lines: …" errors), optionally copied to the
//! host's stderr (`--console-log`).
//!
//! Everything here is guest input: the log holds a bounded number of lines
//! of bounded length, and the copy to stderr shows the guest's control
//! characters as escapes (`\x1b`) instead of handing them to the host's
//! terminal.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use isolate_core::protocol::escape_guest_text;
use isolate_core::sys::lock;

use crate::devices::{BusDevice, Interrupt};

/// Base port of COM1.
pub const COM1_PORT: u64 = 0x3f8;
/// Number of ports the UART decodes.
pub const COM1_LEN: u64 = 8;
/// Legacy IRQ line of COM1.
pub const COM1_IRQ: u32 = 4;
/// Lines a [`SerialLog`] keeps by default.
pub const DEFAULT_LOG_LINES: usize = 50;
/// Longest line kept; longer lines are split.
const MAX_LINE: usize = 4096;

#[derive(Default)]
struct LogState {
    lines: VecDeque<String>,
    partial: Vec<u8>,
    capacity: usize,
}

impl LogState {
    fn end_line(&mut self) {
        let bytes = std::mem::take(&mut self.partial);
        let line = String::from_utf8_lossy(&bytes);
        self.lines.push_back(line.trim_end_matches('\r').to_owned());
        while self.lines.len() > self.capacity {
            self.lines.pop_front();
        }
    }

    fn push(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                self.end_line();
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LINE {
                    self.end_line();
                }
            }
        }
    }
}

/// The last lines written to the serial port; cloneable, readable from any thread.
#[derive(Clone)]
pub struct SerialLog {
    state: Arc<Mutex<LogState>>,
}

impl SerialLog {
    /// A log that keeps the last `lines` lines (at least one).
    pub fn new(lines: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(LogState {
                capacity: lines.max(1),
                ..LogState::default()
            })),
        }
    }

    /// The last complete lines, oldest first, followed by the current
    /// unterminated line if there is one (carriage returns removed, invalid
    /// UTF-8 replaced).
    pub fn last_lines(&self) -> Vec<String> {
        let state = lock(&self.state);
        let mut out: Vec<String> = state.lines.iter().cloned().collect();
        if !state.partial.is_empty() {
            let partial = String::from_utf8_lossy(&state.partial);
            out.push(partial.trim_end_matches('\r').to_owned());
        }
        out
    }

    /// Appends guest output (what the UART transmitted).
    pub fn push(&self, data: &[u8]) {
        lock(&self.state).push(data);
    }
}

impl Default for SerialLog {
    fn default() -> Self {
        Self::new(DEFAULT_LOG_LINES)
    }
}

/// Echoed output is written to stderr a line at a time, or at this size.
const ECHO_CHUNK: usize = 1024;

/// Where the UART's transmitted bytes go: the log, and stderr if asked.
struct Sink {
    log: SerialLog,
    echo: Option<Box<dyn Write + Send>>,
    /// Echo bytes not yet written to stderr (the UART sends one byte at a time).
    pending: Vec<u8>,
}

impl Sink {
    /// Writes the pending echo bytes, escaped, to the echo. Unless `at_end`,
    /// a trailing `\r` or unfinished UTF-8 sequence (at most 3 bytes) waits
    /// for the next bytes, so that `\r\n` and characters cut by a chunk
    /// boundary come out whole.
    fn write_echo(&mut self, at_end: bool) {
        let keep = if at_end {
            0
        } else if self.pending.last() == Some(&b'\r') {
            1
        } else {
            unfinished_utf8(&self.pending)
        };
        let done = self.pending.len() - keep;
        if let Some(echo) = self.echo.as_mut() {
            let safe = escape_console(&self.pending[..done]);
            // The console copy is best effort: a closed stderr must not stop the guest.
            let _ = echo.write_all(safe.as_bytes());
            let _ = echo.flush();
        }
        self.pending.drain(..done);
    }
}

/// Console output made safe for a terminal: line by line, `\r\n` and `\n`
/// end lines, every other control character is escaped, invalid UTF-8 is
/// replaced.
fn escape_console(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut safe = String::with_capacity(text.len());
    for piece in text.split_inclusive('\n') {
        match piece.strip_suffix('\n') {
            Some(line) => {
                let line = line.strip_suffix('\r').unwrap_or(line);
                safe.push_str(&escape_guest_text(line, usize::MAX));
                safe.push('\n');
            }
            None => safe.push_str(&escape_guest_text(piece, usize::MAX)),
        }
    }
    safe
}

/// Length of an unfinished UTF-8 sequence at the end of `bytes` (0 to 3).
fn unfinished_utf8(bytes: &[u8]) -> usize {
    for k in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - k];
        if b & 0xc0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let need = match b {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if need > k { k } else { 0 };
    }
    0
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.log.push(buf);
        if self.echo.is_some() {
            self.pending.extend_from_slice(buf);
            if buf.contains(&b'\n') || self.pending.len() >= ECHO_CHUNK {
                self.write_echo(false);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // vm-superio flushes after every byte: keep lines together instead.
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.write_echo(true);
        }
    }
}

/// Adapts [`Interrupt`] to `vm_superio::Trigger`.
struct IrqTrigger(Arc<dyn Interrupt>);

impl vm_superio::Trigger for IrqTrigger {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.trigger();
        Ok(())
    }
}

/// The COM1 UART as a [`BusDevice`] on the port I/O bus (base [`COM1_PORT`]).
pub struct Serial {
    uart: vm_superio::Serial<IrqTrigger, vm_superio::serial::NoEvents, Sink>,
}

impl Serial {
    /// A UART raising `irq` (IRQ 4) whose output goes to `log`, and to
    /// stderr too when `echo` is true.
    pub fn new(irq: Arc<dyn Interrupt>, log: SerialLog, echo: bool) -> Self {
        let echo: Option<Box<dyn Write + Send>> = match echo {
            true => Some(Box::new(io::stderr())),
            false => None,
        };
        Self::with_echo(irq, log, echo)
    }

    /// Like [`new`](Self::new), copying the output, a line at a time, to
    /// `echo` instead of stderr.
    pub fn with_echo(
        irq: Arc<dyn Interrupt>,
        log: SerialLog,
        echo: Option<Box<dyn Write + Send>>,
    ) -> Self {
        Self {
            uart: vm_superio::Serial::new(
                IrqTrigger(irq),
                Sink {
                    log,
                    echo,
                    pending: Vec::new(),
                },
            ),
        }
    }

    /// Queues `data` as input from the host, up to the FIFO's free space;
    /// returns how many bytes were taken.
    pub fn enqueue_input(&mut self, data: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(data).unwrap_or(0)
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data) {
            (Ok(offset), [byte]) if u64::from(offset) < COM1_LEN => *byte = self.uart.read(offset),
            (_, data) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(offset), [byte]) = (u8::try_from(offset), data) {
            if u64::from(offset) < COM1_LEN {
                // The sink never fails and the trigger is infallible.
                let _ = self.uart.write(offset, *byte);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::test_util::{CountingIrq, Rng};

    const THR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LSR: u64 = 5;

    fn serial(lines: usize) -> (Serial, SerialLog, Arc<CountingIrq>) {
        let log = SerialLog::new(lines);
        let irq = Arc::new(CountingIrq::default());
        (Serial::new(irq.clone(), log.clone(), false), log, irq)
    }

    fn print(s: &mut Serial, text: &str) {
        for b in text.bytes() {
            s.write(THR, &[b]);
        }
    }

    #[test]
    fn bytes_written_to_thr_reach_the_log() {
        let (mut s, log, _) = serial(10);
        print(&mut s, "Linux version 6.1\r\nbooting");
        assert_eq!(log.last_lines(), vec!["Linux version 6.1", "booting"]);
    }

    #[test]
    fn keeps_only_the_last_lines() {
        let (mut s, log, _) = serial(3);
        for i in 0..10 {
            print(&mut s, &format!("line {i}\n"));
        }
        assert_eq!(log.last_lines(), vec!["line 7", "line 8", "line 9"]);
    }

    #[test]
    fn long_lines_are_split_and_bad_utf8_replaced() {
        let log = SerialLog::new(5);
        log.push(&vec![b'x'; MAX_LINE + 3]);
        log.push(&[0xff, b'\n']);
        let lines = log.last_lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "xxx\u{fffd}");
    }

    #[test]
    fn transmit_raises_irq_when_enabled() {
        let (mut s, _, irq) = serial(3);
        s.write(IER, &[0x02]); // THR empty interrupt
        let mut iir = [0u8];
        s.read(IIR, &mut iir); // the driver acknowledges the first one
        let before = irq.count();
        print(&mut s, "a");
        assert!(irq.count() > before);
        let mut lsr = [0u8];
        s.read(LSR, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "THR empty");
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let (mut s, _, _) = serial(3);
        let mut rng = Rng(99);
        for _ in 0..10_000 {
            let offset = rng.below(12);
            let len = 1 + rng.below(4) as usize;
            let mut buf = vec![rng.next_u64() as u8; len];
            if rng.below(2) == 0 {
                s.read(offset, &mut buf);
            } else {
                s.write(offset, &buf);
            }
        }
        let mut wide = [0u8; 2];
        s.read(0, &mut wide);
        assert_eq!(wide, [0xff, 0xff]);
    }

    /// A `Write` that records each call.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Calls {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn echo_copies_whole_lines() {
        let calls = Calls::default();
        let irq = Arc::new(CountingIrq::default());
        let mut s = Serial::with_echo(irq, SerialLog::new(3), Some(Box::new(calls.clone())));
        print(&mut s, "first line\nsecond");
        assert_eq!(*calls.0.lock().unwrap(), vec![b"first line\n".to_vec()]);
        drop(s);
        let got = calls.0.lock().unwrap();
        assert_eq!(got.len(), 2, "the unterminated line is written at the end");
        assert_eq!(got[1], b"second");
    }

    fn echoed(text: &[u8]) -> Vec<u8> {
        let calls = Calls::default();
        let irq = Arc::new(CountingIrq::default());
        let mut s = Serial::with_echo(irq, SerialLog::new(3), Some(Box::new(calls.clone())));
        for &b in text {
            s.write(THR, &[b]);
        }
        drop(s);
        let got = calls.0.lock().unwrap();
        got.concat()
    }

    #[test]
    fn echo_escapes_control_characters() {
        assert_eq!(
            echoed(b"\x1b]0;title\x07\x1b[2Jok\r\nnext\rline\x9b\n"),
            "\\x1b]0;title\\x07\\x1b[2Jok\nnext\\rline\u{fffd}\n".as_bytes()
        );
        assert_eq!(
            echoed("\u{202e}evil\u{9b}2J\n".as_bytes()),
            b"\\u{202e}evil\\u{9b}2J\n"
        );
    }

    #[test]
    fn echo_keeps_characters_and_line_ends_cut_by_a_chunk() {
        // A line longer than a chunk, with a two-byte character and a
        // `\r\n` across the chunk boundaries.
        let mut text = vec![b'x'; ECHO_CHUNK - 1];
        text.extend_from_slice("é".as_bytes());
        text.extend(vec![b'y'; ECHO_CHUNK - 2]);
        text.extend_from_slice(b"\r\nz\n");
        let out = String::from_utf8(echoed(&text)).unwrap();
        let want = format!(
            "{}é{}\nz\n",
            "x".repeat(ECHO_CHUNK - 1),
            "y".repeat(ECHO_CHUNK - 2)
        );
        assert_eq!(out, want);
    }

    #[test]
    fn echo_of_garbage_has_no_raw_control_characters() {
        let mut rng = Rng(7);
        let garbage: Vec<u8> = (0..20_000).map(|_| rng.next_u64() as u8).collect();
        let out = echoed(&garbage);
        let text = String::from_utf8(out).expect("the echo is UTF-8");
        assert!(!text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'));
    }

    #[test]
    fn unfinished_utf8_sequences_are_measured() {
        assert_eq!(unfinished_utf8(b"abc"), 0);
        assert_eq!(unfinished_utf8("aé".as_bytes()), 0);
        assert_eq!(unfinished_utf8(&"é".as_bytes()[..1]), 1);
        assert_eq!(unfinished_utf8(&"€".as_bytes()[..2]), 2);
        assert_eq!(unfinished_utf8(&"😀".as_bytes()[..3]), 3);
        assert_eq!(unfinished_utf8(&[0x80, 0x80, 0x80, 0x80]), 0);
    }

    #[test]
    fn log_is_readable_from_another_thread() {
        let (mut s, log, _) = serial(3);
        print(&mut s, "panic: no init\n");
        let lines = std::thread::spawn(move || log.last_lines()).join().unwrap();
        assert_eq!(lines, vec!["panic: no init"]);
    }
}
