//! Container mode end to end, as root, on a busybox rootfs built by the
//! test. Each test checks that its run left nothing behind.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{can_run, collect, leftovers, rootfs, sh};
use isolate_container::ContainerIsolator;
use isolate_core::{Error, ExecFailure, Isolator, Outcome, Status, Stdio, Volume, Workload};

/// Spawns `w` under a name unique to this test run (tests run in parallel:
/// unnamed runs reuse marker slots, so only a unique name lets a test check
/// exactly what its own run left), keeping the default hostname.
fn spawn(w: &Workload) -> Box<dyn isolate_core::Running> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut w = w.clone();
    if w.name.is_none() {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        w.name(format!("t{}-{n}", std::process::id()));
        if w.hostname.is_none() {
            w.hostname("isolate");
        }
    }
    w.validate().expect("valid workload");
    ContainerIsolator::new()
        .spawn(&w)
        .unwrap_or_else(|e| panic!("{}", e.chain()))
}

/// Runs `w`, returns outcome and output, and asserts nothing is left behind.
fn run(w: &Workload) -> (Outcome, String, String) {
    let r = spawn(w);
    let id = r.id().to_string();
    let got = collect(&*r);
    drop(r);
    assert_no_leftovers(&id);
    got
}

fn assert_no_leftovers(id: &str) {
    let left = leftovers(id);
    assert!(left.is_empty(), "left behind: {left:?}");
    // The container's mounts lived in its own mount namespace only.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let base = isolate_core::paths::state_dir().join("containers");
    assert!(
        !mounts.contains(base.to_str().unwrap()),
        "a container mount is visible on the host:\n{mounts}"
    );
}

fn spawn_err(w: &Workload) -> Error {
    match ContainerIsolator::new().spawn(w) {
        Ok(r) => panic!("spawned {:?}", r.wait()),
        Err(e) => e,
    }
}

