//! The guest kernel file: recognising it (ELF `vmlinux` or `bzImage`),
//! checking it is whole, and loading it into guest memory.
//!
//! [`probe_with`] reads only headers (fast, done by the library before the VMM
//! starts, so that a wrong file is one clear error); [`load`] copies the
//! kernel into guest memory with `linux-loader`.
//!
//! ## PVM-capable kernels
//!
//! On a PVM host (`/sys/module/kvm_pvm`) only a kernel built with
//! `CONFIG_PVM_GUEST` can boot. A kernel counts as PVM-capable when
//! `ISOLATE_PVM_KERNEL=1` is set (an explicit opt-in, the only way for a
//! compressed `bzImage`), or when it is an ELF `vmlinux` whose symbol table
//! names `pvm_early_setup`, the PVM guest's early entry hook.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Address, GuestAddress, GuestMemoryMmap};

use crate::layout::HIMEM_START;

/// Errors about the kernel file.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The file cannot be opened or read.
    #[error("cannot read guest kernel {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither an ELF `vmlinux` nor a `bzImage`.
    #[error("{} is not a Linux kernel for x86_64 (neither an ELF vmlinux nor a bzImage); give one with --kernel", .path.display())]
    NotAKernel {
        /// The file.
        path: PathBuf,
    },
    /// Shorter than its headers say.
    #[error("guest kernel {} is truncated: its headers need {needed} bytes, the file has {actual}; rebuild or copy it again", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes its headers promise.
        needed: u64,
        /// Bytes it has.
        actual: u64,
    },
    /// A bzImage too old for the 64-bit boot protocol.
    #[error("{} is a bzImage without a 64-bit entry point (boot protocol 2.12+ with XLF_KERNEL_64 is needed)", .path.display())]
    No64BitEntry {
        /// The file.
        path: PathBuf,
    },
    /// `linux-loader` refused it.
    #[error("cannot load guest kernel {}", .path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: linux_loader::loader::Error,
    },
}

/// The two kernel formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An uncompressed ELF `vmlinux` (booted through its PVH note if it has one).
    Elf,
    /// A compressed `bzImage` (64-bit Linux boot protocol).
    BzImage,
}

/// What [`probe_with`] learnt from the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// The format.
    pub format: Format,
    /// Highest guest-physical address the kernel occupies while it starts
    /// (ELF: end of its last segment; bzImage: load address + `init_size`).
    pub footprint_end: u64,
    /// Whether it can boot on a PVM host (see the module docs).
    pub pvm_capable: bool,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// The PVM guest's symbol, NUL-delimited as in a string table. Assembled at
/// run time so that this program's own binary does not contain it.
fn pvm_symbol() -> Vec<u8> {
    [b"\0pvm_early".as_slice(), b"_setup\0"].concat()
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}
fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        b[at..at + 4].try_into().expect("4 bytes"),
    ))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the kernel's headers: which format, whether the file is whole,
/// how much memory it occupies, whether it is PVM-capable (an ELF's symbols
/// are searched for the PVM hook only if `scan_for_pvm`; the host decides,
/// see `host::probe_kernel`).
pub fn probe_with(path: &Path, scan_for_pvm: bool) -> Result<KernelInfo, KernelError> {
    let mut file = File::open(path).map_err(read_err(path))?;
    probe_file(&mut file, path, scan_for_pvm)
}

