//! cgroup v2 (unified): one directory under the cgroup2 root.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use isolate_core::Stats;

use crate::error::CgroupError;
use crate::fs;
use crate::{io_weight_v2, CPU_PERIOD_US};

/// Controllers isolate enables on the way down to its cgroups.
const CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "io"];

/// How long to wait for `cgroup.freeze` to take effect before killing anyway.
const FREEZE_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct V2 {
    rel: String,
    root: PathBuf,
    dir: PathBuf,
}

impl V2 {
    /// Creates `root/rel`, enabling [`CONTROLLERS`] (those the root offers)
    /// in the `cgroup.subtree_control` of every ancestor.
    pub fn create(root: &Path, rel: &str) -> Result<Self, CgroupError> {
        let dir = root.join(rel);
        let mut parent = root.to_owned();
        let components: Vec<&str> = rel.split('/').collect();
        for (i, c) in components.iter().enumerate() {
            enable_controllers(&parent)?;
            let child = parent.join(c);
            let last = i + 1 == components.len();
            if !fs::mkdir(&child)? && last {
                return Err(CgroupError::Exists { path: child });
            }
            parent = child;
        }
        Ok(V2 {
            rel: rel.to_owned(),
            root: root.to_owned(),
            dir,
        })
    }

    /// This cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn open(root: &Path, rel: &str) -> Result<Self, CgroupError> {
        let dir = root.join(rel);
        if !dir.join("cgroup.procs").exists() {
            return Err(CgroupError::NotFound {
                rel_path: rel.to_owned(),
            });
        }
        Ok(V2 {
            rel: rel.to_owned(),
            root: root.to_owned(),
            dir,
        })
    }

    /// `dir/file`, or [`CgroupError::ControllerMissing`] if the controller
    /// providing it is not enabled here.
    fn need(&self, controller: &'static str, file: &str) -> Result<PathBuf, CgroupError> {
        let path = self.dir.join(file);
        if path.exists() {
            return Ok(path);
        }
        let offered = self.root.join("cgroup.controllers");
        let has = |list: &str| list.split_whitespace().any(|c| c == controller);
        let hint = if has(&fs::read(&offered)?) {
            // The topmost ancestor that does not pass it down.
            let mut missing = Vec::new();
            let mut dir = self.root.clone();
            for c in self.rel.split('/') {
                let control = dir.join("cgroup.subtree_control");
                if !has(&fs::read_opt(&control)?.unwrap_or_default()) {
                    missing.push(format!("`echo +{controller} > {}`", control.display()));
                }
                dir.push(c);
            }
            format!("enable it on the way down: {}", missing.join(", then "))
        } else {
            format!(
                "the host does not offer it ({} does not list it); it may be bound to a \
                 cgroup v1 hierarchy or disabled on the kernel command line (cgroup_disable=)",
                offered.display()
            )
        };
        Err(CgroupError::ControllerMissing {
            controller,
            rel_path: self.rel.clone(),
            hint,
        })
    }

    pub fn set_memory(&self, bytes: u64, running: bool) -> Result<(), CgroupError> {
        let max = self.need("memory", "memory.max")?;
        if running {
            self.reclaim_down_to(bytes)?;
        }
        fs::write(&max, &bytes.to_string())?;
        let swap = self.dir.join("memory.swap.max");
        if swap.exists() {
            fs::write(&swap, "0")?;
        }
        Ok(())
    }

    /// Before lowering memory.max below the current use (which would make the
    /// kernel OOM-kill the workload), asks the kernel to reclaim the
    /// difference, and refuses if it cannot.
    fn reclaim_down_to(&self, bytes: u64) -> Result<(), CgroupError> {
        let current = self.dir.join("memory.current");
        let usage = fs::read_u64(&current)?;
        if usage <= bytes {
            return Ok(());
        }
        let reclaim = self.dir.join("memory.reclaim");
        if reclaim.exists() {
            // EAGAIN here means "could not reclaim all of it": checked below.
            let _ = fs::write(&reclaim, &(usage - bytes).to_string());
        }
        let usage = fs::read_u64(&current)?;
        if usage > bytes {
            return Err(CgroupError::MemoryBelowUsage {
                rel_path: self.rel.clone(),
                requested: bytes,
                usage,
            });
        }
        Ok(())
    }

    pub fn set_cpus(&self, quota_us: u64) -> Result<(), CgroupError> {
        let max = self.need("cpu", "cpu.max")?;
        fs::write(&max, &format!("{quota_us} {CPU_PERIOD_US}"))
    }

    pub fn set_pids(&self, pids: u64) -> Result<(), CgroupError> {
        fs::write(&self.need("pids", "pids.max")?, &pids.to_string())
    }

    pub fn set_io_weight(&self, weight: u16) -> Result<(), CgroupError> {
        // BFQ's weight has the blkio range (1..1000); io.weight (iocost) has
        // 1..10000, mapped from 10..1000 as runc and crun do.
        let bfq = self.dir.join("io.bfq.weight");
        if bfq.exists() {
            return fs::write(&bfq, &weight.to_string());
        }
        let iocost = self.dir.join("io.weight");
        if iocost.exists() {
            return fs::write(&iocost, &format!("default {}", io_weight_v2(weight)));
        }
        let reason = if self.dir.join("io.stat").exists() {
            format!(
                "the io controller is enabled for {} but has neither io.bfq.weight nor \
                 io.weight: use the BFQ I/O scheduler for the disk \
                 (`echo bfq > /sys/block/DISK/queue/scheduler`)",
                self.rel
            )
        } else {
            let hint = self.need("io", "io.weight").err().map(|e| e.to_string());
            hint.unwrap_or_else(|| "the io controller is not enabled".into())
        };
        Err(CgroupError::Unsupported {
            what: "io weight",
            reason,
        })
    }

    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        fs::write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    pub fn procs_fd(&self) -> Option<OwnedFd> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&self.dir)
            .ok()
            .map(OwnedFd::from)
    }

    /// The `cgroup.procs` file of the cgroup this process is in now.
    pub fn own_procs_files(&self) -> Result<Vec<PathBuf>, CgroupError> {
        Ok(fs::own_cgroup("")?
            .map(|path| self.root.join(path).join("cgroup.procs"))
            .into_iter()
            .collect())
    }

    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        fs::procs_recursive(&self.dir)
    }

    pub fn stats(&self, peak_seen: &AtomicU64) -> Result<Stats, CgroupError> {
        if !self.dir.exists() {
            return Err(CgroupError::NotFound {
                rel_path: self.rel.clone(),
            });
        }
        let f = |name: &str| self.dir.join(name);
        let cpu_time = fs::read_opt(&f("cpu.stat"))?
            .and_then(|s| fs::keyed(&s, "usage_usec"))
            .map(Duration::from_micros);
        let memory_current = fs::read_u64_opt(&f("memory.current"))?;
        let mut memory_peak = fs::read_u64_opt(&f("memory.peak"))?;
        if let Some(cur) = memory_current {
            // Without memory.peak (kernels before 5.19), the peak is the
            // largest use sampled by this handle.
            let seen = peak_seen.fetch_max(cur, Ordering::Relaxed).max(cur);
            memory_peak = Some(memory_peak.map_or(seen, |p| p.max(cur)));
        }
        let cpus_limit = match fs::read_opt(&f("cpu.max"))? {
            Some(s) => parse_cpu_max(&f("cpu.max"), &s)?,
            None => None,
        };
        Ok(Stats {
            cpu_time,
            memory_current,
            memory_peak,
            memory_limit: fs::read_max_opt(&f("memory.max"))?,
            pids_current: fs::read_u64_opt(&f("pids.current"))?,
            pids_limit: fs::read_max_opt(&f("pids.max"))?,
            cpus_limit,
        })
    }

    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        let events = self.dir.join("memory.events");
        Ok(fs::read_opt(&events)?
            .and_then(|s| fs::keyed(&s, "oom_kill"))
            .is_some_and(|n| n > 0))
    }

    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let kill = self.dir.join("cgroup.kill");
        if kill.exists() {
            // Linux >= 5.14: the kernel kills the whole subtree, race-free.
            return fs::write(&kill, "1");
        }
        self.freeze_and_kill()
    }

    /// Kills without `cgroup.kill` (kernels before 5.14): freeze so nothing
    /// forks while we signal, then thaw so the signals are delivered.
    fn freeze_and_kill(&self) -> Result<(), CgroupError> {
        let freeze = self.dir.join("cgroup.freeze");
        let frozen = freeze.exists();
        if frozen {
            fs::write(&freeze, "1")?;
            let events = self.dir.join("cgroup.events");
            fs::poll_until(FREEZE_WAIT, || {
                Ok(fs::keyed(&fs::read(&events)?, "frozen") == Some(1))
            })?;
        }
        let result = self.signal_all();
        if frozen {
            fs::write(&freeze, "0")?;
        }
        result
    }

    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let freeze = self.dir.join("cgroup.freeze");
        if !freeze.exists() {
            return Err(CgroupError::Unsupported {
                what: "freezing a cgroup",
                reason: "this kernel has no cgroup.freeze (Linux 5.2+)".into(),
            });
        }
        fs::write(&freeze, if frozen { "1" } else { "0" })?;
        let events = self.dir.join("cgroup.events");
        let want = u64::from(frozen);
        let done = fs::poll_until(FREEZE_WAIT, || {
            Ok(fs::keyed(&fs::read(&events)?, "frozen") == Some(want))
        })?;
        if !done {
            let _ = fs::write(&freeze, "0");
            return Err(CgroupError::Unsupported {
                what: "freezing a cgroup",
                reason: format!("{} did not report frozen {want}", events.display()),
            });
        }
        Ok(())
    }

    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(fs::read_opt(&self.dir.join("cgroup.freeze"))?.is_some_and(|s| s.trim() == "1"))
    }

    fn signal_all(&self) -> Result<(), CgroupError> {
        fs::sigkill_all(self.procs()?, &self.rel)
    }

    pub fn is_empty(&self) -> Result<bool, CgroupError> {
        match fs::read_opt(&self.dir.join("cgroup.events"))? {
            Some(s) => Ok(fs::keyed(&s, "populated") == Some(0)),
            None => Ok(true),
        }
    }

    pub fn rmdir(&self) -> Result<(), CgroupError> {
        fs::rmdir_tree(&self.dir)
    }
}

