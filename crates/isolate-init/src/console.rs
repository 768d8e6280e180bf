//! The guest's ports: workload stdio on `/dev/hvc0` and `/dev/hvc1`, the
//! control channel on `/dev/hvc2` — or, when there is no `/dev/hvc2` (a
//! reference VMM booted the guest), everything on `/dev/console` with
//! control lines prefixed by [`CONSOLE_PREFIX`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use isolate_core::protocol::{
    ControlMessage, CONSOLE_PREFIX, CONTROL_PORT, STDERR_PORT, STDIO_PORT,
};
use nix::sys::termios::{self, SetArg};

/// The kernel console.
pub const CONSOLE: &str = "/dev/console";

/// Longest control line accepted from the host; longer ones are dropped.
const MAX_LINE: usize = 64 * 1024;

/// Errors of opening the ports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A port could not be opened.
    #[error("cannot open {path}")]
    Open {
        /// The device.
        path: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A port could not be put in raw mode.
    #[error("cannot put {path} in raw mode")]
    Raw {
        /// The device.
        path: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
}

/// Control fd and prefix mode for [`emergency_send`] (the panic hook).
static CONTROL_FD: AtomicI32 = AtomicI32::new(-1);
static CONTROL_PREFIXED: AtomicBool = AtomicBool::new(true);

/// The opened ports.
pub struct Ports {
    /// The workload's stdout (fd 1): hvc0, or the console.
    pub stdout: File,
    /// The workload's stderr (fd 2): hvc1, or the console.
    pub stderr: File,
    /// hvc0 opened a second time, non-blocking, for reading the workload's
    /// stdin (its own open file, so the workload's stdout stays blocking).
    /// `None` on the console fallback.
    pub stdin_source: Option<File>,
    /// The write end of the workload's stdin pipe, while it is open
    /// (set by `run`).
    pub stdin_pipe: Option<OwnedFd>,
    /// The control channel.
    pub control: Control,
}

/// The control channel: writes [`ControlMessage`] lines, and reads them
/// when it is a real port.
pub struct Control {
    file: File,
    prefixed: bool,
}

impl Control {
    /// Sends one message. Errors are ignored: there is nobody else to tell.
    pub fn send(&mut self, msg: &ControlMessage) {
        let line = format_line(msg, self.prefixed);
        let _ = self.file.write_all(line.as_bytes());
        let _ = termios::tcdrain(self.file.as_fd());
    }

    /// The port to poll for host→guest messages (`None` on the console).
    pub fn input(&self) -> Option<&File> {
        (!self.prefixed).then_some(&self.file)
    }
}

/// A control message as written on the wire.
pub fn format_line(msg: &ControlMessage, prefixed: bool) -> String {
    let line = msg.to_line();
    if prefixed {
        format!("{CONSOLE_PREFIX}{line}")
    } else {
        line
    }
}

fn open(path: &'static str, write: bool, nonblock: bool) -> Result<File, Error> {
    let flags = libc::O_NOCTTY | if nonblock { libc::O_NONBLOCK } else { 0 };
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| Error::Open { path, source })
}

/// Raw mode: no echo, no line discipline, no `\n`→`\r\n`, 8-bit clean.
fn make_raw(path: &'static str, f: &File) -> Result<(), Error> {
    let raw = |source| Error::Raw { path, source };
    let mut t = termios::tcgetattr(f.as_fd()).map_err(raw)?;
    termios::cfmakeraw(&mut t);
    termios::tcsetattr(f.as_fd(), SetArg::TCSANOW, &t).map_err(raw)
}

