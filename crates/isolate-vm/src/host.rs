//! Can this host boot a guest? Fast checks (a few syscalls and file
//! reads), done by `VmIsolator::check_host` and before every spawn.
//! Each failure is an [`isolate_core::Error::Unavailable`] that says which
//! check failed and what to do.

use std::path::Path;

use isolate_core::Error;
use kvm_ioctls::{Cap, Kvm};

use crate::kernel::{self, KernelError, KernelInfo};

/// The KVM API version every KVM since Linux 2.6.22 reports.
const KVM_API_VERSION: i32 = 12;

/// What kind of KVM the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmFlavor {
    /// Hardware virtualisation (VMX or SVM): boots standard kernels.
    Hardware,
    /// PVM (`kvm_pvm`): boots only kernels built with `CONFIG_PVM_GUEST`.
    Pvm,
}

/// The message for a PVM host and a kernel that cannot boot on it.
pub const PVM_REASON: &str = "this host's KVM is PVM (kvm_pvm), which cannot boot a standard guest kernel; pass a PVM-capable kernel (CONFIG_PVM_GUEST; a vmlinux with the pvm_early_setup symbol, or set ISOLATE_PVM_KERNEL=1) with --kernel, use a VMX/SVM host, or run VM mode in the emulated KVM host: tests/emulated-host/run";

fn unavailable(reason: impl Into<String>) -> Error {
    Error::Unavailable {
        backend: "vm",
        reason: reason.into(),
    }
}

/// Which KVM this is, from `/sys/module`.
pub fn flavor() -> KvmFlavor {
    flavor_at(Path::new("/sys/module"))
}

/// [`flavor`] under another sysfs module directory (tests).
pub fn flavor_at(sys_module: &Path) -> KvmFlavor {
    if sys_module.join("kvm_pvm").exists() {
        KvmFlavor::Pvm
    } else {
        KvmFlavor::Hardware
    }
}

/// Opens `/dev/kvm` and checks its API version and the capabilities the
/// VMM uses.
pub fn open_kvm() -> Result<Kvm, Error> {
    open_kvm_at(Path::new("/dev/kvm"))
}

/// [`open_kvm`] on another device path (tests).
pub fn open_kvm_at(dev: &Path) -> Result<Kvm, Error> {
    if !dev.exists() {
        return Err(unavailable(format!(
            "{} does not exist: load the KVM module (modprobe kvm_intel or kvm_amd) on a host whose CPU has VMX or SVM (nested virtualisation enabled, if this is itself a VM), or use --mode container",
            dev.display()
        )));
    }
    let kvm = Kvm::new_with_path(dev_cstr(dev)?.as_c_str()).map_err(|e| match e.errno() {
        libc::EACCES | libc::EPERM => unavailable(format!(
            "no permission to open {}: run as root or add your user to the kvm group (usermod -aG kvm $USER, then log in again)",
            dev.display()
        )),
        errno => unavailable(format!(
            "cannot open {}: {}",
            dev.display(),
            std::io::Error::from_raw_os_error(errno)
        )),
    })?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(unavailable(format!(
            "{} reports KVM API version {version}, but version {KVM_API_VERSION} is needed; update the host kernel",
            dev.display()
        )));
    }
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(unavailable(format!(
                "the host's KVM lacks {name}, which the VMM needs; use a newer host kernel"
            )));
        }
    }
    Ok(kvm)
}

fn dev_cstr(dev: &Path) -> Result<std::ffi::CString, Error> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(dev.as_os_str().as_bytes())
        .map_err(|_| unavailable(format!("bad device path {}", dev.display())))
}

/// Reads the kernel's headers ([`kernel::probe_with`]), searching its
/// symbol table for the PVM hook only on a PVM host: elsewhere it does not
/// matter.
pub fn probe_kernel(path: &Path) -> Result<KernelInfo, KernelError> {
    let pvm_host = flavor() == KvmFlavor::Pvm;
    kernel::probe_with(path, pvm_host)
}

/// The whole host check for booting `kernel` (None: no kernel known yet).
pub fn check(kernel: Option<&KernelInfo>) -> Result<(), Error> {
    check_with(Path::new("/dev/kvm"), Path::new("/sys/module"), kernel)
}

/// [`check`] with other device and sysfs paths (tests).
pub fn check_with(dev: &Path, sys_module: &Path, kernel: Option<&KernelInfo>) -> Result<(), Error> {
    open_kvm_at(dev)?;
    check_pvm_at(sys_module, kernel)
}

/// The PVM half of [`check`], for a caller that has already opened KVM:
/// on a PVM host only a kernel built as a PVM guest boots.
pub fn check_pvm(kernel: Option<&KernelInfo>) -> Result<(), Error> {
    check_pvm_at(Path::new("/sys/module"), kernel)
}

/// [`check_pvm`] under another sysfs module directory (tests).
pub fn check_pvm_at(sys_module: &Path, kernel: Option<&KernelInfo>) -> Result<(), Error> {
    if flavor_at(sys_module) == KvmFlavor::Pvm && !kernel.is_some_and(|k| k.pvm_capable) {
        return Err(unavailable(PVM_REASON));
    }
    Ok(())
}

/// The host's RAM, bytes (`MemTotal` of `/proc/meminfo`).
pub fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Format;

    fn reason(e: Error) -> String {
        match e {
            Error::Unavailable { backend, reason } => {
                assert_eq!(backend, "vm");
                reason
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn missing_dev_kvm_says_to_load_the_module() {
        let r = reason(open_kvm_at(Path::new("/nonexistent/kvm")).unwrap_err());
        assert!(r.contains("modprobe kvm_intel or kvm_amd"), "{r}");
    }

    #[test]
    fn pvm_host_with_standard_kernel_is_refused_fast() {
        if !Path::new("/dev/kvm").exists() {
            eprintln!("SKIP pvm_host_with_standard_kernel_is_refused_fast: no /dev/kvm here");
            return;
        }
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir(sys.path().join("kvm_pvm")).unwrap();
        let standard = KernelInfo {
            format: Format::Elf,
            footprint_end: 0x200_0000,
            pvm_capable: false,
        };
        let t = std::time::Instant::now();
        let r = reason(check_with(Path::new("/dev/kvm"), sys.path(), Some(&standard)).unwrap_err());
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert!(r.contains("kvm_pvm") && r.contains("--kernel"), "{r}");
        let pvm = KernelInfo {
            pvm_capable: true,
            ..standard
        };
        check_with(Path::new("/dev/kvm"), sys.path(), Some(&pvm)).unwrap();
    }

    #[test]
    fn this_host_is_classified() {
        let f = flavor_at(Path::new("/sys/module"));
        let expect = if Path::new("/sys/module/kvm_pvm").exists() {
            KvmFlavor::Pvm
        } else {
            KvmFlavor::Hardware
        };
        assert_eq!(f, expect);
    }

    #[test]
    fn host_memory_is_known() {
        assert!(host_memory().unwrap() > 64 << 20);
    }
}
