//! The host check: on a PVM host with a standard kernel, VM mode says why it
//! cannot run and what to do, within a second (exit code 125).

use std::path::Path;
use std::time::{Duration, Instant};

use isolate_core::{Error, Isolator, Workload};
use isolate_vm::VmIsolator;

#[test]
fn pvm_host_refuses_a_standard_kernel_fast() {
    if !Path::new("/sys/module/kvm_pvm").exists() {
        eprintln!("SKIP pvm_host_refuses_a_standard_kernel_fast: this host's KVM is not PVM");
        return;
    }
    std::env::remove_var("ISOLATE_PVM_KERNEL");
    // Any well-formed x86-64 ELF without the PVM symbol is a "standard
    // kernel" as far as the check goes (not the VMM binary: it holds the
    // symbol's name as the string it searches for).
    let mut w = Workload::new("/bin/true");
    w.vm.kernel = Some("/bin/true".into());
    let vm = VmIsolator::with_vmm(env!("CARGO_BIN_EXE_isolate-vmm"));
    let t = Instant::now();
    let e = match vm.spawn(&w) {
        Ok(_) => panic!("a PVM host accepted a standard kernel"),
        Err(e) => e,
    };
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        matches!(e, Error::Unavailable { backend: "vm", .. }),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 125);
    let text = e.chain();
    for needle in ["kvm_pvm", "--kernel", "VMX/SVM", "tests/emulated-host/run"] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    // check_host says the same when the default kernel is not PVM-capable.
    if let Err(e) = vm.check_host() {
        assert!(e.chain().contains("kvm_pvm"), "{}", e.chain());
    }
}

#[test]
fn tiny_payload_runs_in_the_vmm_process_under_seccomp() {
    if isolate_vm::host::open_kvm().is_err() {
        eprintln!("SKIP tiny_payload_runs_in_the_vmm_process_under_seccomp: no usable /dev/kvm");
        return;
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_isolate-vmm"))
            .arg("probe")
            .output()
            .unwrap();
        let total = t.elapsed();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            text.starts_with("probe ok") && text.trim_end().ends_with("serial=4"),
            "{text}"
        );
        let inner: u64 = text
            .split_whitespace()
            .find_map(|f| f.strip_prefix("first_exit_us="))
            .unwrap()
            .parse()
            .unwrap();
        times.push((total.as_micros() as u64, inner));
    }
    times.sort();
    let (total, inner) = times[times.len() / 2];
    eprintln!(
        "MEASURE isolate-vmm spawn to exit (incl. first guest instruction): median {total} µs; main() to first guest exit: {inner} µs"
    );
}
