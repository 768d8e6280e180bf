//! A bundle's `config.json` (read with the `oci-spec` crate) mapped onto
//! isolate's [`Workload`] and the container backend's
//! [`Extras`]: what isolate cannot do is refused by name
//! ([`OciError::Unsupported`]), never dropped.
//!
//! Deliberate differences from runc, all stricter and documented in the
//! README: `no_new_privs` is always set; Docker's masked and read-only
//! paths are always applied (the config's lists add to them); /proc,
//! /dev (with its standard nodes), /dev/pts, /dev/shm, /dev/mqueue and
//! /sys are always mounted with isolate's options; a cgroup namespace is
//! always made; swap is always off; devices are denied unless allowed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use isolate_cgroups::devices::{access_bits, DeviceKind, DeviceRule};
use isolate_container::detached::{self, Extras, Masked, Tmpfs};
use isolate_core::protocol::masks;
use isolate_core::{Limits, Seccomp, SeccompProfile, Volume, Workload};
use oci_spec::runtime::{
    LinuxDeviceType, LinuxNamespaceType, LinuxResources, Mount, PosixRlimitType, Spec,
};

use crate::error::{OciError, Result};

/// The annotation that picks the boundary of one container.
pub const MODE_ANNOTATION: &str = "run.isolate.mode";

/// Which boundary a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Namespaces and cgroups.
    Container,
    /// A KVM microVM (not yet through the OCI runtime).
    Vm,
}

impl Mode {
    /// Parses `container` or `vm`.
    pub fn parse(field: &str, v: &str) -> Result<Mode> {
        match v.trim() {
            "container" => Ok(Mode::Container),
            "vm" => Ok(Mode::Vm),
            other => Err(OciError::invalid(
                field,
                format!("{other:?} is not a mode; use container or vm"),
            )),
        }
    }
}

/// What `create` runs: the workload, the backend's extras, and what the
/// runtime itself does around it.
#[derive(Debug)]
pub struct Plan {
    /// The workload.
    pub workload: Workload,
    /// What the container backend adds for OCI.
    pub extras: Extras,
    /// `process.oomScoreAdj`, written for the container's PID 1.
    pub oom_score_adj: Option<i32>,
    /// `process.terminal`: the process gets a new terminal whose master
    /// goes to `--console-socket`.
    pub terminal: bool,
    /// The annotations, recorded in the state.
    pub annotations: HashMap<String, String>,
}

/// Reads `bundle/config.json`.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|e| OciError::Config {
        path,
        detail: e.to_string(),
    })
}

/// The mode a bundle asks for: its annotation, else the default.
pub fn mode(spec: &Spec, default: Mode) -> Result<Mode> {
    match spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(MODE_ANNOTATION))
    {
        Some(v) => Mode::parse(&format!("annotations[{MODE_ANNOTATION}]"), v),
        None => Ok(default),
    }
}

fn unsupported<T>(field: &str, why: &str) -> Result<T> {
    Err(OciError::unsupported(field, why))
}

