//! The vCPU run loop: `KVM_RUN`, then dispatch port I/O and MMIO exits to
//! the device buses, until the guest halts, resets or shuts down, or the
//! VMM asks the vCPU to stop.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::devices::Bus;

/// Why the VM (or one vCPU) stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The guest executed HLT with interrupts off or without an in-kernel
    /// irqchip (tiny payloads); a Linux guest never exits for HLT.
    Halt,
    /// The guest reset the machine (i8042 command 0xFE, `reboot=k`).
    Reset,
    /// Triple fault (`KVM_EXIT_SHUTDOWN`).
    Shutdown,
    /// KVM reported a system event (PSCI/ACPI-style shutdown or reset).
    SystemEvent(u32),
    /// The VMM asked the vCPUs to stop.
    Requested,
    /// KVM or the guest state failed.
    Error(String),
}

/// A stop request shared by the vCPUs and the devices (the i8042's reset).
#[derive(Debug, Default)]
pub struct StopFlag(AtomicU8);

const RUNNING: u8 = 0;
const STOP_RESET: u8 = 1;
const STOP_REQUESTED: u8 = 2;

impl StopFlag {
    /// A flag in the running state.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The guest asked for a reset.
    pub fn reset(&self) {
        let _ = self
            .0
            .compare_exchange(RUNNING, STOP_RESET, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The VMM asks the vCPUs to stop.
    pub fn request(&self) {
        let _ =
            self.0
                .compare_exchange(RUNNING, STOP_REQUESTED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Why the VM must stop, if it must.
    pub fn reason(&self) -> Option<StopReason> {
        match self.0.load(Ordering::SeqCst) {
            RUNNING => None,
            STOP_RESET => Some(StopReason::Reset),
            _ => Some(StopReason::Requested),
        }
    }
}

/// Counts of what the loop handled (for tests and the report).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExitCounts {
    /// Port I/O exits.
    pub pio: u64,
    /// MMIO exits.
    pub mmio: u64,
    /// Accesses no device claimed.
    pub unclaimed: u64,
}

/// Runs `vcpu` until it stops; `on_first_exit` is called once, at the first
/// exit of any kind (the guest ran at least one instruction).
pub fn run(
    vcpu: &mut VcpuFd,
    pio: &Bus,
    mmio: &Bus,
    stop: &StopFlag,
    counts: &mut ExitCounts,
    mut on_first_exit: impl FnMut(),
) -> StopReason {
    let mut first = true;
    loop {
        if let Some(r) = stop.reason() {
            return r;
        }
        let exit = vcpu.run();
        if first {
            first = false;
            on_first_exit();
        }
        match exit {
            Ok(VcpuExit::IoOut(port, data)) => {
                counts.pio += 1;
                if !pio.write(u64::from(port), data) {
                    counts.unclaimed += 1;
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                counts.pio += 1;
                if !pio.read(u64::from(port), data) {
                    // Nothing there: an ISA bus reads all ones.
                    data.fill(0xff);
                    counts.unclaimed += 1;
                }
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                counts.mmio += 1;
                if !mmio.write(addr, data) {
                    counts.unclaimed += 1;
                }
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                counts.mmio += 1;
                if !mmio.read(addr, data) {
                    data.fill(0);
                    counts.unclaimed += 1;
                }
            }
            Ok(VcpuExit::Hlt) => return StopReason::Halt,
            Ok(VcpuExit::Shutdown) => {
                if log::log_enabled!(log::Level::Error) {
                    log::error!("the guest stopped with a triple fault: {}", state(vcpu));
                }
                return StopReason::Shutdown;
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => return StopReason::SystemEvent(kind),
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return StopReason::Error(format!(
                "KVM could not enter the guest (hardware entry failure {reason:#x} on CPU {cpu})"
            ))
            }
            Ok(VcpuExit::InternalError) => {
                return StopReason::Error("KVM internal error while running the guest".into())
            }
            Ok(VcpuExit::Intr) => {}
            Ok(other) => {
                return StopReason::Error(format!("unexpected vCPU exit {other:?}"));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // A signal kicked us out of KVM_RUN; re-check the stop flag.
            }
            Err(e) => return StopReason::Error(format!("KVM_RUN failed: {e}")),
        }
    }
}

/// The vCPU's registers in one line, for a guest that crashed (the
/// instruction pointer, stack, control registers and descriptor tables
/// say where and why; e.g. `RIP` against the guest kernel's `System.map`).
pub fn state(vcpu: &VcpuFd) -> String {
    let regs = match vcpu.get_regs() {
        Ok(r) => format!(
            "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x}",
            r.rip, r.rsp, r.rflags, r.rax
        ),
        Err(e) => format!("(registers unreadable: {e})"),
    };
    let sregs = match vcpu.get_sregs() {
        Ok(s) => format!(
            "cs={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} idt={:#x}/{:#x} gdt={:#x}/{:#x} tr={:#x}",
            s.cs.selector,
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.efer,
            s.idt.base,
            s.idt.limit,
            s.gdt.base,
            s.gdt.limit,
            s.tr.base
        ),
        Err(e) => format!("(special registers unreadable: {e})"),
    };
    format!("{regs} {sregs}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_reason_wins() {
        let f = StopFlag::new();
        assert_eq!(f.reason(), None);
        f.reset();
        f.request();
        assert_eq!(f.reason(), Some(StopReason::Reset));
        let g = StopFlag::new();
        g.request();
        g.reset();
        assert_eq!(g.reason(), Some(StopReason::Requested));
    }
}
