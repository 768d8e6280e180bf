//! Native KVM tests with tiny hand-assembled guests: the run loop, port
//! and MMIO dispatch to the device buses, and the ways a VM ends, without
//! Linux. They run on any KVM host, PVM included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use isolate_vm::builder::{self, Machine};
use isolate_vm::devices::i8042::{I8042, I8042_LEN, I8042_PORT};
use isolate_vm::devices::serial::{Serial, SerialLog, COM1_LEN, COM1_PORT};
use isolate_vm::devices::{Bus, BusDevice, Interrupt};
use isolate_vm::vcpu::{self, ExitCounts, StopFlag, StopReason};
use isolate_vm::{cpu, host};
use vm_memory::{Bytes, GuestAddress};

fn kvm_or_skip(test: &str) -> Option<kvm_ioctls::Kvm> {
    match host::open_kvm() {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("SKIP {test}: {}", e.chain());
            None
        }
    }
}

struct NoIrq;
impl Interrupt for NoIrq {
    fn trigger(&self) {}
}

/// Records MMIO writes.
#[derive(Default)]
struct Recorder(Vec<(u64, Vec<u8>)>);
impl BusDevice for Recorder {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(offset as u8);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.push((offset, data.to_vec()));
    }
}

fn pio_bus(log: &SerialLog, stop: &Arc<StopFlag>) -> Bus {
    let mut pio = Bus::new();
    let serial = Serial::new(Arc::new(NoIrq), log.clone(), false);
    pio.insert(COM1_PORT, COM1_LEN, Arc::new(Mutex::new(serial)))
        .unwrap();
    let stop = stop.clone();
    let i8042 = I8042::new(move || stop.reset());
    pio.insert(I8042_PORT, I8042_LEN, Arc::new(Mutex::new(i8042)))
        .unwrap();
    pio
}

/// Real mode, CS:IP = 0:0x1000: `mov dx,0x3f8; add al,bl; out dx,al; hlt`.
fn real_mode(m: &Machine, code: &[u8]) {
    m.mem.write_slice(code, GuestAddress(0x1000)).unwrap();
    let vcpu = &m.vcpus[0];
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).unwrap();
    let regs = kvm_bindings::kvm_regs {
        rip: 0x1000,
        rax: u64::from(b'2'),
        rbx: 2,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).unwrap();
}

#[test]
fn real_mode_payload_writes_to_the_serial_port_and_halts() {
    let Some(kvm) = kvm_or_skip("real_mode_payload_writes_to_the_serial_port_and_halts") else {
        return;
    };
    let mut m = builder::create_machine(kvm, 1 << 20, 1, false).unwrap();
    real_mode(&m, &[0xba, 0xf8, 0x03, 0x00, 0xd8, 0xee, 0xf4]);
    let log = SerialLog::new(4);
    let stop = StopFlag::new();
    let pio = pio_bus(&log, &stop);
    let mut counts = ExitCounts::default();
    let reason = vcpu::run(
        &mut m.vcpus[0],
        &pio,
        &Bus::new(),
        &stop,
        &mut counts,
        || {},
    );
    assert_eq!(reason, StopReason::Halt);
    assert_eq!(log.last_lines(), vec!["4".to_string()]);
    assert_eq!((counts.pio, counts.unclaimed), (1, 0));
}

/// 64-bit code at 2 MiB (MMIO below 1 GiB: only that is identity mapped), entered through the same long-mode set-up a
/// Linux 64-bit entry gets (GDT, identity-mapped page tables, EFER.LMA).
const LONG_MODE_CODE: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xb0, b'L', // mov al, 'L'
    0xee, // out dx, al
    0xb0, b'\n', // mov al, '\n'
    0xee,  // out dx, al
    0x48, 0xb8, 0x10, 0x00, 0x00, 0x30, 0x00, 0x00, 0x00,
    0x00, // mov rax, 0x30000010 (no RAM there)
    0xc6, 0x00, 0x5a, // mov byte [rax], 0x5a
    0x8b, 0x18, // mov ebx, [rax]
    0x89, 0x1c, 0x25, 0x00, 0x00, 0x30, 0x00, // mov [0x300000], ebx
    0x66, 0xba, 0x64, 0x00, // mov dx, 0x64
    0xb0, 0xfe, // mov al, 0xfe
    0xee, // out dx, al
    0xf4, // hlt (not reached: the reset stops the vCPU)
];

#[test]
fn long_mode_payload_reaches_serial_and_mmio_then_resets_through_the_i8042() {
    let Some(kvm) = kvm_or_skip("long_mode_payload_reaches_serial_and_mmio") else {
        return;
    };
    let mut m = builder::create_machine(kvm, 4 << 20, 1, true).unwrap();
    m.mem
        .write_slice(LONG_MODE_CODE, GuestAddress(0x20_0000))
        .unwrap();
    cpu::configure_sregs(&m.vcpus[0], &m.mem, false).unwrap();
    m.vcpus[0]
        .set_regs(&cpu::boot_regs(0x20_0000, false))
        .unwrap();

    let log = SerialLog::new(4);
    let stop = StopFlag::new();
    let pio = pio_bus(&log, &stop);
    let rec = Arc::new(Mutex::new(Recorder::default()));
    let mut mmio = Bus::new();
    mmio.insert(0x3000_0000, 0x1000, rec.clone()).unwrap();
    let mut counts = ExitCounts::default();
    let reason = vcpu::run(&mut m.vcpus[0], &pio, &mmio, &stop, &mut counts, || {});
    if reason != StopReason::Reset {
        let r = m.vcpus[0].get_regs().unwrap();
        let s = m.vcpus[0].get_sregs().unwrap();
        eprintln!("DEBUG {reason:?} {counts:?} log={:?} rip={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:?}", log.last_lines(), r.rip, s.cr0, s.cr3, s.cr4, s.efer, s.cs);
    }
    assert_eq!(reason, StopReason::Reset);
    assert_eq!(log.last_lines(), vec!["L".to_string()]);
    assert_eq!(rec.lock().unwrap().0, vec![(0x10, vec![0x5a])]);
    // The MMIO read returned the device's answer (offset byte repeated).
    let seen: u32 = m.mem.read_obj(GuestAddress(0x30_0000)).unwrap();
    assert_eq!(seen, 0x1010_1010);
    assert_eq!((counts.mmio, counts.unclaimed), (2, 0));
}

