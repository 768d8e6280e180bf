//! Containers for an OCI runtime (`isolate create` / `start`): one isolate
//! process sets the container up and exits, leaving the shim (the
//! container's PID 1) held before it starts the application; another
//! isolate process starts it later by writing one byte to what the shim
//! waits on (the runtime's exec FIFO).
//!
//! Such a container does not die with isolate (its engine's shim or conmon
//! reaps it), streams are the ones isolate was given (no relay), the shim
//! exits with the application's status (a signal as 128 + its number), and
//! its cgroup is `isolate/oci-<id>`, removed by the runtime's `delete`
//! ([`remove_cgroup`]), never by the stale sweep of ordinary runs.

use std::os::fd::RawFd;
use std::path::PathBuf;

use isolate_cgroups::devices::DeviceRule;
use isolate_cgroups::Family;
use isolate_core::{error_chain, Result, Workload};

use crate::error::ContainerError;

/// The OCI runtime's cgroups: `isolate/oci-<id>`.
pub const CGROUPS: Family = Family::new("oci-");

/// What an OCI bundle asks for beyond a [`Workload`] (container mode only).
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Supplementary groups of the application.
    pub groups: Vec<u32>,
    /// Resource limits of the application: `RLIMIT_*`, soft, hard.
    pub rlimits: Vec<(libc::c_int, u64, u64)>,
    /// A network namespace to join (the engine's) instead of a new one.
    pub net_ns: Option<PathBuf>,
    /// Paths to mask beyond Docker's defaults (which are always masked).
    pub masked: Vec<Masked>,
    /// Paths to make read-only beyond Docker's defaults.
    pub read_only: Vec<String>,
    /// tmpfs mounts beyond the standard ones, made before the volumes.
    pub tmpfs: Vec<Tmpfs>,
    /// Sysctls of the container's namespaces (`net.ipv4.ip_forward`, `1`).
    pub sysctl: Vec<(String, String)>,
    /// Device rules allowed beyond Docker's default devices.
    pub device_rules: Vec<DeviceRule>,
    /// The root is the rootfs itself, bound writable (runc's way), not an
    /// overlay whose writes vanish; with `read_only_root` it is made
    /// read-only once the recipe (mount points included) is done.
    pub bind_root: bool,
    /// With `bind_root`: the root is read-only for the application.
    pub read_only_root: bool,
    /// Mount the container's cgroups read-only at `/sys/fs/cgroup` (v2:
    /// cgroup2; v1: a tmpfs with each of the host's hierarchies).
    pub cgroupfs: bool,
    /// A connected unix socket (OCI `--console-socket`) that gets the
    /// master of the application's new terminal (`terminal: true`).
    pub console_socket: Option<RawFd>,
    /// The terminal's rows and columns (0: the kernel's default).
    pub console_size: (u16, u16),
    /// `MOUNT_ATTR_*` flags (nosuid, nodev, noexec) for each of the
    /// workload's volumes, in order (`0` or missing: none).
    pub volume_attrs: Vec<u64>,
}

/// A path to mask.
#[derive(Debug, Clone)]
pub struct Masked {
    /// The path inside the container.
    pub path: String,
    /// A directory (covered by an empty read-only tmpfs) or anything else
    /// (`/dev/null` bound over it).
    pub is_dir: bool,
}

/// A tmpfs mount.
#[derive(Debug, Clone)]
pub struct Tmpfs {
    /// Mount point in the container (made if missing).
    pub target: String,
    /// `MS_*` flags.
    pub flags: libc::c_ulong,
    /// tmpfs options (`size=…,mode=…`).
    pub data: String,
}

/// `MOUNT_ATTR_NOSUID`, for [`Extras::volume_attrs`].
pub const ATTR_NOSUID: u64 = crate::sys::MOUNT_ATTR_NOSUID;
/// `MOUNT_ATTR_NODEV`, for [`Extras::volume_attrs`].
pub const ATTR_NODEV: u64 = crate::sys::MOUNT_ATTR_NODEV;
/// `MOUNT_ATTR_NOEXEC`, for [`Extras::volume_attrs`].
pub const ATTR_NOEXEC: u64 = crate::sys::MOUNT_ATTR_NOEXEC;

