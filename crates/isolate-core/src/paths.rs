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
