//! `isolate exec`: another process in a running named container.
//!
//! At spawn, a named container leaves an [`ExecSpec`] next to its state
//! record (`ISOLATE_STATE/NAME.exec`): the hardening its application
//! got (capability mask, compiled seccomp programs, user, environment,
//! working directory). [`exec`] clones a process from isolate that joins
//! the container's cgroup and namespaces (`setns` on descriptors of
//! `/proc/PID/ns/*` opened first, the mount namespace last, so root and
//! working directory become the container's) and then starts the command
//! exactly as the shim starts the container's application
//! ([`child::join`]): same capabilities, `no_new_privs`, seccomp filters,
//! and a pty from the container's own devpts with `tty`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Instant;

use isolate_cgroups::Cgroup;
use isolate_core::sys::CloneArgs;
use isolate_core::{error_chain, paths, state, Error, ExecRequest, Mode, User, Workload};
use seccompiler::sock_filter;

use crate::child::{self, ChildPlan, RootMount};
use crate::error::ContainerError;
use crate::running::{Container, Resources};
use crate::spawn as sp;
use crate::sys;

/// How a named container's application was hardened, for `exec`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExecSpec {
    /// Capability mask (bit `n`: capability `n`).
    pub caps: u64,
    /// Seccomp programs, each instruction as (code, jt, jf, k).
    pub filters: Vec<Vec<(u16, u8, u8, u32)>>,
    /// The application's environment.
    pub env: Vec<(String, String)>,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Working directory.
    pub cwd: String,
    /// Whether the container has a user namespace (rootless).
    pub rootless: bool,
}

fn spec_path(name: &str) -> PathBuf {
    // Not `.json`: `state::list` takes every `.json` file for a record.
    paths::state_dir().join(format!("{name}.exec"))
}

/// The spec file of a running container; removed when dropped.
#[derive(Debug)]
pub(crate) struct SpecFile(PathBuf);

impl Drop for SpecFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ExecSpec {
    /// The spec of `plan`, the container's application.
    pub(crate) fn of(plan: &ChildPlan, env: Vec<(String, String)>, cwd: String) -> ExecSpec {
        ExecSpec {
            caps: plan.caps,
            filters: plan
                .filters
                .iter()
                .map(|p| p.iter().map(|f| (f.code, f.jt, f.jf, f.k)).collect())
                .collect(),
            env,
            uid: plan.uid,
            gid: plan.gid,
            cwd,
            rootless: plan.rootless,
        }
    }

    /// Writes the spec of the named container `name` (file mode 0600).
    pub(crate) fn write(&self, name: &str) -> Result<SpecFile, Error> {
        use std::io::Write;
        let path = spec_path(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("cannot write", &path, e))?;
        f.write_all(&serde_json::to_vec(self).expect("spec serializes"))
            .map_err(|e| Error::io("cannot write", &path, e))?;
        Ok(SpecFile(path))
    }

    fn read(name: &str) -> Result<ExecSpec, Error> {
        let path = spec_path(name);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("cannot read", &path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::invalid(
                "exec",
                format!("{} is not an exec spec: {e}", path.display()),
            )
        })
    }
}

/// Namespaces joined, in order: the user namespace first (it grants the
/// rights for the others), the mount namespace last.
const NAMESPACES: [&str; 7] = ["user", "ipc", "uts", "net", "pid", "cgroup", "mnt"];

/// Opens the namespaces of process `pid` that differ from this process's.
fn open_namespaces(pid: u32) -> Result<Vec<OwnedFd>, Error> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for ns in NAMESPACES {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
        let ours = PathBuf::from(format!("/proc/self/ns/{ns}"));
        let same = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            (Err(e), _) => return Err(Error::io("cannot open the namespace", theirs, e)),
            _ => false,
        };
        if same {
            continue;
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&theirs)
            .map_err(|e| Error::io("cannot open the namespace", &theirs, e))?;
        out.push(OwnedFd::from(f));
    }
    Ok(out)
}

