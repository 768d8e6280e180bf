//! Turns a rootfs directory into what an isolate VM boots, cached by
//! content under `${ISOLATE_HOME}/images/`:
//!
//! - [`root_initramfs`]: the rootfs plus the guest init as `/init` (and an
//!   empty `/isolate/`, `/dev/console` and `/dev/null` when the rootfs lacks
//!   them), as one cpio newc archive: the initramfs is the root;
//! - [`block_image`]: a read-only erofs image (ext4 when `mkfs.erofs` is
//!   missing) for large roots, booted with [`init_only_initramfs`];
//! - [`spec_archive`]: the per-run archive holding `/isolate/spec.json`,
//!   appended by the VMM after the root archive (each archive ends with
//!   its trailer and is padded to 4 bytes, as the kernel requires of
//!   concatenated archives);
//! - [`choose`]: which of the two a rootfs should use
//!   ([`INITRAMFS_MAX_BYTES`]);
//! - [`volume`]: named volumes, ext4 images under
//!   `${ISOLATE_HOME}/volumes/` made with `mkfs.ext4` on first use, which
//!   both modes attach (container mode mounts them, VM mode gives them to
//!   the guest as disks).
//!
//! Cached images are named by a SHA-256 over the tree's metadata (paths,
//! types, modes, owners, sizes, mtimes, ctimes, link targets, device
//! numbers) and the init's identity (inode, size, mtime, ctime), so a second
//! call with an unchanged rootfs returns the same file without rebuilding it
//! or reading file contents (a hit on the default rootfs takes about 1 ms).
//! Any write to a file moves its ctime, which only the kernel can set, so
//! changed content is a miss. Images are written to a
//! temporary file and renamed into place. Nothing evicts old images: delete
//! `${ISOLATE_HOME}/images/` to reclaim the space.
//!
//! ```
//! use isolate_core::protocol::{GuestRoot, GuestSpec};
//! use isolate_image::{Cache, RootKind};
//!
//! let tmp = tempfile::tempdir()?;
//! let rootfs = tmp.path().join("rootfs");
//! std::fs::create_dir_all(rootfs.join("bin"))?;
//! std::fs::write(rootfs.join("bin/hello"), b"#!/bin/sh\necho hello\n")?;
//! let init = tmp.path().join("isolate-init");
//! std::fs::write(&init, b"\x7fELF...")?;
//!
//! // `isolate_image::root_initramfs(&rootfs, &init)` uses ${ISOLATE_HOME}/images;
//! // a `Cache` can live anywhere.
//! let cache = Cache::at(tmp.path().join("images"));
//! assert_eq!(isolate_image::choose(&rootfs)?, RootKind::Initramfs);
//! let root = cache.root_initramfs(&rootfs, &init)?;
//! assert_eq!(cache.root_initramfs(&rootfs, &init)?, root); // cache hit
//!
//! let spec = GuestSpec {
//!     argv: vec!["/bin/hello".into()],
//!     env: vec![("PATH".into(), "/bin".into())],
//!     cwd: "/".into(),
//!     uid: 0,
//!     gid: 0,
//!     hostname: "demo".into(),
//!     root: GuestRoot::Initramfs,
//!     read_only: false,
//!     volumes: vec![],
//!     memory_limit: Some(64 << 20),
//!     pids_limit: None,
//!     loopback: false,
//!     stdin: false,
//!     privileges: None,
//! };
//! // The initrd the guest gets: root archive, then the spec archive.
//! let mut initrd = std::fs::read(&root)?;
//! assert_eq!(initrd.len() % 4, 0);
//! initrd.extend(isolate_image::spec_archive(&spec));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cpio;
mod tree;
pub mod volume;

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use isolate_core::protocol::{GuestSpec, SPEC_PATH};
use sha2::{Digest, Sha256};

use crate::cpio::{CpioWriter, Meta};
use crate::tree::{Kind, Tree};

/// Roots with more regular-file content than this (64 MiB) boot from a
/// block image instead of an initramfs. An initramfs is unpacked into guest
/// RAM at every boot (its size counts against guest memory and its unpack
/// time grows with it, about 1 s per 100 MiB under emulation); a block image
/// is read on demand.
pub const INITRAMFS_MAX_BYTES: u64 = 64 << 20;

/// Bumped when the layout of generated images changes (invalidates caches).
const FORMAT_VERSION: &[u8] = b"isolate-image/2";

