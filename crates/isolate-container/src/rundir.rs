//! Run markers: `ISOLATE_STATE/containers/<id>` is a small file per run
//! slot that a running isolate holds locked (`flock`); its content says
//! whether the slot's last run ended cleanly (`0`) or is in progress (`1`).
//! The kernel drops the lock when the isolate process dies, however it
//! dies, so "unlocked but `1`" marks a crashed run whose cgroup
//! (`isolate/ct-<id>`) must be removed. Unnamed runs take the first free
//! `run-N` slot and leave its file for the next run, so they create and
//! delete no file on the host's disk (on a disk-backed `/run`, creating and
//! deleting a file costs more than a millisecond); a named run's marker
//! (its name) is deleted when it ends.
//!
//! The container's scratch space (the overlay's upper and work dirs, the
//! new root's mount point) is a tmpfs that the container mounts on
//! `ISOLATE_STATE/containers` inside its own mount namespace: it never
//! appears on the host and vanishes with the container.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use isolate_cgroups::Family;
use isolate_core::paths;

use crate::error::ContainerError;

/// The container backend's cgroups, `isolate/ct-<id>`: a run's marker
/// and its cgroup share the id, so stale clean-up finds the one from the
/// other.
pub const CGROUPS: Family = Family::new("ct-");

const IDLE: &[u8; 2] = b"0\n";
const BUSY: &[u8; 2] = b"1\n";

/// Where the markers live (and where each container mounts its scratch tmpfs).
///
/// As root: `ISOLATE_STATE/containers`. Rootless, without `ISOLATE_STATE`:
/// `$XDG_RUNTIME_DIR/isolate/containers`, else `/tmp/isolate-<uid>/containers`.
pub fn base() -> PathBuf {
    let euid = isolate_core::sys::euid();
    if euid != 0 && std::env::var_os("ISOLATE_STATE").is_none() {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join("isolate"))
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/isolate-{euid}")));
        return runtime.join("containers");
    }
    paths::state_dir().join("containers")
}

/// The marker of a run in progress: held locked until dropped, which
/// marks it idle again.
#[derive(Debug)]
pub struct RunDir {
    id: String,
    file: File,
    /// Left "in progress" on drop (see [`RunDir::keep`]).
    kept: bool,
    /// A named run's marker, deleted on drop (a slot's stays, idle).
    path: Option<PathBuf>,
}

