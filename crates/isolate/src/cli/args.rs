//! The command line, as users type it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  isolate --mode container /bin/sh -c 'echo hello from $(hostname)'
  isolate --mode vm --memory 256m --vcpus 2 /bin/uname -a
  echo data | isolate --mode container -v cache:/cache cat
  isolate --mode container --name job1 --cpus 0.5 --timeout 60s /bin/sh -c 'sleep 30' &
  isolate update job1 --cpus 1.5 && isolate stats job1 && isolate kill job1
  isolate compare --runs 10 -- /bin/sh -c 'echo hi'

Exit status: the workload's own code; 125 if isolate itself fails; 126 if the
command cannot be executed; 127 if it is not found; 128+N if killed by signal N
(137 for an OOM kill); 124 on --timeout.";

/// Run one workload behind a KVM microVM or a namespaces+cgroups container.
#[derive(Debug, Parser)]
#[command(
    name = "isolate",
    version,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// Subcommands (without one, isolate runs the workload).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Running a workload.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The boundary, as typed.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// A KVM microVM with its own guest kernel.
    Vm,
    /// Host processes in namespaces and cgroups.
    Container,
}

/// `isolate [--mode vm|container] [OPTIONS] <APP> [ARGS]...`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Isolation boundary: vm (own kernel, hard boundary) or container
    /// (shared kernel, fast start).
    #[arg(long, value_enum, env = "ISOLATE_MODE")]
    pub mode: Option<ModeArg>,
    /// Keep stdin open (it always is: accepted as docker's -i).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the workload a terminal (a pty) as its controlling terminal and
    /// stdio; the caller's terminal is put in raw mode while it runs.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run in the background: print the workload's name and return; see
    /// isolate logs/wait/stop/inspect/rm.
    #[arg(short = 'd', long)]
    pub detach: bool,
    #[command(flatten)]
    pub opts: WorkloadOpts,
    /// The program to run and its arguments. Options go before it: from the
    /// program (or `--`) on, every word belongs to the workload.
    #[arg(value_name = "APP", trailing_var_arg = true)]
    pub command: Vec<String>,
}

