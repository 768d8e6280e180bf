//! Containers for an OCI runtime (`isolate create` / `start`): one isolate
//! process sets the container up and exits, leaving the shim (the
//! container's PID 1) held before it starts the application; another
//! isolate process starts it later by writing one byte to what the shim
//! waits on (the runtime's exec FIFO).
//!
//! Such a container does not die with isolate (its engine's shim or conmon
//! reaps it), streams are the ones isolate was given (no relay), the shim
//! exits with the application's status (a signal as 128 + its number), and
//! its cgroup is `isolate/oci-<id>`, removed by the runtime's `delete`
//! ([`remove_cgroup`]), never by the stale sweep of ordinary runs.

use std::os::fd::RawFd;
use std::path::PathBuf;

use isolate_cgroups::devices::DeviceRule;
use isolate_cgroups::Family;
use isolate_core::{error_chain, Result, Workload};

use crate::error::ContainerError;

/// The OCI runtime's cgroups: `isolate/oci-<id>`.
pub const CGROUPS: Family = Family::new("oci-");

/// What an OCI bundle asks for beyond a [`Workload`] (container mode only).
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Supplementary groups of the application.
    pub groups: Vec<u32>,
    /// Resource limits of the application: `RLIMIT_*`, soft, hard.
    pub rlimits: Vec<(libc::c_int, u64, u64)>,
    /// A network namespace to join (the engine's) instead of a new one.
    pub net_ns: Option<PathBuf>,
    /// Paths to mask beyond Docker's defaults (which are always masked).
    pub masked: Vec<Masked>,
    /// Paths to make read-only beyond Docker's defaults.
    pub read_only: Vec<String>,
    /// tmpfs mounts beyond the standard ones, made before the volumes.
    pub tmpfs: Vec<Tmpfs>,
    /// Sysctls of the container's namespaces (`net.ipv4.ip_forward`, `1`).
    pub sysctl: Vec<(String, String)>,
    /// Device rules allowed beyond Docker's default devices.
    pub device_rules: Vec<DeviceRule>,
    /// The root is the rootfs itself, bound writable (runc's way), not an
    /// overlay whose writes vanish; with `read_only_root` it is made
    /// read-only once the recipe (mount points included) is done.
    pub bind_root: bool,
    /// With `bind_root`: the root is read-only for the application.
    pub read_only_root: bool,
    /// Mount the container's cgroups read-only at `/sys/fs/cgroup` (v2:
    /// cgroup2; v1: a tmpfs with each of the host's hierarchies).
    pub cgroupfs: bool,
    /// `MOUNT_ATTR_*` flags (nosuid, nodev, noexec) for each of the
    /// workload's volumes, in order (`0` or missing: none).
    pub volume_attrs: Vec<u64>,
}

/// A path to mask.
#[derive(Debug, Clone)]
pub struct Masked {
    /// The path inside the container.
    pub path: String,
    /// A directory (covered by an empty read-only tmpfs) or anything else
    /// (`/dev/null` bound over it).
    pub is_dir: bool,
}

/// A tmpfs mount.
#[derive(Debug, Clone)]
pub struct Tmpfs {
    /// Mount point in the container (made if missing).
    pub target: String,
    /// `MS_*` flags.
    pub flags: libc::c_ulong,
    /// tmpfs options (`size=…,mode=…`).
    pub data: String,
}

/// `MOUNT_ATTR_NOSUID`, for [`Extras::volume_attrs`].
pub const ATTR_NOSUID: u64 = crate::sys::MOUNT_ATTR_NOSUID;
/// `MOUNT_ATTR_NODEV`, for [`Extras::volume_attrs`].
pub const ATTR_NODEV: u64 = crate::sys::MOUNT_ATTR_NODEV;
/// `MOUNT_ATTR_NOEXEC`, for [`Extras::volume_attrs`].
pub const ATTR_NOEXEC: u64 = crate::sys::MOUNT_ATTR_NOEXEC;

/// How the spawn path makes a detached container.
pub(crate) struct Detach<'a> {
    pub id: &'a str,
    pub hold: RawFd,
    pub extras: &'a Extras,
}

/// A container set up and held before its application starts.
#[derive(Debug, Clone)]
pub struct Created {
    /// The host pid of its PID 1 (the shim).
    pub pid: u32,
    /// Its cgroup, relative to the cgroup root(s).
    pub cgroup: Option<String>,
}

/// Sets up `w` as container `id` (cgroup `isolate/oci-<id>`) and returns
/// once it is ready: its application starts when one byte can be read
/// from `hold` (the shim keeps that descriptor; the caller may close its
/// own). On an error nothing is left: the shim is killed, the cgroup gone.
pub fn create(w: &Workload, id: &str, hold: RawFd, extras: &Extras) -> Result<Created> {
    let d = Detach { id, hold, extras };
    let c = crate::spawn::launch(w, Some(&d))?;
    let pid = c.pid();
    Ok(Created {
        pid,
        cgroup: c.detach(),
    })
}

/// Removes container `id`'s cgroup, killing whatever still runs in it; a
/// cgroup that is not there is not an error.
pub fn remove_cgroup(id: &str) -> Result<()> {
    CGROUPS
        .remove_leftover(id)
        .map_err(|e| ContainerError::Cgroup(error_chain(&e)).into())
}