/// Maps `spec` (of the bundle at `bundle`) onto a container-mode plan.
pub fn plan(spec: &Spec, bundle: &Path) -> Result<Plan> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| OciError::invalid("process", "missing: nothing to run"))?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(OciError::invalid("process.args", "empty: nothing to run"));
    }
    let mut w = Workload::new(args[0].clone());
    w.args(args[1..].iter().cloned());
    let mut extras = Extras {
        bind_root: true,
        ..Extras::default()
    };

    process_fields(process, &mut w, &mut extras)?;

    // root
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| OciError::invalid("root", "missing: the bundle has no root"))?;
    let root_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = root_path
        .canonicalize()
        .map_err(|e| OciError::invalid("root.path", format!("{}: {e}", root_path.display())))?;
    w.rootfs(rootfs.clone());
    extras.read_only_root = root.readonly().unwrap_or(false);

    if let Some(h) = spec.hostname() {
        if !h.is_empty() {
            w.hostname(h.clone());
        }
    }
    if spec.domainname().as_deref().is_some_and(|d| !d.is_empty()) {
        return unsupported("domainname", "isolate sets no NIS domain name");
    }
    hooks(spec)?;

    let linux = spec.linux().clone().unwrap_or_default();
    namespaces(&linux, &mut extras)?;
    if linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty())
    {
        return unsupported(
            "linux.uidMappings/gidMappings",
            "user namespaces are not supported yet; run the container without userns",
        );
    }
    for m in spec.mounts().as_deref().unwrap_or_default() {
        mount(m, bundle, &mut w, &mut extras)?;
    }
    if let Some(r) = linux.resources() {
        w.limits = limits(r)?;
        extras.device_rules = device_rules(r)?;
    }
    devices(&linux, &mut w)?;
    for p in linux.masked_paths().as_deref().unwrap_or_default() {
        if masks::FILES.contains(&p.as_str()) || masks::DIRS.contains(&p.as_str()) {
            continue;
        }
        check_abs("linux.maskedPaths", p)?;
        extras.masked.push(Masked {
            path: p.clone(),
            is_dir: is_dir_in(&rootfs, p),
        });
    }
    for p in linux.readonly_paths().as_deref().unwrap_or_default() {
        if masks::READ_ONLY.contains(&p.as_str()) {
            continue;
        }
        check_abs("linux.readonlyPaths", p)?;
        extras.read_only.push(p.clone());
    }
    let mut sysctl: Vec<(String, String)> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    sysctl.sort();
    for (k, _) in &sysctl {
        check_sysctl(k)?;
    }
    extras.sysctl = sysctl;
    w.seccomp(seccomp(&linux)?);
    if let Some(p) = linux.rootfs_propagation() {
        if !matches!(p.as_str(), "" | "private" | "rprivate") {
            return unsupported(
                "linux.rootfsPropagation",
                "only private propagation (the default) is supported",
            );
        }
    }
    if linux
        .mount_label()
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        return unsupported("linux.mountLabel", "isolate applies no SELinux label");
    }
    if linux.intel_rdt().is_some() {
        return unsupported("linux.intelRdt", "not implemented");
    }
    if linux.personality().is_some() {
        return unsupported("linux.personality", "not implemented");
    }
    if linux.time_offsets().is_some() {
        return unsupported("linux.timeOffsets", "time namespaces are not supported");
    }
    if linux.memory_policy().is_some() {
        return unsupported("linux.memoryPolicy", "not implemented");
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return unsupported("linux.netDevices", "not implemented");
    }
    w.validate()?;
    Ok(Plan {
        workload: w,
        extras,
        oom_score_adj: process.oom_score_adj(),
        terminal: process.terminal().unwrap_or(false),
        annotations: spec.annotations().clone().unwrap_or_default(),
    })
}

/// The `process` object onto `w` and `extras` (all but `args`).
fn process_fields(
    process: &oci_spec::runtime::Process,
    w: &mut Workload,
    extras: &mut Extras,
) -> Result<()> {
    if let Some(b) = process.console_size() {
        extras.console_size = (b.height() as u16, b.width() as u16);
    }
    for kv in process.env().as_deref().unwrap_or_default() {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        w.env(k, v);
    }
    let cwd = process.cwd();
    if !cwd.is_absolute() {
        return Err(OciError::invalid(
            "process.cwd",
            format!("{} is not absolute", cwd.display()),
        ));
    }
    w.cwd = Some(cwd.clone());
    let user = process.user();
    w.user(user.uid(), user.gid());
    extras.groups = user.additional_gids().clone().unwrap_or_default();
    if let Some(m) = user.umask() {
        if m != 0o022 {
            return unsupported(
                "process.user.umask",
                "isolate starts the process with umask 022 only",
            );
        }
    }
    capabilities(process, user.uid(), w)?;
    for r in process.rlimits().as_deref().unwrap_or_default() {
        extras
            .rlimits
            .push((rlimit_number(r.typ()), r.soft(), r.hard()));
    }
    if process
        .apparmor_profile()
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        return unsupported(
            "process.apparmorProfile",
            "isolate applies no AppArmor profile (this host has no AppArmor)",
        );
    }
    if process
        .selinux_label()
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        return unsupported("process.selinuxLabel", "isolate applies no SELinux label");
    }
    if process.io_priority().is_some() {
        return unsupported("process.ioPriority", "not implemented");
    }
    if process.scheduler().is_some() {
        return unsupported("process.scheduler", "not implemented");
    }
    if process.exec_cpu_affinity().is_some() {
        return unsupported("process.execCPUAffinity", "not implemented");
    }

    Ok(())
}

