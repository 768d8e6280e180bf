//! [`VmIsolator`]: the library side of VM mode. It checks the host and the
//! inputs, prepares the initrd, starts the `isolate-vmm` process in a
//! cgroup, and turns its reports into an [`Outcome`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use isolate_cgroups::{Cgroup, Family, Spec};
use isolate_core::protocol::{
    escape_guest_text, GuestPrivileges, GuestRoot, GuestSpec, GuestVolume, MAX_SIGNAL,
};
use isolate_core::sys::lock;
use isolate_core::{
    paths, state, Error, ExecFailure, Isolator, Limits, Mode, Network, Outcome, Result, Running,
    Stats, Status, Stdio, VolumeSource, Workload,
};
use isolate_image::volume;

use crate::jail::JailIds;
use crate::spawn::{self, Spawned, VmmProcess};
use crate::wire::{BootSpec, Disk, FailKind, InitrdPart, Report, VmmConfig, FORWARDED_SIGNALS};
use crate::{host, kernel, sizing};

/// Default boot watchdog; `ISOLATE_BOOT_TIMEOUT` (e.g. `300s`) overrides it.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// Name of the VMM binary.
pub const VMM_BINARY: &str = "isolate-vmm";
/// Prefix of the VMM's cgroup name (`isolate/vm-<id>`).
pub const CGROUP_PREFIX: &str = "vm-";
/// The VMMs' cgroups.
const CGROUPS: Family = Family::new(CGROUP_PREFIX);

/// VM-mode failures that are not one of the core's error kinds.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The VMM binary was not found.
    #[error("cannot find the {VMM_BINARY} binary (looked in {0}); set ISOLATE_VMM or install it next to isolate")]
    NoVmm(String),
    /// The VMM could not be started.
    #[error("cannot start {}", .0.display())]
    Spawn(PathBuf, #[source] std::io::Error),
    /// The VMM could not be started in its namespaces.
    #[error("cannot start the VMM")]
    Jail(#[source] crate::spawn::SpawnError),
    /// Building the boot image failed.
    #[error("cannot prepare the guest's root filesystem")]
    Image(#[source] isolate_image::Error),
    /// The VMM's cgroup.
    #[error("cannot set up the VMM's cgroup")]
    Cgroup(#[source] isolate_cgroups::CgroupError),
    /// The guest init could not set the workload up.
    #[error("the guest could not set up the workload: {0}")]
    Setup(String),
    /// The guest did not boot or stopped early.
    #[error("{0}")]
    Boot(String),
    /// The VMM failed.
    #[error("the VMM failed: {0}")]
    Vmm(String),
    /// The guest broke the host↔guest protocol and the VMM ended the run.
    #[error("the VM was stopped: {0}")]
    Guest(String),
    /// The VMM ended without a report.
    #[error("the VMM process ended without a report ({0})")]
    VmmDied(String),
}

fn backend(e: VmError) -> Error {
    Error::Backend {
        backend: "vm",
        source: Box::new(e),
    }
}

/// The VM isolation boundary.
#[derive(Debug, Clone, Default)]
pub struct VmIsolator {
    vmm: Option<PathBuf>,
    /// Shared by clones: what this isolator already checked.
    host: Arc<HostCache>,
}

/// What an isolator learned of the host once: `/dev/kvm` is opened and
/// checked once per isolator (the VMM process opens its own), and a
/// kernel's headers are read once while its file is unchanged.
#[derive(Debug, Default)]
struct HostCache {
    kvm_ok: OnceLock<()>,
    kernel: Mutex<Option<(KernelKey, kernel::KernelInfo)>>,
}

/// A kernel file as it is now: a changed file is probed again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KernelKey {
    path: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl KernelKey {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

impl VmIsolator {
    /// A VM isolator that finds `isolate-vmm` itself (see [`VmIsolator::find_vmm`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A VM isolator that runs this VMM binary.
    pub fn with_vmm(path: impl Into<PathBuf>) -> Self {
        Self {
            vmm: Some(path.into()),
            ..Self::default()
        }
    }

    /// Opens and checks `/dev/kvm` the first time only.
    fn check_kvm(&self) -> Result<()> {
        if self.host.kvm_ok.get().is_none() {
            host::open_kvm()?;
            let _ = self.host.kvm_ok.set(());
        }
        Ok(())
    }

    /// The kernel's headers, read once while the file is unchanged, or an
    /// `invalid kernel` error naming the file.
    fn kernel_info(&self, path: &Path) -> Result<kernel::KernelInfo> {
        let key = KernelKey::of(path);
        let mut cached = isolate_core::sys::lock(&self.host.kernel);
        if let (Some(k), Some((ck, info))) = (&key, cached.as_ref()) {
            if k == ck {
                return Ok(info.clone());
            }
        }
        let info = host::probe_kernel(path)
            .map_err(|e| Error::invalid("kernel", isolate_core::error_chain(&e)))?;
        *cached = key.map(|k| (k, info.clone()));
        Ok(info)
    }

    /// The VMM binary: the explicit one, else `ISOLATE_VMM`, else next to
    /// the running executable or in its parent directory (cargo puts test
    /// binaries in `target/*/deps`), else `${ISOLATE_HOME}/bin`, else `PATH`.
    pub fn find_vmm(&self) -> Result<PathBuf> {
        if let Some(p) = &self.vmm {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("ISOLATE_VMM").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let mut tried = Vec::new();
        let mut candidates = Vec::new();
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                candidates.push(dir.join(VMM_BINARY));
                if let Some(up) = dir.parent() {
                    candidates.push(up.join(VMM_BINARY));
                }
            }
        }
        candidates.push(paths::home().join("bin").join(VMM_BINARY));
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join(VMM_BINARY)));
        }
        for c in candidates {
            if c.is_file() {
                return Ok(c);
            }
            tried.push(c.display().to_string());
        }
        Err(backend(VmError::NoVmm(tried.join(", "))))
    }
}