/// How the spawn path makes a detached container.
pub(crate) struct Detach<'a> {
    pub id: &'a str,
    pub hold: RawFd,
    pub extras: &'a Extras,
}

/// A container set up and held before its application starts.
#[derive(Debug, Clone)]
pub struct Created {
    /// The host pid of its PID 1 (the shim).
    pub pid: u32,
    /// Its cgroup, relative to the cgroup root(s).
    pub cgroup: Option<String>,
}

/// Sets up `w` as container `id` (cgroup `isolate/oci-<id>`) and returns
/// once it is ready: its application starts when one byte can be read
/// from `hold` (the shim keeps that descriptor; the caller may close its
/// own). On an error nothing is left: the shim is killed, the cgroup gone.
pub fn create(w: &Workload, id: &str, hold: RawFd, extras: &Extras) -> Result<Created> {
    let d = Detach { id, hold, extras };
    let c = crate::spawn::launch(w, Some(&d))?;
    let pid = c.pid();
    Ok(Created {
        pid,
        cgroup: c.detach(),
    })
}

/// Removes container `id`'s cgroup, killing whatever still runs in it; a
/// cgroup that is not there is not an error.
pub fn remove_cgroup(id: &str) -> Result<()> {
    CGROUPS
        .remove_leftover(id)
        .map_err(|e| ContainerError::Cgroup(error_chain(&e)).into())
}

/// How [`exec`] runs a process in a running container.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecOptions {
    /// Return once the process has started (it is reparented to the
    /// caller's subreaper); else wait for it and return its status.
    pub detach: bool,
    /// A connected unix socket (OCI `--console-socket`): the process gets
    /// a new terminal of the container's devpts, whose master goes there.
    pub console_socket: Option<std::os::fd::RawFd>,
    /// The terminal's rows and columns (0: the kernel's default).
    pub console_size: (u16, u16),
}

/// A failure in the process [`exec`] starts, before its program runs.
fn exec_fail(report: std::os::fd::RawFd, step: u32, errno: i32, code: i32) -> ! {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&step.to_ne_bytes());
    b[4..].copy_from_slice(&errno.to_ne_bytes());
    crate::sys::write_all(report, &b);
    crate::sys::exit(code)
}

/// What each step of [`exec`]'s child is called in errors.
const EXEC_STEPS: [&str; 12] = [
    "join the container's namespaces",
    "start the process in the container's pid namespace",
    "enter the working directory",
    "set a resource limit",
    "drop bounding capabilities",
    "set supplementary groups",
    "set the group id",
    "set the user id",
    "set capabilities",
    "install the seccomp filter",
    "execute the program",
    "open a terminal and send it to the console socket",
];