/// What `exec` runs in a running container: `process` (from
/// `--process` or the command line) with the container's seccomp profile.
pub fn exec_plan(
    process: &oci_spec::runtime::Process,
    container: &Spec,
) -> Result<(Workload, Extras)> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(OciError::invalid("process.args", "empty: nothing to run"));
    }
    let mut w = Workload::new(args[0].clone());
    w.args(args[1..].iter().cloned());
    let mut extras = Extras::default();
    process_fields(process, &mut w, &mut extras)?;
    let linux = container.linux().clone().unwrap_or_default();
    w.seccomp(seccomp(&linux)?);
    w.validate()?;
    Ok((w, extras))
}

fn check_abs(field: &str, p: &str) -> Result<()> {
    if p.starts_with('/') && !p.split('/').any(|c| c == "..") {
        Ok(())
    } else {
        Err(OciError::invalid(
            field,
            format!("{p:?} is not an absolute path without `..`"),
        ))
    }
}

/// Whether `path` (inside the container) is a directory: /proc and /sys
/// are the same kernel's as the host's; other paths are looked up in the
/// rootfs without following a final link (a link is masked as a file).
fn is_dir_in(rootfs: &Path, path: &str) -> bool {
    if path.starts_with("/proc/") || path.starts_with("/sys/") {
        return Path::new(path).is_dir();
    }
    std::fs::symlink_metadata(rootfs.join(path.trim_start_matches('/'))).is_ok_and(|m| m.is_dir())
}

fn capabilities(process: &oci_spec::runtime::Process, uid: u32, w: &mut Workload) -> Result<()> {
    let Some(caps) = process.capabilities() else {
        // No capabilities at all.
        w.capabilities.drop = vec!["ALL".into()];
        return Ok(());
    };
    let names = |set: &Option<oci_spec::runtime::Capabilities>| -> Vec<String> {
        let mut v: Vec<String> = set
            .iter()
            .flatten()
            .map(|c| c.to_string().trim_start_matches("CAP_").to_string())
            .collect();
        v.sort();
        v
    };
    let bounding = names(caps.bounding());
    for (field, set) in [
        ("effective", names(caps.effective())),
        ("permitted", names(caps.permitted())),
        ("inheritable", names(caps.inheritable())),
        ("ambient", names(caps.ambient())),
    ] {
        if let Some(extra) = set.iter().find(|c| !bounding.contains(c)) {
            return Err(OciError::invalid(
                format!("process.capabilities.{field}"),
                format!("{extra} is not in the bounding set"),
            ));
        }
        // A user other than root keeps across execve only its ambient
        // capabilities (without file capabilities): its effective and
        // permitted sets end there as isolate leaves them, empty.
        if uid != 0 && !set.is_empty() && field == "ambient" {
            return unsupported(
                "process.capabilities.ambient",
                "isolate gives a user other than root no capabilities; run as uid 0 or drop the ambient set",
            );
        }
        if uid == 0 && matches!(field, "effective" | "permitted") && set != bounding {
            return unsupported(
                &format!("process.capabilities.{field}"),
                "isolate gives root its bounding set as effective and permitted capabilities; make them equal",
            );
        }
    }
    for c in &bounding {
        if isolate_policy_number(c).is_none() {
            return Err(OciError::invalid(
                "process.capabilities.bounding",
                format!("{c} is not a capability this kernel knows"),
            ));
        }
    }
    w.capabilities.drop = vec!["ALL".into()];
    w.capabilities.add = bounding;
    Ok(())
}

/// Capability numbers from the policy's own table.
fn isolate_policy_number(name: &str) -> Option<u32> {
    isolate_policy::caps::number(name)
}

