//! vCPU state at boot: CPUID, MSRs, FPU, local APIC, segments and page
//! tables, registers. Pure builders (`gdt_entries`, `filter_cpuid`, …) are
//! separate from the `configure_*` calls that push them into KVM, so the
//! values are unit-tested without KVM.

use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{
    BOOT_STACK_POINTER, GDT_START, IDT_START, PDE_START, PDPTE_START, PML4_START, PVH_INFO_START,
    ZERO_PAGE_START,
};

/// Errors while setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A KVM ioctl on the vCPU failed.
    #[error("cannot {0} of vCPU")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// Writing a boot structure into guest memory failed.
    #[error("cannot write the {0} into guest memory")]
    Memory(&'static str, #[source] vm_memory::GuestMemoryError),
}

// --- CPUID --------------------------------------------------------------

/// CPUID leaf 1 ECX: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID leaf 1 EDX: more than one logical processor per package.
const EDX_HTT: u32 = 1 << 28;
/// CPUID leaf 1 ECX: the local APIC has a TSC-deadline mode.
const ECX_TSC_DEADLINE: u32 = 1 << 24;

/// The host's supported CPUID, as KVM reports it.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, kvm_ioctls::Error> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
}

/// Adapts the supported CPUID for vCPU `id` of `count`: hypervisor bit on,
/// the APIC id in leaves 1 and 0xb, the processor count in leaves 1, 4 and
/// 0xb (one socket, one thread per core, `count` cores), and the
/// TSC-deadline timer if KVM emulates it (`tsc_deadline`; KVM does not list
/// it in the supported CPUID). With it, the guest skips calibrating the
/// APIC timer against the PIT, which is slow and, on nested hosts, fails.
pub fn filter_cpuid(cpuid: &mut CpuId, id: u8, count: u8, tsc_deadline: bool) {
    // Bits needed to number `count` cores (leaf 0xb level shift).
    let core_bits = u32::BITS - (u32::from(count.max(1)) - 1).leading_zeros();
    for e in cpuid.as_mut_slice() {
        match e.function {
            0x1 => {
                e.ecx |= ECX_HYPERVISOR;
                if tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                }
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                // CLFLUSH line size stays; HTT says "ebx[23:16] is valid".
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            0x4 => {
                // Cores per package - 1 in eax[31:26]; threads sharing this cache - 1 in eax[25:14].
                e.eax &= 0x3fff;
                e.eax |= (u32::from(count).saturating_sub(1) & 0x3f) << 26;
            }
            0xb => {
                e.edx = u32::from(id);
                match e.index {
                    0 => {
                        // SMT level: one thread per core.
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        // Core level: `count` cores.
                        e.eax = core_bits;
                        e.ebx = u32::from(count);
                        e.ecx = (2 << 8) | 1;
                    }
                    n => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = n;
                    }
                }
            }
            _ => {}
        }
    }
}

// --- MSRs, FPU, LAPIC ---------------------------------------------------

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// The MSRs a booting kernel expects: syscall MSRs cleared, TSC at 0, fast
/// strings on, default memory type write-back.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Writes [`boot_msrs`].
pub fn configure_msrs(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let entries = boot_msrs();
    let msrs = Msrs::from_entries(&entries).expect("fewer MSRs than KVM_MAX_MSR_ENTRIES");
    let n = vcpu
        .set_msrs(&msrs)
        .map_err(|e| CpuError::Kvm("set the MSRs", e))?;
    if n != entries.len() {
        return Err(CpuError::Kvm(
            "set all boot MSRs",
            kvm_ioctls::Error::new(libc::EINVAL),
        ));
    }
    Ok(())
}

/// x87 control word and SSE control/status at their reset values.
pub fn configure_fpu(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(|e| CpuError::Kvm("set the FPU", e))
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// LINT0 delivers the PIC's interrupts (ExtINT), LINT1 NMIs, as on a PC.
pub fn configure_lapic(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| CpuError::Kvm("read the local APIC", e))?;
    for (off, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes = &mut lapic.regs[off..off + 4];
        let raw: [u8; 4] = bytes
            .iter()
            .map(|&b| b as u8)
            .collect::<Vec<_>>()
            .try_into()
            .expect("4 bytes");
        let new = set_delivery_mode(u32::from_le_bytes(raw), mode).to_le_bytes();
        for (d, s) in bytes.iter_mut().zip(new) {
            *d = s as _;
        }
    }
    vcpu.set_lapic(&lapic)
        .map_err(|e| CpuError::Kvm("write the local APIC", e))
}

