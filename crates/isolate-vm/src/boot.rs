//! What the kernel reads at entry: the command line, the memory map, where
//! the initrd is. Two formats: `boot_params` (the "zero page" of the Linux
//! boot protocol, for a bzImage or a vmlinux without PVH note) and
//! `hvm_start_info` (PVH). The structures are built as values first
//! (unit-tested), then written into guest memory.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, PVH_INFO_START, PVH_MEMMAP_START,
    PVH_MODLIST_START, ZERO_PAGE_START,
};

/// Errors while building the boot information.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The command line does not fit.
    #[error("the kernel command line is {0} bytes, more than the {CMDLINE_MAX_SIZE} allowed")]
    CmdlineTooLong(usize),
    /// Writing the command line or the boot structures failed.
    #[error("cannot write the boot parameters into guest memory")]
    Write(#[source] linux_loader::configurator::Error),
    /// Writing the command line failed.
    #[error("cannot write the kernel command line into guest memory")]
    Cmdline(#[source] linux_loader::loader::Error),
}

/// E820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// `hvm_start_info.magic`.
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// `boot_params.hdr.type_of_loader`: "undefined" loader.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
const HDRS_MAGIC: u32 = 0x5372_6448;
const KERNEL_ALIGNMENT: u32 = 0x0100_0000;

/// The RAM ranges (start, size) the guest sees for `mem_size` bytes of RAM:
/// low memory below the EBDA, and everything from 1 MiB up.
pub fn memory_map(mem_size: u64) -> Vec<(u64, u64)> {
    vec![(0, EBDA_START), (HIMEM_START, mem_size - HIMEM_START)]
}

/// The initrd in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdRegion {
    /// Guest-physical start.
    pub addr: u64,
    /// Length, bytes.
    pub size: u64,
}

/// Where an initrd of `size` bytes goes: page-aligned at the top of RAM,
/// below 2 GiB (`initrd_addr_max` of kernels that do not say otherwise).
/// `None` if it does not fit above `lowest`.
pub fn initrd_placement(mem_size: u64, size: u64, lowest: u64) -> Option<InitrdRegion> {
    let top = mem_size.min(0x8000_0000);
    let addr = top.checked_sub(size)? & !0xfff;
    (addr >= lowest).then_some(InitrdRegion { addr, size })
}

/// The kernel command line: the fixed part, then one
/// `virtio_mmio.device=` per device, then `extra`.
///
/// - `console=ttyS0`: kernel messages to the 8250 (the VMM keeps the last lines);
/// - `quiet` (dropped when the log is shown): fewer serial exits, faster boot;
/// - `reboot=k panic=-1`: a panic resets at once; reset goes through the i8042;
/// - `pci=off nomodule`: no PCI probing, no module loading;
/// - `i8042.noaux i8042.nomux i8042.dumbkbd i8042.nopnp`: no mouse/mux probe
///   against our minimal i8042 (each probe costs timeouts);
/// - `tsc=reliable no_timer_check`: no TSC watchdog or timer check at boot.
pub fn kernel_cmdline(
    devices: &[(u64, u32)],
    quiet: bool,
    extra: &str,
) -> Result<String, BootError> {
    let mut s = String::from("console=ttyS0 ");
    if quiet {
        s.push_str("quiet ");
    }
    s.push_str(
        "reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd i8042.nopnp tsc=reliable no_timer_check",
    );
    for (addr, irq) in devices {
        s.push_str(&format!(" virtio_mmio.device=4K@{addr:#x}:{irq}"));
    }
    if !extra.is_empty() {
        s.push(' ');
        s.push_str(extra);
    }
    if s.len() > CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong(s.len()));
    }
    Ok(s)
}

/// Writes the NUL-terminated command line at [`CMDLINE_START`].
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    let mut cl = linux_loader::cmdline::Cmdline::new(CMDLINE_MAX_SIZE + 1)
        .map_err(|_| BootError::CmdlineTooLong(cmdline.len()))?;
    cl.insert_str(cmdline)
        .map_err(|_| BootError::CmdlineTooLong(cmdline.len()))?;
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), &cl)
        .map_err(BootError::Cmdline)
}

/// The zero page for the 64-bit Linux boot protocol.
pub fn linux_boot_params(
    header: Option<setup_header>,
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<InitrdRegion>,
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.header = HDRS_MAGIC;
    params.hdr.kernel_alignment = KERNEL_ALIGNMENT;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32 + 1;
    if let Some(rd) = initrd {
        params.hdr.ramdisk_image = rd.addr as u32;
        params.hdr.ramdisk_size = rd.size as u32;
    }
    let map = memory_map(mem_size);
    for (i, (addr, size)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: E820_RAM,
        };
    }
    params.e820_entries = map.len() as u8;
    params
}