/// Whether `id` is an unnamed run's slot (`run-N`), whose file is reused.
fn is_slot(id: &str) -> bool {
    id.strip_prefix("run-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `file` is still the file at `path` (not deleted and replaced
/// by a run that ended while this one waited to open it).
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

fn open_marker(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Takes the lock without waiting: `false` if a live run holds it.
fn try_lock(f: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor `f` owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Whether an unlocked marker says its last run did not end cleanly.
fn crashed(f: &File) -> bool {
    let mut b = [0u8; 2];
    matches!(f.read_at(&mut b, 0), Ok(n) if n > 0 && b[0] != IDLE[0])
}

/// Removes the cgroup a crashed run `id` left; `true` once it is gone.
fn remove_leftover_cgroup(id: &str) -> bool {
    if isolate_core::sys::rootless() {
        return true; // rootless runs have no cgroup
    }
    CGROUPS.remove_leftover(id).is_ok()
}

/// The marker of run `id` if it exists and says its run crashed, locked
/// (so that no run claims it while its leftovers go).
fn claim_crashed(base: &Path, id: &str) -> Option<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(base.join(id))
        .ok()?;
    (try_lock(&file).unwrap_or(false) && crashed(&file)).then_some(file)
}

/// Marks the crashed run `id`, whose leftovers are gone, as ended: a
/// slot's marker idle, a named run's marker deleted.
fn mark_clean(base: &Path, id: &str, file: &File) {
    let path = base.join(id);
    if is_slot(id) {
        let _ = file.write_at(IDLE, 0);
    } else if still_at(file, &path) {
        let _ = std::fs::remove_file(path);
    }
}

impl RunDir {
    /// Makes the markers' directory, private to this user (0700, not a
    /// planted symlink or another user's directory; checked at every run,
    /// since each run's scratch tmpfs is mounted below it).
    fn private_base() -> Result<PathBuf, ContainerError> {
        let base = base();
        if let Some(parent) = base.parent() {
            isolate_core::paths::private_dir(parent)
                .map_err(|e| ContainerError::host(format!("create {}", parent.display()), e))?;
        }
        isolate_core::paths::private_dir(&base)
            .map_err(|e| ContainerError::host(format!("create {}", base.display()), e))?;
        Ok(base)
    }

    fn claim(base: &Path, id: &str) -> Result<Option<RunDir>, ContainerError> {
        let path = base.join(id);
        let file = open_marker(&path)
            .map_err(|e| ContainerError::host(format!("open {}", path.display()), e))?;
        if !try_lock(&file)
            .map_err(|e| ContainerError::host(format!("lock {}", path.display()), e))?
        {
            return Ok(None);
        }
        if !still_at(&file, &path) {
            // Deleted by the run that held it: claim the new file instead.
            drop(file);
            return RunDir::claim(base, id);
        }
        if crashed(&file) && !remove_leftover_cgroup(id) {
            // Its processes are still dying: leave it for a later run.
            return Ok(None);
        }
        file.write_at(BUSY, 0)
            .map_err(|e| ContainerError::host(format!("write {}", path.display()), e))?;
        Ok(Some(RunDir {
            id: id.to_string(),
            file,
            kept: false,
            path: (!is_slot(id)).then_some(path),
        }))
    }

    /// Claims the marker of the named run `name`; a live run of that name
    /// is [`isolate_core::Error::NameInUse`].
    pub fn claim_named(name: &str) -> Result<RunDir, isolate_core::Error> {
        RunDir::claim(&RunDir::private_base()?, name)?
            .ok_or_else(|| isolate_core::Error::NameInUse(name.into()))
    }

    /// Claims the first free `run-N` slot.
    pub fn claim_slot() -> Result<RunDir, isolate_core::Error> {
        let base = RunDir::private_base()?;
        for n in 0.. {
            if let Some(r) = RunDir::claim(&base, &format!("run-{n}"))? {
                return Ok(r);
            }
        }
        unreachable!("some slot is free")
    }

    /// The run's id (the marker's name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Leaves the marker saying "in progress": once this process ends (and
    /// drops the lock), a later `cleanup_stale` or claim removes the cgroup
    /// that could not be removed now.
    pub fn keep(mut self) {
        // Closing the file drops the lock; the content stays "1".
        self.kept = true;
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        match &self.path {
            // Deleted while still locked: a claimant that opened it before
            // notices (`still_at`) and creates a new one.
            Some(path) => {
                let _ = std::fs::remove_file(path);
            }
            None => {
                let _ = self.file.write_at(IDLE, 0);
            }
        }
    }
}

/// Removes the cgroups of crashed runs (markers unlocked but in progress)
/// and marks them ended. Cheap when no run crashed: one directory listing
/// and a lock attempt per marker; otherwise their cgroups go through
/// [`Family::remove_stale`], each marker locked meanwhile.
pub fn cleanup_crashed() {
    let base = base();
    let Ok(entries) = std::fs::read_dir(&base) else {
        return;
    };
    let crashed: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|id| claim_crashed(&base, id).is_some())
        .collect();
    // Dropping each file above released its lock.
    if crashed.is_empty() {
        return;
    }
    let mut swept: Vec<String> = Vec::new();
    if !isolate_core::sys::rootless() {
        let _ = CGROUPS.remove_stale(
            |id| {
                let file = claim_crashed(&base, id)?;
                swept.push(id.to_owned());
                Some(file)
            },
            |id, file| mark_clean(&base, id, &file),
        );
    }
    // Crashed runs that left no cgroup (killed before making it, or
    // rootless). One whose cgroup the sweep could not remove yet (its
    // processes still dying) is left for a later run.
    for id in crashed.iter().filter(|id| !swept.contains(id)) {
        if let Some(file) = claim_crashed(&base, id) {
            if remove_leftover_cgroup(id) {
                mark_clean(&base, id, &file);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_slot_is_busy_and_a_dropped_one_idle() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunDir::claim(dir.path(), "run-0").unwrap().unwrap();
        assert!(RunDir::claim(dir.path(), "run-0").unwrap().is_none());
        assert_eq!(std::fs::read(dir.path().join("run-0")).unwrap(), BUSY);
        drop(a);
        assert_eq!(std::fs::read(dir.path().join("run-0")).unwrap(), IDLE);
        assert!(RunDir::claim(dir.path(), "run-0").unwrap().is_some());
    }

    #[test]
    fn a_named_marker_is_exclusive_and_deleted_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunDir::claim(dir.path(), "web").unwrap().unwrap();
        assert!(RunDir::claim(dir.path(), "web").unwrap().is_none());
        drop(a);
        assert!(!dir.path().join("web").exists());
        assert!(is_slot("run-12") && !is_slot("run-x") && !is_slot("web"));
    }

    #[test]
    fn a_kept_marker_reads_as_crashed_once_unlocked() {
        let dir = tempfile::tempdir().unwrap();
        RunDir::claim(dir.path(), "run-1").unwrap().unwrap().keep();
        let f = open_marker(&dir.path().join("run-1")).unwrap();
        assert!(try_lock(&f).unwrap());
        assert!(crashed(&f));
    }

    #[test]
    fn only_unlocked_crashed_markers_are_claimed_and_cleaning_ends_them() {
        let dir = tempfile::tempdir().unwrap();
        RunDir::claim(dir.path(), "run-2").unwrap().unwrap().keep();
        RunDir::claim(dir.path(), "job").unwrap().unwrap().keep();
        let held = RunDir::claim(dir.path(), "run-3").unwrap().unwrap();
        drop(RunDir::claim(dir.path(), "run-4").unwrap().unwrap());
        assert!(claim_crashed(dir.path(), "run-3").is_none(), "a live run");
        assert!(
            claim_crashed(dir.path(), "run-4").is_none(),
            "ended cleanly"
        );
        assert!(claim_crashed(dir.path(), "nothing").is_none(), "no marker");

        let slot = claim_crashed(dir.path(), "run-2").expect("crashed slot");
        mark_clean(dir.path(), "run-2", &slot);
        assert_eq!(std::fs::read(dir.path().join("run-2")).unwrap(), IDLE);
        let named = claim_crashed(dir.path(), "job").expect("crashed named run");
        mark_clean(dir.path(), "job", &named);
        assert!(!dir.path().join("job").exists());
        drop(held);
    }
}
