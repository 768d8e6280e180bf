//! A process that puts itself in its cgroup (a VMM limiting itself) must
//! never be killed by `kill_all`/`remove`: the handle that moved it in
//! moves it back first, any other handle refuses with `SelfInside`.
//!
//! The outer run creates a cgroup and starts this binary again as a child
//! with `ISOLATE_CGROUPS_INNER=<rel path>`; the child does the checks in a
//! fresh single-threaded process, so the test harness never enters the
//! cgroup, and exits 0 only if all hold.

use std::process::Command;

use isolate_cgroups::{Cgroup, CgroupError};

const INNER: &str = "ISOLATE_CGROUPS_INNER";
const TEST: &str = "a_process_inside_its_own_cgroup_is_moved_out_never_killed";

fn main() {
    if let Ok(rel) = std::env::var(INNER) {
        std::process::exit(match inner(&rel) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("inner: {e}");
                1
            }
        });
    }
    if isolate_core::sys::rootless() {
        eprintln!("SKIP {TEST}: needs root to create cgroups");
        return;
    }
    let cg = Cgroup::create(&format!("test-self-{}", std::process::id())).expect("create");
    let rel = cg.rel_path().to_owned();
    let status = Command::new(std::env::current_exe().unwrap())
        .env(INNER, &rel)
        .status();
    // The inner process removed it already; removing again is fine.
    let removed = cg.remove();
    let status = status.expect("start the inner process");
    removed.expect("remove after the inner process ended");
    assert!(status.success(), "inner process: {status}");
    assert!(
        matches!(Cgroup::open(&rel), Err(CgroupError::NotFound { .. })),
        "{rel} left behind"
    );
    println!("test {TEST} ... ok");
}

fn own_cgroups() -> String {
    std::fs::read_to_string("/proc/self/cgroup").unwrap()
}

/// In the child: join the cgroup, then try to kill it.
fn inner(rel: &str) -> Result<(), String> {
    let me = std::process::id();
    let before = own_cgroups();
    let joined = Cgroup::open(rel).map_err(|e| e.to_string())?;
    joined.add_process(me).map_err(|e| e.to_string())?;
    if joined.procs().map_err(|e| e.to_string())? != vec![me] {
        return Err("not inside after add_process".into());
    }

    // A handle that did not move us in does not know where to put us back.
    let other = Cgroup::open(rel).map_err(|e| e.to_string())?;
    match other.kill_all() {
        Err(CgroupError::SelfInside { pid, .. }) if pid == me => {}
        r => return Err(format!("kill_all of another handle: {r:?}")),
    }
    match other.remove() {
        Err(CgroupError::SelfInside { pid, .. }) if pid == me => {}
        r => return Err(format!("remove of another handle: {r:?}")),
    }

    // The handle that moved us in moves us back, then removes the cgroup.
    joined.remove().map_err(|e| format!("remove: {e}"))?;
    let after = own_cgroups();
    if after != before {
        return Err(format!("cgroups before:\n{before}after:\n{after}"));
    }
    Ok(())
}