fn rlimit_number(t: PosixRlimitType) -> libc::c_int {
    (match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::c_int
}

/// Hooks inside the container's namespaces are refused; the runtime's
/// own run (see [`crate::hooks`]).
fn hooks(spec: &Spec) -> Result<()> {
    let Some(h) = spec.hooks() else {
        return Ok(());
    };
    for (name, list) in [
        ("createContainer", h.create_container()),
        ("startContainer", h.start_container()),
    ] {
        if list.as_ref().is_some_and(|l| !l.is_empty()) {
            return unsupported(
                &format!("hooks.{name}"),
                "hooks inside the container's namespaces are not run by isolate; use prestart, createRuntime, poststart or poststop",
            );
        }
    }
    Ok(())
}

fn namespaces(linux: &oci_spec::runtime::Linux, extras: &mut Extras) -> Result<()> {
    let list = linux.namespaces().clone().unwrap_or_default();
    let has = |t: LinuxNamespaceType| list.iter().any(|n| n.typ() == t);
    for (t, name) in [
        (LinuxNamespaceType::Pid, "pid"),
        (LinuxNamespaceType::Mount, "mount"),
        (LinuxNamespaceType::Ipc, "ipc"),
        (LinuxNamespaceType::Uts, "uts"),
        (LinuxNamespaceType::Network, "network"),
    ] {
        if !has(t) {
            return unsupported(
                &format!("linux.namespaces (no {name} namespace)"),
                &format!(
                    "sharing the host's {name} namespace is not supported: isolate always makes a new one"
                ),
            );
        }
    }
    for n in &list {
        let name = n.typ().to_string();
        match (n.typ(), n.path()) {
            (LinuxNamespaceType::User, _) => {
                return unsupported(
                    "linux.namespaces (user)",
                    "user namespaces are not supported yet",
                )
            }
            (LinuxNamespaceType::Time, _) => {
                return unsupported(
                    "linux.namespaces (time)",
                    "time namespaces are not supported",
                )
            }
            (LinuxNamespaceType::Network, Some(p)) => extras.net_ns = Some(p.clone()),
            (_, Some(p)) => {
                return unsupported(
                    &format!("linux.namespaces ({name} path {})", p.display()),
                    "only a network namespace can be joined by path",
                )
            }
            _ => {}
        }
    }
    Ok(())
}

/// Standard mounts isolate always makes itself, by destination and type.
const STANDARD: [(&str, &str); 7] = [
    ("/proc", "proc"),
    ("/dev", "tmpfs"),
    ("/dev/pts", "devpts"),
    ("/dev/shm", "tmpfs"),
    ("/dev/mqueue", "mqueue"),
    ("/sys", "sysfs"),
    ("/sys/fs/cgroup", "cgroup"),
];

fn mount(m: &Mount, bundle: &Path, w: &mut Workload, extras: &mut Extras) -> Result<()> {
    let dest = m.destination().to_string_lossy().into_owned();
    let field = format!("mounts[{dest}]");
    check_abs(&field, &dest)?;
    let opts = m.options().clone().unwrap_or_default();
    let is_bind = opts.iter().any(|o| o == "bind" || o == "rbind");
    let typ = m.typ().clone().unwrap_or_default();
    if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return unsupported(
            &format!("{field}.uidMappings"),
            "idmapped mounts are not supported",
        );
    }
    if !is_bind {
        if STANDARD.contains(&(dest.as_str(), typ.as_str())) {
            if dest == "/sys/fs/cgroup" {
                extras.cgroupfs = true;
            }
            return Ok(());
        }
        if typ == "cgroup2" && dest == "/sys/fs/cgroup" {
            extras.cgroupfs = true;
            return Ok(());
        }
        if typ == "tmpfs" {
            let (flags, data) = tmpfs_options(&field, &opts)?;
            extras.tmpfs.push(Tmpfs {
                target: dest,
                flags,
                data,
            });
            return Ok(());
        }
        return unsupported(
            &format!("{field} (type {typ:?})"),
            "isolate mounts bind, tmpfs, and the standard proc, sysfs, devpts, mqueue and cgroup mounts only",
        );
    }
    let src = m
        .source()
        .clone()
        .ok_or_else(|| OciError::invalid(&field, "a bind mount needs a source"))?;
    let src: PathBuf = if src.is_absolute() {
        src
    } else {
        bundle.join(src)
    };
    let mut read_only = false;
    let mut attr = 0u64;
    for o in &opts {
        match o.as_str() {
            "bind" | "rbind" | "rw" | "suid" | "dev" | "exec" | "private" | "rprivate" => {}
            "ro" => read_only = true,
            "nosuid" => attr |= detached::ATTR_NOSUID,
            "nodev" => attr |= detached::ATTR_NODEV,
            "noexec" => attr |= detached::ATTR_NOEXEC,
            // Access times of a bind mount follow its source's mount.
            "relatime" | "norelatime" | "strictatime" | "nostrictatime" | "noatime" | "atime" => {}
            "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                return unsupported(
                    &format!("{field} option {o}"),
                    "only private propagation is supported",
                )
            }
            other => {
                return unsupported(
                    &format!("{field} option {other:?}"),
                    "not a bind-mount option isolate knows",
                )
            }
        }
    }
    let mut v = Volume::host(src, dest);
    v.read_only = read_only;
    w.volume(v);
    extras.volume_attrs.push(attr);
    Ok(())
}