/// Errors of image building.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rootfs is not a directory.
    #[error("rootfs {0} is not a directory")]
    NotADirectory(PathBuf),
    /// A path in the rootfs is not valid UTF-8 (cpio names must be).
    #[error("{0}: file name is not valid UTF-8; rename it or leave it out of the rootfs")]
    NonUtf8Path(PathBuf),
    /// Reading an input failed.
    #[error("cannot read {path}")]
    Read {
        /// The input.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing into the image cache failed.
    #[error("cannot write {path} (is the image cache writable? set ISOLATE_HOME to move it)")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Archiving one input file failed (unreadable, too large for newc,
    /// or changed while being read).
    #[error("cannot add {path} to the initramfs")]
    Archive {
        /// The input file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Neither `mkfs.erofs` nor `mkfs.ext4` is installed.
    #[error("cannot build a block image of {0}: neither mkfs.erofs nor mkfs.ext4 found; install erofs-utils (or e2fsprogs)")]
    NoMkfs(PathBuf),
    /// The file-system builder failed.
    #[error("{tool} failed to build an image of {rootfs} ({status}): {stderr}")]
    Mkfs {
        /// The tool.
        tool: String,
        /// The rootfs.
        rootfs: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its error output.
        stderr: String,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// How a rootfs reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// The rootfs and the init as one initramfs ([`root_initramfs`]).
    Initramfs,
    /// A block image ([`block_image`]) plus an init-only initramfs
    /// ([`init_only_initramfs`]).
    Block,
}

/// A read-only block image of a rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockImage {
    /// The image file.
    pub path: PathBuf,
    /// Its file system as the guest's `mount` names it: `erofs` or `ext4`
    /// (the value of `GuestRoot::Block::fstype`).
    pub fstype: &'static str,
}

/// `${ISOLATE_HOME}/images`: where images are cached by default.
pub fn images_dir() -> PathBuf {
    isolate_core::paths::home().join("images")
}

/// Picks initramfs or block image for `rootfs_dir` by its content size
/// (see [`INITRAMFS_MAX_BYTES`]).
pub fn choose(rootfs_dir: &Path) -> Result<RootKind> {
    let tree = Tree::walk(rootfs_dir)?;
    Ok(if tree.content_bytes() > INITRAMFS_MAX_BYTES {
        RootKind::Block
    } else {
        RootKind::Initramfs
    })
}

/// [`Cache::root_initramfs`] in [`images_dir`].
pub fn root_initramfs(rootfs_dir: &Path, init_binary: &Path) -> Result<PathBuf> {
    Cache::default_location().root_initramfs(rootfs_dir, init_binary)
}

/// [`Cache::init_only_initramfs`] in [`images_dir`].
pub fn init_only_initramfs(init_binary: &Path) -> Result<PathBuf> {
    Cache::default_location().init_only_initramfs(init_binary)
}

/// [`Cache::block_image`] in [`images_dir`].
pub fn block_image(rootfs_dir: &Path) -> Result<BlockImage> {
    Cache::default_location().block_image(rootfs_dir)
}

/// The per-run spec archive: a cpio newc archive holding `/isolate/` and
/// `/isolate/spec.json` (mode 0400), ending with its trailer, its length a
/// multiple of 4. Append it to a root archive to form the initrd.
pub fn spec_archive(spec: &GuestSpec) -> Vec<u8> {
    let json = serde_json::to_vec(spec).expect("GuestSpec serializes to JSON");
    let mut w = CpioWriter::new(Vec::with_capacity(json.len() + 512));
    let (dir, _) = SPEC_PATH
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("isolate", ""));
    // Writing into a Vec cannot fail.
    w.dir(dir, Meta::root(0o755)).expect("write to Vec");
    w.file_bytes(SPEC_PATH, Meta::root(0o400), &json)
        .expect("write to Vec");
    w.finish().expect("write to Vec")
}

