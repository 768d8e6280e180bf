//! [`CgroupError`]: every way a cgroup operation fails, with the file, the
//! value and the errno involved, and what to do about it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An error of a cgroup operation.
///
/// Messages name the file or cgroup involved and, where one exists, the
/// remedy; the underlying OS error is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// `statfs` or `/proc/self/mountinfo` could not be read.
    #[error("cannot probe the cgroup layout at {path}")]
    Probe {
        /// What was probed.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `/sys/fs/cgroup` holds no usable cgroup hierarchy.
    #[error("no usable cgroup hierarchy: {reason}")]
    NoHierarchy {
        /// What was found instead, and what to do.
        reason: String,
    },
    /// The name given to [`Cgroup::create`](crate::Cgroup::create) or the
    /// path given to [`Cgroup::open`](crate::Cgroup::open) is not usable.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A limit has a value no cgroup can hold.
    #[error("invalid {limit} limit {value}: {reason}")]
    InvalidLimit {
        /// The limit.
        limit: &'static str,
        /// Its value.
        value: String,
        /// What to give instead.
        reason: &'static str,
    },
    /// The cgroup to create exists already.
    #[error(
        "cgroup {path} already exists: another workload uses this name, or an isolate that \
         was killed left it behind (remove it with `rmdir {path}` once it holds no process)"
    )]
    Exists {
        /// The directory.
        path: PathBuf,
    },
    /// The cgroup to open does not exist.
    #[error("cgroup {rel_path} does not exist: its workload has ended or was never started")]
    NotFound {
        /// The path relative to the cgroup root(s).
        rel_path: String,
    },
    /// A limit needs a controller that this cgroup does not have.
    #[error("{controller} controller not available for cgroup {rel_path}: {hint}")]
    ControllerMissing {
        /// The controller (`memory`, `cpu`, `pids`, `io`, ...).
        controller: &'static str,
        /// The cgroup.
        rel_path: String,
        /// How to make it available.
        hint: String,
    },
    /// The device filter of a cgroup v2 could not be installed.
    #[error(
        "cannot restrict device access of cgroup {path}: {what} failed (the kernel needs \
         CONFIG_CGROUP_BPF and the caller CAP_SYS_ADMIN or CAP_BPF)"
    )]
    Devices {
        /// The cgroup directory.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A cgroup file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A value could not be written to a cgroup file.
    #[error("cannot write {value:?} to {path}{hint}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value written.
        value: String,
        /// What the errno means here (may be empty).
        hint: &'static str,
        /// The OS error (its errno is `source.raw_os_error()`).
        #[source]
        source: io::Error,
    },
    /// A cgroup file holds something this crate does not understand.
    #[error("unexpected content {content:?} in {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// A cgroup directory could not be created.
    #[error("cannot create cgroup directory {path}{hint}")]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// What the errno means here (may be empty).
        hint: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A cgroup directory could not be removed.
    #[error("cannot remove cgroup directory {path}{hint}")]
    Rmdir {
        /// The directory.
        path: PathBuf,
        /// What the errno means here (may be empty).
        hint: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A running workload uses more memory than a lower limit asked for,
    /// and the kernel could not reclaim the difference.
    #[error(
        "cannot lower the memory limit of cgroup {rel_path} to {requested} bytes: it uses \
         {usage} bytes that the kernel cannot reclaim (swap is off); give a limit above its \
         current use"
    )]
    MemoryBelowUsage {
        /// The cgroup.
        rel_path: String,
        /// The limit asked for.
        requested: u64,
        /// Its use when the kernel gave up.
        usage: u64,
    },
    /// The host cannot enforce this limit (e.g. no I/O weight support).
    /// Callers may downgrade it to a warning: see
    /// [`is_unsupported`](CgroupError::is_unsupported).
    #[error("{what} is not supported on this host: {reason}")]
    Unsupported {
        /// The limit.
        what: &'static str,
        /// Why, and what would enable it.
        reason: String,
    },
    /// The cgroup still holds processes after being killed.
    #[error(
        "cgroup {rel_path} still holds processes {pids:?} {waited:?} after SIGKILL: they may be \
         in uninterruptible sleep (state D in /proc/PID/stat); retry once they are gone"
    )]
    Busy {
        /// The cgroup.
        rel_path: String,
        /// The processes left.
        pids: Vec<u32>,
        /// How long removal waited.
        waited: Duration,
    },
    /// The calling process is itself in the cgroup to kill or remove.
    #[error(
        "this process ({pid}) is itself in cgroup {rel_path}, and killing the cgroup would kill \
         it: run the workload (or VMM) as a child process, or move this process out first"
    )]
    SelfInside {
        /// This process.
        pid: u32,
        /// The cgroup.
        rel_path: String,
    },
    /// A process of the cgroup could not be signalled.
    #[error("cannot send SIGKILL to process {pid} of cgroup {rel_path}")]
    Signal {
        /// The process.
        pid: u32,
        /// The cgroup.
        rel_path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl CgroupError {
    /// Whether this error only says that the host cannot enforce a limit
    /// (every other limit was applied): callers may show it as a warning.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, CgroupError::Unsupported { .. })
    }

    pub(crate) fn write(path: &Path, value: &str, source: io::Error) -> Self {
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        CgroupError::Write {
            hint: write_hint(file, source.raw_os_error()),
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        }
    }

    pub(crate) fn read(path: &Path, source: io::Error) -> Self {
        CgroupError::Read {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn mkdir(path: &Path, source: io::Error) -> Self {
        CgroupError::Mkdir {
            hint: dir_hint(source.raw_os_error()),
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn rmdir(path: &Path, source: io::Error) -> Self {
        let hint = match source.raw_os_error() {
            Some(libc::EBUSY) => ": it still holds processes or child cgroups",
            other => dir_hint(other),
        };
        CgroupError::Rmdir {
            hint,
            path: path.to_owned(),
            source,
        }
    }
}

/// What an errno means when writing the cgroup file `file`.
fn write_hint(file: &str, errno: Option<i32>) -> &'static str {
    match (file, errno) {
        (_, Some(libc::EACCES | libc::EPERM)) => {
            ": permission denied; run isolate as root, or in a cgroup delegated to this user"
        }
        (_, Some(libc::EROFS)) => {
            ": the cgroup filesystem is mounted read-only (inside a container?); mount it read-write"
        }
        ("cgroup.subtree_control", Some(libc::EBUSY)) => {
            ": this cgroup holds processes of its own, and cgroup v2 enables controllers only \
             for children of cgroups without processes; move them to a child cgroup"
        }
        ("cgroup.subtree_control", Some(libc::ENOENT)) => {
            ": the parent cgroup does not offer this controller; enable it there first"
        }
        ("cgroup.procs", Some(libc::ESRCH)) => ": the process does not exist (any more)",
        ("cgroup.procs", Some(libc::EBUSY | libc::EOPNOTSUPP)) => {
            ": the cgroup has child cgroups with controllers enabled; use a leaf cgroup"
        }
        ("cgroup.procs", Some(libc::ENOSPC)) => {
            ": the cgroup has no CPUs or memory nodes (cpuset.cpus/cpuset.mems are empty)"
        }
        (_, Some(libc::EBUSY)) => ": the kernel refuses while the cgroup's processes use it",
        (_, Some(libc::EINVAL | libc::ERANGE)) => ": the kernel rejects this value",
        (_, Some(libc::ENOENT | libc::ENODEV)) => ": the cgroup or its controller is gone",
        _ => "",
    }
}

fn dir_hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EACCES | libc::EPERM) => {
            ": permission denied; run isolate as root, or in a cgroup delegated to this user"
        }
        Some(libc::EROFS) => {
            ": the cgroup filesystem is mounted read-only (inside a container?); mount it read-write"
        }
        Some(libc::EAGAIN | libc::ENOSPC) => {
            ": too many cgroups (cgroup.max.descendants or cgroup.max.depth reached)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_error_names_file_value_and_remedy() {
        let e = CgroupError::write(
            Path::new("/sys/fs/cgroup/cgroup.subtree_control"),
            "+memory",
            io::Error::from_raw_os_error(libc::EBUSY),
        );
        let msg = e.to_string();
        assert!(
            msg.contains("/sys/fs/cgroup/cgroup.subtree_control"),
            "{msg}"
        );
        assert!(msg.contains("\"+memory\""), "{msg}");
        assert!(msg.contains("processes of its own"), "{msg}");
        let errno = match &e {
            CgroupError::Write { source, .. } => source.raw_os_error(),
            _ => None,
        };
        assert_eq!(errno, Some(libc::EBUSY));
    }

    #[test]
    fn only_unsupported_is_a_warning() {
        let u = CgroupError::Unsupported {
            what: "io weight",
            reason: "no BFQ".into(),
        };
        assert!(u.is_unsupported());
        assert!(!CgroupError::NotFound {
            rel_path: "isolate/x".into()
        }
        .is_unsupported());
    }
}
