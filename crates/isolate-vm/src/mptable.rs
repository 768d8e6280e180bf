//! The Intel MultiProcessor table (MP spec 1.4): how a guest without ACPI
//! finds its vCPUs, the IOAPIC and the interrupt routing. Linux scans the
//! last KiB of base memory for the floating pointer, so it goes at
//! [`MPTABLE_START`] (excluded from the e820 RAM map).
//!
//! Built as bytes by [`mptable()`] (unit-tested), written by [`write()`].

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{EBDA_START, IRQ_MAX};

/// Where the floating pointer goes; the configuration table follows it.
pub const MPTABLE_START: u64 = EBDA_START;
/// The local APIC's address.
const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
/// The IOAPIC's address.
const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
/// Family 6 model 0 stepping 0 (only informational).
const CPU_SIGNATURE: u32 = 0x600;
/// FPU and APIC present.
const CPU_FEATURES: u32 = 0x201;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const IRQ_INT: u8 = 0;
const IRQ_NMI: u8 = 1;
const IRQ_EXTINT: u8 = 3;
const BUS_ISA: u8 = 0;

/// Errors writing the table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// Too many vCPUs for 8-bit APIC ids (the IOAPIC takes the next id).
    #[error("the MP table holds at most 254 vCPUs, not {0}")]
    TooManyCpus(u8),
    /// Guest memory write failed.
    #[error("cannot write the MP table into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The floating pointer and the configuration table for `cpus` vCPUs, as
/// they go at [`MPTABLE_START`].
pub fn mptable(cpus: u8) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > 254 {
        return Err(MptableError::TooManyCpus(cpus));
    }
    let ioapic_id = cpus;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        entries.extend([ENTRY_PROCESSOR, id, APIC_VERSION]);
        entries.push(CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 });
        entries.extend(CPU_SIGNATURE.to_le_bytes());
        entries.extend(CPU_FEATURES.to_le_bytes());
        entries.extend([0u8; 8]);
        count += 1;
    }
    entries.extend([ENTRY_BUS, BUS_ISA]);
    entries.extend(*b"ISA   ");
    count += 1;
    entries.extend([ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend(IO_APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    count += 1;
    for irq in 0..=IRQ_MAX as u8 {
        // Each ISA interrupt to the IOAPIC pin of the same number, default polarity.
        entries.extend([ENTRY_INTSRC, IRQ_INT, 0, 0, BUS_ISA, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0: the PIC (ExtINT) on the boot CPU; LINT1: NMI on every CPU.
    entries.extend([ENTRY_LINTSRC, IRQ_EXTINT, 0, 0, BUS_ISA, 0, 0, 0]);
    entries.extend([ENTRY_LINTSRC, IRQ_NMI, 0, 0, BUS_ISA, 0, 0xff, 1]);
    count += 2;

    let table_addr = MPTABLE_START as u32 + 16;
    let mut table: Vec<u8> = Vec::with_capacity(44 + entries.len());
    table.extend(*b"PCMP");
    table.extend(((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend(*b"ISOLATE ");
    table.extend(*b"MICROVM     ");
    table.extend(0u32.to_le_bytes()); // OEM table
    table.extend(0u16.to_le_bytes()); // OEM table size
    table.extend(count.to_le_bytes());
    table.extend(APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    table.extend(0u32.to_le_bytes()); // extended table length + checksum + reserved
    table.extend(entries);
    table[7] = checksum(&table);

    let mut out: Vec<u8> = Vec::with_capacity(16 + table.len());
    out.extend(*b"_MP_");
    out.extend(table_addr.to_le_bytes());
    out.extend([1, 4, 0, 0, 0, 0, 0, 0]); // length 16 bytes, rev 1.4, checksum, features
    out[10] = checksum(&out);
    out.extend(table);
    Ok(out)
}

/// Writes the table for `cpus` vCPUs into guest memory.
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), MptableError> {
    let bytes = mptable(cpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_lengths_hold() {
        for cpus in [1u8, 2, 8] {
            let t = mptable(cpus).unwrap();
            assert_eq!(&t[..4], b"_MP_");
            assert_eq!(sum(&t[..16]), 0, "floating pointer checksum");
            let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
            assert_eq!(ptr, MPTABLE_START + 16);
            let table = &t[16..];
            assert_eq!(&table[..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "table checksum");
            let count = u16::from_le_bytes([table[34], table[35]]) as usize;
            assert_eq!(count, cpus as usize + 1 + 1 + 24 + 2);
            assert_eq!(len, 44 + cpus as usize * 20 + 8 * (count - cpus as usize));
        }
    }

    #[test]
    fn only_cpu_zero_is_the_boot_processor() {
        let t = mptable(3).unwrap();
        let entries = &t[16 + 44..];
        let flags: Vec<u8> = (0..3).map(|i| entries[i * 20 + 3]).collect();
        assert_eq!(flags, vec![3, 1, 1]);
        // The IOAPIC takes the id after the CPUs.
        assert_eq!(&entries[60 + 8..60 + 10], &[ENTRY_IOAPIC, 3]);
    }

    #[test]
    fn fits_below_the_bios_area() {
        let t = mptable(254).unwrap();
        assert!(MPTABLE_START + t.len() as u64 <= 0xa0000 + 0x10000);
        assert!(mptable(0).is_err() && mptable(255).is_err());
    }
}
