//! One cgroup type over cgroup v1 (legacy and hybrid hosts) and cgroup v2
//! (unified hosts), used by both isolate backends: the container backend
//! puts the workload's processes in it, the VM backend the VMM process.
//!
//! isolate's cgroups live at `isolate/<name>` below the cgroup root: in the
//! cgroup2 root on unified hosts, in each of the memory, cpu, cpuacct,
//! pids, blkio, freezer and devices hierarchies on v1 hosts. [`layout`] says which
//! kind of host this is.
//!
//! ```no_run
//! use isolate_cgroups::Cgroup;
//! use isolate_core::Limits;
//!
//! // Needs root (or a delegated cgroup tree).
//! let cg = Cgroup::create("demo")?;
//! cg.apply(&Limits { memory: Some(64 << 20), cpus: Some(0.5), pids: Some(32), io_weight: None })?;
//!
//! let mut child = std::process::Command::new("/bin/sleep").arg("10").spawn()?;
//! cg.add_process(child.id())?;
//! let stats = cg.stats()?;
//! println!("{} uses {:?} bytes, limit {:?}", cg.rel_path(), stats.memory_current, stats.memory_limit);
//!
//! // Raise the memory limit while it runs; other limits stay.
//! cg.update(&Limits { memory: Some(128 << 20), ..Limits::default() })?;
//!
//! cg.remove()?; // kills what is left, then removes the directories
//! child.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A process may put itself in a cgroup (a VMM limiting its own CPU time):
//! the handle whose [`Cgroup::add_process`] moved it in moves it back to
//! where it was before [`Cgroup::kill_all`] or [`Cgroup::remove`] kill
//! anything, and other handles refuse ([`CgroupError::SelfInside`]).
//!
//! A [`Cgroup`] is never removed by `Drop`: handles made with
//! [`Cgroup::open`] (e.g. by `isolate stats` in another process) must not
//! delete the workload's cgroup. Call [`Cgroup::remove`], and
//! [`Family::remove_stale`] to clean up after an isolate that was killed.
//!
//! A backend owns its workloads' cgroups through a [`Family`]
//! (`isolate/<prefix><id>`): it creates each with a [`Spec`] of limits and
//! device rules, places the first process as [`Cgroup::placement`] says,
//! removes it, and sweeps those whose owner is gone; it never handles a
//! cgroup path itself.

pub mod devices;
mod error;
mod family;
mod fs;
mod layout;
mod v1;
mod v2;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use isolate_core::sys::lock;
use isolate_core::{Limits, Stats};

pub use error::CgroupError;
pub use family::{Family, Spec};
pub use layout::{layout, root_is_unified, Layout};

use layout::Hierarchies;

/// The directory, below each cgroup root, that holds isolate's cgroups.
pub const PARENT: &str = "isolate";

/// CFS bandwidth period: CPU limits are a quota per 100 ms.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Smallest CFS quota the kernel accepts (1 ms).
const MIN_QUOTA_US: u64 = 1_000;

/// How long [`Cgroup::remove`] waits for killed processes to leave.
const REMOVE_WAIT: Duration = Duration::from_secs(1);

/// How long [`Cgroup::remove_stale`] waits for each leftover to empty.
const STALE_WAIT: Duration = Duration::from_millis(200);

/// How a new process gets into a cgroup ([`Cgroup::placement`]).
#[derive(Debug)]
pub enum Placement {
    /// cgroup v2: give this directory fd to `clone3` with
    /// `CLONE_INTO_CGROUP` (`isolate_core::sys::CloneArgs::cgroup`); the
    /// child starts inside.
    CloneInto(OwnedFd),
    /// cgroup v1: the child writes `0` to each of these `tasks` files (open
    /// for writing) before it runs the workload, which moves it in.
    SelfJoin(Vec<OwnedFd>),
    /// Move the process in by pid with [`Cgroup::add_process`].
    AddPid,
}

/// A cgroup of isolate: `isolate/<name>` in each hierarchy it uses.
///
/// Not removed on drop: see [`Cgroup::remove`].
#[derive(Debug)]
pub struct Cgroup {
    rel: String,
    layout: Layout,
    imp: Imp,
    /// Where this process was before [`Cgroup::add_process`] moved it in
    /// (the `cgroup.procs` files to go back to), for [`Cgroup::leave`].
    origin: Mutex<Option<Vec<PathBuf>>>,
    /// Largest memory use seen by [`Cgroup::stats`], for kernels that
    /// do not record the peak themselves.
    peak_seen: AtomicU64,
}