// --- Segments, GDT, page tables ------------------------------------------

/// One GDT entry from flags, base and limit (Intel SDM 3A §3.4.5).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The `kvm_segment` KVM wants for GDT entry `entry` at index `index`.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The boot GDT: null, code, data, TSS. `long_mode` picks a 64-bit code
/// segment (Linux 64-bit entry) or a 32-bit one (PVH entry).
pub fn gdt_entries(long_mode: bool) -> [u64; 4] {
    if long_mode {
        [
            0,
            gdt_entry(0xa09b, 0, 0xfffff), // code: 64-bit, present, exec/read, accessed
            gdt_entry(0xc093, 0, 0xfffff), // data: 32-bit, present, read/write, accessed
            gdt_entry(0x808b, 0, 0xfffff), // TSS (busy)
        ]
    } else {
        [
            0,
            gdt_entry(0xc09b, 0, 0xfffff), // code: 32-bit flat
            gdt_entry(0xc093, 0, 0xfffff), // data: 32-bit flat
            gdt_entry(0x008b, 0, 0x67),    // TSS
        ]
    }
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Writes the GDT and an empty IDT, and loads them and the segments into
/// `sregs`.
fn setup_segments(
    mem: &GuestMemoryMmap,
    sregs: &mut kvm_sregs,
    long_mode: bool,
) -> Result<(), CpuError> {
    let gdt = gdt_entries(long_mode);
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_START + 8 * i as u64))
            .map_err(|e| CpuError::Memory("GDT", e))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_START))
        .map_err(|e| CpuError::Memory("IDT", e))?;
    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = 7;
    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(gdt[3], 3);
    Ok(())
}

/// Identity-maps the first GiB with 2 MiB pages: `PML4[0] → PDPT[0] → PD`.
pub fn setup_page_tables(mem: &GuestMemoryMmap) -> Result<u64, CpuError> {
    let w = |v: u64, at: u64| {
        mem.write_obj(v, GuestAddress(at))
            .map_err(|e| CpuError::Memory("page tables", e))
    };
    w(PDPTE_START | 0x03, PML4_START)?; // present, writable
    w(PDE_START | 0x03, PDPTE_START)?;
    for i in 0..512u64 {
        w((i << 21) | 0x83, PDE_START + i * 8)?; // present, writable, 2 MiB page
    }
    Ok(PML4_START)
}

/// Special registers for the kernel's entry: long mode with paging
/// (Linux 64-bit protocol) or flat 32-bit protected mode without paging (PVH).
pub fn configure_sregs(vcpu: &VcpuFd, mem: &GuestMemoryMmap, pvh: bool) -> Result<(), CpuError> {
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| CpuError::Kvm("read the special registers", e))?;
    setup_segments(mem, &mut sregs, !pvh)?;
    if pvh {
        sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
        sregs.cr4 = 0;
    } else {
        sregs.cr3 = setup_page_tables(mem)?;
        sregs.cr4 |= X86_CR4_PAE;
        sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
        sregs.efer |= EFER_LME | EFER_LMA;
    }
    vcpu.set_sregs(&sregs)
        .map_err(|e| CpuError::Kvm("write the special registers", e))
}

/// General registers for the entry at `entry`: `rsi` = `boot_params`
/// (Linux 64-bit protocol) or `rbx` = `hvm_start_info` (PVH).
pub fn boot_regs(entry: u64, pvh: bool) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    if pvh {
        regs.rbx = PVH_INFO_START;
    } else {
        regs.rsp = BOOT_STACK_POINTER;
        regs.rbp = BOOT_STACK_POINTER;
        regs.rsi = ZERO_PAGE_START;
    }
    regs
}

/// Boot parameters shared by all vCPUs.
#[derive(Debug, Clone, Copy)]
pub struct BootCpu {
    /// vCPU count.
    pub count: u8,
    /// Kernel entry address.
    pub entry: u64,
    /// PVH entry (else the 64-bit Linux entry).
    pub pvh: bool,
    /// KVM emulates the TSC-deadline timer.
    pub tsc_deadline: bool,
}

