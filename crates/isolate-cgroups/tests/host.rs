//! Tests against this host's real cgroups: they need root, and each makes
//! its own `isolate/test-<what>-<pid>` cgroup and removes it.
//!
//! Tests that need a unified (v2) host print `SKIP` elsewhere; all others
//! run on every layout and check the files of the layout they find.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use isolate_cgroups::{Cgroup, CgroupError, Layout};
use isolate_core::sys::{clone3, CloneArgs, CLONE_INTO_CGROUP};
use isolate_core::Limits;

const MIB: u64 = 1 << 20;

/// `Some(layout)` if the test can run (root), else prints why not.
fn host(test: &str) -> Option<Layout> {
    if isolate_core::sys::rootless() {
        eprintln!("SKIP {test}: needs root to create cgroups");
        return None;
    }
    Some(isolate_cgroups::layout().expect("probe the cgroup layout"))
}

/// Like [`host`], for tests of cgroup v2 behaviour.
fn unified_host(test: &str) -> bool {
    match host(test) {
        Some(Layout::Unified) => true,
        Some(other) => {
            eprintln!("SKIP {test}: host cgroups are {other}, not unified v2");
            false
        }
        None => false,
    }
}

fn name(test: &str) -> String {
    format!("test-{test}-{}", std::process::id())
}

/// A cgroup control file of `rel`, in the hierarchy of `controller` on v1.
fn file(layout: Layout, controller: &str, rel: &str, name: &str) -> PathBuf {
    match layout {
        Layout::Unified => PathBuf::from("/sys/fs/cgroup").join(rel).join(name),
        _ => PathBuf::from("/sys/fs/cgroup")
            .join(controller)
            .join(rel)
            .join(name),
    }
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The directories of cgroup `rel` that a layout uses.
fn dirs(layout: Layout, rel: &str) -> Vec<PathBuf> {
    match layout {
        Layout::Unified => vec![PathBuf::from("/sys/fs/cgroup").join(rel)],
        _ => ["memory", "cpu", "cpuacct", "pids", "freezer"]
            .iter()
            .map(|c| PathBuf::from("/sys/fs/cgroup").join(c).join(rel))
            .collect(),
    }
}

/// Removes its cgroup when dropped, so a failing test leaves nothing behind.
struct Guard(Option<Cgroup>);

impl Guard {
    fn create(name: &str) -> Guard {
        Guard(Some(Cgroup::create(name).expect("create cgroup")))
    }
    fn cg(&self) -> &Cgroup {
        self.0.as_ref().unwrap()
    }
    fn take(mut self) -> Cgroup {
        self.0.take().unwrap()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            let _ = cg.remove();
        }
    }
}

/// A forked child that waits for [`Child::release`] before running its body,
/// so the test can put it in a cgroup first. The body runs in a fork of a
/// multi-threaded process: it may only make raw system calls (no
/// allocation, no locks).
struct Child {
    pid: libc::pid_t,
    go: Option<OwnedFd>,
    reaped: bool,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    isolate_core::sys::pipe().expect("pipe2")
}

