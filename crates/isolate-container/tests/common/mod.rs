//! Shared helpers of the container tests: a busybox rootfs and root checks.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use isolate_core::{Outcome, Running, Stdio, Workload};

/// Whether the tests can run here; prints why not.
pub fn can_run(test: &str) -> bool {
    if isolate_core::sys::rootless() {
        eprintln!("SKIP {test}: container mode needs root");
        return false;
    }
    if rootfs().is_none() {
        eprintln!("SKIP {test}: no busybox-static to build a test rootfs (apt-get install busybox-static)");
        return false;
    }
    true
}

fn find_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            p.is_file()
                && Command::new("file")
                    .arg(p)
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked"))
                    .unwrap_or(true)
        })
}

/// A busybox rootfs built once per test binary (under the target dir's
/// tmp), with /bin/busybox and its applets as symlinks.
pub fn rootfs() -> Option<&'static Path> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        // A helper process (e.g. the rootless one) reuses its parent's rootfs.
        if let Some(dir) = std::env::var_os("ISOLATE_TEST_ROOTFS") {
            return Some(PathBuf::from(dir));
        }
        let busybox = find_busybox()?;
        let dir =
            std::env::temp_dir().join(format!("isolate-container-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc", "root",
            "data",
        ] {
            std::fs::create_dir_all(dir.join(d)).ok()?;
        }
        std::fs::copy(&busybox, dir.join("bin/busybox")).ok()?;
        let out = Command::new(dir.join("bin/busybox"))
            .arg("--list-full")
            .output()
            .ok()?;
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            let link = dir.join(applet);
            if applet != "bin/busybox" && !link.exists() {
                let _ = std::os::unix::fs::symlink("/bin/busybox", link);
            }
        }
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        )
        .ok()?;
        std::fs::write(
            dir.join("etc/group"),
            "root:x:0:\ntty:x:5:\nnobody:x:65534:\n",
        )
        .ok()?;
        std::fs::write(dir.join("etc/marker"), "original\n").ok()?;
        std::fs::write(dir.join("etc/not-exec"), "just text\n").ok()?;
        Some(dir)
    })
    .as_deref()
}

/// A workload of `sh -c script` on the test rootfs, stdout and stderr piped.
pub fn sh(script: &str) -> Workload {
    let mut w = Workload::new("/bin/sh");
    w.args(["-c", script])
        .rootfs(rootfs().expect("checked by can_run"))
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped);
    w
}

/// Runs a spawned workload to its end, returning its outcome, stdout and stderr.
pub fn collect(r: &dyn Running) -> (Outcome, String, String) {
    let out = r.take_stdout();
    let err = r.take_stderr();
    let t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = err {
            std::io::Read::read_to_string(&mut e, &mut s).ok();
        }
        s
    });
    let mut o = String::new();
    if let Some(mut f) = out {
        std::io::Read::read_to_string(&mut f, &mut o).ok();
    }
    let e = t.join().unwrap();
    (r.wait().expect("wait"), o, e)
}

/// What a finished run `id` would have left: its cgroup in any hierarchy,
/// or its marker still locked or saying "in progress".
pub fn leftovers(id: &str) -> Vec<String> {
    let mut v: Vec<String> = cgroup_dirs(id)
        .into_iter()
        .map(|p| p.display().to_string())
        .collect();
    let marker = isolate_core::paths::state_dir().join("containers").join(id);
    if let Ok(f) = std::fs::OpenOptions::new().read(true).open(&marker) {
        // SAFETY: flock on a descriptor `f` owns (released when `f` closes).
        let free = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } == 0;
        let idle = std::fs::read(&marker).is_ok_and(|b| b.starts_with(b"0"));
        if !free || !idle {
            v.push(format!(
                "{} (locked: {}, idle: {idle})",
                marker.display(),
                !free
            ));
        }
    }
    v
}

fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup",
    ]
    .iter()
    .map(|root| Path::new(root).join("isolate").join(format!("ct-{id}")))
    .filter(|p| p.exists())
    .collect()
}

/// For an unnamed run's slot: if no other run holds the slot now, its
/// marker is idle and its cgroup gone.
pub fn assert_slot_released(id: &str) {
    let marker = isolate_core::paths::state_dir().join("containers").join(id);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .open(&marker)
        .unwrap();
    // SAFETY: flock on a descriptor `f` owns (released when `f` closes).
    let free = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } == 0;
    if free {
        assert_eq!(std::fs::read(&marker).unwrap(), b"0\n");
        assert!(cgroup_dirs(id).is_empty(), "cgroup of {id} left");
    } else {
        eprintln!(
            "note: slot {id} was taken by another run; its release is checked by the named runs"
        );
    }
}

/// Points `ISOLATE_HOME` at a private directory for this test binary, so
/// named volumes made by tests stay out of the host's isolate home.
pub fn private_home() {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("isolate-container-home-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var("ISOLATE_HOME", &dir);
        dir
    });
}