/// Runs `req` in the running named container `name`; the handle waits for
/// it and signals it like a container's.
pub fn exec(name: &str, req: &ExecRequest) -> Result<Container, Error> {
    let start = Instant::now();
    if req.argv.is_empty() {
        return Err(Error::invalid("command", "no command given"));
    }
    let record = state::get_live(name)?;
    if record.mode != Mode::Container {
        return Err(Error::Unsupported(format!(
            "{name} is a VM: exec into a VM is not available yet (it needs a control channel \
             to the guest init that starts processes with their own streams, e.g. over vsock)"
        )));
    }
    let spec = ExecSpec::read(name)?;
    let ns = open_namespaces(record.pid)?;
    // The descriptors name the recorded process, not a later one with its pid.
    if !record.alive() {
        return Err(Error::NoSuchWorkload(name.to_string()));
    }
    let cgroup = if record.cgroup.is_empty() {
        None
    } else {
        Some(Cgroup::open(&record.cgroup).map_err(|e| ContainerError::Cgroup(error_chain(&e)))?)
    };

    let mut env = spec.env.clone();
    for (k, v) in &req.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let user = req.user.unwrap_or(User {
        uid: spec.uid,
        gid: spec.gid,
    });
    let cwd = req.cwd.clone().unwrap_or_else(|| spec.cwd.clone());
    // The streams as a workload's: pipes for the caller's terminal, or a pty.
    let mut w = Workload::new(req.argv[0].clone());
    w.argv = req.argv.clone();
    w.tty = req.tty;
    w.stdin = req.stdin;
    w.stdout = req.stdout;
    w.stderr = req.stderr;
    w.cwd = Some(PathBuf::from(&cwd));

    let mut child_fds: Vec<OwnedFd> = Vec::new();
    let (sync_rd, sync_wr) = sp::socketpair()?;
    let (exec_rd, exec_wr) = sp::pipe()?;
    let (status_rd, status_wr) = sp::pipe()?;
    let stdio_plan = sp::stdio_fds(&w, &mut child_fds, false)?;
    let parent_pidfd = sys::pidfd_self().map_err(|e| {
        ContainerError::host(
            "open a pidfd of isolate",
            std::io::Error::from_raw_os_error(e),
        )
    })?;
    let mut keep: Vec<RawFd> = vec![
        parent_pidfd.as_raw_fd(),
        sync_rd.as_raw_fd(),
        exec_wr.as_raw_fd(),
        status_wr.as_raw_fd(),
    ];
    keep.extend(ns.iter().map(|f| f.as_raw_fd()));
    keep.extend(stdio_plan.child.iter().copied().filter(|&fd| fd >= 0));
    keep.sort_unstable();
    keep.dedup();
    let tty = req.tty.then(|| child::TtyPlan {
        slave_fd: keep.last().copied().unwrap_or(2) + 1,
        size: [0, 1, 2]
            .into_iter()
            .find_map(isolate_core::pty::window_size)
            .map(|s| (s.rows, s.cols, s.xpixel, s.ypixel)),
    });
    let stdio = match tty {
        Some(t) => [t.slave_fd; 3],
        None => stdio_plan.child,
    };
    let cstr = |s: &str, what: &str| {
        CString::new(s).map_err(|_| Error::invalid(what, "contains a NUL byte"))
    };
    let argv: Vec<CString> = req
        .argv
        .iter()
        .map(|a| cstr(a, "argument"))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}"), "environment"))
        .collect::<Result<_, _>>()?;
    let filters: Vec<Vec<sock_filter>> = spec
        .filters
        .iter()
        .map(|p| {
            p.iter()
                .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k })
                .collect()
        })
        .collect();
    let plan = ChildPlan {
        rootfs: CString::default(),
        scratch: CString::default(),
        scratch_dirs: Vec::new(),
        new_root: CString::default(),
        root_mount: RootMount::ReadOnlyBind,
        premounts: Vec::new(),
        volume_sources: Vec::new(),
        ops: Vec::new(),
        late_ops: Vec::new(),
        hostname: CString::default(),
        loopback: false,
        netns_fd: -1,
        keep_fds: keep,
        rootless: spec.rootless,
        late_join: false,
        parent_pidfd: parent_pidfd.as_raw_fd(),
        reset_signals: sys::handled_signals(),
        sync_rd: sync_rd.as_raw_fd(),
        exec_wr: exec_wr.as_raw_fd(),
        status_wr: status_wr.as_raw_fd(),
        stdio,
        tty,
        cwd: cstr(&cwd, "workdir")?,
        uid: user.uid,
        gid: user.gid,
        caps: spec.caps,
        last_cap: sp::last_cap(),
        filters: filters.into(),
        candidates: sp::candidates(&req.argv[0], &env)?,
        argv,
        envp,
        detached: false,
        hold_fd: -1,
        sysctls: Vec::new(),
        groups: Vec::new(),
        rlimits: Vec::new(),
        console_fd: -1,
        console_size: (0, 0),
    };
    let ns_raw: Vec<RawFd> = ns.iter().map(|f| f.as_raw_fd()).collect();
    let (pid, pidfd) = clone_joiner(&plan, &ns_raw)?;
    child_fds.extend([parent_pidfd, sync_rd, exec_wr, status_wr]);
    drop(child_fds);
    drop(ns);
    let mut handle = Container::new(
        format!("{name}/exec-{pid}"),
        pid,
        pidfd,
        status_rd,
        start,
        None,
        stdio_plan.parent,
        stdio_plan.relays,
        Resources::none(),
    );
    // Into the container's cgroup before anything runs in it.
    if let Some(cg) = &cgroup {
        if let Err(e) = cg.add_process(pid) {
            handle.abort();
            return Err(ContainerError::Cgroup(error_chain(&e)).into());
        }
    }
    let _ = sys::send_fds(sync_wr.as_raw_fd(), 1, &[]);
    match sp::read_report(&exec_rd) {
        Ok(None) if plan.tty.is_some() => match sp::receive_tty(&sync_wr) {
            Ok(master) => handle.set_tty(master),
            Err(e) => {
                handle.abort();
                return Err(e.into());
            }
        },
        Ok(None) => {}
        Ok(Some(r)) => {
            handle.abort();
            return Err(sp::report_error(r, &plan, &req.argv[0], &w));
        }
        Err(e) => {
            handle.abort();
            return Err(e);
        }
    }
    handle.started(start.elapsed());
    Ok(handle)
}

