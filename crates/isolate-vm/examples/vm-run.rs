//! Runs one command in a VM through [`isolate_vm::VmIsolator`], without the
//! `isolate` CLI: the driver of `tests/e2e-emulated.sh`.
//!
//! ```text
//! vm-run [--memory MIB] [--vcpus N] [--timeout SECS] [--stdin TEXT]
//!        [--kernel PATH] [--console-log] [--volume NAME:/PATH]
//!        [--signal-after SECS:SIGNO] -- CMD [ARG...]
//! ```
//!
//! stdout and stderr of the workload are inherited; `--stdin TEXT` pipes
//! TEXT to its stdin (else stdin is /dev/null). At the end one line
//! `OUTCOME <json>` goes to stderr and the exit code is the workload's
//! (docker convention), or 125 with `vm-run: error: ...` for an error.

use std::io::Write;
use std::time::Duration;

use isolate_core::{Isolator, Stdio, Volume, Workload};
use isolate_vm::VmIsolator;

fn main() {
    std::process::exit(match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vm-run: error: {}", e.chain());
            e.exit_code()
        }
    });
}

fn run() -> isolate_core::Result<i32> {
    let mut args = std::env::args().skip(1);
    let mut w = Workload::new("");
    w.argv.clear();
    w.stdin(Stdio::Null);
    let mut stdin_text = None;
    let mut signal_after: Option<(f64, i32)> = None;
    let bad = |what: &str| isolate_core::Error::invalid("arguments", what.to_string());
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| bad(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--memory" => {
                let m: u64 = val()?.parse().map_err(|_| bad("--memory MIB"))?;
                w.memory(m << 20);
            }
            "--vcpus" => w.vm.vcpus = Some(val()?.parse().map_err(|_| bad("--vcpus N"))?),
            "--timeout" => {
                let s: f64 = val()?.parse().map_err(|_| bad("--timeout SECS"))?;
                w.timeout(Duration::from_secs_f64(s));
            }
            "--stdin" => {
                stdin_text = Some(val()?);
                w.stdin(Stdio::Piped);
            }
            "--kernel" => w.vm.kernel = Some(val()?.into()),
            "--console-log" => w.vm.console_log = true,
            "--signal-after" => {
                let v = val()?;
                let parsed = v
                    .split_once(':')
                    .and_then(|(s, n)| Some((s.parse().ok()?, n.parse().ok()?)));
                signal_after = Some(parsed.ok_or_else(|| bad("--signal-after SECS:SIGNO"))?);
            }
            "--volume" => {
                let v = val()?;
                let (name, target) = v
                    .split_once(':')
                    .ok_or_else(|| bad("--volume NAME:/PATH"))?;
                w.volume(Volume::named(name, target));
            }
            "--" => {
                w.argv.extend(args.by_ref());
            }
            other => return Err(bad(&format!("unknown option {other}"))),
        }
    }
    w.validate()?;
    // `spawn` checks the host for this workload's kernel itself.
    let vm = VmIsolator::new();
    let running: std::sync::Arc<dyn isolate_core::Running> = vm.spawn(&w)?.into();
    if let Some((secs, signo)) = signal_after {
        let r = running.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs));
            if let Err(e) = r.signal(signo) {
                eprintln!("vm-run: signal: {}", e.chain());
            }
        });
    }
    if let (Some(text), Some(mut pipe)) = (stdin_text, running.take_stdin()) {
        // Ignore EPIPE: the workload may not read its input.
        let _ = pipe.write_all(text.as_bytes());
    }
    let outcome = running.wait()?;
    eprintln!(
        "OUTCOME {}",
        serde_json::to_string(&outcome).expect("outcome serializes")
    );
    Ok(outcome.exit_code())
}