fn tmpfs_options(field: &str, opts: &[String]) -> Result<(libc::c_ulong, String)> {
    let mut flags = 0;
    let mut data = Vec::new();
    for o in opts {
        match o.as_str() {
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "ro" => flags |= libc::MS_RDONLY,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "noatime" => flags |= libc::MS_NOATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "rw" | "suid" | "dev" | "exec" | "private" | "rprivate" | "tmpcopyup"
            | "notmpcopyup" => {}
            o if ["size=", "mode=", "uid=", "gid=", "nr_inodes=", "nr_blocks="]
                .iter()
                .any(|p| o.starts_with(p)) =>
            {
                data.push(o.to_string())
            }
            other => {
                return unsupported(
                    &format!("{field} option {other:?}"),
                    "not a tmpfs option isolate knows",
                )
            }
        }
    }
    Ok((flags, data.join(",")))
}

/// linux.resources onto isolate's limits; what has no counterpart is refused.
pub fn limits(r: &LinuxResources) -> Result<Limits> {
    let mut l = Limits::default();
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit().filter(|&v| v > 0) {
            l.memory = Some(limit as u64);
        }
        for (name, set) in [
            ("reservation", m.reservation().is_some_and(|v| v > 0)),
            ("kernel", m.kernel().is_some_and(|v| v > 0)),
            ("kernelTCP", m.kernel_tcp().is_some_and(|v| v > 0)),
            ("disableOOMKiller", m.disable_oom_killer() == Some(true)),
        ] {
            if set {
                return unsupported(&format!("linux.resources.memory.{name}"), "not implemented");
            }
        }
        if let Some(s) = m.swappiness() {
            if s != 0 && s <= 100 {
                return unsupported(
                    "linux.resources.memory.swappiness",
                    "isolate runs containers without swap",
                );
            }
        }
    }
    if let Some(c) = r.cpu() {
        if let (Some(q), p) = (c.quota().filter(|&q| q > 0), c.period().unwrap_or(100_000)) {
            if p == 0 {
                return Err(OciError::invalid("linux.resources.cpu.period", "zero"));
            }
            l.cpus = Some(q as f64 / p as f64);
        }
        for (name, set) in [
            ("shares", c.shares().is_some_and(|s| s != 0 && s != 1024)),
            (
                "realtimeRuntime",
                c.realtime_runtime().is_some_and(|v| v != 0),
            ),
            (
                "realtimePeriod",
                c.realtime_period().is_some_and(|v| v != 0),
            ),
            ("cpus", c.cpus().as_deref().is_some_and(|v| !v.is_empty())),
            ("mems", c.mems().as_deref().is_some_and(|v| !v.is_empty())),
            ("idle", c.idle().is_some_and(|v| v != 0)),
            ("burst", c.burst().is_some_and(|v| v != 0)),
        ] {
            if set {
                return unsupported(
                    &format!("linux.resources.cpu.{name}"),
                    "isolate limits CPU by quota (--cpus) only",
                );
            }
        }
    }
    if let Some(p) = r.pids() {
        if p.limit() > 0 {
            l.pids = Some(p.limit() as u64);
        }
    }
    if let Some(b) = r.block_io() {
        l.io_weight = b.weight();
        for (name, set) in [
            ("leafWeight", b.leaf_weight().is_some()),
            (
                "weightDevice",
                b.weight_device().as_ref().is_some_and(|v| !v.is_empty()),
            ),
            (
                "throttleReadBpsDevice",
                b.throttle_read_bps_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty()),
            ),
            (
                "throttleWriteBpsDevice",
                b.throttle_write_bps_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty()),
            ),
            (
                "throttleReadIOPSDevice",
                b.throttle_read_iops_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty()),
            ),
            (
                "throttleWriteIOPSDevice",
                b.throttle_write_iops_device()
                    .as_ref()
                    .is_some_and(|v| !v.is_empty()),
            ),
        ] {
            if set {
                return unsupported(
                    &format!("linux.resources.blockIO.{name}"),
                    "isolate sets the block-IO weight only",
                );
            }
        }
    }
    if r.hugepage_limits().as_ref().is_some_and(|v| !v.is_empty()) {
        return unsupported("linux.resources.hugepageLimits", "not implemented");
    }
    if r.network().is_some() {
        return unsupported("linux.resources.network", "not implemented");
    }
    if r.rdma().as_ref().is_some_and(|v| !v.is_empty()) {
        return unsupported("linux.resources.rdma", "not implemented");
    }
    if r.unified().as_ref().is_some_and(|v| !v.is_empty()) {
        return unsupported("linux.resources.unified", "not implemented");
    }
    l.validate()?;
    Ok(l)
}

