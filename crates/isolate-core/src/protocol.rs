//! The host ↔ guest protocol of VM mode, shared by the VMM and the guest
//! init (see docs/ARCHITECTURE.md, "Host ↔ guest protocol").
//!
//! The VMM hands the guest a [`GuestSpec`] as `/isolate/spec.json` in a cpio
//! archive appended to the initrd. The workload's stdio and a control
//! channel travel on the named ports of one multiport virtio console
//! ([`CONSOLE_PORTS`]); on the control port the two talk in
//! [`ControlMessage`]s, one JSON object per line.
//!
//! The guest is untrusted: the host checks what it says with
//! [`ControlMessage::check_from_guest`] and escapes guest text with
//! [`escape_guest_text`] before a terminal may show it.

use std::time::Duration;

use crate::outcome::Status;
use crate::ExecFailure;

/// Path of the spec inside the guest's initramfs.
pub const SPEC_PATH: &str = "/isolate/spec.json";
/// Name of the port carrying the workload's stdin (host→guest; the host
/// closes the port at end of input).
pub const STDIN_PORT: &str = "isolate.stdin";
/// Name of the port carrying the workload's stdout (guest→host).
pub const STDOUT_PORT: &str = "isolate.stdout";
/// Name of the port carrying the workload's stderr (guest→host).
pub const STDERR_PORT: &str = "isolate.stderr";
/// Name of the control port (both ways).
pub const CONTROL_PORT: &str = "isolate.control";
/// The console's ports, in port-number order (port 0 first).
pub const CONSOLE_PORTS: [&str; 4] = [STDIN_PORT, STDOUT_PORT, STDERR_PORT, CONTROL_PORT];
/// Where the guest kernel lists the ports (`vportNpM/name` holds each name;
/// the device is `/dev/vportNpM`).
pub const PORTS_SYSFS: &str = "/sys/class/virtio-ports";
/// Prefix of control lines written to `/dev/console` when there is no
/// control port (a reference VMM booted the guest).
pub const CONSOLE_PREFIX: &str = "ISOLATE-CONTROL ";

/// Where the guest's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestRoot {
    /// The initramfs itself is the root.
    Initramfs,
    /// A read-only block device (erofs or ext4) with a tmpfs overlay.
    Block {
        /// Guest device, e.g. `/dev/vda`.
        device: String,
        /// `erofs` or `ext4`.
        fstype: String,
    },
}

/// A volume attached as a block device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestVolume {
    /// Guest device, e.g. `/dev/vdb`.
    pub device: String,
    /// Mount point inside the workload's root.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// File system (`ext4`).
    pub fstype: String,
}

/// Everything the guest init needs to run the workload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestSpec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Full environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Hostname.
    pub hostname: String,
    /// Root source.
    pub root: GuestRoot,
    /// Root read-only (no overlay upper layer; /tmp stays a tmpfs).
    pub read_only: bool,
    /// Volumes.
    pub volumes: Vec<GuestVolume>,
    /// memory.max of the workload's guest cgroup, bytes.
    pub memory_limit: Option<u64>,
    /// pids.max of the workload's guest cgroup.
    pub pids_limit: Option<u64>,
    /// Bring loopback up.
    pub loopback: bool,
    /// Whether the host feeds stdin (otherwise stdin is /dev/null).
    pub stdin: bool,
    /// What the workload may do inside the guest, as in container mode;
    /// `None`: the guest's full root (only for reference tests).
    #[serde(default)]
    pub privileges: Option<GuestPrivileges>,
}

/// The workload's privileges inside the guest, computed on the host by the
/// same code as container mode's: the guest init applies them to the
/// workload, so that a guest-kernel bug needs a second step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestPrivileges {
    /// Capability mask (bit `n`: capability `n`) of the bounding set, and of
    /// the permitted and effective sets for uid 0.
    pub capabilities: u64,
    /// Seccomp programs installed in order, each instruction packed as
    /// `code << 48 | jt << 40 | jf << 32 | k`.
    pub seccomp: Vec<Vec<u64>>,
}

impl GuestPrivileges {
    /// Packs one classic BPF instruction.
    pub fn pack(code: u16, jt: u8, jf: u8, k: u32) -> u64 {
        (u64::from(code) << 48) | (u64::from(jt) << 40) | (u64::from(jf) << 32) | u64::from(k)
    }

