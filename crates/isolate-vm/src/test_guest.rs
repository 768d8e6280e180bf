//! Test-only (cargo feature `test-hooks`, never in release builds): a
//! hand-made real-mode guest the VMM can run instead of Linux, so that its
//! jail can be tested on any KVM host (PVM included), and a device through
//! which that guest makes the VMM's vCPU thread attempt a forbidden system
//! call, as a guest that took over the VMM would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_ioctls::Kvm;
use vm_memory::{Bytes, GuestAddress};

use crate::builder::{self, BuildError, ConsoleSinks, MicroVm};
use crate::devices::serial::{Serial, SerialLog, COM1_LEN, COM1_PORT};
use crate::devices::virtio::Console;
use crate::devices::{Bus, BusDevice, Interrupt};
use crate::vcpu::StopFlag;

/// The hook device's port.
pub const HOOK_PORT: u16 = 0x510;

/// A system call the jailed VMM must not be able to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum ForbiddenCall {
    /// `open("/etc/passwd")`.
    OpenHostFile = 1,
    /// An `ioctl` other than `KVM_RUN` (`KVM_CREATE_VM`).
    Ioctl = 2,
    /// `mmap` with `PROT_EXEC`.
    MmapExec = 3,
    /// `mprotect` to `PROT_EXEC`.
    MprotectExec = 4,
    /// `kill` of another process (pid 2).
    SignalOther = 5,
    /// `fork`.
    Fork = 6,
}

impl ForbiddenCall {
    /// Every one.
    pub const ALL: [ForbiddenCall; 6] = [
        ForbiddenCall::OpenHostFile,
        ForbiddenCall::Ioctl,
        ForbiddenCall::MmapExec,
        ForbiddenCall::MprotectExec,
        ForbiddenCall::SignalOther,
        ForbiddenCall::Fork,
    ];

    fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u8 == b)
    }

    /// Makes the call; returns its raw result (reached only without a filter).
    fn make(self) -> i64 {
        // SAFETY: each call passes valid arguments (a NUL-terminated path,
        // fd -1, fresh anonymous mappings that are never used, signal 0)
        // and touches no memory of ours; a forked child exits at once.
        unsafe {
            match self {
                ForbiddenCall::OpenHostFile => libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    c"/etc/passwd".as_ptr(),
                    libc::O_RDONLY,
                ),
                ForbiddenCall::Ioctl => libc::syscall(libc::SYS_ioctl, -1, 0xae01, 0),
                ForbiddenCall::MmapExec => libc::syscall(
                    libc::SYS_mmap,
                    0,
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                ),
                ForbiddenCall::MprotectExec => {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    libc::syscall(
                        libc::SYS_mprotect,
                        p,
                        4096,
                        libc::PROT_READ | libc::PROT_EXEC,
                    )
                }
                ForbiddenCall::SignalOther => libc::syscall(libc::SYS_kill, 2, 0),
                ForbiddenCall::Fork => {
                    let pid = libc::syscall(libc::SYS_fork);
                    if pid == 0 {
                        libc::_exit(0);
                    }
                    pid
                }
            }
        }
    }
}

/// What the test guest does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestGuest {
    /// Reads the hook port in a loop (each read takes 1 ms) until the VMM
    /// is told to end: a running VMM to inspect.
    Spin,
    /// Asks the hook device for this call, then halts.
    Forbidden(ForbiddenCall),
}

impl TestGuest {
    /// The real-mode code, run at 0x1000.
    fn code(self) -> Vec<u8> {
        let [lo, hi] = HOOK_PORT.to_le_bytes();
        match self {
            // mov dx, HOOK_PORT; l: in al, dx; jmp l
            TestGuest::Spin => vec![0xba, lo, hi, 0xec, 0xeb, 0xfd],
            // mov dx, HOOK_PORT; mov al, CALL; out dx, al; hlt
            TestGuest::Forbidden(c) => vec![0xba, lo, hi, 0xb0, c as u8, 0xee, 0xf4],
        }
    }
}

/// The hook device: a read waits 1 ms and returns 0; a write makes the
/// forbidden call it names, on the vCPU thread that handles the exit.
struct Hook;

impl BusDevice for Hook {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        std::thread::sleep(Duration::from_millis(1));
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let Some(call) = data.first().copied().and_then(ForbiddenCall::from_byte) {
            let r = call.make();
            eprintln!("isolate-vmm test hook: {call:?} was allowed (returned {r})");
        }
    }
}

struct NoIrq;
impl Interrupt for NoIrq {
    fn trigger(&self) {}
}

/// A 1 MiB VM without irqchip whose vCPU runs `guest` in real mode; the
/// port bus has the serial port and the hook device, the consoles are
/// unattached.
pub fn build(kvm: Kvm, guest: &TestGuest, sinks: ConsoleSinks) -> Result<MicroVm, BuildError> {
    let machine = builder::create_machine(kvm, 1 << 20, 1, false)?;
    machine
        .mem
        .write_slice(&guest.code(), GuestAddress(0x1000))
        .map_err(|e| BuildError::Initrd(e.to_string()))?;
    let vcpu = &machine.vcpus[0];
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| BuildError::Kvm("read the segments", e))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| BuildError::Kvm("set the segments", e))?;
    let regs = kvm_bindings::kvm_regs {
        rip: 0x1000,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| BuildError::Kvm("set the registers", e))?;
    let serial_log = SerialLog::new(4);
    let mut pio = Bus::new();
    pio.insert(
        COM1_PORT,
        COM1_LEN,
        Arc::new(Mutex::new(Serial::new(
            Arc::new(NoIrq),
            serial_log.clone(),
            false,
        ))),
    )
    .map_err(|e| BuildError::Device("serial port", e))?;
    pio.insert(u64::from(HOOK_PORT), 1, Arc::new(Mutex::new(Hook)))
        .map_err(|e| BuildError::Device("test hook", e))?;
    let stdin = Console::new(sinks.stdout).input();
    let control = Console::new(sinks.control).input();
    Ok(MicroVm {
        machine,
        pio: Arc::new(pio),
        mmio: Arc::new(Bus::new()),
        stop: StopFlag::new(),
        serial_log,
        stdin,
        control,
        cmdline: String::new(),
    })
}
