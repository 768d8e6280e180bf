//! The container's filesystem set-up as data: a list of [`Op`]s built by
//! the parent (where allocation is allowed) and executed by the child after
//! `pivot_root`, where every path resolves inside the new root.
//!
//! Keeping the list as data makes the recipe readable top to bottom and
//! testable without root.

use std::ffi::CString;

use libc::c_ulong;

/// One step of the filesystem set-up, run in the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `mount(2)`.
    Mount {
        /// Source (device, fs name, or a `/proc/self/fd/N` for host objects).
        source: Option<CString>,
        /// Mount point inside the new root.
        target: CString,
        /// File system type.
        fstype: Option<CString>,
        /// `MS_*` flags.
        flags: c_ulong,
        /// File system options.
        data: Option<CString>,
        /// Skip silently when the target does not exist (masked paths).
        if_exists: bool,
    },
    /// `mkdir(2)`, an existing directory is fine.
    Mkdir {
        /// Path inside the new root.
        path: CString,
        /// Permission bits.
        mode: u32,
    },
    /// `mknod(2)` of a device node.
    Mknod {
        /// Path inside the new root.
        path: CString,
        /// `S_IFCHR` or `S_IFBLK`, with the permission bits.
        mode: u32,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// Creates an empty regular file (a mount point for a file), existing is fine.
    File {
        /// Path inside the new root.
        path: CString,
    },
    /// Attaches a mount tree held as descriptor `fd` (a detached copy of a
    /// host object, made before the root switch) at `target`.
    Attach {
        /// The descriptor, from `open_tree(OPEN_TREE_CLONE)`.
        fd: i32,
        /// Mount point inside the new root.
        target: CString,
    },
    /// Makes the mount at `target`, and every mount below it, read-only.
    ReadOnly {
        /// Mount point inside the new root.
        target: CString,
    },
    /// Sets `MOUNT_ATTR_*` flags on the mount at `target` and every mount
    /// below it (nosuid, nodev, noexec, read-only of an OCI bind mount).
    SetAttr {
        /// Mount point inside the new root.
        target: CString,
        /// The `MOUNT_ATTR_*` flags to set.
        attr: u64,
    },
    /// `symlink(2)`.
    Symlink {
        /// What the link points to.
        target: CString,
        /// The link.
        link: CString,
    },
}

fn c(s: &str) -> CString {
    CString::new(s).expect("mount paths hold no NUL")
}

fn mount(source: &str, target: &str, fstype: &str, flags: c_ulong, data: &str) -> Op {
    Op::Mount {
        source: Some(c(source)),
        target: c(target),
        fstype: (!fstype.is_empty()).then(|| c(fstype)),
        flags,
        data: (!data.is_empty()).then(|| c(data)),
        if_exists: false,
    }
}

fn bind(source: &str, target: &str, if_exists: bool) -> Op {
    Op::Mount {
        source: Some(c(source)),
        target: c(target),
        fstype: None,
        flags: libc::MS_BIND | libc::MS_REC,
        data: None,
        if_exists,
    }
}

/// Remounts an existing bind mount read-only, keeping `keep` flags.
pub fn remount_ro(target: &str, keep: c_ulong, if_exists: bool) -> Op {
    Op::Mount {
        source: None,
        target: c(target),
        fstype: None,
        flags: libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | keep,
        data: None,
        if_exists,
    }
}

fn mkdir(path: &str, mode: u32) -> Op {
    Op::Mkdir {
        path: c(path),
        mode,
    }
}

const NOSUID_NODEV_NOEXEC: c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// Docker's masked directories: an empty read-only tmpfs covers them.
pub use isolate_core::protocol::masks::DIRS as MASKED_DIRS;
/// Docker's masked files: `/dev/null` is bound over them.
pub use isolate_core::protocol::masks::FILES as MASKED_FILES;
/// Docker's read-only paths under /proc.
pub use isolate_core::protocol::masks::READ_ONLY;

