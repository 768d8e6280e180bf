//! Lifecycle of a VM workload through the library and the VMM process:
//! named registration, live CPU-quota update, refused memory update,
//! stats, kill, the boot watchdog, and that nothing is left behind.
//!
//! On a PVM host (like the machines that build isolate) the guest kernel
//! cannot boot: opting in with `ISOLATE_PVM_KERNEL=1` makes the VMM try,
//! the guest never starts the workload, and the boot watchdog must say so.
//! Everything before the guest's start is the same on any KVM host.

use std::path::Path;
use std::time::{Duration, Instant};

use isolate_core::{state, Error, Isolator, Limits, Status, Workload};
use isolate_vm::VmIsolator;

fn vm() -> VmIsolator {
    VmIsolator::with_vmm(env!("CARGO_BIN_EXE_isolate-vmm"))
}

/// One state directory for the whole test binary (the variable is process-wide).
static STATE_DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();

fn ready(test: &str) -> bool {
    std::env::set_var("ISOLATE_PVM_KERNEL", "1");
    std::env::set_var("ISOLATE_BOOT_TIMEOUT", "3s");
    let dir = STATE_DIR.get_or_init(|| tempfile::tempdir().unwrap());
    std::env::set_var("ISOLATE_STATE", dir.path());
    if let Err(e) = isolate_vm::host::open_kvm() {
        eprintln!("SKIP {test}: {}", e.chain());
        return false;
    }
    for (what, r) in [
        ("kernel", isolate_core::paths::kernel(None)),
        ("rootfs", isolate_core::paths::rootfs(None)),
        ("init", isolate_core::paths::init(None)),
    ] {
        if let Err(e) = r {
            eprintln!("SKIP {test}: no {what}: {}", e.chain());
            return false;
        }
    }
    if unsafe_is_not_root() {
        eprintln!("SKIP {test}: needs root for the VMM's cgroup");
        return false;
    }
    true
}

fn unsafe_is_not_root() -> bool {
    isolate_core::sys::rootless()
}

fn cgroup_exists(rel: &str) -> bool {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/cpu"]
        .iter()
        .any(|root| Path::new(root).join(rel).is_dir())
}

#[test]
fn named_vm_updates_cpu_refuses_memory_and_dies_cleanly_on_kill() {
    if !ready("named_vm_updates_cpu_refuses_memory_and_dies_cleanly_on_kill") {
        return;
    }
    let name = format!("lifecycle-{}", std::process::id());
    let mut w = Workload::new("/bin/sleep");
    w.arg("600").name(&name).cpus(0.5);
    let running = vm().spawn(&w).unwrap();

    let record = state::get_live(&name).unwrap();
    assert_eq!(record.mode, isolate_core::Mode::Vm);
    assert!(cgroup_exists(&record.cgroup), "{}", record.cgroup);
    assert!(matches!(vm().spawn(&w), Err(Error::NameInUse(_))));

    running
        .update(&Limits {
            cpus: Some(1.0),
            ..Limits::default()
        })
        .unwrap();
    assert_eq!(running.stats().unwrap().cpus_limit, Some(1.0));
    let e = running
        .update(&Limits {
            memory: Some(512 << 20),
            ..Limits::default()
        })
        .unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(ref m) if m.contains("balloon")),
        "{e:?}"
    );
    assert!(matches!(
        running.signal(libc::SIGSEGV),
        Err(Error::Unsupported(_))
    ));

    running.kill().unwrap();
    let outcome = running.wait().unwrap();
    assert_eq!(outcome.status, Status::Signaled(libc::SIGKILL));
    assert_eq!(running.wait().unwrap(), outcome, "wait is idempotent");
    assert!(state::get_live(&name).is_err(), "record left behind");
    assert!(!cgroup_exists(&record.cgroup), "cgroup left behind");
}

#[test]
fn boot_watchdog_fails_a_guest_that_never_starts() {
    if !ready("boot_watchdog_fails_a_guest_that_never_starts") {
        return;
    }
    if !Path::new("/sys/module/kvm_pvm").exists() {
        eprintln!("SKIP boot_watchdog_fails_a_guest_that_never_starts: on this host the guest boots (only PVM hosts spin)");
        return;
    }
    let t = Instant::now();
    let e = vm().run(&Workload::new("/bin/true")).unwrap_err();
    let took = t.elapsed();
    let text = e.chain();
    assert_eq!(e.exit_code(), 125);
    assert!(
        text.contains("did not start the workload within 3.0 s"),
        "{text}"
    );
    assert!(text.contains("ISOLATE_BOOT_TIMEOUT"), "{text}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[test]
fn dropping_a_handle_kills_the_vmm() {
    if !ready("dropping_a_handle_kills_the_vmm") {
        return;
    }
    let name = format!("drop-{}", std::process::id());
    let mut w = Workload::new("/bin/sleep");
    w.arg("600").name(&name);
    let running = vm().spawn(&w).unwrap();
    let record = state::get_live(&name).unwrap();
    assert!(record.alive());
    drop(running);
    assert!(!record.alive(), "VMM {} still runs", record.pid);
    assert!(state::get_live(&name).is_err(), "record left behind");
    assert!(!cgroup_exists(&record.cgroup), "cgroup left behind");
}

#[test]
fn vmm_killed_from_outside_reports_a_killed_workload() {
    if !ready("vmm_killed_from_outside_reports_a_killed_workload") {
        return;
    }
    let name = format!("outside-{}", std::process::id());
    let mut w = Workload::new("/bin/sleep");
    w.arg("600").name(&name);
    let running = vm().spawn(&w).unwrap();
    let record = state::get_live(&name).unwrap();
    // What `isolate kill NAME` does from another process.
    // SAFETY: kill(2) on the live VMM pid of the record just read.
    assert_eq!(unsafe { libc::kill(record.pid as i32, libc::SIGKILL) }, 0);
    let outcome = running.wait().unwrap();
    assert_eq!(outcome.status, Status::Signaled(libc::SIGKILL));
    assert!(!cgroup_exists(&record.cgroup), "cgroup left behind");
}
