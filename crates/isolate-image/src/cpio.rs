//! A writer for cpio "newc" archives (the format the Linux kernel unpacks
//! as an initramfs).
//!
//! Every entry is a 110-byte ASCII header, the NUL-terminated name padded
//! to 4 bytes, then the data padded to 4 bytes. [`CpioWriter::finish`]
//! writes the `TRAILER!!!` entry; the archive's total length is then a
//! multiple of 4, so archives can be concatenated as the kernel expects.
//! Modification times are always 0, so equal inputs give equal bytes.

use std::io::{self, Read, Write};

/// File type bits of `st_mode`.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;
/// Block device.
pub const S_IFBLK: u32 = 0o060000;

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

/// Owner and permission bits of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`0o7777` mask; the type bits are added by the writer).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Meta {
    /// Root-owned with these permission bits.
    pub fn root(perm: u32) -> Self {
        Meta {
            perm,
            uid: 0,
            gid: 0,
        }
    }
}

/// Streams a newc archive into `W`.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

struct Header<'a> {
    name: &'a str,
    mode: u32,
    meta: Meta,
    size: u32,
    rdev: (u32, u32),
}

impl<W: Write> CpioWriter<W> {
    /// A writer with nothing written yet.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            self.put(&[0u8; 4][..4 - rem])?;
        }
        Ok(())
    }

    /// Writes the header of an entry of the caller's. Its name must not be
    /// empty, hold a NUL, or be the trailer's: the kernel stops unpacking
    /// at the first `TRAILER!!!`, so such an entry would silently end the
    /// archive there.
    fn header(&mut self, h: Header<'_>) -> io::Result<()> {
        let name = h.name.trim_start_matches('/');
        if name.is_empty() || name.contains('\0') || name == TRAILER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid cpio entry name {:?}", h.name),
            ));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.write_header(name, ino, h)
    }

    /// Writes a header for `name` (already checked) with inode number `ino`.
    fn write_header(&mut self, name: &str, ino: u32, h: Header<'_>) -> io::Result<()> {
        let nlink = if h.mode & 0o170000 == S_IFDIR { 2 } else { 1 };
        let fields = [
            ino,
            h.mode,
            h.meta.uid,
            h.meta.gid,
            nlink,
            0, // mtime: fixed for reproducible archives
            h.size,
            0,
            0,
            h.rdev.0,
            h.rdev.1,
            name.len() as u32 + 1,
            0, // check: unused in newc
        ];
        let mut hdr = Vec::with_capacity(110 + name.len() + 4);
        hdr.extend_from_slice(MAGIC);
        for f in fields {
            hdr.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        hdr.extend_from_slice(name.as_bytes());
        hdr.push(0);
        self.put(&hdr)?;
        self.pad()
    }

    /// Adds a directory.
    pub fn dir(&mut self, name: &str, meta: Meta) -> io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFDIR | (meta.perm & 0o7777),
            meta,
            size: 0,
            rdev: (0, 0),
        })
    }

    /// Adds a regular file whose content is `bytes`.
    pub fn file_bytes(&mut self, name: &str, meta: Meta, bytes: &[u8]) -> io::Result<()> {
        self.file(name, meta, bytes.len() as u64, &mut &bytes[..])
    }

    /// Adds a regular file of exactly `size` bytes read from `data`.
    ///
    /// Fails if `size` does not fit newc's 32-bit size field (4 GiB) or if
    /// `data` ends early or holds more than `size` bytes.
    pub fn file(
        &mut self,
        name: &str,
        meta: Meta,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let size32 = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name} is {size} bytes; cpio newc holds at most 4 GiB per file"),
            )
        })?;
        self.header(Header {
            name,
            mode: S_IFREG | (meta.perm & 0o7777),
            meta,
            size: size32,
            rdev: (0, 0),
        })?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        self.written += copied;
        let mut probe = [0u8; 1];
        if copied != size || data.read(&mut probe)? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name} changed size while being archived (expected {size} bytes)"),
            ));
        }
        self.pad()
    }

    /// Adds a symbolic link pointing at `target`.
    pub fn symlink(&mut self, name: &str, meta: Meta, target: &[u8]) -> io::Result<()> {
        self.header(Header {
            name,
            mode: S_IFLNK | 0o777,
            meta,
            size: target.len() as u32,
            rdev: (0, 0),
        })?;
        self.put(target)?;
        self.pad()
    }

    /// Adds a character (`block == false`) or block device node.
    pub fn device(
        &mut self,
        name: &str,
        meta: Meta,
        block: bool,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let kind = if block { S_IFBLK } else { S_IFCHR };
        self.header(Header {
            name,
            mode: kind | (meta.perm & 0o7777),
            meta,
            size: 0,
            rdev: (major, minor),
        })
    }

    /// Writes the trailer (the archive is then 4-byte aligned) and returns
    /// the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_header(
            TRAILER,
            0,
            Header {
                name: TRAILER,
                mode: 0,
                meta: Meta::root(0),
                size: 0,
                rdev: (0, 0),
            },
        )?;
        debug_assert_eq!(self.written % 4, 0);
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A test-side reader of newc archives (handles concatenated archives).
/// It asserts on anything malformed: it checks what [`CpioWriter`] made,
/// it is not a parser for untrusted archives. Public with the `fuzzing`
/// feature, for the fuzz targets.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod read {
    /// One entry read back.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Entry {
        pub name: String,
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        pub mtime: u32,
        pub rdev: (u32, u32),
        pub data: Vec<u8>,
    }

    fn field(h: &[u8], i: usize) -> u32 {
        let s = std::str::from_utf8(&h[6 + 8 * i..6 + 8 * (i + 1)]).unwrap();
        u32::from_str_radix(s, 16).unwrap()
    }

    fn align4(n: usize) -> usize {
        (n + 3) & !3
    }

    /// Parses every entry of every concatenated archive in `buf`, in order,
    /// following the kernel's rules (zero padding between archives, each
    /// archive starting 4-byte aligned). Trailers are not returned.
    pub fn parse(buf: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            if buf[pos] == 0 {
                pos += 1;
                continue;
            }
            assert_eq!(pos % 4, 0, "archive starts unaligned at {pos}");
            let h = &buf[pos..pos + 110];
            assert_eq!(&h[..6], b"070701", "bad magic at {pos}");
            let namesize = field(h, 11) as usize;
            let size = field(h, 6) as usize;
            let name_start = pos + 110;
            let name = std::str::from_utf8(&buf[name_start..name_start + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(buf[name_start + namesize - 1], 0, "name not NUL-terminated");
            let data_start = align4(name_start + namesize);
            let data = buf[data_start..data_start + size].to_vec();
            pos = align4(data_start + size);
            if name == "TRAILER!!!" {
                continue;
            }
            out.push(Entry {
                name,
                mode: field(h, 1),
                uid: field(h, 2),
                gid: field(h, 3),
                mtime: field(h, 5),
                rdev: (field(h, 9), field(h, 10)),
                data,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::read::parse;
    use super::*;

    #[test]
    fn entries_read_back_with_type_mode_owner_and_data() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/etc", Meta::root(0o755)).unwrap();
        w.file_bytes(
            "etc/hostname",
            Meta {
                perm: 0o640,
                uid: 7,
                gid: 8,
            },
            b"isolate\n",
        )
        .unwrap();
        w.symlink("bin/sh", Meta::root(0o777), b"/bin/busybox")
            .unwrap();
        w.device("dev/null", Meta::root(0o666), false, 1, 3)
            .unwrap();
        let buf = w.finish().unwrap();
        assert_eq!(buf.len() % 4, 0);

        let e = parse(&buf);
        assert_eq!(e.len(), 4);
        assert_eq!((e[0].name.as_str(), e[0].mode), ("etc", S_IFDIR | 0o755));
        assert_eq!(e[1].name, "etc/hostname");
        assert_eq!(e[1].mode, S_IFREG | 0o640);
        assert_eq!((e[1].uid, e[1].gid, e[1].mtime), (7, 8, 0));
        assert_eq!(e[1].data, b"isolate\n");
        assert_eq!(e[2].mode, S_IFLNK | 0o777);
        assert_eq!(e[2].data, b"/bin/busybox");
        assert_eq!(e[3].mode, S_IFCHR | 0o666);
        assert_eq!(e[3].rdev, (1, 3));
    }

    #[test]
    fn concatenated_archives_parse_as_one_sequence() {
        let mut a = CpioWriter::new(Vec::new());
        a.file_bytes("a", Meta::root(0o644), b"x").unwrap();
        let mut buf = a.finish().unwrap();
        let mut b = CpioWriter::new(Vec::new());
        b.file_bytes("b", Meta::root(0o644), b"yz").unwrap();
        buf.extend(b.finish().unwrap());
        let names: Vec<_> = parse(&buf).into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn refuses_entries_named_like_the_trailer() {
        // Input kept from the cpio fuzz target (fuzz/, target `cpio`): a
        // symlink named "/TRAILER!!!" first, which made the kernel (and the
        // reader) stop at it and drop every later entry.
        let mut w = CpioWriter::new(Vec::new());
        for name in ["/TRAILER!!!", "TRAILER!!!"] {
            let err = w.symlink(name, Meta::root(0o777), b"x").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}");
        }
        w.dir("h", Meta::root(0o755)).unwrap();
        // A name that only contains the trailer's is fine.
        w.file_bytes("d/TRAILER!!!", Meta::root(0o644), b"")
            .unwrap();
        let names: Vec<_> = parse(&w.finish().unwrap())
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["h", "d/TRAILER!!!"]);
    }

    #[test]
    fn rejects_a_reader_shorter_than_the_declared_size() {
        let mut w = CpioWriter::new(Vec::new());
        let err = w
            .file("f", Meta::root(0o644), 10, &mut &b"short"[..])
            .unwrap_err();
        assert!(err.to_string().contains("changed size"), "{err}");
    }

    #[test]
    fn gnu_cpio_lists_the_archive_when_installed() {
        let Ok(out) = std::process::Command::new("cpio").arg("--version").output() else {
            eprintln!("SKIP gnu_cpio_lists_the_archive_when_installed: cpio(1) not installed");
            return;
        };
        assert!(out.status.success());
        let mut w = CpioWriter::new(Vec::new());
        w.dir("d", Meta::root(0o755)).unwrap();
        w.file_bytes("d/f", Meta::root(0o644), b"hello").unwrap();
        let buf = w.finish().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "d\nd/f\n");
    }
}