/// A directory of cached images.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache in [`images_dir`].
    pub fn default_location() -> Self {
        Cache { dir: images_dir() }
    }

    /// A cache in `dir` (created on first write).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root archive of `rootfs_dir` with `init_binary` as `/init`
    /// (mode 0755, replacing any `/init` of the rootfs) and an `/isolate/`
    /// directory. Built once per distinct (tree, init) pair.
    pub fn root_initramfs(&self, rootfs_dir: &Path, init_binary: &Path) -> Result<PathBuf> {
        let tree = Tree::walk(rootfs_dir)?;
        let mut h = Sha256::new();
        h.update(FORMAT_VERSION);
        h.update(b"root");
        tree.hash_into(&mut h);
        hash_file_into(init_binary, &mut h)?;
        let path = self.dir.join(format!("root-{}.cpio", hex16(h)));
        if path.is_file() {
            return Ok(path);
        }
        self.write_atomic(&path, |w| {
            for e in &tree.entries {
                if e.rel != "init" {
                    add_entry(w, e)?;
                }
            }
            let has = |rel: &str| tree.entries.iter().any(|e| e.rel == rel);
            add_boot_entries(w, &has).map_err(|source| archive_err(&path, source))?;
            add_init(w, init_binary)
        })?;
        Ok(path)
    }

    /// An archive holding only `/init` (and `/isolate/`): the initrd of a
    /// block-image root.
    pub fn init_only_initramfs(&self, init_binary: &Path) -> Result<PathBuf> {
        let mut h = Sha256::new();
        h.update(FORMAT_VERSION);
        h.update(b"init-only");
        hash_file_into(init_binary, &mut h)?;
        let path = self.dir.join(format!("init-{}.cpio", hex16(h)));
        if path.is_file() {
            return Ok(path);
        }
        self.write_atomic(&path, |w| {
            add_boot_entries(w, &|_| false).map_err(|source| archive_err(&path, source))?;
            add_init(w, init_binary)
        })?;
        Ok(path)
    }

    /// A read-only image of `rootfs_dir`: erofs through `mkfs.erofs`
    /// (erofs-utils), or ext4 through `mkfs.ext4 -d` when erofs-utils is
    /// not installed. Built once per distinct tree.
    pub fn block_image(&self, rootfs_dir: &Path) -> Result<BlockImage> {
        let tool = find_tool("mkfs.erofs")
            .map(|t| (t, "erofs"))
            .or_else(|| find_tool("mkfs.ext4").map(|t| (t, "ext4")));
        self.block_image_with(rootfs_dir, tool)
    }

    /// [`Cache::block_image`] with the builder chosen by the caller.
    fn block_image_with(
        &self,
        rootfs_dir: &Path,
        tool: Option<(PathBuf, &'static str)>,
    ) -> Result<BlockImage> {
        let tree = Tree::walk(rootfs_dir)?;
        let mut h = Sha256::new();
        h.update(FORMAT_VERSION);
        h.update(b"block");
        tree.hash_into(&mut h);
        let stem = format!("block-{}", hex16(h));
        for fstype in ["erofs", "ext4"] {
            let p = self.dir.join(format!("{stem}.{fstype}"));
            if p.is_file() {
                return Ok(BlockImage { path: p, fstype });
            }
        }
        let Some((tool, fstype)) = tool else {
            return Err(Error::NoMkfs(rootfs_dir.to_path_buf()));
        };
        let path = self.dir.join(format!("{stem}.{fstype}"));
        let tmp = TempFile::new(&self.dir, &path)?;
        let mut cmd = Command::new(&tool);
        if fstype == "erofs" {
            cmd.args(["--quiet", "-T0"]).arg(&tmp.path).arg(rootfs_dir);
        } else {
            // Content plus a quarter for metadata and a floor for tiny roots.
            let bytes = tree.content_bytes() + tree.content_bytes() / 4 + (16 << 20);
            let inodes = tree.entries.len() as u64 + 1024;
            cmd.args(["-q", "-F", "-O", "^has_journal", "-E", "root_owner=0:0"])
                .arg("-N")
                .arg(inodes.to_string())
                .arg("-d")
                .arg(rootfs_dir)
                .arg(&tmp.path)
                .arg(format!("{}k", bytes.div_ceil(1024)));
        }
        let out = cmd.output().map_err(|source| Error::Read {
            path: tool.clone(),
            source,
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(Error::Mkfs {
                tool: tool.display().to_string(),
                rootfs: rootfs_dir.to_path_buf(),
                status: out.status,
                stderr: tail,
            });
        }
        tmp.commit()?;
        Ok(BlockImage { path, fstype })
    }

    /// Writes `path` through a temporary file in the cache directory and
    /// renames it into place; the temporary file is removed on failure.
    fn write_atomic(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut CpioWriter<BufWriter<File>>) -> Result<()>,
    ) -> Result<()> {
        let tmp = TempFile::new(&self.dir, path)?;
        let file = File::create(&tmp.path).map_err(|source| Error::Write {
            path: tmp.path.clone(),
            source,
        })?;
        let mut w = CpioWriter::new(BufWriter::with_capacity(1 << 20, file));
        fill(&mut w)?;
        let write_err = |source| Error::Write {
            path: tmp.path.clone(),
            source,
        };
        let buf = w.finish().map_err(write_err)?;
        let file = buf.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        drop(file);
        tmp.commit()
    }
}

