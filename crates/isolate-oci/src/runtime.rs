//! runc's verbs over the container backend and the state root.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use isolate_cgroups::Cgroup;
use isolate_container::detached;
use isolate_core::error_chain;
use serde_json::json;

use crate::config::{self, Mode};
use crate::error::{OciError, Result};
use crate::hooks;
use crate::state::{self, Record, Root, Status, OCI_VERSION};

/// Options of `create` and `run`.
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// The bundle directory (default: the current directory).
    pub bundle: Option<PathBuf>,
    /// Where to write the container's pid.
    pub pid_file: Option<PathBuf>,
    /// runc's `--console-socket` (for `terminal: true`).
    pub console_socket: Option<PathBuf>,
}

/// The default mode, from `ISOLATE_OCI_CONFIG` (default
/// `/etc/isolate/oci.conf`): a line `mode = vm|container`.
pub fn default_mode() -> Result<Mode> {
    let path = std::env::var_os("ISOLATE_OCI_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/isolate/oci.conf"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Mode::Container);
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some((k, v)) = line.split_once('=') {
            if k.trim() == "mode" {
                return Mode::parse(&format!("{} mode", path.display()), v);
            }
        }
    }
    Ok(Mode::Container)
}

fn bundle_dir(opts: &CreateOptions) -> Result<PathBuf> {
    let b = match &opts.bundle {
        Some(b) => b.clone(),
        None => {
            std::env::current_dir().map_err(|e| OciError::io("find the current directory", e))?
        }
    };
    b.canonicalize()
        .map_err(|e| OciError::io(format!("find the bundle {}", b.display()), e))
}