#[test]
fn hostname_is_its_own() {
    if !can_run("hostname_is_its_own") {
        return;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let (o, out, _) = run(&sh("hostname"));
    assert!(o.success());
    assert_eq!(out, "isolate\n");
    assert_ne!(out, host);
    let mut w = sh("hostname");
    w.hostname("sandbox-7");
    assert_eq!(run(&w).1, "sandbox-7\n");
}

#[test]
fn sees_only_its_own_processes() {
    if !can_run("sees_only_its_own_processes") {
        return;
    }
    let (o, out, err) = run(&sh(
        "ls /proc | grep -c '^[0-9]'; ps -o pid,comm | tail -n +2",
    ));
    assert!(o.success(), "{err}");
    let mut lines = out.lines();
    let count: u32 = lines.next().unwrap().trim().parse().unwrap();
    // The shim (1), sh (2), and ls/grep of the pipeline.
    assert!(count <= 4, "{out}");
    let pids: Vec<u32> = lines
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(pids.contains(&1) && pids.contains(&2), "{out}");
    assert!(pids.iter().all(|&p| p < 10), "{out}");
}

#[test]
fn init_reaps_orphans_and_app_is_pid_2() {
    if !can_run("init_reaps_orphans_and_app_is_pid_2") {
        return;
    }
    // The inner sh exits at once and leaves its `sleep` child orphaned,
    // which then ends: PID 1 must reap it (no zombie left).
    let (o, out, err) = run(&sh(
        "echo $$; sh -c 'sleep 0.1 &'; sleep 0.5; ps -o stat,comm | grep -c '^ *Z' || true",
    ));
    assert!(o.success(), "{err}");
    let mut l = out.lines();
    assert_eq!(l.next(), Some("2"));
    assert_eq!(l.next(), Some("0"), "zombies left: {out}");
}

#[test]
fn signals_are_forwarded_to_the_app() {
    if !can_run("signals_are_forwarded_to_the_app") {
        return;
    }
    let mut w = Workload::new("/bin/sleep");
    w.arg("30").rootfs(rootfs().unwrap());
    let r = spawn(&w);
    r.signal(libc::SIGTERM).unwrap();
    let o = r.wait().unwrap();
    assert_eq!(o.status, Status::Signaled(libc::SIGTERM));
    assert_eq!(o.exit_code(), 143);
    assert!(o.wall_time < Duration::from_secs(10));
    assert_no_leftovers(r.id());
}

#[test]
fn exit_codes_signals_and_timeout_map() {
    if !can_run("exit_codes_signals_and_timeout_map") {
        return;
    }
    assert_eq!(run(&sh("exit 3")).0.status, Status::Exited(3));
    assert_eq!(
        run(&sh("kill -TERM $$; sleep 5")).0.status,
        Status::Signaled(libc::SIGTERM)
    );
    let mut w = sh("sleep 30");
    w.timeout(Duration::from_millis(300));
    let t = Instant::now();
    let (o, _, _) = run(&w);
    assert_eq!(o.status, Status::TimedOut);
    assert_eq!(o.exit_code(), 124);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(o.startup_time.unwrap() < o.wall_time);
}

#[test]
fn kill_and_drop_end_the_container() {
    if !can_run("kill_and_drop_end_the_container") {
        return;
    }
    let mut w = sh("sleep 30");
    w.stdout(Stdio::Null);
    let r = spawn(&w);
    r.kill().unwrap();
    assert_eq!(r.wait().unwrap().status, Status::Signaled(libc::SIGKILL));
    assert_no_leftovers(r.id());
    let r = spawn(&w);
    let id = r.id().to_string();
    drop(r);
    assert_no_leftovers(&id);
    // Unnamed: the run's slot marker is idle again (unless another test's
    // run has taken the slot meanwhile) and its cgroup is gone.
    let r = ContainerIsolator::new().spawn(&w).unwrap();
    let id = r.id().to_string();
    assert!(id.starts_with("run-"), "{id}");
    drop(r);
    common::assert_slot_released(&id);
}

#[test]
fn stdio_is_piped_separately() {
    if !can_run("stdio_is_piped_separately") {
        return;
    }
    let mut w = sh("cat; echo err >&2; exit 0");
    w.stdin(Stdio::Piped);
    let r = spawn(&w);
    let mut input = r.take_stdin().unwrap();
    input.write_all(b"hello\nworld\n").unwrap();
    drop(input);
    let (o, out, err) = collect(&*r);
    assert!(o.success());
    assert_eq!(out, "hello\nworld\n");
    assert_eq!(err, "err\n");
    assert_no_leftovers(r.id());
}

#[test]
fn env_cwd_and_user_are_applied() {
    if !can_run("env_cwd_and_user_are_applied") {
        return;
    }
    let mut w = sh("echo \"$GREETING\"; pwd; id -u; id -g; grep CapEff /proc/self/status");
    w.env("GREETING", "hello world")
        .current_dir("/tmp/work")
        .user(1000, 1001);
    let (o, out, err) = run(&w);
    assert!(o.success(), "{err}");
    assert_eq!(
        out,
        "hello world\n/tmp/work\n1000\n1001\nCapEff:\t0000000000000000\n"
    );
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    if !can_run("fork_bomb_stops_at_the_pids_limit") {
        return;
    }
    // Counting uses shell builtins only: no fork is possible at the limit.
    let mut w = sh(
        "(for i in $(seq 1 60); do sleep 10 & done); n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n",
    );
    w.pids(16).timeout(Duration::from_secs(30));
    let (o, out, err) = run(&w);
    let n: u32 = out.trim().parse().unwrap_or_else(|_| panic!("{out} {err}"));
    assert!(n <= 16, "{n} processes under a limit of 16");
    assert!(err.contains("fork"), "{err}");
    assert!(o.wall_time < Duration::from_secs(10));
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    if !can_run("memory_hog_is_oom_killed_and_reported") {
        return;
    }
    let mut w = Workload::new("tail");
    w.arg("/dev/zero")
        .rootfs(rootfs().unwrap())
        .memory(32 << 20)
        .timeout(Duration::from_secs(30));
    let (o, _, _) = run(&w);
    assert_eq!(o.status, Status::OomKilled);
    assert_eq!(o.exit_code(), 137);
    let peak = o.peak_memory.expect("peak memory reported");
    assert!(peak > 16 << 20 && peak <= 33 << 20, "peak {peak}");
    assert!(o.cpu_time.is_some());
}

#[test]
fn read_only_root_refuses_writes_but_tmp_works() {
    if !can_run("read_only_root_refuses_writes_but_tmp_works") {
        return;
    }
    let mut w = sh("echo x > /file-on-root; echo ok > /tmp/f && cat /tmp/f");
    w.read_only(true);
    let (o, out, err) = run(&w);
    assert!(o.success());
    assert_eq!(out, "ok\n");
    assert!(err.contains("Read-only"), "{err}");
    assert!(!rootfs().unwrap().join("file-on-root").exists());
}

#[test]
fn writes_to_the_root_vanish_and_rootfs_is_unchanged() {
    if !can_run("writes_to_the_root_vanish_and_rootfs_is_unchanged") {
        return;
    }
    let root = rootfs().unwrap();
    let (o, out, err) = run(&sh(
        "echo changed > /etc/marker; rm /etc/not-exec; touch /new-file; cat /etc/marker",
    ));
    assert!(o.success(), "{err}");
    assert_eq!(out, "changed\n");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/marker")).unwrap(),
        "original\n"
    );
    assert!(root.join("etc/not-exec").exists());
    assert!(!root.join("new-file").exists());
    let (_, out, _) = run(&sh("cat /etc/marker; test -e /new-file && echo leaked"));
    assert_eq!(out, "original\n");
}

