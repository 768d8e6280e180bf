//! The parent's side of starting a container: everything is prepared here
//! (paths, strings, descriptors, cgroup, loop devices), then one `clone3`
//! starts the shim in new pid, mount, uts, ipc and net namespaces. On
//! cgroup v1 the cgroup is made after the `clone3`, while the shim builds
//! its root, and handed to the shim with its go-ahead.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use isolate_cgroups::{Cgroup, Placement, Spec};
use isolate_core::sys::{CloneArgs, CLONE_INTO_CGROUP};
use isolate_core::{
    error_chain, exec, paths, state, Error, ExecFailure, Mode, Network, Stdio, VolumeSource,
    Workload,
};

use crate::child::{self, ChildPlan, Report, RootMount, Stage};
use crate::detached::{Detach, Extras};
use crate::error::ContainerError;
use crate::exec::ExecSpec;
use crate::mounts::{self, Op};
use isolate_cgroups::devices::{DeviceRule, DEFAULT_RULES};

use crate::relay::{self, Relays};
use crate::rundir::{self, RunDir};
use crate::running::{Container, Resources};
use isolate_policy::{caps, seccomp};

use crate::{sys, volumes};

fn cstr(bytes: impl Into<Vec<u8>>, what: &str) -> Result<CString, Error> {
    CString::new(bytes).map_err(|_| Error::invalid(what, "contains a NUL byte"))
}

fn path_c(p: &Path) -> Result<CString, Error> {
    cstr(p.as_os_str().as_bytes(), "path")
}

/// A connected pair of unix stream sockets, both close-on-exec.
pub(crate) fn socketpair() -> Result<(OwnedFd, OwnedFd), ContainerError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(ContainerError::last_os("create a socket pair"));
    }
    // SAFETY: socketpair returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pipe: (read end, write end), both close-on-exec.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), ContainerError> {
    isolate_core::sys::pipe().map_err(|e| ContainerError::host("create a pipe", e))
}

/// Escapes an overlay option value (`\`, `,` and `:` are special).
fn overlay_escape(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in p.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

pub(crate) fn last_cap() -> u32 {
    static LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        sys::read_proc("/proc/sys/kernel/cap_last_cap")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40)
    })
}

/// A host device node given with `--device`, as found on the host.
struct HostDevice {
    /// Its path inside the container.
    container: String,
    /// `S_IFCHR` or `S_IFBLK` with the host node's permission bits.
    mode: u32,
    /// The host path (rootless: bound, as no node can be made).
    host: PathBuf,
    /// The cgroup rule that lets it open.
    rule: DeviceRule,
}

/// Looks up each `--device` on the host: it must be a character or block
/// device node (a symlink to one is followed, as docker does).
fn host_devices(w: &Workload) -> Result<Vec<HostDevice>, Error> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    w.devices
        .iter()
        .map(|d| {
            let field = format!("device {}", d.host.display());
            let m = std::fs::metadata(&d.host)
                .map_err(|e| Error::invalid(&field, format!("cannot find it on the host: {e}")))?;
            let ft = m.file_type();
            let (major, minor) = (libc::major(m.rdev()), libc::minor(m.rdev()));
            let (kind, rule) = if ft.is_char_device() {
                (libc::S_IFCHR, DeviceRule::char(major, minor, &d.access))
            } else if ft.is_block_device() {
                (libc::S_IFBLK, DeviceRule::block(major, minor, &d.access))
            } else {
                return Err(Error::invalid(
                    &field,
                    "not a device node; give a character or block device such as /dev/fuse",
                ));
            };
            let container = d
                .container
                .to_str()
                .ok_or_else(|| Error::invalid(&field, "the container path is not UTF-8"))?
                .to_string();
            Ok(HostDevice {
                container,
                mode: kind | (m.mode() & 0o777),
                host: d.host.clone(),
                rule,
            })
        })
        .collect()
}

/// Paths `execve` is tried on (see [`exec::candidates`]), with the
/// workload's PATH.
pub(crate) fn candidates(program: &str, env: &[(String, String)]) -> Result<Vec<CString>, Error> {
    exec::candidates(program, exec::search_path(env))
        .iter()
        .map(|p| cstr(p.as_os_str().as_bytes(), "command"))
        .collect()
}