impl Child {
    fn spawn(body: impl FnOnce() -> i32) -> Child {
        let (rx, tx) = pipe();
        // SAFETY: the child only calls async-signal-safe functions (read,
        // the raw-syscall body, _exit) before it exits; it never returns
        // into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let mut b = 0u8;
            // SAFETY: reads one byte into `b`, which outlives the call.
            let n = unsafe { libc::read(rx.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
            let code = if n == 1 { body() } else { 100 };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        drop(rx);
        Child {
            pid,
            go: Some(tx),
            reaped: false,
        }
    }

    fn pid(&self) -> u32 {
        self.pid as u32
    }

    fn release(&mut self) {
        let go = self.go.take().unwrap();
        // SAFETY: writes one byte from a live buffer to an open fd.
        let n = unsafe { libc::write(go.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        assert_eq!(n, 1);
    }

    /// Waits for the child; its raw wait status.
    fn wait(&mut self) -> i32 {
        let mut status = 0;
        // SAFETY: `status` is a writable int; `pid` is our unreaped child.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(rc, self.pid, "waitpid: {}", std::io::Error::last_os_error());
        self.reaped = true;
        status
    }

    /// Whether the child still runs (not reaped, not a zombie).
    fn running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map(|s| {
                let state = s[s.rfind(')').unwrap() + 2..].chars().next();
                state != Some('Z')
            })
            .unwrap_or(false)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: plain syscalls on our own unreaped child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn killed_by(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

/// Child body: touches `bytes` of fresh anonymous memory, then exits 0.
fn allocate(bytes: usize) -> i32 {
    // SAFETY: a new private anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return 101;
    }
    let p = p.cast::<u8>();
    for off in (0..bytes).step_by(4096) {
        // SAFETY: `off < bytes`, inside the mapping made above.
        unsafe { p.add(off).write_volatile(1) };
    }
    0
}

/// Child body: allocates `bytes`, then sleeps until killed.
fn allocate_and_stay(bytes: usize) -> i32 {
    let rc = allocate(bytes);
    if rc != 0 {
        return rc;
    }
    loop {
        // SAFETY: pause has no arguments; the child waits for a signal.
        unsafe { libc::pause() };
    }
}

/// Child body: forks up to `n` children that sleep until killed, reports
/// how many forks succeeded as one byte on `report`, then sleeps.
fn fork_children(n: u8, report: libc::c_int) -> i32 {
    let mut made = 0u8;
    for _ in 0..n {
        // SAFETY: fork in a single-threaded child; the grandchild only pauses.
        match unsafe { libc::fork() } {
            0 => loop {
                // SAFETY: see above.
                unsafe { libc::pause() };
            },
            pid if pid > 0 => made += 1,
            _ => {}
        }
    }
    // SAFETY: writes one byte from a live local to an open pipe.
    unsafe { libc::write(report, (&made as *const u8).cast(), 1) };
    loop {
        // SAFETY: pause has no arguments.
        unsafe { libc::pause() };
    }
}

fn read_byte(fd: &OwnedFd) -> u8 {
    let mut b = 0u8;
    // SAFETY: reads one byte into `b`, which outlives the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
    assert_eq!(n, 1, "child did not report");
    b
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn layout_matches_what_the_cgroup_root_holds() {
    let Some(layout) = host("layout_matches_what_the_cgroup_root_holds") else {
        return;
    };
    // Independent of statfs and mountinfo: which control files exist.
    let expected = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Layout::Unified
    } else if std::path::Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        Layout::Hybrid
    } else {
        Layout::Legacy
    };
    eprintln!("host cgroup layout: {layout}");
    assert_eq!(layout, expected);
}

#[test]
fn create_apply_stats_remove_round_trip() {
    let Some(layout) = host("create_apply_stats_remove_round_trip") else {
        return;
    };
    let n = name("roundtrip");
    let start = Instant::now();
    let g = Guard::create(&n);
    let created = start.elapsed();
    let cg = g.cg();
    let rel = format!("isolate/{n}");
    assert_eq!(cg.rel_path(), rel);
    assert_eq!(cg.layout(), layout);
    for d in dirs(layout, &rel) {
        assert!(d.is_dir(), "{} missing", d.display());
    }

    let limits = Limits {
        memory: Some(64 * MIB),
        cpus: Some(1.5),
        pids: Some(32),
        io_weight: None,
    };
    cg.apply(&limits).unwrap();
    let applied = start.elapsed() - created;

    let f = |c, name| read(&file(layout, c, &rel, name));
    match layout {
        Layout::Unified => {
            assert_eq!(f("memory", "memory.max"), (64 * MIB).to_string());
            if file(layout, "memory", &rel, "memory.swap.max").exists() {
                assert_eq!(f("memory", "memory.swap.max"), "0");
            }
            assert_eq!(f("cpu", "cpu.max"), "150000 100000");
        }
        _ => {
            assert_eq!(f("memory", "memory.limit_in_bytes"), (64 * MIB).to_string());
            if file(layout, "memory", &rel, "memory.memsw.limit_in_bytes").exists() {
                assert_eq!(
                    f("memory", "memory.memsw.limit_in_bytes"),
                    (64 * MIB).to_string()
                );
            }
            assert_eq!(f("cpu", "cpu.cfs_period_us"), "100000");
            assert_eq!(f("cpu", "cpu.cfs_quota_us"), "150000");
        }
    }
    assert_eq!(f("pids", "pids.max"), "32");

    let s = cg.stats().unwrap();
    assert_eq!(s.memory_limit, Some(64 * MIB));
    assert_eq!(s.cpus_limit, Some(1.5));
    assert_eq!(s.pids_limit, Some(32));
    assert_eq!(s.pids_current, Some(0));
    assert_eq!(s.memory_current, Some(0));
    assert_eq!(s.cpu_time, Some(Duration::ZERO));
    assert!(!cg.oom_killed().unwrap());
    assert!(cg.is_empty().unwrap());

    // Another process would open it by its recorded path and see the same.
    let other = Cgroup::open(&rel).unwrap();
    assert_eq!(other.stats().unwrap().memory_limit, Some(64 * MIB));

    // The name is taken while it exists.
    match Cgroup::create(&n) {
        Err(CgroupError::Exists { .. }) => {}
        r => panic!("second create of {n}: {r:?}"),
    }

    let start = Instant::now();
    g.take().remove().unwrap();
    eprintln!(
        "{layout}: create {created:?}, apply {applied:?}, remove (empty) {:?}",
        start.elapsed()
    );
    for d in dirs(layout, &rel) {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    // Removing what is already gone is fine; opening it is NotFound.
    other.remove().unwrap();
    match Cgroup::open(&rel) {
        Err(CgroupError::NotFound { .. }) => {}
        r => panic!("open after remove: {r:?}"),
    }
}

#[test]
fn io_weight_is_set_or_reported_unsupported() {
    let Some(layout) = host("io_weight_is_set_or_reported_unsupported") else {
        return;
    };
    let g = Guard::create(&name("ioweight"));
    let cg = g.cg();
    let limits = Limits {
        pids: Some(7),
        io_weight: Some(500),
        ..Limits::default()
    };
    match cg.apply(&limits) {
        Ok(()) => {
            let rel = cg.rel_path();
            let candidates = match layout {
                Layout::Unified => [("io.bfq.weight", "500"), ("io.weight", "default 4950")],
                _ => [("blkio.weight", "500"), ("blkio.bfq.weight", "500")],
            };
            let (name, want) = candidates
                .iter()
                .find(|(n, _)| file(layout, "blkio", rel, n).exists())
                .expect("apply succeeded without a weight file");
            let got = read(&file(layout, "blkio", rel, name));
            assert!(
                got.contains(want.trim_start_matches("default ")),
                "{name}: {got}"
            );
            eprintln!("io weight set in {name}: {got}");
        }
        Err(e) => {
            assert!(e.is_unsupported(), "unexpected error: {e}");
            eprintln!("io weight unsupported here (as expected without BFQ): {e}");
        }
    }
    // Set before the io weight, whatever happened to it.
    assert_eq!(cg.stats().unwrap().pids_limit, Some(7));
}

#[test]
fn memory_limit_oom_kills_a_child_that_allocates_beyond_it() {
    if host("memory_limit_oom_kills_a_child_that_allocates_beyond_it").is_none() {
        return;
    }
    let g = Guard::create(&name("oom"));
    let cg = g.cg();
    cg.apply(&Limits {
        memory: Some(32 * MIB),
        ..Limits::default()
    })
    .unwrap();
    let mut child = Child::spawn(|| allocate(256 * MIB as usize));
    cg.add_process(child.pid()).unwrap();
    assert_eq!(cg.procs().unwrap(), vec![child.pid()]);
    child.release();
    let status = child.wait();
    assert_eq!(killed_by(status), Some(libc::SIGKILL), "status {status:#x}");
    assert!(cg.oom_killed().unwrap(), "oom_killed() after an OOM kill");
    let s = cg.stats().unwrap();
    let peak = s.memory_peak.unwrap();
    eprintln!("peak memory of the OOM-killed child: {} KiB", peak / 1024);
    assert!(peak <= 32 * MIB && peak > 16 * MIB, "peak {peak}");
    g.take().remove().unwrap();
}

#[test]
fn child_within_its_memory_limit_is_not_oom_killed() {
    if host("child_within_its_memory_limit_is_not_oom_killed").is_none() {
        return;
    }
    let g = Guard::create(&name("nooom"));
    let cg = g.cg();
    cg.apply(&Limits {
        memory: Some(64 * MIB),
        ..Limits::default()
    })
    .unwrap();
    let mut child = Child::spawn(|| allocate(16 * MIB as usize));
    cg.add_process(child.pid()).unwrap();
    child.release();
    let status = child.wait();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status:#x}"
    );
    assert!(!cg.oom_killed().unwrap());
    let s = cg.stats().unwrap();
    assert!(s.memory_peak.unwrap() >= 16 * MIB, "{s:?}");
    assert!(s.cpu_time.unwrap() > Duration::ZERO, "{s:?}");
    g.take().remove().unwrap();
}

#[test]
fn pids_limit_makes_fork_fail_and_kill_all_ends_every_process() {
    if host("pids_limit_makes_fork_fail_and_kill_all_ends_every_process").is_none() {
        return;
    }
    let g = Guard::create(&name("pids"));
    let cg = g.cg();
    cg.apply(&Limits {
        pids: Some(4),
        ..Limits::default()
    })
    .unwrap();
    let (rx, tx) = pipe();
    let report = tx.as_raw_fd();
    let mut child = Child::spawn(move || fork_children(10, report));
    cg.add_process(child.pid()).unwrap();
    child.release();
    drop(tx);
    // The child itself counts: 3 of its 10 forks fit under 4.
    assert_eq!(read_byte(&rx), 3);
    let s = cg.stats().unwrap();
    assert_eq!(s.pids_current, Some(4));
    assert_eq!(cg.procs().unwrap().len(), 4);

    cg.kill_all().unwrap();
    let status = child.wait();
    assert_eq!(killed_by(status), Some(libc::SIGKILL), "status {status:#x}");
    // The grandchildren are reaped by init; they leave the cgroup when they die.
    wait_until("the cgroup is empty", Duration::from_secs(2), || {
        cg.is_empty().unwrap()
    });
    g.take().remove().unwrap();
}

#[test]
fn update_while_running_changes_only_the_given_limits() {
    let Some(layout) = host("update_while_running_changes_only_the_given_limits") else {
        return;
    };
    let g = Guard::create(&name("update"));
    let cg = g.cg();
    let rel = cg.rel_path().to_owned();
    cg.apply(&Limits {
        memory: Some(64 * MIB),
        cpus: Some(0.5),
        pids: Some(16),
        io_weight: None,
    })
    .unwrap();
    let mut child = Child::spawn(|| allocate_and_stay(24 * MIB as usize));
    cg.add_process(child.pid()).unwrap();
    child.release();
    wait_until("the child has allocated", Duration::from_secs(5), || {
        cg.stats().unwrap().memory_current.unwrap() >= 24 * MIB
    });

    // Raise memory (v1: memsw must move first) and CPUs; pids untouched.
    cg.update(&Limits {
        memory: Some(128 * MIB),
        cpus: Some(1.0),
        ..Limits::default()
    })
    .unwrap();
    let f = |c, name| read(&file(layout, c, &rel, name));
    match layout {
        Layout::Unified => {
            assert_eq!(f("memory", "memory.max"), (128 * MIB).to_string());
            assert_eq!(f("cpu", "cpu.max"), "100000 100000");
        }
        _ => {
            assert_eq!(
                f("memory", "memory.limit_in_bytes"),
                (128 * MIB).to_string()
            );
            if file(layout, "memory", &rel, "memory.memsw.limit_in_bytes").exists() {
                let memsw = f("memory", "memory.memsw.limit_in_bytes");
                assert_eq!(memsw, (128 * MIB).to_string());
            }
            assert_eq!(f("cpu", "cpu.cfs_quota_us"), "100000");
        }
    }
    assert_eq!(f("pids", "pids.max"), "16");
    let s = cg.stats().unwrap();
    assert_eq!(
        (s.memory_limit, s.cpus_limit, s.pids_limit),
        (Some(128 * MIB), Some(1.0), Some(16))
    );

    // Lower it again, still above use.
    cg.update(&Limits {
        memory: Some(48 * MIB),
        ..Limits::default()
    })
    .unwrap();
    assert_eq!(cg.stats().unwrap().memory_limit, Some(48 * MIB));

    // Below what the child holds (swap is off): a clear error, no OOM kill,
    // and the limit stays.
    let start = Instant::now();
    let e = cg
        .update(&Limits {
            memory: Some(8 * MIB),
            ..Limits::default()
        })
        .unwrap_err();
    eprintln!("lowering below use failed in {:?}: {e}", start.elapsed());
    match &e {
        CgroupError::MemoryBelowUsage {
            requested, usage, ..
        } => {
            assert_eq!(*requested, 8 * MIB);
            assert!(*usage >= 8 * MIB, "usage {usage}");
        }
        other => panic!("expected MemoryBelowUsage, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(child.running(), "the child must survive a refused update");
    assert!(!cg.oom_killed().unwrap());
    assert_eq!(cg.stats().unwrap().memory_limit, Some(48 * MIB));

    g.take().remove().unwrap();
    let status = child.wait();
    assert_eq!(killed_by(status), Some(libc::SIGKILL), "status {status:#x}");
}

#[test]
fn remove_kills_what_runs_and_removes_every_directory() {
    let Some(layout) = host("remove_kills_what_runs_and_removes_every_directory") else {
        return;
    };
    let g = Guard::create(&name("remove"));
    let rel = g.cg().rel_path().to_owned();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    g.cg().add_process(sleeper.id()).unwrap();
    let start = Instant::now();
    g.take().remove().unwrap();
    eprintln!("remove with one live process took {:?}", start.elapsed());
    let status = sleeper.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    for d in dirs(layout, &rel) {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn remove_stale_removes_leftovers_of_dead_workloads_only() {
    let Some(layout) = host("remove_stale_removes_leftovers_of_dead_workloads_only") else {
        return;
    };
    let stale = name("stale");
    let alive = name("alive");
    let keep = Guard::create(&alive);
    // A cgroup whose isolate was killed: created, holding a process, never removed.
    let leftover = Cgroup::create(&stale).unwrap();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    leftover.add_process(sleeper.id()).unwrap();
    let rel = leftover.rel_path().to_owned();
    drop(leftover);
    assert!(
        dirs(layout, &rel)[0].is_dir(),
        "Drop must not remove the cgroup"
    );

    // Other isolates (and other tests) may have cgroups now: only ours is dead.
    let removed = Cgroup::remove_stale(&|n| n != stale).unwrap();
    assert_eq!(removed, 1);
    for d in dirs(layout, &rel) {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(
        Cgroup::open(keep.cg().rel_path()).is_ok(),
        "a live cgroup was removed"
    );
}

#[test]
fn v2_procs_fd_starts_a_child_inside_the_cgroup() {
    if !unified_host("v2_procs_fd_starts_a_child_inside_the_cgroup") {
        return;
    }
    let g = Guard::create(&name("clone3"));
    let cg = g.cg();
    let fd = cg.procs_fd().expect("a directory fd on cgroup v2");

    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: fd.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: the child only calls pause until it is killed (no allocator,
    // no lock); `args.cgroup` is `fd`, open for the call.
    let pid = unsafe { clone3(&args) }.expect("clone3");
    if pid == 0 {
        loop {
            // SAFETY: pause has no arguments.
            unsafe { libc::pause() };
        }
    }
    let mut child = Child {
        pid: pid as libc::pid_t,
        go: None,
        reaped: false,
    };
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        own.lines().any(|l| l == format!("0::/{}", cg.rel_path())),
        "child is in {own}"
    );
    assert_eq!(cg.procs().unwrap(), vec![child.pid()]);
    g.take().remove().unwrap();
    assert_eq!(killed_by(child.wait()), Some(libc::SIGKILL));
}

#[test]
fn v2_enables_controllers_on_the_way_down() {
    if !unified_host("v2_enables_controllers_on_the_way_down") {
        return;
    }
    let g = Guard::create(&name("subtree"));
    let offered = read(&PathBuf::from("/sys/fs/cgroup/cgroup.controllers"));
    let parent = read(&PathBuf::from(
        "/sys/fs/cgroup/isolate/cgroup.subtree_control",
    ));
    let own = read(
        &PathBuf::from("/sys/fs/cgroup")
            .join(g.cg().rel_path())
            .join("cgroup.controllers"),
    );
    for c in ["memory", "pids", "cpu", "io"] {
        if offered.split_whitespace().any(|x| x == c) {
            assert!(
                parent.split_whitespace().any(|x| x == c),
                "{c} not in {parent}"
            );
            assert!(own.split_whitespace().any(|x| x == c), "{c} not in {own}");
        }
    }
    assert!(g.cg().procs_fd().is_some());
    g.take().remove().unwrap();
}

#[test]
fn v1_has_no_procs_fd() {
    match host("v1_has_no_procs_fd") {
        Some(Layout::Unified) => eprintln!("SKIP v1_has_no_procs_fd: host cgroups are unified v2"),
        Some(_) => {
            let g = Guard::create(&name("nofd"));
            assert!(g.cg().procs_fd().is_none());
            g.take().remove().unwrap();
        }
        None => {}
    }
}

#[test]
fn placement_is_clone_into_on_v2_and_self_join_on_v1() {
    let Some(layout) = host("placement_is_clone_into_on_v2_and_self_join_on_v1") else {
        return;
    };
    let g = Guard::create(&name("placement"));
    match (layout, g.cg().placement().unwrap()) {
        (Layout::Unified, isolate_cgroups::Placement::CloneInto(_)) => {}
        (Layout::Unified, p) => panic!("v2 placement {p:?}"),
        (_, isolate_cgroups::Placement::SelfJoin(files)) => assert!(!files.is_empty()),
        (_, p) => panic!("v1 placement {p:?}"),
    }
    g.take().remove().unwrap();
}

#[test]
fn a_family_sweep_removes_only_its_own_claimed_cgroups() {
    let Some(layout) = host("a_family_sweep_removes_only_its_own_claimed_cgroups") else {
        return;
    };
    let prefix: &'static str =
        Box::leak(format!("test-fam{}-", std::process::id()).into_boxed_str());
    let family = isolate_cgroups::Family::new(prefix);
    let spec = isolate_cgroups::Spec {
        limits: Limits {
            pids: Some(16),
            ..Limits::default()
        },
        ..Default::default()
    };
    let dead = family.create("dead", &spec).unwrap();
    let live = family.create("live", &spec).unwrap();
    let other = Guard::create(&name("other-family"));
    let dead_rel = dead.rel_path().to_owned();
    drop(dead);

    let mut gone = Vec::new();
    let removed = family
        .remove_stale(
            |id| (id == "dead").then_some(id.to_owned()),
            |id, claimed| {
                assert_eq!(id, claimed);
                gone.push(claimed);
            },
        )
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(gone, ["dead"]);
    for d in dirs(layout, &dead_rel) {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(
        Cgroup::open(live.rel_path()).is_ok(),
        "a live cgroup was removed"
    );
    assert!(
        Cgroup::open(other.cg().rel_path()).is_ok(),
        "another family's cgroup was removed"
    );
    family.remove_leftover("live").unwrap();
    family.remove_leftover("live").unwrap(); // already gone: not an error
    assert!(Cgroup::open(live.rel_path()).is_err());
}

#[test]
fn remove_of_an_empty_cgroup_removes_every_directory() {
    let Some(layout) = host("remove_of_an_empty_cgroup_removes_every_directory") else {
        return;
    };
    let g = Guard::create(&name("quick"));
    let rel = g.cg().rel_path().to_owned();
    g.take().remove().unwrap();
    for d in dirs(layout, &rel) {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
