//! `isolate -d` and what comes after it: `logs`, `stop`, `wait`,
//! `inspect`, `rm` (records and logs in [`isolate::detached`]).
//!
//! `-d` starts isolate again as the workload's supervisor, in a session of
//! its own with no terminal, and returns once the supervisor says the
//! workload started (or prints why it did not). The supervisor runs the
//! workload through the same `Isolator::spawn` as a foreground run, logs
//! its output, forwards signals to it, records its end and releases what
//! it held. A supervisor killed by SIGKILL takes its workload with it (the
//! container's init dies with it, the VM's monitor sees its config pipe
//! close); the next run's stale sweep removes what they held, and the
//! record shows `dead`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio as ProcStdio;
use std::sync::Arc;
use std::time::Duration;

use isolate::detached::{self, LogReader, LogWriter, Record, Status, Stream, SupervisorLock};
use isolate::{named, Error, Mode, Result, Stdio, Workload};

/// The environment variable that makes an isolate the supervisor of the
/// detached workload it names.
pub const SUPERVISE_ENV: &str = "ISOLATE_SUPERVISE";

/// The descriptor on which the supervisor inherits its name's lock.
const LOCK_FD: i32 = 3;

/// A fresh name for an unnamed detached workload.
fn auto_name() -> String {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b = (t.subsec_nanos() ^ std::process::id()).to_ne_bytes();
    }
    format!("isolate-{:08x}", u32::from_ne_bytes(b))
}

/// `isolate -d`: claims the name, starts the supervisor, prints the name.
pub fn start(w: &Workload) -> Result<i32> {
    let name = w.name.clone().unwrap_or_else(auto_name);
    let (dir, lock) = detached::claim(&name)?;
    let lock_fd = lock.as_raw_fd();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.args(std::env::args_os().skip(1))
        .env(SUPERVISE_ENV, &name)
        .stdin(ProcStdio::null())
        .stdout(ProcStdio::piped())
        .stderr(ProcStdio::piped());
    // SAFETY: the closure only calls setsid(2) and dup2(2), which are
    // async-signal-safe; `lock_fd` stays open in this process meanwhile.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // The lock goes down to the supervisor on a known number,
            // without close-on-exec (dup2 onto itself would keep it).
            let rc = if lock_fd == LOCK_FD {
                libc::fcntl(LOCK_FD, libc::F_SETFD, 0)
            } else {
                libc::dup2(lock_fd, LOCK_FD)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::io("cannot start the supervisor of", name, e));
        }
    };
    let mut said = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut said);
    }
    drop(lock); // the supervisor holds it now, or has ended
    if said == "ok\n" {
        println!("{name}");
        return Ok(0);
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(125);
    if !dir.join("record.json").exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprint!("{err}");
    Ok(if code == 0 { 125 } else { code })
}

/// `dup` with close-on-exec.
fn dup_cloexec(fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes integers; the result is checked.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `n` is a new descriptor this process owns alone.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// The supervisor's fds 1 and 2 become `/dev/null` (a workload that
/// inherits a descriptor must not keep the starting isolate waiting); the
/// pipes to it stay on the returned descriptors.
fn detach_stdio() -> std::io::Result<(std::fs::File, std::fs::File)> {
    let report = dup_cloexec(1)?;
    let errors = dup_cloexec(2)?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [1, 2] {
        // SAFETY: dup2 takes descriptor numbers; `null` is open.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((report.into(), errors.into()))
}

/// The supervisor: runs `w` as the detached workload `name`.
pub fn supervise(name: String, mode: Mode, mut w: Workload) -> Result<i32> {
    // First, before any descriptor is opened: descriptor 3 is the lock.
    // SAFETY: descriptor 3 is the lock `start` handed down (pre_exec
    // above); nothing else in this process uses it.
    let lock = unsafe { SupervisorLock::adopt(LOCK_FD) };
    let (mut report, mut errors) = detach_stdio()
        .map_err(|e| Error::io("cannot detach the standard streams of", "isolate", e))?;
    let lock = match lock {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(errors, "isolate: cannot take over the lock of {name}: {e}");
            return Ok(125);
        }
    };
    let fail = |errors: &mut std::fs::File, e: Error| {
        let _ = writeln!(errors, "isolate: {}", e.chain());
        if let Ok(d) = detached::dir(&name) {
            let _ = std::fs::remove_dir_all(d);
        }
        Ok(e.exit_code())
    };
    w.name = Some(name.clone());
    w.stdin = Stdio::Null;
    w.stdout = Stdio::Piped;
    w.stderr = Stdio::Piped;
    let log = match LogWriter::open(&name) {
        Ok(l) => Arc::new(l),
        Err(e) => return fail(&mut errors, e),
    };
    let spawned = isolate::isolator(mode).and_then(|b| {
        b.check_host()?;
        b.spawn(&w)
    });
    let running: Arc<dyn isolate::Running> = match spawned {
        Ok(r) => Arc::from(r),
        Err(e) => return fail(&mut errors, e),
    };
    let mut record = Record::new(&name, mode, &w.argv, &w.limits);
    record.pid = detached::workload_pid(&name);
    if let Err(e) = detached::write(&record) {
        let _ = running.kill();
        let _ = running.wait();
        return fail(&mut errors, e);
    }
    let mut copies = Vec::new();
    for (out, stream) in [
        (running.take_stdout(), Stream::Out),
        (running.take_stderr(), Stream::Err),
    ] {
        let Some(mut out) = out else { continue };
        let log = log.clone();
        copies.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 << 10];
            loop {
                match out.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => log.append(stream, &buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        }));
    }
    if let Ok(mut signals) = signal_hook::iterator::Signals::new(super::FORWARDED) {
        let target = Arc::downgrade(&running);
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if let Some(t) = target.upgrade() {
                    let _ = t.signal(sig);
                }
            }
        });
    }
    let _ = report.write_all(b"ok\n");
    drop(report);
    drop(errors);
    let outcome = running.wait();
    for c in copies {
        let _ = c.join();
    }
    // Releases the cgroup, mounts and volumes before the end is recorded.
    drop(running);
    record.finished = Some(detached::now_secs());
    record.status = Status::Exited;
    let code = match outcome {
        Ok(o) => {
            record.note = match o.status {
                isolate::Status::TimedOut => Some("killed at its timeout".into()),
                isolate::Status::OomKilled => Some("killed at its memory limit (OOM)".into()),
                _ => None,
            };
            o.exit_code()
        }
        Err(e) => {
            record.note = Some(e.chain());
            e.exit_code()
        }
    };
    record.exit_code = Some(code);
    let _ = detached::write(&record);
    drop(lock);
    Ok(code)
}

