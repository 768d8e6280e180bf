//! How a workload ended, and what it cost.

use std::time::Duration;

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal (not by the OOM killer or a timeout).
    Signaled(i32),
    /// The kernel's OOM killer ended it at the memory limit.
    OomKilled,
    /// It ran past its timeout and was killed.
    TimedOut,
}

/// What happened to a workload: its [`Status`] and what it cost.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// From the spawn call to the end of the workload.
    pub wall_time: Duration,
    /// From the spawn call to the workload's first instruction (its
    /// `execve`), where the backend can tell.
    pub startup_time: Option<Duration>,
    /// CPU time the workload used (user + system).
    pub cpu_time: Option<Duration>,
    /// Peak memory of the workload, in bytes (from its cgroup).
    pub peak_memory: Option<u64>,
    /// Host memory isolate itself used to hold the boundary, in bytes:
    /// the VMM's resident memory minus guest memory, or the container shim's.
    pub host_overhead: Option<u64>,
    /// Guest memory the VM touched, in bytes (VM mode).
    pub guest_memory_touched: Option<u64>,
    /// The workload's address on isolate's bridge (`Network::Bridge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
}

impl Outcome {
    /// An outcome with only a status and wall time.
    pub fn new(status: Status, wall_time: Duration) -> Self {
        Outcome {
            status,
            wall_time,
            startup_time: None,
            cpu_time: None,
            peak_memory: None,
            host_overhead: None,
            guest_memory_touched: None,
            address: None,
        }
    }

    /// The exit code in docker's convention: the workload's own code,
    /// 128+N for signal N, 137 for an OOM kill (SIGKILL), 124 for a timeout
    /// (as `timeout(1)`). In VM mode the signal number comes from the
    /// guest: one too large to add 128 to gives `i32::MAX`.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            Status::Exited(c) => c,
            Status::Signaled(s) => 128i32.saturating_add(s),
            Status::OomKilled => 128 + libc::SIGKILL,
            Status::TimedOut => 124,
        }
    }

    /// Whether the workload exited with code 0.
    pub fn success(&self) -> bool {
        self.status == Status::Exited(0)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Exited(c) => write!(f, "exited with code {c}"),
            Status::Signaled(s) => write!(f, "killed by signal {s}"),
            Status::OomKilled => write!(f, "killed at its memory limit (OOM)"),
            Status::TimedOut => write!(f, "timed out"),
        }
    }
}

/// A running workload's resource use, read on demand.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// CPU time used so far.
    pub cpu_time: Option<Duration>,
    /// Memory in use now, bytes.
    pub memory_current: Option<u64>,
    /// Peak memory so far, bytes.
    pub memory_peak: Option<u64>,
    /// Memory limit in force, bytes.
    pub memory_limit: Option<u64>,
    /// Processes and threads now.
    pub pids_current: Option<u64>,
    /// Process limit in force.
    pub pids_limit: Option<u64>,
    /// CPU limit in force (fractional CPUs).
    pub cpus_limit: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_docker() {
        let d = Duration::ZERO;
        assert_eq!(Outcome::new(Status::Exited(3), d).exit_code(), 3);
        assert_eq!(Outcome::new(Status::Signaled(15), d).exit_code(), 143);
        assert_eq!(Outcome::new(Status::OomKilled, d).exit_code(), 137);
        assert_eq!(Outcome::new(Status::TimedOut, d).exit_code(), 124);
        assert!(Outcome::new(Status::Exited(0), d).success());
    }

    #[test]
    fn exit_code_of_a_guest_reported_huge_signal_does_not_overflow() {
        // Input kept from the control-line fuzz target (fuzz/, target
        // `control`): a guest's exit report with signal i32::MAX.
        let line = r#"{"t":"exit","status":{"signaled":2147483647},"peak_memory":null,"cpu_time_ns":null}"#;
        let Some(crate::protocol::ControlMessage::Exit { status, .. }) =
            crate::protocol::ControlMessage::from_line(line)
        else {
            panic!("the line parses as an exit report");
        };
        let d = Duration::ZERO;
        assert_eq!(Outcome::new(status, d).exit_code(), i32::MAX);
        assert_eq!(Outcome::new(Status::Signaled(-200), d).exit_code(), -72);
    }
}
