//! The [`Workload`]: what to run and within which limits, independent of
//! the boundary that will run it. Built like `std::process::Command`.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::seccomp::Seccomp;

/// How a standard stream of the workload is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stdio {
    /// The caller's own stream (the default, like `std::process::Command`).
    #[default]
    Inherit,
    /// A pipe the caller reads or writes through [`Running`](crate::Running).
    Piped,
    /// `/dev/null`.
    Null,
}

/// The workload's network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// No network device at all (not even loopback is configured).
    None,
    /// Only a loopback interface, up (the default).
    #[default]
    Loopback,
    /// An `eth0` on isolate's host bridge (`isolate0`) with an address of
    /// its own, a default route through the bridge and NAT to the outside
    /// (container mode, root).
    Bridge,
    /// The host's network namespace (container mode).
    Host,
    /// The network namespace of the named workload (container mode).
    Container(String),
}

impl Network {
    /// The form `--network` takes: `none`, `loopback`, `bridge`, `host` or
    /// `container:NAME`.
    pub fn parse(s: &str) -> Result<Network> {
        Ok(match s {
            "none" => Network::None,
            "loopback" => Network::Loopback,
            "bridge" => Network::Bridge,
            "host" => Network::Host,
            _ => match s.strip_prefix("container:") {
                Some(name) => {
                    check_name("network", name)?;
                    Network::Container(name.to_string())
                }
                None => {
                    return Err(Error::invalid(
                        "network",
                        format!(
                            "{s:?} is not a network; use none, loopback, bridge, host or container:NAME"
                        ),
                    ))
                }
            },
        })
    }
}

/// The transport of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`, as nftables and `-p` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A published port (`-p [HOSTIP:]HOSTPORT:PORT[/tcp|udp]`): traffic to
/// the host's `HOSTPORT` (on `HOSTIP`, or any local address) reaches the
/// workload's `PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Publish {
    /// The host address it is limited to (none: every local address).
    pub host_ip: Option<std::net::Ipv4Addr>,
    /// The host's port.
    pub host_port: u16,
    /// The workload's port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// Resource limits. `None` means unlimited (the backend's default).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Memory limit in bytes (swap is off). In VM mode, the guest's RAM is
    /// sized from it.
    pub memory: Option<u64>,
    /// CPUs, fractional: `1.5` is one and a half CPUs of time per period.
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    pub pids: Option<u64>,
    /// Relative block-IO weight, 10..=1000 (docker's `--blkio-weight`).
    pub io_weight: Option<u16>,
}

/// Smallest memory limit accepted (docker's floor is 6 MiB).
pub const MIN_MEMORY: u64 = 6 << 20;

impl Limits {
    /// Checks every set limit; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(m) = self.memory {
            if m < MIN_MEMORY {
                return Err(Error::invalid(
                    "memory",
                    format!("{m} bytes is below the minimum of 6 MiB; give e.g. --memory 256m"),
                ));
            }
        }
        if let Some(c) = self.cpus {
            if !c.is_finite() || c < 0.01 {
                return Err(Error::invalid(
                    "cpus",
                    format!(
                        "{c} is not a CPU count; give a number of at least 0.01, e.g. --cpus 1.5"
                    ),
                ));
            }
            let host = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            if c > host {
                return Err(Error::invalid(
                    "cpus",
                    format!("{c} is more than the {host} CPUs this host has"),
                ));
            }
        }
        if self.pids == Some(0) {
            return Err(Error::invalid(
                "pids-limit",
                "0 would forbid the workload itself; give at least 1",
            ));
        }
        if let Some(w) = self.io_weight {
            if !(10..=1000).contains(&w) {
                return Err(Error::invalid(
                    "io-weight",
                    format!("{w} is outside the range 10..=1000"),
                ));
            }
        }
        Ok(())
    }
}

/// The user and group the workload runs as, inside its boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Largest uid or gid accepted: the 16-bit range every image and both modes
/// map (65535 is reserved as the "no id" value).
pub const MAX_ID: u32 = 65534;

/// Where a volume's data lives on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A host directory, bind-mounted (container mode only).
    Host(PathBuf),
    /// A named volume kept by isolate under `ISOLATE_HOME/volumes` as an
    /// ext4 image, usable from both modes, persisting across runs.
    Named(String),
}

