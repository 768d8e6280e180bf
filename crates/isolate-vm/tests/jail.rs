//! The VMM's jail, natively, with a hand-made guest (the `test-hooks`
//! feature's `TestGuest`): no Linux guest is needed, so this runs on any
//! KVM host, PVM included. The VMM is started as the library starts it
//! (`spawn::spawn`, new namespaces) and inspected through /proc while its
//! guest runs; forbidden system calls made on its vCPU thread (as a guest
//! that took over the VMM would) must kill it with SIGSYS.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isolate_core::Stdio;
use isolate_vm::jail::JailIds;
use isolate_vm::spawn::{self, Spawned};
use isolate_vm::test_guest::{ForbiddenCall, TestGuest};
use isolate_vm::wire::BootSpec;
use isolate_vm::wire::FORWARDED_SIGNALS;
use isolate_vm::wire::{Report, VmmConfig};

fn ready(test: &str) -> bool {
    if isolate_core::sys::rootless() {
        eprintln!("SKIP {test}: the jail needs root");
        return false;
    }
    if let Err(e) = isolate_vm::host::open_kvm() {
        eprintln!("SKIP {test}: {}", e.chain());
        return false;
    }
    true
}

/// Starts the VMM with `guest`; returns it and its config pipe (keep it
/// open: closing it ends the VMM).
fn start(guest: TestGuest) -> Spawned {
    let vmm = Path::new(env!("CARGO_BIN_EXE_isolate-vmm"));
    let mut s = spawn::spawn(
        vmm,
        [Stdio::Null, Stdio::Null, Stdio::Inherit],
        FORWARDED_SIGNALS,
    )
    .expect("the VMM starts");
    let cfg = VmmConfig {
        boot: BootSpec {
            // Opened before the jail like a kernel, not used by the test guest.
            kernel: "/dev/null".into(),
            initrd: Vec::new(),
            mem_size: 1 << 20,
            vcpus: 1,
            disks: Vec::new(),
            console_log: false,
            cmdline_extra: String::new(),
        },
        stdin: false,
        timeout_ms: None,
        boot_timeout_ms: 120_000,
        seccomp: true,
        jail: JailIds::for_pid(s.process.id()),
        trace: false,
        log_level: None,
        test_guest: Some(guest),
    };
    let mut line = serde_json::to_string(&cfg).unwrap();
    line.push('\n');
    s.config.write_all(line.as_bytes()).unwrap();
    s
}

fn status_of(task: &Path) -> Option<String> {
    std::fs::read_to_string(task.join("status")).ok()
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in status"))
}

/// The VMM's threads once its vCPU runs (every thread filtered), or None.
fn running_threads(pid: u32) -> Option<Vec<PathBuf>> {
    let tasks: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let has_vcpu = tasks
        .iter()
        .any(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "vcpu0"));
    let all_filtered = tasks
        .iter()
        .all(|t| status_of(t).is_some_and(|s| field(&s, "Seccomp") == "2"));
    (has_vcpu && all_filtered && tasks.len() >= 4).then_some(tasks)
}

