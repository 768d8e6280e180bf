//! Volumes, host side: resolving a target inside the root without leaving
//! it, and mounting a named volume's ext4 image: attached to a loop device
//! (`LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE`, autoclear), checked, and
//! mounted here as a detached mount (`fsopen` + `fsmount`) that the child
//! attaches inside its root. The mount is made outside the container's
//! cgroup, whose device rules rightly refuse it the loop device; the loop
//! device detaches itself when the mount, held last by the container's
//! mount namespace, goes away.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use crate::error::ContainerError;

/// Most symlinks followed while resolving one target (as the kernel's 40).
const MAX_LINKS: u32 = 40;

/// Resolves `target` (absolute, inside the container) against `root` (the
/// rootfs on the host) the way the kernel will inside the container, where
/// absolute symlinks point into the root. Returns the resolved path inside
/// the container; a symlink whose `..` would climb above the root is an
/// error naming it.
pub fn resolve_in_root(root: &Path, target: &Path) -> Result<PathBuf, String> {
    let mut todo: Vec<OsString> = components(target);
    todo.reverse();
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            if done.pop().is_none() {
                return Err(format!(
                    "{} leaves the root through a symlink",
                    target.display()
                ));
            }
            continue;
        }
        let host: PathBuf = root.join(done.iter().collect::<PathBuf>()).join(&part);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!("{} has too many symlinks", target.display()));
                }
                let dest = std::fs::read_link(&host).map_err(|e| e.to_string())?;
                if dest.is_absolute() {
                    done.clear();
                }
                let mut more = components(&dest);
                more.reverse();
                todo.extend(more);
            }
            _ => done.push(part),
        }
    }
    Ok(Path::new("/").join(done.iter().collect::<PathBuf>()))
}

fn components(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// A named volume mounted (detached) for one run.
#[derive(Debug)]
pub struct Attached {
    /// The detached ext4 mount, until the child holds it.
    pub device: Option<OwnedFd>,
    /// The image, locked (`flock`) for the run so that two runs never
    /// mount the same ext4 image at once.
    pub _image_lock: File,
}

impl Attached {
    /// The detached mount's descriptor, while this process holds it.
    pub fn device_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.as_ref().map(AsRawFd::as_raw_fd)
    }
}

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// Checks the ext4 file system in `image` without changing it
/// (`e2fsck -n -f`): about 10 ms for an empty 1 GiB volume, more as it fills.
fn check_fs(image: &Path) -> Result<(), ContainerError> {
    let out = std::process::Command::new("e2fsck")
        .args(["-n", "-f"])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ContainerError::host("run e2fsck (install e2fsprogs)", e))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let detail = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join("; ");
    Err(ContainerError::VolumeDamaged {
        image: image.to_path_buf(),
        detail: format!("exit {}: {detail}", out.status.code().unwrap_or(-1)),
    })
}

/// Attaches `image` to a free loop device with autoclear.
pub fn attach(image: &Path, read_only: bool) -> Result<Attached, ContainerError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)
        .map_err(|e| ContainerError::host(format!("open volume image {}", image.display()), e))?;
    // SAFETY: flock on a descriptor `file` owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(ContainerError::VolumeBusy(image.to_path_buf()));
    }
    // The host kernel is about to mount a file system that a VM guest may
    // have written as raw blocks: check it first, while the lock keeps
    // anyone else from writing it.
    check_fs(image)?;
    let ctl = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
        .map_err(|e| {
            ContainerError::host("open /dev/loop-control (is the loop module loaded?)", e)
        })?;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(ContainerError::last_os("find a free loop device"));
        }
        let dev_path = format!("/dev/loop{n}");
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(&dev_path)
            .map_err(|e| ContainerError::host(format!("open {dev_path}"), e))?;
        // SAFETY: LoopConfig is plain data; all-zero is its documented default.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = file.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        // SAFETY: `cfg` is a valid loop_config the kernel reads during the call.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg) };
        if rc == 0 {
            let mount = mount_ext4(&dev_path, read_only).map_err(|e| {
                ContainerError::host(
                    format!(
                        "mount the ext4 file system of volume image {} ({dev_path})",
                        image.display()
                    ),
                    e,
                )
            })?;
            return Ok(Attached {
                device: Some(mount),
                _image_lock: file,
            });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(ContainerError::host(
                format!("attach {} to {dev_path}", image.display()),
                e,
            ));
        }
        // Another process took this device first: ask again.
    }
    Err(ContainerError::host(
        format!("attach {} to a loop device", image.display()),
        std::io::Error::from_raw_os_error(libc::EBUSY),
    ))
}

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

/// Mounts the ext4 file system on `device` as a detached mount (new mount
/// API): no set-id programs and no device nodes, since a VM guest may
/// have written it; read-only down to the superblock when asked.
fn mount_ext4(device: &str, read_only: bool) -> std::io::Result<OwnedFd> {
    let check = |rc: libc::c_long| {
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    let source = std::ffi::CString::new(device).map_err(std::io::Error::other)?;
    // SAFETY: the name is a NUL-terminated string valid for the call.
    let ctx = check(unsafe { libc::syscall(libc::SYS_fsopen, c"ext4".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fsopen returned a new descriptor that nothing else owns.
    let ctx = unsafe { OwnedFd::from_raw_fd(ctx as i32) };
    let set = |cmd: libc::c_uint, key: Option<&std::ffi::CStr>, value: Option<&std::ffi::CStr>| {
        // SAFETY: key and value are NUL-terminated strings (or null) valid
        // for the call; the context descriptor is open.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                ctx.as_raw_fd(),
                cmd,
                key.map_or(std::ptr::null(), |k| k.as_ptr()),
                value.map_or(std::ptr::null(), |v| v.as_ptr()),
                0,
            )
        })
    };
    set(FSCONFIG_SET_STRING, Some(c"source"), Some(&source))?;
    if read_only {
        set(FSCONFIG_SET_FLAG, Some(c"ro"), None)?;
    }
    set(FSCONFIG_CMD_CREATE, None, None)?;
    let attrs =
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | if read_only { MOUNT_ATTR_RDONLY } else { 0 };
    // SAFETY: integer arguments only; the context descriptor is open.
    let fd = check(unsafe {
        libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FSMOUNT_CLOEXEC, attrs)
    })?;
    // SAFETY: fsmount returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn plain_and_missing_paths_resolve_as_given() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("data")).unwrap();
        assert_eq!(
            resolve_in_root(root.path(), Path::new("/data/new")).unwrap(),
            Path::new("/data/new")
        );
    }

    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        symlink("/real", root.path().join("link")).unwrap();
        assert_eq!(
            resolve_in_root(root.path(), Path::new("/link/x")).unwrap(),
            Path::new("/real/x")
        );
    }

    #[test]
    fn rejects_symlink_climbing_out_of_the_root() {
        let root = tempfile::tempdir().unwrap();
        symlink("../../../../etc", root.path().join("evil")).unwrap();
        let err = resolve_in_root(root.path(), Path::new("/evil/x")).unwrap_err();
        assert!(err.contains("leaves the root"), "{err}");
    }

    #[test]
    fn rejects_symlink_loops() {
        let root = tempfile::tempdir().unwrap();
        symlink("/b", root.path().join("a")).unwrap();
        symlink("/a", root.path().join("b")).unwrap();
        assert!(resolve_in_root(root.path(), Path::new("/a")).is_err());
    }
}