#[test]
fn mount_unshare_and_reboot_are_denied() {
    if !can_run("mount_unshare_and_reboot_are_denied") {
        return;
    }
    for (cmd, expect) in [
        ("mount -t tmpfs none /mnt", "denied"),
        ("unshare -U true", "not permitted"),
        ("unshare -n true", "not permitted"),
        ("reboot -f", "not permitted"),
    ] {
        let mut w = sh(&format!("mkdir -p /mnt; {cmd}"));
        w.stdout(Stdio::Null);
        let (o, _, err) = run(&w);
        assert!(!o.success(), "{cmd} succeeded");
        assert!(err.to_lowercase().contains(expect), "{cmd}: {err}");
    }
}

#[test]
fn proc_and_sys_are_masked_and_read_only() {
    if !can_run("proc_and_sys_are_masked_and_read_only") {
        return;
    }
    let (o, out, err) = run(&sh("wc -c < /proc/keys; wc -c < /proc/timer_list; \
         (cat /proc/kcore 2>/dev/null || true) | wc -c; \
         find /proc/acpi /sys/firmware -mindepth 1 2>/dev/null | wc -l; \
         echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null || echo ro-sys; \
         touch /sys/x 2>/dev/null || echo ro-sysfs; \
         test -e /dev/kvm || echo no-kvm; \
         grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '"));
    assert!(o.success(), "{err}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "0",
            "0",
            "0",
            "0",
            "ro-sys",
            "ro-sysfs",
            "no-kvm",
            "NoNewPrivs: 1",
            "Seccomp: 2"
        ],
        "{out}"
    );
}

#[test]
fn capabilities_default_to_dockers_set() {
    if !can_run("capabilities_default_to_dockers_set") {
        return;
    }
    // The 14 names' numbers, from <linux/capability.h>.
    let expected: u64 = [0u32, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31]
        .iter()
        .map(|n| 1u64 << n)
        .sum();
    let script = "grep -E '^Cap(Eff|Bnd|Inh|Amb)' /proc/self/status";
    let (_, out, _) = run(&sh(script));
    assert!(out.contains(&format!("CapEff:\t{expected:016x}")), "{out}");
    assert!(out.contains(&format!("CapBnd:\t{expected:016x}")), "{out}");
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");

    let mut w = sh(script);
    w.capabilities.add.push("NET_ADMIN".into());
    w.capabilities.drop.push("CHOWN".into());
    let (_, out, _) = run(&w);
    let changed = (expected | 1 << 12) & !1;
    assert!(out.contains(&format!("CapEff:\t{changed:016x}")), "{out}");

    let mut w = sh("chown 1 /tmp");
    w.capabilities.drop.push("ALL".into());
    let (o, _, err) = run(&w);
    assert!(!o.success() && err.contains("not permitted"), "{err}");
}

#[test]
fn host_volume_is_visible_and_read_only_enforced() {
    if !can_run("host_volume_is_visible_and_read_only_enforced") {
        return;
    }
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from host\n").unwrap();
    let mut w = sh("cat /mnt/host/in; echo back > /mnt/host/out");
    w.volume(Volume::host(host.path(), "/mnt/host"));
    let (o, out, err) = run(&w);
    assert!(o.success(), "{err}");
    assert_eq!(out, "from host\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "back\n"
    );

    let mut w = sh("cat /mnt/host/in; echo again > /mnt/host/out");
    w.volume(Volume::host(host.path(), "/mnt/host").read_only());
    let (o, out, err) = run(&w);
    assert!(!o.success());
    assert_eq!(out, "from host\n");
    assert!(err.contains("Read-only"), "{err}");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "back\n"
    );
}