    /// Unpacks one instruction: `(code, jt, jf, k)`.
    pub fn unpack(i: u64) -> (u16, u8, u8, u32) {
        ((i >> 48) as u16, (i >> 40) as u8, (i >> 32) as u8, i as u32)
    }
}

/// Docker's masked paths and read-only paths under `/proc` and `/sys`,
/// applied to the workload in both modes.
pub mod masks {
    /// Files `/dev/null` is bound over.
    pub const FILES: [&str; 6] = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
    ];
    /// Directories an empty read-only tmpfs covers.
    pub const DIRS: [&str; 5] = [
        "/proc/acpi",
        "/proc/asound",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ];
    /// Paths bound read-only over themselves.
    pub const READ_ONLY: [&str; 5] = [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ];
}

/// One line on the control channel.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ControlMessage {
    /// Guest→host: the workload has exec'd.
    Started {
        /// Guest uptime at that moment, nanoseconds.
        uptime_ns: u64,
    },
    /// Guest→host: the workload has ended.
    Exit {
        /// How.
        status: Status,
        /// Peak memory of the workload's guest cgroup, bytes.
        peak_memory: Option<u64>,
        /// CPU time of the workload's guest cgroup, nanoseconds.
        cpu_time_ns: Option<u64>,
    },
    /// Guest→host: the workload could not be started.
    Error {
        /// `not_found`, `not_executable`, or `None` for a setup failure.
        exec: Option<ExecFailure>,
        /// What went wrong.
        message: String,
    },
    /// Host→guest: stdin reached end-of-file after `bytes` bytes in all.
    /// For VMMs that cannot close the stdin port (isolate's VMM closes it,
    /// and the guest reads end-of-file in order after the data): data and
    /// this message travel on different ports, so the message may overtake
    /// the data, and the guest reads the stdin port until it has `bytes`.
    /// Without a count the message says nothing: the port's own end counts.
    StdinEof {
        /// Bytes sent on the stdin port in all; `None` if unknown.
        #[serde(default)]
        bytes: Option<u64>,
    },
    /// Host→guest: deliver this signal to the workload.
    Signal {
        /// Signal number.
        signo: i32,
    },
}

/// Longest control line either side accepts (64 KiB).
pub const MAX_CONTROL_LINE: usize = 64 * 1024;
/// Most characters of guest text (an error message) the host passes on.
pub const MAX_GUEST_TEXT: usize = 4096;
/// Highest signal number Linux knows (`SIGRTMAX`).
pub const MAX_SIGNAL: i32 = 64;

/// What is wrong with a message from the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A control line longer than [`MAX_CONTROL_LINE`].
    #[error("the guest sent a control line longer than {max} bytes")]
    LineTooLong {
        /// The bound.
        max: usize,
    },
    /// An exit code outside 0..=255.
    #[error("the guest reported exit code {0}, outside 0..=255")]
    ExitCode(i32),
    /// A signal number outside 1..=64.
    #[error("the guest reported signal {0}, outside 1..={MAX_SIGNAL}")]
    Signal(i32),
    /// A size or time larger than possible.
    #[error("the guest reported {what} {value}, more than the possible {max}")]
    TooLarge {
        /// What the number is.
        what: &'static str,
        /// The number.
        value: u64,
        /// The largest possible.
        max: u64,
    },
    /// A status the guest cannot know (a timeout is the host's to decide).
    #[error("the guest reported a status only the host decides")]
    HostStatus,
    /// A host→guest message sent by the guest.
    #[error("the guest sent a {0} message, which only the host sends")]
    WrongDirection(&'static str),
}

/// What a guest's report can possibly hold, for
/// [`ControlMessage::check_from_guest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestBounds {
    /// Guest RAM, bytes (bounds peak memory).
    pub memory: u64,
    /// CPU time the guest can have used so far, nanoseconds.
    pub cpu_time_ns: u64,
}

