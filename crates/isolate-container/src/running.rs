//! The handle of a running container ([`Container`]): waiting with a
//! timeout on the shim's pidfd, signals through the pidfd (immune to pid
//! reuse), stats and live limit updates through the cgroup, and the release
//! of everything the run held.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use isolate_cgroups::Cgroup;
use isolate_core::sys::lock;
use isolate_core::{state, Error, Limits, Outcome, Running, Stats, Status};

use crate::error::ContainerError;
use crate::relay::Relays;
use crate::rundir::RunDir;
use crate::sys;
use crate::volumes::Attached;

/// What a run holds on the host; [`Resources::release`] (or drop) gives it
/// all back: cgroup, per-run dir, named-volume locks, state record.
#[derive(Debug)]
pub struct Resources {
    pub(crate) run: Option<RunDir>,
    pub(crate) cgroup: Option<Cgroup>,
    pub(crate) volumes: Vec<Attached>,
    pub(crate) registration: Option<state::Registration>,
    /// The workload's place on isolate's bridge (`--network bridge`).
    pub(crate) net: Option<isolate_net::Attachment>,
    /// What `isolate exec` reads (named containers); removed with the record.
    pub(crate) exec_spec: Option<crate::exec::SpecFile>,
}

impl Resources {
    pub(crate) fn new(run: RunDir) -> Self {
        Resources {
            run: Some(run),
            cgroup: None,
            volumes: Vec::new(),
            registration: None,
            net: None,
            exec_spec: None,
        }
    }

    /// Nothing held: an OCI runtime's container (its state is the
    /// runtime's, and `delete` removes its cgroup), or an `exec`'d process
    /// (the container holds it all).
    pub(crate) fn none() -> Self {
        Resources {
            run: None,
            cgroup: None,
            volumes: Vec::new(),
            registration: None,
            net: None,
            exec_spec: None,
        }
    }

    /// Removes the cgroup (killing anything left in it), the run marker and
    /// the state record, and unlocks the volumes. A cgroup that cannot go
    /// yet keeps its marker, so that a later `cleanup_stale` removes it.
    fn release(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            if cg.remove().is_err() {
                if let Some(marker) = self.run.take() {
                    marker.keep();
                }
            }
        }
        self.exec_spec = None;
        self.registration = None;
        // The veth, lease, published ports and (for the last run) the
        // table and the bridge.
        self.net = None;
        self.run = None;
        self.volumes.clear();
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        self.release();
    }
}

impl Attached {
    /// Closes this process's descriptor of the volume's mount once the
    /// child holds its own (the loop device detaches when the mount goes).
    pub(crate) fn release_device(&mut self) {
        self.device = None;
    }
}

/// A running container. Dropping it kills the container and releases
/// everything it held.
#[derive(Debug)]
pub struct Container {
    id: String,
    pid: u32,
    pidfd: OwnedFd,
    status_rd: OwnedFd,
    start: Instant,
    timed_out: Arc<AtomicBool>,
    startup: Option<Duration>,
    stdio: [Mutex<Option<File>>; 3],
    /// The master of the workload's pty (`--tty`).
    tty: Mutex<Option<File>>,
    /// Copies between the caller's terminal and the container.
    relays: Mutex<Relays>,
    cgroup: RwLock<Option<Cgroup>>,
    res: Mutex<Resources>,
    outcome: Mutex<Option<Outcome>>,
    /// Its address on isolate's bridge (`--network bridge`).
    address: Option<std::net::Ipv4Addr>,
    /// Left running on drop, its cgroup kept ([`Container::detach`]).
    detached: bool,
}

/// Kills the container at `deadline` unless it ended before: a thread that
/// polls a duplicate of the pidfd, so the timeout holds even while the
/// caller is busy reading the workload's output.
fn watchdog(pidfd: &OwnedFd, deadline: Instant, timed_out: Arc<AtomicBool>) {
    let Ok(fd) = pidfd.try_clone() else {
        return;
    };
    std::thread::spawn(move || loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Round up so that the deadline has passed on wake-up.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return; // ended in time
        }
        if n == 0 {
            timed_out.store(true, Ordering::SeqCst);
            let _ = isolate_core::sys::pidfd_send_signal(fd.as_fd(), libc::SIGKILL);
            return;
        }
    });
}

