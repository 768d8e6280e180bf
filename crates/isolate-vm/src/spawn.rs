//! Starts `isolate-vmm` in namespaces of its own: one fork-like `clone3`
//! with new pid, mount, network, IPC and UTS namespaces, then `execve` of
//! the VMM with an empty environment and only its five descriptors (the
//! workload's stdio as 0–2, the config pipe as 3, the report pipe as 4).
//!
//! The VMM is PID 1 of its pid namespace; the caller sees (and signals,
//! records, puts in a cgroup) its pid in the caller's namespace, which
//! `clone3` returns. The VMM starts with the signals it forwards blocked,
//! so one sent before it waits for them is kept, not lost (a namespace's
//! PID 1 ignores signals it has no handler for).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use isolate_core::sys::{self, pipe, CloneArgs};
use isolate_core::Stdio;

/// Descriptor numbers the VMM finds its pipes at.
pub const CONFIG_FD: RawFd = 3;
/// See [`CONFIG_FD`].
pub const REPORT_FD: RawFd = 4;

/// Why the VMM could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A pipe or descriptor for the VMM.
    #[error("cannot prepare the VMM's {what}")]
    Fds {
        /// Which.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `clone3` failed.
    #[error("cannot create the VMM's namespaces (clone3 with new pid, mount, network, IPC and UTS namespaces); VM mode jails its monitor and needs root (CAP_SYS_ADMIN) for it")]
    Clone(#[source] std::io::Error),
    /// `execve` of the VMM failed.
    #[error("cannot execute {}", .0.display())]
    Exec(std::path::PathBuf, #[source] std::io::Error),
}

/// A started VMM.
pub struct Spawned {
    /// The process.
    pub process: VmmProcess,
    /// Write end of the config pipe (the VMM's lifeline: keep it open).
    pub config: File,
    /// Read end of the report pipe.
    pub reports: File,
    /// The caller's ends of piped stdio.
    pub stdin: Option<File>,
    /// See `stdin`.
    pub stdout: Option<File>,
    /// See `stdin`.
    pub stderr: Option<File>,
}

/// The VMM process, a child of the caller.
pub struct VmmProcess {
    pid: u32,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
}

impl VmmProcess {
    /// Its pid in the caller's pid namespace.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Its exit status if it has ended (reaping it), else `None`.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.wait_with(libc::WNOHANG)
    }

    /// Waits for it to end.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.wait_with(0)? {
                return Ok(s);
            }
        }
    }

    fn wait_with(&mut self, flags: libc::c_int) -> std::io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, flags) };
        match rc {
            0 => Ok(None),
            r if r > 0 => {
                let s = ExitStatus::from_raw(status);
                self.status = Some(s);
                Ok(Some(s))
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Sends `signo` to it (through its pidfd: never to a reused pid).
    pub fn signal(&self, signo: i32) -> std::io::Result<()> {
        sys::pidfd_send_signal(self.pidfd.as_fd(), signo)
    }

    /// SIGKILL, then reaps it.
    pub fn kill_and_wait(&mut self) {
        let _ = self.signal(libc::SIGKILL);
        let _ = self.wait();
    }
}

fn fds_err(what: &'static str) -> impl FnOnce(std::io::Error) -> SpawnError {
    move |source| SpawnError::Fds { what, source }
}

/// A close-on-exec copy of `fd` numbered 10 or more: the child then moves
/// every source to 0–4 with `dup2` without one overwriting another.
fn high_copy(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor number; the new one is ours.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The child's descriptor for stdio slot `slot` (0, 1, 2), and the
/// caller's end if piped.
fn stdio_fd(slot: RawFd, s: Stdio) -> std::io::Result<(Option<OwnedFd>, Option<File>)> {
    let null = || -> std::io::Result<OwnedFd> {
        let f = std::fs::OpenOptions::new()
            .read(slot == 0)
            .write(slot != 0)
            .open("/dev/null")?;
        high_copy(f.as_raw_fd())
    };
    match s {
        // A descriptor the caller has closed becomes /dev/null: the VMM
        // must not find its next file at 0, 1 or 2.
        Stdio::Inherit => Ok((Some(high_copy(slot).or_else(|_| null())?), None)),
        Stdio::Null => Ok((Some(null()?), None)),
        Stdio::Piped => {
            let (r, w) = pipe()?;
            let (child, ours) = if slot == 0 { (r, w) } else { (w, r) };
            Ok((Some(high_copy(child.as_raw_fd())?), Some(File::from(ours))))
        }
    }
}

/// What the child needs, prepared before `clone3` (it may not allocate).
struct ChildPlan {
    /// Source descriptor for each of 0..=4 (-1: leave closed).
    sources: [RawFd; 5],
    path: CString,
    argv: [*const libc::c_char; 7],
    envp: [*const libc::c_char; 1],
    mask: libc::sigset_t,
    error_w: RawFd,
}

/// Starts `vmm` in new namespaces with the workload's stdio `stdio`
/// (stdin, stdout, stderr) and blocked `signals`.
pub fn spawn(vmm: &Path, stdio: [Stdio; 3], signals: &[i32]) -> Result<Spawned, SpawnError> {
    let mut ours: [Option<File>; 3] = [None, None, None];
    let mut keep: Vec<OwnedFd> = Vec::new();
    let mut sources = [-1; 5];
    for (slot, s) in stdio.into_iter().enumerate() {
        let (child, mine) = stdio_fd(slot as RawFd, s).map_err(fds_err("stdio"))?;
        if let Some(c) = child {
            sources[slot] = c.as_raw_fd();
            keep.push(c);
        }
        ours[slot] = mine;
    }
    let (config_r, config_w) = pipe().map_err(fds_err("config pipe"))?;
    let (report_r, report_w) = pipe().map_err(fds_err("report pipe"))?;
    let (config_r, report_w) = (
        high_copy(config_r.as_raw_fd()).map_err(fds_err("config pipe"))?,
        high_copy(report_w.as_raw_fd()).map_err(fds_err("report pipe"))?,
    );
    sources[CONFIG_FD as usize] = config_r.as_raw_fd();
    sources[REPORT_FD as usize] = report_w.as_raw_fd();
    let (error_r, error_w) = pipe().map_err(fds_err("start-error pipe"))?;

    let path = CString::new(vmm.as_os_str().as_bytes()).map_err(|_| {
        SpawnError::Exec(
            vmm.to_path_buf(),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    let args: Vec<CString> = ["run", "--config-fd", "3", "--report-fd", "4"]
        .iter()
        .map(|a| CString::new(OsStr::new(a).as_bytes()).expect("no NUL"))
        .collect();
    let mut argv = [std::ptr::null(); 7];
    argv[0] = path.as_ptr();
    for (i, a) in args.iter().enumerate() {
        argv[i + 1] = a.as_ptr();
    }
    // SAFETY: `mask` is a local sigset_t initialised by sigemptyset.
    let mask = unsafe {
        let mut m: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut m);
        for &s in signals {
            libc::sigaddset(&mut m, s);
        }
        m
    };
    let plan = ChildPlan {
        sources,
        path,
        argv,
        envp: [std::ptr::null()],
        mask,
        error_w: error_w.as_raw_fd(),
    };
    let (pid, pidfd) = clone_child(&plan)?;
    drop(error_w);
    drop(keep);
    drop(config_r);
    drop(report_w);
    let mut process = VmmProcess {
        pid,
        pidfd,
        status: None,
    };
    // The error pipe closes on a successful exec; else it carries errno.
    let mut errno = [0u8; 4];
    let mut error_r = File::from(error_r);
    if let Ok(4) = read_full(&mut error_r, &mut errno) {
        let _ = process.wait();
        return Err(SpawnError::Exec(
            vmm.to_path_buf(),
            std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
        ));
    }
    let [stdin, stdout, stderr] = ours;
    Ok(Spawned {
        process,
        config: File::from(config_w),
        reports: File::from(report_r),
        stdin,
        stdout,
        stderr,
    })
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn clone_child(plan: &ChildPlan) -> Result<(u32, OwnedFd), SpawnError> {
    let mut pidfd: RawFd = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWNET
            | libc::CLONE_PIDFD) as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // No handler of this process may run in the child: block every
    // signal around the clone (the child sets its own mask before exec).
    // SAFETY: `all` and `old` are local sigset_t values; pthread_sigmask
    // reads one and writes the other.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    // SAFETY: the child only calls `child`, which makes raw system calls
    // on data prepared above and never returns; `args.pidfd` points at
    // `pidfd`, which outlives the call.
    let cloned = unsafe { sys::clone3(&args) };
    if let Ok(0) = cloned {
        child(plan);
    }
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    let pid = cloned.map_err(SpawnError::Clone)?;
    // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// The child between `clone3` and `execve`: only async-signal-safe system
/// calls, no allocation, no locks.
fn child(plan: &ChildPlan) -> ! {
    // SAFETY: raw system calls on descriptor numbers and on the plan's
    // pointers, which point into the parent's memory, copied into this
    // child and unchanged since; the child ends in execve or _exit.
    unsafe {
        for (dst, &src) in plan.sources.iter().enumerate() {
            let dst = dst as RawFd;
            if src < 0 {
                libc::close(dst);
            } else if libc::dup2(src, dst) < 0 {
                fail(plan.error_w);
            }
        }
        // Everything else closes: the VMM holds only what it is given
        // (the error pipe is close-on-exec and stays open until exec).
        libc::syscall(
            libc::SYS_close_range,
            (REPORT_FD + 1) as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        libc::sigprocmask(libc::SIG_SETMASK, &plan.mask, std::ptr::null_mut());
        libc::execve(plan.path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        fail(plan.error_w)
    }
}

/// Reports errno on the error pipe and ends the child.
///
/// # Safety
///
/// Only in the child of [`clone_child`].
unsafe fn fail(error_w: RawFd) -> ! {
    let errno = *libc::__errno_location();
    let bytes = errno.to_ne_bytes();
    libc::write(error_w, bytes.as_ptr().cast(), bytes.len());
    libc::_exit(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        !sys::rootless()
    }

    #[test]
    fn a_missing_vmm_is_named() {
        if !is_root() {
            return;
        }
        let e = match spawn(Path::new("/nonexistent/isolate-vmm"), [Stdio::Null; 3], &[]) {
            Err(e) => e,
            Ok(_) => panic!("a missing VMM started"),
        };
        assert!(matches!(&e, SpawnError::Exec(p, _) if p == Path::new("/nonexistent/isolate-vmm")));
    }

    #[test]
    fn without_privilege_the_namespaces_are_a_clear_error() {
        if !is_root() {
            return;
        }
        // SAFETY: fork in a test; the child drops to nobody, tries the
        // spawn and leaves with _exit (glibc's fork makes malloc usable).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: set*id calls with integers, then _exit.
            unsafe {
                libc::setgroups(0, std::ptr::null());
                libc::setresgid(65534, 65534, 65534);
                libc::setresuid(65534, 65534, 65534);
                let ok = matches!(
                    spawn(Path::new("/bin/true"), [Stdio::Null; 3], &[]),
                    Err(SpawnError::Clone(ref e)) if e.raw_os_error() == Some(libc::EPERM)
                );
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status:#x}"
        );
    }
}