fn boot_timeout() -> Result<Duration> {
    match std::env::var("ISOLATE_BOOT_TIMEOUT") {
        Ok(v) if !v.is_empty() => isolate_core::parse::duration(&v).map_err(|_| {
            Error::invalid(
                "ISOLATE_BOOT_TIMEOUT",
                format!("{v:?} is not a duration; use e.g. 300s"),
            )
        }),
        _ => Ok(DEFAULT_BOOT_TIMEOUT),
    }
}

fn new_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "run-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What the spawn prepared for the VMM.
struct Prepared {
    config: VmmConfig,
}

impl Isolator for VmIsolator {
    fn mode(&self) -> Mode {
        Mode::Vm
    }

    fn check_host(&self) -> Result<()> {
        self.check_kvm()?;
        if host::flavor() == host::KvmFlavor::Pvm {
            let info = paths::kernel(None)
                .ok()
                .and_then(|k| self.kernel_info(&k).ok());
            host::check_pvm(info.as_ref())?;
        }
        Ok(())
    }

    fn spawn(&self, w: &Workload) -> Result<Box<dyn Running>> {
        let t_spawn = Instant::now();
        let trace = |what: &str| {
            if std::env::var_os("ISOLATE_VMM_TRACE").is_some() {
                eprintln!(
                    "isolate-vm:  {:>9.3} ms {what}",
                    t_spawn.elapsed().as_secs_f64() * 1e3
                );
            }
        };
        if let Some(name) = &w.name {
            if state::get_live(name).is_ok() {
                return Err(Error::NameInUse(name.clone()));
            }
        }
        let prepared = prepare(self, w)?;
        trace("inputs checked, initrd and disks ready");
        let vmm = self.find_vmm()?;
        remove_stale_cgroups();
        let id = w.name.clone().unwrap_or_else(new_id);
        let mut cgroup = vmm_cgroup(&id, w)?;
        trace("cgroup ready");
        let started = start(w, &id, &vmm, prepared, &mut cgroup, t_spawn);
        trace("VMM started, config sent");
        if let Some(cg) = cgroup {
            // Still ours only if the start failed.
            let _ = cg.remove();
        }
        Ok(Box::new(started?))
    }
}

/// Refuses the networks a VM cannot have yet: a VM's `eth0` needs a
/// virtio-net device backed by a tap on isolate's bridge, which VM mode
/// does not have.
fn check_network(w: &Workload) -> Result<()> {
    let what = match &w.network {
        Network::None | Network::Loopback if w.publish.is_empty() => return Ok(()),
        Network::None | Network::Loopback => "-p/--publish",
        Network::Bridge if !w.publish.is_empty() => "--network bridge and -p/--publish",
        Network::Bridge => "--network bridge",
        Network::Host => "--network host",
        Network::Container(_) => "--network container:NAME",
    };
    let why = match &w.network {
        Network::Host | Network::Container(_) => {
            "a VM has its own kernel and cannot share a host or container network namespace"
        }
        _ => "VM mode has no network device yet (virtio-net with a tap on the isolate0 bridge)",
    };
    Err(Error::Unsupported(format!(
        "{what} is not available in VM mode: {why}; use --mode container, or --network loopback|none"
    )))
}