/// A volume mounted into the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The data.
    pub source: VolumeSource,
    /// Absolute path inside the workload.
    pub target: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Volume {
    /// A host directory bind-mounted at `target`.
    pub fn host(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        Volume {
            source: VolumeSource::Host(source.into()),
            target: target.into(),
            read_only: false,
        }
    }

    /// A named, persistent volume mounted at `target`.
    pub fn named(name: impl Into<String>, target: impl Into<PathBuf>) -> Self {
        Volume {
            source: VolumeSource::Named(name.into()),
            target: target.into(),
            read_only: false,
        }
    }

    /// Makes the volume read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    fn validate(&self) -> Result<()> {
        let field = format!("volume {}", self.target.display());
        check_inside_path(&field, &self.target)?;
        if self.target == Path::new("/") {
            return Err(Error::invalid(field, "a volume cannot replace the root"));
        }
        match &self.source {
            VolumeSource::Host(src) => {
                if !src.is_absolute() {
                    return Err(Error::invalid(
                        field,
                        format!("source {} must be an absolute path", src.display()),
                    ));
                }
                if !src.exists() {
                    return Err(Error::invalid(
                        field,
                        format!(
                            "source {} does not exist on the host; create it first",
                            src.display()
                        ),
                    ));
                }
            }
            VolumeSource::Named(name) => check_name(&field, name)?,
        }
        Ok(())
    }
}

/// Options that only VM mode uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmOptions {
    /// The guest kernel (ELF `vmlinux` or `bzImage`); default: discovered.
    pub kernel: Option<PathBuf>,
    /// Number of vCPUs; default: `ceil(cpus)` or 1.
    pub vcpus: Option<u32>,
    /// Copy the guest kernel's console to stderr.
    pub console_log: bool,
}

/// Capability changes relative to the default set (container mode).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Capabilities to add, e.g. `NET_ADMIN` (with or without `CAP_`).
    pub add: Vec<String>,
    /// Capabilities to drop; `ALL` drops every one.
    pub drop: Vec<String>,
}

/// One program to run behind an isolation boundary, and how.
///
/// ```
/// use isolate_core::{Workload, Stdio};
/// use std::time::Duration;
///
/// let mut w = Workload::new("/bin/sh");
/// w.arg("-c")
///     .arg("echo $GREETING")
///     .env("GREETING", "hello")
///     .memory(256 << 20)
///     .cpus(0.5)
///     .timeout(Duration::from_secs(30))
///     .stdout(Stdio::Piped);
/// assert_eq!(w.argv(), ["/bin/sh", "-c", "echo $GREETING"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Workload {
    /// Program and arguments; `argv[0]` is looked up in the root's `PATH`
    /// when it has no `/`.
    pub argv: Vec<String>,
    /// Environment (in addition to a default `PATH`, `HOME` and `HOSTNAME`).
    pub env: Vec<(String, String)>,
    /// Working directory inside the workload (absolute); default `/`.
    pub cwd: Option<PathBuf>,
    /// User and group inside; default root (0:0).
    pub user: Option<User>,
    /// Hostname inside; default: the name, else `isolate`.
    pub hostname: Option<String>,
    /// Root filesystem directory on the host; default: the project's rootfs.
    pub rootfs: Option<PathBuf>,
    /// Root mounted read-only (no writable layer; `/tmp` stays writable).
    pub read_only: bool,
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// Resource limits.
    pub limits: Limits,
    /// Network policy.
    pub network: Network,
    /// Published ports (`Network::Bridge` only).
    pub publish: Vec<Publish>,
    /// Wall-clock limit; the workload is killed and reported as timed out.
    pub timeout: Option<Duration>,
    /// A terminal: the workload's fds 0-2 are a pty, its controlling
    /// terminal, in place of `stdin`/`stdout`/`stderr`; the master is
    /// [`Running::take_tty`](crate::Running::take_tty). Container mode only
    /// for now.
    pub tty: bool,
    /// Standard input.
    pub stdin: Stdio,
    /// Standard output.
    pub stdout: Stdio,
    /// Standard error.
    pub stderr: Stdio,
    /// A name, for `isolate ps/stats/update/kill`; unnamed runs are private.
    pub name: Option<String>,
    /// VM-mode options.
    pub vm: VmOptions,
    /// Container-mode capability changes.
    pub capabilities: Capabilities,
    /// Host devices made available inside (container mode), beyond
    /// Docker's default set.
    pub devices: Vec<Device>,
    /// Seccomp filter (`--security-opt seccomp=...`; container mode only
    /// for now: VM mode refuses anything but the default).
    pub seccomp: Seccomp,
}