impl ControlMessage {
    /// Checks a message that came from the guest: only guest→host kinds,
    /// numbers in range. The host acts on no message that fails.
    pub fn check_from_guest(&self, bounds: GuestBounds) -> Result<(), ProtocolError> {
        let at_most = |what, value: Option<u64>, max: u64| match value {
            Some(v) if v > max => Err(ProtocolError::TooLarge {
                what,
                value: v,
                max,
            }),
            _ => Ok(()),
        };
        match self {
            ControlMessage::Started { .. } | ControlMessage::Error { .. } => Ok(()),
            ControlMessage::Exit {
                status,
                peak_memory,
                cpu_time_ns,
            } => {
                match *status {
                    Status::Exited(code) if !(0..=255).contains(&code) => {
                        return Err(ProtocolError::ExitCode(code))
                    }
                    Status::Signaled(sig) if !(1..=MAX_SIGNAL).contains(&sig) => {
                        return Err(ProtocolError::Signal(sig))
                    }
                    Status::TimedOut => return Err(ProtocolError::HostStatus),
                    _ => {}
                }
                at_most("peak memory (bytes)", *peak_memory, bounds.memory)?;
                at_most("CPU time (ns)", *cpu_time_ns, bounds.cpu_time_ns)
            }
            ControlMessage::StdinEof { .. } => Err(ProtocolError::WrongDirection("stdin_eof")),
            ControlMessage::Signal { .. } => Err(ProtocolError::WrongDirection("signal")),
        }
    }

    /// The message as one line, with its newline.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("control message serializes");
        s.push('\n');
        s
    }

    /// Parses one line (surrounding whitespace and `\r` ignored).
    pub fn from_line(line: &str) -> Option<Self> {
        serde_json::from_str(line.trim()).ok()
    }

    /// CPU time of an `Exit` message.
    pub fn cpu_time(&self) -> Option<Duration> {
        match self {
            ControlMessage::Exit { cpu_time_ns, .. } => cpu_time_ns.map(Duration::from_nanos),
            _ => None,
        }
    }
}