#[test]
fn named_volume_survives_into_the_next_run() {
    if !can_run("named_volume_survives_into_the_next_run") {
        return;
    }
    if !std::path::Path::new("/sbin/mkfs.ext4").exists() {
        eprintln!("SKIP named_volume_survives_into_the_next_run: no mkfs.ext4 (apt-get install e2fsprogs)");
        return;
    }
    common::private_home();
    let name = format!("ctest-{}", std::process::id());
    let mut w = sh("echo persisted > /data/f && sync");
    w.volume(Volume::named(&name, "/data"));
    let (o, _, err) = run(&w);
    assert!(o.success(), "{err}");
    let mut w = sh("cat /data/f");
    w.volume(Volume::named(&name, "/data"));
    let (o, out, err) = run(&w);
    assert!(o.success(), "{err}");
    assert_eq!(out, "persisted\n");
    // A VM guest may have written the image: no set-id programs, no device
    // nodes through it; `:ro` is read-only.
    let mut w = sh("grep ' /data ' /proc/self/mounts");
    w.volume(Volume::named(&name, "/data"));
    let (o, out, err) = run(&w);
    assert!(o.success(), "{err}");
    let opts = out
        .split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string();
    for want in ["nosuid", "nodev", "rw"] {
        assert!(opts.split(',').any(|o| o == want), "{want} missing: {out}");
    }
    let mut w = sh("grep ' /data ' /proc/self/mounts; touch /data/g");
    w.volume(Volume::named(&name, "/data").read_only());
    let (o, out, _) = run(&w);
    assert!(!o.success(), "a read-only named volume took a write: {out}");
    let opts = out
        .split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string();
    assert!(opts.split(',').any(|o| o == "ro"), "not read-only: {out}");
    // One ext4 image is never mounted by two runs at once.
    let mut w = sh("sleep 30");
    w.volume(Volume::named(&name, "/data")).stdout(Stdio::Null);
    let first = spawn(&w);
    let e = spawn_err(&w);
    assert!(e.chain().contains("in use"), "{}", e.chain());
    assert_eq!(e.exit_code(), 125);
    first.kill().unwrap();
    first.wait().unwrap();
    let image = isolate_image::volume::image_path(&name);
    // The loop devices detached themselves (autoclear).
    let attached = || {
        std::fs::read_dir("/sys/block").unwrap().flatten().any(|d| {
            std::fs::read_to_string(d.path().join("loop/backing_file"))
                .is_ok_and(|b| b.trim() == image.to_str().unwrap())
        })
    };
    let t = Instant::now();
    while attached() && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !attached(),
        "loop device still attached to {}",
        image.display()
    );
    let _ = std::fs::remove_file(image);
}