/// Checks the inputs and the host, builds the initrd, sizes the guest.
fn prepare(vm: &VmIsolator, w: &Workload) -> Result<Prepared> {
    // Checked before any host check, so the answer does not depend on KVM.
    check_network(w)?;
    Mode::Vm.refuse_unsupported(w)?;
    let privileges = guest_privileges(w)?;
    let kernel_path = paths::kernel(w.vm.kernel.as_deref())?;
    let info = vm.kernel_info(&kernel_path)?;
    vm.check_kvm()?;
    host::check_pvm(Some(&info))?;
    let rootfs = paths::rootfs(w.rootfs.as_deref())?;
    let init = paths::init(None)?;

    if let Some(d) = w.devices.first() {
        return Err(Error::Unsupported(format!(
            "device {}: host devices cannot be given to a VM (its guest kernel has its own \
             devices; passing a host device through needs VFIO); use container mode",
            d.host.display()
        )));
    }
    // Volumes first: a host directory is refused before any image is built.
    for v in &w.volumes {
        if let VolumeSource::Host(p) = &v.source {
            return Err(Error::Unsupported(format!(
                "volume {}: host directories ({}) cannot be shared with a VM; use a named volume (e.g. -v data:{})",
                v.target.display(),
                p.display(),
                v.target.display()
            )));
        }
    }

    let img = |e| backend(VmError::Image(e));
    let mut disks = Vec::new();
    let (root_archive, root) = match isolate_image::choose(&rootfs).map_err(img)? {
        isolate_image::RootKind::Initramfs => (
            isolate_image::root_initramfs(&rootfs, &init).map_err(img)?,
            GuestRoot::Initramfs,
        ),
        isolate_image::RootKind::Block => {
            let b = isolate_image::block_image(&rootfs).map_err(img)?;
            disks.push(Disk {
                path: b.path,
                read_only: true,
            });
            (
                isolate_image::init_only_initramfs(&init).map_err(img)?,
                GuestRoot::Block {
                    device: "/dev/vda".into(),
                    fstype: b.fstype.into(),
                },
            )
        }
    };
    let mut volumes = Vec::new();
    for v in &w.volumes {
        if let VolumeSource::Named(name) = &v.source {
            let path = volume::ensure(name)?;
            let device = format!("/dev/vd{}", (b'a' + disks.len() as u8) as char);
            disks.push(Disk {
                path,
                read_only: v.read_only,
            });
            volumes.push(GuestVolume {
                device,
                target: v.target.to_string_lossy().into_owned(),
                read_only: v.read_only,
                fstype: "ext4".into(),
            });
        }
    }
    let user = w.user.unwrap_or(isolate_core::User { uid: 0, gid: 0 });
    let spec = GuestSpec {
        argv: w.argv.clone(),
        env: w.effective_env(),
        cwd: w
            .cwd
            .as_ref()
            .map_or_else(|| "/".to_string(), |c| c.to_string_lossy().into_owned()),
        uid: user.uid,
        gid: user.gid,
        hostname: w.effective_hostname().to_string(),
        root,
        read_only: w.read_only,
        volumes,
        memory_limit: w.limits.memory,
        pids_limit: w.limits.pids,
        loopback: w.network == Network::Loopback,
        stdin: w.stdin != Stdio::Null,
        privileges: Some(privileges),
    };
    let spec_archive = isolate_image::spec_archive(&spec);
    let root_len = std::fs::metadata(&root_archive)
        .map_err(|e| Error::io("cannot read", &root_archive, e))?
        .len();
    let initrd_len = root_len.next_multiple_of(4) + spec_archive.len() as u64;
    let mem_size = sizing::guest_memory(w.limits.memory, initrd_len, host::host_memory())
        .map_err(|e| Error::invalid("memory", e.to_string()))?;
    let needed = info.footprint_end + initrd_len + (16 << 20);
    if mem_size < needed {
        return Err(Error::invalid(
            "memory",
            format!(
                "the guest needs at least {} MiB for this kernel and root filesystem, it would get {} MiB",
                needed.div_ceil(1 << 20),
                mem_size >> 20
            ),
        ));
    }
    let vcpus = match w.vm.vcpus {
        Some(n) => n,
        None => w.limits.cpus.map_or(1, |c| c.ceil() as u32),
    };
    let vcpus = u8::try_from(vcpus)
        .ok()
        .filter(|n| (1..=crate::MAX_VCPUS).contains(n))
        .ok_or_else(|| {
            Error::invalid(
                "vcpus",
                format!("{vcpus} vCPUs; VM mode supports 1 to {}", crate::MAX_VCPUS),
            )
        })?;
    let config = VmmConfig {
        boot: BootSpec {
            kernel: kernel_path,
            initrd: vec![
                InitrdPart::File(root_archive),
                InitrdPart::Bytes(spec_archive),
            ],
            mem_size,
            vcpus,
            disks,
            console_log: w.vm.console_log,
            cmdline_extra: std::env::var("ISOLATE_KERNEL_CMDLINE").unwrap_or_default(),
        },
        stdin: w.stdin != Stdio::Null,
        timeout_ms: w.timeout.map(|t| t.as_millis() as u64),
        boot_timeout_ms: boot_timeout()?.as_millis() as u64,
        seccomp: !seccomp_off_for_debugging(),
        // Set once the VMM's pid is known (`start`).
        jail: JailIds { uid: 0, gid: 0 },
        trace: std::env::var_os("ISOLATE_VMM_TRACE").is_some(),
        log_level: std::env::var(isolate_core::logger::ENV).ok(),
        #[cfg(feature = "test-hooks")]
        test_guest: None,
    };
    Ok(Prepared { config })
}

