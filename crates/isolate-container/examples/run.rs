//! Runs one command in a container and prints its outcome to stderr.
//!
//! `cargo run -p isolate-container --example run -- ROOTFS CMD [ARGS...]`

use isolate_container::ContainerIsolator;
use isolate_core::{Isolator, Workload};

fn main() {
    let mut args = std::env::args().skip(1);
    let rootfs = args.next().expect("usage: run ROOTFS CMD [ARGS...]");
    let mut w = Workload::new(args.next().expect("a command"));
    w.args(args).rootfs(&rootfs);
    // Rootless mode has no cgroup: limits only as root.
    if !isolate_core::sys::rootless() {
        w.memory(256 << 20).pids(64);
    }
    if let Ok(name) = std::env::var("NAME") {
        w.name(name);
    }
    w.read_only(std::env::var_os("READ_ONLY").is_some());
    match ContainerIsolator::new().run(&w) {
        Ok(o) => {
            eprintln!("{o:?}");
            std::process::exit(o.exit_code());
        }
        Err(e) => {
            eprintln!("isolate: {}", e.chain());
            std::process::exit(e.exit_code());
        }
    }
}