/// Clones the joiner (no new namespaces), with every signal blocked as the
/// shim starts.
fn clone_joiner(plan: &ChildPlan, ns: &[RawFd]) -> Result<(u32, OwnedFd), Error> {
    use std::os::fd::FromRawFd;
    let argv = child::ptr_array(&plan.argv);
    let envp = child::ptr_array(&plan.envp);
    let mut pidfd: RawFd = -1;
    let args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    let old = sys::set_sigmask(true);
    // SAFETY: the child only calls `child::join`, which never returns and
    // uses no allocator or lock; `args.pidfd` points at `pidfd`, which
    // outlives the call.
    let cloned = unsafe { isolate_core::sys::clone3(&args) };
    if let Ok(0) = cloned {
        child::join(plan, ns, &argv, &envp);
    }
    sys::restore_sigmask(&old);
    let pid =
        cloned.map_err(|e| Error::from(ContainerError::host("start a process (clone3)", e)))?;
    // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_its_filters() {
        let spec = ExecSpec {
            caps: 5,
            filters: vec![vec![(6, 0, 0, 0x7fff0000)]],
            env: vec![("A".into(), "b".into())],
            uid: 1,
            gid: 2,
            cwd: "/".into(),
            rootless: false,
        };
        let back: ExecSpec = serde_json::from_slice(&serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!(back.filters, spec.filters);
        assert_eq!(back.env, spec.env);
    }
}