/// The workload's privileges inside the guest, computed by the same code
/// as container mode's: capabilities and seccomp programs.
fn guest_privileges(w: &Workload) -> Result<GuestPrivileges> {
    let capabilities = isolate_policy::caps::mask(&w.capabilities)
        .map_err(|e| Error::invalid("cap-add/cap-drop", e.to_string()))?;
    let filters = isolate_policy::seccomp::filters(&w.seccomp, capabilities)
        .map_err(|e| Error::invalid("security-opt", e.to_string()))?;
    let seccomp = filters
        .iter()
        .map(|prog| {
            prog.iter()
                .map(|i| GuestPrivileges::pack(i.code, i.jt, i.jf, i.k))
                .collect()
        })
        .collect();
    Ok(GuestPrivileges {
        capabilities,
        seccomp,
    })
}

/// `ISOLATE_VMM_SECCOMP=0` runs a debug build's VMM without its seccomp
/// filters (to tell a missing entry from another failure); release builds
/// ignore it, and a release VMM installs its filters whatever it is told.
fn seccomp_off_for_debugging() -> bool {
    cfg!(debug_assertions) && std::env::var("ISOLATE_VMM_SECCOMP").is_ok_and(|v| v == "0")
}

/// Removes the cgroups of unnamed VMs whose isolate was killed (its VMM
/// ended with it: the config pipe closed, and the VMM's jail leaves
/// nothing on disk, but the cgroup stays). `vm-run-<pid>-<n>` is stale
/// once process `<pid>`, which made it, is gone and no named workload has
/// that name; named VMs' cgroups are replaced when their name is reused
/// (see [`vmm_cgroup`]); other cgroups belong to container mode.
fn remove_stale_cgroups() {
    let _ = CGROUPS.remove_stale(|id| is_stale_vm(id).then_some(()), |_, ()| {});
}

/// Whether the VM of id `id` (its cgroup's name without the prefix) is
/// an unnamed one whose isolate is gone.
fn is_stale_vm(id: &str) -> bool {
    let Some(pid) = id
        .strip_prefix("run-")
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    !Path::new(&format!("/proc/{pid}")).exists() && state::get_live(id).is_err()
}

/// The VMM's cgroup: required when the workload is named or has a CPU or
/// I/O limit; otherwise best effort (for stats), skipped where cgroups
/// cannot be created (e.g. not root). A leftover of the same name is
/// replaced: the name check in `spawn` found no live workload holding it.
fn vmm_cgroup(id: &str, w: &Workload) -> Result<Option<Cgroup>> {
    let spec = Spec {
        limits: Limits {
            cpus: w.limits.cpus,
            io_weight: w.limits.io_weight,
            ..Limits::default()
        },
        replace: true,
        ..Spec::default()
    };
    let limits = &spec.limits;
    let required = w.name.is_some() || limits.cpus.is_some() || limits.io_weight.is_some();
    // Not required means no limit to set: only the creation can fail.
    match CGROUPS.create(id, &spec) {
        Ok(cg) => Ok(Some(cg)),
        Err(e) if required => Err(backend(VmError::Cgroup(e))),
        Err(_) => Ok(None),
    }
}