/// The PVH start info and its memory map and module list.
pub fn pvh_start_info(
    mem_size: u64,
    initrd: Option<InitrdRegion>,
) -> (
    hvm_start_info,
    Vec<hvm_memmap_table_entry>,
    Vec<hvm_modlist_entry>,
) {
    let memmap: Vec<hvm_memmap_table_entry> = memory_map(mem_size)
        .into_iter()
        .map(|(addr, size)| hvm_memmap_table_entry {
            addr,
            size,
            type_: E820_RAM,
            reserved: 0,
        })
        .collect();
    let modules: Vec<hvm_modlist_entry> = initrd
        .map(|rd| hvm_modlist_entry {
            paddr: rd.addr,
            size: rd.size,
            ..Default::default()
        })
        .into_iter()
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            PVH_MODLIST_START
        },
        ..Default::default()
    };
    (info, memmap, modules)
}

/// Writes the boot information for the chosen protocol.
pub fn write_boot_info(
    mem: &GuestMemoryMmap,
    pvh: bool,
    header: Option<setup_header>,
    mem_size: u64,
    cmdline_len: usize,
    initrd: Option<InitrdRegion>,
) -> Result<(), BootError> {
    if pvh {
        let (info, memmap, modules) = pvh_start_info(mem_size, initrd);
        let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
        params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
        if !modules.is_empty() {
            params.set_modules(&modules, GuestAddress(PVH_MODLIST_START));
        }
        PvhBootConfigurator::write_bootparams(&params, mem).map_err(BootError::Write)
    } else {
        let zp = linux_boot_params(header, mem_size, cmdline_len, initrd);
        let params = BootParams::new(&zp, GuestAddress(ZERO_PAGE_START));
        LinuxBootConfigurator::write_bootparams(&params, mem).map_err(BootError::Write)
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::Bytes;

    use super::*;

    #[test]
    fn memory_map_skips_the_legacy_hole() {
        assert_eq!(
            memory_map(256 << 20),
            vec![(0, 0x9fc00), (0x10_0000, (256 << 20) - 0x10_0000)]
        );
    }

    #[test]
    fn initrd_goes_page_aligned_to_the_top() {
        let rd = initrd_placement(256 << 20, 0x1234, 0x200_0000).unwrap();
        assert_eq!(rd.addr, (256 << 20) - 0x2000);
        assert_eq!(rd.addr % 0x1000, 0);
        assert!(rd.addr + rd.size <= 256 << 20);
        // Above 2 GiB of RAM the initrd stays below 2 GiB.
        let high = initrd_placement(3 << 30, 0x1000, 0).unwrap();
        assert_eq!(high.addr, 0x8000_0000 - 0x1000);
        // Too big for the space above the kernel.
        assert_eq!(initrd_placement(64 << 20, 60 << 20, 0x200_0000), None);
    }

    #[test]
    fn cmdline_announces_each_device() {
        let s = kernel_cmdline(&[(0xd000_0000, 5), (0xd000_1000, 6)], true, "").unwrap();
        assert!(
            s.starts_with("console=ttyS0 quiet reboot=k panic=-1 pci=off"),
            "{s}"
        );
        assert!(
            s.ends_with(" virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"),
            "{s}"
        );
        let loud = kernel_cmdline(&[], false, "init=/x").unwrap();
        assert!(
            !loud.contains("quiet") && loud.ends_with(" init=/x"),
            "{loud}"
        );
        assert!(matches!(
            kernel_cmdline(&[], true, &"x".repeat(3000)),
            Err(BootError::CmdlineTooLong(_))
        ));
    }

    #[test]
    fn zero_page_has_cmdline_initrd_and_e820() {
        let rd = InitrdRegion {
            addr: 0x0f00_0000,
            size: 0x1000,
        };
        let p = linux_boot_params(None, 256 << 20, 10, Some(rd));
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 11);
        assert_eq!(
            ({ p.hdr.ramdisk_image }, { p.hdr.ramdisk_size }),
            (0x0f00_0000, 0x1000)
        );
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!(p.e820_entries, 2);
        let e = p.e820_table[1];
        assert_eq!(
            ({ e.addr }, { e.size }, { e.r#type }),
            (0x10_0000, (256 << 20) - 0x10_0000, 1)
        );
    }

    #[test]
    fn pvh_start_info_lists_the_initrd_module() {
        let rd = InitrdRegion {
            addr: 0x0f00_0000,
            size: 0x1000,
        };
        let (info, memmap, mods) = pvh_start_info(128 << 20, Some(rd));
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(
            (info.nr_modules, info.modlist_paddr),
            (1, PVH_MODLIST_START)
        );
        assert_eq!((info.memmap_entries, memmap.len()), (2, 2));
        assert_eq!((mods[0].paddr, mods[0].size), (0x0f00_0000, 0x1000));
        let (none, _, mods) = pvh_start_info(128 << 20, None);
        assert_eq!((none.nr_modules, none.modlist_paddr, mods.len()), (0, 0, 0));
    }

    #[test]
    fn boot_info_lands_in_guest_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        write_cmdline(&mem, "console=ttyS0").unwrap();
        let mut buf = [0u8; 14];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
        write_boot_info(&mem, true, None, 64 << 20, 13, None).unwrap();
        let magic: u32 = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(magic, XEN_HVM_START_MAGIC);
        write_boot_info(&mem, false, None, 64 << 20, 13, None).unwrap();
        let flag: u16 = mem.read_obj(GuestAddress(ZERO_PAGE_START + 0x1fe)).unwrap();
        assert_eq!(flag, 0xaa55);
    }
}