impl Container {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: String,
        pid: u32,
        pidfd: OwnedFd,
        status_rd: OwnedFd,
        start: Instant,
        timeout: Option<Duration>,
        stdio: [Option<File>; 3],
        relays: Relays,
        mut res: Resources,
    ) -> Self {
        let [a, b, c] = stdio;
        let cgroup = res.cgroup.take();
        let address = res.net.as_ref().map(|n| n.address());
        let timed_out = Arc::new(AtomicBool::new(false));
        if let Some(t) = timeout {
            watchdog(&pidfd, start + t, timed_out.clone());
        }
        Container {
            id,
            pid,
            pidfd,
            status_rd,
            start,
            timed_out,
            startup: None,
            stdio: [Mutex::new(a), Mutex::new(b), Mutex::new(c)],
            tty: Mutex::new(None),
            relays: Mutex::new(relays),
            cgroup: RwLock::new(cgroup),
            res: Mutex::new(res),
            outcome: Mutex::new(None),
            address,
            detached: false,
        }
    }

    /// The pid (in isolate's pid namespace) of the container's PID 1 shim.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The container's cgroup, during spawn (before anyone can wait).
    pub(crate) fn cgroup_mut(&mut self) -> Option<&Cgroup> {
        self.cgroup
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
    }

    /// Hands the container its cgroup, made after the shim started (v1).
    pub(crate) fn set_cgroup(&mut self, cg: Cgroup) {
        *self.cgroup.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(cg);
    }

    pub(crate) fn set_tty(&mut self, master: File) {
        *self.tty.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(master);
    }

    pub(crate) fn started(&mut self, startup: Duration) {
        self.startup = Some(startup);
    }

    pub(crate) fn set_exec_spec(&mut self, f: crate::exec::SpecFile) {
        self.res
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .exec_spec = Some(f);
    }

    pub(crate) fn set_registration(&mut self, reg: state::Registration) {
        self.res
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .registration = Some(reg);
    }

    /// Lets the container outlive this handle (and isolate): it is neither
    /// killed nor waited for, and its cgroup stays; returns the cgroup's
    /// path relative to the cgroup root(s).
    pub(crate) fn detach(mut self) -> Option<String> {
        self.detached = true;
        let cg = self
            .cgroup
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        cg.map(|c| c.rel_path().to_string())
    }

    /// Kills and reaps a container that failed to start, and releases all.
    pub(crate) fn abort(self) {
        let _ = self.signal(libc::SIGKILL);
        let _ = self.wait();
    }

    /// Waits for the shim to end; returns whether the timeout struck.
    fn await_exit(&self) -> Result<bool, Error> {
        loop {
            let mut pfd = libc::pollfd {
                fd: self.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, -1) };
            if n > 0 {
                return Ok(self.timed_out.load(Ordering::SeqCst));
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(ContainerError::host("wait for the container", e).into());
            }
        }
    }

    /// Reaps the shim; returns the application's status and the shim's peak
    /// RSS if the shim reported them, else the shim's own status.
    fn reap(&self) -> Result<(Status, Option<u64>), Error> {
        let mut buf = [0u8; 12];
        // The shim has exited: the pipe holds its report or is at end-of-file.
        let app = match sys::read(self.status_rd.as_raw_fd(), &mut buf) {
            Ok(12) => {
                let [s0, s1, s2, s3, r @ ..] = buf;
                Some((i32::from_ne_bytes([s0, s1, s2, s3]), u64::from_ne_bytes(r)))
            }
            _ => None,
        };
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: P_PIDFD with our pidfd; `info` is valid for writing.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.pidfd.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED,
                )
            };
            if rc == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(ContainerError::host("reap the container's init", e).into());
            }
        }
        if let Some((ws, rss)) = app {
            let status = if libc::WIFEXITED(ws) {
                Status::Exited(libc::WEXITSTATUS(ws))
            } else {
                Status::Signaled(libc::WTERMSIG(ws))
            };
            return Ok((status, (rss > 0).then_some(rss)));
        }
        // SAFETY: waitid filled `info` for a child-exit event.
        let (code, status) = unsafe { (info.si_code, info.si_status()) };
        let status = if code == libc::CLD_EXITED {
            Status::Exited(status)
        } else {
            Status::Signaled(status)
        };
        Ok((status, None))
    }

    fn finish(&self) -> Result<Outcome, Error> {
        let timed_out = self.await_exit()?;
        let (mut status, shim_rss) = self.reap()?;
        lock(&self.relays).finish();
        let wall_time = self.start.elapsed();
        let mut outcome = Outcome::new(status, wall_time);
        outcome.startup_time = self.startup;
        outcome.host_overhead = shim_rss;
        outcome.address = self.address;
        let cgroup = self
            .cgroup
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut cg_left = false;
        if let Some(cg) = cgroup {
            if let Ok(st) = cg.stats() {
                outcome.cpu_time = st.cpu_time;
                outcome.peak_memory = st.memory_peak;
            }
            if status == Status::Signaled(libc::SIGKILL) && cg.oom_killed().unwrap_or(false) {
                status = Status::OomKilled;
            }
            // A cgroup that cannot go yet (processes still dying) keeps its
            // run's marker, so the next spawn's `cleanup_stale` removes it
            // once this process has ended; the outcome is still reported.
            cg_left = cg.remove().is_err();
        }
        if timed_out {
            status = Status::TimedOut;
        }
        outcome.status = status;
        let mut res = lock(&self.res);
        if cg_left {
            if let Some(marker) = res.run.take() {
                marker.keep();
            }
        }
        res.release();
        Ok(outcome)
    }

    fn send(&self, signo: i32) -> Result<(), Error> {
        let Err(e) = isolate_core::sys::pidfd_send_signal(self.pidfd.as_fd(), signo) else {
            return Ok(());
        };
        match e.raw_os_error() {
            // Already ended: nothing left to signal.
            Some(libc::ESRCH) => Ok(()),
            Some(libc::EINVAL) => Err(Error::invalid("signal", format!("{signo} is not a signal"))),
            _ => {
                Err(ContainerError::host(format!("send signal {signo} to the container"), e).into())
            }
        }
    }
}