fn start(
    w: &Workload,
    id: &str,
    vmm: &Path,
    mut prepared: Prepared,
    cgroup: &mut Option<Cgroup>,
    t_spawn: Instant,
) -> Result<VmRunning> {
    let io = |e: std::io::Error| backend(VmError::Spawn(vmm.to_path_buf(), e));
    let spawned = spawn::spawn(vmm, [w.stdin, w.stdout, w.stderr], FORWARDED_SIGNALS).map_err(
        |e| match e {
            // No privilege for the VMM's namespaces: VM mode is unavailable here.
            spawn::SpawnError::Clone(_) => Error::Unavailable {
                backend: "vm",
                reason: isolate_core::error_chain(&e),
            },
            e => backend(VmError::Jail(e)),
        },
    )?;
    let Spawned {
        process: mut child,
        config: mut config_w,
        reports: report_r,
        stdin,
        stdout,
        stderr,
    } = spawned;
    let pid = child.id();
    prepared.config.jail = JailIds::for_pid(pid);
    if let Some(cg) = cgroup.as_ref() {
        if let Err(e) = cg.add_process(pid) {
            child.kill_and_wait();
            return Err(backend(VmError::Cgroup(e)));
        }
    }
    let cgroup_path = cgroup.as_ref().map(|c| c.rel_path());
    let registration = match state::register_named(w, Mode::Vm, pid, cgroup_path) {
        Ok(r) => r,
        Err(e) => {
            child.kill_and_wait();
            return Err(e);
        }
    };
    let mut line = serde_json::to_string(&prepared.config).expect("config serializes");
    line.push('\n');
    if let Err(e) = config_w.write_all(line.as_bytes()) {
        child.kill_and_wait();
        return Err(io(e));
    }

    let shared = Arc::new(Shared::default());
    let reader = shared.clone();
    let _ = std::thread::Builder::new()
        .name("isolate-vm-report".into())
        .spawn(move || read_reports(report_r, &reader));
    Ok(VmRunning {
        id: id.to_string(),
        program: w.argv[0].clone(),
        pid,
        t_spawn,
        child: Mutex::new(child),
        shared,
        killed: AtomicBool::new(false),
        lifeline: Mutex::new(Some(config_w)),
        stdin: Mutex::new(stdin),
        stdout: Mutex::new(stdout),
        stderr: Mutex::new(stderr),
        cgroup: Mutex::new(cgroup.take()),
        registration: Mutex::new(registration),
        outcome: Mutex::new(None),
    })
}

/// What the report reader saw.
#[derive(Default)]
struct ReportState {
    started_at: Option<Instant>,
    last: Option<Report>,
    finished_at: Option<Instant>,
    eof: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<ReportState>,
    cv: Condvar,
}

/// Longest report line read from the VMM. The VMM handles guest input
/// and bounds the guest text it reports far below this; the library bounds
/// it again, in case the guest took the VMM over.
const MAX_REPORT_LINE: usize = 1 << 20;

/// Reads one line of at most `max` bytes (without its `\n`): `Ok(None)`
/// at end-of-file, an error for a longer line.
fn read_bounded_line(r: &mut impl BufRead, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = r.take(max as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a report line longer than {max} bytes"),
        ));
    }
    Ok(Some(line))
}

/// A report's message made safe for a terminal, line by line (boot
/// failures carry the guest's last console lines, one per line).
fn safe_message(message: &str) -> String {
    message
        .split('\n')
        .map(|l| escape_guest_text(l, MAX_REPORT_LINE))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a final status from the VMM is one a workload can have (the
/// exit code the CLI derives from it stays in 0..=255).
fn plausible(status: &Status) -> bool {
    match *status {
        Status::Exited(c) => (0..=255).contains(&c),
        Status::Signaled(s) => (1..=MAX_SIGNAL).contains(&s),
        Status::OomKilled | Status::TimedOut => true,
    }
}

fn read_reports(pipe: File, shared: &Shared) {
    let mut reader = BufReader::new(pipe);
    loop {
        let line = match read_bounded_line(&mut reader, MAX_REPORT_LINE) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                {
                    let mut st = lock(&shared.state);
                    st.finished_at = Some(Instant::now());
                    st.last = Some(Report::Failed {
                        kind: FailKind::Vmm,
                        message: format!("its reports are unreadable: {e}"),
                    });
                }
                // Nothing more is believed; the rest is read only to see
                // the end of the pipe, as after a good report.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                break;
            }
        };
        let Some(r) = Report::from_line(&String::from_utf8_lossy(&line)) else {
            continue;
        };
        let r = match r {
            Report::Failed { kind, message } => Report::Failed {
                kind,
                message: safe_message(&message),
            },
            Report::Finished { status, .. } if !plausible(&status) => Report::Failed {
                kind: FailKind::Vmm,
                message: format!("it reported an impossible status {status:?}"),
            },
            other => other,
        };
        let now = Instant::now();
        let mut st = lock(&shared.state);
        match r {
            Report::Started { .. } => {
                st.started_at.get_or_insert(now);
            }
            other => {
                st.finished_at = Some(now);
                st.last = Some(other);
            }
        }
    }
    lock(&shared.state).eof = true;
    shared.cv.notify_all();
}

/// A failure that can be returned again by later `wait` calls.
#[derive(Debug, Clone)]
enum Failure {
    Exec(ExecFailure),
    Setup(String),
    Boot(String),
    Vmm(String),
    Guest(String),
    Died(String),
}