#[derive(Debug)]
enum Imp {
    V1(v1::V1),
    V2(v2::V2),
}

impl Cgroup {
    /// Creates `isolate/<name>`.
    ///
    /// On cgroup v2 it is created below the cgroup2 root (never below the
    /// caller's own cgroup, which may hold processes), enabling the memory,
    /// pids, cpu and io controllers that the root offers in
    /// `cgroup.subtree_control` on the way down. On v1 it is created in the
    /// memory, cpu, cpuacct, pids, blkio and freezer hierarchies that are
    /// mounted. An existing cgroup of that name is an error
    /// ([`CgroupError::Exists`]).
    pub fn create(name: &str) -> Result<Cgroup, CgroupError> {
        check_name(name)?;
        let rel = format!("{PARENT}/{name}");
        let h = Hierarchies::probe()?;
        let imp = match &h.v2_root {
            Some(root) => Imp::V2(v2::V2::create(root, &rel)?),
            None => Imp::V1(v1::V1::create(&h, &rel)?),
        };
        Ok(Cgroup::new(rel, h.layout, imp))
    }

    /// Opens an existing cgroup by its path relative to the cgroup root(s)
    /// (as recorded in `isolate_core::state::Record::cgroup`), e.g. for
    /// `isolate update/stats/kill` from another process.
    pub fn open(rel_path: &str) -> Result<Cgroup, CgroupError> {
        check_rel_path(rel_path)?;
        let h = Hierarchies::probe()?;
        Cgroup::open_in(&h, rel_path)
    }

    fn open_in(h: &Hierarchies, rel_path: &str) -> Result<Cgroup, CgroupError> {
        let imp = match &h.v2_root {
            Some(root) => Imp::V2(v2::V2::open(root, rel_path)?),
            None => Imp::V1(v1::V1::open(h, rel_path)?),
        };
        Ok(Cgroup::new(rel_path.to_owned(), h.layout, imp))
    }

    fn new(rel: String, layout: Layout, imp: Imp) -> Cgroup {
        Cgroup {
            rel,
            layout,
            imp,
            origin: Mutex::new(None),
            peak_seen: AtomicU64::new(0),
        }
    }

    /// On cgroup v1, this cgroup's `tasks` file in each hierarchy, open for
    /// writing, with the directory it is in; empty on v2.
    ///
    /// A process that writes `0` to each moves itself in. Moving oneself
    /// skips the kernel's global threadgroup lock, whose first writer after
    /// a quiet spell waits for an RCU grace period (about 15 ms), which
    /// [`Cgroup::add_process`] (moving another process by pid) pays. The
    /// files can be handed to a child before it runs anything.
    pub fn self_join_files(&self) -> Result<Vec<(OwnedFd, PathBuf)>, CgroupError> {
        match &self.imp {
            Imp::V1(v) => v.tasks_files(),
            Imp::V2(_) => Ok(Vec::new()),
        }
    }

    /// How a process started next gets into this cgroup: on v2 a directory
    /// fd for `clone3(CLONE_INTO_CGROUP)`, on v1 the `tasks` files the child
    /// writes `0` to (see [`Cgroup::self_join_files`]), or, where neither
    /// is available, by pid.
    pub fn placement(&self) -> Result<Placement, CgroupError> {
        Ok(match &self.imp {
            Imp::V2(c) => c.procs_fd().map_or(Placement::AddPid, Placement::CloneInto),
            Imp::V1(c) => {
                let files: Vec<OwnedFd> = c.tasks_files()?.into_iter().map(|(f, _)| f).collect();
                if files.is_empty() {
                    Placement::AddPid
                } else {
                    Placement::SelfJoin(files)
                }
            }
        })
    }

    /// The path relative to the cgroup root(s), e.g. `isolate/<name>`.
    pub fn rel_path(&self) -> &str {
        &self.rel
    }

