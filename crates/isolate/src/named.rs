//! Named workloads, steered from any process: list, stats, update, kill.
//! A named workload leaves a [`state::Record`] under `ISOLATE_STATE`; its
//! limits live in one cgroup ([`isolate_cgroups::Cgroup`]) whichever the mode.

use isolate_cgroups::Cgroup;
use isolate_core::{state, Error, Limits, Mode, Result, Stats};

fn cgroup_of(record: &state::Record) -> Result<Cgroup> {
    Cgroup::open(&record.cgroup).map_err(|e| Error::Backend {
        backend: record.mode.as_str(),
        source: Box::new(e),
    })
}

/// The named workloads that run now (stale records are removed).
pub fn list() -> Result<Vec<state::Record>> {
    state::list()
}

/// Resource use of the workload `name`.
pub fn stats(name: &str) -> Result<Stats> {
    let record = state::get_live(name)?;
    cgroup_of(&record)?.stats().map_err(|e| Error::Backend {
        backend: record.mode.as_str(),
        source: Box::new(e),
    })
}

/// Changes the limits of the running workload `name` (fields left `None`
/// stay). In VM mode only the CPU quota can change: memory is the guest's
/// RAM (a balloon device would be needed) and processes live in the guest.
pub fn update(name: &str, limits: &Limits) -> Result<()> {
    let record = state::get_live(name)?;
    limits.validate()?;
    if record.mode == Mode::Vm && (limits.memory.is_some() || limits.pids.is_some()) {
        return Err(Error::Unsupported(
            "a running VM can change only --cpus: its memory is the guest's RAM (that would need a balloon device) and its processes live inside the guest".into(),
        ));
    }
    cgroup_of(&record)?
        .update(limits)
        .map_err(|e| Error::Backend {
            backend: record.mode.as_str(),
            source: Box::new(e),
        })
}

/// Sends `signo` to the workload `name` (its container init, which
/// forwards it, or its VMM, which forwards it to the guest).
pub fn kill(name: &str, signo: i32) -> Result<()> {
    let record = state::get_live(name)?;
    // SAFETY: kill(2) takes plain integers; the pid was checked to be the
    // recorded process (same start time) just above.
    let rc = unsafe { libc::kill(record.pid as libc::pid_t, signo) };
    if rc != 0 {
        return Err(Error::io(
            "cannot signal the process of",
            format!("workload {name} (pid {})", record.pid),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Runs another process in the running named workload `name` (`isolate
/// exec`): container mode joins its namespaces and cgroup with the same
/// hardening as its application. VM mode is refused for now.
pub fn exec(name: &str, req: &isolate_core::ExecRequest) -> Result<Box<dyn isolate_core::Running>> {
    let record = state::get_live(name)?;
    match record.mode {
        Mode::Vm => Err(Error::Unsupported(format!(
            "{name} is a VM: exec into a VM is not available yet (the guest init would need a \
             control channel that starts processes with their own streams, e.g. over vsock); \
             run the command as part of the workload instead"
        ))),
        #[cfg(feature = "container")]
        Mode::Container => Ok(Box::new(
            isolate_container::ContainerIsolator::new().exec(name, req)?,
        )),
        #[cfg(not(feature = "container"))]
        Mode::Container => {
            let _ = req;
            Err(Error::Unsupported(
                "this isolate was built without container mode".into(),
            ))
        }
    }
}
