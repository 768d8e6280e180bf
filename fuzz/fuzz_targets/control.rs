//! The host side of the control channel: what the guest init (hostile in
//! VM mode) writes on its control port, and the VMM's report lines the
//! library reads. The byte stream is split into bounded lines the same way
//! however it is cut into writes; every line must parse or be refused
//! without a panic; what parses must survive a round trip and be usable
//! (exit code, display, CPU time) without overflow; what passes the
//! host's check of guest messages is in range.

#![no_main]

use isolate_core::protocol::{ControlMessage, GuestBounds, LineSplitter, MAX_CONTROL_LINE};
use isolate_core::{Outcome, Status};
use isolate_vm::wire::Report;
use libfuzzer_sys::fuzz_target;

fn use_status(status: Status) {
    let outcome = Outcome::new(status, std::time::Duration::ZERO);
    let code = outcome.exit_code();
    if let Status::Exited(c) = status {
        assert_eq!(code, c);
    }
    let _ = status.to_string();
}

/// The lines `LineSplitter` gives for `data` fed in writes cut at `cuts`,
/// and whether it refused the stream.
fn split(data: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, bool) {
    let mut s = LineSplitter::default();
    let mut lines = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
        let cut = cut.clamp(at, data.len());
        if s.push(&data[at..cut], |l| lines.push(l.to_vec())).is_err() {
            return (lines, true);
        }
        at = cut;
    }
    (lines, false)
}

fuzz_target!(|data: &[u8]| {
    // However the stream is cut into writes, the same lines come out (or
    // the same refusal), and none is longer than the bound.
    // The first bytes say where to cut (as fractions of the length).
    let mut cuts: Vec<usize> = data
        .iter()
        .take(6)
        .map(|&b| data.len() * usize::from(b) / 256)
        .collect();
    cuts.sort_unstable();
    let whole = split(data, &[]);
    let pieces = split(data, &cuts);
    assert_eq!(whole, pieces, "cut at {cuts:?}");
    assert!(whole.0.iter().all(|l| l.len() <= MAX_CONTROL_LINE));
    let longest = data
        .split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    assert_eq!(whole.1, longest > MAX_CONTROL_LINE);

    let bounds = GuestBounds {
        memory: 1 << 30,
        cpu_time_ns: 60_000_000_000,
    };
    for line in data.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if let Some(msg) = ControlMessage::from_line(line) {
            if msg.check_from_guest(bounds).is_ok() {
                match &msg {
                    ControlMessage::Exit {
                        status,
                        peak_memory,
                        cpu_time_ns,
                    } => {
                        match *status {
                            Status::Exited(c) => assert!((0..=255).contains(&c)),
                            Status::Signaled(s) => assert!((1..=64).contains(&s)),
                            Status::TimedOut => panic!("a guest decided a timeout"),
                            _ => {}
                        }
                        assert!(peak_memory.is_none_or(|m| m <= bounds.memory));
                        assert!(cpu_time_ns.is_none_or(|t| t <= bounds.cpu_time_ns));
                        let code = Outcome::new(*status, std::time::Duration::ZERO).exit_code();
                        assert!((0..=255).contains(&code), "exit code {code}");
                    }
                    ControlMessage::Started { .. } | ControlMessage::Error { .. } => {}
                    other => panic!("a host-only message passed: {other:?}"),
                }
            }
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