/// Opens the ports (hvc0..2, or the console when hvc2 is missing) and puts
/// them in raw mode.
pub fn open_ports() -> Result<Ports, Error> {
    let ports = if Path::new(CONTROL_PORT).exists() {
        let stdout = open(STDIO_PORT, true, false)?;
        make_raw(STDIO_PORT, &stdout)?;
        let stderr = open(STDERR_PORT, true, false)?;
        make_raw(STDERR_PORT, &stderr)?;
        let control = open(CONTROL_PORT, true, false)?;
        make_raw(CONTROL_PORT, &control)?;
        Ports {
            stdout,
            stderr,
            stdin_source: Some(open(STDIO_PORT, false, true)?),
            stdin_pipe: None,
            control: Control {
                file: control,
                prefixed: false,
            },
        }
    } else {
        // The console now carries the workload's output and the control
        // lines: keep kernel messages (all but emergencies) off it.
        let _ = std::fs::write("/proc/sys/kernel/printk", "1");
        let console = open(CONSOLE, true, false)?;
        make_raw(CONSOLE, &console)?;
        Ports {
            stdout: open(CONSOLE, true, false)?,
            stderr: open(CONSOLE, true, false)?,
            stdin_source: None,
            stdin_pipe: None,
            control: Control {
                file: console,
                prefixed: true,
            },
        }
    };
    CONTROL_PREFIXED.store(ports.control.prefixed, Ordering::SeqCst);
    CONTROL_FD.store(ports.control.file.as_raw_fd(), Ordering::SeqCst);
    Ok(ports)
}

/// Sends `msg` on the control channel if it is open, else to the kernel
/// console, from any context (used by the panic hook and before the ports
/// are open).
pub fn emergency_send(msg: &ControlMessage) {
    let fd = CONTROL_FD.load(Ordering::SeqCst);
    let prefixed = CONTROL_PREFIXED.load(Ordering::SeqCst);
    let line = format_line(msg, prefixed || fd < 0);
    if fd >= 0 {
        // SAFETY: `line` is a live buffer of `line.len()` bytes; `fd` is the
        // control port, which stays open for the init's whole life.
        unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
    } else if let Ok(mut c) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(CONSOLE)
    {
        let _ = c.write_all(line.as_bytes());
    } else {
        // The kernel opened /dev/console as our fd 2 if the initramfs had it.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// Splits the host→guest byte stream into control messages.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    overlong: bool,
}

impl LineBuffer {
    /// Feeds bytes; returns the messages completed by them. Lines that do
    /// not parse, and lines over 64 KiB, are dropped.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<ControlMessage> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if !self.overlong {
                    if let Some(m) = std::str::from_utf8(&self.buf)
                        .ok()
                        .and_then(ControlMessage::from_line)
                    {
                        out.push(m);
                    }
                }
                self.buf.clear();
                self.overlong = false;
            } else if self.buf.len() < MAX_LINE {
                self.buf.push(b);
            } else {
                self.overlong = true;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use isolate_core::Status;

    use super::*;

    #[test]
    fn lines_split_across_reads_parse_once_complete() {
        let mut lb = LineBuffer::default();
        assert!(lb.push(b"{\"t\":\"sig").is_empty());
        let got = lb.push(b"nal\",\"signo\":15}\r\n{\"t\":\"stdin_eof\"}\n{\"t\"");
        assert_eq!(
            got,
            [
                ControlMessage::Signal { signo: 15 },
                ControlMessage::StdinEof { bytes: None }
            ]
        );
    }

    #[test]
    fn garbage_and_overlong_lines_are_dropped() {
        let mut lb = LineBuffer::default();
        assert!(lb.push(b"not json\n\n").is_empty());
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(lb.push(&long).is_empty());
        assert_eq!(
            lb.push(b"\n{\"t\":\"stdin_eof\"}\n"),
            [ControlMessage::StdinEof { bytes: None }]
        );
    }

    #[test]
    fn console_lines_carry_the_prefix() {
        let m = ControlMessage::Exit {
            status: Status::Exited(3),
            peak_memory: None,
            cpu_time_ns: Some(5),
        };
        let line = format_line(&m, true);
        assert!(
            line.starts_with("ISOLATE-CONTROL {\"t\":\"exit\""),
            "{line}"
        );
        assert!(line.ends_with('\n'));
        assert_eq!(
            ControlMessage::from_line(line.strip_prefix(CONSOLE_PREFIX).unwrap()),
            Some(m.clone())
        );
        assert!(!format_line(&m, false).starts_with(CONSOLE_PREFIX));
    }
}
