//! Which cgroup layout this host has, and where each hierarchy is mounted.
//!
//! `statfs("/sys/fs/cgroup")` says cgroup2 (unified v2) or tmpfs (v1
//! hierarchies, maybe with a cgroup2 mount beside them: hybrid);
//! `/proc/self/mountinfo` then says where each v1 controller is mounted.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::CgroupError;

/// Where cgroup filesystems are mounted on every distribution isolate knows.
pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Filesystem magic numbers from `<linux/magic.h>`, as `statfs` reports them.
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The cgroup layout of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2 only, mounted at `/sys/fs/cgroup` (most current distributions).
    Unified,
    /// v1 controller hierarchies plus a controller-less cgroup2 mount
    /// (`/sys/fs/cgroup/unified`); isolate uses the v1 controllers.
    Hybrid,
    /// v1 controller hierarchies only.
    Legacy,
}

impl Layout {
    /// Whether this layout puts limits in v1 hierarchies.
    pub fn is_v1(self) -> bool {
        !matches!(self, Layout::Unified)
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Unified => "unified (cgroup v2)",
            Layout::Hybrid => "hybrid (cgroup v1 controllers + cgroup2)",
            Layout::Legacy => "legacy (cgroup v1)",
        })
    }
}

/// The v1 controllers isolate uses, in the order it creates cgroups in them.
pub(crate) const V1_CONTROLLERS: [&str; 7] = [
    "memory", "cpu", "cpuacct", "pids", "blkio", "freezer", "devices",
];

/// The cgroup mounts of this host, as isolate needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchies {
    pub layout: Layout,
    /// The cgroup2 mount to use (Unified only).
    pub v2_root: Option<PathBuf>,
    /// v1 controller → mount point (Hybrid/Legacy), for the controllers of
    /// [`V1_CONTROLLERS`] that are mounted.
    pub v1: Vec<(&'static str, PathBuf)>,
}

impl Hierarchies {
    /// Probes this host.
    pub fn probe() -> Result<Self, CgroupError> {
        let root = Path::new(CGROUP_ROOT);
        let magic = fs_magic(root).map_err(|source| CgroupError::Probe {
            path: root.to_owned(),
            source,
        })?;
        if magic == CGROUP2_SUPER_MAGIC {
            return Ok(Hierarchies {
                layout: Layout::Unified,
                v2_root: Some(root.to_owned()),
                v1: Vec::new(),
            });
        }
        if magic != TMPFS_MAGIC && magic != CGROUP_SUPER_MAGIC {
            return Err(CgroupError::NoHierarchy {
                reason: format!(
                    "{CGROUP_ROOT} is neither cgroup2 nor a tmpfs of cgroup v1 hierarchies \
                     (filesystem magic {magic:#x}); mount cgroup2 there: \
                     `mount -t cgroup2 cgroup2 {CGROUP_ROOT}`"
                ),
            });
        }
        let mi = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(mi).map_err(|source| CgroupError::Probe {
            path: mi.to_owned(),
            source,
        })?;
        Self::from_mountinfo(&text)
    }

