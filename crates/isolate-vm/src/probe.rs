//! `isolate-vmm probe`: the VMM's own floor. Builds a VM with 1 MiB of RAM
//! and a real-mode payload (`mov dx,0x3f8; add al,bl; out dx,al; hlt`),
//! installs the vCPU seccomp filter (the probe runs the vCPU on its only thread), runs it through the same run loop and
//! device bus as a real guest, and prints one line:
//!
//! ```text
//! probe ok first_exit_us=<µs from main() to the guest's first exit> serial=4
//! ```
//!
//! The library's tests time the whole thing from `spawn` (process start
//! included).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress};

use crate::builder::{self, IrqFd};
use crate::devices::serial::{Serial, SerialLog, COM1_LEN, COM1_PORT};
use crate::devices::Bus;
use crate::vcpu::{self, ExitCounts, StopFlag, StopReason};

const PAYLOAD: &[u8] = &[0xba, 0xf8, 0x03, 0x00, 0xd8, 0xee, 0xf4];

/// Runs the probe; returns the exit code.
pub fn main() -> i32 {
    let t0 = Instant::now();
    match run(t0) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            eprintln!("isolate-vmm probe: {e}");
            1
        }
    }
}

fn run(t0: Instant) -> Result<String, String> {
    let kvm = crate::host::open_kvm().map_err(|e| e.chain())?;
    let mut m = builder::create_machine(kvm, 1 << 20, 1, false)
        .map_err(|e| isolate_core::error_chain(&e))?;
    m.mem
        .write_slice(PAYLOAD, GuestAddress(0x1000))
        .map_err(|e| e.to_string())?;
    let vcpu = &m.vcpus[0];
    let mut sregs = vcpu.get_sregs().map_err(|e| e.to_string())?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(|e| e.to_string())?;
    let regs = kvm_bindings::kvm_regs {
        rip: 0x1000,
        rax: u64::from(b'2'),
        rbx: 2,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(|e| e.to_string())?;
    // Without an irqchip there is no GSI to wire: a no-op interrupt would
    // do, but an irqfd keeps the path identical to a real boot when present.
    let log = SerialLog::new(4);
    let irq: Arc<dyn crate::devices::Interrupt> = match IrqFd::new(&m.vm, 4) {
        Ok(i) => i,
        Err(_) => Arc::new(NoIrq),
    };
    let mut pio = Bus::new();
    pio.insert(
        COM1_PORT,
        COM1_LEN,
        Arc::new(Mutex::new(Serial::new(irq, log.clone(), false))),
    )
    .map_err(|e| e.to_string())?;
    crate::seccomp::apply(crate::seccomp::Role::Vcpu).map_err(|e| isolate_core::error_chain(&e))?;
    let mut first = None;
    let mut counts = ExitCounts::default();
    let stop = StopFlag::new();
    let reason = vcpu::run(
        &mut m.vcpus[0],
        &pio,
        &Bus::new(),
        &stop,
        &mut counts,
        || first = Some(t0.elapsed()),
    );
    if reason != StopReason::Halt {
        return Err(format!("the payload ended with {reason:?}, not HLT"));
    }
    let serial = log.last_lines().join("");
    Ok(format!(
        "probe ok first_exit_us={} serial={serial}",
        first.map_or(0, |d| d.as_micros())
    ))
}

struct NoIrq;
impl crate::devices::Interrupt for NoIrq {
    fn trigger(&self) {}
}
