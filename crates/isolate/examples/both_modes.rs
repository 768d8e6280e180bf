//! Builds one workload and runs it under both boundaries, reading each
//! outcome. Run as root: `cargo run --release --example both_modes`.

use std::io::Read;

use isolate::{isolator, Mode, Stdio, Workload};

fn main() -> Result<(), isolate::Error> {
    let mut w = Workload::new("/bin/sh");
    w.args(["-c", "echo hello from $(hostname); cat /proc/1/comm"])
        .hostname("embedded")
        .memory(128 << 20)
        .pids(32)
        .stdout(Stdio::Piped);
    w.validate()?;
    for mode in Mode::ALL {
        let backend = isolator(mode)?;
        if let Err(why) = backend.check_host() {
            println!("{mode:>9}: not available here: {}", why.chain());
            continue;
        }
        let running = backend.spawn(&w)?;
        let mut out = String::new();
        if let Some(mut stdout) = running.take_stdout() {
            let _ = stdout.read_to_string(&mut out);
        }
        let outcome = running.wait()?;
        println!(
            "{mode:>9}: {} in {:.1} ms (start-up {:?}), peak memory {:?} bytes; said {:?}",
            outcome.status,
            outcome.wall_time.as_secs_f64() * 1e3,
            outcome.startup_time,
            outcome.peak_memory,
            out.trim()
        );
    }
    Ok(())
}
