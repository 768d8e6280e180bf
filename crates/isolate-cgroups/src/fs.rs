//! Reading and writing cgroup files, with the path in every error.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) use isolate_core::parse::keyed;

use crate::error::CgroupError;

/// Reads a whole cgroup file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|e| CgroupError::read(path, e))
}

/// Reads a file if it exists: `Ok(None)` when it does not.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CgroupError::read(path, e)),
    }
}

/// Parses a single unsigned number (surrounding white space allowed).
pub(crate) fn parse_u64(path: &Path, s: &str) -> Result<u64, CgroupError> {
    s.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_owned(),
        content: s.to_owned(),
    })
}

/// Reads a file holding one number.
pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    parse_u64(path, &read(path)?)
}

/// Reads a file holding one number, if the file exists.
pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_opt(path)?.map(|s| parse_u64(path, &s)).transpose()
}

/// Reads a v2-style limit: a number, or `max` (unlimited: `None`).
/// `Ok(None)` as well when the file does not exist.
pub(crate) fn read_max_opt(path: &Path) -> Result<Option<u64>, CgroupError> {
    match read_opt(path)? {
        Some(s) if s.trim() == "max" => Ok(None),
        Some(s) => parse_u64(path, &s).map(Some),
        None => Ok(None),
    }
}

/// Writes `value` to a cgroup file in one `write(2)`.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| CgroupError::write(path, value, e))
}

/// The processes listed in `dir/cgroup.procs` and in the same file of every
/// descendant cgroup. A directory that has vanished contributes nothing.
pub(crate) fn procs_recursive(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let mut pids = Vec::new();
    for d in subtree(dir)? {
        let file = d.join("cgroup.procs");
        if let Some(s) = read_opt(&file)? {
            for line in s.lines().filter(|l| !l.trim().is_empty()) {
                pids.push(parse_u64(&file, line)? as u32);
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// `dir` and every cgroup directory below it, children after their parents.
/// Empty if `dir` does not exist.
pub(crate) fn subtree(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(CgroupError::read(&d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| CgroupError::read(&d, e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(entry.path());
            }
        }
        out.push(d);
    }
    // The walk above is depth-first from the top, so parents come first.
    Ok(out)
}

/// Creates a directory; `Ok(false)` if it existed already.
pub(crate) fn mkdir(path: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(CgroupError::mkdir(path, e)),
    }
}

/// Removes `dir` and its descendant cgroups, deepest first; a directory
/// that is already gone is not an error.
pub(crate) fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    for d in subtree(dir)?.iter().rev() {
        match std::fs::remove_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CgroupError::rmdir(d, e)),
        }
    }
    Ok(())
}

/// Sends SIGKILL to `pid`; a process that is already gone is not an error.
pub(crate) fn sigkill(pid: u32) -> io::Result<()> {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    };
    if raw <= 0 {
        // kill(0 or negative) would signal process groups, never a cgroup member.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours; `raw`
    // is a positive pid read from cgroup.procs, so it names one process.
    let rc = unsafe { libc::kill(raw, libc::SIGKILL) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Sends SIGKILL to each of `pids`, the members of the cgroup at `rel_path`
/// (a process that is already gone is not an error).
pub(crate) fn sigkill_all(pids: Vec<u32>, rel_path: &str) -> Result<(), CgroupError> {
    for pid in pids {
        sigkill(pid).map_err(|source| CgroupError::Signal {
            pid,
            rel_path: rel_path.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// The cgroup of this process in the hierarchy holding `controller`
/// (`""` for cgroup v2), from `/proc/self/cgroup`
/// (`ID:CONTROLLERS:PATH` per line), as a path relative to that root.
pub(crate) fn own_cgroup(controller: &str) -> Result<Option<String>, CgroupError> {
    let file = Path::new("/proc/self/cgroup");
    Ok(find_cgroup(&read(file)?, controller))
}

fn find_cgroup(text: &str, controller: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        matches.then(|| path.trim_start_matches('/').to_owned())
    })
}

/// Polls `done` with a growing pause until it holds or `timeout` passes;
/// returns whether it held.
pub(crate) fn poll_until(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if done()? {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_cgroup_per_controller() {
        let text =
            "9:name=systemd:/\n4:memory:/process_api/65c9\n2:cpu,cpuacct:/a/b\n0::/user.slice\n";
        assert_eq!(
            find_cgroup(text, "memory").as_deref(),
            Some("process_api/65c9")
        );
        assert_eq!(find_cgroup(text, "cpuacct").as_deref(), Some("a/b"));
        assert_eq!(find_cgroup(text, "").as_deref(), Some("user.slice"));
        assert_eq!(find_cgroup(text, "pids"), None);
        assert_eq!(find_cgroup("0::/\n", "").as_deref(), Some(""));
    }

    #[test]
    fn max_means_unlimited() {
        let dir = std::env::temp_dir().join(format!("isolate-cgroups-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pids.max");
        std::fs::write(&f, "max\n").unwrap();
        assert_eq!(read_max_opt(&f).unwrap(), None);
        std::fs::write(&f, "64\n").unwrap();
        assert_eq!(read_max_opt(&f).unwrap(), Some(64));
        std::fs::write(&f, "lots\n").unwrap();
        assert!(matches!(read_max_opt(&f), Err(CgroupError::Parse { .. })));
        assert_eq!(read_max_opt(&dir.join("absent")).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn subtree_lists_parents_before_children() {
        let dir = std::env::temp_dir().join(format!("isolate-cgroups-tree-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let t = subtree(&dir).unwrap();
        assert_eq!(t[0], dir);
        let a = t.iter().position(|p| p.ends_with("a")).unwrap();
        let b = t.iter().position(|p| p.ends_with("a/b")).unwrap();
        assert!(a < b);
        rmdir_tree(&dir).unwrap();
        assert!(!dir.exists());
        rmdir_tree(&dir).unwrap();
    }
}
