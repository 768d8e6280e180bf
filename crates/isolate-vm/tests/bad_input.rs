//! Bad input to VM mode: one clear error, exit code 125, fast, nothing left
//! behind. These run on any host with KVM (a PVM host is told to accept the
//! kernel with `ISOLATE_PVM_KERNEL=1`, since no guest is booted here).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isolate_core::{Error, Isolator, Volume, Workload};
use isolate_vm::VmIsolator;

fn vm() -> VmIsolator {
    VmIsolator::with_vmm(env!("CARGO_BIN_EXE_isolate-vmm"))
}

/// Skips (with the reason) when KVM or the installed rootfs/init are missing.
fn ready(test: &str) -> bool {
    // Same value in every test of this file: the host check is not under test here.
    std::env::set_var("ISOLATE_PVM_KERNEL", "1");
    if let Err(e) = isolate_vm::host::open_kvm() {
        eprintln!("SKIP {test}: {}", e.chain());
        return false;
    }
    for (what, r) in [
        ("rootfs", isolate_core::paths::rootfs(None)),
        ("init", isolate_core::paths::init(None)),
    ] {
        if let Err(e) = r {
            eprintln!("SKIP {test}: no {what}: {}", e.chain());
            return false;
        }
    }
    true
}

fn spawn_err(w: &Workload) -> (Error, Duration) {
    let t = Instant::now();
    match vm().spawn(w) {
        Ok(_) => panic!("spawn accepted {w:?}"),
        Err(e) => (e, t.elapsed()),
    }
}

fn isolate_cgroups() -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["/sys/fs/cgroup/isolate", "/sys/fs/cgroup/cpu/isolate"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            out.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("vm-run-")),
            );
        }
    }
    out
}

fn assert_clear(e: &Error, took: Duration, needle: &str) {
    let text = e.chain();
    assert_eq!(e.exit_code(), 125, "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(text.contains(needle), "{needle:?} not in {text:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}: {text}");
    assert!(isolate_cgroups().is_empty(), "cgroup left behind");
}

fn with_kernel(path: &Path) -> Workload {
    let mut w = Workload::new("/bin/true");
    w.vm.kernel = Some(path.to_path_buf());
    w
}

#[test]
fn a_text_file_is_not_a_kernel() {
    if !ready("a_text_file_is_not_a_kernel") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("notes.txt");
    std::fs::write(&k, "this is not a kernel\n").unwrap();
    let (e, took) = spawn_err(&with_kernel(&k));
    assert!(matches!(e, Error::Invalid { ref field, .. } if field == "kernel"));
    assert_clear(&e, took, "is not a Linux kernel");
}

#[test]
fn a_truncated_kernel_is_refused() {
    if !ready("a_truncated_kernel_is_refused") {
        return;
    }
    // Any x86-64 ELF cut short has the same problem: the VMM binary will do.
    let whole = std::fs::read(env!("CARGO_BIN_EXE_isolate-vmm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("vmlinux");
    std::fs::write(&k, &whole[..64 * 1024]).unwrap();
    let (e, took) = spawn_err(&with_kernel(&k));
    assert_clear(&e, took, "is truncated");
}

#[test]
fn a_missing_kernel_is_named() {
    if !ready("a_missing_kernel_is_named") {
        return;
    }
    let (e, took) = spawn_err(&with_kernel(Path::new("/nonexistent/vmlinux")));
    assert!(matches!(e, Error::AssetNotFound { .. }), "{e:?}");
    assert_clear(&e, took, "/nonexistent/vmlinux");
}

/// An ELF kernel whose one segment occupies `memsz` bytes from 16 MiB.
fn fake_kernel(dir: &Path, memsz: u64) -> PathBuf {
    let mut b = vec![0u8; 0x2000];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    b[18..20].copy_from_slice(&62u16.to_le_bytes());
    b[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes());
    b[52..54].copy_from_slice(&64u16.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = &mut b[64..120];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes());
    ph[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
    ph[16..24].copy_from_slice(&0x100_0000u64.to_le_bytes());
    ph[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes());
    ph[32..40].copy_from_slice(&0x1000u64.to_le_bytes());
    ph[40..48].copy_from_slice(&memsz.to_le_bytes());
    let p = dir.join("vmlinux");
    std::fs::write(&p, b).unwrap();
    p
}

#[test]
fn memory_below_what_the_kernel_needs_says_the_minimum() {
    if !ready("memory_below_what_the_kernel_needs_says_the_minimum") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut w = with_kernel(&fake_kernel(dir.path(), 512 << 20));
    w.memory(16 << 20);
    let (e, took) = spawn_err(&w);
    assert!(matches!(e, Error::Invalid { ref field, .. } if field == "memory"));
    assert_clear(&e, took, "the guest needs at least");
}

#[test]
fn memory_above_the_host_is_refused() {
    if !ready("memory_above_the_host_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut w = with_kernel(&fake_kernel(dir.path(), 1 << 20));
    w.memory(64 << 30);
    let (e, took) = spawn_err(&w);
    assert!(matches!(e, Error::Invalid { ref field, .. } if field == "memory"));
    assert_clear(&e, took, "MiB");
}

#[test]
fn host_directory_volumes_are_not_supported() {
    if !ready("host_directory_volumes_are_not_supported") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut w = with_kernel(&fake_kernel(dir.path(), 1 << 20));
    w.volume(Volume::host("/tmp", "/data"));
    let (e, took) = spawn_err(&w);
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    assert_clear(&e, took, "named volume");
}

#[test]
fn a_missing_rootfs_is_named() {
    if !ready("a_missing_rootfs_is_named") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut w = with_kernel(&fake_kernel(dir.path(), 1 << 20));
    w.rootfs = Some("/nonexistent/rootfs".into());
    let (e, took) = spawn_err(&w);
    assert_clear(&e, took, "/nonexistent/rootfs");
}
