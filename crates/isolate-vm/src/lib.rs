//! VM mode of isolate: a small KVM monitor (VMM) on the rust-vmm crates
//! that boots a minimal Linux guest and runs the workload in it.
//!
//! ```no_run
//! use isolate_core::{Isolator, Stdio, Workload};
//! use isolate_vm::VmIsolator;
//!
//! let mut w = Workload::new("/bin/sh");
//! w.args(["-c", "echo hello from the guest"])
//!     .memory(128 << 20)
//!     .stdout(Stdio::Piped);
//! w.validate()?;
//! let vm = VmIsolator::new();
//! vm.check_host()?; // no KVM, no permission, PVM host: a clear error, fast
//! let running = vm.spawn(&w)?;
//! let mut out = String::new();
//! std::io::Read::read_to_string(&mut running.take_stdout().unwrap(), &mut out).ok();
//! let outcome = running.wait()?;
//! assert!(outcome.success() && out == "hello from the guest\n");
//! # Ok::<(), isolate_core::Error>(())
//! ```
//!
//! # Shape
//!
//! The VMM runs in its own process, `isolate-vmm` ([`vmm`]), never in the
//! caller's: its CPU quota is a cgroup on that process (the same
//! `isolate-cgroups` code as container mode), its memory is measurable,
//! and nothing the guest does can exit or crash the library user's process.
//! The guest is hostile, so the VMM is jailed as Firecracker's jailer
//! does: started in new pid, mount, network, IPC and UTS namespaces
//! ([`spawn`]), it opens every file it needs, then `pivot_root`s into an
//! empty tmpfs and drops to a per-VM unprivileged uid with no capabilities
//! and `no_new_privs` ([`jail`]), builds the VM, and runs guest code only
//! once every thread has its seccomp filter ([`seccomp`]: `ioctl` by
//! request per thread, no executable memory, no signals to others).
//!
//! `VmIsolator::spawn` (library side, [`VmIsolator`]):
//! 1. checks the inputs and the host, in well under a second: the kernel's
//!    headers ([`host::probe_kernel`]: not a kernel, truncated), `/dev/kvm`
//!    (missing, no permission, API version, capabilities) and PVM hosts
//!    ([`host`]), guest RAM against the MMIO window and the host's RAM
//!    ([`sizing`]); every failure is one line and exit code 125;
//! 2. builds the initrd with `isolate-image` (cached root archive, then the
//!    per-run spec archive) and picks the disks (block-image root, named
//!    volumes; host-directory volumes are refused: a VM cannot share them);
//! 3. finds `isolate-vmm` (`ISOLATE_VMM`, next to the executable or its
//!    parent directory, `${ISOLATE_HOME}/bin`, `PATH`), starts it in new
//!    namespaces with an empty environment and the workload's stdio as
//!    fds 0–2 ([`spawn`]), moves it into `isolate/vm-<id>` (CPU
//!    quota, I/O weight), registers named workloads (`isolate_core::state`),
//!    and writes the [`wire::VmmConfig`] as one JSON line on a pipe;
//! 4. a thread reads the VMM's [`wire::Report`] lines (`started`, then
//!    `finished` or `failed`) from a second pipe; `wait` turns them into an
//!    `Outcome` or an error.
//!
//! The config pipe stays open for the VMM's life: when the library's process
//! dies (even by SIGKILL) the kernel closes it, the VMM sees end-of-file and
//! ends the VM. This is used instead of `PR_SET_PDEATHSIG`, which fires
//! when the *thread* that spawned the child exits — a library user may
//! spawn from a short-lived thread.
//!
//! # Boot
//!
//! [`builder`] holds the whole boot recipe, in order. Guest RAM is the
//! workload's memory limit plus room for the guest kernel and the initrd
//! ([`sizing`]); the workload's own limit is enforced inside the guest (a
//! guest cgroup set by the init). The kernel is an ELF `vmlinux` (entered
//! through its PVH note, else its 64-bit entry) or a `bzImage` (64-bit boot
//! protocol). The pages the kernel and the initrd land in are populated in
//! one call before they are copied ([`builder::prefault`]): on nested and
//! emulated hosts, where every page fault is costly, this made loading the
//! 17 MB `vmlinux` about 5 times faster. Devices: 8250 serial (kernel log, kept for error messages,
//! shown with `console_log`), i8042 (the guest's `reboot=k` reset ends the
//! VM), three virtio-mmio consoles (stdin+stdout, stderr, control) and
//! virtio-blk disks ([`devices`]). [`mptable`] tells the guest about its
//! vCPUs and the IOAPIC (there is no ACPI).
//!
//! # Lifecycle (in the VMM)
//!
//! stdin is fed to console 0 and its end is sent as `stdin_eof` on the
//! control console; the init's control lines (`started`, `exit`, `error`)
//! drive the outcome; a boot watchdog (`ISOLATE_BOOT_TIMEOUT`, default
//! 30 s) fails a guest that never starts the workload with the last kernel
//! console lines; `timeout` ends the VM as `TimedOut`; SIGTERM/SIGINT/…
//! sent to the VMM are forwarded to the workload, SIGKILL ends the VM.
//! After the exit report the VMM waits for the guest's reset (the init
//! syncs and unmounts volumes first).
//!
//! # Limits
//!
//! `memory`: guest RAM (fixed: changing it while running would need a
//! balloon device, so `update` refuses it); `cpus`: the vCPU count
//! (`ceil(cpus)` unless `vcpus` is given) plus a CFS quota on the VMM's
//! cgroup, changeable live; `pids`: inside the guest.
//!
//! # PVM hosts
//!
//! A PVM KVM (`/sys/module/kvm_pvm`) boots only kernels built with
//! `CONFIG_PVM_GUEST`; see [`kernel`] for how such a kernel is recognised.
//! With any other kernel, VM mode refuses at once (see [`host::PVM_REASON`]).

pub mod boot;
pub mod builder;
pub mod cpu;
pub mod devices;
pub mod host;
mod isolator;
pub mod jail;
pub mod kernel;
pub mod layout;
pub mod mptable;
mod probe;
pub mod ram;
pub mod seccomp;
pub mod sizing;
pub mod spawn;
#[cfg(feature = "test-hooks")]
pub mod test_guest;
pub mod vcpu;
pub mod vmm;
pub mod wire;

pub use isolator::{VmError, VmIsolator, VmRunning};

/// Most vCPUs a VM gets.
pub const MAX_VCPUS: u8 = 32;
