//! Per-run markers: `ISOLATE_STATE/containers/<id>` is a small file holding
//! the pid and start time of the isolate process that runs container `<id>`,
//! so that a later isolate can tell a crashed run's leftovers (its cgroup)
//! from a live run's. The container's scratch space (the overlay's upper
//! and work dirs, the new root's mount point) is a tmpfs that the container
//! mounts on `ISOLATE_STATE/containers` inside its own mount namespace: it
//! never appears on the host and vanishes with the container.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use isolate_core::{paths, state};

use crate::error::ContainerError;

/// Where the markers live (and where each container mounts its scratch tmpfs).
///
/// As root: `ISOLATE_STATE/containers`. Rootless, without `ISOLATE_STATE`:
/// `$XDG_RUNTIME_DIR/isolate/containers`, else `/tmp/isolate-<uid>/containers`.
pub fn base() -> PathBuf {
    // SAFETY: geteuid has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && std::env::var_os("ISOLATE_STATE").is_none() {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join("isolate"))
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/isolate-{euid}")));
        return runtime.join("containers");
    }
    paths::state_dir().join("containers")
}

/// A run's marker, removed on drop.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

fn owner_line() -> String {
    let me = std::process::id();
    format!("{me} {}\n", state::process_start(me).unwrap_or(0))
}

/// Whether the isolate process recorded in marker `path` still runs.
pub fn owner_alive(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    if text.is_empty() {
        // Being written right now (create, then write): young means alive.
        return std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().map_or(true, |e| e.as_secs() < 10))
            .unwrap_or(false);
    }
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(pid), Some(start)) => state::process_start(pid as u32) == Some(start),
        _ => false,
    }
}

fn create_new(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

impl RunDir {
    /// Creates the marker of run `id`. A leftover of a dead isolate with the
    /// same id is replaced; a live one is [`isolate_core::Error::NameInUse`].
    pub fn create(id: &str) -> Result<RunDir, isolate_core::Error> {
        let base = base();
        let path = base.join(id);
        let mut made = create_new(&path);
        if matches!(&made, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            std::fs::create_dir_all(&base)
                .map_err(|e| ContainerError::host(format!("create {}", base.display()), e))?;
            made = create_new(&path);
        }
        if matches!(&made, Err(e) if e.kind() == io::ErrorKind::AlreadyExists) {
            if owner_alive(&path) {
                return Err(isolate_core::Error::NameInUse(id.to_string()));
            }
            remove(&path);
            made = create_new(&path);
        }
        let mut file =
            made.map_err(|e| ContainerError::host(format!("create {}", path.display()), e))?;
        let dir = RunDir { path };
        file.write_all(owner_line().as_bytes())
            .map_err(|e| ContainerError::host(format!("write {}", dir.path.display()), e))?;
        Ok(dir)
    }
}

impl RunDir {
    /// Leaves the marker in place (its owner's death later makes it stale).
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

/// Removes a marker (or a directory left by an older layout).
fn remove(path: &Path) {
    if std::fs::remove_file(path).is_err() {
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Ids of the markers whose owner is dead.
pub fn stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(base()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| !owner_alive(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Removes the marker of run `id`.
pub fn remove_marker(id: &str) {
    remove(&base().join(id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_of_this_process_is_alive_and_a_dead_pid_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        std::fs::write(&live, owner_line()).unwrap();
        assert!(owner_alive(&live));
        let dead = dir.path().join("dead");
        std::fs::write(&dead, format!("{} 1\n", u32::MAX)).unwrap();
        assert!(!owner_alive(&dead));
    }
}
