//! The host ↔ guest protocol of VM mode, shared by the VMM and the guest
//! init (see docs/ARCHITECTURE.md, "Host ↔ guest protocol").
//!
//! The VMM hands the guest a [`GuestSpec`] as `/isolate/spec.json` in a cpio
//! archive appended to the initrd; the two then talk on the control port
//! (`/dev/hvc2`) in [`ControlMessage`]s, one JSON object per line.
//!
//! The guest is untrusted: the host splits its control stream with a
//! [`LineSplitter`] (lines of at most [`MAX_CONTROL_LINE`] bytes), checks
//! each message with [`ControlMessage::check_from_guest`] before acting on
//! it, and escapes guest text with [`escape_guest_text`] before a terminal
//! may show it.

use std::time::Duration;

use crate::outcome::Status;
use crate::ExecFailure;

/// Path of the spec inside the guest's initramfs.
pub const SPEC_PATH: &str = "/isolate/spec.json";
/// Guest device of stdin (host→guest) and stdout (guest→host).
pub const STDIO_PORT: &str = "/dev/hvc0";
/// Guest device of stderr.
pub const STDERR_PORT: &str = "/dev/hvc1";
/// Guest device of the control channel.
pub const CONTROL_PORT: &str = "/dev/hvc2";
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
    /// Host→guest: stdin reached end-of-file after `bytes` bytes in all
    /// (the guest reads hvc0 until it has them: data and this message
    /// travel on different ports, so the message may overtake the data).
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
    /// Host→guest: the reader of the workload's output `fd` (1 stdout, 2
    /// stderr) on the host went away; the guest closes its end too, so the
    /// workload gets `EPIPE`/`SIGPIPE` as it would on the host.
    OutputClosed {
        /// 1 or 2.
        fd: u8,
    },
}

/// Longest control line either side accepts (64 KiB, without the `\n`).
pub const MAX_CONTROL_LINE: usize = 64 * 1024;
/// Most characters of guest text (an error message) the host passes on.
pub const MAX_GUEST_TEXT: usize = 4096;
/// Highest signal number Linux knows (`SIGRTMAX`).
pub const MAX_SIGNAL: i32 = 64;

