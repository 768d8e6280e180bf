//! A container's state under the runtime's root (`--root`, default
//! [`DEFAULT_ROOT`]): `<root>/<id>/state.json` (what `create` recorded)
//! and, until `start`, `<root>/<id>/exec.fifo`, on which the container's
//! PID 1 waits. The status is derived each time from the recorded pid
//! (checked against its start time, so a reused pid is not taken for the
//! container), the FIFO and the cgroup's freezer: nothing needs isolate
//! to stay running.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{OciError, Result};

/// The runtime's default state directory.
pub const DEFAULT_ROOT: &str = "/run/isolate-oci";

/// The OCI runtime-spec version isolate implements.
pub const OCI_VERSION: &str = "1.0.2";

/// What `create` records about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The container id.
    pub id: String,
    /// Host pid of the container's PID 1.
    pub pid: u32,
    /// Its start time (field 22 of `/proc/<pid>/stat`).
    pub start_time: u64,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The root filesystem.
    pub rootfs: PathBuf,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
    /// The config's annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Its cgroup, relative to the cgroup root(s).
    pub cgroup: Option<String>,
    /// Hooks run after `start`.
    #[serde(default)]
    pub poststart: Vec<oci_spec::runtime::Hook>,
    /// Hooks run by `delete`.
    #[serde(default)]
    pub poststop: Vec<oci_spec::runtime::Hook>,
}

/// A container's status, as the OCI state names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Set up, its process not started.
    Created,
    /// Its process runs.
    Running,
    /// Frozen (`pause`).
    Paused,
    /// Its process has ended.
    Stopped,
}

impl Status {
    /// The spec's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// The state root and one container's paths in it.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// The root at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Root {
        Root { dir: dir.into() }
    }

    /// The container's directory.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The container's exec FIFO.
    pub fn fifo(&self, id: &str) -> PathBuf {
        self.dir(id).join("exec.fifo")
    }

    /// Makes the container's directory (private, 0700); an existing one is
    /// [`OciError::Exists`].
    pub fn make(&self, id: &str) -> Result<PathBuf> {
        isolate_core::paths::private_dir(&self.dir).map_err(|e| {
            OciError::io(format!("create the state root {}", self.dir.display()), e)
        })?;
        let dir = self.dir(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(OciError::Exists(id.to_string()))
            }
            Err(e) => return Err(OciError::io(format!("create {}", dir.display()), e)),
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| OciError::io(format!("set the mode of {}", dir.display()), e))?;
        Ok(dir)
    }

    /// Writes the record (0600, replaced atomically).
    pub fn save(&self, r: &Record) -> Result<()> {
        let path = self.dir(&r.id).join("state.json");
        let text = serde_json::to_vec(r).expect("a record serializes");
        write_atomic(&path, &text, 0o600)
    }

    /// Reads container `id`'s record.
    pub fn load(&self, id: &str) -> Result<Record> {
        // An id is a name under the root, never a path out of it.
        check_id(id)?;
        let path = self.dir(id).join("state.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OciError::NotFound(id.to_string()))
            }
            Err(e) => return Err(OciError::io(format!("read {}", path.display()), e)),
        };
        serde_json::from_slice(&text).map_err(|e| {
            OciError::io(
                format!("parse {}", path.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    /// The ids of every container under the root.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("state.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }

    /// Removes the container's directory; a missing one is fine.
    pub fn remove(&self, id: &str) -> Result<()> {
        match std::fs::remove_dir_all(self.dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(OciError::io(
                format!("remove {}", self.dir(id).display()),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// The container's status now.
    pub fn status(&self, r: &Record) -> Status {
        if !alive(r.pid, r.start_time) {
            return Status::Stopped;
        }
        if self.fifo(&r.id).exists() {
            return Status::Created;
        }
        let frozen = r
            .cgroup
            .as_deref()
            .and_then(|c| isolate_cgroups::Cgroup::open(c).ok())
            .and_then(|c| c.is_frozen().ok())
            .unwrap_or(false);
        if frozen {
            Status::Paused
        } else {
            Status::Running
        }
    }
}

/// Writes `data` to `path` through a temporary file in the same directory.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        OciError::io(format!("write {}", path.display()), e)
    })
}

/// `/proc/<pid>/stat` fields after the command name: state is index 0,
/// start time index 19.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The start time of `pid` (clock ticks since boot).
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether `pid` runs (not a zombie) and is the process that started at `start`.
pub fn alive(pid: u32, start: u64) -> bool {
    match stat_fields(pid) {
        Some(f) => {
            f.first().is_some_and(|s| s != "Z" && s != "X")
                && f.get(19).and_then(|t| t.parse().ok()) == Some(start)
        }
        None => false,
    }
}

/// Now as RFC 3339 (UTC, nanoseconds), as runc writes `created`.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Checks a container id as runc does: letters, digits, `_`, `+`, `-`, `.`.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(OciError::Usage(format!(
            "invalid container id {id:?}: use 1 to 128 letters, digits, '_', '+', '-' or '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_the_shape_runc_writes() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }

    #[test]
    fn ids_with_slashes_or_dots_only_are_refused() {
        assert!(check_id("abc-1.2_x+y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let t = start_time(me).unwrap();
        assert!(alive(me, t));
        assert!(!alive(me, t + 1));
    }

    #[test]
    fn status_follows_the_process_and_the_fifo() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        root.make("c1").unwrap();
        let me = std::process::id();
        let mut r = Record {
            id: "c1".into(),
            pid: me,
            start_time: start_time(me).unwrap(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now_rfc3339(),
            annotations: HashMap::new(),
            cgroup: None,
            poststart: Vec::new(),
            poststop: Vec::new(),
        };
        root.save(&r).unwrap();
        assert_eq!(root.load("c1").unwrap().pid, me);
        std::fs::write(root.fifo("c1"), b"").unwrap();
        assert_eq!(root.status(&r), Status::Created);
        std::fs::remove_file(root.fifo("c1")).unwrap();
        assert_eq!(root.status(&r), Status::Running);
        r.start_time += 1;
        assert_eq!(root.status(&r), Status::Stopped);
        assert!(matches!(root.make("c1"), Err(OciError::Exists(_))));
        root.remove("c1").unwrap();
        assert!(matches!(root.load("c1"), Err(OciError::NotFound(_))));
        assert!(matches!(root.load("../c1"), Err(OciError::Usage(_))));
    }
}
