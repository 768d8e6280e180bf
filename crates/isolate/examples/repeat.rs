//! Runs one workload many times in one process, sequentially and then from
//! several threads at once, and reports whether the process got back every
//! descriptor and thread it had: what a long-running program that embeds
//! isolate needs.
//!
//! ```sh
//! cargo run --release --example repeat -- container 200 20
//! ```
//!
//! Prints `fds before N after N`, `threads before N after N` and the count
//! of failed runs; exits 1 if a run failed or something leaked.

use std::time::{Duration, Instant};

use isolate::{isolator, Mode, Stdio, Workload};

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode: Mode = args
        .first()
        .map(|m| m.parse().expect("mode: vm or container"))
        .unwrap_or(Mode::Container);
    let sequential: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(200);
    let concurrent: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20);

    let mut w = Workload::new("/bin/sh");
    w.args(["-c", "echo ok"])
        .stdout(Stdio::Piped)
        .stderr(Stdio::Null);
    w.validate().expect("a valid workload");
    let backend = isolator(mode).expect("this build has the mode");
    if let Err(why) = backend.check_host() {
        println!("SKIP repeat: {mode} mode cannot run here: {why}");
        std::process::exit(2);
    }
    let run_one = |w: &Workload| -> bool {
        match backend.spawn(w) {
            Ok(r) => {
                let mut out = String::new();
                if let Some(mut o) = r.take_stdout() {
                    let _ = std::io::Read::read_to_string(&mut o, &mut out);
                }
                matches!(r.wait(), Ok(o) if o.success()) && out == "ok\n"
            }
            Err(e) => {
                eprintln!("run failed: {}", e.chain());
                false
            }
        }
    };
    // One run first, so that lazily made process-wide state (the seccomp
    // program, the signal forwarder) is not counted as a leak.
    let _ = run_one(&w);
    let (fds0, threads0) = (count("/proc/self/fd"), count("/proc/self/task"));
    let start = Instant::now();
    let mut failed = (0..sequential).filter(|_| !run_one(&w)).count();
    let seq_time = start.elapsed();
    let start = Instant::now();
    failed += std::thread::scope(|s| {
        let handles: Vec<_> = (0..concurrent).map(|_| s.spawn(|| !run_one(&w))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(true))
            .filter(|f| *f)
            .count()
    });
    let conc_time = start.elapsed();
    // Relay and watchdog threads end with their run; give them a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while count("/proc/self/task") > threads0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (fds1, threads1) = (count("/proc/self/fd"), count("/proc/self/task"));
    println!(
        "{mode}: {sequential} sequential runs in {:.2} s, {concurrent} concurrent in {:.2} s",
        seq_time.as_secs_f64(),
        conc_time.as_secs_f64()
    );
    println!("fds before {fds0} after {fds1}");
    println!("threads before {threads0} after {threads1}");
    println!("failed runs {failed}");
    if failed > 0 || fds1 != fds0 || threads1 > threads0 {
        std::process::exit(1);
    }
}