/// What is wrong with what the guest sent on the control channel.
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
    /// A signal number outside 1..=[`MAX_SIGNAL`].
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
    #[error("the guest reported a status only the host decides ({0})")]
    HostStatus(&'static str),
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
    /// CPU time the guest can have used so far, nanoseconds (its vCPUs
    /// times the wall time since it started, with slack).
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
                    Status::TimedOut => return Err(ProtocolError::HostStatus("timed_out")),
                    Status::Exited(_) | Status::Signaled(_) | Status::OomKilled => {}
                }
                at_most("peak memory (bytes)", *peak_memory, bounds.memory)?;
                at_most("CPU time (ns)", *cpu_time_ns, bounds.cpu_time_ns)
            }
            ControlMessage::StdinEof { .. } => Err(ProtocolError::WrongDirection("stdin_eof")),
            ControlMessage::Signal { .. } => Err(ProtocolError::WrongDirection("signal")),
            ControlMessage::OutputClosed { .. } => {
                Err(ProtocolError::WrongDirection("output_closed"))
            }
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
/// text is cut to `max_chars` characters (marked with `…`). Tabs stay.
pub fn escape_guest_text(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_add(1)));
    for (n, c) in text.chars().enumerate() {
        if n == max_chars {
            out.push('…');
            break;
        }
        match c {
            '\t' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
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
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// Splits a byte stream from the guest into lines of at most
/// [`MAX_CONTROL_LINE`] bytes (without the `\n`). It holds at most one
/// line, so the guest cannot make it grow past the bound.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `line` with each line they complete. A line that
    /// grows past the bound is an error, and the stream is not trusted any
    /// further: the caller ends the run (the splitter is left empty).
    pub fn push(&mut self, bytes: &[u8], mut line: impl FnMut(&[u8])) -> Result<(), ProtocolError> {
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match chunk.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (chunk, false),
            };
            if self.buf.len() + body.len() > MAX_CONTROL_LINE {
                self.buf = Vec::new();
                return Err(ProtocolError::LineTooLong {
                    max: MAX_CONTROL_LINE,
                });
            }
            if ends && self.buf.is_empty() {
                line(body);
                continue;
            }
            self.buf.extend_from_slice(body);
            if ends {
                line(&self.buf);
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Bytes of the unfinished line held.
    pub fn pending(&self) -> usize {
        self.buf.len()
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
    fn guest_exit_codes_and_signals_in_range_pass() {
        for ok in [
            Status::Exited(0),
            Status::Exited(255),
            Status::Signaled(1),
            Status::Signaled(MAX_SIGNAL),
            Status::OomKilled,
        ] {
            assert_eq!(exit(ok, None, None).check_from_guest(BOUNDS), Ok(()));
        }
    }

    #[test]
    fn rejects_exit_codes_outside_a_byte() {
        for code in [-1, 256, 99_999, i32::MIN, i32::MAX] {
            assert_eq!(
                exit(Status::Exited(code), None, None).check_from_guest(BOUNDS),
                Err(ProtocolError::ExitCode(code))
            );
        }
    }

    #[test]
    fn rejects_signals_linux_does_not_have() {
        for sig in [0, -7, MAX_SIGNAL + 1, i32::MIN, i32::MAX] {
            assert_eq!(
                exit(Status::Signaled(sig), None, None).check_from_guest(BOUNDS),
                Err(ProtocolError::Signal(sig))
            );
        }
    }

    #[test]
    fn rejects_a_timeout_reported_by_the_guest() {
        assert_eq!(
            exit(Status::TimedOut, None, None).check_from_guest(BOUNDS),
            Err(ProtocolError::HostStatus("timed_out"))
        );
    }

    #[test]
    fn guest_sizes_and_times_are_bounded() {
        assert_eq!(
            exit(Status::Exited(0), Some(1 << 30), Some(10_000_000_000)).check_from_guest(BOUNDS),
            Ok(())
        );
        assert_eq!(
            exit(Status::Exited(0), Some(u64::MAX), None).check_from_guest(BOUNDS),
            Err(ProtocolError::TooLarge {
                what: "peak memory (bytes)",
                value: u64::MAX,
                max: 1 << 30,
            })
        );
        assert_eq!(
            exit(Status::Exited(0), None, Some(10_000_000_001)).check_from_guest(BOUNDS),
            Err(ProtocolError::TooLarge {
                what: "CPU time (ns)",
                value: 10_000_000_001,
                max: 10_000_000_000,
            })
        );
    }

    #[test]
    fn rejects_host_messages_from_the_guest() {
        assert_eq!(
            ControlMessage::Signal { signo: 9 }.check_from_guest(BOUNDS),
            Err(ProtocolError::WrongDirection("signal"))
        );
        assert_eq!(
            ControlMessage::OutputClosed { fd: 1 }.check_from_guest(BOUNDS),
            Err(ProtocolError::WrongDirection("output_closed"))
        );
        assert_eq!(
            ControlMessage::StdinEof { bytes: Some(1) }.check_from_guest(BOUNDS),
            Err(ProtocolError::WrongDirection("stdin_eof"))
        );
    }

    #[test]
    fn started_and_error_messages_pass() {
        let started = ControlMessage::Started {
            uptime_ns: u64::MAX,
        };
        assert_eq!(started.check_from_guest(BOUNDS), Ok(()));
        let error = ControlMessage::Error {
            exec: None,
            message: "\x1b[2J".into(),
        };
        assert_eq!(error.check_from_guest(BOUNDS), Ok(()));
    }

    #[test]
    fn protocol_errors_name_the_problem() {
        assert_eq!(
            ProtocolError::ExitCode(99_999).to_string(),
            "the guest reported exit code 99999, outside 0..=255"
        );
        assert_eq!(
            ProtocolError::LineTooLong { max: 65536 }.to_string(),
            "the guest sent a control line longer than 65536 bytes"
        );
    }

    #[test]
    fn plain_guest_text_is_kept() {
        assert_eq!(escape_guest_text("plain text\tok", 100), "plain text\tok");
        assert_eq!(escape_guest_text("é€ ü", 100), "é€ ü");
    }

    #[test]
    fn terminal_controls_in_guest_text_become_visible() {
        assert_eq!(
            escape_guest_text("\x1b]0;owned\x07\x1b[2J\r\nx\x7f", 100),
            "\\x1b]0;owned\\x07\\x1b[2J\\r\\nx\\x7f"
        );
        // C1 controls (8-bit CSI) and bidirectional overrides.
        assert_eq!(
            escape_guest_text("a\u{202e}b\u{9b}c\u{2066}", 100),
            "a\\u{202e}b\\u{9b}c\\u{2066}"
        );
    }

    #[test]
    fn no_control_character_survives_escaping() {
        let hostile: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let safe = escape_guest_text(&hostile, usize::MAX);
        assert!(
            !safe
                .chars()
                .any(|c| (c.is_control() && c != '\t') || is_bidi_control(c)),
            "{safe:?}"
        );
    }

    #[test]
    fn guest_text_is_cut_to_its_bound() {
        assert_eq!(escape_guest_text("abcdef", 3), "abc…");
        assert_eq!(escape_guest_text("abc", 3), "abc");
        assert_eq!(escape_guest_text("ééé", 2), "éé…");
        assert_eq!(escape_guest_text("abc", 0), "…");
        let long = "x".repeat(MAX_GUEST_TEXT * 4);
        assert_eq!(
            escape_guest_text(&long, MAX_GUEST_TEXT).chars().count(),
            MAX_GUEST_TEXT + 1
        );
    }

    fn split(s: &mut LineSplitter, bytes: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut lines = Vec::new();
        s.push(bytes, |l| lines.push(l.to_vec()))?;
        Ok(lines)
    }

    #[test]
    fn lines_are_split_across_writes() {
        let mut s = LineSplitter::default();
        assert_eq!(split(&mut s, b"ab").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(s.pending(), 2);
        assert_eq!(
            split(&mut s, b"c\n\nde\nf").unwrap(),
            [b"abc".to_vec(), b"".to_vec(), b"de".to_vec()]
        );
        assert_eq!(s.pending(), 1);
        assert_eq!(split(&mut s, b"\n").unwrap(), [b"f".to_vec()]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn a_line_of_exactly_the_bound_passes() {
        let mut s = LineSplitter::default();
        let mut bytes = vec![b'x'; MAX_CONTROL_LINE];
        bytes.push(b'\n');
        assert_eq!(split(&mut s, &bytes).unwrap().len(), 1);
        // Split across writes too.
        split(&mut s, &vec![b'x'; MAX_CONTROL_LINE - 1]).unwrap();
        split(&mut s, b"x").unwrap();
        assert_eq!(split(&mut s, b"\n").unwrap()[0].len(), MAX_CONTROL_LINE);
    }

    #[test]
    fn rejects_a_line_past_the_bound_even_split_across_writes() {
        let too_long = Err(ProtocolError::LineTooLong {
            max: MAX_CONTROL_LINE,
        });
        let mut s = LineSplitter::default();
        assert_eq!(split(&mut s, &vec![b'x'; MAX_CONTROL_LINE + 1]), too_long);
        assert_eq!(s.pending(), 0, "nothing of the line is kept");
        split(&mut s, &vec![b'x'; MAX_CONTROL_LINE - 1]).unwrap();
        assert_eq!(split(&mut s, b"yz\n"), too_long);
    }

    #[test]
    fn an_endless_line_never_holds_more_than_the_bound() {
        let mut s = LineSplitter::default();
        let chunk = [b'A'; 4096];
        let mut failed = false;
        for _ in 0..(MAX_CONTROL_LINE / chunk.len() + 2) {
            failed |= s.push(&chunk, |_| panic!("no line ends")).is_err();
            assert!(s.pending() <= MAX_CONTROL_LINE);
        }
        assert!(failed);
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
            ControlMessage::OutputClosed { fd: 1 },
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