/// Options that describe the workload (shared by run and compare).
#[derive(Debug, Args, Clone)]
pub struct WorkloadOpts {
    /// Root filesystem directory [default: the project's busybox rootfs].
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Memory limit, e.g. 256m or 1g (VM mode: the guest's RAM is sized from it).
    #[arg(short = 'm', long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPUs, fractional, e.g. 1.5 (a CPU quota; in VM mode also the vCPU count).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<u64>,
    /// Block-IO weight, 10..=1000.
    #[arg(long, value_name = "N")]
    pub io_weight: Option<u16>,
    /// Volume: a host directory (/src:/dst[:ro], container mode) or a named
    /// volume (name:/dst[:ro], both modes; kept under ISOLATE_HOME/volumes).
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    /// Environment variable KEY=VAL (KEY alone copies isolate's own value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VAL")]
    pub env: Vec<String>,
    /// Working directory inside the workload.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Hostname inside the workload.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Read-only root (no writable layer; /tmp stays writable).
    #[arg(long)]
    pub read_only: bool,
    /// User and group inside, numeric: UID[:GID].
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Kill the workload after this long, e.g. 30s, 500ms, 2m (exit 124).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Name the workload, for `isolate ps/stats/update/kill`.
    #[arg(long)]
    pub name: Option<String>,
    /// Network: none, loopback (only lo), bridge (eth0 on the host bridge
    /// isolate0, NAT outbound; container mode, root), host (the host's
    /// network; container mode) or container:NAME (share a named
    /// container's network).
    #[arg(
        long,
        default_value = "loopback",
        value_name = "none|loopback|bridge|host|container:NAME"
    )]
    pub network: String,
    /// Publish a port of the workload on the host (needs --network bridge):
    /// [HOSTIP:]HOSTPORT:PORT[/tcp|udp], e.g. 8080:80. Also reachable on
    /// the host's 127.0.0.1.
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[HOSTIP:]HOSTPORT:PORT[/tcp|udp]"
    )]
    pub publish: Vec<String>,
    /// Add a capability to the default set (container mode), e.g. NET_ADMIN.
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Add a host device (container mode): HOST[:CONTAINER][:rwm], e.g.
    /// /dev/fuse. Only Docker's default devices open otherwise.
    #[arg(long = "device", value_name = "HOST[:CONTAINER][:rwm]")]
    pub devices: Vec<String>,
    /// Drop a capability from the default set (container mode); ALL drops all.
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Security option (container mode): seccomp=unconfined (no filter),
    /// seccomp=FILE.json (a Docker/OCI seccomp profile), no-new-privileges
    /// (always on) [default: Docker's default seccomp profile].
    #[arg(long, value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// VM mode: guest kernel (ELF vmlinux or bzImage) [default: the project's].
    #[arg(long, value_name = "PATH", env = "ISOLATE_KERNEL")]
    pub kernel: Option<PathBuf>,
    /// VM mode: number of vCPUs [default: --cpus rounded up, or 1].
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u32>,
    /// VM mode: copy the guest kernel's console to stderr.
    #[arg(long)]
    pub console_log: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workload (the same as without a subcommand).
    Run(RunArgs),
    /// Run the same workload under both modes and compare what each costs.
    Compare(CompareArgs),
    /// List named workloads that are running.
    Ps {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also detached workloads that have ended (until isolate rm).
        #[arg(short, long)]
        all: bool,
    },
    /// Run a command in a running named workload (container mode): its
    /// namespaces, cgroup and hardening.
    Exec(ExecArgs),
    /// Print a detached workload's output (stdout and stderr).
    Logs {
        /// The workload's name.
        name: String,
        /// Keep printing what it writes until it ends.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Prefix each line with when it was written (RFC 3339, UTC).
        #[arg(short, long)]
        timestamps: bool,
    },
    /// Stop a running named workload: SIGTERM, then SIGKILL after a grace period.
    Stop {
        /// The workload's name.
        name: String,
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(short = 't', long = "time", value_name = "SECS", default_value_t = 10)]
        time: u64,
    },
    /// Wait for a detached workload to end; print and exit with its exit code.
    Wait {
        /// The workload's name.
        name: String,
    },
    /// Show a detached workload's record as JSON (mode, limits, pid, start,
    /// status, exit code).
    Inspect {
        /// The workload's name.
        name: String,
    },
    /// Remove detached workloads that have ended (their records and logs).
    Rm {
        /// The workloads' names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Kill it first if it still runs.
        #[arg(short, long)]
        force: bool,
    },
    /// Show a named workload's resource use.
    Stats {
        /// The workload's --name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a running named workload's limits.
    Update {
        /// The workload's --name.
        name: String,
        /// New memory limit (container mode).
        #[arg(short = 'm', long, value_name = "SIZE")]
        memory: Option<String>,
        /// New CPU quota (both modes).
        #[arg(long, value_name = "N")]
        cpus: Option<f64>,
        /// New process limit (container mode).
        #[arg(long, value_name = "N")]
        pids_limit: Option<u64>,
    },
    /// Send a signal to a running named workload.
    Kill {
        /// The workload's --name.
        name: String,
        /// Signal name or number.
        #[arg(short, long, default_value = "KILL")]
        signal: String,
    },
}

/// `isolate compare [--runs N] [OPTIONS] <APP> [ARGS]...`
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Measured runs per mode (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Only these modes (default: both).
    #[arg(long, value_enum)]
    pub mode: Vec<ModeArg>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Draw the distributions to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub opts: WorkloadOpts,
    /// The program to run and its arguments.
    #[arg(value_name = "APP", required = true, trailing_var_arg = true)]
    pub command: Vec<String>,
}

/// `isolate exec [-i] [-t] [-e K=V] [-w DIR] [-u UID[:GID]] NAME CMD...`
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open (it always is: accepted as docker's -i).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// A pty from the workload's own devpts as controlling terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Environment variable KEY=VAL (KEY alone copies isolate's own value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VAL")]
    pub env: Vec<String>,
    /// Working directory inside [default: the workload's].
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User and group inside, numeric [default: the workload's].
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// The workload's name.
    pub name: String,
    /// The command and its arguments.
    #[arg(value_name = "CMD", required = true, trailing_var_arg = true)]
    pub command: Vec<String>,
}