/// File systems the shim mounts before the root switch, on its scratch
/// tmpfs, and attaches in the new root once the old one is gone: the
/// kernel lets a user namespace mount procfs and sysfs only where a full
/// instance of each is visible, which is no longer so after the old root is
/// detached. Type, mount point in the container, flags.
pub const PREMOUNTS: [(&str, &str, c_ulong); 2] = [
    ("proc", "/proc", NOSUID_NODEV_NOEXEC),
    ("sysfs", "/sys", NOSUID_NODEV_NOEXEC | libc::MS_RDONLY),
];

/// Character devices made in the container's /dev: name, major, minor.
pub const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The standard set-up: /proc, /dev (devices, pts, shm, mqueue), /sys,
/// masked and read-only paths, and /tmp for a read-only root. Mount points
/// are created first (they already exist in a normal rootfs; a read-only
/// root without them fails with the step named).
///
/// `premount_fds`: the descriptors of the [`PREMOUNTS`], in order.
/// `dev_fds`: in rootless mode (no `mknod` in a user namespace) the host's
/// device nodes, held as these descriptors, are bound instead.
pub fn standard(
    read_only_root: bool,
    premount_fds: [i32; PREMOUNTS.len()],
    dev_fds: Option<[i32; DEVICES.len()]>,
) -> Vec<Op> {
    let mut ops = Vec::with_capacity(48);
    let mk = !read_only_root;
    if mk {
        ops.extend([
            mkdir("/proc", 0o555),
            mkdir("/dev", 0o755),
            mkdir("/sys", 0o555),
        ]);
    }
    ops.push(Op::Attach {
        fd: premount_fds[0],
        target: c(PREMOUNTS[0].1),
    });
    ops.push(mount(
        "tmpfs",
        "/dev",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        "mode=755,size=65536k",
    ));
    for (i, (name, major, minor)) in DEVICES.into_iter().enumerate() {
        let path = format!("/dev/{name}");
        match dev_fds {
            None => ops.push(Op::Mknod {
                path: c(&path),
                mode: libc::S_IFCHR | 0o666,
                major,
                minor,
            }),
            Some(fds) => {
                ops.push(Op::File { path: c(&path) });
                ops.push(Op::Attach {
                    fd: fds[i],
                    target: c(&path),
                });
            }
        }
    }
    ops.extend([
        mkdir("/dev/pts", 0o755),
        mount(
            "devpts",
            "/dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            // gid 5 (tty) is not mapped in a rootless container.
            if dev_fds.is_some() {
                "newinstance,ptmxmode=0666,mode=0620"
            } else {
                "newinstance,ptmxmode=0666,mode=0620,gid=5"
            },
        ),
        Op::Symlink {
            target: c("pts/ptmx"),
            link: c("/dev/ptmx"),
        },
        mkdir("/dev/shm", 0o1777),
        mount(
            "shm",
            "/dev/shm",
            "tmpfs",
            NOSUID_NODEV_NOEXEC,
            "mode=1777,size=65536k",
        ),
        mkdir("/dev/mqueue", 0o755),
        mount("mqueue", "/dev/mqueue", "mqueue", NOSUID_NODEV_NOEXEC, ""),
    ]);
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/core", "/proc/kcore"),
    ] {
        ops.push(Op::Symlink {
            target: c(target),
            link: c(link),
        });
    }
    ops.push(Op::Attach {
        fd: premount_fds[1],
        target: c(PREMOUNTS[1].1),
    });
    for f in MASKED_FILES {
        ops.push(bind("/dev/null", f, true));
    }
    for d in MASKED_DIRS {
        let mut m = mount("tmpfs", d, "tmpfs", libc::MS_RDONLY, "size=0");
        if let Op::Mount { if_exists, .. } = &mut m {
            *if_exists = true;
        }
        ops.push(m);
    }
    for p in READ_ONLY {
        ops.push(bind(p, p, true));
        ops.push(remount_ro(p, NOSUID_NODEV_NOEXEC, true));
    }
    if read_only_root {
        ops.push(mount(
            "tmpfs",
            "/tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        ));
    }
    ops
}

/// Creates `path` and its missing parents (each `mkdir`, existing is fine).
pub fn mkdir_p(path: &str, ops: &mut Vec<Op>) {
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        ops.push(mkdir(&prefix, 0o755));
    }
}

