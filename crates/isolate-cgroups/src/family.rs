//! The life of a workload's cgroup, for a backend: each backend names its
//! cgroups `isolate/<prefix><id>` ([`Family`]), creates one per run with
//! its limits and device rules ([`Spec`]), places the workload's first
//! process by [`Cgroup::placement`], removes it with [`Cgroup::remove`],
//! and sweeps the ones whose owner is gone ([`Family::remove_stale`]).

use isolate_core::Limits;

use crate::devices::DeviceRule;
use crate::layout::Hierarchies;
use crate::{Cgroup, CgroupError, PARENT, STALE_WAIT};

/// The cgroups of one backend: `isolate/<prefix><id>`.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    prefix: &'static str,
}

/// What a workload's cgroup holds from its creation on.
#[derive(Debug, Default)]
pub struct Spec<'a> {
    /// The limits to set (`None` fields stay unlimited).
    pub limits: Limits,
    /// The only devices its processes may open; `None` leaves device
    /// access alone.
    pub devices: Option<&'a [DeviceRule]>,
    /// Keep the cgroup when the host cannot enforce the I/O weight
    /// ([`CgroupError::is_unsupported`]); every other limit is in force.
    pub io_weight_best_effort: bool,
    /// Replace a cgroup of the same name (left by an owner the caller knows
    /// is gone) instead of failing with [`CgroupError::Exists`].
    pub replace: bool,
}

impl Family {
    /// The family of cgroups named `<prefix><id>` below [`PARENT`].
    pub const fn new(prefix: &'static str) -> Family {
        Family { prefix }
    }

    /// The cgroup name of run `id` (below [`PARENT`]).
    pub fn name(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// The path of run `id`'s cgroup relative to the cgroup root(s).
    pub fn rel_path(&self, id: &str) -> String {
        format!("{PARENT}/{}", self.name(id))
    }

    /// Creates run `id`'s cgroup with the device rules first (before any
    /// process can join), then the limits. On an error nothing is left.
    pub fn create(&self, id: &str, spec: &Spec) -> Result<Cgroup, CgroupError> {
        let name = self.name(id);
        let cg = match Cgroup::create(&name) {
            Err(CgroupError::Exists { .. }) if spec.replace => {
                self.remove_leftover(id)?;
                Cgroup::create(&name)?
            }
            made => made?,
        };
        if let Some(rules) = spec.devices {
            if let Err(e) = cg.restrict_devices(rules) {
                let _ = cg.remove();
                return Err(e);
            }
        }
        if let Err(e) = cg.apply(&spec.limits) {
            let tolerated =
                spec.io_weight_best_effort && e.is_unsupported() && spec.limits.io_weight.is_some();
            if !tolerated {
                // Nothing is in it yet: remove it before reporting.
                let _ = cg.remove();
                return Err(e);
            }
        }
        Ok(cg)
    }

    /// Removes run `id`'s cgroup, left by an owner that is gone, killing
    /// what runs in it; a cgroup that does not exist is not an error.
    pub fn remove_leftover(&self, id: &str) -> Result<(), CgroupError> {
        match Cgroup::open(&self.rel_path(id)) {
            Err(CgroupError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
            Ok(cg) => cg.remove(),
        }
    }

    /// Removes this family's cgroups whose owner is gone, killing what runs
    /// in them; returns how many went.
    ///
    /// `claim(id)` says whether run `id`'s owner is gone; what it returns
    /// (e.g. the owner's lock, so that no new run takes the id meanwhile) is
    /// held while the cgroup is removed, then handed to `removed(id, ..)`
    /// once the cgroup is gone. Each leftover gets about 200 ms to empty
    /// ([`CgroupError::Busy`] otherwise: a later sweep removes it); on
    /// errors the others are still tried, then the first error is returned.
    pub fn remove_stale<G>(
        &self,
        mut claim: impl FnMut(&str) -> Option<G>,
        mut removed: impl FnMut(&str, G),
    ) -> Result<usize, CgroupError> {
        let h = Hierarchies::probe()?;
        let mut count = 0;
        let mut first_error = None;
        for name in leftover_names(&h)? {
            let Some(id) = name.strip_prefix(self.prefix) else {
                continue;
            };
            let Some(guard) = claim(id) else {
                continue;
            };
            // A short wait: processes that die slowly (or hang in state D)
            // are left for the next sweep rather than delaying this one.
            let result = Cgroup::open_in(&h, &format!("{PARENT}/{name}"))
                .and_then(|cg| cg.remove_within(STALE_WAIT));
            match result {
                Ok(()) => {
                    count += 1;
                    removed(id, guard);
                }
                // Removed meanwhile by its owner.
                Err(CgroupError::NotFound { .. }) => removed(id, guard),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }
}

/// The names of the cgroups below [`PARENT`] in any hierarchy (a leftover
/// may be gone from some), valid cgroup names only.
pub(crate) fn leftover_names(h: &Hierarchies) -> Result<Vec<String>, CgroupError> {
    let mut names: Vec<String> = Vec::new();
    let parents: Vec<std::path::PathBuf> = match &h.v2_root {
        Some(root) => vec![root.join(PARENT)],
        None => h.v1.iter().map(|(_, m)| m.join(PARENT)).collect(),
    };
    for parent in &parents {
        let entries = match std::fs::read_dir(parent) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(CgroupError::read(parent, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && crate::check_name(&name).is_ok()
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefix_and_id_below_the_parent() {
        let f = Family::new("ct-");
        assert_eq!(f.name("run-3"), "ct-run-3");
        assert_eq!(f.rel_path("web"), format!("{PARENT}/ct-web"));
    }
}
