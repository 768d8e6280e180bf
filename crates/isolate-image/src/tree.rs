//! Walking a rootfs directory: its entries in archive order, their total
//! size, and a fingerprint of its metadata for the image cache.

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::Error;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file of this many bytes.
    File(u64),
    /// A symbolic link with this target.
    Symlink(Vec<u8>),
    /// A device node: block or character, major, minor.
    Device {
        /// Block device (else character).
        block: bool,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

/// One entry of the tree.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the tree's root, `/`-separated, never empty.
    pub rel: String,
    /// Absolute path on the host.
    pub path: PathBuf,
    /// Type and type-specific data.
    pub kind: Kind,
    /// Permission bits.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The entries of a directory tree in pre-order, children sorted by name.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The entries (the root itself is not one).
    pub entries: Vec<Entry>,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Read {
        path: path.to_path_buf(),
        source,
    }
}

impl Tree {
    /// Walks `root` without following symbolic links. FIFOs and sockets are
    /// left out (an initramfs cannot usefully carry them).
    pub fn walk(root: &Path) -> Result<Tree, Error> {
        let md = fs::metadata(root).map_err(|e| io_err(root, e))?;
        if !md.is_dir() {
            return Err(Error::NotADirectory(root.to_path_buf()));
        }
        let mut entries = Vec::new();
        walk_dir(root, "", &mut entries)?;
        Ok(Tree { entries })
    }

    /// Sum of the sizes of the regular files, bytes.
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                Kind::File(n) => n,
                _ => 0,
            })
            .sum()
    }

    /// Feeds the tree's metadata (paths, types, modes, owners, sizes,
    /// mtimes and ctimes, link targets, device numbers) into `h`. File
    /// contents are not read: a content change shows as a new ctime.
    pub fn hash_into(&self, h: &mut Sha256) {
        h.update((self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            h.update((e.rel.len() as u64).to_le_bytes());
            h.update(e.rel.as_bytes());
            match &e.kind {
                Kind::Dir => h.update(b"d"),
                Kind::File(n) => {
                    h.update(b"f");
                    h.update(n.to_le_bytes());
                }
                Kind::Symlink(t) => {
                    h.update(b"l");
                    h.update((t.len() as u64).to_le_bytes());
                    h.update(t);
                }
                Kind::Device {
                    block,
                    major,
                    minor,
                } => {
                    h.update(if *block { b"b" } else { b"c" });
                    h.update(major.to_le_bytes());
                    h.update(minor.to_le_bytes());
                }
            }
            for v in [e.perm, e.uid, e.gid] {
                h.update(v.to_le_bytes());
            }
            for v in [e.mtime.0, e.mtime.1, e.ctime.0, e.ctime.1] {
                h.update(v.to_le_bytes());
            }
        }
    }
}

fn entry(path: PathBuf, rel: String, md: &Metadata) -> Result<Option<Entry>, Error> {
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File(md.len())
    } else if ft.is_symlink() {
        let t = fs::read_link(&path).map_err(|e| io_err(&path, e))?;
        Kind::Symlink(t.as_os_str().as_bytes().to_vec())
    } else if ft.is_block_device() || ft.is_char_device() {
        let rdev = md.rdev();
        Kind::Device {
            block: ft.is_block_device(),
            major: libc::major(rdev),
            minor: libc::minor(rdev),
        }
    } else {
        return Ok(None);
    };
    Ok(Some(Entry {
        rel,
        path,
        kind,
        perm: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: (md.mtime(), md.mtime_nsec()),
        ctime: (md.ctime(), md.ctime_nsec()),
    }))
}

fn walk_dir(dir: &Path, rel: &str, out: &mut Vec<Entry>) -> Result<(), Error> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .map(|r| r.map(|d| d.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| io_err(dir, e))?;
    children.sort();
    for name in children {
        let path = dir.join(&name);
        let Some(name) = utf8_name(&name) else {
            return Err(Error::NonUtf8Path(path));
        };
        let child_rel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let md = fs::symlink_metadata(&path).map_err(|e| io_err(&path, e))?;
        let is_dir = md.is_dir();
        if let Some(e) = entry(path.clone(), child_rel.clone(), &md)? {
            out.push(e);
        }
        if is_dir {
            walk_dir(&path, &child_rel, out)?;
        }
    }
    Ok(())
}

fn utf8_name(name: &OsStr) -> Option<&str> {
    name.to_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(t: &Tree) -> Vec<u8> {
        let mut h = Sha256::new();
        t.hash_into(&mut h);
        h.finalize().to_vec()
    }

    #[test]
    fn walk_is_preorder_sorted_and_skips_fifos() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("b/c")).unwrap();
        fs::write(d.path().join("b/c/f"), b"123").unwrap();
        fs::write(d.path().join("a"), b"1").unwrap();
        std::os::unix::fs::symlink("/x", d.path().join("l")).unwrap();
        nix_mkfifo(&d.path().join("p"));
        let t = Tree::walk(d.path()).unwrap();
        let rels: Vec<_> = t.entries.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(rels, ["a", "b", "b/c", "b/c/f", "l"]);
        assert_eq!(t.content_bytes(), 4);
        assert_eq!(t.entries[4].kind, Kind::Symlink(b"/x".to_vec()));
    }

    #[test]
    fn fingerprint_changes_when_a_file_changes() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), b"1").unwrap();
        let h1 = hash(&Tree::walk(d.path()).unwrap());
        assert_eq!(h1, hash(&Tree::walk(d.path()).unwrap()));
        // A different size: two writes within one clock tick can share a ctime.
        fs::write(d.path().join("a"), b"22").unwrap();
        assert_ne!(h1, hash(&Tree::walk(d.path()).unwrap()));
    }

    #[test]
    fn walking_a_file_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, b"").unwrap();
        let err = Tree::walk(&f).unwrap_err();
        assert!(err.to_string().contains(&*f.to_string_lossy()), "{err}");
    }

    fn nix_mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }
}
