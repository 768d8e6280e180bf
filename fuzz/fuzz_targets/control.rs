//! The host side of the control channel: what the guest init (hostile in
//! VM mode) writes on its control port, and the VMM's report lines the
//! library reads. Every line must parse or be refused without a panic;
//! what parses must survive a round trip and be usable (exit code,
//! display, CPU time) without overflow.

#![no_main]

use isolate_core::protocol::ControlMessage;
use isolate_core::{Outcome, Status};
use isolate_vm::config::Report;
use libfuzzer_sys::fuzz_target;

fn use_status(status: Status) {
    let outcome = Outcome::new(status, std::time::Duration::ZERO);
    let code = outcome.exit_code();
    if let Status::Exited(c) = status {
        assert_eq!(code, c);
    }
    let _ = status.to_string();
}

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if let Some(msg) = ControlMessage::from_line(line) {
            let out = msg.to_line();
            assert!(out.ends_with('\n') && !out[..out.len() - 1].contains('\n'));
            assert_eq!(ControlMessage::from_line(&out).as_ref(), Some(&msg));
            let _ = msg.cpu_time();
            if let ControlMessage::Exit { status, .. } = msg {
                use_status(status);
            }
        }
        if let Some(report) = Report::from_line(line) {
            let out = report.to_line();
            assert!(out.ends_with('\n') && !out[..out.len() - 1].contains('\n'));
            assert_eq!(Report::from_line(&out).as_ref(), Some(&report));
            if let Report::Finished { status, .. } = report {
                use_status(status);
            }
        }
    }
});