/// The device rules beyond the defaults: engines send "deny all" first,
/// then allow rules; a later deny is refused.
fn device_rules(r: &LinuxResources) -> Result<Vec<DeviceRule>> {
    let mut out = Vec::new();
    for (i, d) in r
        .devices()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let field = format!("linux.resources.devices[{i}]");
        let kind = match d.typ() {
            None | Some(LinuxDeviceType::A) => DeviceKind::All,
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => DeviceKind::Char,
            Some(LinuxDeviceType::B) => DeviceKind::Block,
            Some(LinuxDeviceType::P) => {
                return unsupported(&field, "FIFO device rules are not supported")
            }
        };
        let access = d.access().clone().unwrap_or_else(|| "rwm".into());
        if !d.allow() {
            let deny_all = kind == DeviceKind::All && d.major().is_none() && d.minor().is_none();
            if deny_all && out.is_empty() {
                continue; // isolate denies everything not allowed anyway
            }
            return unsupported(
                &format!("{field} (deny {access})"),
                "isolate denies every device not allowed; give allow rules after one deny-all rule",
            );
        }
        let num = |v: Option<i64>| v.filter(|&n| n >= 0).map(|n| n as u32);
        out.push(DeviceRule {
            kind,
            major: num(d.major()),
            minor: num(d.minor()),
            access: access_bits(&access),
        });
    }
    Ok(out)
}

/// linux.devices: the standard nodes isolate always makes are accepted;
/// any other must exist on the host as the same node (it is passed in).
fn devices(linux: &oci_spec::runtime::Linux, w: &mut Workload) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    const STANDARD_NODES: [&str; 7] = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/ptmx",
    ];
    for d in linux.devices().as_deref().unwrap_or_default() {
        let path = d.path().to_string_lossy().into_owned();
        if STANDARD_NODES.contains(&path.as_str()) {
            continue;
        }
        let field = format!("linux.devices[{path}]");
        let host = std::fs::metadata(d.path()).map_err(|_| {
            OciError::unsupported(
                &field,
                "isolate passes in host device nodes only, and the host has no such node",
            )
        })?;
        let same = (host.file_type().is_char_device() && d.typ() == LinuxDeviceType::C
            || host.file_type().is_block_device() && d.typ() == LinuxDeviceType::B)
            && i64::from(libc::major(host.rdev())) == d.major()
            && i64::from(libc::minor(host.rdev())) == d.minor();
        if !same {
            return unsupported(
                &field,
                "isolate passes in host device nodes only, and the host's node at that path differs",
            );
        }
        w.devices.push(isolate_core::Device {
            host: d.path().clone(),
            container: d.path().clone(),
            access: "rwm".into(),
        });
    }
    Ok(())
}