    /// The layout of the host this cgroup lives on.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Sets every limit that is `Some` (a new cgroup is unlimited):
    /// memory with swap off (v2 `memory.max` + `memory.swap.max=0`; v1
    /// `memory.limit_in_bytes`, then `memory.memsw.limit_in_bytes` to the
    /// same value when swap accounting exists), CPUs as a CFS quota per
    /// [`CPU_PERIOD_US`], pids, and I/O weight.
    ///
    /// The I/O weight is set last: if the host cannot enforce it the error is
    /// [`CgroupError::Unsupported`] (see [`CgroupError::is_unsupported`]) and
    /// every other limit is in force.
    pub fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        self.set(limits, false)
    }

    /// Changes the limits that are `Some` while the workload runs; the others
    /// stay as they are. Lowering memory below what the workload uses (and
    /// the kernel cannot reclaim) fails with [`CgroupError::MemoryBelowUsage`]
    /// and leaves the memory limit as it was.
    pub fn update(&self, limits: &Limits) -> Result<(), CgroupError> {
        self.set(limits, true)
    }

    fn set(&self, limits: &Limits, running: bool) -> Result<(), CgroupError> {
        if let Some(bytes) = limits.memory {
            match &self.imp {
                Imp::V1(c) => c.set_memory(bytes)?,
                Imp::V2(c) => c.set_memory(bytes, running)?,
            }
        }
        if let Some(cpus) = limits.cpus {
            let quota = cpu_quota_us(cpus).ok_or_else(|| CgroupError::InvalidLimit {
                limit: "cpus",
                value: cpus.to_string(),
                reason: "give a positive number of CPUs, e.g. 1.5",
            })?;
            match &self.imp {
                Imp::V1(c) => c.set_cpus(quota)?,
                Imp::V2(c) => c.set_cpus(quota)?,
            }
        }
        if let Some(pids) = limits.pids {
            match &self.imp {
                Imp::V1(c) => c.set_pids(pids)?,
                Imp::V2(c) => c.set_pids(pids)?,
            }
        }
        if let Some(weight) = limits.io_weight {
            match &self.imp {
                Imp::V1(c) => c.set_io_weight(weight)?,
                Imp::V2(c) => c.set_io_weight(weight)?,
            }
        }
        Ok(())
    }

    /// Lets the cgroup's processes open only the devices `rules` allow
    /// ([`devices::DEFAULT_RULES`] is Docker's default), whatever device
    /// nodes they can make or see: the v1 `devices` controller, or on v2 a
    /// device program attached to the cgroup. Call it before any process
    /// joins.
    pub fn restrict_devices(&self, rules: &[devices::DeviceRule]) -> Result<(), CgroupError> {
        match &self.imp {
            Imp::V1(c) => match c.dir("devices") {
                Some(dir) => devices::apply_v1(dir, rules),
                None => Err(CgroupError::ControllerMissing {
                    controller: "devices",
                    rel_path: self.rel.clone(),
                    hint: "no cgroup v1 hierarchy has it; mount one: `mkdir -p \
                           /sys/fs/cgroup/devices && mount -t cgroup -o devices cgroup \
                           /sys/fs/cgroup/devices`"
                        .into(),
                }),
            },
            Imp::V2(c) => devices::apply_v2(c.dir(), rules),
        }
    }

    /// Moves process `pid` (all its threads) into this cgroup, in every
    /// hierarchy.
    ///
    /// `pid` may be the calling process (a VMM limiting itself): this handle
    /// then remembers where it was, and [`leave`](Cgroup::leave),
    /// [`kill_all`](Cgroup::kill_all) and [`remove`](Cgroup::remove) move it
    /// back there before killing anything.
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        if pid == std::process::id() {
            let origin = match &self.imp {
                Imp::V1(c) => c.own_procs_files()?,
                Imp::V2(c) => c.own_procs_files()?,
            };
            let mut slot = lock(&self.origin);
            slot.get_or_insert(origin);
        }
        match &self.imp {
            Imp::V1(c) => c.add_process(pid),
            Imp::V2(c) => c.add_process(pid),
        }
    }

    /// Moves the calling process back to the cgroups it was in before this
    /// handle's [`add_process`](Cgroup::add_process) moved it in. Nothing
    /// to do if it was not moved in by this handle and is not inside;
    /// [`CgroupError::SelfInside`] if it is inside and this handle does not
    /// know where it came from.
    pub fn leave(&self) -> Result<(), CgroupError> {
        let me = std::process::id();
        let origin = lock(&self.origin).take();
        match origin {
            Some(files) => files.iter().try_for_each(|f| fs::write(f, &me.to_string())),
            None if self.procs()?.contains(&me) => Err(CgroupError::SelfInside {
                pid: me,
                rel_path: self.rel.clone(),
            }),
            None => Ok(()),
        }
    }

    /// On cgroup v2, a directory fd of this cgroup for
    /// `clone3(CLONE_INTO_CGROUP)`, so that a child starts inside it. `None`
    /// on v1 (use [`add_process`](Cgroup::add_process)) or if it cannot be
    /// opened.
    pub fn procs_fd(&self) -> Option<OwnedFd> {
        match &self.imp {
            Imp::V1(_) => None,
            Imp::V2(c) => c.procs_fd(),
        }
    }

    /// The processes in this cgroup and its descendants.
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        match &self.imp {
            Imp::V1(c) => c.procs(),
            Imp::V2(c) => c.procs(),
        }
    }

    /// Resource use and the limits in force. Fields whose controller is
    /// missing are `None`; a missing `memory.peak` (kernels before 5.19) is
    /// replaced by the largest use this handle has sampled.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        match &self.imp {
            Imp::V1(c) => c.stats(&self.peak_seen),
            Imp::V2(c) => c.stats(&self.peak_seen),
        }
    }

    /// Whether the kernel's OOM killer has killed a process of this cgroup
    /// (v2 `memory.events` `oom_kill`; v1 `memory.oom_control` `oom_kill`,
    /// or `under_oom` before Linux 4.13).
    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        match &self.imp {
            Imp::V1(c) => c.oom_killed(),
            Imp::V2(c) => c.oom_killed(),
        }
    }

    /// Sends SIGKILL to every process of this cgroup and its descendants:
    /// v2 `cgroup.kill` where the kernel has it (5.14+), else (and on v1)
    /// freeze, signal each process, thaw. Returns once the signals are sent;
    /// [`remove`](Cgroup::remove) waits for the processes to go.
    ///
    /// If the calling process is inside, it first [leaves](Cgroup::leave)
    /// (or, when this handle did not move it in, the call fails with
    /// [`CgroupError::SelfInside`] and kills nothing).
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if self.procs()?.contains(&std::process::id()) {
            self.leave()?;
        }
        match &self.imp {
            Imp::V1(c) => c.kill_all(),
            Imp::V2(c) => c.kill_all(),
        }
    }

    /// Freezes (`true`) or thaws (`false`) every process of this cgroup
    /// (v1 `freezer.state`, v2 `cgroup.freeze`); returns once the kernel
    /// says it is done (a freeze waits at most about a second).
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        match &self.imp {
            Imp::V1(c) => c.freeze(frozen),
            Imp::V2(c) => c.freeze(frozen),
        }
    }

    /// Whether this cgroup is frozen.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match &self.imp {
            Imp::V1(c) => c.is_frozen(),
            Imp::V2(c) => c.is_frozen(),
        }
    }

    /// Whether no process is left in this cgroup (or it is gone).
    pub fn is_empty(&self) -> Result<bool, CgroupError> {
        match &self.imp {
            Imp::V1(c) => c.is_empty(),
            Imp::V2(c) => c.is_empty(),
        }
    }

    /// Kills every process left, waits (at most about 1 s) until they are
    /// gone, and removes the cgroup in every hierarchy. A cgroup that is
    /// already gone is not an error.
    pub fn remove(self) -> Result<(), CgroupError> {
        self.remove_within(REMOVE_WAIT)
    }

    fn remove_within(self, wait: Duration) -> Result<(), CgroupError> {
        if self.rmdir_if_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let emptied = fs::poll_until(wait, || {
            if self.is_empty()? {
                return Ok(true);
            }
            // Kill again on every round: a process may have forked between
            // the listing and the signal when there is no freezer.
            self.kill_all()?;
            self.is_empty()
        })?;
        if !emptied {
            return Err(CgroupError::Busy {
                rel_path: self.rel.clone(),
                pids: self.procs().unwrap_or_default(),
                waited: start.elapsed(),
            });
        }
        match &self.imp {
            Imp::V1(c) => c.rmdir(),
            Imp::V2(c) => c.rmdir(),
        }
    }

    /// Removes the directories of a cgroup that holds no process and no
    /// child cgroup with one `rmdir` each; `false` if one could not go
    /// (processes still dying, a child cgroup, already gone), which the
    /// listing, killing and waiting of [`Cgroup::remove`] then handle. The
    /// common case, a workload whose processes have all ended, needs
    /// nothing more.
    fn rmdir_if_empty(&self) -> bool {
        let dirs = match &self.imp {
            Imp::V1(c) => c.unique_dirs(),
            Imp::V2(c) => vec![c.dir()],
        };
        !dirs.is_empty() && dirs.iter().all(|d| std::fs::remove_dir(d).is_ok())
    }

    /// Removes the `isolate/*` cgroups for which `live(name)` is false
    /// (leftovers of an isolate that was killed), killing what runs in them.
    /// Returns how many it removed. It waits at most about 200 ms per
    /// leftover ([`CgroupError::Busy`] if its processes are still dying: a
    /// later call removes it); on errors it still tries the others, then
    /// returns the first error.
    pub fn remove_stale(live: &dyn Fn(&str) -> bool) -> Result<usize, CgroupError> {
        Family::new("").remove_stale(|name| (!live(name)).then_some(()), |_, ()| {})
    }
}