/// Runs `w`'s program (argv, env, cwd, user, capabilities, seccomp; the
/// extras' groups and rlimits) inside the running container whose PID 1 is
/// `target`, in its cgroup `cgroup`: joins its namespaces, then starts the
/// process in its pid namespace. `on_pid` gets the process's host pid once
/// it runs. Returns its exit status (a signal as 128 + its number), or 0
/// with `detach`. The caller must be single-threaded (it forks).
pub fn exec(
    target: u32,
    cgroup: Option<&str>,
    w: &Workload,
    extras: &Extras,
    opts: ExecOptions,
    on_pid: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<i32> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    use crate::sys;

    let err = |what: &str, e: std::io::Error| -> isolate_core::Error {
        ContainerError::host(what.to_string(), e).into()
    };
    let cstr = |s: &[u8], what: &str| {
        CString::new(s).map_err(|_| isolate_core::Error::invalid(what, "contains a NUL byte"))
    };
    // Everything is prepared before the fork.
    let mut ns: Vec<(OwnedFd, libc::c_int)> = Vec::new();
    for (name, kind) in [
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("pid", libc::CLONE_NEWPID),
        ("mnt", libc::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{target}/ns/{name}");
        let f = std::fs::File::open(&path).map_err(|e| err(&format!("open {path}"), e))?;
        ns.push((f.into(), kind));
    }
    let env = w.effective_env();
    let argv: Vec<CString> = w
        .argv
        .iter()
        .map(|a| cstr(a.as_bytes(), "argument"))
        .collect::<Result<_>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}").as_bytes(), "environment"))
        .collect::<Result<_>>()?;
    let candidates: Vec<CString> =
        isolate_core::exec::candidates(&w.argv[0], isolate_core::exec::search_path(&env))
            .iter()
            .map(|p| cstr(p.as_os_str().as_bytes(), "command"))
            .collect::<Result<_>>()?;
    let cwd = cstr(
        w.cwd
            .as_deref()
            .unwrap_or(std::path::Path::new("/"))
            .as_os_str()
            .as_bytes(),
        "workdir",
    )?;
    let caps = isolate_policy::caps::mask(&w.capabilities).map_err(ContainerError::from)?;
    let filters =
        isolate_policy::seccomp::filters(&w.seccomp, caps).map_err(ContainerError::Seccomp)?;
    let user = w.user.unwrap_or(isolate_core::User { uid: 0, gid: 0 });
    let last_cap = crate::spawn::last_cap();
    let argv_p = crate::child::ptr_array(&argv);
    let envp_p = crate::child::ptr_array(&envp);
    let cg = match cgroup {
        Some(rel) => Some(
            isolate_cgroups::Cgroup::open(rel)
                .map_err(|e| ContainerError::Cgroup(error_chain(&e)))?,
        ),
        None => None,
    };
    let (go_rd, go_wr) = isolate_core::sys::pipe().map_err(|e| err("create a pipe", e))?;
    let (pid_rd, pid_wr) = isolate_core::sys::pipe().map_err(|e| err("create a pipe", e))?;
    let (rep_rd, rep_wr) = isolate_core::sys::pipe().map_err(|e| err("create a pipe", e))?;

    // SAFETY: fork in a single-threaded caller (documented); the child
    // uses only what was prepared above and `sys` wrappers, then exits.
    let mid = unsafe { libc::fork() };
    if mid < 0 {
        return Err(err("fork", std::io::Error::last_os_error()));
    }
    if mid == 0 {
        let rep = rep_wr.as_raw_fd();
        let mut b = [0u8; 1];
        if sys::read(go_rd.as_raw_fd(), &mut b) != Ok(1) {
            sys::exit(125);
        }
        for (fd, kind) in &ns {
            if let Err(e) = sys::setns(fd.as_raw_fd(), *kind) {
                exec_fail(rep, 0, e, 125);
            }
        }
        // SAFETY: as above; this process is single-threaded too.
        let child = unsafe { libc::fork() };
        if child < 0 {
            exec_fail(rep, 1, sys::errno(), 125);
        }
        if child == 0 {
            let step = |i: u32, r: std::result::Result<(), sys::Errno>| {
                if let Err(e) = r {
                    exec_fail(rep, i, e, 125)
                }
            };
            if let Some(sock) = opts.console_socket {
                match sys::open_pty(opts.console_size.0, opts.console_size.1) {
                    Ok((master, slave)) => {
                        step(11, sys::send_fds(sock, 0, &[master]));
                        sys::close(master);
                        sys::close(sock);
                        step(11, sys::take_terminal(slave));
                        sys::close(slave);
                    }
                    Err(e) => exec_fail(rep, 11, e, 125),
                }
            }
            step(2, sys::chdir(&cwd));
            for &(res, soft, hard) in &extras.rlimits {
                step(3, sys::setrlimit(res, soft, hard));
            }
            for c in 0..=last_cap {
                if caps & (1u64 << c) == 0 {
                    step(4, sys::prctl(libc::PR_CAPBSET_DROP, c.into(), 0));
                }
            }
            let _ = sys::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
            );
            if let Err((i, e)) = sys::set_ids(user.uid, user.gid, Some(&extras.groups)) {
                exec_fail(rep, 5 + u32::from(i), e, 125);
            }
            step(8, sys::capset(if user.uid == 0 { caps } else { 0 }));
            step(9, sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0));
            for f in filters.iter() {
                step(9, sys::seccomp_install(f.as_slice()));
            }
            let _ = sys::close_range(3, u32::MAX, true);
            let mut not_executable = 0;
            for c in &candidates {
                // SAFETY: `c`, `argv_p` and `envp_p` are NUL-terminated
                // strings and null-terminated arrays of them, alive here.
                unsafe { libc::execve(c.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
                match sys::errno() {
                    libc::ENOENT | libc::ENOTDIR => {}
                    e => not_executable = e,
                }
            }
            if not_executable != 0 {
                exec_fail(rep, 10, not_executable, 126)
            }
            exec_fail(rep, 10, libc::ENOENT, 127)
        }
        // Only the process holds the report pipe now (until its execve).
        sys::close(rep);
        sys::write_all(pid_wr.as_raw_fd(), &(child as u32).to_ne_bytes());
        if opts.detach {
            sys::exit(0);
        }
        let mut status = 0;
        loop {
            // SAFETY: `status` is a valid int for the kernel to fill.
            let got = unsafe { libc::waitpid(child, &mut status, 0) };
            if got == child {
                break;
            }
            if got < 0 && sys::errno() != libc::EINTR {
                sys::exit(125);
            }
        }
        if libc::WIFSIGNALED(status) {
            sys::exit(128 + libc::WTERMSIG(status));
        }
        sys::exit(libc::WEXITSTATUS(status))
    }
    drop((go_rd, pid_wr, rep_wr, ns));
    let reap = |pid: libc::pid_t| -> i32 {
        let mut status = 0;
        loop {
            // SAFETY: `status` is a valid int for the kernel to fill.
            let got = unsafe { libc::waitpid(pid, &mut status, 0) };
            if got == pid {
                break;
            }
            if got < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return 125;
            }
        }
        if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            libc::WEXITSTATUS(status)
        }
    };
    let joined = match &cg {
        Some(c) => c.add_process(mid as u32),
        None => Ok(()),
    };
    if let Err(e) = joined {
        // SAFETY: kill takes integers; `mid` is our child.
        unsafe { libc::kill(mid, libc::SIGKILL) };
        reap(mid);
        return Err(ContainerError::Cgroup(error_chain(&e)).into());
    }
    sys::write_all(go_wr.as_raw_fd(), b"1");
    drop(go_wr);
    let mut pid_buf = [0u8; 4];
    let got_pid = matches!(sys::read(pid_rd.as_raw_fd(), &mut pid_buf), Ok(4));
    // The report pipe closes without data once the program runs.
    let mut rep = [0u8; 8];
    let mut n = 0;
    while n < rep.len() {
        match sys::read(rep_rd.as_raw_fd(), &mut rep[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(libc::EINTR) => continue,
            Err(_) => break,
        }
    }
    if n == rep.len() {
        let step = u32::from_ne_bytes([rep[0], rep[1], rep[2], rep[3]]) as usize;
        let errno = i32::from_ne_bytes([rep[4], rep[5], rep[6], rep[7]]);
        reap(mid);
        if step == 10 {
            return Err(isolate_core::Error::Exec {
                kind: if errno == libc::ENOENT {
                    isolate_core::ExecFailure::NotFound
                } else {
                    isolate_core::ExecFailure::NotExecutable
                },
                program: w.argv[0].clone(),
            });
        }
        return Err(ContainerError::Setup {
            step: EXEC_STEPS.get(step).unwrap_or(&"exec").to_string(),
            source: std::io::Error::from_raw_os_error(errno),
        }
        .into());
    }
    if !got_pid {
        reap(mid);
        return Err(ContainerError::SetupDied(
            "the exec helper ended before starting the process".into(),
        )
        .into());
    }
    if let Err(e) = on_pid(u32::from_ne_bytes(pid_buf)) {
        if !opts.detach {
            // SAFETY: kill takes integers.
            unsafe { libc::kill(u32::from_ne_bytes(pid_buf) as i32, libc::SIGKILL) };
        }
        reap(mid);
        return Err(e);
    }
    let code = reap(mid);
    Ok(if opts.detach { 0 } else { code })
}
