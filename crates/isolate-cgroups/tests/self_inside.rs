//! `kill_all`/`remove` must refuse to kill the calling process (a VMM that
//! put itself in its cgroup would otherwise kill itself).
//!
//! The outer run creates a cgroup and starts this binary again as a child
//! with `ISOLATE_CGROUPS_INNER=<rel path>`; the child moves itself into that
//! cgroup, calls `kill_all` and `remove`, and exits 0 only if both refused
//! with `SelfInside`.

use std::process::Command;

use isolate_cgroups::{Cgroup, CgroupError};

const INNER: &str = "ISOLATE_CGROUPS_INNER";
const TEST: &str = "kill_all_refuses_to_kill_the_calling_process";

fn main() {
    if let Ok(rel) = std::env::var(INNER) {
        std::process::exit(inner(&rel));
    }
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {TEST}: needs root to create cgroups");
        return;
    }
    let cg = Cgroup::create(&format!("test-self-{}", std::process::id())).expect("create");
    let status = Command::new(std::env::current_exe().unwrap())
        .env(INNER, cg.rel_path())
        .status();
    let removed = cg.remove();
    let status = status.expect("start the inner process");
    removed.expect("remove after the inner process ended");
    assert!(status.success(), "inner process: {status}");
    println!("test {TEST} ... ok");
}

/// In the child: join the cgroup, then try to kill it.
fn inner(rel: &str) -> i32 {
    let cg = Cgroup::open(rel).expect("open");
    cg.add_process(std::process::id()).expect("join");
    let me = std::process::id();
    match cg.kill_all() {
        Err(CgroupError::SelfInside { pid, .. }) if pid == me => {}
        other => {
            eprintln!("kill_all with this process inside: {other:?}");
            return 1;
        }
    }
    match cg.remove() {
        Err(CgroupError::SelfInside { pid, .. }) if pid == me => {}
        other => {
            eprintln!("remove with this process inside: {other:?}");
            return 1;
        }
    }
    0
}
