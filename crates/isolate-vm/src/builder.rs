//! The boot recipe of a microVM, top to bottom.
//!
//! [`build`] is the whole order of boot; each step is a small function
//! below it:
//!
//! 1. [`create_machine`]: open KVM → create the VM → guest RAM (one region
//!    from 0, its host mapping 2 MiB aligned: see [`crate::ram`]) → KVM's TSS and identity-map pages → in-kernel irqchip (PIC,
//!    IOAPIC, LAPICs) → PIT → vCPUs;
//! 2. [`kernel::load`]: the ELF `vmlinux` (PVH entry if it has the note) or
//!    the bzImage;
//! 3. [`load_initrd`]: the root archive with the spec archive appended,
//!    at the top of RAM;
//! 4. devices: [`attach_legacy`] (8250 serial at 0x3f8 / IRQ 4, i8042 at
//!    0x60–0x64 for the reset), then on the virtio-mmio bus
//!    [`attach_console`] ×3 (stdin+stdout, stderr, control — the order the
//!    guest init expects) and [`attach_block`] per disk;
//! 5. the kernel command line (announcing each virtio-mmio device), the MP
//!    table (vCPUs, IOAPIC, interrupt routing: there is no ACPI) and the
//!    boot information (`boot_params` or PVH `hvm_start_info`);
//! 6. [`cpu::configure_vcpu`] for each vCPU: CPUID, MSRs, FPU, LAPIC, and
//!    for the boot vCPU the segments, page tables and registers of the entry.
//!
//! The result, a [`MicroVm`], is started with [`MicroVm::start`]: one
//! thread per vCPU running [`vcpu::run`].

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    ReadVolatile,
};
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{self, BootError, InitrdRegion};
use crate::cpu::{self, CpuError};
use crate::devices::i8042::{I8042, I8042_LEN, I8042_PORT};
use crate::devices::serial::{Serial, SerialLog, COM1_IRQ, COM1_LEN, COM1_PORT};
use crate::devices::virtio::{Console, ConsoleInput, MmioTransport};
use crate::devices::{Bus, BusDevice, DeviceError, Interrupt};
use crate::kernel::{self, Entry, KernelError};
use crate::layout::{self, KVM_IDENTITY_MAP_START, KVM_TSS_START, MMIO_LEN};
use crate::ram::RamMapping;
use crate::vcpu::{self, ExitCounts, StopFlag, StopReason};
use crate::wire::{BootSpec, InitrdPart};