/// Makes the exec FIFO and opens it for the container's PID 1 to wait on
/// (read-write: it never sees end-of-file, only `start`'s byte).
fn make_fifo(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("state paths hold no NUL");
    // SAFETY: `c` is a NUL-terminated path valid for the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(OciError::io(
            format!("create {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: as above; the flags ask for a new descriptor.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(OciError::io(
            format!("open {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `create`: sets the container up and leaves its process waiting for
/// `start`. On an error nothing is left (state, cgroup, processes).
pub fn create(root: &Root, id: &str, opts: &CreateOptions) -> Result<Record> {
    state::check_id(id)?;
    let bundle = bundle_dir(opts)?;
    let spec = config::load(&bundle)?;
    if config::mode(&spec, default_mode()?)? == Mode::Vm {
        return Err(OciError::unsupported(
            format!("annotations[{}]=vm", config::MODE_ANNOTATION),
            "VM mode is not available through isolate's OCI runtime yet: it needs the VMM held \
             before `start`, the engine's streams on the VM's console and the VMM's pid in the \
             state; use run.isolate.mode=container, or `isolate --mode vm` directly",
        ));
    }
    let mut plan = config::plan(&spec, &bundle)?;
    let console = console(plan.terminal, opts.console_socket.as_deref())?;
    plan.extras.console_socket = console.as_ref().map(|c| c.as_raw_fd());
    root.make(id)?;
    let made = (|| {
        let fifo = make_fifo(&root.fifo(id))?;
        let c = detached::create(&plan.workload, id, fifo.as_raw_fd(), &plan.extras)?;
        drop(fifo);
        let record = Record {
            id: id.to_string(),
            pid: c.pid,
            start_time: state::start_time(c.pid).unwrap_or(0),
            bundle: bundle.clone(),
            rootfs: plan.workload.rootfs.clone().unwrap_or_default(),
            created: state::now_rfc3339(),
            annotations: plan.annotations.clone(),
            cgroup: c.cgroup,
            poststart: hook_list(&spec, |h| h.poststart()),
            poststop: hook_list(&spec, |h| h.poststop()),
        };
        let finish = (|| {
            if let Some(adj) = plan.oom_score_adj {
                std::fs::write(format!("/proc/{}/oom_score_adj", c.pid), adj.to_string())
                    .map_err(|e| OciError::io("set process.oomScoreAdj", e))?;
            }
            root.save(&record)?;
            if let Some(p) = &opts.pid_file {
                state::write_atomic(&absolute(p), c.pid.to_string().as_bytes(), 0o644)?;
            }
            let state = state_value(&record, Status::Created);
            hooks::run("prestart", &hook_list(&spec, |h| h.prestart()), &state)?;
            hooks::run(
                "createRuntime",
                &hook_list(&spec, |h| h.create_runtime()),
                &state,
            )?;
            Ok(())
        })();
        if let Err(e) = finish {
            kill_pid(c.pid, record.start_time, libc::SIGKILL);
            let _ = detached::remove_cgroup(id);
            return Err(e);
        }
        Ok(record)
    })();
    if made.is_err() {
        let _ = root.remove(id);
    }
    made
}

/// Connects to the engine's console socket: required with a terminal,
/// refused without one (as runc does).
fn console(
    terminal: bool,
    socket: Option<&Path>,
) -> Result<Option<std::os::unix::net::UnixStream>> {
    match (terminal, socket) {
        (true, Some(p)) => std::os::unix::net::UnixStream::connect(p)
            .map(Some)
            .map_err(|e| OciError::io(format!("connect to the console socket {}", p.display()), e)),
        (true, None) => Err(OciError::Usage(
            "process.terminal is true: give --console-socket (isolate relays no terminal itself)"
                .into(),
        )),
        (false, Some(_)) => Err(OciError::Usage(
            "--console-socket is only for a process with terminal: true".into(),
        )),
        (false, None) => Ok(None),
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

/// `start`: lets a created container's process run.
pub fn start(root: &Root, id: &str) -> Result<()> {
    let r = root.load(id)?;
    let status = root.status(&r);
    if status != Status::Created {
        return Err(OciError::WrongState {
            id: id.into(),
            status: status.as_str(),
            verb: "start",
            hint: "; only a created container starts",
        });
    }
    let fifo = root.fifo(id);
    let c = CString::new(fifo.as_os_str().as_bytes()).expect("state paths hold no NUL");
    // SAFETY: `c` is a NUL-terminated path; non-blocking: with no reader
    // (the container's PID 1 is gone) it fails with ENXIO instead.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(OciError::io(
            format!("reach container {id}'s process through {}", fifo.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.write_all(b"0")
        .map_err(|e| OciError::io(format!("start container {id}"), e))?;
    drop(f);
    std::fs::remove_file(&fifo)
        .map_err(|e| OciError::io(format!("remove {}", fifo.display()), e))?;
    hooks::run("poststart", &r.poststart, &state_value(&r, Status::Running))
}

/// One kind of hook of `spec` (none if absent).
fn hook_list(
    spec: &oci_spec::runtime::Spec,
    kind: impl Fn(&oci_spec::runtime::Hooks) -> &Option<Vec<oci_spec::runtime::Hook>>,
) -> Vec<oci_spec::runtime::Hook> {
    spec.hooks()
        .as_ref()
        .and_then(|h| kind(h).clone())
        .unwrap_or_default()
}

/// The OCI state of container `id`, as `state` prints it.
pub fn state_json(root: &Root, id: &str) -> Result<serde_json::Value> {
    let r = root.load(id)?;
    let status = root.status(&r);
    Ok(state_value(&r, status))
}

/// The OCI state of `r` with `status`.
fn state_value(r: &Record, status: Status) -> serde_json::Value {
    let pid = if status == Status::Stopped { 0 } else { r.pid };
    let mut v = json!({
        "ociVersion": OCI_VERSION,
        "id": r.id,
        "pid": pid,
        "status": status.as_str(),
        "bundle": r.bundle,
        "rootfs": r.rootfs,
        "created": r.created,
        "owner": "",
    });
    if !r.annotations.is_empty() {
        v["annotations"] = json!(r.annotations);
    }
    v
}

/// Sends `sig` to `pid` if it is still the process that started at
/// `start` (through a pidfd, so a reused pid is never signalled).
fn kill_pid(pid: u32, start: u64, sig: i32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !state::alive(pid, start) {
        return false;
    }
    isolate_core::sys::pidfd_send_signal(fd.as_fd(), sig).is_ok()
}

/// Whether `sig`'s default action ends the process.
fn ends_process(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGURG
            | libc::SIGWINCH
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
    )
}

/// Parses a signal as runc does: `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return Err(OciError::Usage(format!("unknown signal {s:?}"))),
    };
    Ok(n)
}

fn cgroup_of(r: &Record) -> Result<Cgroup> {
    let rel = r
        .cgroup
        .as_deref()
        .ok_or_else(|| OciError::Usage(format!("container {} has no cgroup", r.id)))?;
    Cgroup::open(rel).map_err(|e| {
        OciError::from(isolate_core::Error::Backend {
            backend: "container",
            source: Box::new(isolate_container::ContainerError::Cgroup(error_chain(&e))),
        })
    })
}

fn cgroup_err(e: isolate_cgroups::CgroupError) -> OciError {
    OciError::from(isolate_core::Error::Backend {
        backend: "container",
        source: Box::new(isolate_container::ContainerError::Cgroup(error_chain(&e))),
    })
}

/// `kill [--all] ID SIGNAL`.
pub fn kill(root: &Root, id: &str, sig: i32, all: bool) -> Result<()> {
    let r = root.load(id)?;
    let status = root.status(&r);
    if status == Status::Stopped {
        return Err(OciError::WrongState {
            id: id.into(),
            status: status.as_str(),
            verb: "kill",
            hint: "",
        });
    }
    if all {
        let cg = cgroup_of(&r)?;
        for pid in cg.procs().map_err(cgroup_err)? {
            // SAFETY: kill takes integers; a pid that is gone gives ESRCH.
            unsafe { libc::kill(pid as i32, sig) };
        }
        return Ok(());
    }
    // A created container's PID 1 waits with every signal blocked: a
    // signal whose default action ends a process ends it, as it ends
    // runc's waiting init.
    let sig = if status == Status::Created && ends_process(sig) {
        libc::SIGKILL
    } else {
        sig
    };
    if !kill_pid(r.pid, r.start_time, sig) {
        return Err(OciError::WrongState {
            id: id.into(),
            status: "stopped",
            verb: "kill",
            hint: "",
        });
    }
    Ok(())
}

/// `delete [--force] ID`: a created or stopped container goes; a running
/// one only with `force` (killed first).
pub fn delete(root: &Root, id: &str, force: bool) -> Result<()> {
    state::check_id(id)?;
    let r = match root.load(id) {
        Ok(r) => r,
        Err(OciError::NotFound(_)) if force => {
            // Whatever a failed create may have left.
            let _ = detached::remove_cgroup(id);
            return root.remove(id);
        }
        Err(e) => return Err(e),
    };
    let status = root.status(&r);
    if matches!(status, Status::Running | Status::Paused) && !force {
        return Err(OciError::WrongState {
            id: id.into(),
            status: status.as_str(),
            verb: "delete",
            hint: "; stop it first, or use delete --force",
        });
    }
    if status == Status::Paused {
        if let Ok(cg) = cgroup_of(&r) {
            let _ = cg.freeze(false);
        }
    }
    if status != Status::Stopped {
        kill_pid(r.pid, r.start_time, libc::SIGKILL);
    }
    detached::remove_cgroup(id)?;
    root.remove(id)?;
    if let Err(e) = hooks::run("poststop", &r.poststop, &state_value(&r, Status::Stopped)) {
        // As runc: a failed poststop hook is reported, the delete stands.
        eprintln!("isolate: warning: {}", error_chain(&e));
    }
    Ok(())
}

/// `pause` / `resume`: freezes or thaws the container's cgroup.
pub fn freeze(root: &Root, id: &str, frozen: bool) -> Result<()> {
    let r = root.load(id)?;
    let status = root.status(&r);
    let (want, verb) = if frozen {
        (Status::Running, "pause")
    } else {
        (Status::Paused, "resume")
    };
    if status != want {
        return Err(OciError::WrongState {
            id: id.into(),
            status: status.as_str(),
            verb,
            hint: "",
        });
    }
    cgroup_of(&r)?.freeze(frozen).map_err(cgroup_err)
}

/// `ps`: the container's host pids.
pub fn pids(root: &Root, id: &str) -> Result<Vec<u32>> {
    let r = root.load(id)?;
    let mut p = cgroup_of(&r)?.procs().map_err(cgroup_err)?;
    p.sort_unstable();
    Ok(p)
}

/// `update --resources`: new limits from an OCI `LinuxResources` JSON.
pub fn update(root: &Root, id: &str, json: &str) -> Result<()> {
    let r = root.load(id)?;
    let res: oci_spec::runtime::LinuxResources = serde_json::from_str(json).map_err(|e| {
        OciError::invalid("--resources", format!("not OCI linux.resources JSON: {e}"))
    })?;
    if res.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(OciError::unsupported(
            "--resources devices",
            "device rules cannot change after create",
        ));
    }
    let limits = config::limits(&res)?;
    cgroup_of(&r)?.update(&limits).map_err(cgroup_err)
}

/// `run`: create, start, wait (unless `detach`), delete. Returns the
/// container's exit status.
pub fn run(root: &Root, id: &str, opts: &CreateOptions, detach: bool) -> Result<i32> {
    let r = create(root, id, opts)?;
    if let Err(e) = start(root, id) {
        let _ = delete(root, id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let code = wait_forwarding(r.pid);
    let _ = delete(root, id, true);
    Ok(code)
}

/// Waits for our child `pid` (the container's PID 1), forwarding the
/// usual terminating signals to it; returns its exit code.
fn wait_forwarding(pid: u32) -> i32 {
    const FORWARD: [i32; 6] = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for these calls; pthread_sigmask
    // only reads it. Blocked here, the signals are taken by the thread.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in FORWARD {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let set_copy = set;
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: `set_copy` is a valid signal set and `sig` a valid int.
        if unsafe { libc::sigwait(&set_copy, &mut sig) } == 0 {
            // SAFETY: kill takes integers.
            unsafe { libc::kill(pid as i32, sig) };
        }
    });
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid int for the kernel to fill.
        let got = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
        if got == pid as i32 {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
        } else if got < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 125;
        }
    }
}