/// [`probe_with`] on an open kernel file (`path` names it in errors).
pub fn probe_file(
    file: &mut File,
    path: &Path,
    scan_for_pvm: bool,
) -> Result<KernelInfo, KernelError> {
    file.seek(SeekFrom::Start(0)).map_err(read_err(path))?;
    let actual = file.metadata().map_err(read_err(path))?.len();
    let mut head = vec![0u8; 0x1000.min(actual as usize)];
    file.read_exact(&mut head).map_err(read_err(path))?;
    let not_a_kernel = || KernelError::NotAKernel {
        path: path.to_path_buf(),
    };
    let truncated = |needed: u64| KernelError::Truncated {
        path: path.to_path_buf(),
        needed,
        actual,
    };
    let opt_in = std::env::var("ISOLATE_PVM_KERNEL").is_ok_and(|v| v == "1");

    if head.len() >= 64 && head[..4] == ELF_MAGIC[..] {
        // ELFCLASS64, little endian, EM_X86_64.
        if head[4] != 2 || head[5] != 1 || le16(&head, 18) != 62 {
            return Err(not_a_kernel());
        }
        let phoff = le64(&head, 32);
        let phentsize = le16(&head, 54);
        let phnum = le16(&head, 56);
        if phentsize < 56 || phnum == 0 {
            return Err(not_a_kernel());
        }
        let table_len = phentsize * phnum;
        if phoff + table_len > actual {
            return Err(truncated(phoff + table_len));
        }
        let mut table = vec![0u8; table_len as usize];
        file.seek(SeekFrom::Start(phoff)).map_err(read_err(path))?;
        file.read_exact(&mut table).map_err(read_err(path))?;
        let mut needed = 0u64;
        let mut footprint_end = 0u64;
        for ph in table.chunks_exact(phentsize as usize) {
            const PT_LOAD: u64 = 1;
            if le32(ph, 0) != PT_LOAD {
                continue;
            }
            let (offset, paddr, filesz, memsz) =
                (le64(ph, 8), le64(ph, 24), le64(ph, 32), le64(ph, 40));
            needed = needed.max(offset.saturating_add(filesz));
            footprint_end = footprint_end.max(paddr.saturating_add(memsz));
        }
        if footprint_end == 0 {
            return Err(not_a_kernel());
        }
        if needed > actual {
            return Err(truncated(needed));
        }
        let pvm_capable = opt_in
            || (scan_for_pvm && file_contains(file, &pvm_symbol()).map_err(read_err(path))?);
        return Ok(KernelInfo {
            format: Format::Elf,
            footprint_end,
            pvm_capable,
        });
    }

    // bzImage: "HdrS" at 0x202 (boot protocol, Documentation/x86/boot.rst).
    if head.len() >= 0x270 && &head[0x202..0x206] == b"HdrS" {
        let setup_sects = match head[0x1f1] {
            0 => 4,
            n => u64::from(n),
        };
        let syssize = le32(&head, 0x1f4);
        let version = le16(&head, 0x206);
        let xloadflags = le16(&head, 0x236);
        let init_size = le32(&head, 0x260);
        let needed = (setup_sects + 1) * 512 + syssize * 16;
        if needed > actual {
            return Err(truncated(needed));
        }
        if version < 0x020c || xloadflags & 1 == 0 {
            return Err(KernelError::No64BitEntry {
                path: path.to_path_buf(),
            });
        }
        return Ok(KernelInfo {
            format: Format::BzImage,
            footprint_end: HIMEM_START + init_size,
            pvm_capable: opt_in,
        });
    }
    Err(not_a_kernel())
}

/// Whether `needle` occurs in the file (read in chunks, overlapping by the
/// needle's length).
fn file_contains(file: &mut File, needle: &[u8]) -> std::io::Result<bool> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut keep = 0usize;
    loop {
        let n = file.read(&mut buf[keep..])?;
        if n == 0 {
            return Ok(false);
        }
        let filled = keep + n;
        if buf[..filled].windows(needle.len()).any(|w| w == needle) {
            return Ok(true);
        }
        keep = (needle.len() - 1).min(filled);
        buf.copy_within(filled - keep..filled, 0);
    }
}

/// How the vCPU enters the loaded kernel.
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    /// 64-bit Linux boot protocol: long mode, `rsi` = `boot_params`.
    Linux64 {
        /// Entry address.
        addr: GuestAddress,
        /// The bzImage's setup header to copy into `boot_params` (None for an ELF).
        header: Option<setup_header>,
    },
    /// PVH: 32-bit protected mode, paging off, `rbx` = `hvm_start_info`.
    Pvh(GuestAddress),
}

/// A kernel in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// How to enter it.
    pub entry: Entry,
    /// First byte after the kernel image.
    pub end: u64,
}

