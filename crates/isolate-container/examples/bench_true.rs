//! Runs `/bin/true` in a container N times (default 30) and prints the
//! median, min and max wall time of `spawn` + `wait`.
//!
//! `cargo run --release -p isolate-container --example bench_true -- ROOTFS [N]`
//!
//! With `BENCH_EACH` set, every run's time is printed too.

use std::time::Instant;

use isolate_container::ContainerIsolator;
use isolate_core::{Isolator, Workload};

fn main() {
    let mut args = std::env::args().skip(1);
    let rootfs = args.next().expect("usage: bench_true ROOTFS [N]");
    let n: usize = args.next().map_or(30, |s| s.parse().expect("N"));
    let mut w = Workload::new("/bin/true");
    w.rootfs(&rootfs).memory(256 << 20).pids(64);
    w.validate().expect("valid workload");
    let iso = ContainerIsolator::new();
    let mut times = Vec::with_capacity(n);
    let mut startup = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let o = iso.run(&w).unwrap_or_else(|e| panic!("{}", e.chain()));
        times.push(t.elapsed());
        startup.push(o.startup_time.unwrap_or_default());
        assert!(o.success(), "{:?}", o.status);
    }
    if std::env::var_os("BENCH_EACH").is_some() {
        eprintln!("each: {times:?}");
    }
    times.sort();
    startup.sort();
    println!(
        "isolate container /bin/true x{n}: median {:?} (min {:?}, max {:?}); startup median {:?}",
        times[n / 2],
        times[0],
        times[n - 1],
        startup[n / 2]
    );
}
