//! Starting the workload and supervising it: exec-failure detection,
//! stdin bridge, stdout/stderr relay, signal forwarding, reaping, outcome.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use isolate_core::protocol::{ControlMessage, GuestSpec};
use isolate_core::{exec, ExecFailure, Status};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use crate::cgroup::Cgroup;
use crate::console::{LineBuffer, Ports};
use crate::relay::{self, Output};
use crate::spec;

/// How long the relay waits for more output once the workload is gone and
/// everything else was killed (only a writer that escaped the kill keeps
/// a pipe open).
const DRAIN_QUIET: std::time::Duration = std::time::Duration::from_secs(2);

/// Errors of starting the workload (other than the program's own exec
/// failure, which is reported as `ExecFailure`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument or environment string holds a NUL byte.
    #[error("argv, env or cwd holds a NUL byte")]
    Nul,
    /// A system call of the init failed.
    #[error("{0} failed")]
    Sys(&'static str, #[source] Errno),
    /// The child failed before exec.
    #[error("preparing the workload failed at {stage}")]
    Child {
        /// The step that failed.
        stage: &'static str,
        /// The errno.
        #[source]
        source: Errno,
    },
}

/// Steps of the child between fork and exec, reported on failure.
const STAGES: [&str; 10] = [
    "signal reset",
    "setsid",
    "joining the workload cgroup",
    "stdio set-up",
    "setting uid/gid",
    "chdir to the working directory",
    "exec",
    "masking paths in the workload's mount namespace",
    "dropping capabilities from the bounding set",
    "setting capabilities, no_new_privs and the seccomp filter",
];
const STAGE_EXEC: u32 = 6;

/// Where the workload's stdin comes from.
enum StdinSource {
    /// /dev/null.
    Null,
    /// A pipe the init feeds from hvc0.
    Pipe,
    /// The console itself (console fallback with stdin on).
    Console,
}

/// Everything the child needs, prepared before `fork` so the child only
/// makes system calls.
struct Plan {
    path: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    uid: u32,
    gid: u32,
    procs: CString,
    privileges: Option<isolate_core::protocol::GuestPrivileges>,
}

fn cstring(s: impl Into<Vec<u8>>) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Nul)
}

/// Maps a wait status to the protocol's [`Status`]: a SIGKILL while the
/// cgroup recorded an OOM kill is [`Status::OomKilled`].
pub fn status_of(ws: WaitStatus, oom_kills: u64) -> Status {
    match ws {
        WaitStatus::Exited(_, code) => Status::Exited(code),
        WaitStatus::Signaled(_, Signal::SIGKILL, _) if oom_kills > 0 => Status::OomKilled,
        WaitStatus::Signaled(_, sig, _) => Status::Signaled(sig as i32),
        // Not reported by waitpid without WUNTRACED/WCONTINUED.
        _ => Status::Signaled(0),
    }
}

/// Maps an `execve` errno to the protocol's [`ExecFailure`], if it is one.
pub fn exec_failure(errno: Errno) -> Option<ExecFailure> {
    match errno {
        Errno::ENOENT | Errno::ENOTDIR => Some(ExecFailure::NotFound),
        Errno::EACCES | Errno::ENOEXEC | Errno::EISDIR | Errno::EPERM => {
            Some(ExecFailure::NotExecutable)
        }
        _ => None,
    }
}