impl Running for Container {
    fn id(&self) -> &str {
        &self.id
    }

    fn address(&self) -> Option<std::net::Ipv4Addr> {
        self.address
    }

    fn take_stdin(&self) -> Option<File> {
        lock(&self.stdio[0]).take()
    }

    fn take_stdout(&self) -> Option<File> {
        lock(&self.stdio[1]).take()
    }

    fn take_stderr(&self) -> Option<File> {
        lock(&self.stdio[2]).take()
    }

    fn take_tty(&self) -> Option<File> {
        lock(&self.tty).take()
    }

    fn wait(&self) -> Result<Outcome, Error> {
        let mut done = lock(&self.outcome);
        if let Some(o) = &*done {
            return Ok(o.clone());
        }
        let o = self.finish()?;
        *done = Some(o.clone());
        Ok(o)
    }

    fn signal(&self, signo: i32) -> Result<(), Error> {
        self.send(signo)
    }

    fn stats(&self) -> Result<Stats, Error> {
        let cg = self.cgroup.read().unwrap_or_else(|p| p.into_inner());
        match &*cg {
            Some(cg) => cg
                .stats()
                .map_err(|e| ContainerError::Cgroup(e.to_string()).into()),
            None => Err(Error::NoSuchWorkload(self.id.clone())),
        }
    }

    fn update(&self, limits: &Limits) -> Result<(), Error> {
        limits.validate()?;
        let cg = self.cgroup.read().unwrap_or_else(|p| p.into_inner());
        match &*cg {
            Some(cg) => cg
                .update(limits)
                .map_err(|e| ContainerError::Cgroup(e.to_string()).into()),
            None => Err(Error::NoSuchWorkload(self.id.clone())),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let done = lock(&self.outcome).is_some();
        if !done && !self.detached {
            let _ = self.send(libc::SIGKILL);
            let _ = self.wait();
        }
    }
}
