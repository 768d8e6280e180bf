//! The workload's cgroup (v2) inside the guest: limits and accounting.

use std::path::{Path, PathBuf};

use isolate_core::parse::keyed;
use nix::mount::{mount, MsFlags};

/// Where cgroup2 is mounted.
pub const ROOT: &str = "/sys/fs/cgroup";
/// The workload's cgroup, below [`ROOT`].
const WORKLOAD: &str = "workload";

/// Errors of cgroup setup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// cgroup2 could not be mounted.
    #[error("cannot mount cgroup2 on {ROOT} (guest kernel needs CONFIG_CGROUPS)")]
    Mount(#[source] nix::Error),
    /// A limit was asked for but its controller is missing.
    #[error("the guest kernel has no {0} cgroup controller, so the {0} limit cannot be enforced")]
    NoController(&'static str),
    /// A cgroup file could not be written.
    #[error("cannot write {value:?} to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value.
        value: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The workload's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    dir: PathBuf,
}

fn write(path: PathBuf, value: &str) -> Result<(), Error> {
    std::fs::write(&path, value).map_err(|source| Error::Write {
        path,
        value: value.to_string(),
        source,
    })
}

impl Cgroup {
    /// Mounts cgroup2, enables the memory, pids and cpu controllers for
    /// children, and creates the workload's cgroup with `memory.max`,
    /// `memory.swap.max = 0`, `memory.oom.group = 1` and `pids.max`.
    pub fn create(memory_limit: Option<u64>, pids_limit: Option<u64>) -> Result<Cgroup, Error> {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(Some("cgroup2"), ROOT, Some("cgroup2"), flags, None::<&str>).map_err(Error::Mount)?;
        let root = Path::new(ROOT);
        let available =
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let available: Vec<&str> = available.split_whitespace().collect();
        for c in ["memory", "pids", "cpu"] {
            if available.contains(&c) {
                // A controller that cannot be enabled shows up below, only if
                // a limit needs it.
                let _ = write(root.join("cgroup.subtree_control"), &format!("+{c}"));
            }
        }
        let dir = root.join(WORKLOAD);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
            path: dir.clone(),
            value: "(mkdir)".into(),
            source,
        })?;
        let cg = Cgroup { dir };
        if let Some(m) = memory_limit {
            if !cg.dir.join("memory.max").exists() {
                return Err(Error::NoController("memory"));
            }
            write(cg.dir.join("memory.max"), &m.to_string())?;
            if cg.dir.join("memory.swap.max").exists() {
                write(cg.dir.join("memory.swap.max"), "0")?;
            }
        }
        if cg.dir.join("memory.oom.group").exists() {
            // An OOM kill ends the whole workload, as a container's would.
            write(cg.dir.join("memory.oom.group"), "1")?;
        }
        if let Some(p) = pids_limit {
            if !cg.dir.join("pids.max").exists() {
                return Err(Error::NoController("pids"));
            }
            write(cg.dir.join("pids.max"), &p.to_string())?;
        }
        Ok(cg)
    }

    /// `cgroup.procs` of the workload's cgroup (a child writes `0` to it
    /// to join).
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(file)).ok()
    }

    /// `memory.peak`, bytes.
    pub fn peak_memory(&self) -> Option<u64> {
        self.read("memory.peak")?.trim().parse().ok()
    }

    /// `usage_usec` of `cpu.stat`, as nanoseconds.
    pub fn cpu_time_ns(&self) -> Option<u64> {
        keyed(&self.read("cpu.stat")?, "usage_usec").map(|us| us.saturating_mul(1000))
    }

    /// `oom_kill` of `memory.events` (0 when unknown).
    pub fn oom_kills(&self) -> u64 {
        self.read("memory.events")
            .and_then(|s| keyed(&s, "oom_kill"))
            .unwrap_or(0)
    }
}