/// A host device node made available inside the workload (docker's
/// `--device HOST[:CONTAINER][:rwm]`), container mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device node on the host, e.g. `/dev/fuse`.
    pub host: PathBuf,
    /// Where it appears inside (absolute); by default the same path.
    pub container: PathBuf,
    /// Allowed access, a non-empty subset of `rwm` (read, write, mknod).
    pub access: String,
}

impl Device {
    fn validate(&self) -> Result<()> {
        let field = format!("device {}", self.host.display());
        if !self.host.is_absolute() {
            return Err(Error::invalid(
                field,
                "give the host device as an absolute path, e.g. /dev/fuse",
            ));
        }
        check_inside_path(&field, &self.container)?;
        if self.access.is_empty() || !self.access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(Error::invalid(
                field,
                format!(
                    "{:?} is not an access mode; use letters of rwm",
                    self.access
                ),
            ));
        }
        Ok(())
    }
}

impl Workload {
    /// A workload that runs `program` with no arguments.
    pub fn new(program: impl Into<String>) -> Self {
        Workload {
            argv: vec![program.into()],
            ..Default::default()
        }
    }

    /// The program and its arguments.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Appends an argument.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.argv.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (a later value for a key wins).
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Sets the working directory inside the workload.
    pub fn current_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the user and group inside the workload.
    pub fn user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.user = Some(User { uid, gid });
        self
    }

    /// Sets the hostname inside the workload.
    pub fn hostname(&mut self, name: impl Into<String>) -> &mut Self {
        self.hostname = Some(name.into());
        self
    }

    /// Sets the root filesystem directory.
    pub fn rootfs(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.rootfs = Some(dir.into());
        self
    }

    /// Makes the root read-only.
    pub fn read_only(&mut self, yes: bool) -> &mut Self {
        self.read_only = yes;
        self
    }

    /// Adds a volume.
    pub fn volume(&mut self, volume: Volume) -> &mut Self {
        self.volumes.push(volume);
        self
    }

    /// Sets the memory limit in bytes.
    pub fn memory(&mut self, bytes: u64) -> &mut Self {
        self.limits.memory = Some(bytes);
        self
    }

    /// Sets the CPU limit (fractional CPUs).
    pub fn cpus(&mut self, cpus: f64) -> &mut Self {
        self.limits.cpus = Some(cpus);
        self
    }

    /// Sets the process limit.
    pub fn pids(&mut self, max: u64) -> &mut Self {
        self.limits.pids = Some(max);
        self
    }

    /// Sets the block-IO weight (10..=1000).
    pub fn io_weight(&mut self, weight: u16) -> &mut Self {
        self.limits.io_weight = Some(weight);
        self
    }

    /// Sets the network policy.
    pub fn network(&mut self, network: Network) -> &mut Self {
        self.network = network;
        self
    }

    /// Publishes a port (needs [`Network::Bridge`]).
    pub fn publish(&mut self, publish: Publish) -> &mut Self {
        self.publish.push(publish);
        self
    }

    /// Sets the wall-clock timeout.
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = Some(timeout);
        self
    }

    /// Connects standard input.
    pub fn stdin(&mut self, stdio: Stdio) -> &mut Self {
        self.stdin = stdio;
        self
    }

    /// Connects standard output.
    pub fn stdout(&mut self, stdio: Stdio) -> &mut Self {
        self.stdout = stdio;
        self
    }

    /// Connects standard error.
    pub fn stderr(&mut self, stdio: Stdio) -> &mut Self {
        self.stderr = stdio;
        self
    }

    /// Sets the seccomp policy.
    pub fn seccomp(&mut self, policy: Seccomp) -> &mut Self {
        self.seccomp = policy;
        self
    }

    /// Names the workload (for `isolate ps/stats/update/kill`).
    pub fn name(&mut self, name: impl Into<String>) -> &mut Self {
        self.name = Some(name.into());
        self
    }

    /// The hostname the workload sees.
    pub fn effective_hostname(&self) -> &str {
        self.hostname
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or("isolate")
    }

    /// The environment the workload sees: defaults, then [`Workload::env`].
    pub fn effective_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_string(), crate::exec::DEFAULT_PATH.to_string()),
            (
                "HOSTNAME".to_string(),
                self.effective_hostname().to_string(),
            ),
            (
                "HOME".to_string(),
                if self.user.map_or(0, |u| u.uid) == 0 {
                    "/root".to_string()
                } else {
                    "/".to_string()
                },
            ),
        ];
        for (k, v) in &self.env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }

    /// Checks the workload once, before any backend touches the host.
    /// The error names the field and what to do.
    pub fn validate(&self) -> Result<()> {
        match self.argv.first() {
            None => return Err(Error::invalid("command", "no command given")),
            Some(p) if p.is_empty() => {
                return Err(Error::invalid("command", "the program name is empty"))
            }
            _ => {}
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(Error::invalid("command", "an argument contains a NUL byte"));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(Error::invalid(
                    "env",
                    format!("{k:?} is not a valid variable name; use KEY=VALUE"),
                ));
            }
        }
        if let Some(cwd) = &self.cwd {
            check_inside_path("workdir", cwd)?;
        }
        if let Some(u) = self.user {
            if u.uid > MAX_ID || u.gid > MAX_ID {
                return Err(Error::invalid(
                    "user",
                    format!(
                        "{}:{} is out of range; ids go from 0 to {MAX_ID}",
                        u.uid, u.gid
                    ),
                ));
            }
        }
        if let Some(h) = &self.hostname {
            check_hostname(h)?;
        }
        if let Some(root) = &self.rootfs {
            if !root.is_dir() {
                return Err(Error::invalid(
                    "rootfs",
                    format!(
                        "{} is not a directory; give a root filesystem directory (e.g. an unpacked image)",
                        root.display()
                    ),
                ));
            }
        }
        if let Some(name) = &self.name {
            check_name("name", name)?;
        }
        if !self.publish.is_empty() && self.network != Network::Bridge {
            return Err(Error::invalid(
                "publish",
                "a published port needs --network bridge (the workload's own address on isolate's bridge)",
            ));
        }
        for (i, p) in self.publish.iter().enumerate() {
            if p.host_port == 0 || p.port == 0 {
                return Err(Error::invalid("publish", "port 0 cannot be published"));
            }
            if self.publish[..i]
                .iter()
                .any(|o| o.host_port == p.host_port && o.protocol == p.protocol)
            {
                return Err(Error::invalid(
                    "publish",
                    format!(
                        "host port {}/{} is published twice",
                        p.host_port,
                        p.protocol.as_str()
                    ),
                ));
            }
        }
        for (i, v) in self.volumes.iter().enumerate() {
            v.validate()?;
            if self.volumes[..i].iter().any(|o| o.target == v.target) {
                return Err(Error::invalid(
                    format!("volume {}", v.target.display()),
                    "two volumes share this target",
                ));
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            d.validate()?;
            if self.devices[..i].iter().any(|o| o.container == d.container) {
                return Err(Error::invalid(
                    format!("device {}", d.container.display()),
                    "two devices share this path",
                ));
            }
        }
        self.limits.validate()?;
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::invalid(
                "timeout",
                "must be more than zero, e.g. --timeout 30s",
            ));
        }
        if self.vm.vcpus == Some(0) {
            return Err(Error::invalid("vcpus", "a VM needs at least one vCPU"));
        }
        self.seccomp.validate()?;
        Ok(())
    }
}