/// CFS quota for `cpus` CPUs per [`CPU_PERIOD_US`]; `None` if not a
/// positive finite number.
fn cpu_quota_us(cpus: f64) -> Option<u64> {
    if !cpus.is_finite() || cpus <= 0.0 {
        return None;
    }
    Some(((cpus * CPU_PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US))
}

/// Maps a blkio weight (10..=1000) to the cgroup v2 `io.weight` range
/// (1..=10000), linearly, as runc and crun do.
fn io_weight_v2(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// A workload name usable as one cgroup directory.
fn check_name(name: &str) -> Result<(), CgroupError> {
    let bad = |reason| {
        Err(CgroupError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 200 {
        return bad("it is longer than 200 bytes");
    }
    if name.starts_with('.') {
        return bad("it starts with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return bad("use only letters, digits, '-', '_' and '.'");
    }
    if name.starts_with("cgroup.") || V1_FILE_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return bad("it looks like a cgroup control file");
    }
    Ok(())
}

/// Names of cgroup control files start with these; a directory cannot.
const V1_FILE_PREFIXES: [&str; 8] = [
    "memory.",
    "cpu.",
    "cpuacct.",
    "pids.",
    "blkio.",
    "freezer.",
    "io.",
    "notify_on_release",
];

/// A relative cgroup path: non-empty components, no `.` or `..`.
fn check_rel_path(rel: &str) -> Result<(), CgroupError> {
    let ok = !rel.is_empty()
        && !rel.starts_with('/')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName {
            name: rel.to_owned(),
            reason: "give a path relative to the cgroup root, like isolate/NAME",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Cgroup>();
        shared::<CgroupError>();
    }

    #[test]
    fn cpu_quota_is_cpus_times_period() {
        assert_eq!(cpu_quota_us(1.5), Some(150_000));
        assert_eq!(cpu_quota_us(0.25), Some(25_000));
        assert_eq!(cpu_quota_us(0.001), Some(MIN_QUOTA_US));
        assert_eq!(cpu_quota_us(0.0), None);
        assert_eq!(cpu_quota_us(f64::NAN), None);
    }

    #[test]
    fn io_weight_maps_blkio_range_onto_v2_range() {
        assert_eq!(io_weight_v2(10), 1);
        assert_eq!(io_weight_v2(1000), 10_000);
        assert_eq!(io_weight_v2(500), 1 + 490 * 9999 / 990);
    }

    #[test]
    fn rejects_names_that_are_not_one_directory() {
        for bad in [
            "",
            "a/b",
            "..",
            ".hidden",
            "a b",
            "cgroup.procs",
            "memory.max",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["web-1", "job_2.3", "x"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn rejects_paths_that_escape_the_root() {
        for bad in ["", "/isolate/x", "isolate/../x", "isolate//x", "isolate/."] {
            assert!(check_rel_path(bad).is_err(), "{bad:?} accepted");
        }
        check_rel_path("isolate/web-1").unwrap();
    }
}
