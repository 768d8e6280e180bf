//! cgroup v1 (legacy and hybrid hosts): one directory per controller
//! hierarchy (memory, cpu, cpuacct, pids, blkio, freezer).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use isolate_core::Stats;

use crate::error::CgroupError;
use crate::fs;
use crate::layout::{Hierarchies, V1_CONTROLLERS};
use crate::CPU_PERIOD_US;

/// v1 reports "no limit" as the largest page-aligned `i64`; anything at
/// or above this is unlimited.
const UNLIMITED: u64 = 1 << 62;

/// How long to wait for the freezer before killing anyway.
const FREEZE_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct V1 {
    rel: String,
    /// Controller → this cgroup's directory in its hierarchy. Co-mounted
    /// controllers (`cpu,cpuacct`) share one directory.
    dirs: Vec<(&'static str, PathBuf)>,
}

impl V1 {
    /// Creates `rel` in every mounted hierarchy of [`V1_CONTROLLERS`]; on
    /// error, removes what it created.
    pub fn create(h: &Hierarchies, rel: &str) -> Result<Self, CgroupError> {
        let cg = V1 {
            rel: rel.to_owned(),
            dirs: V1_CONTROLLERS
                .iter()
                .filter_map(|c| Some((*c, h.v1_mount(c)?.join(rel))))
                .collect(),
        };
        if cg.dirs.is_empty() {
            return Err(CgroupError::NoHierarchy {
                reason: "no cgroup v1 hierarchy of memory, cpu, pids, blkio or freezer is mounted"
                    .into(),
            });
        }
        let mut made: Vec<&Path> = Vec::new();
        let result = cg.unique_dirs().into_iter().try_for_each(|dir| {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|e| CgroupError::mkdir(parent, e))?;
            }
            if !fs::mkdir(dir)? {
                return Err(CgroupError::Exists {
                    path: dir.to_owned(),
                });
            }
            made.push(dir);
            Ok(())
        });
        if let Err(e) = result {
            for dir in made {
                let _ = std::fs::remove_dir(dir);
            }
            return Err(e);
        }
        Ok(cg)
    }

    /// Opens `rel` in the hierarchies where it exists.
    pub fn open(h: &Hierarchies, rel: &str) -> Result<Self, CgroupError> {
        let dirs: Vec<_> = V1_CONTROLLERS
            .iter()
            .filter_map(|c| Some((*c, h.v1_mount(c)?.join(rel))))
            .filter(|(_, d)| d.is_dir())
            .collect();
        if dirs.is_empty() {
            return Err(CgroupError::NotFound {
                rel_path: rel.to_owned(),
            });
        }
        Ok(V1 {
            rel: rel.to_owned(),
            dirs,
        })
    }

    /// Each directory once, in creation order.
    pub fn unique_dirs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for (_, d) in &self.dirs {
            if !out.contains(&d.as_path()) {
                out.push(d);
            }
        }
        out
    }

    /// The `tasks` file of each directory, open for writing (see
    /// `Cgroup::self_join_files`).
    pub fn tasks_files(&self) -> Result<Vec<(std::os::fd::OwnedFd, PathBuf)>, CgroupError> {
        self.unique_dirs()
            .into_iter()
            .map(|dir| {
                let tasks = dir.join("tasks");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&tasks)
                    .map(|f| (std::os::fd::OwnedFd::from(f), dir.to_path_buf()))
                    .map_err(|e| CgroupError::write(&tasks, "0", e))
            })
            .collect()
    }

    /// This cgroup's directory in the hierarchy of `controller`.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// `file` in the hierarchy of `controller`, or ControllerMissing.
    fn need(&self, controller: &'static str, file: &str) -> Result<PathBuf, CgroupError> {
        match self.dir(controller).map(|d| d.join(file)) {
            Some(p) if p.exists() => Ok(p),
            Some(p) => Err(CgroupError::ControllerMissing {
                controller,
                rel_path: self.rel.clone(),
                hint: format!("{} does not exist (kernel built without it?)", p.display()),
            }),
            None => Err(CgroupError::ControllerMissing {
                controller,
                rel_path: self.rel.clone(),
                hint: format!(
                    "no cgroup v1 hierarchy has it; mount one: `mkdir -p /sys/fs/cgroup/{controller} \
                     && mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}`"
                ),
            }),
        }
    }

    pub fn set_memory(&self, bytes: u64) -> Result<(), CgroupError> {
        let limit = self.need("memory", "memory.limit_in_bytes")?;
        let memsw = limit.with_file_name("memory.memsw.limit_in_bytes");
        let value = bytes.to_string();
        if !memsw.exists() {
            // No swap accounting (swapaccount=0, or no swap configured).
            return self.write_memory(&limit, &value, bytes);
        }
        // memory.limit_in_bytes <= memory.memsw.limit_in_bytes at all times:
        // when raising, move memsw first; when lowering, the limit first.
        let memsw_now = fs::read_u64(&memsw)?;
        if bytes > memsw_now {
            self.write_memory(&memsw, &value, bytes)?;
            self.write_memory(&limit, &value, bytes)
        } else {
            self.write_memory(&limit, &value, bytes)?;
            self.write_memory(&memsw, &value, bytes)
        }
    }

    /// Writes a memory limit; EBUSY (usage above it that reclaim could not
    /// free) becomes [`CgroupError::MemoryBelowUsage`].
    fn write_memory(&self, file: &Path, value: &str, bytes: u64) -> Result<(), CgroupError> {
        match fs::write(file, value) {
            Err(CgroupError::Write { source, .. })
                if source.raw_os_error() == Some(libc::EBUSY) =>
            {
                let usage = file.with_file_name("memory.usage_in_bytes");
                Err(CgroupError::MemoryBelowUsage {
                    rel_path: self.rel.clone(),
                    requested: bytes,
                    usage: fs::read_u64(&usage).unwrap_or(0),
                })
            }
            other => other,
        }
    }

    pub fn set_cpus(&self, quota_us: u64) -> Result<(), CgroupError> {
        let quota = self.need("cpu", "cpu.cfs_quota_us")?;
        let period = quota.with_file_name("cpu.cfs_period_us");
        fs::write(&period, &CPU_PERIOD_US.to_string())?;
        fs::write(&quota, &quota_us.to_string())
    }

    pub fn set_pids(&self, pids: u64) -> Result<(), CgroupError> {
        fs::write(&self.need("pids", "pids.max")?, &pids.to_string())
    }

    pub fn set_io_weight(&self, weight: u16) -> Result<(), CgroupError> {
        // Both have the range of the API (blkio.weight 10..1000 for CFQ,
        // blkio.bfq.weight 1..1000 for BFQ): no mapping.
        let Some(dir) = self.dir("blkio") else {
            return Err(CgroupError::Unsupported {
                what: "io weight",
                reason: "no cgroup v1 blkio hierarchy is mounted".into(),
            });
        };
        for file in ["blkio.weight", "blkio.bfq.weight"] {
            let path = dir.join(file);
            if path.exists() {
                return fs::write(&path, &weight.to_string());
            }
        }
        Err(CgroupError::Unsupported {
            what: "io weight",
            reason: format!(
                "{} has neither blkio.weight nor blkio.bfq.weight: use the BFQ I/O scheduler \
                 for the disk (`modprobe bfq; echo bfq > /sys/block/DISK/queue/scheduler`)",
                dir.display()
            ),
        })
    }

    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        self.unique_dirs()
            .into_iter()
            .try_for_each(|d| fs::write(&d.join("cgroup.procs"), &pid.to_string()))
    }

    /// The `cgroup.procs` files of the cgroups this process is in now, in
    /// the hierarchies this cgroup uses.
    pub fn own_procs_files(&self) -> Result<Vec<PathBuf>, CgroupError> {
        let depth = self.rel.split('/').count();
        let mut out = Vec::new();
        for d in self.unique_dirs() {
            let Some(controller) = self.dirs.iter().find(|(_, x)| x == d).map(|(c, _)| *c) else {
                continue;
            };
            let Some(mount) = d.ancestors().nth(depth) else {
                continue;
            };
            if let Some(path) = fs::own_cgroup(controller)? {
                out.push(mount.join(path).join("cgroup.procs"));
            }
        }
        Ok(out)
    }

    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = Vec::new();
        for d in self.unique_dirs() {
            pids.extend(fs::procs_recursive(d)?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    pub fn stats(&self, peak_seen: &AtomicU64) -> Result<Stats, CgroupError> {
        if !self.unique_dirs().iter().any(|d| d.exists()) {
            return Err(CgroupError::NotFound {
                rel_path: self.rel.clone(),
            });
        }
        let file = |c: &str, name: &str| self.dir(c).map(|d| d.join(name));
        let num = |c: &str, name: &str| match file(c, name) {
            Some(p) => fs::read_u64_opt(&p),
            None => Ok(None),
        };
        let cpu_time = num("cpuacct", "cpuacct.usage")?.map(Duration::from_nanos);
        let memory_current = num("memory", "memory.usage_in_bytes")?;
        let mut memory_peak = num("memory", "memory.max_usage_in_bytes")?;
        if let Some(cur) = memory_current {
            let seen = peak_seen.fetch_max(cur, Ordering::Relaxed).max(cur);
            memory_peak = Some(memory_peak.map_or(seen, |p| p.max(cur)));
        }
        let memory_limit = num("memory", "memory.limit_in_bytes")?.filter(|&l| l < UNLIMITED);
        let pids_limit = match file("pids", "pids.max") {
            Some(p) => fs::read_max_opt(&p)?,
            None => None,
        };
        let cpus_limit = match file("cpu", "cpu.cfs_quota_us") {
            Some(q) => match fs::read_opt(&q)? {
                Some(s) => {
                    let quota: i64 = s.trim().parse().map_err(|_| CgroupError::Parse {
                        path: q.clone(),
                        content: s.clone(),
                    })?;
                    let period = fs::read_u64(&q.with_file_name("cpu.cfs_period_us"))?;
                    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
                }
                None => None,
            },
            None => None,
        };
        Ok(Stats {
            cpu_time,
            memory_current,
            memory_peak,
            memory_limit,
            pids_current: num("pids", "pids.current")?,
            pids_limit,
            cpus_limit,
        })
    }

    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        let Some(dir) = self.dir("memory") else {
            return Ok(false);
        };
        let Some(s) = fs::read_opt(&dir.join("memory.oom_control"))? else {
            return Ok(false);
        };
        // `oom_kill` exists since Linux 4.13; before, `under_oom` only says
        // the cgroup is at its limit right now.
        Ok(match fs::keyed(&s, "oom_kill") {
            Some(n) => n > 0,
            None => fs::keyed(&s, "under_oom") == Some(1),
        })
    }

    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let state = self.dir("freezer").map(|d| d.join("freezer.state"));
        let state = state.filter(|s| s.exists());
        if let Some(state) = &state {
            fs::write(state, "FROZEN")?;
            // A task in uninterruptible sleep can keep it FREEZING: kill anyway.
            fs::poll_until(FREEZE_WAIT, || Ok(fs::read(state)?.trim() == "FROZEN"))?;
        }
        let result = self.signal_all();
        if let Some(state) = &state {
            fs::write(state, "THAWED")?;
        }
        result
    }

    fn freezer_state(&self) -> Result<std::path::PathBuf, CgroupError> {
        self.dir("freezer")
            .map(|d| d.join("freezer.state"))
            .filter(|s| s.exists())
            .ok_or_else(|| CgroupError::Unsupported {
                what: "freezing a cgroup",
                reason: "the v1 freezer hierarchy is not mounted".into(),
            })
    }

    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let state = self.freezer_state()?;
        let want = if frozen { "FROZEN" } else { "THAWED" };
        fs::write(&state, want)?;
        let done = fs::poll_until(FREEZE_WAIT, || Ok(fs::read(&state)?.trim() == want))?;
        if !done {
            let _ = fs::write(&state, "THAWED");
            return Err(CgroupError::Unsupported {
                what: "freezing a cgroup",
                reason: format!(
                    "{} stayed FREEZING; a task may be in uninterruptible sleep",
                    state.display()
                ),
            });
        }
        Ok(())
    }

    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(fs::read(&self.freezer_state()?)?.trim() == "FROZEN")
    }

    fn signal_all(&self) -> Result<(), CgroupError> {
        fs::sigkill_all(self.procs()?, &self.rel)
    }

    pub fn is_empty(&self) -> Result<bool, CgroupError> {
        Ok(self.procs()?.is_empty())
    }

    pub fn rmdir(&self) -> Result<(), CgroupError> {
        self.unique_dirs().into_iter().try_for_each(fs::rmdir_tree)
    }
}