/// Loads the kernel at `path` into `mem`.
pub fn load(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, KernelError> {
    let mut file = File::open(path).map_err(read_err(path))?;
    load_file(mem, &mut file, path)
}

/// [`load`] from an open kernel file (the VMM opens it before its jail;
/// `path` names it in errors).
pub fn load_file(
    mem: &GuestMemoryMmap,
    file: &mut File,
    path: &Path,
) -> Result<LoadedKernel, KernelError> {
    let info = probe_file(file, path, false)?;
    file.seek(SeekFrom::Start(0)).map_err(read_err(path))?;
    let load_err = |source| KernelError::Load {
        path: path.to_path_buf(),
        source,
    };
    let himem = Some(GuestAddress(HIMEM_START));
    match info.format {
        Format::Elf => {
            let r = Elf::load(mem, None, file, himem).map_err(load_err)?;
            let entry = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => Entry::Pvh(addr),
                _ => Entry::Linux64 {
                    addr: r.kernel_load,
                    header: None,
                },
            };
            Ok(LoadedKernel {
                entry,
                end: r.kernel_end,
            })
        }
        Format::BzImage => {
            let r = BzImage::load(mem, None, file, himem).map_err(load_err)?;
            Ok(LoadedKernel {
                // The 64-bit entry is 0x200 past the protected-mode code start.
                entry: Entry::Linux64 {
                    addr: r.kernel_load.unchecked_add(0x200),
                    header: r.setup_header,
                },
                end: info.footprint_end.max(r.kernel_end),
            })
        }
    }
}

#[cfg(test)]
/// Tests: a minimal ELF64 x86_64 header with one PT_LOAD of `filesz` bytes at offset 0x1000.
pub(crate) fn tiny_elf(filesz: u64) -> Vec<u8> {
    let mut b = vec![0u8; 0x1000];
    b[..4].copy_from_slice(ELF_MAGIC);
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    b[18..20].copy_from_slice(&62u16.to_le_bytes());
    b[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // entry
    b[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    b[52..54].copy_from_slice(&64u16.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = &mut b[64..120];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes());
    ph[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
    ph[16..24].copy_from_slice(&0x100_0000u64.to_le_bytes());
    ph[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes());
    ph[32..40].copy_from_slice(&filesz.to_le_bytes());
    ph[40..48].copy_from_slice(&(filesz + 0x1000).to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn rejects_a_file_that_is_not_a_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "notes.txt", b"hello, I am not a kernel\n");
        let e = probe_with(&p, true).unwrap_err();
        assert!(matches!(e, KernelError::NotAKernel { .. }), "{e}");
        assert!(e.to_string().contains("notes.txt"), "{e}");
    }

    #[test]
    fn rejects_a_truncated_elf() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tiny_elf(0x2000);
        b.extend_from_slice(&[0u8; 0x1000]); // one page of the two promised
        let p = write(&dir, "vmlinux", &b);
        let e = probe_with(&p, true).unwrap_err();
        assert!(
            matches!(
                e,
                KernelError::Truncated {
                    needed: 0x3000,
                    actual: 0x2000,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn accepts_a_whole_elf_and_reports_its_footprint() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tiny_elf(0x1000);
        b.extend_from_slice(&[0u8; 0x1000]);
        let p = write(&dir, "vmlinux", &b);
        let info = probe_with(&p, true).unwrap();
        assert_eq!(info.format, Format::Elf);
        assert_eq!(info.footprint_end, 0x100_2000);
    }

    #[test]
    fn finds_the_pvm_symbol_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tiny_elf(0x1000);
        b.resize((1 << 20) - 5, 0);
        b.extend_from_slice(&pvm_symbol());
        let p = write(&dir, "vmlinux", &b);
        let mut f = File::open(&p).unwrap();
        assert!(file_contains(&mut f, &pvm_symbol()).unwrap());
        assert!(!file_contains(&mut f, b"\0not_there\0").unwrap());
    }

    #[test]
    fn rejects_a_truncated_bzimage() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = vec![0u8; 0x1000];
        b[0x1f1] = 3; // setup sectors
        b[0x1f4..0x1f8].copy_from_slice(&0x1000u32.to_le_bytes()); // 64 KiB payload
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x236] = 1;
        let p = write(&dir, "bzImage", &b);
        let e = probe_with(&p, true).unwrap_err();
        assert!(matches!(e, KernelError::Truncated { .. }), "{e}");
    }
}