/// The workload's network, as the shim gets it.
#[derive(Default)]
struct NetPlan {
    /// A namespace to enter (`bridge`, `container:NAME`).
    netns_fd: Option<RawFd>,
    /// The host's namespace (`--network host`): no new one.
    host: bool,
    /// Files bound read-only over the image's: (host file, path inside).
    etc: Vec<(PathBuf, &'static str)>,
}

/// Sets up the workload's network on the host: a place on the bridge
/// (held in `res` until the run ends), the named workload's namespace
/// (held in `shared` until the clone), or nothing.
fn network(
    w: &Workload,
    id: &str,
    res: &mut Resources,
    shared: &mut Option<OwnedFd>,
) -> Result<NetPlan, Error> {
    match &w.network {
        Network::None | Network::Loopback => Ok(NetPlan::default()),
        // The host's resolvers and hosts, read-only, as docker does.
        Network::Host => Ok(NetPlan {
            host: true,
            etc: [
                ("/etc/hosts", "/etc/hosts"),
                ("/etc/resolv.conf", "/etc/resolv.conf"),
            ]
            .into_iter()
            .filter(|(h, _)| Path::new(h).is_file())
            .map(|(h, inside)| (PathBuf::from(h), inside))
            .collect(),
            ..NetPlan::default()
        }),
        Network::Bridge => {
            let att = isolate_net::attach(&isolate_net::Request {
                id,
                hostname: w.effective_hostname(),
                publish: &w.publish,
            })
            .map_err(ContainerError::Net)?;
            let plan = NetPlan {
                netns_fd: Some(att.netns().as_raw_fd()),
                host: false,
                etc: att.etc_files().to_vec(),
            };
            res.net = Some(att);
            Ok(plan)
        }
        Network::Container(name) => {
            let rec = state::get_live(name)?;
            if rec.mode != Mode::Container {
                return Err(Error::invalid(
                    "network",
                    format!("container:{name}: {name} is a VM; only a container's network namespace can be shared"),
                ));
            }
            let path = format!("/proc/{}/ns/net", rec.pid);
            let f = File::open(&path).map_err(|e| Error::io("cannot open", &path, e))?;
            let fd = OwnedFd::from(f);
            let raw = fd.as_raw_fd();
            *shared = Some(fd);
            Ok(NetPlan {
                netns_fd: Some(raw),
                ..NetPlan::default()
            })
        }
    }
}

/// The host-side pieces a run holds until it ends.
struct Prepared {
    plan: ChildPlan,
    /// Descriptors only the child uses; closed after clone.
    child_fds: Vec<OwnedFd>,
    sync_wr: OwnedFd,
    exec_rd: OwnedFd,
    status_rd: OwnedFd,
    parent_stdio: [Option<File>; 3],
    relays: Relays,
    /// Whether the shim gets a network namespace of its own from `clone3`.
    new_netns: bool,
}

/// The application's standard streams: descriptors for the child, the
/// caller's ends of piped streams, and the relays for streams that are the
/// caller's terminal (see [`relay`](crate::relay)).
pub(crate) struct StdioPlan {
    pub(crate) child: [RawFd; 3],
    pub(crate) parent: [Option<File>; 3],
    pub(crate) relays: Relays,
}

/// `raw`: streams the caller's are the application's as they are, with
/// no relay (an OCI container outlives isolate; its engine gave them).
pub(crate) fn stdio_fds(
    w: &Workload,
    child_fds: &mut Vec<OwnedFd>,
    raw: bool,
) -> Result<StdioPlan, Error> {
    let mut fds = [-1; 3];
    let mut mine: [Option<File>; 3] = [None, None, None];
    let mut relays = Relays::default();
    let mut null: Option<RawFd> = None;
    for (i, s) in [w.stdin, w.stdout, w.stderr].into_iter().enumerate() {
        if w.tty {
            break; // the pty is the workload's stdio (see `prepare`)
        }
        match s {
            Stdio::Inherit if !raw && relay::is_terminal(i as RawFd) => {
                let (r, wr) = pipe()?;
                let (theirs, ours) = if i == 0 { (r, wr) } else { (wr, r) };
                fds[i] = theirs.as_raw_fd();
                child_fds.push(theirs);
                if i == 0 {
                    relays.input(File::from(ours)).map_err(|e| {
                        ContainerError::host("relay the terminal to the container", e)
                    })?;
                } else {
                    relays.output(File::from(ours), i as RawFd);
                }
            }
            Stdio::Inherit => {}
            Stdio::Null => {
                let fd = match null {
                    Some(fd) => fd,
                    None => {
                        let f = std::fs::OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open("/dev/null")
                            .map_err(|e| Error::io("cannot open", "/dev/null", e))?;
                        let fd = f.as_raw_fd();
                        child_fds.push(f.into());
                        null = Some(fd);
                        fd
                    }
                };
                fds[i] = fd;
            }
            Stdio::Piped => {
                let (r, wr) = pipe()?;
                let (theirs, ours) = if i == 0 { (r, wr) } else { (wr, r) };
                fds[i] = theirs.as_raw_fd();
                child_fds.push(theirs);
                mine[i] = Some(File::from(ours));
            }
        }
    }
    Ok(StdioPlan {
        child: fds,
        parent: mine,
        relays,
    })
}

/// How the shim is placed: rootless (a user namespace), joining its cgroup
/// late, the network it enters, and whether it is an OCI runtime's
/// detached, held container.
struct ShimSetup<'a> {
    rootless: bool,
    late_join: bool,
    net: &'a NetPlan,
    detach: Option<&'a Detach<'a>>,
}

