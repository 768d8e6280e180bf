//! Mounts: the special file systems, the root (initramfs, read-only bind
//! of it, or a block image with a tmpfs overlay) and the volumes.
//!
//! The kernel starts the init on its initramfs (`rootfs`), which cannot be
//! `pivot_root`ed away: a new root is entered the way `switch_root` does
//! it — move the new root's mount onto `/` and `chroot` into it.

use std::path::{Path, PathBuf};

use isolate_core::protocol::{GuestRoot, GuestVolume};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot};

/// Errors of mounting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mount call failed.
    #[error("cannot mount {what} on {target}")]
    Mount {
        /// What was being mounted.
        what: String,
        /// Where.
        target: String,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// A mount point could not be created.
    #[error("cannot create mount point {path} (a read-only root must already contain it)")]
    MountPoint {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Entering the new root failed.
    #[error("cannot switch the root to {0}")]
    SwitchRoot(String, #[source] Errno),
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// Staging area in the initramfs for block roots and read-only roots.
const STAGE: &str = "/.isolate";

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Error> {
    mkdir(Path::new(target))?;
    mount(Some(source), target, Some(fstype), flags, data).map_err(|source_err| Error::Mount {
        what: format!("{source} ({fstype})"),
        target: target.to_string(),
        source: source_err,
    })
}

fn mount_flags(source: &str, target: &str, flags: MsFlags) -> Result<(), Error> {
    mount(Some(source), target, None::<&str>, flags, None::<&str>).map_err(|e| Error::Mount {
        what: source.to_string(),
        target: target.to_string(),
        source: e,
    })
}

fn mkdir(p: &Path) -> Result<(), Error> {
    if p.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(p).map_err(|source| Error::MountPoint {
        path: p.to_path_buf(),
        source,
    })
}

/// What the init mounts first, on the initramfs: `/dev` (devtmpfs, so the
/// ports can be opened), `/proc` and `/sys`.
pub fn early() -> Result<(), Error> {
    match mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    ) {
        // Already mounted by the kernel (CONFIG_DEVTMPFS_MOUNT on a disk root).
        Err(Error::Mount {
            source: Errno::EBUSY,
            ..
        }) => {}
        r => r?,
    }
    mount_fs(
        "proc",
        "/proc",
        "proc",
        NOSUID_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_fs(
        "sysfs",
        "/sys",
        "sysfs",
        NOSUID_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    Ok(())
}

/// Sets up the workload's root as `root`/`read_only` say, and makes it the
/// init's root. `/dev`, `/proc` and `/sys` are moved along.
pub fn setup_root(root: &GuestRoot, read_only: bool) -> Result<(), Error> {
    let new_root = match root {
        GuestRoot::Initramfs if !read_only => return Ok(()),
        GuestRoot::Initramfs => {
            // The mount points must exist before the bind is made read-only.
            for d in ["/proc", "/sys", "/dev", "/tmp"] {
                mkdir(Path::new(d))?;
            }
            let target = format!("{STAGE}/root");
            mkdir(Path::new(&target))?;
            mount_flags("/", &target, MsFlags::MS_BIND)?;
            mount_flags(
                "/",
                &target,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            )?;
            target
        }
        GuestRoot::Block { device, fstype } => {
            let lower = format!("{STAGE}/lower");
            let ro = MsFlags::MS_RDONLY;
            mount_fs(device, &lower, fstype, ro, None)?;
            if read_only {
                lower
            } else {
                let rw = format!("{STAGE}/rw");
                mount_fs("tmpfs", &rw, "tmpfs", MsFlags::empty(), Some("mode=0755"))?;
                mkdir(Path::new(&format!("{rw}/upper")))?;
                mkdir(Path::new(&format!("{rw}/work")))?;
                let target = format!("{STAGE}/root");
                let opts = format!("lowerdir={lower},upperdir={rw}/upper,workdir={rw}/work");
                mount_fs("overlay", &target, "overlay", MsFlags::empty(), Some(&opts))?;
                target
            }
        }
    };
    for special in ["/dev", "/proc", "/sys"] {
        let dst = format!("{new_root}{special}");
        mkdir(Path::new(&dst))?;
        mount_flags(special, &dst, MsFlags::MS_MOVE)?;
    }
    switch_root(&new_root)
}

fn switch_root(new_root: &str) -> Result<(), Error> {
    let err = |e| Error::SwitchRoot(new_root.to_string(), e);
    chdir(new_root).map_err(err)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(err)?;
    chroot(".").map_err(err)?;
    chdir("/").map_err(err)
}

/// The mounts made inside the final root: `/dev/pts` (a new instance,
/// `/dev/ptmx` pointing at it), `/dev/shm`, and a tmpfs `/tmp`.
pub fn finish_specials() -> Result<(), Error> {
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .or_else(|_| {
        // No group 5 (tty) is fine: retry without gid.
        mount_fs(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
    })?;
    let _ = std::fs::remove_file("/dev/ptmx");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    mount_fs("shm", "/dev/shm", "tmpfs", NOSUID_NODEV, Some("mode=1777"))?;
    mount_fs("tmpfs", "/tmp", "tmpfs", NOSUID_NODEV, Some("mode=1777"))?;
    Ok(())
}

/// Mounts the volumes at their targets, in order; returns the targets
/// mounted (for [`unmount`]). On error the ones already mounted are
/// unmounted again.
pub fn mount_volumes(volumes: &[GuestVolume]) -> Result<Vec<String>, Error> {
    let mut done = Vec::new();
    for v in volumes {
        let mut flags = NOSUID_NODEV;
        if v.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        if let Err(e) = mount_fs(&v.device, &v.target, &v.fstype, flags, None) {
            unmount(&done);
            return Err(e);
        }
        done.push(v.target.clone());
    }
    Ok(done)
}

/// Unmounts `targets` in reverse order (lazily if busy).
pub fn unmount(targets: &[String]) {
    for t in targets.iter().rev() {
        if umount2(t.as_str(), MntFlags::empty()).is_err() {
            let _ = umount2(t.as_str(), MntFlags::MNT_DETACH);
        }
    }
}
