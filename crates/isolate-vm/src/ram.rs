//! Guest RAM: one anonymous mapping whose host address is 2 MiB aligned.
//!
//! KVM can back guest memory with 2 MiB pages in its second-level page
//! tables (EPT/NPT) only where the host mapping is a transparent huge page
//! *and* the host address and the guest-physical address agree modulo
//! 2 MiB. `mmap` gives no such alignment on its own (Linux before 6.7 does
//! not align large anonymous mappings), so guest memory would be mapped
//! 4 KiB at a time: one second-level fault per 4 KiB page the guest
//! touches, which on nested or emulated hosts costs more than the work of
//! a whole boot phase (the kernel's `struct page` initialisation alone
//! touches 16 KiB per MiB of RAM). Here the mapping is over-allocated by
//! 2 MiB and trimmed to an aligned start. It is deliberately *not* marked
//! `MADV_HUGEPAGE`: with the common THP defrag setting `madvise`, a fault
//! in such a region compacts memory synchronously, which stalled boots for
//! minutes on a fragmented (emulated) host; where THP is `always` the
//! alignment alone gets huge pages when they are free. Memory is still
//! allocated on first touch; only the granularity changes.

use std::sync::Arc;

use vm_memory::mmap::{MmapRegion, MmapRegionBuilder};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

/// Alignment of the host mapping: one x86-64 huge page.
pub const HUGE_PAGE: usize = 2 << 20;

/// Errors while mapping guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum RamError {
    /// `mmap` failed.
    #[error("cannot map {0} MiB of guest memory")]
    Map(u64, #[source] std::io::Error),
    /// `vm-memory` refused the mapping.
    #[error("cannot use the guest memory mapping of {0} MiB")]
    Region(u64, #[source] vm_memory::mmap::MmapRegionError),
    /// `vm-memory` refused the region list.
    #[error("cannot build the guest memory map of {0} MiB")]
    Regions(u64, #[source] vm_memory::GuestRegionCollectionError),
}

/// Owns the host mapping behind a [`GuestMemoryMmap`] made by [`map`]:
/// unmaps it when dropped, if no other holder of the guest memory is left
/// (if one is, the mapping is left in place: it is still in use, and the
/// process ends soon after).
pub struct RamMapping {
    region: Option<Arc<MmapRegion>>,
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: `addr`/`len` only name the mapping for munmap in `drop`; they are
// never dereferenced, and the region they describe is `Send + Sync`.
unsafe impl Send for RamMapping {}
// SAFETY: as above; `&RamMapping` gives no access to the pointer.
unsafe impl Sync for RamMapping {}

impl std::fmt::Debug for RamMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RamMapping")
            .field("addr", &self.addr)
            .field("len", &self.len)
            .finish()
    }
}

impl RamMapping {
    /// Host address of guest-physical 0.
    pub fn host_addr(&self) -> usize {
        self.addr as usize
    }
}

impl Drop for RamMapping {
    fn drop(&mut self) {
        let Some(region) = self.region.take() else {
            return;
        };
        if let Some(region) = Arc::into_inner(region) {
            // Built from a raw pointer, the region does not own the
            // mapping: dropping it unmaps nothing.
            drop(region);
            // SAFETY: `addr..+len` is the mapping made in `map`, and the
            // last reference to it (every guest memory region holds one) is
            // gone, so nothing can access it any more.
            unsafe {
                libc::munmap(self.addr, self.len);
            }
        }
    }
}

/// Rounds `x` up to a multiple of [`HUGE_PAGE`].
fn align_up(x: usize) -> usize {
    (x + HUGE_PAGE - 1) & !(HUGE_PAGE - 1)
}

/// Maps `size` bytes of guest RAM at guest-physical 0, host address 2 MiB
/// aligned. Returns the guest memory and the owner of its mapping (keep it
/// at least as long as the VM).
pub fn map(size: u64) -> Result<(GuestMemoryMmap, RamMapping), RamError> {
    let mib = size >> 20;
    let len = size as usize;
    let reserve = len + HUGE_PAGE;
    // SAFETY: a fresh anonymous private mapping at an address the kernel
    // chooses; no existing memory is affected.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            reserve,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(RamError::Map(mib, std::io::Error::last_os_error()));
    }
    let start = align_up(base as usize);
    let head = start - base as usize;
    let tail = reserve - head - len;
    // SAFETY: both ranges lie inside the mapping just made and outside
    // `start..start+len`, which is kept; nothing else refers to them.
    unsafe {
        if head > 0 {
            libc::munmap(base, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    let addr = start as *mut libc::c_void;
    let unmap = |addr: *mut libc::c_void| {
        // SAFETY: the mapping made above, not yet handed to anything.
        unsafe { libc::munmap(addr, len) };
    };
    // SAFETY: `start..start+len` is a live read/write mapping owned by the
    // returned `RamMapping`, which unmaps it only once the region is gone.
    let region = unsafe {
        MmapRegionBuilder::new(len)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
            .with_raw_mmap_pointer(start as *mut u8)
    }
    .build()
    .map_err(|e| {
        unmap(addr);
        RamError::Region(mib, e)
    })?;
    let mapping = Arc::new(region);
    let region = match GuestRegionMmap::with_arc(mapping.clone(), GuestAddress(0)) {
        Some(r) => r,
        None => {
            unmap(addr);
            return Err(RamError::Map(
                mib,
                std::io::Error::other("guest memory region overflows the address space"),
            ));
        }
    };
    let mem = GuestMemoryMmap::from_regions(vec![region]).map_err(|e| {
        unmap(addr);
        RamError::Regions(mib, e)
    })?;
    Ok((
        mem,
        RamMapping {
            region: Some(mapping),
            addr,
            len,
        },
    ))
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    use super::*;

    #[test]
    fn ram_is_huge_page_aligned_zeroed_and_writable() {
        let (mem, owner) = map(6 << 20).unwrap();
        assert_eq!(owner.host_addr() % HUGE_PAGE, 0);
        let r = mem.iter().next().unwrap();
        assert_eq!(r.as_ptr() as usize, owner.host_addr());
        assert_eq!(r.len(), 6 << 20);
        let v: u64 = mem.read_obj(GuestAddress((6 << 20) - 8)).unwrap();
        assert_eq!(v, 0);
        mem.write_obj(0x1234_5678u32, GuestAddress(0x10_0000))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x10_0000)).unwrap(),
            0x1234_5678
        );
    }

    #[test]
    fn mapping_stays_while_guest_memory_is_held() {
        let (mem, owner) = map(2 << 20).unwrap();
        drop(owner);
        // Another holder still has it: the mapping must still be there.
        mem.write_obj(7u8, GuestAddress(0)).unwrap();
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0)).unwrap(), 7);
    }
}