/// `features`: what this runtime supports, as the OCI features document.
pub fn features() -> serde_json::Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": [],
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "suid", "dev",
            "exec", "private", "rprivate", "relatime", "norelatime", "strictatime",
            "nostrictatime", "noatime", "atime", "tmpcopyup"],
        "linux": {
            "namespaces": ["pid", "mount", "ipc", "uts", "network", "cgroup"],
            "capabilities": isolate_policy_names(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP",
                    "SCMP_ACT_TRACE", "SCMP_ACT_LOG"],
                "operators": ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                    "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"],
                "archs": ["SCMP_ARCH_X86_64"],
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {
            "run.isolate.mode": "container (vm: refused until VM mode is wired to the OCI runtime)",
        },
    })
}

fn isolate_policy_names() -> Vec<String> {
    (0..64)
        .filter_map(|n| isolate_policy::caps::name(n).map(|c| format!("CAP_{c}")))
        .collect()
}

/// `spec`: the default config.json isolate writes (runc's, with no
/// terminal).
pub fn default_spec() -> serde_json::Value {
    json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "isolate",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                "/proc/sysrq-trigger"]
        }
    })
}

/// `list`: every container with its status.
pub fn list(root: &Root) -> Vec<(Record, Status)> {
    root.ids()
        .into_iter()
        .filter_map(|id| root.load(&id).ok())
        .map(|r| {
            let s = root.status(&r);
            (r, s)
        })
        .collect()
}

