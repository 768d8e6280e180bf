//! Per-run directories: `ISOLATE_STATE/containers/<id>/` holds the overlay's
//! `upper` and `work` dirs and the `root` mount point, plus an `owner` file
//! (pid and start time of the isolate process) so that a later isolate can
//! tell a crashed run's leftovers from a live run's.

use std::io;
use std::path::{Path, PathBuf};

use isolate_core::{paths, state};

use crate::error::ContainerError;

/// Where the per-run directories live.
pub fn base() -> PathBuf {
    paths::state_dir().join("containers")
}

/// A per-run directory, removed on drop.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

fn owner_line() -> String {
    let me = std::process::id();
    format!("{me} {}\n", state::process_start(me).unwrap_or(0))
}

/// Whether the isolate process recorded in `dir/owner` still runs.
pub fn owner_alive(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("owner")) else {
        // A dir being created right now has no owner file yet: only a dir
        // whose owner file is missing and is older than a minute is stale.
        return std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().map_or(true, |e| e.as_secs() < 60))
            .unwrap_or(false);
    };
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(pid), Some(start)) => state::process_start(pid as u32) == Some(start),
        _ => false,
    }
}

impl RunDir {
    /// Creates `base()/<id>` with `root`, and `upper` and `work` when
    /// `overlay`. A leftover of a dead isolate with the same id is removed;
    /// a live one is [`isolate_core::Error::NameInUse`].
    pub fn create(id: &str, overlay: bool) -> Result<RunDir, isolate_core::Error> {
        let base = base();
        let path = base.join(id);
        let mut made = std::fs::create_dir(&path);
        if matches!(&made, Err(e) if e.kind() == io::ErrorKind::NotFound) {
            std::fs::create_dir_all(&base)
                .map_err(|e| ContainerError::host(format!("create {}", base.display()), e))?;
            made = std::fs::create_dir(&path);
        }
        if matches!(&made, Err(e) if e.kind() == io::ErrorKind::AlreadyExists) {
            if owner_alive(&path) {
                return Err(isolate_core::Error::NameInUse(id.to_string()));
            }
            let _ = std::fs::remove_dir_all(&path);
            made = std::fs::create_dir(&path);
        }
        made.map_err(|e| ContainerError::host(format!("create {}", path.display()), e))?;
        let dir = RunDir { path };
        let write = |name: &str| -> Result<(), ContainerError> {
            let p = dir.path.join(name);
            std::fs::create_dir(&p)
                .map_err(|e| ContainerError::host(format!("create {}", p.display()), e))
        };
        write("root")?;
        if overlay {
            write("upper")?;
            write("work")?;
        }
        let owner = dir.path.join("owner");
        std::fs::write(&owner, owner_line())
            .map_err(|e| ContainerError::host(format!("write {}", owner.display()), e))?;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

/// Removes a run dir; a root still mounted (its namespace is still dying)
/// is detached first.
pub fn remove(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() {
        return;
    }
    if let Ok(root) =
        std::ffi::CString::new(path.join("root").into_os_string().into_encoded_bytes())
    {
        let _ = crate::sys::umount2(&root, libc::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(path);
}

/// Removes the run dirs whose owner is dead; returns their ids.
pub fn remove_stale() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(base()) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if !owner_alive(&p) {
            remove(&p);
            removed.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    removed
}

/// Ids of the runs in progress (live owners).
pub fn live_ids() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(base()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| owner_alive(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