impl Failure {
    fn to_error(&self, program: &str) -> Error {
        match self {
            Failure::Exec(kind) => Error::Exec {
                kind: *kind,
                program: program.to_string(),
            },
            Failure::Setup(m) => backend(VmError::Setup(m.clone())),
            Failure::Boot(m) => backend(VmError::Boot(m.clone())),
            Failure::Vmm(m) => backend(VmError::Vmm(m.clone())),
            Failure::Guest(m) => backend(VmError::Guest(m.clone())),
            Failure::Died(m) => backend(VmError::VmmDied(m.clone())),
        }
    }
}

/// A workload running in a VM.
pub struct VmRunning {
    id: String,
    program: String,
    pid: u32,
    t_spawn: Instant,
    child: Mutex<VmmProcess>,
    shared: Arc<Shared>,
    killed: AtomicBool,
    lifeline: Mutex<Option<File>>,
    stdin: Mutex<Option<File>>,
    stdout: Mutex<Option<File>>,
    stderr: Mutex<Option<File>>,
    cgroup: Mutex<Option<Cgroup>>,
    registration: Mutex<Option<state::Registration>>,
    outcome: Mutex<Option<std::result::Result<Outcome, Failure>>>,
}

impl VmRunning {
    /// The VMM's process id.
    pub fn vmm_pid(&self) -> u32 {
        self.pid
    }

    fn still_running(&self) -> bool {
        matches!(lock(&self.child).try_wait(), Ok(None))
    }

    fn describe_exit(status: std::process::ExitStatus) -> String {
        match (status.code(), status.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(libc::SIGSYS)) => {
                "killed by SIGSYS: its seccomp filter refused a system call (a debug build runs it without the filter when ISOLATE_VMM_SECCOMP=0)".into()
            }
            (_, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown status".into(),
        }
    }