/// Guest text made safe for a host terminal: control characters (escape
/// sequences, carriage returns, bells, line breaks) and bidirectional
/// overrides become visible escapes (`\x1b`, `\n`, `\u{202e}`), and the
/// text is cut to `max_chars` characters (marked with `…`).
pub fn escape_guest_text(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars));
    for (n, c) in text.chars().enumerate() {
        if n == max_chars {
            out.push('…');
            break;
        }
        match c {
            '\t' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || is_bidi_control(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters that reorder how a terminal shows the text around them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Splits a byte stream from the guest into lines of at most
/// [`MAX_CONTROL_LINE`] bytes (without the `\n`).
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `line` with each line they complete. A line
    /// that grows past the bound is an error: the stream is not trusted
    /// any further (the caller ends the run).
    pub fn push(&mut self, bytes: &[u8], mut line: impl FnMut(&[u8])) -> Result<(), ProtocolError> {
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match chunk.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (chunk, false),
            };
            if self.buf.len() + body.len() > MAX_CONTROL_LINE {
                self.buf.clear();
                return Err(ProtocolError::LineTooLong {
                    max: MAX_CONTROL_LINE,
                });
            }
            self.buf.extend_from_slice(body);
            if ends {
                line(&self.buf);
                self.buf.clear();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: GuestBounds = GuestBounds {
        memory: 1 << 30,
        cpu_time_ns: 10_000_000_000,
    };

    fn exit(status: Status, peak: Option<u64>, cpu: Option<u64>) -> ControlMessage {
        ControlMessage::Exit {
            status,
            peak_memory: peak,
            cpu_time_ns: cpu,
        }
    }

    #[test]
    fn guest_exit_codes_and_signals_are_range_checked() {
        for ok in [
            Status::Exited(0),
            Status::Exited(255),
            Status::Signaled(1),
            Status::Signaled(64),
            Status::OomKilled,
        ] {
            assert_eq!(exit(ok, None, None).check_from_guest(BOUNDS), Ok(()));
        }
        for code in [-1, 256, i32::MIN, i32::MAX] {
            assert_eq!(
                exit(Status::Exited(code), None, None).check_from_guest(BOUNDS),
                Err(ProtocolError::ExitCode(code))
            );
        }
        for sig in [0, -9, 65, i32::MAX] {
            assert_eq!(
                exit(Status::Signaled(sig), None, None).check_from_guest(BOUNDS),
                Err(ProtocolError::Signal(sig))
            );
        }
        assert_eq!(
            exit(Status::TimedOut, None, None).check_from_guest(BOUNDS),
            Err(ProtocolError::HostStatus)
        );
    }

    #[test]
    fn guest_sizes_and_times_are_bounded() {
        assert!(exit(Status::Exited(0), Some(1 << 30), Some(10_000_000_000))
            .check_from_guest(BOUNDS)
            .is_ok());
        assert!(matches!(
            exit(Status::Exited(0), Some(u64::MAX), None).check_from_guest(BOUNDS),
            Err(ProtocolError::TooLarge {
                value: u64::MAX,
                ..
            })
        ));
        assert!(matches!(
            exit(Status::Exited(0), None, Some((1 << 30) * 1_000_000_000)).check_from_guest(BOUNDS),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn host_messages_from_the_guest_are_refused() {
        assert!(ControlMessage::Signal { signo: 9 }
            .check_from_guest(BOUNDS)
            .is_err());
        assert!(ControlMessage::StdinEof { bytes: Some(1) }
            .check_from_guest(BOUNDS)
            .is_err());
        assert!(ControlMessage::Started {
            uptime_ns: u64::MAX
        }
        .check_from_guest(BOUNDS)
        .is_ok());
    }

    #[test]
    fn guest_text_is_escaped_for_terminals() {
        assert_eq!(escape_guest_text("plain text\tok", 100), "plain text\tok");
        assert_eq!(
            escape_guest_text("\x1b]0;owned\x07\x1b[2J\r\nx", 100),
            "\\x1b]0;owned\\x07\\x1b[2J\\r\\nx"
        );
        assert_eq!(
            escape_guest_text("a\u{202e}b\u{9b}c", 100),
            "a\\u{202e}b\\u{9b}c"
        );
        assert_eq!(escape_guest_text("abcdef", 3), "abc…");
        assert_eq!(escape_guest_text("é€", 5), "é€");
        let hostile: String = (0u32..0x2100).filter_map(char::from_u32).collect();
        let safe = escape_guest_text(&hostile, usize::MAX);
        assert!(
            !safe.chars().any(|c| c.is_control() && c != '\t'),
            "{safe:?}"
        );
    }

    #[test]
    fn lines_are_split_and_bounded() {
        let mut s = LineSplitter::default();
        let mut lines = Vec::new();
        s.push(b"ab", |l| lines.push(l.to_vec())).unwrap();
        s.push(b"c\n\nde\nf", |l| lines.push(l.to_vec())).unwrap();
        assert_eq!(lines, [b"abc".to_vec(), b"".to_vec(), b"de".to_vec()]);
        // Exactly the bound is fine, one byte more is not, even split
        // across writes.
        let mut s = LineSplitter::default();
        s.push(&vec![b'x'; MAX_CONTROL_LINE], |_| {}).unwrap();
        assert!(s.push(b"\n", |_| {}).is_ok());
        s.push(&vec![b'x'; MAX_CONTROL_LINE - 1], |_| {}).unwrap();
        assert_eq!(
            s.push(b"yz", |_| {}),
            Err(ProtocolError::LineTooLong {
                max: MAX_CONTROL_LINE
            })
        );
    }

    #[test]
    fn control_messages_round_trip_as_lines() {
        let msgs = [
            ControlMessage::Started { uptime_ns: 5 },
            ControlMessage::Exit {
                status: Status::Signaled(9),
                peak_memory: Some(1),
                cpu_time_ns: None,
            },
            ControlMessage::Error {
                exec: Some(ExecFailure::NotFound),
                message: "x".into(),
            },
            ControlMessage::StdinEof { bytes: Some(3) },
            ControlMessage::StdinEof { bytes: None },
            ControlMessage::Signal { signo: 15 },
        ];
        for m in msgs {
            let line = m.to_line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(ControlMessage::from_line(&format!("{line}\r")), Some(m));
        }
        assert_eq!(
            ControlMessage::StdinEof { bytes: Some(7) }.to_line(),
            "{\"t\":\"stdin_eof\",\"bytes\":7}\n"
        );
        // A bare stdin_eof (no count) still parses.
        assert_eq!(
            ControlMessage::from_line("{\"t\":\"stdin_eof\"}"),
            Some(ControlMessage::StdinEof { bytes: None })
        );
    }
}