/// A path inside the workload: absolute, without `..`.
fn check_inside_path(field: &str, path: &Path) -> Result<()> {
    if !path.is_absolute() {
        return Err(Error::invalid(
            field,
            format!(
                "{} must be an absolute path inside the workload",
                path.display()
            ),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid(
            field,
            format!("{} leaves the root with '..'", path.display()),
        ));
    }
    Ok(())
}

/// A workload or volume name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
pub fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{name:?} is not a valid name: use letters, digits, '_', '.', '-', starting with a letter or digit, at most 64"),
        ))
    }
}

fn check_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "hostname",
            format!("{h:?} is not a valid hostname (letters, digits, '-', dots; at most 64)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: Error) -> String {
        match e {
            Error::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_plain_workload() {
        Workload::new("/bin/true").validate().unwrap();
    }

    #[test]
    fn rejects_empty_argv() {
        let w = Workload::default();
        assert_eq!(field_of(w.validate().unwrap_err()), "command");
    }

    #[test]
    fn rejects_zero_memory_limit() {
        let mut w = Workload::new("/bin/true");
        w.memory(0);
        assert_eq!(field_of(w.validate().unwrap_err()), "memory");
    }

    #[test]
    fn rejects_negative_and_nan_cpus() {
        for c in [-1.0, 0.0, f64::NAN, f64::INFINITY] {
            let mut w = Workload::new("/bin/true");
            w.cpus(c);
            assert_eq!(field_of(w.validate().unwrap_err()), "cpus", "{c}");
        }
    }

    #[test]
    fn rejects_zero_pids() {
        let mut w = Workload::new("/bin/true");
        w.pids(0);
        assert_eq!(field_of(w.validate().unwrap_err()), "pids-limit");
    }

    #[test]
    fn rejects_relative_workdir_and_dotdot() {
        let mut w = Workload::new("/bin/true");
        w.current_dir("tmp");
        assert_eq!(field_of(w.validate().unwrap_err()), "workdir");
        w.current_dir("/tmp/../..");
        assert_eq!(field_of(w.validate().unwrap_err()), "workdir");
    }

    #[test]
    fn rejects_missing_rootfs() {
        let mut w = Workload::new("/bin/true");
        w.rootfs("/nonexistent/rootfs");
        assert_eq!(field_of(w.validate().unwrap_err()), "rootfs");
    }

    #[test]
    fn rejects_volume_problems() {
        let mut w = Workload::new("/bin/true");
        w.volume(Volume::host("/nonexistent/src", "/data"));
        assert_eq!(field_of(w.validate().unwrap_err()), "volume /data");

        let mut w = Workload::new("/bin/true");
        w.volume(Volume::host("/tmp", "data"));
        assert_eq!(field_of(w.validate().unwrap_err()), "volume data");

        let mut w = Workload::new("/bin/true");
        w.volume(Volume::named("bad name", "/data"));
        assert_eq!(field_of(w.validate().unwrap_err()), "volume /data");

        let mut w = Workload::new("/bin/true");
        w.volume(Volume::host("/tmp", "/"));
        assert_eq!(field_of(w.validate().unwrap_err()), "volume /");
    }

    #[test]
    fn rejects_out_of_range_user() {
        let mut w = Workload::new("/bin/true");
        w.user(70000, 0);
        assert_eq!(field_of(w.validate().unwrap_err()), "user");
    }

    #[test]
    fn rejects_bad_hostname_and_name() {
        let mut w = Workload::new("/bin/true");
        w.hostname("bad host");
        assert_eq!(field_of(w.validate().unwrap_err()), "hostname");
        let mut w = Workload::new("/bin/true");
        w.name("-x");
        assert_eq!(field_of(w.validate().unwrap_err()), "name");
    }

    #[test]
    fn rejects_zero_timeout_and_vcpus() {
        let mut w = Workload::new("/bin/true");
        w.timeout(Duration::ZERO);
        assert_eq!(field_of(w.validate().unwrap_err()), "timeout");
        let mut w = Workload::new("/bin/true");
        w.vm.vcpus = Some(0);
        assert_eq!(field_of(w.validate().unwrap_err()), "vcpus");
    }

    #[test]
    fn rejects_an_unsupported_seccomp_profile() {
        let mut w = Workload::new("/bin/true");
        w.seccomp(Seccomp::Profile(Box::new(crate::SeccompProfile {
            default_action: crate::SeccompAction::Notify,
            default_errno_ret: None,
            architectures: vec![],
            arch_map: vec![],
            syscalls: vec![],
        })));
        assert_eq!(field_of(w.validate().unwrap_err()), "security-opt");
        w.seccomp(Seccomp::Unconfined);
        w.validate().unwrap();
    }

    #[test]
    fn later_env_wins_and_overrides_defaults() {
        let mut w = Workload::new("/bin/true");
        w.env("A", "1").env("A", "2").env("PATH", "/bin");
        let env = w.effective_env();
        assert!(env.contains(&("A".into(), "2".into())));
        assert!(!env.contains(&("A".into(), "1".into())));
        assert_eq!(env.iter().filter(|(k, _)| k == "PATH").count(), 1);
        assert!(env.contains(&("PATH".into(), "/bin".into())));
    }
}
