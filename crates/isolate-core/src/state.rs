//! Records of named running workloads under `ISOLATE_STATE`, one JSON file
//! each, so that `isolate ps/stats/update/kill` work from another process
//! and stale records left by a crash are recognised and removed.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::isolator::Mode;
use crate::paths;
use crate::workload::Workload;

/// What another isolate process needs to find and steer a named workload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The workload's name.
    pub name: String,
    /// Its boundary.
    pub mode: Mode,
    /// The process that holds the boundary: the container's init or the VMM.
    pub pid: u32,
    /// That process's start time (field 22 of `/proc/PID/stat`), so a
    /// reused pid is not mistaken for it.
    pub pid_start: u64,
    /// The cgroup (path relative to the cgroup root) holding its limits.
    pub cgroup: String,
    /// The command.
    pub argv: Vec<String>,
    /// Start, seconds since the epoch.
    pub started: u64,
}

/// The start time of process `pid`, in clock ticks since boot.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Record {
    /// Whether the process of this record still runs.
    pub fn alive(&self) -> bool {
        process_start(self.pid) == Some(self.pid_start)
    }
}

fn record_path(name: &str) -> PathBuf {
    paths::state_dir().join(format!("{name}.json"))
}

/// A registered record; dropping it removes the file.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Registers a named workload; fails with [`Error::NameInUse`] if a live
/// workload holds the name (a stale record is replaced).
pub fn register(record: &Record) -> Result<Registration> {
    let dir = paths::state_dir();
    crate::workload::check_name("name", &record.name)?;
    paths::private_dir(&dir).map_err(|e| Error::io("cannot create state directory", &dir, e))?;
    let path = record_path(&record.name);
    let body = serde_json::to_vec_pretty(record).expect("record serializes");
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(&body)
                    .map_err(|e| Error::io("cannot write state record", &path, e))?;
                return Ok(Registration { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match get(&record.name) {
                Ok(Some(old)) if old.alive() => return Err(Error::NameInUse(record.name.clone())),
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            },
            Err(e) => return Err(Error::io("cannot create state record", &path, e)),
        }
    }
    Err(Error::NameInUse(record.name.clone()))
}

/// Registers `w` if it has a name: the process `pid` holds its boundary
/// `mode`, and `cgroup` (relative to the cgroup root) its limits. `Ok(None)`
/// for an unnamed workload; [`Error::NameInUse`] as [`register`].
pub fn register_named(
    w: &Workload,
    mode: Mode,
    pid: u32,
    cgroup: Option<&str>,
) -> Result<Option<Registration>> {
    let Some(name) = &w.name else {
        return Ok(None);
    };
    let record = Record {
        name: name.clone(),
        mode,
        pid,
        pid_start: process_start(pid).unwrap_or(0),
        cgroup: cgroup.unwrap_or_default().to_string(),
        argv: w.argv.clone(),
        started: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    register(&record).map(Some)
}

/// The record of `name`, if any (alive or stale).
pub fn get(name: &str) -> Result<Option<Record>> {
    // A name becomes a file name: validated as at spawn, so that no
    // subcommand reads or removes a file outside the state directory.
    crate::workload::check_name("name", name)?;
    let path = record_path(name);
    match std::fs::read(&path) {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot read state record", &path, e)),
    }
}

/// The live record of `name`, or [`Error::NoSuchWorkload`].
pub fn get_live(name: &str) -> Result<Record> {
    match get(name)? {
        Some(r) if r.alive() => Ok(r),
        _ => Err(Error::NoSuchWorkload(name.to_string())),
    }
}

/// All live records; stale ones (their process is gone) are removed.
pub fn list() -> Result<Vec<Record>> {
    let dir = paths::state_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot read state directory", &dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let p = entry.path();
        // A container's exec spec (`NAME.exec`) goes with its record: one
        // left by a run killed with SIGKILL is removed here.
        if p.extension().and_then(|e| e.to_str()) == Some("exec") {
            if !p.with_extension("json").exists() {
                let _ = std::fs::remove_file(&p);
            }
            continue;
        }
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        match std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        {
            Some(r) if r.alive() => out.push(r),
            _ => {
                let _ = std::fs::remove_file(&p);
                let _ = std::fs::remove_file(p.with_extension("exec"));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_a_start_time() {
        assert!(process_start(std::process::id()).is_some());
        assert!(process_start(u32::MAX).is_none());
    }

    #[test]
    fn an_unnamed_workload_is_not_registered() {
        let w = Workload::new("/bin/true");
        let reg = register_named(&w, Mode::Container, std::process::id(), None).unwrap();
        assert!(reg.is_none());
    }
}
