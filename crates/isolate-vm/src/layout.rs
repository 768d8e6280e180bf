//! Where things go in guest physical memory (x86_64).
//!
//! ```text
//! 0x0000_0500  GDT (4 entries)            0x0000_7000  boot_params (bzImage)
//! 0x0000_0520  IDT (empty)                0x0000_8ff0  boot stack top
//! 0x0000_5000  PVH e820 memory map        0x0000_9000  PML4  (64-bit entry)
//! 0x0000_6000  PVH hvm_start_info         0x0000_a000  PDPT
//! 0x0000_6040  PVH module list (initrd)   0x0000_b000  PD (2 MiB pages, 1 GiB)
//! 0x0002_0000  kernel command line        0x0010_0000  kernel (HIMEM_START)
//!   ...        initrd, at the top of RAM, page aligned
//! 0xd000_0000  virtio-mmio devices, 4 KiB each (MMIO_START)
//! 0xfffb_c000  KVM identity map page, then 3 TSS pages
//! ```
//!
//! Guest RAM is one region from 0 up to at most [`MAX_GUEST_MEMORY`], so it
//! never overlaps the MMIO window below 4 GiB.

/// GDT.
pub const GDT_START: u64 = 0x500;
/// IDT (limit 0: any exception before the kernel sets its own is a triple fault).
pub const IDT_START: u64 = 0x520;
/// PVH memory map (e820-style entries).
pub const PVH_MEMMAP_START: u64 = 0x5000;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (one entry: the initrd).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// bzImage "zero page" (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page map level 4 of the 64-bit identity mapping.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (512 × 2 MiB pages = 1 GiB identity mapped).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line (bytes, without the NUL).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area: low RAM ends here in the e820 map.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory, where the kernel is loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// First virtio-mmio device.
pub const MMIO_START: u64 = 0xd000_0000;
/// Size of one virtio-mmio device window.
pub const MMIO_LEN: u64 = 0x1000;
/// First interrupt line given to virtio-mmio devices (4 is the serial port).
pub const IRQ_BASE: u32 = 5;
/// Last usable legacy interrupt line (IOAPIC pins 0..=23).
pub const IRQ_MAX: u32 = 23;
/// KVM's identity-map page (one page, must not be RAM).
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
/// KVM's TSS (three pages, must not be RAM).
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// Largest guest RAM: everything stays below the MMIO window.
pub const MAX_GUEST_MEMORY: u64 = MMIO_START;
/// Port of the 8250 serial (COM1) and its interrupt line.
pub const SERIAL_PORT: u16 = 0x3f8;
/// Interrupt line of the serial port.
pub const SERIAL_IRQ: u32 = 4;
/// i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// i8042 command port: writing 0xFE there resets the machine.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// The i8042 "pulse reset line" command.
pub const I8042_RESET_CMD: u8 = 0xfe;

/// Address of the `index`-th virtio-mmio device and its interrupt line.
pub fn mmio_slot(index: usize) -> Option<(u64, u32)> {
    let irq = IRQ_BASE.checked_add(u32::try_from(index).ok()?)?;
    (irq <= IRQ_MAX).then(|| (MMIO_START + index as u64 * MMIO_LEN, irq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmio_slots_are_distinct_and_bounded() {
        assert_eq!(mmio_slot(0), Some((0xd000_0000, 5)));
        assert_eq!(mmio_slot(1), Some((0xd000_1000, 6)));
        assert_eq!(mmio_slot(18), Some((0xd001_2000, 23)));
        assert_eq!(mmio_slot(19), None);
    }

    #[test]
    fn low_structures_do_not_overlap() {
        let mut spans = [
            (GDT_START, 0x20),
            (IDT_START, 0x8),
            (PVH_MEMMAP_START, 0x1000),
            (PVH_INFO_START, 0x40),
            (PVH_MODLIST_START, 0x20),
            (ZERO_PAGE_START, 0x1000),
            (PML4_START, 0x1000),
            (PDPTE_START, 0x1000),
            (PDE_START, 0x1000),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64 + 1),
        ];
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{w:x?}");
        }
        assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
    }
}
