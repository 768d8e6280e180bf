//! The [`Isolator`] trait both boundaries implement, and the [`Running`]
//! handle of a spawned workload.

use std::fs::File;

use crate::error::Result;
use crate::outcome::{Outcome, Stats};
use crate::workload::{Limits, Stdio, User, Workload};

/// The two isolation boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A KVM microVM with its own guest kernel.
    Vm,
    /// Host processes in namespaces and cgroups.
    Container,
}

impl Mode {
    /// Both modes, VM first.
    pub const ALL: [Mode; 2] = [Mode::Vm, Mode::Container];

    /// `vm` or `container`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Vm => "vm",
            Mode::Container => "container",
        }
    }
}

impl Mode {
    /// Refuses what this boundary cannot do yet for `w` (checked before
    /// any host check, so the answer does not depend on the host):
    /// VM mode has no `--tty` yet.
    pub fn refuse_unsupported(self, w: &Workload) -> Result<()> {
        if self == Mode::Vm && w.tty {
            return Err(crate::Error::Unsupported(
                "--tty is not available in VM mode yet: the guest init gives the workload \
                 pipes over the virtio consoles, not a pty (a guest-side pty relayed over the \
                 console is still to be built); run without -t, or use --mode container -t"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "vm" => Ok(Mode::Vm),
            "container" => Ok(Mode::Container),
            other => Err(crate::Error::invalid(
                "mode",
                format!("{other:?} is not a mode; use vm or container"),
            )),
        }
    }
}

/// An isolation boundary that can run a [`Workload`].
///
/// Implementations validate nothing the core already validated
/// ([`Workload::validate`]) and never exit the calling process.
pub trait Isolator: Send + Sync {
    /// Which boundary this is.
    fn mode(&self) -> Mode;

    /// Whether this host can run the boundary at all; the error says why
    /// not and what to do ([`crate::Error::Unavailable`]).
    fn check_host(&self) -> Result<()>;

    /// Starts the workload and returns a handle to it.
    fn spawn(&self, workload: &Workload) -> Result<Box<dyn Running>>;

    /// Runs the workload to its end.
    fn run(&self, workload: &Workload) -> Result<Outcome> {
        self.spawn(workload)?.wait()
    }
}

/// A workload that was spawned and may still run.
///
/// Every method takes `&self`, so a handle can be shared (e.g. in an `Arc`)
/// between a thread that waits and one that forwards signals or updates
/// limits. Dropping a handle whose workload still runs kills it and
/// releases everything it held.
pub trait Running: Send + Sync {
    /// An id unique among running workloads (the name, if one was given).
    fn id(&self) -> &str;

    /// The write end of the workload's stdin, if it was [`Stdio::Piped`](crate::Stdio::Piped)
    /// (once). Drop it to send end-of-file.
    fn take_stdin(&self) -> Option<File>;

    /// The read end of the workload's stdout, if piped (once).
    fn take_stdout(&self) -> Option<File>;

    /// The read end of the workload's stderr, if piped (once).
    fn take_stderr(&self) -> Option<File>;

    /// The workload's address on isolate's bridge (`Network::Bridge`).
    fn address(&self) -> Option<std::net::Ipv4Addr> {
        None
    }

    /// The master of the workload's pty, if it was started with
    /// [`Workload::tty`] (once). Its output ends (`EIO`) once the workload
    /// has ended; see [`crate::pty`] to relay it.
    fn take_tty(&self) -> Option<File> {
        None
    }

    /// Waits for the end and returns the outcome. Called more than once,
    /// later calls return the same outcome.
    fn wait(&self) -> Result<Outcome>;

    /// Sends a signal to the workload's main process.
    fn signal(&self, signo: i32) -> Result<()>;

    /// Kills the workload (SIGKILL, or the VM's end).
    fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Current resource use.
    fn stats(&self) -> Result<Stats>;

    /// Changes limits while the workload runs; `None` fields stay as they are.
    fn update(&self, limits: &Limits) -> Result<()>;
}

/// A second process to run in a running named workload (`isolate exec`):
/// it gets the workload's hardening (user, capabilities, seccomp) unless
/// told otherwise here.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Variables set on top of the container's environment.
    pub env: Vec<(String, String)>,
    /// Working directory (default: the container's).
    pub cwd: Option<String>,
    /// User and group (default: the container's).
    pub user: Option<User>,
    /// A pty as controlling terminal and stdio.
    pub tty: bool,
    /// Standard streams (without `tty`).
    pub stdin: Stdio,
    /// Standard output.
    pub stdout: Stdio,
    /// Standard error.
    pub stderr: Stdio,
}
