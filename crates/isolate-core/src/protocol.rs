//! The host ↔ guest protocol of VM mode, shared by the VMM and the guest
//! init (see docs/ARCHITECTURE.md, "Host ↔ guest protocol").
//!
//! The VMM hands the guest a [`GuestSpec`] as `/isolate/spec.json` in a cpio
//! archive appended to the initrd; the two then talk on the control port
//! (`/dev/hvc2`) in [`ControlMessage`]s, one JSON object per line.

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
}

impl ControlMessage {
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

#[cfg(test)]
mod tests {
    use super::*;

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