fn uptime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs the workload of `spec` in `cgroup`: sends `Started` (or an exec
/// `Error`) on the control channel and returns how it ended (`None` if it
/// never started).
pub fn run(spec: &GuestSpec, cgroup: &Cgroup, ports: &mut Ports) -> Result<Option<Status>, Error> {
    let program = &spec.argv[0];
    let search_path = exec::search_path(&spec.env);
    let path = match spec::resolve(program, search_path, Path::new(&spec.cwd), spec::probe) {
        Ok(p) => p,
        Err(kind) => {
            ports.control.send(&ControlMessage::Error {
                exec: Some(kind),
                message: format!("{program}: not found in PATH {search_path}"),
            });
            return Ok(None);
        }
    };
    let plan = Plan {
        path: cstring(path.as_os_str().as_bytes())?,
        argv: spec
            .argv
            .iter()
            .map(|a| cstring(a.as_str()))
            .collect::<Result<_, _>>()?,
        env: spec
            .env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        cwd: cstring(spec.cwd.as_str())?,
        uid: spec.uid,
        gid: spec.gid,
        procs: cstring(cgroup.procs_file().as_os_str().as_bytes())?,
        privileges: spec.privileges.clone(),
    };

    // A missing working directory is made, as in container mode (and as
    // docker does); a read-only root leaves chdir to report it.
    if spec.cwd != "/" && !spec.read_only {
        let _ = std::fs::create_dir_all(&spec.cwd);
    }
    let source = match (spec.stdin, ports.stdin_source.is_some()) {
        (false, _) => StdinSource::Null,
        (true, true) => StdinSource::Pipe,
        (true, false) => StdinSource::Console,
    };
    let stdin_file: OwnedFd = match source {
        StdinSource::Null => open_ro("/dev/null")?,
        StdinSource::Console => open_ro(crate::console::CONSOLE)?,
        StdinSource::Pipe => {
            let (r, w) =
                nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::Sys("pipe2", e))?;
            fcntl(w.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .map_err(|e| Error::Sys("fcntl", e))?;
            ports.stdin_pipe = Some(w);
            r
        }
    };

    let (stdout_relay, stdout_w) = Output::pipe().map_err(|e| Error::Sys("pipe2", e))?;
    let (stderr_relay, stderr_w) = Output::pipe().map_err(|e| Error::Sys("pipe2", e))?;
    let mut outputs = [stdout_relay, stderr_relay];

    // SIGCHLD arrives through a signalfd; the child unblocks it again.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    chld.thread_block()
        .map_err(|e| Error::Sys("sigprocmask", e))?;
    let sigfd = SignalFd::with_flags(&chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Error::Sys("signalfd", e))?;

    let (report_r, report_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::Sys("pipe2", e))?;
    // SAFETY: the init is single-threaded, so the child may run any code;
    // it only makes system calls and then execs or `_exit`s.
    let child = match unsafe { nix::unistd::fork() }.map_err(|e| Error::Sys("fork", e))? {
        ForkResult::Child => child(
            &plan,
            [
                stdin_file.as_raw_fd(),
                stdout_w.as_raw_fd(),
                stderr_w.as_raw_fd(),
            ],
            report_w.as_raw_fd(),
        ),
        ForkResult::Parent { child } => child,
    };
    drop(report_w);
    drop(stdin_file);
    drop(stdout_w);
    drop(stderr_w);

    let mut report = [0u8; 8];
    let mut got = 0;
    let mut report_file = File::from(report_r);
    while got < report.len() {
        match report_file.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got == report.len() {
        let stage = u32::from_le_bytes(report[..4].try_into().unwrap_or_default());
        let errno = Errno::from_raw(i32::from_le_bytes(
            report[4..].try_into().unwrap_or_default(),
        ));
        let _ = waitpid(child, None);
        ports.stdin_pipe = None;
        if stage == STAGE_EXEC {
            if let Some(kind) = exec_failure(errno) {
                ports.control.send(&ControlMessage::Error {
                    exec: Some(kind),
                    message: format!("{}: {}", path.display(), errno.desc()),
                });
                return Ok(None);
            }
        }
        return Err(Error::Child {
            stage: STAGES.get(stage as usize).copied().unwrap_or("?"),
            source: errno,
        });
    }
    ports.control.send(&ControlMessage::Started {
        uptime_ns: uptime_ns(),
    });

    let ws = supervise(child, ports, &sigfd, &mut outputs);
    // What the workload's leftovers still write is lost with them, as in
    // container mode; what is already in the pipes goes out before the exit
    // report.
    kill_all();
    let mut buf = vec![0u8; relay::CHUNK];
    let [stdout_relay, stderr_relay] = &mut outputs;
    stdout_relay.drain(&mut ports.stdout, &mut buf, DRAIN_QUIET);
    stderr_relay.drain(&mut ports.stderr, &mut buf, DRAIN_QUIET);
    Ok(Some(status_of(ws, cgroup.oom_kills())))
}

fn open_ro(path: &str) -> Result<OwnedFd, Error> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .map(|fd| {
        // SAFETY: `open` just returned `fd`, which nothing else owns.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    })
    .map_err(|e| Error::Sys("open /dev/null or /dev/console", e))
}

/// The child between fork and exec. Never returns: execs, or reports
/// `(stage, errno)` on `report` and exits.
fn child(plan: &Plan, stdio: [RawFd; 3], report: RawFd) -> ! {
    let fail = |stage: u32, errno: Errno| -> ! {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&stage.to_le_bytes());
        msg[4..].copy_from_slice(&(errno as i32).to_le_bytes());
        // SAFETY: `msg` is an 8-byte buffer alive for the call; `report` is
        // the write end of the report pipe, open in this process.
        unsafe { libc::write(report, msg.as_ptr().cast(), msg.len()) };
        // SAFETY: `_exit` ends the process without running the parent's
        // atexit handlers or destructors, which the child must not run.
        unsafe { libc::_exit(127) }
    };

    // Signal state is inherited across exec: unblock all, and restore the
    // default for SIGPIPE (the Rust runtime ignores it).
    if let Err(e) = SigSet::empty().thread_set_mask() {
        fail(0, e);
    }
    // SAFETY: setting SIGPIPE to its default disposition installs no
    // handler code; the call has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };

    if let Err(e) = nix::unistd::setsid() {
        fail(1, e);
    }
    // Join the workload's cgroup ("0" is the writing process).
    {
        // SAFETY: `plan.procs` is a NUL-terminated path alive for the call.
        let fd = unsafe { libc::open(plan.procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            fail(2, Errno::last());
        }
        // SAFETY: writes 1 byte from a static buffer to the fd opened above.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            fail(2, Errno::last());
        }
        // SAFETY: `fd` was opened above and is not used afterwards.
        unsafe { libc::close(fd) };
    }
    // Move the stdio sources above 2 first, so no dup2 clobbers another.
    let mut high = [0; 3];
    for (i, fd) in stdio.iter().enumerate() {
        match fcntl(*fd, FcntlArg::F_DUPFD_CLOEXEC(10)) {
            Ok(h) => high[i] = h,
            Err(e) => fail(3, e),
        }
    }
    for (target, fd) in high.iter().enumerate() {
        if let Err(e) = nix::unistd::dup2(*fd, target as RawFd) {
            fail(3, e);
        }
    }
    if let Some(p) = &plan.privileges {
        if let Err(e) = crate::privileges::mask_paths() {
            fail(7, e);
        }
        if let Err(e) = crate::privileges::drop_bounding(p) {
            fail(8, e);
        }
    }
    let gid = nix::unistd::Gid::from_raw(plan.gid);
    if let Err(e) = nix::unistd::setgroups(&[gid])
        .and_then(|_| nix::unistd::setgid(gid))
        .and_then(|_| nix::unistd::setuid(nix::unistd::Uid::from_raw(plan.uid)))
    {
        fail(4, e);
    }
    if let Err(e) = nix::unistd::chdir(plan.cwd.as_c_str()) {
        fail(5, e);
    }
    if let Some(p) = &plan.privileges {
        if let Err(e) = crate::privileges::apply(p, plan.uid) {
            fail(9, e);
        }
    }
    let Err(e) = nix::unistd::execve(&plan.path, &plan.argv, &plan.env);
    fail(STAGE_EXEC, e)
}

/// Serves the workload until it ends: feeds stdin from hvc0, relays its
/// stdout and stderr to their ports, obeys control messages, reaps every
/// child. Returns the workload's status.
fn supervise(
    workload: Pid,
    ports: &mut Ports,
    sigfd: &SignalFd,
    outputs: &mut [Output; 2],
) -> WaitStatus {
    let mut pending: Vec<u8> = Vec::new();
    let mut source_open = ports.stdin_pipe.is_some();
    let mut eof = false;
    // Bytes read from hvc0 so far, to compare with stdin_eof's count.
    let mut received: u64 = 0;
    let mut control_open = ports.control.input().is_some();
    let mut lines = LineBuffer::default();
    let mut buf = vec![0u8; 64 * 1024];

    loop {
        // Close the pipe once stdin has ended and everything is delivered.
        if (eof || !source_open) && pending.is_empty() {
            ports.stdin_pipe = None;
        }
        let want_read = source_open && !eof && pending.is_empty() && ports.stdin_pipe.is_some();
        let want_write = !pending.is_empty() && ports.stdin_pipe.is_some();

        let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
        let ctl_idx = match (control_open, ports.control.input()) {
            (true, Some(f)) => {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let src_idx = match (&ports.stdin_source, want_read) {
            (Some(f), true) => {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        if let (Some(p), true) = (&ports.stdin_pipe, want_write) {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLOUT));
        }
        let mut out_idx = [None; 2];
        for (slot, out) in out_idx.iter_mut().zip(outputs.iter()) {
            if let Some(fd) = out.fd() {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                *slot = Some(fds.len() - 1);
            }
        }
        // EINTR and other errors: fall through and re-check everything.
        let _ = poll(&mut fds, PollTimeout::NONE);
        let ready = |i: Option<usize>| {
            i.and_then(|i| fds[i].revents())
                .unwrap_or(PollFlags::empty())
        };
        let sig_ready = ready(Some(0));
        let ctl_ready = ready(ctl_idx);
        let src_ready = ready(src_idx);
        let out_ready = out_idx.map(ready);
        drop(fds);

        // Output first: the workload may be blocked on a full pipe.
        let [stdout_relay, stderr_relay] = outputs;
        if !out_ready[0].is_empty() {
            stdout_relay.pump(&mut ports.stdout, &mut buf);
        }
        if !out_ready[1].is_empty() {
            stderr_relay.pump(&mut ports.stderr, &mut buf);
        }

        // Error or hang-up with nothing to read: the port is gone for good
        // (stop polling it rather than spin).
        if hung_up(ctl_ready) {
            control_open = false;
        }
        if hung_up(src_ready) {
            source_open = false;
        }

        if ctl_ready.contains(PollFlags::POLLIN) && control_open {
            let got = match ports.control.input() {
                Some(f) => read_fd(f.as_fd(), &mut buf),
                None => Ok(0),
            };
            match got {
                Ok(n) if n > 0 => {
                    for msg in lines.push(&buf[..n]) {
                        match msg {
                            ControlMessage::StdinEof { bytes } => {
                                eof = true;
                                if source_open {
                                    drain_source(ports, &mut pending, &mut received, bytes);
                                }
                            }
                            ControlMessage::Signal { signo } => {
                                // SAFETY: kill(2) on the workload's pid; the
                                // kernel checks the signal number.
                                unsafe { libc::kill(workload.as_raw(), signo) };
                            }
                            ControlMessage::OutputClosed { fd: fd @ 1..=2 } => {
                                // The host's reader is gone: so is ours, and
                                // the workload's next write meets EPIPE.
                                outputs[usize::from(fd) - 1].close();
                            }
                            _ => {}
                        }
                    }
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                // Hang-up or error: the host will send nothing more.
                _ => control_open = false,
            }
        }

        if src_ready.contains(PollFlags::POLLIN) && source_open {
            if let Some(src) = &ports.stdin_source {
                match read_fd(src.as_fd(), &mut buf) {
                    Ok(n) if n > 0 => {
                        received += n as u64;
                        pending.extend_from_slice(&buf[..n]);
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    // Hang-up or error: no more input will come.
                    _ => source_open = false,
                }
            }
        }

        if !pending.is_empty() {
            if let Some(pipe) = &ports.stdin_pipe {
                match nix::unistd::write(pipe, &pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(Errno::EAGAIN | Errno::EINTR) => {}
                    Err(_) => {
                        // EPIPE: the workload closed its stdin.
                        pending.clear();
                        source_open = false;
                    }
                }
            }
        }

        if !sig_ready.is_empty() {
            while let Ok(Some(_)) = sigfd.read_signal() {}
        }
        // Reap everything; the workload's own end ends the loop.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(ws @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)))
                    if pid == workload =>
                {
                    ports.stdin_pipe = None;
                    return ws;
                }
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                // ECHILD: nothing left, and the workload was reaped before?
                // Cannot happen (only this loop reaps it); stop waiting.
                Err(_) => return WaitStatus::Exited(workload, 255),
            }
        }
    }
}

fn hung_up(revents: PollFlags) -> bool {
    !revents.contains(PollFlags::POLLIN)
        && revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
}

/// Reads what is still on its way on hvc0 when `stdin_eof` arrives: the
/// host sent the data before the message, but the two ports deliver
/// independently, so data may trail the message. With the host's count
/// (`total`), reads until `received` reaches it (giving up after 5 s with
/// no byte arriving); without one, until hvc0 stays quiet for 20 ms.
fn drain_source(ports: &Ports, pending: &mut Vec<u8>, received: &mut u64, total: Option<u64>) {
    let Some(src) = &ports.stdin_source else {
        return;
    };
    let wait_ms: u16 = if total.is_some() { 5000 } else { 20 };
    let mut buf = [0u8; 16 * 1024];
    loop {
        if total.is_some_and(|t| *received >= t) {
            return;
        }
        let mut fds = [PollFd::new(src.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(wait_ms)) {
            Ok(n) if n > 0 => match read_fd(src.as_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    *received += n as u64;
                    pending.extend_from_slice(&buf[..n]);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                _ => return,
            },
            Err(Errno::EINTR) => {}
            _ => return,
        }
    }
}

fn read_fd(fd: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    nix::unistd::read(fd.as_raw_fd(), buf)
}

/// Kills every process but the init and reaps them (at most ~1 s).
pub fn kill_all() {
    // SAFETY: kill(-1, SIGKILL) from PID 1 signals every other process; it
    // touches no memory of this process.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    for _ in 0..100 {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_millis(10)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid() -> Pid {
        Pid::from_raw(42)
    }

    #[test]
    fn exit_codes_and_signals_map_to_status() {
        assert_eq!(
            status_of(WaitStatus::Exited(pid(), 3), 0),
            Status::Exited(3)
        );
        assert_eq!(
            status_of(WaitStatus::Signaled(pid(), Signal::SIGTERM, false), 0),
            Status::Signaled(15)
        );
        assert_eq!(
            status_of(WaitStatus::Signaled(pid(), Signal::SIGKILL, false), 0),
            Status::Signaled(9)
        );
    }

    #[test]
    fn sigkill_with_an_oom_kill_is_oom_killed() {
        assert_eq!(
            status_of(WaitStatus::Signaled(pid(), Signal::SIGKILL, false), 1),
            Status::OomKilled
        );
        // An exit after an OOM kill of a child is the workload's own exit.
        assert_eq!(
            status_of(WaitStatus::Exited(pid(), 137), 1),
            Status::Exited(137)
        );
    }

    #[test]
    fn hang_up_without_data_closes_a_port() {
        assert!(hung_up(PollFlags::POLLHUP));
        assert!(hung_up(PollFlags::POLLERR));
        assert!(!hung_up(PollFlags::POLLHUP | PollFlags::POLLIN));
        assert!(!hung_up(PollFlags::empty()));
    }

    #[test]
    fn exec_errnos_map_to_failures() {
        assert_eq!(exec_failure(Errno::ENOENT), Some(ExecFailure::NotFound));
        assert_eq!(
            exec_failure(Errno::EACCES),
            Some(ExecFailure::NotExecutable)
        );
        assert_eq!(
            exec_failure(Errno::ENOEXEC),
            Some(ExecFailure::NotExecutable)
        );
        assert_eq!(exec_failure(Errno::ENOMEM), None);
    }
}
