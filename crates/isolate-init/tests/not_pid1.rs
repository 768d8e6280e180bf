//! The init must refuse to run anywhere but as PID 1 of a guest: on a host
//! it would mount over /dev and reboot the machine.

use std::process::Command;

#[test]
fn refuses_to_run_unless_pid_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_isolate-init"))
        .output()
        .expect("run isolate-init");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must be PID 1"), "{err}");
}
