//! The wire contract: what the library and the `isolate-vmm` process say
//! to each other, in one module both sides read.
//!
//! The library writes one [`VmmConfig`] as a JSON line on the config pipe
//! and keeps the pipe open: its end (EOF) tells the VMM that the library's
//! process is gone, and the VMM ends the VM. The VMM writes [`Report`]
//! lines on the report pipe: `started` once the workload has exec'd, then
//! one `finished` or `failed`.

use std::path::PathBuf;

use isolate_core::Status;

use crate::jail::JailIds;

/// Signals the library's side forwards to the VMM and the VMM forwards to
/// the workload in the guest.
pub const FORWARDED_SIGNALS: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGWINCH,
];

/// One part of the initrd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitrdPart {
    /// A file (the cached root archive).
    File(PathBuf),
    /// Bytes (the per-run spec archive).
    Bytes(Vec<u8>),
}

/// A disk for a virtio-blk device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Disk {
    /// Image file.
    pub path: PathBuf,
    /// Attached read-only.
    pub read_only: bool,
}

/// What to boot, and on what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootSpec {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initrd parts, concatenated in order (each padded to 4 bytes).
    pub initrd: Vec<InitrdPart>,
    /// Guest RAM, bytes.
    pub mem_size: u64,
    /// vCPU count.
    pub vcpus: u8,
    /// Disks, in order: `/dev/vda`, `/dev/vdb`, …
    pub disks: Vec<Disk>,
    /// Copy the kernel's console to stderr (and drop `quiet`).
    pub console_log: bool,
    /// More kernel command-line arguments.
    pub cmdline_extra: String,
}

/// Everything the VMM needs; the workload's stdio are its fds 0, 1, 2.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmmConfig {
    /// The VM to build.
    pub boot: BootSpec,
    /// Feed fd 0 to the guest's stdin (else the guest's stdin is `/dev/null`).
    pub stdin: bool,
    /// The workload's wall-clock limit, ms.
    pub timeout_ms: Option<u64>,
    /// Boot watchdog: the guest must report `started` (or an error) within this, ms.
    pub boot_timeout_ms: u64,
    /// Install the seccomp filters once the VM is built (a release build of
    /// the VMM installs them whatever this says).
    pub seccomp: bool,
    /// The unprivileged ids the VMM drops to (see [`crate::jail`]).
    pub jail: JailIds,
    /// Print the VMM's phases with their times to stderr (the VMM's
    /// environment is empty: the library passes `ISOLATE_VMM_TRACE` here).
    #[serde(default)]
    pub trace: bool,
    /// The VMM's log level (`ISOLATE_LOG` of the library's process, see
    /// [`isolate_core::logger`]); `None`: the VMM logs nothing, so a guest
    /// cannot make device errors show up in the workload's stderr.
    #[serde(default)]
    pub log_level: Option<String>,
    /// A hand-made guest instead of `boot` (tests of the VMM's jail only).
    #[cfg(feature = "test-hooks")]
    #[serde(default)]
    pub test_guest: Option<crate::test_guest::TestGuest>,
}

/// Why the VMM could not produce an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// The command does not exist in the guest's root (127).
    NotFound,
    /// The command is not executable (126).
    NotExecutable,
    /// The guest init failed to set the workload up.
    Setup,
    /// The guest did not boot (watchdog, panic, reset before the workload ended).
    Boot,
    /// The VMM itself failed (KVM, devices, config).
    Vmm,
    /// The guest broke the control protocol (a line too long or not a
    /// control message, a number out of range, a host-only message); the
    /// VMM ended the run.
    Guest,
}

/// One line from the VMM.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Report {
    /// The workload has exec'd in the guest.
    Started {
        /// Guest uptime then, ns.
        guest_uptime_ns: u64,
        /// VMM start to this moment, ns.
        vmm_ns: u64,
    },
    /// The workload ended.
    Finished {
        /// How.
        status: Status,
        /// Guest cgroup CPU time, ns.
        cpu_time_ns: Option<u64>,
        /// Guest cgroup peak memory, bytes.
        peak_memory: Option<u64>,
        /// VMM resident memory minus guest memory touched, bytes.
        host_overhead: Option<u64>,
        /// Guest pages resident on the host, bytes.
        guest_memory_touched: Option<u64>,
    },
    /// No outcome: why.
    Failed {
        /// Category.
        kind: FailKind,
        /// One line for the user (with the last console lines for boot failures).
        message: String,
    },
}

impl Report {
    /// The report as one JSON line.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("report serializes");
        s.push('\n');
        s
    }

    /// Parses one line.
    pub fn from_line(line: &str) -> Option<Self> {
        serde_json::from_str(line.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_reports_round_trip() {
        let cfg = VmmConfig {
            boot: BootSpec {
                kernel: "/k".into(),
                initrd: vec![InitrdPart::File("/r".into()), InitrdPart::Bytes(vec![1, 2])],
                mem_size: 64 << 20,
                vcpus: 2,
                disks: vec![Disk {
                    path: "/d".into(),
                    read_only: true,
                }],
                console_log: false,
                cmdline_extra: String::new(),
            },
            stdin: true,
            timeout_ms: Some(5),
            boot_timeout_ms: 30_000,
            seccomp: true,
            jail: JailIds::for_pid(42),
            trace: false,
            log_level: None,
            #[cfg(feature = "test-hooks")]
            test_guest: None,
        };
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(serde_json::from_str::<VmmConfig>(&text).unwrap(), cfg);
        for r in [
            Report::Started {
                guest_uptime_ns: 1,
                vmm_ns: 2,
            },
            Report::Finished {
                status: Status::Exited(3),
                cpu_time_ns: None,
                peak_memory: Some(1),
                host_overhead: None,
                guest_memory_touched: None,
            },
            Report::Failed {
                kind: FailKind::NotFound,
                message: "x".into(),
            },
        ] {
            assert_eq!(Report::from_line(&r.to_line()), Some(r));
        }
    }
}
