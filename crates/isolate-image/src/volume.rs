//! Named volumes: ext4 images under `ISOLATE_HOME/volumes`, created on
//! first use. Container mode loop-mounts them; VM mode attaches them as
//! virtio-blk disks. The same file serves both, so data written by one mode
//! is read by the other.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Command;

use isolate_core::{paths, Error, Result};

/// Size of a new named volume (sparse: it takes disk space only as it fills).
pub const DEFAULT_SIZE: u64 = 1 << 30;

/// The image file of the named volume `name` (it may not exist yet).
pub fn image_path(name: &str) -> PathBuf {
    paths::home().join("volumes").join(format!("{name}.ext4"))
}

/// Returns the image of volume `name`, creating an empty ext4 image first
/// if it does not exist.
pub fn ensure(name: &str) -> Result<PathBuf> {
    isolate_core::check_name("volume", name)?;
    let path = image_path(name);
    if path.is_file() {
        return Ok(path);
    }
    let dir = path.parent().expect("volume path has a parent");
    paths::private_dir(dir).map_err(|e| Error::io("cannot create volume directory", dir, e))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let made = (|| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io("cannot create volume image", &tmp, e))?;
        f.set_len(DEFAULT_SIZE)
            .map_err(|e| Error::io("cannot size volume image", &tmp, e))?;
        drop(f);
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "root_owner=0:0", "-L"])
            .arg(name.chars().take(16).collect::<String>())
            .arg(&tmp)
            .output()
            .map_err(|e| Error::io("cannot run mkfs.ext4 (install e2fsprogs) for", &tmp, e))?;
        if !out.status.success() {
            return Err(Error::Unsupported(format!(
                "mkfs.ext4 failed for volume {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io("cannot move volume image into place", &path, e))
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made.map(|()| path)
}