/// A temporary file next to its final name; removed on drop unless
/// committed (renamed into place).
struct TempFile {
    path: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl TempFile {
    fn new(dir: &Path, dest: &Path) -> Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        fs::create_dir_all(dir).map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let path = dir.join(format!(
            ".tmp-{}-{}-{name}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        Ok(TempFile {
            path,
            dest: dest.to_path_buf(),
            done: false,
        })
    }

    fn commit(mut self) -> Result<()> {
        fs::rename(&self.path, &self.dest).map_err(|source| Error::Write {
            path: self.dest.clone(),
            source,
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn archive_err(path: &Path, source: std::io::Error) -> Error {
    Error::Archive {
        path: path.to_path_buf(),
        source,
    }
}

fn add_entry(w: &mut CpioWriter<BufWriter<File>>, e: &tree::Entry) -> Result<()> {
    let meta = Meta {
        perm: e.perm,
        uid: e.uid,
        gid: e.gid,
    };
    let r = match &e.kind {
        Kind::Dir => w.dir(&e.rel, meta),
        Kind::Symlink(t) => w.symlink(&e.rel, meta, t),
        Kind::Device {
            block,
            major,
            minor,
        } => w.device(&e.rel, meta, *block, *major, *minor),
        Kind::File(size) => {
            // The rootfs is untrusted: a file swapped for a symlink since
            // the walk must not pull a host file into the guest's image.
            let read_err = |source| Error::Read {
                path: e.path.clone(),
                source,
            };
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&e.path)
                .map_err(read_err)?;
            if !f.metadata().map_err(read_err)?.is_file() {
                return Err(read_err(std::io::Error::other(
                    "changed into something other than a regular file while the image was built",
                )));
            }
            w.file(&e.rel, meta, *size, &mut f)
        }
    };
    r.map_err(|source| archive_err(&e.path, source))
}

/// What the kernel and the init need before anything is mounted, added
/// unless the tree has it: `/dev/console` (the kernel opens it as the init's
/// stdio; without it the init starts with fds 0-2 closed), `/dev/null`, and
/// the `/isolate/` directory the spec archive unpacks into.
fn add_boot_entries<W: Write>(
    w: &mut CpioWriter<W>,
    has: &dyn Fn(&str) -> bool,
) -> std::io::Result<()> {
    if !has("dev") {
        w.dir("dev", Meta::root(0o755))?;
    }
    if !has("dev/console") {
        w.device("dev/console", Meta::root(0o600), false, 5, 1)?;
    }
    if !has("dev/null") {
        w.device("dev/null", Meta::root(0o666), false, 1, 3)?;
    }
    if !has("isolate") {
        w.dir("isolate", Meta::root(0o755))?;
    }
    Ok(())
}

fn add_init(w: &mut CpioWriter<BufWriter<File>>, init_binary: &Path) -> Result<()> {
    let read_err = |source| Error::Read {
        path: init_binary.to_path_buf(),
        source,
    };
    let mut f = File::open(init_binary).map_err(read_err)?;
    let size = f.metadata().map_err(read_err)?.len();
    w.file("init", Meta::root(0o755), size, &mut f)
        .map_err(|source| archive_err(init_binary, source))
}

/// Feeds a file's identity into `h`: device, inode, size, mtime and ctime
/// (ctime moves on every write, an install by rename gives a new inode),
/// so a cache hit does not read the file.
fn hash_file_into(path: &Path, h: &mut Sha256) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = fs::metadata(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    for v in [md.dev(), md.ino(), md.size()] {
        h.update(v.to_le_bytes());
    }
    for v in [md.mtime(), md.mtime_nsec(), md.ctime(), md.ctime_nsec()] {
        h.update(v.to_le_bytes());
    }
    Ok(())
}

fn hex16(h: Sha256) -> String {
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests;