fn prepare(
    w: &Workload,
    rootfs: &Path,
    devices: &[HostDevice],
    res: &mut Resources,
    setup: ShimSetup<'_>,
) -> Result<Prepared, Error> {
    let ShimSetup {
        rootless,
        late_join,
        net,
        detach,
    } = setup;
    let none = Extras::default();
    let extras = detach.map_or(&none, |d| d.extras);
    let scratch = rundir::base();
    // Resolve every volume target first: bad input fails before anything is made.
    let mut targets = Vec::with_capacity(w.volumes.len());
    for v in &w.volumes {
        let field = format!("volume {}", v.target.display());
        let target = volumes::resolve_in_root(rootfs, &v.target)
            .map_err(|reason| Error::invalid(&field, reason))?;
        let target = target
            .to_str()
            .ok_or_else(|| Error::invalid(&field, "the target is not UTF-8"))?
            .to_string();
        let is_dir = match &v.source {
            VolumeSource::Host(src) => std::fs::metadata(src)
                .map_err(|_| {
                    Error::invalid(
                        &field,
                        format!(
                            "source {} does not exist on the host; create it first",
                            src.display()
                        ),
                    )
                })?
                .is_dir(),
            VolumeSource::Named(_) => true,
        };
        targets.push((target, is_dir));
    }
    for v in &w.volumes {
        if let VolumeSource::Named(name) = &v.source {
            let image = isolate_image::volume::ensure(name)?;
            res.volumes.push(volumes::attach(&image, v.read_only)?);
        }
    }

    let mut child_fds: Vec<OwnedFd> = Vec::new();
    let (sync_rd, sync_wr) = socketpair()?;
    let (exec_rd, exec_wr) = pipe()?;
    let (status_rd, status_wr) = pipe()?;
    let StdioPlan {
        child: stdio,
        parent: parent_stdio,
        relays,
    } = stdio_fds(w, &mut child_fds, detach.is_some())?;
    // A network namespace given by an OCI engine (by path).
    let engine_netns = match &extras.net_ns {
        Some(path) => {
            let f = File::open(path).map_err(|e| {
                Error::invalid(
                    "network namespace",
                    format!("cannot open {}: {e}", path.display()),
                )
            })?;
            let fd = OwnedFd::from(f);
            let raw = fd.as_raw_fd();
            child_fds.push(fd);
            raw
        }
        None => -1,
    };
    let hold_fd = detach.map_or(-1, |d| d.hold);
    let parent_pidfd = sys::pidfd_self().map_err(|e| {
        ContainerError::host(
            "open a pidfd of isolate",
            std::io::Error::from_raw_os_error(e),
        )
    })?;
    let mut keep: Vec<RawFd> = vec![
        parent_pidfd.as_raw_fd(),
        sync_rd.as_raw_fd(),
        exec_wr.as_raw_fd(),
        status_wr.as_raw_fd(),
    ];
    keep.extend(stdio.iter().copied().filter(|&fd| fd >= 0));
    let console_fd = extras.console_socket.unwrap_or(-1);
    keep.extend(
        [engine_netns, hold_fd, console_fd]
            .into_iter()
            .filter(|&fd| fd >= 0),
    );
    keep.extend(res.volumes.iter().filter_map(|a| a.device_fd()));
    keep.extend(net.netns_fd);
    keep.sort_unstable();
    keep.dedup();

    // Bind sources get descriptor numbers above every kept one.
    let mut next_fd = keep.last().copied().unwrap_or(2) + 1;
    let mut volume_sources = Vec::new();
    let dev_fds = if rootless {
        let mut fds = [0; mounts::DEVICES.len()];
        for (slot, (name, _, _)) in fds.iter_mut().zip(mounts::DEVICES) {
            volume_sources.push((cstr(format!("/dev/{name}"), "device")?, next_fd));
            *slot = next_fd;
            next_fd += 1;
        }
        Some(fds)
    } else {
        None
    };
    let mut premounts = Vec::with_capacity(mounts::PREMOUNTS.len());
    let mut premount_fds = [0; mounts::PREMOUNTS.len()];
    for (slot, (fstype, _, flags)) in premount_fds.iter_mut().zip(mounts::PREMOUNTS) {
        premounts.push((
            cstr(fstype, "mount")?,
            path_c(&scratch.join(fstype))?,
            flags,
            next_fd,
        ));
        *slot = next_fd;
        next_fd += 1;
    }
    let mut ops = mounts::standard(w.read_only, premount_fds, dev_fds);
    for t in &extras.tmpfs {
        mounts::tmpfs(&t.target, t.flags, &t.data, &mut ops);
    }
    let mut named = res.volumes.iter();
    for (i, (v, (target, is_dir))) in w.volumes.iter().zip(&targets).enumerate() {
        if *is_dir {
            mounts::mkdir_p(target, &mut ops);
        } else {
            if let Some(parent) = Path::new(target).parent().and_then(Path::to_str) {
                mounts::mkdir_p(parent, &mut ops);
            }
            ops.push(Op::File {
                path: cstr(target.as_str(), "volume")?,
            });
        }
        match &v.source {
            VolumeSource::Host(src) => {
                volume_sources.push((path_c(src)?, next_fd));
                mounts::bind_fd(next_fd, target, v.read_only, &mut ops);
                if let Some(&attr) = extras.volume_attrs.get(i).filter(|&&a| a != 0) {
                    ops.push(Op::SetAttr {
                        target: cstr(target.as_str(), "volume")?,
                        attr,
                    });
                }
                next_fd += 1;
            }
            VolumeSource::Named(_) => {
                let att = named.next().expect("one attachment per named volume");
                let fd = att.device_fd().expect("attached until clone");
                mounts::ext4_fd(fd, target, &mut ops);
            }
        }
    }
    for d in devices {
        if let Some(parent) = Path::new(&d.container).parent().and_then(Path::to_str) {
            mounts::mkdir_p(parent, &mut ops);
        }
        let path = cstr(d.container.as_str(), "device")?;
        if rootless {
            // No device node can be made in a user namespace: bind the host's.
            volume_sources.push((path_c(&d.host)?, next_fd));
            ops.push(Op::File { path: path.clone() });
            ops.push(Op::Attach {
                fd: next_fd,
                target: path,
            });
            next_fd += 1;
        } else {
            ops.push(Op::Mknod {
                path,
                mode: d.mode,
                // Set for every device rule made from a node.
                major: d.rule.major.unwrap_or(0),
                minor: d.rule.minor.unwrap_or(0),
            });
        }
    }
    // `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` of the
    // workload's network, bound read-only: the image is not written.
    for (host, inside) in &net.etc {
        let exists = volumes::resolve_in_root(rootfs, Path::new(inside))
            .is_ok_and(|p| rootfs.join(p.strip_prefix("/").unwrap_or(&p)).is_file());
        if !exists {
            mounts::mkdir_p("/etc", &mut ops);
            ops.push(Op::File {
                path: cstr(*inside, "network file")?,
            });
        }
        volume_sources.push((path_c(host)?, next_fd));
        mounts::bind_fd(next_fd, inside, true, &mut ops);
        next_fd += 1;
    }
    let mut late_ops = Vec::new();
    if extras.cgroupfs {
        mounts::cgroupfs(&host_cgroup_mounts(), &mut late_ops);
    }
    for m in &extras.masked {
        mounts::mask(&m.path, m.is_dir, &mut ops);
    }
    for p in &extras.read_only {
        mounts::read_only_path(p, &mut ops);
    }
    let tty = w.tty.then(|| {
        let size = [0, 1, 2]
            .into_iter()
            .find_map(isolate_core::pty::window_size)
            .map(|s| (s.rows, s.cols, s.xpixel, s.ypixel));
        child::TtyPlan {
            slave_fd: next_fd,
            size,
        }
    });
    let stdio = match tty {
        Some(t) => [t.slave_fd; 3],
        None => stdio,
    };
    let cwd = w.cwd.clone().unwrap_or_else(|| PathBuf::from("/"));
    if !w.read_only && cwd != Path::new("/") {
        mounts::mkdir_p(&cwd.to_string_lossy(), &mut ops);
    }
    if extras.bind_root && extras.read_only_root {
        ops.push(mounts::remount_ro("/", 0, false));
    }

    let env = w.effective_env();
    let argv: Vec<CString> = w
        .argv
        .iter()
        .map(|a| cstr(a.as_str(), "argument"))
        .collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstr(format!("{k}={v}"), "environment"))
        .collect::<Result<_, _>>()?;
    let root_mount = if w.read_only {
        RootMount::ReadOnlyBind
    } else if extras.bind_root {
        RootMount::Bind
    } else {
        let mut data = b"lowerdir=".to_vec();
        data.extend(overlay_escape(rootfs));
        data.extend(b",upperdir=");
        data.extend(overlay_escape(&scratch.join("upper")));
        data.extend(b",workdir=");
        data.extend(overlay_escape(&scratch.join("work")));
        data.extend(b",volatile");
        if rootless {
            // Whiteouts and opaque dirs as user.* xattrs (no trusted.* here).
            data.extend(b",userxattr");
        }
        RootMount::Overlay(cstr(data, "rootfs")?)
    };
    let user = w.user.unwrap_or(isolate_core::User { uid: 0, gid: 0 });
    let caps = caps::mask(&w.capabilities).map_err(ContainerError::from)?;
    let plan = ChildPlan {
        rootfs: path_c(rootfs)?,
        scratch: path_c(&scratch)?,
        scratch_dirs: if w.read_only || extras.bind_root {
            ["root", "proc", "sysfs"].as_slice()
        } else {
            ["upper", "work", "root", "proc", "sysfs"].as_slice()
        }
        .iter()
        .map(|d| path_c(&scratch.join(d)))
        .collect::<Result<_, _>>()?,
        new_root: path_c(&scratch.join("root"))?,
        root_mount,
        premounts,
        volume_sources,
        ops,
        late_ops,
        hostname: cstr(w.effective_hostname(), "hostname")?,
        loopback: w.network == Network::Loopback,
        netns_fd: net.netns_fd.unwrap_or(engine_netns),
        keep_fds: keep,
        rootless,
        late_join,
        parent_pidfd: parent_pidfd.as_raw_fd(),
        reset_signals: sys::handled_signals(),
        sync_rd: sync_rd.as_raw_fd(),
        exec_wr: exec_wr.as_raw_fd(),
        status_wr: status_wr.as_raw_fd(),
        stdio,
        tty,
        cwd: path_c(&cwd)?,
        uid: user.uid,
        gid: user.gid,
        caps,
        last_cap: last_cap(),
        filters: seccomp::filters(&w.seccomp, caps).map_err(ContainerError::Seccomp)?,
        candidates: candidates(&w.argv[0], &env)?,
        argv,
        envp,
        detached: detach.is_some(),
        hold_fd,
        sysctls: extras
            .sysctl
            .iter()
            .map(|(k, v)| {
                Ok((
                    cstr(format!("/proc/sys/{}", k.replace('.', "/")), "sysctl")?,
                    cstr(v.as_str(), "sysctl")?,
                ))
            })
            .collect::<Result<_, Error>>()?,
        groups: extras.groups.clone(),
        rlimits: extras.rlimits.clone(),
        console_fd,
        console_size: extras.console_size,
    };
    child_fds.extend([parent_pidfd, sync_rd, exec_wr, status_wr]);
    Ok(Prepared {
        plan,
        child_fds,
        sync_wr,
        exec_rd,
        status_rd,
        parent_stdio,
        relays,
        new_netns: net.netns_fd.is_none() && !net.host && engine_netns < 0,
    })
}

