//! The seccomp filter, end to end, as root: the default refuses what
//! Docker's default profile refuses (and TIOCSTI, io_uring, AF_VSOCK),
//! ordinary programs still run, `unconfined` lifts it and a JSON profile
//! replaces it.
//!
//! The probes run this test binary inside a container (bound in with the
//! host's libraries) and print what each call returned.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{can_run, collect, rootfs, sh};
use isolate_container::ContainerIsolator;
use isolate_core::{Isolator, Outcome, Seccomp, SeccompProfile, Stdio, Volume, Workload};

fn run(w: &Workload) -> (Outcome, String, String) {
    w.validate().expect("valid workload");
    let r = ContainerIsolator::new()
        .spawn(w)
        .unwrap_or_else(|e| panic!("{}", e.chain()));
    collect(&*r)
}

/// The probes, in a container with `policy`: call name → "ok" or errno.
#[cfg(target_arch = "x86_64")]
fn probe(policy: Seccomp) -> BTreeMap<String, String> {
    let exe = std::env::current_exe().unwrap();
    let mut w = Workload::new("/testbin/seccomp-probe");
    w.args([
        "--exact",
        "helper_probe",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("ISOLATE_TEST_SECCOMP_PROBE", "1")
    .rootfs(rootfs().unwrap())
    .stdout(Stdio::Piped)
    .stderr(Stdio::Piped)
    .seccomp(policy)
    .volume(Volume::host(&exe, "/testbin/seccomp-probe").read_only());
    for dir in [
        "/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib/x86_64-linux-gnu",
    ] {
        if Path::new(dir).is_dir() {
            w.volume(Volume::host(dir, dir).read_only());
        }
    }
    let (o, out, err) = run(&w);
    assert!(o.success(), "{o:?}\n{out}\n{err}");
    out.lines()
        .filter_map(|l| l.strip_prefix("SYSCALL "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs inside the container: each probe's result, as `SYSCALL name r`.
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore]
fn helper_probe() {
    if std::env::var_os("ISOLATE_TEST_SECCOMP_PROBE").is_none() {
        return;
    }
    fn result(rc: libc::c_long) -> String {
        if rc >= 0 {
            "ok".into()
        } else {
            std::io::Error::last_os_error()
                .raw_os_error()
                .map_or("?".into(), |e| e.to_string())
        }
    }
    let null = std::ptr::null::<libc::c_void>();
    macro_rules! call {
        ($name:expr, $($arg:expr),+) => {{
            // SAFETY: integers, null pointers, C string literals or
            // pointers to live locals only; a call the filter lets through
            // fails on its arguments or is harmless.
            let rc = unsafe { libc::syscall($($arg),+) };
            println!("SYSCALL {} {}", $name, result(rc));
        }};
    }
    // libtest's "test helper_probe ... " has no newline of its own.
    println!();
    call!("getpid", libc::SYS_getpid, 0);
    call!(
        "mount",
        libc::SYS_mount,
        c"none".as_ptr(),
        c"/tmp".as_ptr(),
        c"tmpfs".as_ptr(),
        0,
        null
    );
    call!("unshare_files", libc::SYS_unshare, libc::CLONE_FILES);
    call!("unshare_user", libc::SYS_unshare, libc::CLONE_NEWUSER);
    call!("setns", libc::SYS_setns, -1, 0);
    call!("io_uring_setup", libc::SYS_io_uring_setup, 1, null);
    call!(
        "io_uring_enter",
        libc::SYS_io_uring_enter,
        -1,
        0,
        0,
        0,
        null,
        0
    );
    // SAFETY: getpid has no arguments.
    let me = unsafe { libc::getpid() };
    call!("kcmp", libc::SYS_kcmp, me, me, 0, 0, 0);
    call!("clone3", libc::SYS_clone3, null, 0);
    call!("personality_rie", libc::SYS_personality, 0x0040_0000);
    call!("personality_query", libc::SYS_personality, 0xffff_ffffu64);
    call!("x32_getpid", 0x4000_0000 | libc::SYS_getpid, 0);
    for (name, family) in [
        ("socket_vsock", libc::AF_VSOCK as u64),
        (
            "socket_vsock_high_bits",
            libc::AF_VSOCK as u64 | 0x1_0000_0000,
        ),
        ("socket_alg", libc::AF_ALG as u64),
        ("socket_unix", libc::AF_UNIX as u64),
    ] {
        // SAFETY: socket takes integers; a descriptor it returns is closed.
        let fd = unsafe { libc::syscall(libc::SYS_socket, family, libc::SOCK_STREAM, 0) };
        println!("SYSCALL {name} {}", result(fd));
        if fd >= 0 {
            // SAFETY: `fd` is the descriptor just opened.
            unsafe { libc::close(fd as i32) };
        }
    }
    // Own memory through process_vm_readv: refused without
    // CAP_SYS_PTRACE (stricter than Docker since Linux 4.8).
    let src = [7u8; 8];
    let mut dst = [0u8; 8];
    let local = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: src.as_ptr() as *mut libc::c_void,
        iov_len: 8,
    };
    call!(
        "process_vm_readv",
        libc::SYS_process_vm_readv,
        me,
        &local as *const libc::iovec,
        1,
        &remote as *const libc::iovec,
        1,
        0
    );

    // A new session with a pty as its controlling terminal: TIOCSTI on it
    // is what the kernel allows, so only the filter refuses it. In a
    // child, which is never a process group leader already (the helper
    // runs single-threaded, so the child may print).
    // SAFETY: fork in a single-threaded process; the child uses plain
    // libc calls on descriptors it opens, a buffer of its stated length,
    // locals that live across each ioctl, and ends with _exit.
    unsafe {
        let child = libc::fork();
        assert!(child >= 0, "fork");
        if child == 0 {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            assert!(master >= 0, "posix_openpt");
            assert_eq!(libc::grantpt(master), 0);
            assert_eq!(libc::unlockpt(master), 0);
            let mut name = [0 as libc::c_char; 64];
            assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
            println!("SYSCALL setsid {}", result(libc::setsid() as libc::c_long));
            let slave = libc::open(name.as_ptr(), libc::O_RDWR);
            assert!(slave >= 0, "open the pty");
            println!(
                "SYSCALL tiocsctty {}",
                result(libc::ioctl(slave, libc::TIOCSCTTY, 0) as libc::c_long)
            );
            let c: libc::c_char = b'x' as libc::c_char;
            println!(
                "SYSCALL tiocsti {}",
                result(libc::syscall(
                    libc::SYS_ioctl,
                    slave,
                    libc::TIOCSTI,
                    &c as *const libc::c_char
                ))
            );
            let mut sel: libc::c_char = 0;
            println!(
                "SYSCALL tioclinux {}",
                result(libc::syscall(
                    libc::SYS_ioctl,
                    slave,
                    libc::TIOCLINUX,
                    &mut sel as *mut libc::c_char
                ))
            );
            let mut ws: libc::winsize = std::mem::zeroed();
            println!(
                "SYSCALL tiocgwinsz {}",
                result(libc::syscall(
                    libc::SYS_ioctl,
                    slave,
                    libc::TIOCGWINSZ,
                    &mut ws as *mut libc::winsize
                ))
            );
            use std::io::Write;
            let _ = std::io::stdout().flush();
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(child, &mut status, 0), child);
        assert_eq!(status, 0, "pty probe");
    }

    // clone with a namespace flag; a child the filter let through exits.
    // SAFETY: fork-like clone; the child only calls _exit.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWNS | libc::SIGCHLD) as libc::c_ulong,
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
    println!("SYSCALL clone_newns {}", result(rc));
    // Threads start: glibc falls back from clone3 (ENOSYS) to clone.
    let t = std::thread::spawn(|| 7).join().unwrap();
    println!("SYSCALL thread {}", if t == 7 { "ok" } else { "?" });
}

fn errno(e: i32) -> String {
    e.to_string()
}

fn assert_results(got: &BTreeMap<String, String>, want: &[(&str, String)]) {
    for (name, w) in want {
        assert_eq!(got.get(*name), Some(w), "{name}: {got:?}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn default_filter_refuses_dockers_calls_and_isolates_own() {
    if !can_run("default_filter_refuses_dockers_calls_and_isolates_own") {
        return;
    }
    let got = probe(Seccomp::Default);
    let eperm = errno(libc::EPERM);
    let mut want: Vec<(&str, String)> = [
        "mount",
        "unshare_files",
        "unshare_user",
        "setns",
        "io_uring_setup",
        "io_uring_enter",
        "kcmp",
        "process_vm_readv",
        "personality_rie",
        "x32_getpid",
        "socket_vsock",
        "socket_vsock_high_bits",
        "socket_alg",
        "tiocsti",
        "tioclinux",
        "clone_newns",
    ]
    .iter()
    .map(|n| (*n, eperm.clone()))
    .collect();
    want.push(("clone3", errno(libc::ENOSYS)));
    for ok in [
        "getpid",
        "personality_query",
        "socket_unix",
        "setsid",
        "tiocsctty",
        "tiocgwinsz",
        "thread",
    ] {
        want.push((ok, "ok".into()));
    }
    assert_results(&got, &want);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn unconfined_lifts_the_filter() {
    if !can_run("unconfined_lifts_the_filter") {
        return;
    }
    let got = probe(Seccomp::Unconfined);
    let eperm = errno(libc::EPERM);
    // Calls only the filter refused now reach the kernel.
    for name in [
        "unshare_files",
        "io_uring_setup",
        "io_uring_enter",
        "kcmp",
        "x32_getpid",
        "socket_vsock",
        "socket_alg",
        "tiocsti",
        "tioclinux",
        "clone3",
    ] {
        let r = got.get(name).unwrap_or_else(|| panic!("{name}: {got:?}"));
        assert_ne!(r, &eperm, "{name}: {got:?}");
        assert!(name != "clone3" || r != &errno(libc::ENOSYS), "{got:?}");
    }
    // Where the host still allows TIOCSTI at all (Debian 12's kernel
    // always does), it works on the caller's own terminal.
    let legacy = std::fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti");
    if legacy.map_or(true, |v| v.trim() == "1") {
        assert_eq!(got.get("tiocsti").map(String::as_str), Some("ok"));
    }
    // What the capabilities refuse stays refused.
    assert_eq!(got.get("mount"), Some(&eperm));
}

#[test]
fn cap_add_sys_admin_opens_what_docker_opens() {
    if !can_run("cap_add_sys_admin_opens_what_docker_opens") {
        return;
    }
    let script = "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && echo mounted; \
         unshare -m true && echo unshared";
    let mut w = sh(script);
    w.capabilities.add.push("SYS_ADMIN".into());
    let (o, out, err) = run(&w);
    assert!(o.success(), "{out}\n{err}");
    assert_eq!(out, "mounted\nunshared\n", "{err}");
    // Without the capability, the filter refuses both.
    let (_, out, err) = run(&sh(script));
    assert_eq!(out, "", "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
}

fn profile(json: &str) -> Seccomp {
    Seccomp::Profile(Box::new(SeccompProfile::from_json(json).unwrap()))
}

#[test]
fn a_json_profile_replaces_the_default() {
    if !can_run("a_json_profile_replaces_the_default") {
        return;
    }
    // Allow all but mkdir (EOPNOTSUPP) and chmod with mode 0777 (EACCES).
    let mut w = sh(
        "mkdir /tmp/d; echo mkdir=$?; touch /tmp/f; chmod 0777 /tmp/f; echo chmod=$?; \
         chmod 0600 /tmp/f; echo chmod600=$?; unshare -m true; echo unshare=$?",
    );
    w.seccomp(profile(
        r#"{
          "defaultAction": "SCMP_ACT_ALLOW",
          "syscalls": [
            {"names": ["mkdir", "mkdirat", "not_a_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95},
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]},
            {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
             "args": [{"index": 2, "value": 511, "op": "SCMP_CMP_EQ"}]}
          ]
        }"#,
    ));
    let (o, out, err) = run(&w);
    assert!(o.success(), "{out}\n{err}");
    assert!(out.contains("mkdir=1"), "{out}\n{err}");
    assert!(err.to_lowercase().contains("not supported"), "{err}");
    assert!(
        out.contains("chmod=1") && out.contains("chmod600=0"),
        "{out}\n{err}"
    );
    // The profile allows unshare; CAP_SYS_ADMIN is still missing.
    assert!(out.contains("unshare=1"), "{out}\n{err}");
}

#[test]
fn ordinary_programs_run_under_the_default() {
    if !can_run("ordinary_programs_run_under_the_default") {
        return;
    }
    let (o, out, err) = run(&sh("ls / >/dev/null && cat /etc/marker && sleep 0.05 && \
         echo b a | tr ' ' '\\n' | sort | tr '\\n' ' ' && ps >/dev/null && \
         find /etc -name marker && date +%Y >/dev/null && id -u && \
         (sleep 5 & kill $! ; wait) ; hostname && ping -c 1 -W 2 127.0.0.1 >/dev/null && echo ping-ok"));
    assert!(o.success(), "{o:?}\n{out}\n{err}");
    assert_eq!(
        out, "original\na b /etc/marker\n0\nisolate\nping-ok\n",
        "{err}"
    );
}