    fn finish(&self) -> std::result::Result<Outcome, Failure> {
        {
            let mut st = lock(&self.shared.state);
            while !st.eof {
                st = self.shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        let status = lock(&self.child).wait();
        let wall = self.t_spawn.elapsed();
        // The VM is gone: release what it held.
        lock(&self.lifeline).take();
        if let Some(cg) = lock(&self.cgroup).take() {
            let _ = cg.remove();
        }
        lock(&self.registration).take();

        let st = lock(&self.shared.state);
        let startup = st.started_at.map(|t| t - self.t_spawn);
        let wall = st.finished_at.map_or(wall, |t| t - self.t_spawn);
        match st.last.clone() {
            Some(Report::Finished {
                status,
                cpu_time_ns,
                peak_memory,
                host_overhead,
                guest_memory_touched,
            }) => Ok(Outcome {
                status,
                wall_time: wall,
                startup_time: startup,
                cpu_time: cpu_time_ns.map(Duration::from_nanos),
                peak_memory,
                host_overhead,
                guest_memory_touched,
                address: None,
            }),
            Some(Report::Failed { kind, message }) => Err(match kind {
                FailKind::NotFound => Failure::Exec(ExecFailure::NotFound),
                FailKind::NotExecutable => Failure::Exec(ExecFailure::NotExecutable),
                FailKind::Setup => Failure::Setup(message),
                FailKind::Boot => Failure::Boot(message),
                FailKind::Vmm => Failure::Vmm(message),
                FailKind::Guest => Failure::Guest(message),
            }),
            // Killed by us, or SIGKILLed by someone else (`isolate kill NAME`
            // signals the VMM's pid): the workload was killed, as in container mode.
            _ if self.killed.load(Ordering::SeqCst)
                || matches!(&status, Ok(s) if s.signal() == Some(libc::SIGKILL)) =>
            {
                let mut o = Outcome::new(Status::Signaled(libc::SIGKILL), wall);
                o.startup_time = startup;
                Ok(o)
            }
            _ => Err(Failure::Died(match status {
                Ok(s) => Self::describe_exit(s),
                Err(e) => e.to_string(),
            })),
        }
    }
}

impl Running for VmRunning {
    fn id(&self) -> &str {
        &self.id
    }

    fn take_stdin(&self) -> Option<File> {
        lock(&self.stdin).take()
    }

    fn take_stdout(&self) -> Option<File> {
        lock(&self.stdout).take()
    }

    fn take_stderr(&self) -> Option<File> {
        lock(&self.stderr).take()
    }

    fn wait(&self) -> Result<Outcome> {
        let mut cached = lock(&self.outcome);
        if cached.is_none() {
            // Our own copy of a piped stdin would keep the guest's stdin open.
            *cached = Some(self.finish());
        }
        match cached.as_ref().expect("set above") {
            Ok(o) => Ok(o.clone()),
            Err(f) => Err(f.to_error(&self.program)),
        }
    }

    fn signal(&self, signo: i32) -> Result<()> {
        if signo != libc::SIGKILL && !FORWARDED_SIGNALS.contains(&signo) {
            return Err(Error::Unsupported(format!(
                "signal {signo} cannot be forwarded to a VM workload; use HUP, INT, QUIT, TERM, USR1, USR2, ALRM, WINCH or KILL"
            )));
        }
        let child = lock(&self.child);
        // Only signal a VMM that has not been reaped (its pid is still ours).
        let mut child = child;
        if !matches!(child.try_wait(), Ok(None)) {
            return Ok(());
        }
        if signo == libc::SIGKILL {
            self.killed.store(true, Ordering::SeqCst);
        }
        if let Err(e) = child.signal(signo) {
            return Err(Error::io(
                "cannot signal the VMM of",
                format!("workload {}", self.id),
                e,
            ));
        }
        Ok(())
    }

    fn stats(&self) -> Result<Stats> {
        let cg = lock(&self.cgroup);
        match cg.as_ref() {
            Some(cg) => cg.stats().map_err(|e| backend(VmError::Cgroup(e))),
            None => Err(Error::Unsupported(
                "stats of a VM come from its VMM's cgroup, which could not be created (run as root)".into(),
            )),
        }
    }

    fn update(&self, limits: &Limits) -> Result<()> {
        if limits.memory.is_some() {
            return Err(Error::Unsupported(
                "the memory of a running VM is its guest RAM; changing it would need a balloon device, which isolate's VMM does not have. Restart the workload with the new --memory".into(),
            ));
        }
        if limits.pids.is_some() {
            return Err(Error::Unsupported(
                "the process limit of a VM workload is enforced inside the guest and cannot change while it runs".into(),
            ));
        }
        limits.validate()?;
        let cg = lock(&self.cgroup);
        match cg.as_ref() {
            Some(cg) => cg.update(limits).map_err(|e| backend(VmError::Cgroup(e))),
            None => Err(Error::Unsupported(
                "the VMM has no cgroup (not root?), so its CPU quota cannot change".into(),
            )),
        }
    }
}

impl Drop for VmRunning {
    fn drop(&mut self) {
        if lock(&self.outcome).is_none() {
            if self.still_running() {
                let _ = self.signal(libc::SIGKILL);
            }
            let _ = self.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_headers_are_read_once_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinux");
        let mut elf = kernel::tiny_elf(0x1000);
        elf.extend_from_slice(&[0u8; 0x1000]);
        std::fs::write(&p, &elf).unwrap();
        let vm = VmIsolator::new();
        let first = vm.kernel_info(&p).unwrap();
        assert_eq!(first.footprint_end, 0x100_2000);

        // Same inode, length and mtime, other bytes: still the cached headers.
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &vec![b'x'; elf.len()], 0).unwrap();
        f.set_modified(mtime).unwrap();
        assert_eq!(vm.clone().kernel_info(&p).unwrap(), first);

        // A changed file is read again (and is no longer a kernel).
        f.set_modified(mtime + Duration::from_secs(1)).unwrap();
        assert!(vm.kernel_info(&p).is_err());
    }

    #[test]
    fn networks_a_vm_cannot_have_are_refused_with_the_reason() {
        for net in [
            Network::Bridge,
            Network::Host,
            Network::Container("web".into()),
        ] {
            let mut w = Workload::new("/bin/true");
            w.network(net);
            match check_network(&w) {
                Err(Error::Unsupported(m)) => {
                    assert!(m.contains("not available in VM mode"), "{m}")
                }
                other => panic!("not refused: {other:?}"),
            }
        }
        let mut w = Workload::new("/bin/true");
        w.network(Network::Bridge);
        w.publish(isolate_core::parse::publish("8080:80").unwrap());
        assert!(
            matches!(check_network(&w), Err(Error::Unsupported(m)) if m.contains("virtio-net"))
        );
        assert!(check_network(&Workload::new("/bin/true")).is_ok());
    }

    #[test]
    fn only_unnamed_vms_of_dead_processes_are_stale() {
        assert!(is_stale_vm("run-4194305-0"));
        let live = format!("run-{}-0", std::process::id());
        assert!(!is_stale_vm(&live));
        assert!(!is_stale_vm("myjob"));
    }

    #[test]
    fn report_lines_are_bounded() {
        let mut r = std::io::Cursor::new(b"one\ntwo\n0123456789\nlast".to_vec());
        assert_eq!(read_bounded_line(&mut r, 8).unwrap(), Some(b"one".to_vec()));
        assert_eq!(read_bounded_line(&mut r, 8).unwrap(), Some(b"two".to_vec()));
        assert!(read_bounded_line(&mut r, 8).is_err());
        let mut r = std::io::Cursor::new(b"12345678\nx".to_vec());
        assert_eq!(
            read_bounded_line(&mut r, 8).unwrap(),
            Some(b"12345678".to_vec())
        );
        assert_eq!(read_bounded_line(&mut r, 8).unwrap(), Some(b"x".to_vec()));
        assert_eq!(read_bounded_line(&mut r, 8).unwrap(), None);
    }

    #[test]
    fn an_oversize_report_line_is_a_failure_not_a_report() {
        let shared = Shared::default();
        let mut pipe = tempfile::tempfile().unwrap();
        pipe.write_all(&vec![b'x'; MAX_REPORT_LINE + 10]).unwrap();
        let finished = Report::Finished {
            status: Status::Exited(0),
            cpu_time_ns: None,
            peak_memory: None,
            host_overhead: None,
            guest_memory_touched: None,
        };
        pipe.write_all(finished.to_line().as_bytes()).unwrap();
        std::io::Seek::rewind(&mut pipe).unwrap();
        read_reports(pipe, &shared);
        let st = lock(&shared.state);
        assert!(st.eof);
        assert!(
            matches!(&st.last, Some(Report::Failed { kind: FailKind::Vmm, message }) if message.contains("unreadable")),
            "{:?}",
            st.last
        );
    }

    #[test]
    fn report_messages_keep_their_lines_and_lose_terminal_controls() {
        let m = safe_message("the guest halted; last console lines:\n  \x1b[2Jpanic\r\n  ok");
        assert_eq!(
            m,
            "the guest halted; last console lines:\n  \\x1b[2Jpanic\\r\n  ok"
        );
    }

    #[test]
    fn impossible_statuses_from_the_vmm_are_refused() {
        for s in [
            Status::Exited(256),
            Status::Exited(-1),
            Status::Signaled(0),
            Status::Signaled(i32::MAX),
        ] {
            assert!(!plausible(&s), "{s:?}");
        }
        for s in [
            Status::Exited(0),
            Status::Exited(255),
            Status::Signaled(9),
            Status::OomKilled,
            Status::TimedOut,
        ] {
            assert!(plausible(&s), "{s:?}");
        }
    }

    #[test]
    fn reports_of_a_hostile_guest_end_in_a_clear_error() {
        let shared = Shared::default();
        let mut pipe = tempfile::tempfile().unwrap();
        let line = Report::Failed {
            kind: FailKind::Guest,
            message: "the guest reported exit code 99999, outside 0..=255".into(),
        }
        .to_line();
        pipe.write_all(line.as_bytes()).unwrap();
        std::io::Seek::rewind(&mut pipe).unwrap();
        read_reports(pipe, &shared);
        let st = lock(&shared.state);
        assert!(st.eof);
        let Some(Report::Failed { kind, message }) = st.last.clone() else {
            panic!("no failure recorded");
        };
        assert_eq!(kind, FailKind::Guest);
        let e = Failure::Guest(message).to_error("/bin/true");
        assert_eq!(e.exit_code(), 125);
        assert!(e.chain().contains("exit code 99999"), "{}", e.chain());
    }

    #[test]
    fn explicit_vmm_wins() {
        let v = VmIsolator::with_vmm("/x/isolate-vmm");
        assert_eq!(v.find_vmm().unwrap(), PathBuf::from("/x/isolate-vmm"));
    }

    #[test]
    fn guest_privileges_match_container_modes() {
        let w = Workload::new("/bin/true");
        let p = guest_privileges(&w).unwrap();
        assert_eq!(p.capabilities, isolate_policy::caps::default_mask());
        assert!(!p.seccomp.is_empty() && p.seccomp.iter().all(|f| !f.is_empty()));
        let mut w = Workload::new("/bin/true");
        w.seccomp(isolate_core::Seccomp::Unconfined);
        assert!(guest_privileges(&w).unwrap().seccomp.is_empty());
        let mut w = Workload::new("/bin/true");
        w.capabilities.add.push("FLY".into());
        let e = guest_privileges(&w).unwrap_err();
        assert_eq!(e.exit_code(), 125);
        assert!(e.to_string().contains("FLY"), "{e}");
    }

    #[test]
    fn failures_map_to_exec_codes() {
        let e = Failure::Exec(ExecFailure::NotFound).to_error("nope");
        assert_eq!(e.exit_code(), 127);
        let e = Failure::Boot("the guest reset".into()).to_error("x");
        assert_eq!(e.exit_code(), 125);
        assert!(e.chain().contains("the guest reset"), "{}", e.chain());
    }
}