/// The host's cgroup file systems below `/sys/fs/cgroup`: the name of
/// each (relative path; empty for the root) and its mount options (the
/// v1 controllers, `None` for cgroup2).
fn host_cgroup_mounts() -> Vec<(String, Option<String>)> {
    let info = sys::read_proc("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        let (Some(point), Some(fstype), Some(opts)) = (f.get(4), f.get(dash + 1), f.get(dash + 3))
        else {
            continue;
        };
        let Some(name) = point
            .strip_prefix("/sys/fs/cgroup")
            .map(|n| n.trim_start_matches('/'))
        else {
            continue;
        };
        match *fstype {
            "cgroup2" => out.push((name.to_string(), None)),
            "cgroup" if !name.is_empty() && !name.contains('/') => {
                let keep: Vec<&str> = opts
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro"))
                    .collect();
                out.push((name.to_string(), Some(keep.join(","))));
            }
            _ => {}
        }
    }
    out
}

/// Starts the shim with `clone3`; returns its pid and pidfd.
fn clone_shim(p: &Prepared, cgroup_fd: Option<&OwnedFd>) -> Result<(u32, OwnedFd), Error> {
    let userns = if p.plan.rootless {
        libc::CLONE_NEWUSER as u64
    } else {
        0
    };
    let argv = child::ptr_array(&p.plan.argv);
    let envp = child::ptr_array(&p.plan.envp);
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: (libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_PIDFD) as u64
            | userns,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if p.new_netns {
        args.flags |= libc::CLONE_NEWNET as u64;
    }
    if let Some(fd) = cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // The child starts with every signal blocked: no handler of this
    // process may run in it, and the shim takes signals with sigwaitinfo.
    let old = sys::set_sigmask(true);
    // SAFETY: the child only calls `child::shim`, which never returns and
    // uses no allocator or lock; `args.pidfd` points at `pidfd`, which
    // outlives the call, and `args.cgroup` (if set) is `cgroup_fd`, open.
    let cloned = unsafe { isolate_core::sys::clone3(&args) };
    if let Ok(0) = cloned {
        child::shim(&p.plan, &argv, &envp);
    }
    sys::restore_sigmask(&old);
    let pid = cloned.map_err(|err| {
        Error::from(ContainerError::host(
            "create the container's namespaces (clone3)",
            err,
        ))
    })?;
    // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// Reads the exec pipe until end-of-file: `None` when the program started.
pub(crate) fn read_report(exec_rd: &OwnedFd) -> Result<Option<Report>, Error> {
    let mut buf = [0u8; Report::SIZE];
    let mut got = 0;
    while got < buf.len() {
        match sys::read(exec_rd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => {
                return Err(ContainerError::host(
                    "read the container's start report",
                    std::io::Error::from_raw_os_error(e),
                )
                .into())
            }
        }
    }
    Ok((got == Report::SIZE).then(|| Report::from_bytes(&buf)))
}

pub(crate) fn report_error(r: Report, plan: &ChildPlan, program: &str, w: &Workload) -> Error {
    let os = std::io::Error::from_raw_os_error(r.errno);
    let i = r.index as usize;
    let step = match r.stage {
        s if s == Stage::Exec as u32 => {
            return Error::Exec {
                kind: if r.index == 0 {
                    ExecFailure::NotFound
                } else {
                    ExecFailure::NotExecutable
                },
                program: program.to_string(),
            }
        }
        s if s == Stage::Root as u32 => child::ROOT_STEPS.get(i).map(|s| s.to_string()),
        s if s == Stage::Op as u32 => plan
            .ops
            .iter()
            .chain(&plan.late_ops)
            .nth(i)
            .map(Op::describe),
        s if s == Stage::App as u32 => {
            let what = child::APP_STEPS.get(i).map(|s| s.to_string());
            if i == 1 {
                let cwd = w.cwd.as_deref().unwrap_or(Path::new("/"));
                return Error::invalid(
                    "workdir",
                    format!("cannot enter {} in the container: {os}", cwd.display()),
                );
            }
            what
        }
        s if s == Stage::VolumeSource as u32 => plan
            .volume_sources
            .get(i)
            .map(|(p, _)| format!("open volume source {}", p.to_string_lossy())),
        _ => None,
    };
    ContainerError::Setup {
        step: step.unwrap_or_else(|| format!("step {}/{}", r.stage, r.index)),
        source: os,
    }
    .into()
}

/// Starts `w` in a new container.
pub fn spawn(w: &Workload) -> Result<Container, Error> {
    launch(w, None)
}

/// Starts `w` in a new container; `detach`: an OCI runtime's container,
/// set up and held before its application starts (see [`crate::detached`]).
pub(crate) fn launch(w: &Workload, detach: Option<&Detach>) -> Result<Container, Error> {
    let start = Instant::now();
    let rootless = isolate_core::sys::rootless();
    if rootless {
        if detach.is_some() {
            return Err(Error::Unavailable {
                backend: "container",
                reason: "isolate as an OCI runtime needs root".into(),
            });
        }
        check_rootless(w)?;
    }
    if w.argv.is_empty() {
        return Err(Error::invalid("command", "no command given"));
    }
    crate::cleanup_stale();
    let rootfs = paths::rootfs(w.rootfs.as_deref())?;
    let rootfs = rootfs
        .canonicalize()
        .map_err(|e| Error::io("cannot resolve the rootfs", &rootfs, e))?;
    let devices = host_devices(w)?;
    let mut device_rules = DEFAULT_RULES.to_vec();
    device_rules.extend(devices.iter().map(|d| d.rule));
    let (id, family, mut res) = match detach {
        Some(d) => {
            device_rules.extend(d.extras.device_rules.iter().copied());
            (
                d.id.to_string(),
                crate::detached::CGROUPS,
                Resources::none(),
            )
        }
        None => {
            let run = match &w.name {
                Some(name) => RunDir::claim_named(name)?,
                None => RunDir::claim_slot()?,
            };
            (run.id().to_string(), rundir::CGROUPS, Resources::new(run))
        }
    };
    // On cgroup v2 the shim starts inside its cgroup (CLONE_INTO_CGROUP),
    // so the cgroup comes first. On v1 the cgroup is made while the shim
    // builds its namespaces and root (the two overlap on separate CPUs),
    // and the shim joins it before it starts the application.
    let late_join = !rootless && !isolate_cgroups::root_is_unified();
    let mut early = None;
    if !rootless && !late_join {
        let cg = make_cgroup(family, &id, w, &device_rules)?;
        match cg.placement() {
            Ok(p) => early = Some(p),
            Err(e) => {
                let _ = cg.remove();
                return Err(ContainerError::Cgroup(error_chain(&e)).into());
            }
        }
        res.cgroup = Some(cg);
    }
    let cgroup_fd = match &early {
        Some(Placement::CloneInto(fd)) => Some(fd),
        _ => None,
    };
    let mut shared_netns = None;
    let net = network(w, &id, &mut res, &mut shared_netns)?;
    let setup = ShimSetup {
        rootless,
        late_join,
        net: &net,
        detach,
    };
    let prepared = prepare(w, &rootfs, &devices, &mut res, setup)?;
    let (pid, pidfd) = clone_shim(&prepared, cgroup_fd)?;
    drop(shared_netns);
    let Prepared {
        plan,
        child_fds,
        sync_wr,
        exec_rd,
        status_rd,
        parent_stdio,
        relays,
        ..
    } = prepared;
    drop(child_fds);
    // Started inside by `clone3`, or else to be moved in by pid.
    let add_pid = early.is_some() && cgroup_fd.is_none();
    drop(early);
    // Named volumes: the child holds their mounts now.
    for a in &mut res.volumes {
        a.release_device();
    }
    let mut handle = Container::new(
        id.clone(),
        pid,
        pidfd,
        status_rd,
        start,
        w.timeout,
        parent_stdio,
        relays,
        res,
    );
    // The shim's go-ahead, with the cgroup's v1 `tasks` files to join.
    let mut join: Vec<OwnedFd> = Vec::new();
    let mut late = None;
    if late_join {
        let made = make_cgroup(family, &id, w, &device_rules).and_then(|cg| {
            let placement = cg.placement();
            handle.set_cgroup(cg);
            placement.map_err(|e| ContainerError::Cgroup(error_chain(&e)).into())
        });
        match made {
            Ok(p) => late = Some(p),
            Err(e) => {
                handle.abort();
                return Err(e);
            }
        }
    }
    let placed = match (handle.cgroup_mut(), late) {
        // The shim moves itself in through the v1 `tasks` files: cheaper
        // than moving it by pid (see `Cgroup::self_join_files`).
        (Some(_), Some(Placement::SelfJoin(files))) => {
            join = files;
            Ok(())
        }
        // No v1 `tasks` file (e.g. an empty v1 layout that turned out
        // unified), or no fd to clone into: move the shim from here.
        (Some(cg), Some(_)) => cg.add_process(pid),
        (Some(cg), None) if add_pid => cg.add_process(pid),
        _ => Ok(()),
    }
    .map_err(|e| ContainerError::Cgroup(error_chain(&e)).into());
    if let Err(e) = placed {
        handle.abort();
        return Err(e);
    }
    if rootless {
        if let Err(e) = write_id_maps(pid) {
            handle.abort();
            return Err(e.into());
        }
    }
    // Only a shim that waits for it reads the go-ahead (rootless, or v1):
    // on v2 it may have run its program and ended already. If sending
    // fails, the shim has ended: its report, read next, says why.
    if rootless || late_join {
        let join_raw: Vec<RawFd> = join.iter().map(|f| f.as_raw_fd()).collect();
        let _ = sys::send_fds(sync_wr.as_raw_fd(), 1, &join_raw);
    }
    drop(join);
    match read_report(&exec_rd) {
        Ok(None) if detach.is_none() && plan.tty.is_some() => match receive_tty(&sync_wr) {
            Ok(master) => handle.set_tty(master),
            Err(e) => {
                handle.abort();
                return Err(e.into());
            }
        },
        Ok(None) if detach.is_none() => {}
        Ok(Some(r)) if detach.is_some() && r.stage == Stage::Ready as u32 => {}
        Ok(None) => {
            handle.abort();
            return Err(ContainerError::SetupDied("it ended before it was set up".into()).into());
        }
        Ok(Some(r)) => {
            handle.abort();
            return Err(report_error(r, &plan, &w.argv[0], w));
        }
        Err(e) => {
            handle.abort();
            return Err(e);
        }
    }
    handle.started(start.elapsed());
    let cgroup = handle.cgroup_mut().map(|c| c.rel_path().to_string());
    match state::register_named(w, Mode::Container, pid, cgroup.as_deref()) {
        Ok(Some(reg)) => {
            handle.set_registration(reg);
            // What `isolate exec` needs to harden its process the same way.
            let cwd = w.cwd.as_deref().unwrap_or(Path::new("/"));
            let spec = ExecSpec::of(&plan, w.effective_env(), cwd.to_string_lossy().into_owned());
            match spec.write(w.name.as_deref().unwrap_or_default()) {
                Ok(f) => handle.set_exec_spec(f),
                Err(e) => {
                    handle.abort();
                    return Err(e);
                }
            }
        }
        Ok(None) => {}
        Err(e) => {
            handle.abort();
            return Err(e);
        }
    }
    Ok(handle)
}

/// The master of the workload's pty, sent by the shim before it started
/// the application.
pub(crate) fn receive_tty(sync: &OwnedFd) -> Result<File, ContainerError> {
    let mut fds = [-1; sys::MAX_FDS];
    match sys::recv_fds(sync.as_raw_fd(), &mut fds) {
        // SAFETY: the kernel installed this descriptor for this process.
        Ok((Some(2), 1)) => Ok(unsafe { File::from_raw_fd(fds[0]) }),
        Ok((_, n)) => {
            for fd in &fds[..n] {
                sys::close(*fd);
            }
            Err(ContainerError::host(
                "receive the pty from the container",
                std::io::Error::from_raw_os_error(libc::EPROTO),
            ))
        }
        Err(e) => Err(ContainerError::host(
            "receive the pty from the container",
            std::io::Error::from_raw_os_error(e),
        )),
    }
}

/// Makes the container's cgroup `isolate/ct-<id>` with the workload's
/// limits, where only the devices `rules` allow can be opened. An I/O
/// weight the host cannot enforce is not an error.
fn make_cgroup(
    family: isolate_cgroups::Family,
    id: &str,
    w: &Workload,
    rules: &[DeviceRule],
) -> Result<Cgroup, Error> {
    let spec = Spec {
        limits: w.limits,
        devices: Some(rules),
        io_weight_best_effort: true,
        replace: false,
    };
    family
        .create(id, &spec)
        .map_err(|e| ContainerError::Cgroup(error_chain(&e)).into())
}

/// What rootless mode cannot do, refused up front with the reason.
fn check_rootless(w: &Workload) -> Result<(), Error> {
    let unavailable = |what: &str| {
        Error::Unavailable {
        backend: "container",
        reason: format!(
            "{what} needs root: run isolate as root, or drop it (rootless mode maps only your user, to root inside)"
        ),
    }
    };
    let l = &w.limits;
    if l.memory.is_some() || l.cpus.is_some() || l.pids.is_some() || l.io_weight.is_some() {
        return Err(unavailable("a resource limit (a cgroup)"));
    }
    if w.volumes
        .iter()
        .any(|v| matches!(v.source, VolumeSource::Named(_)))
    {
        return Err(unavailable("a named volume (a loop device)"));
    }
    if w.user.is_some_and(|u| u.uid != 0 || u.gid != 0) {
        return Err(unavailable("a user other than 0:0"));
    }
    if w.network == Network::Bridge {
        return Err(unavailable(
            "--network bridge (a veth on the host's isolate0 bridge, NAT)",
        ));
    }
    if w.name.is_some() {
        return Err(unavailable(
            "a named workload (state under ISOLATE_STATE and a cgroup)",
        ));
    }
    if !Path::new("/proc/self/ns/user").exists() {
        return Err(Error::Unavailable {
            backend: "container",
            reason: "this kernel has no user namespaces (CONFIG_USER_NS): run isolate as root"
                .into(),
        });
    }
    Ok(())
}

/// Maps the caller's uid and gid to 0 in the child's user namespace.
fn write_id_maps(pid: u32) -> Result<(), ContainerError> {
    let uid = isolate_core::sys::euid();
    // SAFETY: getegid(2) takes no arguments, touches no memory and cannot fail.
    let gid = unsafe { libc::getegid() };
    for (file, text) in [
        ("uid_map", format!("0 {uid} 1\n")),
        ("setgroups", "deny".to_string()),
        ("gid_map", format!("0 {gid} 1\n")),
    ] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text).map_err(|e| {
            ContainerError::host(
                format!("write {path} (are unprivileged user namespaces allowed? see /proc/sys/user/max_user_namespaces)"),
                e,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_with_a_slash_is_tried_as_given() {
        let c = candidates("./run.sh", &[]).unwrap();
        assert_eq!(c, [CString::new("./run.sh").unwrap()]);
    }

    #[test]
    fn bare_program_is_searched_in_the_workloads_path() {
        let env = vec![("PATH".to_string(), "/opt/bin::/usr/bin/".to_string())];
        let c = candidates("tool", &env).unwrap();
        assert_eq!(
            c,
            [
                CString::new("/opt/bin/tool").unwrap(),
                CString::new("/usr/bin/tool").unwrap()
            ]
        );
    }

    #[test]
    fn overlay_options_escape_separators() {
        assert_eq!(
            overlay_escape(Path::new("/a,b:c\\d")),
            b"/a\\,b\\:c\\\\d".to_vec()
        );
    }

    #[test]
    fn rootless_refuses_what_needs_root() {
        let mut w = Workload::new("/bin/true");
        w.memory(64 << 20);
        assert!(matches!(check_rootless(&w), Err(Error::Unavailable { .. })));
        let mut w = Workload::new("/bin/true");
        w.volume(isolate_core::Volume::named("v", "/data"));
        assert!(matches!(check_rootless(&w), Err(Error::Unavailable { .. })));
        let mut w = Workload::new("/bin/true");
        w.user(1000, 1000);
        assert!(matches!(check_rootless(&w), Err(Error::Unavailable { .. })));
        assert!(check_rootless(&Workload::new("/bin/true")).is_ok());
    }
}
