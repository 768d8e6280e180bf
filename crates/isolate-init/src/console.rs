//! The guest's ports: the workload's stdin, stdout and stderr and the
//! control channel on the named ports of the VMM's multiport virtio console
//! (`/dev/vportNpM`, found by name in `/sys/class/virtio-ports`) — or, when
//! the guest has no virtio console (a reference VMM booted it), everything
//! on `/dev/console` with control lines prefixed by [`CONSOLE_PREFIX`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

use isolate_core::protocol::{
    ControlMessage, CONSOLE_PREFIX, CONTROL_PORT, PORTS_SYSFS, STDERR_PORT, STDIN_PORT, STDOUT_PORT,
};
use nix::sys::termios::{self, SetArg};

/// The kernel console.
pub const CONSOLE: &str = "/dev/console";
/// Virtio console devices the kernel's driver has bound.
const CONSOLE_DEVICES: &str = "/sys/bus/virtio/drivers/virtio_console";
/// How long the ports may take to be named after the driver bound the device.
const PORTS_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest control line accepted from the host; longer ones are dropped.
const MAX_LINE: usize = isolate_core::protocol::MAX_CONTROL_LINE;

/// Errors of opening the ports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A port could not be opened.
    #[error("cannot open {path}")]
    Open {
        /// The device.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The console could not be put in raw mode.
    #[error("cannot put {path} in raw mode")]
    Raw {
        /// The device.
        path: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The guest has a virtio console, but not every port showed up.
    #[error("the virtio console has no port named {name} (after {waited:?}; ports seen: {seen})")]
    MissingPort {
        /// The port not found.
        name: &'static str,
        /// How long the init waited.
        waited: Duration,
        /// The names found.
        seen: String,
    },
}

/// Control fd and prefix mode for [`emergency_send`] (the panic hook).
static CONTROL_FD: AtomicI32 = AtomicI32::new(-1);
static CONTROL_PREFIXED: AtomicBool = AtomicBool::new(true);

/// The workload's streams on virtio console ports (no tty on them).
pub struct Streams {
    /// The stdin port, read non-blocking; end-of-file once the host
    /// closed it and every byte was read.
    pub stdin: File,
    /// The stdout port, written non-blocking (the init relays a pipe).
    pub stdout: File,
    /// The stderr port, the same.
    pub stderr: File,
}

/// The opened ports.
pub struct Ports {
    /// The virtio console's ports; `None` on the console fallback.
    pub streams: Option<Streams>,
    /// The console fallback's stdout and stderr (handed to the workload
    /// as they are); `None` with ports.
    pub console: Option<(File, File)>,
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
        if self.prefixed {
            let _ = termios::tcdrain(self.file.as_fd());
        }
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

fn open(path: &Path, read: bool, write: bool, nonblock: bool) -> Result<File, Error> {
    let flags = libc::O_NOCTTY | libc::O_CLOEXEC | if nonblock { libc::O_NONBLOCK } else { 0 };
    OpenOptions::new()
        .read(read)
        .write(write)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// Raw mode: no echo, no line discipline, no `\n`→`\r\n`, 8-bit clean.
fn make_raw(path: &'static str, f: &File) -> Result<(), Error> {
    let raw = |source| Error::Raw { path, source };
    let mut t = termios::tcgetattr(f.as_fd()).map_err(raw)?;
    termios::cfmakeraw(&mut t);
    termios::tcsetattr(f.as_fd(), SetArg::TCSANOW, &t).map_err(raw)
}

/// The named ports under `sysfs` (`PORTS_SYSFS`): (name, device path).
pub fn named_ports(sysfs: &Path, dev: &Path) -> Vec<(String, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(sysfs) else {
        return Vec::new();
    };
    let mut ports: Vec<(String, PathBuf)> = dir
        .flatten()
        .filter_map(|e| {
            let name = std::fs::read_to_string(e.path().join("name")).ok()?;
            let node = dev.join(e.file_name());
            node.exists().then(|| (name.trim_end().to_string(), node))
        })
        .collect();
    ports.sort();
    ports
}

/// Whether the kernel bound a virtio console device.
fn has_virtio_console() -> bool {
    std::fs::read_dir(CONSOLE_DEVICES).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("virtio"))
    })
}

/// Finds the protocol's four ports, waiting for the driver to name them
/// (it does so asynchronously after probing the device).
fn find_ports() -> Result<[PathBuf; 4], Error> {
    let t0 = Instant::now();
    let wanted = [STDIN_PORT, STDOUT_PORT, STDERR_PORT, CONTROL_PORT];
    loop {
        let ports = named_ports(Path::new(PORTS_SYSFS), Path::new("/dev"));
        let find = |name: &str| {
            ports
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| p.clone())
        };
        if let [Some(a), Some(b), Some(c), Some(d)] = wanted.map(find) {
            return Ok([a, b, c, d]);
        }
        if t0.elapsed() >= PORTS_TIMEOUT {
            let name = wanted
                .into_iter()
                .find(|w| find(w).is_none())
                .unwrap_or(STDIN_PORT);
            let seen: Vec<&str> = ports.iter().map(|(n, _)| n.as_str()).collect();
            return Err(Error::MissingPort {
                name,
                waited: t0.elapsed(),
                seen: seen.join(", "),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Opens the ports (the virtio console's, or the console when the guest
/// has no virtio console).
pub fn open_ports() -> Result<Ports, Error> {
    let ports = if has_virtio_console() {
        let [stdin, stdout, stderr, control] = find_ports()?;
        Ports {
            streams: Some(Streams {
                stdin: open(&stdin, true, false, true)?,
                stdout: open(&stdout, false, true, true)?,
                stderr: open(&stderr, false, true, true)?,
            }),
            console: None,
            stdin_pipe: None,
            control: Control {
                file: open(&control, true, true, false)?,
                prefixed: false,
            },
        }
    } else {
        // The console now carries the workload's output and the control
        // lines: keep kernel messages (all but emergencies) off it.
        let _ = std::fs::write("/proc/sys/kernel/printk", "1");
        let path = Path::new(CONSOLE);
        let console = open(path, true, true, false)?;
        make_raw(CONSOLE, &console)?;
        Ports {
            streams: None,
            console: Some((
                open(path, true, true, false)?,
                open(path, true, true, false)?,
            )),
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
    fn ports_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, dev) = (dir.path().join("sys"), dir.path().join("dev"));
        for (node, name) in [
            ("vport0p0", "isolate.stdin\n"),
            ("vport0p3", "isolate.control"),
            ("vport0p9", "ghost"),
        ] {
            std::fs::create_dir_all(sys.join(node)).unwrap();
            std::fs::write(sys.join(node).join("name"), name).unwrap();
        }
        // A port without a name yet.
        std::fs::create_dir_all(sys.join("vport0p1")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        for node in ["vport0p0", "vport0p1", "vport0p3"] {
            std::fs::write(dev.join(node), "").unwrap();
        }
        assert_eq!(
            named_ports(&sys, &dev),
            vec![
                ("isolate.control".to_string(), dev.join("vport0p3")),
                ("isolate.stdin".to_string(), dev.join("vport0p0")),
            ]
        );
        assert!(named_ports(&dir.path().join("none"), &dev).is_empty());
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