/// Errors while building the VM. Each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A KVM ioctl on the VM failed.
    #[error("cannot {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// Guest memory could not be allocated.
    #[error(transparent)]
    Memory(#[from] crate::ram::RamError),
    /// Guest memory size out of range.
    #[error(
        "guest memory of {size} MiB is out of range: it must be between {min} MiB and {max} MiB"
    )]
    MemorySize {
        /// Asked, MiB.
        size: u64,
        /// Least, MiB.
        min: u64,
        /// Most, MiB.
        max: u64,
    },
    /// The kernel.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The initrd does not fit or cannot be read.
    #[error("cannot load the initrd ({0})")]
    Initrd(String),
    /// A device could not be set up.
    #[error("cannot set up the {0}")]
    Device(&'static str, #[source] DeviceError),
    /// An interrupt line could not be wired.
    #[error("cannot wire interrupt {0}")]
    Irq(u32, #[source] std::io::Error),
    /// Too many virtio devices for the interrupt lines.
    #[error("too many virtio devices ({0}); at most 19 fit")]
    TooManyDevices(usize),
    /// The boot information.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The MP table.
    #[error(transparent)]
    Mptable(#[from] crate::mptable::MptableError),
    /// A vCPU.
    #[error("vCPU {0}")]
    Cpu(u8, #[source] CpuError),
    /// A vCPU thread could not be started.
    #[error("cannot start a vCPU thread")]
    Thread(#[source] std::io::Error),
}

// --- 1. the machine --------------------------------------------------------

/// A VM with RAM, interrupt controllers and vCPUs, nothing loaded yet.
pub struct Machine {
    /// The KVM system handle.
    pub kvm: Kvm,
    /// The VM.
    pub vm: VmFd,
    /// Guest RAM.
    pub mem: GuestMemoryMmap,
    /// The vCPUs, in id order.
    pub vcpus: Vec<VcpuFd>,
    /// Owner of the host mapping behind `mem` (dropped last).
    pub ram: RamMapping,
}

/// Creates the VM: RAM of `mem_size` bytes at guest address 0, the
/// in-kernel irqchip and PIT (if `irqchip`; without them HLT exits to the
/// VMM, which tiny test payloads use), and `vcpus` vCPUs.
pub fn create_machine(
    kvm: Kvm,
    mem_size: u64,
    vcpus: u8,
    irqchip: bool,
) -> Result<Machine, BuildError> {
    let vm = kvm
        .create_vm()
        .map_err(|e| BuildError::Kvm("create the VM", e))?;
    let (mem, ram) = crate::ram::map(mem_size)?;
    for (slot, region) in mem.iter().enumerate() {
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: `userspace_addr..+memory_size` is the mapping behind
        // `mem`, which the returned `Machine` keeps alive as long as `vm`
        // (fields drop in order: `vm` before `mem` and `ram`, its owner),
        // and no other slot overlaps it.
        unsafe { vm.set_user_memory_region(r) }
            .map_err(|e| BuildError::Kvm("register guest memory", e))?;
    }
    vm.set_identity_map_address(KVM_IDENTITY_MAP_START)
        .map_err(|e| BuildError::Kvm("set the identity-map address", e))?;
    vm.set_tss_address(KVM_TSS_START as usize)
        .map_err(|e| BuildError::Kvm("set the TSS address", e))?;
    if irqchip {
        vm.create_irq_chip()
            .map_err(|e| BuildError::Kvm("create the in-kernel irqchip", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit)
            .map_err(|e| BuildError::Kvm("create the PIT", e))?;
    }
    let vcpus = (0..vcpus)
        .map(|id| {
            vm.create_vcpu(u64::from(id))
                .map_err(|e| BuildError::Kvm("create a vCPU", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Machine {
        kvm,
        vm,
        mem,
        vcpus,
        ram,
    })
}

// --- the whole recipe -----------------------------------------------------

/// Where the guest's console output goes.
pub struct ConsoleSinks {
    /// Console 0 (`/dev/hvc0`) output: the workload's stdout.
    pub stdout: Box<dyn Write + Send>,
    /// Console 1 (`/dev/hvc1`) output: the workload's stderr.
    pub stderr: Box<dyn Write + Send>,
    /// Console 2 (`/dev/hvc2`) output: control lines from the guest init.
    pub control: Box<dyn Write + Send>,
}

/// A built VM, ready to start.
pub struct MicroVm {
    /// The VM, its RAM and its vCPUs.
    pub machine: Machine,
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Stop flag shared by vCPUs and the i8042.
    pub stop: Arc<StopFlag>,
    /// The kernel's console (last lines).
    pub serial_log: SerialLog,
    /// Input of console 0 (the workload's stdin).
    pub stdin: ConsoleInput,
    /// Input of console 2 (control messages to the guest).
    pub control: ConsoleInput,
    /// The kernel command line used.
    pub cmdline: String,
}

/// Every file a [`BootSpec`] names, opened: the VMM opens them before it
/// enters its jail (see [`crate::jail`]), where no path leads anywhere.
pub struct BootFiles {
    /// The kernel.
    pub kernel: File,
    /// One per initrd part (`None` for bytes).
    pub initrd: Vec<Option<File>>,
    /// The disks' devices, in order (their images open and locked).
    pub disks: Vec<crate::devices::virtio::Block>,
}

impl BootFiles {
    /// Opens the kernel, the initrd files and the disk images of `spec`.
    pub fn open(spec: &BootSpec) -> Result<Self, BuildError> {
        let kernel = File::open(&spec.kernel).map_err(|source| {
            BuildError::Kernel(KernelError::Read {
                path: spec.kernel.clone(),
                source,
            })
        })?;
        let initrd = spec
            .initrd
            .iter()
            .map(|p| match p {
                InitrdPart::File(path) => File::open(path).map(Some).map_err(|e| {
                    BuildError::Initrd(format!("cannot open {}: {e}", path.display()))
                }),
                InitrdPart::Bytes(_) => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let disks = spec
            .disks
            .iter()
            .map(|d| {
                crate::devices::virtio::Block::open(&d.path, d.read_only)
                    .map_err(|e| BuildError::Device("virtio block device", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            kernel,
            initrd,
            disks,
        })
    }
}

/// Builds the VM described by `spec` (see the module docs for the order).
pub fn build(kvm: Kvm, spec: &BootSpec, sinks: ConsoleSinks) -> Result<MicroVm, BuildError> {
    let files = BootFiles::open(spec)?;
    build_traced(kvm, spec, files, sinks, &|_| {})
}

/// [`build`] from files opened beforehand, calling `mark` after each step
/// (for timing). Opens nothing by path.
pub fn build_traced(
    kvm: Kvm,
    spec: &BootSpec,
    files: BootFiles,
    sinks: ConsoleSinks,
    mark: &dyn Fn(&str),
) -> Result<MicroVm, BuildError> {
    let BootFiles {
        kernel: mut kernel_file,
        initrd: initrd_files,
        disks,
    } = files;
    check_memory_size(spec.mem_size)?;
    let cpuid =
        cpu::supported_cpuid(&kvm).map_err(|e| BuildError::Kvm("read the supported CPUID", e))?;
    let tsc_deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);

    // 1. VM, RAM, irqchip, PIT, vCPUs.
    let machine = create_machine(kvm, spec.mem_size, spec.vcpus, true)?;
    mark("machine created");

    // 2. Kernel. Its pages are not populated ahead: guest RAM is backed by
    // huge pages (see `crate::ram`), so the copy faults once per 2 MiB, and
    // populating the whole footprint would also zero the memory below the
    // kernel, which the guest may never touch.
    let kernel = kernel::load_file(&machine.mem, &mut kernel_file, &spec.kernel)?;
    mark("kernel loaded");

    // 3. Initrd at the top of RAM.
    let initrd = load_initrd(&machine.mem, &spec.initrd, initrd_files, kernel.end)?;
    mark("initrd loaded");

    // 4. Devices.
    let stop = StopFlag::new();
    let mut pio = Bus::new();
    let mut mmio = Bus::new();
    let serial_log = attach_legacy(&machine.vm, &mut pio, &stop, spec.console_log)?;
    let mut slots = Vec::new();
    let stdin = attach_console(&machine, &mut mmio, &mut slots, sinks.stdout)?;
    attach_console(&machine, &mut mmio, &mut slots, sinks.stderr)?;
    let control = attach_console(&machine, &mut mmio, &mut slots, sinks.control)?;
    for block in disks {
        attach_block(&machine, &mut mmio, &mut slots, block)?;
    }
    mark("devices attached");

    // 5. Command line and boot information.
    let cmdline = boot::kernel_cmdline(&slots, !spec.console_log, &spec.cmdline_extra)?;
    boot::write_cmdline(&machine.mem, &cmdline)?;
    let (entry_addr, pvh, header) = match kernel.entry {
        Entry::Pvh(addr) => (addr.raw_value(), true, None),
        Entry::Linux64 { addr, header } => (addr.raw_value(), false, header),
    };
    crate::mptable::write(&machine.mem, spec.vcpus)?;
    boot::write_boot_info(
        &machine.mem,
        pvh,
        header,
        spec.mem_size,
        cmdline.len(),
        initrd,
    )?;

    // 6. vCPUs.
    let boot = cpu::BootCpu {
        count: spec.vcpus,
        entry: entry_addr,
        pvh,
        tsc_deadline,
    };
    for (id, vcpu) in machine.vcpus.iter().enumerate() {
        let id = id as u8;
        cpu::configure_vcpu(vcpu, &machine.mem, &cpuid, id, boot)
            .map_err(|e| BuildError::Cpu(id, e))?;
    }
    mark("vCPUs configured");

    Ok(MicroVm {
        machine,
        pio: Arc::new(pio),
        mmio: Arc::new(mmio),
        stop,
        serial_log,
        stdin,
        control,
        cmdline,
    })
}

/// Guest RAM must hold the boot structures and the kernel, and stay below
/// the MMIO window.
fn check_memory_size(size: u64) -> Result<(), BuildError> {
    let (min, max) = (MIN_MACHINE_MEMORY, layout::MAX_GUEST_MEMORY);
    if size < min || size > max || size & 0xfff != 0 {
        return Err(BuildError::MemorySize {
            size: size >> 20,
            min: min >> 20,
            max: max >> 20,
        });
    }
    Ok(())
}

/// Smallest guest RAM the machine accepts (a booting Linux needs more:
/// see [`crate::sizing`]).
pub const MIN_MACHINE_MEMORY: u64 = 2 << 20;

/// Populates the host pages behind guest RAM `[start, end)` in one
/// `madvise(MADV_POPULATE_WRITE)` (Linux 5.14+; ignored where missing).
/// The range is about to be written anyway (the initrd), so this adds
/// no memory; it replaces one page fault per 4 KiB with one system call,
/// which matters on nested and emulated hosts where each fault is costly.
pub fn prefault(mem: &GuestMemoryMmap, start: u64, end: u64) {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    let last = mem.last_addr().raw_value();
    let end = end.min(last + 1);
    if end <= start {
        return;
    }
    let Ok(host) = mem.get_host_address(GuestAddress(start)) else {
        return;
    };
    // Page-align down; the region is one mapping from guest address 0.
    let offset = (host as usize) & 0xfff;
    let len = (end - start) as usize + offset;
    // SAFETY: `host - offset .. + len` lies inside the single guest memory
    // mapping (start and end are inside guest RAM, which is one region
    // mapped page-aligned from address 0); MADV_POPULATE_WRITE only faults
    // pages in and changes no contents.
    unsafe {
        libc::madvise(host.sub(offset).cast(), len, MADV_POPULATE_WRITE);
    }
}

// --- 3. initrd --------------------------------------------------------------

/// Copies the initrd parts into guest memory, high, above `kernel_end`;
/// `files` holds the opened file of each `File` part (see [`BootFiles`]).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    parts: &[InitrdPart],
    files: Vec<Option<File>>,
    kernel_end: u64,
) -> Result<Option<InitrdRegion>, BuildError> {
    if parts.is_empty() {
        return Ok(None);
    }
    let mut total = 0u64;
    for (p, f) in parts.iter().zip(&files) {
        let len = match (p, f) {
            (InitrdPart::File(path), Some(f)) => f
                .metadata()
                .map_err(|e| BuildError::Initrd(format!("{}: {e}", path.display())))?
                .len(),
            (InitrdPart::Bytes(b), _) => b.len() as u64,
            (InitrdPart::File(path), None) => {
                return Err(BuildError::Initrd(format!(
                    "{} was not opened",
                    path.display()
                )))
            }
        };
        total += len.next_multiple_of(4);
    }
    let mem_size = mem.last_addr().raw_value() + 1;
    let region = boot::initrd_placement(mem_size, total, kernel_end.next_multiple_of(0x1000))
        .ok_or_else(|| {
            BuildError::Initrd(format!(
                "{} MiB of initrd does not fit in {} MiB of guest memory above the kernel",
                total.div_ceil(1 << 20),
                mem_size >> 20
            ))
        })?;
    prefault(mem, region.addr, region.addr + region.size);
    let mut at = region.addr;
    for (p, f) in parts.iter().zip(files) {
        let len = match (p, f) {
            (InitrdPart::File(path), Some(mut f)) => {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0) as usize;
                read_into(mem, GuestAddress(at), &mut f, len).map_err(|e| {
                    BuildError::Initrd(format!("cannot read {}: {e}", path.display()))
                })?;
                len as u64
            }
            (InitrdPart::Bytes(b), _) => {
                mem.write_slice(b, GuestAddress(at))
                    .map_err(|e| BuildError::Initrd(e.to_string()))?;
                b.len() as u64
            }
            _ => unreachable!("files and parts are built together"),
        };
        // Padding bytes are already zero: fresh guest RAM.
        at += len.next_multiple_of(4);
    }
    Ok(Some(region))
}

fn read_into(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    f: &mut (impl ReadVolatile + std::io::Read),
    len: usize,
) -> Result<(), vm_memory::GuestMemoryError> {
    mem.read_exact_volatile_from(addr, f, len)
}

// --- 4. devices --------------------------------------------------------------

/// An interrupt line: an `EventFd` registered with `KVM_IRQFD`.
pub struct IrqFd(EventFd);

impl IrqFd {
    /// Wires a new eventfd to guest interrupt line `gsi`.
    pub fn new(vm: &VmFd, gsi: u32) -> Result<Arc<Self>, BuildError> {
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| BuildError::Irq(gsi, e))?;
        vm.register_irqfd(&evt, gsi)
            .map_err(|e| BuildError::Irq(gsi, std::io::Error::from_raw_os_error(e.errno())))?;
        Ok(Arc::new(IrqFd(evt)))
    }
}

impl Interrupt for IrqFd {
    fn trigger(&self) {
        // A full counter (EAGAIN) means an interrupt is already pending.
        let _ = self.0.write(1);
    }
}

/// The 8250 serial (kernel console) and the i8042 (reset), on the port bus.
pub fn attach_legacy(
    vm: &VmFd,
    pio: &mut Bus,
    stop: &Arc<StopFlag>,
    console_log: bool,
) -> Result<SerialLog, BuildError> {
    let log = SerialLog::default();
    let serial = Serial::new(IrqFd::new(vm, COM1_IRQ)?, log.clone(), console_log);
    pio.insert(COM1_PORT, COM1_LEN, Arc::new(Mutex::new(serial)))
        .map_err(|e| BuildError::Device("serial port", e))?;
    let stop = stop.clone();
    let i8042 = I8042::new(move || stop.reset());
    pio.insert(I8042_PORT, I8042_LEN, Arc::new(Mutex::new(i8042)))
        .map_err(|e| BuildError::Device("i8042", e))?;
    Ok(log)
}

/// Puts a virtio device on the next MMIO slot; records (address, irq).
fn attach_virtio(
    machine: &Machine,
    mmio: &mut Bus,
    slots: &mut Vec<(u64, u32)>,
    what: &'static str,
    device: Box<dyn crate::devices::virtio::VirtioDevice>,
) -> Result<(), BuildError> {
    let (addr, irq) =
        layout::mmio_slot(slots.len()).ok_or(BuildError::TooManyDevices(slots.len() + 1))?;
    let transport = MmioTransport::new(machine.mem.clone(), IrqFd::new(&machine.vm, irq)?, device)
        .map_err(|e| BuildError::Device(what, e))?;
    let dev: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(transport));
    mmio.insert(addr, MMIO_LEN, dev)
        .map_err(|e| BuildError::Device(what, e))?;
    slots.push((addr, irq));
    Ok(())
}

/// A virtio console whose output goes to `out`; returns its input handle.
pub fn attach_console(
    machine: &Machine,
    mmio: &mut Bus,
    slots: &mut Vec<(u64, u32)>,
    out: Box<dyn Write + Send>,
) -> Result<ConsoleInput, BuildError> {
    let console = Console::new(out);
    let input = console.input();
    attach_virtio(machine, mmio, slots, "virtio console", Box::new(console))?;
    Ok(input)
}

/// A virtio-blk device (its image opened by [`BootFiles::open`]).
pub fn attach_block(
    machine: &Machine,
    mmio: &mut Bus,
    slots: &mut Vec<(u64, u32)>,
    block: crate::devices::virtio::Block,
) -> Result<(), BuildError> {
    attach_virtio(machine, mmio, slots, "virtio block device", Box::new(block))
}

// --- running ----------------------------------------------------------------

/// A vCPU thread's end: its id and why it stopped.
#[derive(Debug, Clone)]
pub struct VcpuStopped {
    /// vCPU id.
    pub id: u8,
    /// Why.
    pub reason: StopReason,
    /// What its loop handled.
    pub counts: ExitCounts,
}

impl MicroVm {
    /// Starts one thread per vCPU. Each calls `before_run` first (the VMM
    /// installs the thread's seccomp filter there and waits until every
    /// thread has one) and stops at once if it fails; each reports on
    /// `events` when it stops (mapped through `wrap`); vCPU 0 also calls
    /// `on_first_exit` once.
    pub fn start<E: Send + 'static>(
        &mut self,
        events: Sender<E>,
        wrap: fn(VcpuStopped) -> E,
        on_first_exit: impl FnMut() + Send + 'static,
        before_run: impl Fn() -> Result<(), String> + Clone + Send + 'static,
    ) -> Result<Vec<JoinHandle<()>>, BuildError> {
        let mut first = Some(on_first_exit);
        let vcpus = std::mem::take(&mut self.machine.vcpus);
        let mut handles = Vec::new();
        for (id, mut vcpu) in vcpus.into_iter().enumerate() {
            let (pio, mmio, stop, events) = (
                self.pio.clone(),
                self.mmio.clone(),
                self.stop.clone(),
                events.clone(),
            );
            let mut hook = first.take();
            let before_run = before_run.clone();
            let h = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    let mut counts = ExitCounts::default();
                    let reason = match before_run() {
                        Ok(()) => vcpu::run(&mut vcpu, &pio, &mmio, &stop, &mut counts, || {
                            if let Some(f) = hook.as_mut() {
                                f();
                            }
                        }),
                        Err(e) => StopReason::Error(e),
                    };
                    // Make the other vCPUs leave too, at their next exit.
                    stop.request();
                    let _ = events.send(wrap(VcpuStopped {
                        id: id as u8,
                        reason,
                        counts,
                    }));
                    // Keep the fd (and its KVM_RUN mapping) until the thread ends.
                    drop(vcpu);
                })
                .map_err(BuildError::Thread)?;
            handles.push(h);
        }
        Ok(handles)
    }
}