/// The whole boot-time state of vCPU `id`.
pub fn configure_vcpu(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    cpuid: &CpuId,
    id: u8,
    boot: BootCpu,
) -> Result<(), CpuError> {
    let BootCpu {
        count,
        entry,
        pvh,
        tsc_deadline,
    } = boot;
    let mut cpuid = cpuid.clone();
    filter_cpuid(&mut cpuid, id, count, tsc_deadline);
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| CpuError::Kvm("set the CPUID", e))?;
    configure_msrs(vcpu)?;
    configure_fpu(vcpu)?;
    configure_lapic(vcpu)?;
    // Only the boot vCPU starts at the kernel's entry; the others wait for
    // the boot vCPU's INIT/SIPI in the in-kernel APIC.
    if id == 0 {
        configure_sregs(vcpu, mem, pvh)?;
        vcpu.set_regs(&boot_regs(entry, pvh))
            .map_err(|e| CpuError::Kvm("set the registers", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kvm_bindings::kvm_cpuid_entry2;

    use super::*;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let [_, code, data, tss] = gdt_entries(true);
        let cs = segment_from_gdt(code, 1);
        assert_eq!(
            (cs.selector, cs.l, cs.db, cs.type_, cs.present),
            (8, 1, 0, 0xb, 1)
        );
        assert_eq!((cs.base, cs.limit, cs.g), (0, 0xffff_ffff, 1));
        let ds = segment_from_gdt(data, 2);
        assert_eq!((ds.selector, ds.db, ds.type_, ds.s), (16, 1, 3, 1));
        let tr = segment_from_gdt(tss, 3);
        assert_eq!((tr.selector, tr.type_, tr.s), (24, 0xb, 0));
        let [_, code32, ..] = gdt_entries(false);
        let cs32 = segment_from_gdt(code32, 1);
        assert_eq!((cs32.l, cs32.db), (0, 1));
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn gdt_entry_matches_known_encodings() {
        assert_eq!(gdt_entry(0xa09b, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
    }

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0x0008_0800,
            edx: EDX_HTT,
            ..Default::default()
        }
    }

    #[test]
    fn cpuid_filter_sets_apic_id_count_and_hypervisor() {
        let mut c = CpuId::from_entries(&[
            entry(1, 0),
            entry(4, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
        ])
        .unwrap();
        filter_cpuid(&mut c, 2, 3, true);
        assert_ne!(c.as_slice()[0].ecx & ECX_TSC_DEADLINE, 0);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 2, "APIC id");
        assert_eq!((e[0].ebx >> 16) & 0xff, 3, "logical processors");
        assert_eq!(e[0].ebx & 0xffff, 0x0800, "low bits kept");
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[1].eax >> 26, 2, "cores per package - 1");
        assert_eq!((e[2].eax, e[2].ebx, e[2].ecx, e[2].edx), (0, 1, 0x100, 2));
        assert_eq!((e[3].eax, e[3].ebx, e[3].ecx, e[3].edx), (2, 3, 0x201, 2));
        assert_eq!((e[4].ebx, e[4].ecx), (0, 2));

        let mut one = CpuId::from_entries(&[entry(1, 0)]).unwrap();
        filter_cpuid(&mut one, 0, 1, false);
        assert_eq!(one.as_slice()[0].ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(one.as_slice()[0].edx & EDX_HTT, 0);
    }

    #[test]
    fn boot_msrs_enable_write_back_default() {
        let m = boot_msrs();
        assert!(m
            .iter()
            .any(|e| e.index == MSR_MTRR_DEF_TYPE && e.data == 0x806));
        assert!(m
            .iter()
            .any(|e| e.index == MSR_IA32_MISC_ENABLE && e.data == 1));
    }

    #[test]
    fn lapic_delivery_modes() {
        assert_eq!(
            set_delivery_mode(0x0001_0000, APIC_MODE_EXTINT),
            0x0001_0700
        );
        assert_eq!(set_delivery_mode(0x0000_0700, APIC_MODE_NMI), 0x0000_0400);
    }

    #[test]
    fn boot_regs_point_at_the_boot_structures() {
        let r = boot_regs(0x100_0200, false);
        assert_eq!(
            (r.rip, r.rsi, r.rsp),
            (0x100_0200, ZERO_PAGE_START, BOOT_STACK_POINTER)
        );
        let p = boot_regs(0x100_0000, true);
        assert_eq!((p.rip, p.rbx), (0x100_0000, PVH_INFO_START));
    }
}
