//! Where isolate keeps things on the host, and how it finds the guest
//! kernel, the default rootfs and the guest init.
//!
//! Search order for each asset: the explicit path given by the caller, then
//! an environment variable (`ISOLATE_KERNEL`, `ISOLATE_ROOTFS`,
//! `ISOLATE_INIT`), then `ISOLATE_HOME` (default `/var/lib/isolate`, where
//! the README's set-up installs them), then (init only) `isolate-init`
//! next to the running executable.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `ISOLATE_HOME`: installed assets, images and named volumes.
pub fn home() -> PathBuf {
    env_path("ISOLATE_HOME").unwrap_or_else(|| PathBuf::from("/var/lib/isolate"))
}

/// `ISOLATE_STATE`: records of named running workloads.
pub fn state_dir() -> PathBuf {
    env_path("ISOLATE_STATE").unwrap_or_else(|| PathBuf::from("/run/isolate"))
}

/// Creates directory `dir` (and missing parents) for isolate's own state,
/// private to this user: mode 0700, owned by the effective user, not a
/// symlink. An existing directory of another owner, or a symlink in its
/// place, is refused (someone may have planted it, e.g. under `/tmp`); an
/// existing one of this user gets mode 0700.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)?;
        }
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(dir)?;
    let euid = crate::sys::euid();
    if !m.is_dir() || m.uid() != euid {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory owned by uid {euid} (a symlink, or another user's): \
                 remove it, or point ISOLATE_STATE/ISOLATE_HOME elsewhere",
                dir.display()
            ),
        ));
    }
    if m.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// `ISOLATE_CACHE`: build caches (guest kernel).
pub fn cache_dir() -> PathBuf {
    env_path("ISOLATE_CACHE").unwrap_or_else(|| PathBuf::from("/var/cache/isolate"))
}

fn find(
    what: &'static str,
    explicit: Option<&Path>,
    var: &str,
    installed: &[PathBuf],
    extra: Option<PathBuf>,
    want_dir: bool,
) -> Result<PathBuf> {
    let ok = |p: &Path| if want_dir { p.is_dir() } else { p.is_file() };
    if let Some(p) = explicit {
        return if ok(p) {
            Ok(p.to_path_buf())
        } else {
            Err(Error::AssetNotFound {
                what,
                hint: format!(
                    "{} does not exist or is not a {}",
                    p.display(),
                    if want_dir { "directory" } else { "file" }
                ),
            })
        };
    }
    if let Some(p) = env_path(var) {
        return if ok(&p) {
            Ok(p)
        } else {
            Err(Error::AssetNotFound {
                what,
                hint: format!("{var}={} does not exist", p.display()),
            })
        };
    }
    let mut tried: Vec<String> = Vec::new();
    for p in installed.iter().cloned().chain(extra) {
        if ok(&p) {
            return Ok(p);
        }
        tried.push(p.display().to_string());
    }
    Err(Error::AssetNotFound {
        what,
        hint: format!(
            "looked in {}; set {var} or run the set-up in the README (./install.sh)",
            tried.join(", ")
        ),
    })
}

/// The guest kernel: ELF `vmlinux` preferred, then `bzImage`.
pub fn kernel(explicit: Option<&Path>) -> Result<PathBuf> {
    let k = home().join("kernel");
    find(
        "guest kernel",
        explicit,
        "ISOLATE_KERNEL",
        &[k.join("vmlinux"), k.join("bzImage")],
        None,
        false,
    )
}

/// The root filesystem directory used when a workload names none.
pub fn rootfs(explicit: Option<&Path>) -> Result<PathBuf> {
    find(
        "default rootfs",
        explicit,
        "ISOLATE_ROOTFS",
        &[home().join("rootfs")],
        None,
        true,
    )
}

/// The static guest init binary.
pub fn init(explicit: Option<&Path>) -> Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("isolate-init")));
    find(
        "guest init",
        explicit,
        "ISOLATE_INIT",
        &[home().join("init/isolate-init")],
        beside,
        false,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn private_dir_is_0700_and_refuses_planted_links() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let made = t.path().join("a/state");
        private_dir(&made).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&made), 0o700);
        // An existing directory of this user is made private.
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        private_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
        // A symlink planted where the directory goes is refused, and what
        // it points to is left alone.
        let target = t.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = t.path().join("planted");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = private_dir(&link).unwrap_err();
        assert!(e.to_string().contains("not a directory owned by"), "{e}");
        assert_eq!(mode(&target), 0o755);
    }

    use super::*;

    #[test]
    fn explicit_path_wins_and_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("vmlinux");
        std::fs::write(&k, b"x").unwrap();
        assert_eq!(kernel(Some(&k)).unwrap(), k);
        let err = kernel(Some(&dir.path().join("nope"))).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert!(rootfs(Some(dir.path())).is_ok());
        assert!(rootfs(Some(&k)).is_err());
    }
}