#[test]
fn bad_input_gets_one_clear_error_and_leaves_nothing() {
    if !can_run("bad_input_gets_one_clear_error_and_leaves_nothing") {
        return;
    }
    let mut w = Workload::new("/bin/true");
    w.rootfs("/no/such/rootfs").name("bad-rootfs");
    let e = spawn_err(&w);
    assert_eq!(e.exit_code(), 125);
    assert!(e.chain().contains("/no/such/rootfs"), "{}", e.chain());

    let mut w = Workload::new("/no/such/program");
    w.rootfs(rootfs().unwrap()).name("bad-cmd");
    let e = spawn_err(&w);
    assert!(
        matches!(
            e,
            Error::Exec {
                kind: ExecFailure::NotFound,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 127);
    assert_no_leftovers("bad-cmd");

    let mut w = Workload::new("nosuchcmd");
    w.rootfs(rootfs().unwrap()).name("bad-path-cmd");
    assert_eq!(spawn_err(&w).exit_code(), 127);
    assert_no_leftovers("bad-path-cmd");

    let mut w = Workload::new("/etc/not-exec");
    w.rootfs(rootfs().unwrap()).name("bad-exec");
    let e = spawn_err(&w);
    assert!(
        matches!(
            e,
            Error::Exec {
                kind: ExecFailure::NotExecutable,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.exit_code(), 126);
    assert_no_leftovers("bad-exec");

    let mut w = Workload::new("/bin/true");
    w.rootfs(rootfs().unwrap())
        .name("bad-vol-src")
        .volume(Volume::host("/no/such/dir", "/data"));
    let e = spawn_err(&w);
    assert_eq!(e.exit_code(), 125);
    assert!(e.chain().contains("/no/such/dir"), "{}", e.chain());
    assert_no_leftovers("bad-vol-src");

    // A target that climbs out of the root through a symlink.
    let root = tempfile::tempdir().unwrap();
    copy_root(rootfs().unwrap(), root.path());
    std::os::unix::fs::symlink("../../../../../tmp", root.path().join("escape")).unwrap();
    let host = tempfile::tempdir().unwrap();
    let mut w = Workload::new("/bin/true");
    w.rootfs(root.path())
        .name("bad-vol-dst")
        .volume(Volume::host(host.path(), "/escape/x"));
    let e = spawn_err(&w);
    assert_eq!(e.exit_code(), 125);
    assert!(e.chain().contains("leaves the root"), "{}", e.chain());
    assert_no_leftovers("bad-vol-dst");
}

/// A shallow copy of the test rootfs (busybox binary and applet links).
fn copy_root(from: &std::path::Path, to: &std::path::Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn named_workload_is_registered_and_updatable() {
    if !can_run("named_workload_is_registered_and_updatable") {
        return;
    }
    let name = format!("ctest-upd-{}", std::process::id());
    let mut w = sh("sleep 30");
    w.name(&name).memory(64 << 20).stdout(Stdio::Null);
    let r = ContainerIsolator::new().spawn(&w).unwrap();
    assert_eq!(r.id(), name);
    let rec = isolate_core::state::get_live(&name).unwrap();
    assert_eq!(rec.mode, isolate_core::Mode::Container);
    assert!(
        rec.cgroup.ends_with(&format!("ct-{name}")),
        "{}",
        rec.cgroup
    );
    // Another process would open the cgroup by the record's path.
    let cg = isolate_cgroups::Cgroup::open(&rec.cgroup).unwrap();
    assert_eq!(cg.stats().unwrap().memory_limit, Some(64 << 20));
    r.update(&isolate_core::Limits {
        memory: Some(128 << 20),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(r.stats().unwrap().memory_limit, Some(128 << 20));
    assert!(r.stats().unwrap().pids_current.unwrap() >= 2);
    // SAFETY: kill(2) with the recorded pid of the container's init.
    assert_eq!(unsafe { libc::kill(rec.pid as i32, libc::SIGTERM) }, 0);
    assert_eq!(r.wait().unwrap().status, Status::Signaled(libc::SIGTERM));
    assert!(isolate_core::state::get(&name).unwrap().is_none());
    assert_no_leftovers(&name);
}

/// Helper for `killed_isolate_leaves_nothing_after_cleanup`: run in a
/// child process, spawns a named container and waits forever.
#[test]
#[ignore]
fn helper_spawn_and_hang() {
    let Ok(name) = std::env::var("ISOLATE_TEST_HANG_NAME") else {
        return;
    };
    let mut w = sh("sleep 60");
    w.name(&name).stdout(Stdio::Null).stderr(Stdio::Null);
    let r = ContainerIsolator::new().spawn(&w).unwrap();
    println!("ready {}", r.id());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn killed_isolate_leaves_nothing_after_cleanup() {
    if !can_run("killed_isolate_leaves_nothing_after_cleanup") {
        return;
    }
    let name = format!("ctest-kill9-{}", std::process::id());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_spawn_and_hang",
            "--ignored",
            "--nocapture",
        ])
        .env("ISOLATE_TEST_HANG_NAME", &name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = String::new();
    let t = Instant::now();
    while !buf.contains("ready") && t.elapsed() < Duration::from_secs(20) {
        let mut b = [0u8; 256];
        let n = out.read(&mut b).unwrap();
        if n == 0 {
            break;
        }
        buf.push_str(&String::from_utf8_lossy(&b[..n]));
    }
    assert!(buf.contains("ready"), "helper did not start: {buf}");
    let rec = isolate_core::state::get_live(&name).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // PDEATHSIG: the container's init dies with isolate.
    let t = Instant::now();
    while rec.alive() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!rec.alive(), "container init outlived isolate");
    // (Another test's spawn may already have cleaned up: each spawn does.)
    isolate_container::cleanup_stale();
    assert_no_leftovers(&name);
    assert!(isolate_core::state::get_live(&name).is_err());
}

#[test]
fn concurrent_spawns_do_not_hold_each_others_pipes() {
    if !can_run("concurrent_spawns_do_not_hold_each_others_pipes") {
        return;
    }
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let (o, out, _) = run(&sh(&format!("echo {i}")));
                assert!(o.success());
                assert_eq!(out, format!("{i}\n"));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Helper for `rootless_mode_maps_the_caller_to_root`: runs as an
/// unprivileged user in a child process.
#[test]
#[ignore]
fn helper_rootless() {
    if std::env::var_os("ISOLATE_TEST_ROOTLESS").is_none() {
        return;
    }
    let iso = ContainerIsolator::new();
    iso.check_host().unwrap();
    let (o, out, err) = {
        let w = sh(
            "id -u; hostname; echo $$; echo x > /etc/marker && cat /etc/marker; \
                    grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '; \
                    wc -c < /proc/keys; ls /dev/null; mount -t tmpfs none /tmp 2>&1 || true",
        );
        let r = iso.spawn(&w).unwrap_or_else(|e| panic!("{}", e.chain()));
        collect(&*r)
    };
    assert!(o.success(), "{err}");
    let expected = format!(
        "0\nisolate\n2\nx\nCapEff: {:016x}\nNoNewPrivs: 1\nSeccomp: 2\n0\n/dev/null\n",
        0xa80425fbu64
    );
    assert!(out.starts_with(&expected), "{out}");
    assert!(out.contains("denied"), "mount not denied: {out}");
    assert_eq!(
        std::fs::read_to_string(rootfs().unwrap().join("etc/marker")).unwrap(),
        "original\n"
    );
    // What needs root is refused up front, with the reason.
    let mut w = sh("true");
    w.memory(64 << 20);
    let e = spawn_err(&w);
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("needs root"), "{e}");
    println!("ROOTLESS-OK");
}

#[test]
fn rootless_mode_maps_the_caller_to_root() {
    if !can_run("rootless_mode_maps_the_caller_to_root") {
        return;
    }
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim() == "0" || max.is_empty() {
        eprintln!("SKIP rootless_mode_maps_the_caller_to_root: user namespaces are disabled");
        return;
    }
    use std::os::unix::process::CommandExt;
    // A rootless user owns its rootfs (files of unmapped owners are read-only).
    let root = tempfile::tempdir().unwrap();
    copy_root(rootfs().unwrap(), root.path());
    let st = std::process::Command::new("chown")
        .args(["-R", "-h", "65534:65534"])
        .arg(root.path())
        .status()
        .unwrap();
    assert!(st.success());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_rootless", "--ignored", "--nocapture"])
        .env("ISOLATE_TEST_ROOTLESS", "1")
        .env("ISOLATE_TEST_ROOTFS", root.path())
        .env_remove("ISOLATE_STATE")
        .env("XDG_RUNTIME_DIR", "")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("ROOTLESS-OK"),
        "{text}"
    );
}

/// Helper for `seccomp_denies_dangerous_calls`: runs inside a container (this
/// test binary, bound in with the host's libraries) and prints what each
/// call returned.
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore]
fn helper_syscalls() {
    if std::env::var_os("ISOLATE_TEST_SYSCALLS").is_none() {
        return;
    }
    fn errno_of(rc: libc::c_long) -> String {
        if rc >= 0 {
            "ok".into()
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .map_or("?".into(), |e| e.to_string())
        }
    }
    let null = std::ptr::null::<libc::c_void>();
    // Each result is turned into its errno right away, before any other call.
    macro_rules! call {
        ($name:expr, $($arg:expr),+) => {
            // SAFETY: integers, null pointers or C string literals only; a call
            // the filter lets through fails on its arguments or is harmless.
            ($name, errno_of(unsafe { libc::syscall($($arg),+) }))
        };
    }
    let results: Vec<(&str, String)> = vec![
        call!(
            "mount",
            libc::SYS_mount,
            c"none".as_ptr(),
            c"/tmp".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            null
        ),
        call!("umount2", libc::SYS_umount2, c"/proc".as_ptr(), 0),
        call!(
            "pivot_root",
            libc::SYS_pivot_root,
            c"/".as_ptr(),
            c"/".as_ptr()
        ),
        call!("reboot", libc::SYS_reboot, 0, 0, 0, null),
        call!("ptrace", libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0),
        call!("keyctl", libc::SYS_keyctl, 0, -3, 0, 0, 0),
        call!(
            "add_key",
            libc::SYS_add_key,
            c"user".as_ptr(),
            c"k".as_ptr(),
            null,
            0,
            -3
        ),
        call!("bpf", libc::SYS_bpf, 0, null, 0),
        call!(
            "perf_event_open",
            libc::SYS_perf_event_open,
            null,
            0,
            -1,
            -1,
            0
        ),
        call!("unshare_user", libc::SYS_unshare, libc::CLONE_NEWUSER),
        call!("unshare_ns", libc::SYS_unshare, libc::CLONE_NEWNS),
        call!("setns", libc::SYS_setns, -1, 0),
        call!("init_module", libc::SYS_init_module, null, 0, c"".as_ptr()),
        call!("finit_module", libc::SYS_finit_module, -1, c"".as_ptr(), 0),
        call!("kexec_load", libc::SYS_kexec_load, 0, 0, null, 0),
        call!("userfaultfd", libc::SYS_userfaultfd, 0),
        call!(
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            -1,
            null,
            0
        ),
        call!("swapon", libc::SYS_swapon, c"/x".as_ptr(), 0),
        call!("clock_settime", libc::SYS_clock_settime, 0, null),
        call!("syslog", libc::SYS_syslog, 3, null, 0),
        call!("iopl", libc::SYS_iopl, 3),
        call!("fsopen", libc::SYS_fsopen, c"tmpfs".as_ptr(), 0),
        call!("personality_rie", libc::SYS_personality, 0x0040_0000),
        call!("personality_query", libc::SYS_personality, 0xffff_ffffu64),
        call!("clone3", libc::SYS_clone3, null, 0),
        call!("getpid", libc::SYS_getpid, 0),
    ];
    for (name, result) in &results {
        println!("SYSCALL {name} {result}");
    }
    // clone with a namespace flag; if the filter let it through, the child
    // must not run on.
    // SAFETY: fork-like clone; the child only calls _exit.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0,
            0,
            0,
            0,
        )
    };
    if rc == 0 {
        // SAFETY: _exit in the child.
        unsafe { libc::_exit(0) };
    }
    println!("SYSCALL clone_newuser {}", errno_of(rc));
    // Threads still start: glibc falls back from clone3 (ENOSYS) to clone.
    let t = std::thread::spawn(|| 7).join().unwrap();
    println!("SYSCALL thread {}", if t == 7 { "ok" } else { "?" });
}

#[cfg(target_arch = "x86_64")]
#[test]
fn seccomp_denies_dangerous_calls() {
    if !can_run("seccomp_denies_dangerous_calls") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut w = Workload::new("/testbin/container-helper");
    w.args(["--exact", "helper_syscalls", "--ignored", "--nocapture"])
        .env("ISOLATE_TEST_SYSCALLS", "1")
        .rootfs(rootfs().unwrap())
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped)
        .volume(Volume::host(&exe, "/testbin/container-helper").read_only());
    // The test binary's shared libraries, where the host keeps them.
    for dir in [
        "/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib/x86_64-linux-gnu",
    ] {
        if std::path::Path::new(dir).is_dir()
            && !w
                .volumes
                .iter()
                .any(|v| v.target == std::path::Path::new(dir))
        {
            w.volume(Volume::host(dir, dir).read_only());
        }
    }
    let (o, out, err) = run(&w);
    assert!(o.success(), "{out}\n{err}");
    let got: std::collections::BTreeMap<&str, &str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("SYSCALL "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let eperm = libc::EPERM.to_string();
    for name in [
        "mount",
        "umount2",
        "pivot_root",
        "reboot",
        "ptrace",
        "keyctl",
        "add_key",
        "bpf",
        "perf_event_open",
        "unshare_user",
        "unshare_ns",
        "setns",
        "init_module",
        "finit_module",
        "kexec_load",
        "userfaultfd",
        "open_by_handle_at",
        "swapon",
        "clock_settime",
        "syslog",
        "iopl",
        "fsopen",
        "personality_rie",
        "clone_newuser",
    ] {
        assert_eq!(got.get(name), Some(&eperm.as_str()), "{name}: {out}");
    }
    assert_eq!(
        got.get("clone3"),
        Some(&libc::ENOSYS.to_string().as_str()),
        "{out}"
    );
    for name in ["personality_query", "getpid", "thread"] {
        assert_eq!(got.get(name), Some(&"ok"), "{name}: {out}");
    }
}

#[test]
fn host_devices_do_not_open_unless_given() {
    if !can_run("host_devices_do_not_open_unless_given") {
        return;
    }
    // loop-control (10:237): a node made inside must not open.
    let mut w = sh("mknod /tmp/lc c 10 237 && exec 3</tmp/lc");
    w.stdout(Stdio::Null);
    let (o, _, err) = run(&w);
    assert!(!o.success(), "a host device opened: {err}");
    assert!(err.contains("not permitted"), "{err}");
    // Docker's default devices still work.
    let (o, out, err) = run(&sh("head -c 3 /dev/zero | wc -c; echo x > /dev/null"));
    assert!(o.success(), "{err}");
    assert_eq!(out.trim(), "3");
    // --device makes one available, at another path, with the access given.
    if std::path::Path::new("/dev/net/tun").exists() {
        let mut w = sh("exec 3</dev/tun0 && echo read; exec 4<>/dev/tun0 && echo write");
        w.devices.push(isolate_core::Device {
            host: "/dev/net/tun".into(),
            container: "/dev/tun0".into(),
            access: "r".into(),
        });
        let (o, out, _) = run(&w);
        assert!(!o.success());
        assert_eq!(out, "read\n");
    }
}

#[test]
fn image_links_never_lead_isolate_out_of_the_root() {
    if !can_run("image_links_never_lead_isolate_out_of_the_root") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    copy_root(rootfs().unwrap(), &root);
    // `app` climbs out of the root towards /tmp, which the host has too.
    let up = "../".repeat(20);
    std::os::unix::fs::symlink(format!("{up}tmp"), root.join("app")).unwrap();
    let mark = format!("isolate-escape-{}", std::process::id());
    let mut w = sh(&format!("pwd; touch /app/{mark}-file"));
    w.rootfs(&root);
    w.cwd = Some(format!("/app/{mark}-dir").into());
    let (o, out, err) = run(&w);
    assert!(o.success(), "{err}");
    assert_eq!(out, format!("/tmp/{mark}-dir\n"));
    for leak in ["dir", "file"] {
        let host = std::path::Path::new("/tmp").join(format!("{mark}-{leak}"));
        assert!(
            !host.exists(),
            "isolate wrote {} on the host",
            host.display()
        );
    }
}

#[test]
fn cgroup_namespace_is_rooted_at_the_containers_cgroup() {
    if !can_run("cgroup_namespace_is_rooted_at_the_containers_cgroup") {
        return;
    }
    let (o, out, err) = run(&sh("cat /proc/self/cgroup"));
    assert!(o.success(), "{err}");
    // Every hierarchy (v1) or the one v2 line shows the namespace's root.
    assert!(!out.is_empty());
    for line in out.lines() {
        assert!(line.ends_with(":/"), "the host's cgroup path shows: {out}");
    }
}

/// Whether `--network bridge` can run here (root, and the `nft` command).
fn can_bridge(test: &str) -> bool {
    if !can_run(test) {
        return false;
    }
    let nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !nft {
        eprintln!("SKIP {test}: no nft command (apt-get install nftables)");
    }
    nft
}

#[test]
fn bridge_address_is_reported_and_dropping_the_handle_releases_it() {
    if !can_bridge("bridge_address_is_reported_and_dropping_the_handle_releases_it") {
        return;
    }
    let mut w = sh("cat /proc/net/fib_trie; sleep 30");
    w.network(isolate_core::Network::Bridge);
    let r = spawn(&w);
    let addr = r.address().expect("a bridge workload has an address");
    let lease = isolate_net::dir().join(format!("leases/{addr}"));
    let veth = format!("/sys/class/net/iso{:08x}", u32::from(addr));
    assert!(lease.exists(), "no lease {}", lease.display());
    assert!(std::path::Path::new(&veth).exists(), "no veth {veth}");
    let mut out = r.take_stdout().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(&addr.to_string()) {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "the workload does not see {addr}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let id = r.id().to_string();
    drop(r);
    assert!(!lease.exists(), "lease {} left after drop", lease.display());
    assert!(
        !std::path::Path::new(&veth).exists(),
        "veth {veth} left after drop"
    );
    assert_no_leftovers(&id);
}

#[test]
fn bridge_outcome_carries_the_address() {
    if !can_bridge("bridge_outcome_carries_the_address") {
        return;
    }
    let mut w = sh("true");
    w.network(isolate_core::Network::Bridge);
    let (o, _, err) = run(&w);
    assert!(o.success(), "{err}");
    assert!(o.address.is_some_and(|a| a.octets()[0] != 127));
    let mut w = sh("true");
    w.network(isolate_core::Network::Loopback);
    assert_eq!(run(&w).0.address, None);
}