/// Options of `exec`.
#[derive(Debug, Default)]
pub struct ExecArgs {
    /// A process JSON file (`--process`), else the command line's.
    pub process: Option<PathBuf>,
    /// The command line after the id.
    pub args: Vec<String>,
    /// `--env K=V`, added to the container's process env.
    pub env: Vec<String>,
    /// `--cwd`.
    pub cwd: Option<String>,
    /// `--user uid[:gid]`.
    pub user: Option<String>,
    /// `--tty`.
    pub tty: bool,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--detach`.
    pub detach: bool,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
}

/// `exec`: runs another process in a running container; returns its exit
/// status (0 with `--detach`).
pub fn exec(root: &Root, id: &str, a: &ExecArgs) -> Result<i32> {
    let r = root.load(id)?;
    let status = root.status(&r);
    if status != Status::Running {
        return Err(OciError::WrongState {
            id: id.into(),
            status: status.as_str(),
            verb: "exec in",
            hint: "; only a running container takes exec",
        });
    }
    let spec = config::load(&r.bundle)?;
    let process: oci_spec::runtime::Process = match &a.process {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| OciError::io(format!("read {}", p.display()), e))?;
            serde_json::from_str(&text).map_err(|e| OciError::Config {
                path: p.clone(),
                detail: e.to_string(),
            })?
        }
        None => {
            if a.args.is_empty() {
                return Err(OciError::Usage("exec needs a command or --process".into()));
            }
            let mut p = spec.process().clone().unwrap_or_default();
            p.set_args(Some(a.args.clone()));
            p.set_terminal(Some(a.tty));
            let mut env = p.env().clone().unwrap_or_default();
            env.extend(a.env.iter().cloned());
            p.set_env(Some(env));
            if let Some(cwd) = &a.cwd {
                p.set_cwd(PathBuf::from(cwd));
            }
            if let Some(u) = &a.user {
                let (uid, gid) = u.split_once(':').unwrap_or((u.as_str(), "0"));
                let parse = |s: &str| {
                    s.parse::<u32>().map_err(|_| {
                        OciError::Usage(format!("exec --user {u}: give numeric uid[:gid]"))
                    })
                };
                let mut user = p.user().clone();
                user.set_uid(parse(uid)?);
                user.set_gid(parse(gid)?);
                user.set_additional_gids(None);
                p.set_user(user);
            }
            p
        }
    };
    let (w, extras) = config::exec_plan(&process, &spec)?;
    let terminal = process.terminal().unwrap_or(false) || a.tty;
    let console = console(terminal, a.console_socket.as_deref())?;
    let pid_file = a.pid_file.as_ref().map(|p| absolute(p));
    let mut on_pid = |pid: u32| -> isolate_core::Result<()> {
        if let Some(p) = &pid_file {
            state::write_atomic(p, pid.to_string().as_bytes(), 0o644).map_err(|e| {
                isolate_core::Error::invalid("pid-file", isolate_core::error_chain(&e))
            })?;
        }
        Ok(())
    };
    let code = detached::exec(
        r.pid,
        r.cgroup.as_deref(),
        &w,
        &extras,
        detached::ExecOptions {
            detach: a.detach,
            console_socket: console.as_ref().map(|c| c.as_raw_fd()),
            console_size: extras.console_size,
        },
        &mut on_pid,
    )?;
    Ok(code)
}