/// Sysctls the container's own namespaces hold (as runc allows).
fn check_sysctl(k: &str) -> Result<()> {
    let namespaced = k.starts_with("net.")
        || k.starts_with("fs.mqueue.")
        || matches!(
            k,
            "kernel.msgmax"
                | "kernel.msgmnb"
                | "kernel.msgmni"
                | "kernel.sem"
                | "kernel.shmall"
                | "kernel.shmmax"
                | "kernel.shmmni"
                | "kernel.shm_rmid_forced"
        );
    if !namespaced || k.contains("..") || k.contains('/') {
        return unsupported(
            &format!("linux.sysctl[{k}]"),
            "not a sysctl of the container's own namespaces: it would change the host",
        );
    }
    Ok(())
}

fn seccomp(linux: &oci_spec::runtime::Linux) -> Result<Seccomp> {
    let Some(s) = linux.seccomp() else {
        // The spec's meaning of no seccomp section: no filter.
        return Ok(Seccomp::Unconfined);
    };
    if s.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return unsupported(
            "linux.seccomp.flags",
            "isolate installs filters without flags",
        );
    }
    if s.listener_path().is_some() {
        return unsupported(
            "linux.seccomp.listenerPath",
            "isolate runs no seccomp agent (SCMP_ACT_NOTIFY)",
        );
    }
    let json =
        serde_json::to_string(s).map_err(|e| OciError::invalid("linux.seccomp", e.to_string()))?;
    let profile = SeccompProfile::from_json(&json)?;
    Ok(Seccomp::Profile(Box::new(profile)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle with isolate's default spec (runc's, without a terminal)
    /// edited by `edit`, and an empty rootfs.
    fn bundle(edit: impl FnOnce(&mut serde_json::Value)) -> (tempfile::TempDir, Result<Plan>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rootfs")).unwrap();
        let mut v = crate::runtime::default_spec();
        edit(&mut v);
        std::fs::write(d.path().join("config.json"), v.to_string()).unwrap();
        let spec = load(d.path()).unwrap();
        let plan = plan(&spec, d.path());
        (d, plan)
    }

    fn refused_field(r: Result<Plan>) -> String {
        match r {
            Err(OciError::Unsupported { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn default_spec_maps_onto_a_bound_root_with_runcs_capabilities() {
        let (d, p) = bundle(|_| {});
        let p = p.unwrap();
        assert_eq!(p.workload.argv, ["sh"]);
        assert_eq!(
            p.workload.rootfs.as_deref(),
            Some(d.path().join("rootfs").canonicalize().unwrap().as_path())
        );
        assert!(p.extras.bind_root && p.extras.read_only_root && p.extras.cgroupfs);
        assert_eq!(p.workload.capabilities.drop, ["ALL"]);
        let mut add = p.workload.capabilities.add.clone();
        add.sort();
        assert_eq!(add, ["AUDIT_WRITE", "KILL", "NET_BIND_SERVICE"]);
        assert_eq!(p.extras.rlimits, [(libc::RLIMIT_NOFILE as i32, 1024, 1024)]);
        assert!(
            p.extras.masked.is_empty(),
            "the defaults are isolate's own masks"
        );
        // No seccomp section means no filter (the spec's meaning).
        assert_eq!(p.workload.seccomp, Seccomp::Unconfined);
    }

    #[test]
    fn process_user_env_cwd_and_resources_are_mapped() {
        let (_d, p) = bundle(|v| {
            v["process"]["user"] =
                serde_json::json!({"uid": 1000, "gid": 100, "additionalGids": [10]});
            v["process"]["capabilities"] = serde_json::json!({"bounding": ["CAP_KILL"]});
            v["process"]["env"] = serde_json::json!(["A=b", "C=d=e"]);
            v["process"]["cwd"] = serde_json::json!("/work");
            v["linux"]["resources"] = serde_json::json!({
                "memory": {"limit": 67108864},
                "cpu": {"quota": 50000, "period": 100000},
                "pids": {"limit": 20},
                "blockIO": {"weight": 300},
                "devices": [{"allow": false, "access": "rwm"},
                            {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}]
            });
        });
        let p = p.unwrap();
        let w = &p.workload;
        assert_eq!(
            w.user,
            Some(isolate_core::User {
                uid: 1000,
                gid: 100
            })
        );
        assert_eq!(p.extras.groups, [10]);
        assert!(w.env.contains(&("C".into(), "d=e".into())));
        assert_eq!(w.cwd.as_deref(), Some(Path::new("/work")));
        assert_eq!(w.limits.memory, Some(64 << 20));
        assert_eq!(w.limits.cpus, Some(0.5));
        assert_eq!(w.limits.pids, Some(20));
        assert_eq!(w.limits.io_weight, Some(300));
        assert_eq!(p.extras.device_rules.len(), 1);
        assert_eq!(p.extras.device_rules[0].major, Some(10));
    }

    #[test]
    fn mounts_become_volumes_tmpfs_and_standard_ones() {
        let (_d, p) = bundle(|v| {
            let m = v["mounts"].as_array_mut().unwrap();
            m.push(serde_json::json!({"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind", "ro", "nosuid"]}));
            m.push(serde_json::json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m", "mode=755"]}));
        });
        let p = p.unwrap();
        let vol = &p.workload.volumes[0];
        assert_eq!(vol.target, Path::new("/data"));
        assert!(vol.read_only);
        assert_eq!(p.extras.volume_attrs, [detached::ATTR_NOSUID]);
        assert_eq!(p.extras.tmpfs[0].target, "/run");
        assert_eq!(p.extras.tmpfs[0].data, "size=1m,mode=755");
        assert_eq!(p.extras.tmpfs[0].flags, libc::MS_NOSUID);
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "linux.namespaces (user)",
                Box::new(|v| {
                    v["linux"]["namespaces"]
                        .as_array_mut()
                        .unwrap()
                        .push(serde_json::json!({"type": "user"}))
                }),
            ),
            (
                "hooks.createContainer",
                Box::new(|v| {
                    v["hooks"] = serde_json::json!({"createContainer": [{"path": "/bin/true"}]})
                }),
            ),
            (
                "linux.resources.cpu.cpus",
                Box::new(|v| v["linux"]["resources"]["cpu"] = serde_json::json!({"cpus": "0-1"})),
            ),
            (
                "linux.sysctl[kernel.panic]",
                Box::new(|v| v["linux"]["sysctl"] = serde_json::json!({"kernel.panic": "1"})),
            ),
            (
                "mounts[/x] option shared",
                Box::new(|v| {
                    v["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/x", "type": "bind", "source": "/srv", "options": ["bind", "shared"]}))
                }),
            ),
            (
                "mounts[/x] (type \"nfs\")",
                Box::new(|v| {
                    v["mounts"].as_array_mut().unwrap().push(
                        serde_json::json!({"destination": "/x", "type": "nfs", "source": "h:/e"}),
                    )
                }),
            ),
            (
                "linux.namespaces (ipc path /proc/1/ns/ipc)",
                Box::new(
                    |v| v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc", "path": "/proc/1/ns/ipc"}, {"type": "uts"}, {"type": "mount"}]),
                ),
            ),
            (
                "linux.namespaces (no network namespace)",
                Box::new(
                    |v| v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]),
                ),
            ),
        ];
        for (want, edit) in cases {
            let (_d, p) = bundle(edit);
            let field = refused_field(p);
            assert!(field.starts_with(want), "want {want:?}, got {field:?}");
        }
    }

    #[test]
    fn a_network_namespace_path_is_joined() {
        let (_d, p) = bundle(|v| {
            v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
        });
        assert_eq!(
            p.unwrap().extras.net_ns.as_deref(),
            Some(Path::new("/run/netns/x"))
        );
    }

    #[test]
    fn mode_comes_from_the_annotation_else_the_default() {
        let d = tempfile::tempdir().unwrap();
        let mut v = crate::runtime::default_spec();
        std::fs::write(d.path().join("config.json"), v.to_string()).unwrap();
        assert_eq!(
            mode(&load(d.path()).unwrap(), Mode::Container).unwrap(),
            Mode::Container
        );
        v["annotations"] = serde_json::json!({MODE_ANNOTATION: "vm"});
        std::fs::write(d.path().join("config.json"), v.to_string()).unwrap();
        assert_eq!(
            mode(&load(d.path()).unwrap(), Mode::Container).unwrap(),
            Mode::Vm
        );
        v["annotations"] = serde_json::json!({MODE_ANNOTATION: "qemu"});
        std::fs::write(d.path().join("config.json"), v.to_string()).unwrap();
        assert!(mode(&load(d.path()).unwrap(), Mode::Container).is_err());
    }
}