#[test]
fn running_vmm_is_jailed_on_every_thread() {
    if !ready("running_vmm_is_jailed_on_every_thread") {
        return;
    }
    let Spawned {
        mut process,
        config,
        reports,
        ..
    } = start(TestGuest::Spin);
    let pid = process.id();
    let t0 = Instant::now();
    let tasks = loop {
        if let Some(t) = running_threads(pid) {
            break t;
        }
        if t0.elapsed() > Duration::from_secs(20) || process.try_wait().unwrap().is_some() {
            let _ = process.signal(libc::SIGKILL);
            panic!("the VMM did not reach a running, filtered vCPU");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ids = JailIds::for_pid(pid);
    for task in &tasks {
        let s = status_of(task).expect("thread status");
        let comm = std::fs::read_to_string(task.join("comm")).unwrap();
        let who = format!("thread {} ({})", task.display(), comm.trim());
        let uid = ids.uid.to_string();
        let gid = ids.gid.to_string();
        assert!(
            field(&s, "Uid").split_whitespace().all(|u| u == uid),
            "{who}: Uid {}",
            field(&s, "Uid")
        );
        assert!(
            field(&s, "Gid").split_whitespace().all(|g| g == gid),
            "{who}: Gid {}",
            field(&s, "Gid")
        );
        assert_eq!(field(&s, "Groups"), "", "{who}");
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(field(&s, cap), "0000000000000000", "{who}: {cap}");
        }
        assert_eq!(field(&s, "NoNewPrivs"), "1", "{who}");
        assert_eq!(field(&s, "Seccomp"), "2", "{who}");
    }
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "the VMM shares the {ns} namespace");
    }
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let entries: Vec<_> = std::fs::read_dir(&root)
        .expect("the VMM's root is readable")
        .collect();
    assert!(
        entries.is_empty(),
        "the VMM's root is not empty: {entries:?}"
    );
    for host_path in ["etc/passwd", "dev/kvm", "proc/self", "bin/sh"] {
        assert!(
            !root.join(host_path).exists(),
            "/{host_path} is reachable from the VMM"
        );
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(environ.is_empty(), "the VMM has an environment");
    // SIGTERM is forwarded, not fatal (the VMM is PID 1 of its namespace
    // and waits for it); the VMM must still be running afterwards.
    process.signal(libc::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        process.try_wait().unwrap().is_none(),
        "SIGTERM ended the VMM"
    );

    // The library's end (config pipe closed) ends the VMM, with a report.
    drop(config);
    let status = process.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let last = BufReader::new(reports)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| Report::from_line(&l))
        .last();
    assert!(
        matches!(&last, Some(Report::Failed { message, .. }) if message.contains("gone")),
        "{last:?}"
    );
}

#[test]
fn killed_vmm_leaves_nothing_mounted_on_the_host() {
    if !ready("killed_vmm_leaves_nothing_mounted_on_the_host") {
        return;
    }
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Spawned {
        mut process,
        config: _lifeline,
        ..
    } = start(TestGuest::Spin);
    let t0 = Instant::now();
    while running_threads(process.id()).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the VMM did not run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    process.signal(libc::SIGKILL).unwrap();
    let status = process.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(
        mounts_before
            .lines()
            .filter(|l| l.contains("isolate-vmm"))
            .count(),
        mounts_after
            .lines()
            .filter(|l| l.contains("isolate-vmm"))
            .count()
    );
}

fn forbidden_call_kills_the_vmm(call: ForbiddenCall) {
    let Spawned {
        mut process,
        config,
        ..
    } = start(TestGuest::Forbidden(call));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = process.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = process.signal(libc::SIGKILL);
            panic!("{call:?}: the VMM did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(config);
    assert_eq!(
        status.signal(),
        Some(libc::SIGSYS),
        "{call:?} did not kill the VMM with SIGSYS: {status:?}"
    );
}

#[test]
fn opening_a_host_file_kills_the_vmm() {
    if ready("opening_a_host_file_kills_the_vmm") {
        forbidden_call_kills_the_vmm(ForbiddenCall::OpenHostFile);
    }
}

#[test]
fn an_ioctl_other_than_kvm_run_kills_the_vmm() {
    if ready("an_ioctl_other_than_kvm_run_kills_the_vmm") {
        forbidden_call_kills_the_vmm(ForbiddenCall::Ioctl);
    }
}

#[test]
fn executable_memory_kills_the_vmm() {
    if ready("executable_memory_kills_the_vmm") {
        forbidden_call_kills_the_vmm(ForbiddenCall::MmapExec);
        forbidden_call_kills_the_vmm(ForbiddenCall::MprotectExec);
    }
}

#[test]
fn signalling_another_process_kills_the_vmm() {
    if ready("signalling_another_process_kills_the_vmm") {
        forbidden_call_kills_the_vmm(ForbiddenCall::SignalOther);
    }
}

#[test]
fn forking_kills_the_vmm() {
    if ready("forking_kills_the_vmm") {
        forbidden_call_kills_the_vmm(ForbiddenCall::Fork);
    }
}