/// `cpu.max`: `max PERIOD` or `QUOTA PERIOD` → CPUs.
fn parse_cpu_max(path: &Path, s: &str) -> Result<Option<f64>, CgroupError> {
    let bad = || CgroupError::Parse {
        path: path.to_owned(),
        content: s.to_owned(),
    };
    let mut it = s.split_whitespace();
    let quota = it.next().ok_or_else(bad)?;
    let period: u64 = it.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    if quota == "max" {
        return Ok(None);
    }
    let quota: u64 = quota.parse().map_err(|_| bad())?;
    if period == 0 {
        return Err(bad());
    }
    Ok(Some(quota as f64 / period as f64))
}

/// Enables [`CONTROLLERS`] that `dir` offers (its `cgroup.controllers`)
/// for its children, one controller per write so an error names it.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let offered = fs::read(&dir.join("cgroup.controllers"))?;
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read(&control)?;
    for c in CONTROLLERS {
        let has = |list: &str| list.split_whitespace().any(|x| x == c);
        if has(&offered) && !has(&enabled) {
            fs::write(&control, &format!("+{c}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback of kernels without `cgroup.kill`, on a real v2 host.
    #[test]
    fn freeze_and_kill_ends_every_process() {
        let test = "v2::freeze_and_kill_ends_every_process";
        if isolate_core::sys::rootless() {
            eprintln!("SKIP {test}: needs root");
            return;
        }
        let h = crate::layout::Hierarchies::probe().unwrap();
        let Some(root) = h.v2_root else {
            eprintln!("SKIP {test}: host cgroups are {}, not unified v2", h.layout);
            return;
        };
        let cg = V2::create(
            &root,
            &format!("isolate/unit-freeze-{}", std::process::id()),
        )
        .unwrap();
        let mut kids: Vec<_> = (0..3)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("60")
                    .spawn()
                    .unwrap()
            })
            .collect();
        for k in &kids {
            cg.add_process(k.id()).unwrap();
        }
        assert_eq!(cg.procs().unwrap().len(), 3);
        let result = cg.freeze_and_kill();
        // Collect everything before asserting, so a failure leaves nothing behind.
        let signals: Vec<Option<i32>> = kids
            .iter_mut()
            .map(|k| {
                use std::os::unix::process::ExitStatusExt;
                let mut status = None;
                let _ = fs::poll_until(Duration::from_secs(2), || {
                    status = k.try_wait().unwrap();
                    Ok(status.is_some())
                });
                if status.is_none() {
                    let _ = k.kill();
                    let _ = k.wait();
                }
                status.and_then(|s| s.signal())
            })
            .collect();
        let thawed = fs::read(&cg.dir.join("cgroup.freeze")).unwrap();
        let emptied = fs::poll_until(Duration::from_secs(1), || cg.is_empty()).unwrap();
        let removed = cg.rmdir();
        result.unwrap();
        assert_eq!(signals, vec![Some(libc::SIGKILL); 3]);
        assert_eq!(thawed.trim(), "0", "left frozen");
        assert!(emptied);
        removed.unwrap();
    }

    /// A controller switched off on the way down: the error says where.
    #[test]
    fn missing_controller_error_names_the_file_to_fix() {
        let test = "v2::missing_controller_error_names_the_file_to_fix";
        if isolate_core::sys::rootless() {
            eprintln!("SKIP {test}: needs root");
            return;
        }
        let h = crate::layout::Hierarchies::probe().unwrap();
        let Some(root) = h.v2_root else {
            eprintln!("SKIP {test}: host cgroups are {}, not unified v2", h.layout);
            return;
        };
        // Its own parent, so that no other cgroup of isolate is affected.
        let parent = format!("isolate-unit-{}", std::process::id());
        let cg = V2::create(&root, &format!("{parent}/leaf")).unwrap();
        let control = root.join(&parent).join("cgroup.subtree_control");
        let switched_off = fs::write(&control, "-pids");
        let result = cg.set_pids(10);
        let removed = cg
            .rmdir()
            .and_then(|()| fs::rmdir_tree(&root.join(&parent)));
        switched_off.unwrap();
        match result {
            Err(CgroupError::ControllerMissing {
                controller: "pids",
                hint,
                ..
            }) => {
                assert!(hint.contains(&control.display().to_string()), "{hint}");
                assert!(
                    !hint.contains("/sys/fs/cgroup/cgroup.subtree_control"),
                    "{hint}"
                );
            }
            other => panic!("set_pids without the pids controller: {other:?}"),
        }
        removed.unwrap();
    }

    #[test]
    fn cpu_max_parses_to_cpus() {
        let p = Path::new("cpu.max");
        assert_eq!(parse_cpu_max(p, "max 100000\n").unwrap(), None);
        assert_eq!(parse_cpu_max(p, "150000 100000\n").unwrap(), Some(1.5));
        assert!(parse_cpu_max(p, "150000").is_err());
        assert!(parse_cpu_max(p, "x 100000").is_err());
    }
}