#[test]
fn triple_fault_ends_the_vm_as_shutdown() {
    let Some(kvm) = kvm_or_skip("triple_fault_ends_the_vm_as_shutdown") else {
        return;
    };
    let mut m = builder::create_machine(kvm, 4 << 20, 1, true).unwrap();
    // ud2 with an empty IDT: #UD → #DF → triple fault.
    m.mem
        .write_slice(&[0x0f, 0x0b], GuestAddress(0x20_0000))
        .unwrap();
    cpu::configure_sregs(&m.vcpus[0], &m.mem, false).unwrap();
    m.vcpus[0]
        .set_regs(&cpu::boot_regs(0x20_0000, false))
        .unwrap();
    let stop = StopFlag::new();
    let mut counts = ExitCounts::default();
    let reason = vcpu::run(
        &mut m.vcpus[0],
        &Bus::new(),
        &Bus::new(),
        &stop,
        &mut counts,
        || {},
    );
    assert_eq!(reason, StopReason::Shutdown);
    // What the VMM logs for it: where the guest was, and its IDT.
    let state = vcpu::state(&m.vcpus[0]);
    assert!(
        state.contains("rip=0x200000 ") && state.contains(" idt="),
        "{state}"
    );
}

#[test]
fn unclaimed_port_reads_all_ones() {
    let Some(kvm) = kvm_or_skip("unclaimed_port_reads_all_ones") else {
        return;
    };
    let mut m = builder::create_machine(kvm, 1 << 20, 1, false).unwrap();
    // in al, 0x80 ; mov [0x2000], al ; hlt
    real_mode(&m, &[0xe4, 0x80, 0xa2, 0x00, 0x20, 0xf4]);
    let stop = StopFlag::new();
    let mut counts = ExitCounts::default();
    let reason = vcpu::run(
        &mut m.vcpus[0],
        &Bus::new(),
        &Bus::new(),
        &stop,
        &mut counts,
        || {},
    );
    assert_eq!(reason, StopReason::Halt);
    let b: u8 = m.mem.read_obj(GuestAddress(0x2000)).unwrap();
    assert_eq!((b, counts.unclaimed), (0xff, 1));
}

#[test]
fn measures_setup_to_first_guest_instruction() {
    let Some(kvm) = kvm_or_skip("measures_setup_to_first_guest_instruction") else {
        return;
    };
    let t0 = Instant::now();
    let mut m = builder::create_machine(kvm, 1 << 20, 1, false).unwrap();
    real_mode(&m, &[0xba, 0xf8, 0x03, 0x00, 0xd8, 0xee, 0xf4]);
    let log = SerialLog::new(4);
    let stop = StopFlag::new();
    let pio = pio_bus(&log, &stop);
    let first = AtomicU64::new(0);
    let mut counts = ExitCounts::default();
    let reason = vcpu::run(
        &mut m.vcpus[0],
        &pio,
        &Bus::new(),
        &stop,
        &mut counts,
        || first.store(t0.elapsed().as_micros() as u64, Ordering::SeqCst),
    );
    let us = first.load(Ordering::SeqCst);
    eprintln!("MEASURE in-process KVM open to first guest exit: {us} µs");
    // The figure is only worth printing if the guest really ran: its one
    // port write, then its halt.
    assert_eq!(reason, StopReason::Halt);
    assert_eq!((counts.pio, counts.unclaimed), (1, 0), "{counts:?}");
    // A first exit slower than 5 s is a broken set-up, not a slow one
    // (about 1-3 ms on the build machines).
    assert!(us > 0 && us < 5_000_000, "first exit after {us} µs");
}

#[test]
fn measures_kernel_load_time() {
    let k = isolate_core::paths::home().join("kernel");
    let Some(kvm) = kvm_or_skip("measures_kernel_load_time") else {
        return;
    };
    if !k.join("vmlinux").is_file() {
        eprintln!("SKIP measures_kernel_load_time: no installed kernel");
        return;
    }
    let ram: u64 = 256 << 20;
    let m = builder::create_machine(kvm, ram, 1, false).unwrap();
    for name in ["vmlinux", "bzImage"] {
        let path = k.join(name);
        if !path.is_file() {
            eprintln!("SKIP measures_kernel_load_time ({name}): not installed");
            continue;
        }
        let t = Instant::now();
        let loaded = isolate_vm::kernel::load(&m.mem, &path).unwrap();
        let took = t.elapsed();
        eprintln!("MEASURE load {name}: {took:?} (end {:#x})", loaded.end);
        // Loaded above the first MiB (where the boot structures live),
        // inside guest RAM, and in well under the 30 s boot limit.
        assert!(
            loaded.end > 1 << 20 && loaded.end <= ram,
            "{name} ends at {:#x}",
            loaded.end
        );
        assert!(
            took < std::time::Duration::from_secs(10),
            "{name} took {took:?}"
        );
    }
}
