//! The initrd writer (`isolate_image::cpio`): fuzzer-chosen entries
//! (names, owners, modes, contents, links, devices) make an archive that
//! must read back entry for entry, 4-byte aligned, with every name the
//! writer refuses refused without writing anything.

#![no_main]

use isolate_image::cpio::{self, read, CpioWriter, Meta};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Kind {
    Dir,
    File(Vec<u8>),
    /// A file declared `declared` bytes long, whose reader holds `data`.
    WrongSize {
        data: Vec<u8>,
        declared: u16,
    },
    Symlink(Vec<u8>),
    Device {
        block: bool,
        major: u32,
        minor: u32,
    },
}

#[derive(Arbitrary, Debug)]
struct Entry {
    name: String,
    perm: u32,
    uid: u32,
    gid: u32,
    kind: Kind,
}

/// Whether the writer must accept `name` as an entry name.
fn valid_name(name: &str) -> bool {
    let name = name.trim_start_matches('/');
    !name.is_empty() && !name.contains('\0') && name != "TRAILER!!!"
}

fuzz_target!(|entries: Vec<Entry>| {
    let mut w = CpioWriter::new(Vec::new());
    let mut want = Vec::new();
    for e in &entries {
        let meta = Meta {
            perm: e.perm,
            uid: e.uid,
            gid: e.gid,
        };
        let (result, mode, data, rdev) = match &e.kind {
            Kind::Dir => (w.dir(&e.name, meta), cpio::S_IFDIR, Vec::new(), (0, 0)),
            Kind::File(data) => (
                w.file_bytes(&e.name, meta, data),
                cpio::S_IFREG,
                data.clone(),
                (0, 0),
            ),
            Kind::WrongSize { data, declared } => {
                let declared = u64::from(*declared);
                let r = w.file(&e.name, meta, declared, &mut &data[..]);
                if declared != data.len() as u64 && valid_name(&e.name) {
                    // A size mismatch is an error, after which the caller
                    // throws the archive away.
                    assert!(r.is_err());
                    return;
                }
                (r, cpio::S_IFREG, data.clone(), (0, 0))
            }
            Kind::Symlink(target) => (
                w.symlink(&e.name, meta, target),
                cpio::S_IFLNK,
                target.clone(),
                (0, 0),
            ),
            Kind::Device {
                block,
                major,
                minor,
            } => (
                w.device(&e.name, meta, *block, *major, *minor),
                if *block { cpio::S_IFBLK } else { cpio::S_IFCHR },
                Vec::new(),
                (*major, *minor),
            ),
        };
        let name = e.name.trim_start_matches('/');
        if !valid_name(&e.name) {
            assert!(result.is_err(), "name {:?} accepted", e.name);
            continue;
        }
        if result.is_err() {
            // A refused entry writes nothing.
            continue;
        }
        let perm = if mode == cpio::S_IFLNK {
            0o777
        } else {
            e.perm & 0o7777
        };
        want.push(read::Entry {
            name: name.to_string(),
            mode: mode | perm,
            uid: e.uid,
            gid: e.gid,
            mtime: 0,
            rdev,
            data,
        });
    }
    let archive = w.finish().unwrap();
    assert_eq!(archive.len() % 4, 0);
    assert_eq!(read::parse(&archive), want);
});
