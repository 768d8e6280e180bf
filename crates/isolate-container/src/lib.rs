//! Container mode of isolate: the workload runs as host processes in new
//! pid, mount, uts, ipc, net and cgroup namespaces, on an overlay of its
//! root filesystem (writes vanish at exit), inside a cgroup with its
//! limits, with Docker's default capabilities, `no_new_privs` and
//! Docker's default seccomp profile (or `Workload::seccomp`'s).
//!
//! ```no_run
//! use isolate_container::ContainerIsolator;
//! use isolate_core::{Isolator, Workload};
//!
//! let mut w = Workload::new("/bin/sh");
//! w.args(["-c", "hostname; echo $$"]).memory(64 << 20).pids(32);
//! w.validate()?;
//! let outcome = ContainerIsolator::new().run(&w)?;
//! assert!(outcome.success());
//! # Ok::<(), isolate_core::Error>(())
//! ```
//!
//! # Process tree
//!
//! isolate → shim (PID 1 in the container) → the application (PID 2).
//! The shim reaps orphans and forwards every signal it gets to the
//! application, so `SIGTERM` ends a program that has no handler for it
//! (a program that is itself PID 1 would ignore it), and it mirrors the
//! application's exit status. When the application ends the shim exits and
//! the kernel kills whatever else is left in the container. The shim dies
//! with the isolate process (`PR_SET_PDEATHSIG`, tied to the *thread* that
//! called `spawn`: keep that thread alive while the container runs).
//!
//! # Layout on the host
//!
//! `ISOLATE_STATE/containers/<id>` is a small marker file (the isolate
//! process's pid and start time) while the container runs; the cgroup is
//! `isolate/ct-<id>`. The overlay's upper and work dirs live on a tmpfs that
//! the container mounts in its own mount namespace: nothing of them ever
//! appears on the host, and they vanish with the container (writes to the
//! root are charged to the container's memory limit). The marker and the
//! cgroup are removed when the container ends, and by [`cleanup_stale`]
//! after an isolate that was killed. A named volume's loop device detaches
//! itself when the container's mount namespace goes away.
//!
//! # Rootless mode
//!
//! Run by a user other than root, isolate adds a user namespace that maps
//! that user (and its group) to root inside; the rest is the same, except
//! that there is no cgroup (resource limits, named volumes, named workloads
//! and other users inside are refused up front), device nodes are the
//! host's bound in, and files of the rootfs owned by anyone else than the
//! caller are read-only inside. Markers go to `$XDG_RUNTIME_DIR/isolate`
//! (or `/tmp/isolate-<uid>`) unless `ISOLATE_STATE` is set.
//!
//! # Performance
//!
//! Everything is prepared before the one `clone3`; the child makes system
//! calls only. On cgroup v2 the shim starts inside its cgroup
//! (`CLONE_INTO_CGROUP`). On v1 the parent makes the cgroup while the shim
//! builds its namespaces and root (on another CPU), then passes it the
//! cgroup's `tasks` files over a unix socket; the shim moves itself in by
//! writing `0` to them (`isolate_cgroups::Placement::SelfJoin`), which
//! avoids the RCU grace period that moving another process costs, before
//! it starts the application.
//!
//! The application starts `vfork`-style (no copy of the shim's page
//! tables), and its seccomp filter (default deny, Docker's allowlist) is
//! one small program that finds the call by binary search over ranges of
//! call numbers (the kernel's cost to install a filter grows with its
//! length; about 125 instructions). At the end, a cgroup whose processes have all gone is
//! removed with one `rmdir` per directory.
//!
//! What a run of `/bin/true` still costs, by profile (2 vCPUs): creating
//! the network namespace (~0.7 ms of kernel time, mostly per-namespace
//! sysctl tables and the loopback device), the cgroup (creating, joining,
//! reading and removing six v1 hierarchies, ~1 ms), the mounts of the root
//! and their teardown at exit (~0.6 ms), and isolate's own start
//! (dynamic linking, ~0.4 ms).

mod child;
pub mod detached;
mod error;
mod exec;
mod mounts;
mod relay;
mod rundir;
mod running;
mod spawn;
mod sys;
mod volumes;

use isolate_core::{Isolator, Mode, Result, Running, Workload};

pub use error::ContainerError;
pub use exec::ExecSpec;
pub use isolate_policy::caps::DEFAULT as DEFAULT_CAPABILITIES;
pub use running::Container;

/// The container [`Isolator`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ContainerIsolator {
    _private: (),
}

impl ContainerIsolator {
    /// The container backend.
    pub fn new() -> Self {
        ContainerIsolator::default()
    }

    /// Runs another process in the running named container `name`, with
    /// the hardening of its application (see [`ExecRequest`]).
    pub fn exec(&self, name: &str, req: &isolate_core::ExecRequest) -> Result<Container> {
        exec::exec(name, req)
    }

    /// Like [`Isolator::spawn`], returning the concrete handle.
    pub fn spawn_container(&self, workload: &Workload) -> Result<Container> {
        spawn::spawn(workload)
    }
}

fn need(cond: bool, reason: &str) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(isolate_core::Error::Unavailable {
            backend: "container",
            reason: reason.to_string(),
        })
    }
}

impl Isolator for ContainerIsolator {
    fn mode(&self) -> Mode {
        Mode::Container
    }

    fn check_host(&self) -> Result<()> {
        if isolate_core::sys::rootless() {
            let max: u64 = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            need(
                max > 0,
                "rootless container mode needs user namespaces (/proc/sys/user/max_user_namespaces is 0); run isolate as root",
            )?;
            return Ok(());
        }
        for ns in ["pid", "mnt", "uts", "ipc", "net", "cgroup"] {
            need(
                std::path::Path::new(&format!("/proc/self/ns/{ns}")).exists(),
                &format!(
                    "the kernel has no {ns} namespaces (CONFIG_{}_NS)",
                    ns.to_uppercase()
                ),
            )?;
        }
        let fs = sys::read_proc("/proc/filesystems").unwrap_or_default();
        need(
            fs.contains("overlay"),
            "the kernel has no overlayfs; load it with `modprobe overlay`",
        )?;
        isolate_cgroups::layout().map_err(|e| isolate_core::Error::Unavailable {
            backend: "container",
            reason: format!("no usable cgroups: {e}"),
        })?;
        Ok(())
    }

    fn spawn(&self, workload: &Workload) -> Result<Box<dyn Running>> {
        Ok(Box::new(spawn::spawn(workload)?))
    }
}

/// Removes what a killed isolate left behind: the cgroups
/// (`isolate/ct-<id>`) of runs whose marker is no longer locked by a live
/// isolate but still says "in progress", and the records of named
/// workloads whose process is gone. Called at the start of every spawn; it
/// lists two directories and tries one lock per marker. (The
/// container's mounts and processes need no cleanup: they die with its
/// namespaces, and the container's PID 1 dies with isolate.)
pub fn cleanup_stale() {
    rundir::cleanup_crashed();
    // Leases, veths, published ports of killed runs; the table and the
    // bridge once no run uses them.
    isolate_net::cleanup_stale();
    // Records of named workloads whose isolate was killed: listing removes
    // every record whose process is gone.
    let _ = isolate_core::state::list();
}