    /// Decides the layout of a v1/hybrid host from its mount table.
    pub fn from_mountinfo(text: &str) -> Result<Self, CgroupError> {
        let mut v1: Vec<(&'static str, PathBuf)> = Vec::new();
        let mut v2: Option<PathBuf> = None;
        for m in text.lines().filter_map(parse_mountinfo_line) {
            match m.fstype.as_str() {
                // Prefer the conventional place if there are several.
                "cgroup2"
                    if v2.is_none() || m.mount_point == Path::new(CGROUP_ROOT).join("unified") =>
                {
                    v2 = Some(m.mount_point);
                }
                "cgroup" => {
                    for opt in m.super_options.split(',') {
                        if let Some(c) = V1_CONTROLLERS.iter().find(|c| **c == opt) {
                            if !v1.iter().any(|(have, _)| have == c) {
                                v1.push((c, m.mount_point.clone()));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if !v1.is_empty() {
            let layout = if v2.is_some() {
                Layout::Hybrid
            } else {
                Layout::Legacy
            };
            return Ok(Hierarchies {
                layout,
                v2_root: None,
                v1,
            });
        }
        match v2 {
            // A tmpfs at /sys/fs/cgroup with only a cgroup2 mount below it:
            // all controllers are free for v2, so use it as unified.
            Some(root) => Ok(Hierarchies {
                layout: Layout::Unified,
                v2_root: Some(root),
                v1,
            }),
            None => Err(CgroupError::NoHierarchy {
                reason: format!(
                    "no cgroup v1 controller (memory, cpu, pids, ...) and no cgroup2 is \
                     mounted; mount cgroup2 at {CGROUP_ROOT}: `mount -t cgroup2 cgroup2 {CGROUP_ROOT}`"
                ),
            }),
        }
    }

    /// The mount point of v1 controller `c`.
    pub fn v1_mount(&self, c: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(have, _)| *have == c)
            .map(|(_, p)| p.as_path())
    }
}

/// The cgroup layout of this host.
pub fn layout() -> Result<Layout, CgroupError> {
    Hierarchies::probe().map(|h| h.layout)
}

/// Whether `/sys/fs/cgroup` itself is a cgroup2 mount (a unified host):
/// one `statfs`, for hot paths that need no more than that.
pub fn root_is_unified() -> bool {
    fs_magic(Path::new(CGROUP_ROOT)).is_ok_and(|m| m == CGROUP2_SUPER_MAGIC)
}

/// `f_type` of the filesystem holding `path`.
fn fs_magic(path: &Path) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a NUL-terminated string alive for the call, and `st`
    // points to writable memory of the size of `struct statfs`, which the
    // kernel fills entirely on success.
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type is i64 or i32 depending on the target
    Ok(st.f_type as i64)
}

struct Mount {
    mount_point: PathBuf,
    fstype: String,
    super_options: String,
}

/// One line of `/proc/self/mountinfo`:
/// `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTS`.
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    let fstype = right.next()?.to_owned();
    let _source = right.next()?;
    let super_options = right.next().unwrap_or("").to_owned();
    Some(Mount {
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype,
        super_options,
    })
}

/// Undoes the octal escapes (`\040` for a space) of mountinfo fields.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        let value = octal.map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')));
        if let (b'\\', Some(v @ 0..=255)) = (b[i], value) {
            let v = v as u8;
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mount table of the hybrid hosts isolate is developed on
    /// (cpu and cpuacct in separate hierarchies).
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd-era legacy host: cpu,cpuacct co-mounted, optional fields.
    const LEGACY: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid shared:15 - cgroup cgroup rw,pids
";

    #[test]
    fn hybrid_host_uses_v1_controllers() {
        let h = Hierarchies::from_mountinfo(HYBRID).unwrap();
        assert_eq!(h.layout, Layout::Hybrid);
        assert_eq!(
            h.v1_mount("memory"),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            h.v1_mount("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct"))
        );
        assert_eq!(
            h.v1_mount("freezer"),
            Some(Path::new("/sys/fs/cgroup/freezer"))
        );
        assert_eq!(h.v1_mount("cpuset"), None, "cpuset is not used");
        assert_eq!(h.v2_root, None);
    }

    #[test]
    fn legacy_host_with_comounted_cpu_and_cpuacct() {
        let h = Hierarchies::from_mountinfo(LEGACY).unwrap();
        assert_eq!(h.layout, Layout::Legacy);
        let cpu = Path::new("/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(h.v1_mount("cpu"), Some(cpu));
        assert_eq!(h.v1_mount("cpuacct"), Some(cpu));
        assert_eq!(h.v1_mount("freezer"), None);
    }

    #[test]
    fn tmpfs_with_only_cgroup2_is_unified() {
        let text = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = Hierarchies::from_mountinfo(text).unwrap();
        assert_eq!(h.layout, Layout::Unified);
        assert_eq!(
            h.v2_root.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn no_cgroup_mount_is_an_error_that_says_what_to_mount() {
        let text = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n";
        let e = Hierarchies::from_mountinfo(text).unwrap_err();
        assert!(e.to_string().contains("mount -t cgroup2"), "{e}");
    }

    #[test]
    fn mount_points_are_unescaped() {
        let m = parse_mountinfo_line("1 2 0:3 / /a\\040b rw - cgroup cgroup rw,memory").unwrap();
        assert_eq!(m.mount_point, Path::new("/a b"));
        assert_eq!(unescape("\\134x\\"), "\\x\\");
    }
}