fn print_entry(e: &detached::Entry, timestamps: bool) {
    let mut buf = Vec::with_capacity(e.data.len() + 32);
    if timestamps {
        buf.extend(detached::rfc3339(e.time.0, e.time.1).bytes());
        buf.push(b' ');
    }
    buf.extend_from_slice(&e.data);
    let _ = match e.stream {
        Stream::Out => {
            let mut o = std::io::stdout().lock();
            o.write_all(&buf).and_then(|_| o.flush())
        }
        Stream::Err => std::io::stderr().lock().write_all(&buf),
    };
}

/// `isolate logs NAME [-f] [--tail N] [--timestamps]`.
pub fn logs(name: &str, follow: bool, tail: Option<usize>, timestamps: bool) -> Result<i32> {
    detached::read(name)?;
    let (entries, mut reader) = LogReader::open(name)?;
    let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
    for e in &entries[skip..] {
        print_entry(e, timestamps);
    }
    if follow {
        loop {
            let running = detached::read(name).is_ok_and(|r| r.status == Status::Running);
            for e in reader.more() {
                print_entry(&e, timestamps);
            }
            if !running {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(0)
}

/// Whether `name` runs: a detached record, else a named foreground run.
fn is_running(name: &str) -> Result<bool> {
    match detached::read(name) {
        Ok(r) => Ok(r.status == Status::Running),
        Err(Error::NoSuchWorkload(_)) => Ok(isolate::state::get_live(name).is_ok()),
        Err(e) => Err(e),
    }
}

/// Waits until `name` has ended, at most `timeout`: `false` if it runs on.
fn await_end(name: &str, timeout: Option<Duration>) -> Result<bool> {
    if detached::dir(name)?.join("record.json").exists() {
        return detached::wait_end(name, timeout);
    }
    // A named foreground run: its record goes when it ends.
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    while isolate::state::get_live(name).is_ok() {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

/// `isolate stop NAME [-t SECS]`.
pub fn stop(name: &str, grace: u64) -> Result<i32> {
    if !is_running(name)? {
        detached::read(name)?; // unknown names are an error, ended ones are not
        println!("{name}");
        return Ok(0);
    }
    match named::kill(name, libc::SIGTERM) {
        Ok(()) | Err(Error::NoSuchWorkload(_)) => {}
        Err(e) => return Err(e),
    }
    if !await_end(name, Some(Duration::from_secs(grace)))? {
        match named::kill(name, libc::SIGKILL) {
            Ok(()) | Err(Error::NoSuchWorkload(_)) => {}
            Err(e) => return Err(e),
        }
        await_end(name, None)?;
    }
    println!("{name}");
    Ok(0)
}

/// `isolate wait NAME`.
pub fn wait(name: &str) -> Result<i32> {
    detached::read(name)?;
    detached::wait_end(name, None)?;
    let r = detached::read(name)?;
    match (r.status, r.exit_code) {
        (Status::Exited, Some(code)) => {
            println!("{code}");
            Ok(code)
        }
        _ => Err(Error::Unsupported(format!(
            "the supervisor of {name} was killed before it recorded the workload's end, \
             so its exit code is unknown; remove it with isolate rm {name}"
        ))),
    }
}

/// `isolate inspect NAME`.
pub fn inspect(name: &str) -> Result<i32> {
    let r = detached::read(name)?;
    let mut v = serde_json::to_value(&r).expect("records serialize");
    v["started_at"] = detached::rfc3339(r.started, 0).into();
    if let Some(f) = r.finished {
        v["finished_at"] = detached::rfc3339(f, 0).into();
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&v).expect("records serialize")
    );
    Ok(0)
}

/// `isolate rm NAME [-f]`.
pub fn rm(name: &str, force: bool) -> Result<i32> {
    let r = detached::read(name)?;
    if r.status == Status::Running {
        if !force {
            return Err(Error::invalid(
                "rm",
                format!("{name} is still running; stop it first (isolate stop {name}) or use isolate rm -f {name}"),
            ));
        }
        match named::kill(name, libc::SIGKILL) {
            Ok(()) | Err(Error::NoSuchWorkload(_)) => {}
            Err(e) => return Err(e),
        }
        detached::wait_end(name, None)?;
    }
    let dir = detached::dir(name)?;
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io("cannot remove", &dir, e))?;
    println!("{name}");
    Ok(0)
}