/// A host object (directory or file, held as the detached mount tree `fd`)
/// attached at `target`; read-only makes it and every mount below it
/// read-only.
pub fn bind_fd(fd: i32, target: &str, read_only: bool, ops: &mut Vec<Op>) {
    ops.push(Op::Attach {
        fd,
        target: c(target),
    });
    if read_only {
        ops.push(Op::ReadOnly { target: c(target) });
    }
}

/// Masks `path` as Docker masks its paths: an empty read-only tmpfs over a
/// directory, `/dev/null` bound over anything else; a path that does not
/// exist is skipped.
pub fn mask(path: &str, is_dir: bool, ops: &mut Vec<Op>) {
    if is_dir {
        let mut m = mount("tmpfs", path, "tmpfs", libc::MS_RDONLY, "size=0");
        if let Op::Mount { if_exists, .. } = &mut m {
            *if_exists = true;
        }
        ops.push(m);
    } else {
        ops.push(bind("/dev/null", path, true));
    }
}

/// Binds `path` read-only over itself; a path that does not exist is skipped.
pub fn read_only_path(path: &str, ops: &mut Vec<Op>) {
    ops.push(bind(path, path, true));
    ops.push(remount_ro(path, NOSUID_NODEV_NOEXEC, true));
}

/// A tmpfs at `target` (made first) with `MS_*` flags and options.
pub fn tmpfs(target: &str, flags: c_ulong, data: &str, ops: &mut Vec<Op>) {
    mkdir_p(target, ops);
    ops.push(mount("tmpfs", target, "tmpfs", flags, data));
}

/// The container's cgroups, read-only at `/sys/fs/cgroup` (inside its
/// cgroup namespace each shows the container's own cgroup as its root):
/// `hierarchies` as the host mounts them, name below `/sys/fs/cgroup`
/// (empty: the unified root) and v1 options (`None`: cgroup2).
pub fn cgroupfs(hierarchies: &[(String, Option<String>)], ops: &mut Vec<Op>) {
    const FLAGS: c_ulong = NOSUID_NODEV_NOEXEC | libc::MS_RDONLY;
    if let Some((_, None)) = hierarchies.iter().find(|(n, _)| n.is_empty()) {
        ops.push(mount("cgroup2", "/sys/fs/cgroup", "cgroup2", FLAGS, ""));
        return;
    }
    ops.push(mount(
        "tmpfs",
        "/sys/fs/cgroup",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        "mode=755,size=64k",
    ));
    for (name, opts) in hierarchies {
        let target = format!("/sys/fs/cgroup/{name}");
        ops.push(mkdir(&target, 0o755));
        match opts {
            Some(o) => ops.push(mount("cgroup", &target, "cgroup", FLAGS, o)),
            None => ops.push(mount("cgroup2", &target, "cgroup2", FLAGS, "")),
        }
    }
    ops.push(remount_ro("/sys/fs/cgroup", NOSUID_NODEV_NOEXEC, false));
}

/// A named volume (its ext4 file system mounted detached by the parent,
/// held as descriptor `fd`) attached at `target`.
pub fn ext4_fd(fd: i32, target: &str, ops: &mut Vec<Op>) {
    ops.push(Op::Attach {
        fd,
        target: c(target),
    });
}

impl Op {
    /// What the step does, for error messages (`mount proc on /proc`).
    pub fn describe(&self) -> String {
        match self {
            Op::Mount {
                source,
                target,
                fstype,
                flags,
                ..
            } => {
                let t = target.to_string_lossy();
                if flags & libc::MS_REMOUNT != 0 {
                    format!("remount {t} read-only")
                } else if flags & libc::MS_BIND != 0 {
                    let s = source.as_ref().map(|s| s.to_string_lossy().into_owned());
                    format!("bind-mount {} on {t}", s.unwrap_or_default())
                } else {
                    let f = fstype.as_ref().map(|s| s.to_string_lossy().into_owned());
                    format!("mount {} on {t}", f.unwrap_or_default())
                }
            }
            Op::Attach { target, .. } => {
                format!("bind-mount a volume on {}", target.to_string_lossy())
            }
            Op::ReadOnly { target } => format!("make {} read-only", target.to_string_lossy()),
            Op::SetAttr { target, .. } => {
                format!("set the mount flags of {}", target.to_string_lossy())
            }
            Op::Mkdir { path, .. } => format!("create directory {}", path.to_string_lossy()),
            Op::Mknod { path, .. } => format!("create device {}", path.to_string_lossy()),
            Op::Symlink { link, .. } => format!("create symlink {}", link.to_string_lossy()),
            Op::File { path } => format!("create file {}", path.to_string_lossy()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .filter_map(|o| match o {
                Op::Mount { target, .. } => Some(target.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    }

    fn attach_index(ops: &[Op], path: &str) -> usize {
        ops.iter()
            .position(
                |o| matches!(o, Op::Attach { target, .. } if target.as_bytes() == path.as_bytes()),
            )
            .unwrap()
    }

    #[test]
    fn proc_comes_before_its_masks_and_dev_before_null_binds() {
        let ops = standard(false, [7, 8], None);
        let at = |p: &str| {
            ops.iter()
                .position(
                    |o| matches!(o, Op::Mount { target, .. } if target.as_bytes() == p.as_bytes()),
                )
                .unwrap()
        };
        let proc = attach_index(&ops, "/proc");
        let kcore = at("/proc/kcore");
        assert!(proc < kcore && at("/dev") < kcore);
        assert!(attach_index(&ops, "/sys") < at("/sys/firmware"));
    }

    #[test]
    fn proc_is_nosuid_noexec_nodev_and_sys_read_only() {
        let [(proc, _, proc_flags), (sys, _, sys_flags)] = PREMOUNTS;
        assert_eq!((proc, sys), ("proc", "sysfs"));
        assert_eq!(proc_flags & NOSUID_NODEV_NOEXEC, NOSUID_NODEV_NOEXEC);
        assert_eq!(sys_flags & NOSUID_NODEV_NOEXEC, NOSUID_NODEV_NOEXEC);
        assert_ne!(sys_flags & libc::MS_RDONLY, 0);
    }

    #[test]
    fn every_read_only_path_is_remounted() {
        let ops = standard(false, [7, 8], None);
        for p in READ_ONLY {
            assert!(ops.iter().any(|o| matches!(o,
                Op::Mount { target, flags, .. }
                    if target.as_bytes() == p.as_bytes() && flags & libc::MS_REMOUNT != 0)));
        }
    }

    #[test]
    fn read_only_root_gets_tmp_and_creates_no_mount_points() {
        let ops = standard(true, [7, 8], None);
        assert!(targets(&ops).contains(&"/tmp".to_string()));
        assert!(!ops
            .iter()
            .any(|o| matches!(o, Op::Mkdir { path, .. } if path.as_bytes() == b"/proc")));
    }

    #[test]
    fn rootless_binds_devices_instead_of_mknod() {
        let ops = standard(false, [7, 8], Some([10, 11, 12, 13, 14, 15]));
        assert!(!ops.iter().any(|o| matches!(o, Op::Mknod { .. })));
        assert!(ops.iter().any(|o| matches!(o,
            Op::Attach { fd: 10, target } if target.as_bytes() == b"/dev/null")));
    }

    #[test]
    fn mkdir_p_creates_each_prefix() {
        let mut ops = Vec::new();
        mkdir_p("/a/b/c", &mut ops);
        let paths: Vec<_> = ops.iter().map(|o| o.describe()).collect();
        assert_eq!(
            paths,
            [
                "create directory /a",
                "create directory /a/b",
                "create directory /a/b/c"
            ]
        );
    }
}
