//! The container's processes, from `clone` to `execve`.
//!
//! The cloned child is the container's PID 1, a small shim: it builds the
//! root filesystem (overlay or read-only bind, `pivot_root`, the
//! [`mounts`](crate::mounts) recipe, volumes), sets the hostname and
//! loopback, waits until the parent has put it into its cgroup, forks the
//! application, then reaps zombies and forwards every signal it receives to
//! the application until the application ends; it then reports the
//! application's wait status on a pipe and exits, which ends every process
//! left in the pid namespace.
//!
//! The application process starts `vfork`-style (it shares the shim's
//! memory on a stack of its own until `execve`, so no page tables are
//! copied), drops to the workload's user and capabilities,
//! sets `no_new_privs`, installs the seccomp filters and executes the
//! program. Failures before `execve` are written as a [`Report`] on a
//! close-on-exec pipe; the pipe closing without data tells the parent the
//! program started.
//!
//! Everything here runs in a child of a possibly multi-threaded process:
//! it allocates nothing and calls only [`sys`](crate::sys) wrappers.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use libc::c_char;

use crate::mounts::Op;
use crate::sys;

/// Which part of the set-up failed, as reported on the exec pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    /// A root-switch step; the index names it ([`ROOT_STEPS`]).
    Root = 1,
    /// A step of [`ChildPlan::ops`]; the index is its position.
    Op = 2,
    /// An application step; the index names it ([`APP_STEPS`]).
    App = 3,
    /// `execve` failed for every candidate: index 0 not found, 1 not executable.
    Exec = 4,
    /// Opening volume source `index` before the root switch.
    VolumeSource = 5,
    /// Not a failure: a detached shim (OCI `create`) is set up and waits
    /// for its start signal.
    Ready = 6,
}

/// Names of the [`Stage::Root`] steps.
pub const ROOT_STEPS: [&str; 21] = [
    "make the mount tree private",
    "mount the overlay root",
    "bind-mount the root",
    "remount the root read-only",
    "enter the new root",
    "pivot_root into the new root",
    "detach the old root",
    "set the hostname",
    "bring up the loopback interface",
    "join the container's cgroup",
    "mount the scratch tmpfs",
    "create a scratch directory",
    "start a new session",
    "mount the container's proc or sysfs",
    "enter a cgroup namespace",
    "enter the workload's network namespace",
    "write a sysctl",
    "open a terminal and send it to the console socket",
    "open a pty in the container's devpts instance",
    "hand the pty's master to isolate",
    "join the workload's namespaces",
];

/// Names of the [`Stage::App`] steps.
pub const APP_STEPS: [&str; 11] = [
    "connect standard streams",
    "enter the working directory",
    "drop bounding capabilities",
    "set supplementary groups",
    "set the group id",
    "set the user id",
    "set capabilities",
    "install the seccomp filter",
    "set a resource limit",
    "take the terminal",
    "make the pty the controlling terminal",
];

/// A failure report from the child: 12 bytes on the exec pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The stage.
    pub stage: u32,
    /// The step within the stage.
    pub index: u32,
    /// The OS error.
    pub errno: i32,
}

impl Report {
    /// Wire size.
    pub const SIZE: usize = 12;

    /// Encodes the report.
    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.stage.to_ne_bytes());
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b[8..12].copy_from_slice(&self.errno.to_ne_bytes());
        b
    }

    /// Decodes a report.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Report {
            stage: u32::from_ne_bytes(word(0)),
            index: u32::from_ne_bytes(word(4)),
            errno: i32::from_ne_bytes(word(8)),
        }
    }
}

/// How the new root is made.
#[derive(Debug)]
pub enum RootMount {
    /// An overlay with these mount options (lowerdir, upperdir, workdir).
    Overlay(CString),
    /// A recursive bind mount of the rootfs, read-only with every mount
    /// below it.
    ReadOnlyBind,
    /// A recursive bind mount of the rootfs, writable (an OCI bundle's root).
    Bind,
}

/// Everything the child needs, prepared by the parent.
#[derive(Debug)]
pub struct ChildPlan {
    /// The rootfs directory on the host.
    pub rootfs: CString,
    /// Where the scratch tmpfs is mounted (inside this mount namespace only).
    pub scratch: CString,
    /// Directories made on the scratch tmpfs (overlay upper, work, root).
    pub scratch_dirs: Vec<CString>,
    /// Where the new root is mounted (on the scratch tmpfs).
    pub new_root: CString,
    /// Overlay or read-only bind.
    pub root_mount: RootMount,
    /// The [`PREMOUNTS`](crate::mounts::PREMOUNTS): type, mount point on
    /// the scratch tmpfs, flags, and the descriptor number their detached
    /// copy gets.
    pub premounts: Vec<(CString, CString, libc::c_ulong, RawFd)>,
    /// Host paths of bind-volume sources, opened before the root switch
    /// onto the given descriptor numbers.
    pub volume_sources: Vec<(CString, RawFd)>,
    /// The filesystem recipe run after `pivot_root`.
    pub ops: Vec<Op>,
    /// Filesystem steps run once the shim is in its cgroup and its own
    /// cgroup namespace (mounts of the container's cgroupfs).
    pub late_ops: Vec<Op>,
    /// The hostname.
    pub hostname: CString,
    /// Whether to bring `lo` up.
    pub loopback: bool,
    /// A network namespace to enter first (`--network bridge`,
    /// `container:NAME`, or one an OCI engine made), or `-1`: the shim's
    /// own new one, or the host's.
    pub netns_fd: RawFd,
    /// Descriptors the shim keeps (sorted); all others are closed.
    pub keep_fds: Vec<RawFd>,
    /// Rootless: a user namespace maps the caller to root; the shim waits
    /// for the parent's id maps before anything else, and sets no groups.
    pub rootless: bool,
    /// Whether the shim joins its cgroup after its filesystem set-up (cgroup
    /// v1): it then waits for the parent's go-ahead, which carries the
    /// cgroup's `tasks` files to write `0` to (the parent creates the
    /// cgroup meanwhile), before starting the application.
    pub late_join: bool,
    /// A pidfd of the parent process: if it has already ended when the shim
    /// sets its parent-death signal, the shim exits (when no sync byte is
    /// awaited, which would tell the same by end-of-file).
    pub parent_pidfd: RawFd,
    /// Signals the parent catches or ignores (bit `n - 1` for signal `n`):
    /// the application resets them to their default action.
    pub reset_signals: u64,
    /// The shim's end of a unix socket on which the parent sends one byte
    /// once the shim may go on (rootless: its id maps are written; late
    /// join: its cgroup is made), with the descriptors to join the cgroup.
    pub sync_rd: RawFd,
    /// Write end of the close-on-exec pipe for [`Report`]s.
    pub exec_wr: RawFd,
    /// Write end of the pipe for the application's wait status.
    pub status_wr: RawFd,
    /// Descriptors for the application's fds 0, 1, 2 (`-1`: inherit).
    pub stdio: [RawFd; 3],
    /// `--tty`: the descriptor number the shim puts the slave of a new pty
    /// on (all of `stdio` name it); `None` without a terminal.
    pub tty: Option<TtyPlan>,
    /// Working directory inside the container.
    pub cwd: CString,
    /// User and group ids.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Capability mask (applied only for uid 0; other users get none).
    pub caps: u64,
    /// Highest capability number the kernel knows.
    pub last_cap: u32,
    /// Seccomp programs, installed in order (none: unconfined).
    pub filters: isolate_policy::seccomp::Filters,
    /// Paths to try with `execve`, in order (PATH search done ahead).
    pub candidates: Vec<CString>,
    /// argv storage.
    pub argv: Vec<CString>,
    /// An OCI runtime's container (`create`): the shim outlives isolate
    /// (no parent-death signal once set up), says it is set up with a
    /// [`Stage::Ready`] report, waits for one byte on `hold_fd` before it
    /// starts the application, and exits with the application's status.
    pub detached: bool,
    /// The descriptor a detached shim waits on (`-1`: none).
    pub hold_fd: RawFd,
    /// Sysctls written in the container's namespaces: path under
    /// `/proc/sys`, value.
    pub sysctls: Vec<(CString, CString)>,
    /// Supplementary groups of the application.
    pub groups: Vec<libc::gid_t>,
    /// Resource limits of the application: `RLIMIT_*`, soft, hard.
    pub rlimits: Vec<(libc::c_int, u64, u64)>,
    /// A connected unix socket (OCI `--console-socket`): the shim opens a
    /// pseudo-terminal in the container's devpts, sends its master there
    /// and makes the slave the application's terminal (`-1`: none).
    pub console_fd: RawFd,
    /// The terminal's rows and columns (0: the kernel's default).
    pub console_size: (u16, u16),
    /// envp storage.
    pub envp: Vec<CString>,
}

/// The workload's terminal, opened by the shim once the container's own
/// devpts instance is mounted.
#[derive(Debug, Clone, Copy)]
pub struct TtyPlan {
    /// Where the slave goes (above every descriptor the shim keeps).
    pub slave_fd: RawFd,
    /// The initial window size (rows, columns, x and y pixels).
    pub size: Option<(u16, u16, u16, u16)>,
}

/// A null-terminated pointer array over `v`, built by the parent.
pub fn ptr_array(v: &[CString]) -> Vec<*const c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn fail(plan: &ChildPlan, stage: Stage, index: usize, errno: i32, code: i32) -> ! {
    if plan.detached && stage == Stage::App {
        // No one reads the exec pipe of a started OCI container: the step
        // goes to the application's stderr (the errno is in the report).
        if let Some(step) = APP_STEPS.get(index) {
            sys::write_all(2, b"isolate: container set-up failed: cannot ");
            sys::write_all(2, step.as_bytes());
            sys::write_all(2, b"\n");
        }
    }
    let r = Report {
        stage: stage as u32,
        index: index as u32,
        errno,
    };
    sys::write_all(plan.exec_wr, &r.to_bytes());
    sys::exit(code)
}

const ROOT: &CStr = c"/";
/// PID 1's name (`comm`) as the container's `ps` shows it.
static SHIM_NAME: &CStr = c"isolate-init";
const DOT: &CStr = c".";

/// The shim: runs in the cloned child as PID 1 of the new pid namespace.
/// Never returns.
pub fn shim(plan: &ChildPlan, argv: &[*const c_char], envp: &[*const c_char]) -> ! {
    sys::set_process_name(SHIM_NAME);
    // Die with the parent (a detached shim: until it is set up); a parent
    // that died before this line is caught below, by its pidfd or by
    // end-of-file on the sync pipe.
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0);
    // Descriptors of other containers spawned concurrently must not stay open here.
    let _ = sys::close_all_except(&plan.keep_fds);
    sys::umask(0);

    let root_step = |i: usize, r: Result<(), sys::Errno>| {
        if let Err(e) = r {
            fail(plan, Stage::Root, i, e, 125)
        }
    };
    if plan.rootless {
        wait_for_parent(plan);
    } else if !plan.late_join && parent_gone(plan.parent_pidfd) {
        sys::exit(125);
    }
    if !plan.detached {
        sys::close(plan.parent_pidfd);
    }
    // A prepared network namespace (`--network bridge` or `container:NAME`,
    // or an OCI engine's) is entered before sysfs is mounted (sysfs shows
    // the mounter's network devices).
    if plan.netns_fd >= 0 {
        root_step(15, sys::setns(plan.netns_fd, libc::CLONE_NEWNET));
        sys::close(plan.netns_fd);
    }
    // A session of the container's own, without a controlling terminal:
    // nothing in it can reach the caller's terminal through `/dev/tty`,
    // job control or `TIOCSTI`.
    root_step(12, sys::setsid());
    root_step(
        0,
        sys::mount(None, ROOT, None, libc::MS_REC | libc::MS_PRIVATE, None),
    );
    // Sysctls of the container's namespaces: /proc/sys resolves them in
    // the writer's own net and IPC namespaces, even through the host's
    // procfs still mounted here.
    for (path, value) in &plan.sysctls {
        root_step(16, sys::write_file(path, value.as_bytes()));
    }
    root_step(
        10,
        sys::mount(
            Some(c"tmpfs"),
            &plan.scratch,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(c"mode=700"),
        ),
    );
    for d in &plan.scratch_dirs {
        root_step(11, sys::mkdir(d, 0o755));
    }
    match &plan.root_mount {
        RootMount::Overlay(data) => root_step(
            1,
            sys::mount(
                Some(c"overlay"),
                &plan.new_root,
                Some(c"overlay"),
                0,
                Some(data),
            ),
        ),
        RootMount::ReadOnlyBind => {
            root_step(
                2,
                sys::mount(
                    Some(&plan.rootfs),
                    &plan.new_root,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                ),
            );
            root_step(3, sys::set_read_only_recursive(&plan.new_root));
        }
        RootMount::Bind => root_step(
            2,
            sys::mount(
                Some(&plan.rootfs),
                &plan.new_root,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            ),
        ),
    }
    // procfs and sysfs of the container's namespaces, mounted while the
    // host's instances are still visible (see `mounts::PREMOUNTS`) and held
    // as detached copies.
    for (fstype, path, flags, fd) in &plan.premounts {
        root_step(
            13,
            sys::mount(Some(fstype), path, Some(fstype), *flags, None),
        );
        match sys::open_tree_clone(path) {
            Ok(got) => {
                if got != *fd {
                    root_step(13, sys::dup_to(got, *fd, true));
                    sys::close(got);
                }
            }
            Err(e) => fail(plan, Stage::Root, 13, e, 125),
        }
    }
    // Host objects to bind (volumes; rootless: devices) are taken now, as
    // detached copies of their mounts: they are attached after the old
    // root is gone.
    for (i, (path, fd)) in plan.volume_sources.iter().enumerate() {
        match sys::open_tree_clone(path) {
            Ok(got) => {
                if got != *fd {
                    if let Err(e) = sys::dup_to(got, *fd, true) {
                        fail(plan, Stage::VolumeSource, i, e, 125);
                    }
                    sys::close(got);
                }
            }
            Err(e) => fail(plan, Stage::VolumeSource, i, e, 125),
        }
    }
    root_step(4, sys::chdir(&plan.new_root));
    // The old root ends up stacked on the new one, where a `..` at the new
    // root would step into it: it is detached before any path from the
    // image (mount points, volume targets, the working directory) is
    // walked, so that every such path resolves inside the new root and
    // nothing here can reach the host's files.
    root_step(5, sys::pivot_root(DOT, DOT));
    root_step(6, sys::umount2(DOT, libc::MNT_DETACH));
    root_step(4, sys::chdir(ROOT));

    run_ops(plan, &plan.ops, 0);
    for (_, fd) in &plan.volume_sources {
        sys::close(*fd);
    }
    for (_, _, _, fd) in &plan.premounts {
        sys::close(*fd);
    }
    if let Some(tty) = plan.tty {
        open_tty(plan, tty);
    }
    root_step(7, sys::sethostname(&plan.hostname));
    if plan.loopback {
        root_step(8, sys::loopback_up());
    }
    sys::umask(0o022);

    if plan.late_join {
        wait_for_parent(plan);
    }
    // The cgroup namespace is rooted at the container's own cgroup.
    root_step(14, sys::unshare(libc::CLONE_NEWCGROUP));
    // Steps that need the container's cgroup namespace (its cgroupfs).
    run_ops(plan, &plan.late_ops, plan.ops.len());
    let tty = if plan.console_fd >= 0 {
        match sys::open_pty(plan.console_size.0, plan.console_size.1) {
            Ok((master, slave)) => {
                root_step(17, sys::send_fds(plan.console_fd, 0, &[master]));
                sys::close(master);
                sys::close(plan.console_fd);
                slave
            }
            Err(e) => fail(plan, Stage::Root, 17, e, 125),
        }
    } else {
        -1
    };
    if plan.detached {
        hold(plan);
    }

    let app_pid = match spawn_app(plan, argv, envp, tty) {
        Ok(pid) => pid,
        Err(e) => fail(plan, Stage::App, 0, e, 125),
    };
    // Only the application keeps these now.
    if tty >= 0 {
        sys::close(tty);
    }
    sys::close(plan.exec_wr);
    for fd in plan.stdio {
        if fd >= 0 {
            sys::close(fd);
        }
    }
    supervise(app_pid, plan.status_wr, plan.detached)
}

/// A detached shim, set up: it stops dying with its parent, reports that
/// it is ready, and waits for its start byte (OCI `start`). The parent's
/// pidfd tells whether the parent died before the death signal was off.
fn hold(plan: &ChildPlan) {
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, 0, 0);
    if parent_gone(plan.parent_pidfd) {
        sys::exit(125);
    }
    sys::close(plan.parent_pidfd);
    let r = Report {
        stage: Stage::Ready as u32,
        index: 0,
        errno: 0,
    };
    sys::write_all(plan.exec_wr, &r.to_bytes());
    // The application of a detached container reports on its stderr.
    sys::close(plan.exec_wr);
    let mut byte = [0u8; 1];
    loop {
        match sys::read(plan.hold_fd, &mut byte) {
            Ok(1) => break,
            Err(libc::EINTR) => continue,
            _ => sys::exit(125),
        }
    }
    sys::close(plan.hold_fd);
}

/// Runs filesystem steps; a failure reports step `first + i` (the index
/// in `ops` followed by `late_ops`).
fn run_ops(plan: &ChildPlan, ops: &[Op], first: usize) {
    for (i, op) in ops.iter().enumerate() {
        let r = match op {
            Op::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                if_exists,
            } => match sys::mount(
                source.as_deref(),
                target,
                fstype.as_deref(),
                *flags,
                data.as_deref(),
            ) {
                Err(libc::ENOENT) if *if_exists => Ok(()),
                r => r,
            },
            Op::Attach { fd, target } => sys::move_mount(*fd, target),
            Op::ReadOnly { target } => sys::set_read_only_recursive(target),
            Op::SetAttr { target, attr } => sys::set_attr_recursive(target, *attr),
            Op::Mkdir { path, mode } => sys::mkdir(path, *mode),
            Op::Mknod {
                path,
                mode,
                major,
                minor,
            } => sys::mknod(path, *mode, *major, *minor),
            Op::Symlink { target, link } => sys::symlink(target, link),
            Op::File { path } => sys::touch(path),
        };
        if let Err(e) = r {
            fail(plan, Stage::Op, first + i, e, 125);
        }
    }
}

/// `isolate exec`: runs in a process cloned from isolate (no new
/// namespaces), which joins the running container's cgroup (through the
/// go-ahead, as a late-joining shim does) and namespaces `ns` (mount
/// last: root and working directory become the container's), opens a pty
/// there if asked, and then starts and supervises the application with the
/// same hardening as the container's own. Only the application half of
/// `plan` is used. Never returns.
pub fn join(plan: &ChildPlan, ns: &[RawFd], argv: &[*const c_char], envp: &[*const c_char]) -> ! {
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0);
    let _ = sys::close_all_except(&plan.keep_fds);
    wait_for_parent(plan);
    sys::close(plan.parent_pidfd);
    for fd in ns {
        if let Err(e) = sys::setns(*fd, 0) {
            fail(plan, Stage::Root, 20, e, 125);
        }
        sys::close(*fd);
    }
    sys::umask(0o022);
    if let Some(tty) = plan.tty {
        open_tty(plan, tty);
    }
    let app_pid = match spawn_app(plan, argv, envp, -1) {
        Ok(pid) => pid,
        Err(e) => fail(plan, Stage::App, 0, e, 125),
    };
    sys::close(plan.exec_wr);
    sys::close(plan.sync_rd);
    for fd in plan.stdio {
        if fd >= 0 {
            sys::close(fd);
        }
    }
    supervise(app_pid, plan.status_wr, false)
}

/// Size of the application's stack until `execve`.
const APP_STACK: usize = 256 << 10;

/// What [`app_entry`] gets through `clone`'s argument.
struct AppArgs<'a> {
    plan: &'a ChildPlan,
    argv: &'a [*const c_char],
    envp: &'a [*const c_char],
    /// The application's terminal (`-1`: none).
    tty: RawFd,
}

extern "C" fn app_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `AppArgs` of `spawn_app`, whose frame lives on
    // while this child runs: the shim is suspended (CLONE_VFORK) until
    // this child has called execve or exited.
    let a = unsafe { &*(arg as *const AppArgs) };
    app(a.plan, a.argv, a.envp, a.tty)
}

/// Starts the application `vfork`-style: it shares the shim's memory (no
/// copy of the page tables) on a stack of its own, and the shim sleeps
/// until it has called `execve` (or exited on a failure). The stack is
/// unmapped once the application no longer uses it.
fn spawn_app(
    plan: &ChildPlan,
    argv: &[*const c_char],
    envp: &[*const c_char],
    tty: RawFd,
) -> Result<libc::pid_t, sys::Errno> {
    // SAFETY: an anonymous private mapping; nothing else refers to it.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            APP_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(sys::errno());
    }
    let args = AppArgs {
        plan,
        argv,
        envp,
        tty,
    };
    // SAFETY: the child runs `app_entry` on the top of `stack` (stacks grow
    // down on the supported architectures), sharing this memory; with
    // CLONE_VFORK this thread does not run until the child has executed a
    // program or exited, so `args` and `stack` stay valid and unshared
    // for as long as the child uses them. The child allocates nothing and
    // calls only `sys` wrappers and execve.
    let pid = unsafe {
        libc::clone(
            app_entry,
            stack.cast::<u8>().add(APP_STACK).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const AppArgs as *mut libc::c_void,
        )
    };
    let err = sys::errno();
    // SAFETY: the child no longer runs on `stack` (see above).
    unsafe { libc::munmap(stack, APP_STACK) };
    if pid < 0 {
        Err(err)
    } else {
        Ok(pid)
    }
}

/// Whether the process behind `pidfd` has ended (a pidfd polls readable).
fn parent_gone(pidfd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd; a zero timeout never blocks.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

/// Waits for the parent's go-ahead byte (it wrote the id maps, or made the
/// cgroup) and joins the cgroup through the `tasks` files that come with
/// it; end-of-file or a failure of the parent's means the parent gave up.
fn wait_for_parent(plan: &ChildPlan) {
    let mut fds = [-1; sys::MAX_FDS];
    match sys::recv_fds(plan.sync_rd, &mut fds) {
        Ok((Some(1), n)) => {
            for fd in &fds[..n] {
                // "0" moves the calling thread (see isolate_cgroups::Cgroup::self_join_files).
                if let Err(e) = sys::write_exact(*fd, b"0") {
                    fail(plan, Stage::Root, 9, e, 125);
                }
                sys::close(*fd);
            }
        }
        _ => sys::exit(125),
    }
}

/// Opens the workload's pty in the container's devpts instance, gives the
/// slave to the workload's user, puts it on `tty.slave_fd` for the
/// application and sends the master to isolate over the sync socket.
fn open_tty(plan: &ChildPlan, tty: TtyPlan) {
    let (master, slave) = match sys::open_pty(0, 0) {
        Ok(p) => p,
        Err(e) => fail(plan, Stage::Root, 18, e, 125),
    };
    if let Some((rows, cols, x, y)) = tty.size {
        sys::set_window_size(master, rows, cols, x, y);
    }
    if plan.uid != 0 {
        if let Err(e) = sys::fchown(slave, plan.uid, u32::MAX) {
            fail(plan, Stage::Root, 18, e, 125);
        }
    }
    if slave != tty.slave_fd {
        if let Err(e) = sys::dup_to(slave, tty.slave_fd, true) {
            fail(plan, Stage::Root, 18, e, 125);
        }
        sys::close(slave);
    }
    if let Err(e) = sys::send_fds(plan.sync_rd, 2, &[master]) {
        fail(plan, Stage::Root, 19, e, 125);
    }
    sys::close(master);
}

/// PID 1's loop: reap every child, forward every other signal to the
/// application, report its wait status when it ends, and exit.
fn supervise(app: libc::pid_t, status_wr: RawFd, mirror: bool) -> ! {
    // SAFETY: sigset_t is plain data; sigfillset initialises it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a valid sigset_t.
    unsafe { libc::sigfillset(&mut all) };
    loop {
        // SAFETY: `all` is a valid signal set; no siginfo is requested.
        let sig = unsafe { libc::sigwaitinfo(&all, std::ptr::null_mut()) };
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: kill takes integers; a vanished app gives ESRCH.
            unsafe { libc::kill(app, sig) };
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid int for the kernel to fill.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == app && mirror {
                // A detached shim's parent is the engine's: it reads the
                // status as the shim's own (a signal as 128 + its number).
                if libc::WIFSIGNALED(status) {
                    sys::exit(128 + libc::WTERMSIG(status));
                }
                sys::exit(libc::WEXITSTATUS(status));
            }
            if pid == app {
                // The wait status, then the shim's own peak RSS (the host
                // memory isolate spent on the boundary).
                let mut msg = [0u8; 12];
                msg[..4].copy_from_slice(&status.to_ne_bytes());
                msg[4..].copy_from_slice(&sys::max_rss_bytes().to_ne_bytes());
                sys::write_all(status_wr, &msg);
                sys::exit(0);
            }
        }
    }
}

/// The application process: drop privileges, filter, exec.
fn app(plan: &ChildPlan, argv: &[*const c_char], envp: &[*const c_char], tty: RawFd) -> ! {
    sys::reset_signals(plan.reset_signals);
    // Dies with its supervisor (the shim, or `isolate exec`'s joiner).
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0);
    let step = |i: usize, r: Result<(), sys::Errno>| {
        if let Err(e) = r {
            fail(plan, Stage::App, i, e, 125)
        }
    };
    if tty >= 0 {
        // An OCI console: the pty whose master went to the console socket.
        step(9, sys::take_terminal(tty));
    } else {
        if let Some(tty) = plan.tty {
            // `--tty`: a session of its own whose controlling terminal is
            // the pty: job control and ctrl-C work inside, and nothing
            // reaches the caller's terminal but through isolate's relay.
            step(10, sys::setsid());
            step(10, sys::set_controlling_terminal(tty.slave_fd));
        }
        for (target, fd) in plan.stdio.iter().enumerate() {
            if *fd >= 0 {
                step(0, sys::dup_to(*fd, target as RawFd, false));
            }
        }
    }
    // Nothing but fds 0-2 (and the exec pipe until execve) reaches the program.
    step(0, sys::close_range(3, u32::MAX, true));
    step(1, sys::chdir(&plan.cwd));
    for &(resource, soft, hard) in &plan.rlimits {
        step(8, sys::setrlimit(resource, soft, hard));
    }
    for cap in 0..=plan.last_cap {
        if plan.caps & (1u64 << cap) == 0 {
            step(2, sys::prctl(libc::PR_CAPBSET_DROP, cap.into(), 0));
        }
    }
    let _ = sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    );
    let groups = (!plan.rootless).then_some(plan.groups.as_slice());
    if let Err((i, e)) = sys::set_ids(plan.uid, plan.gid, groups) {
        fail(plan, Stage::App, 3 + i as usize, e, 125);
    }
    let caps = if plan.uid == 0 { plan.caps } else { 0 };
    step(6, sys::capset(caps));
    step(7, sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0));
    for f in plan.filters.iter() {
        step(7, sys::seccomp_install(f.as_slice()));
    }
    let mut not_executable = 0;
    for c in &plan.candidates {
        // SAFETY: `c`, `argv` and `envp` are NUL-terminated strings and
        // null-terminated arrays of them, built by the parent and alive.
        unsafe { libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        match sys::errno() {
            libc::ENOENT | libc::ENOTDIR => {}
            e => not_executable = e,
        }
    }
    if plan.detached {
        // No one reads the exec pipe of a started OCI container: say it on
        // the application's stderr, as runc does.
        let why: &[u8] = if not_executable != 0 {
            b": not executable\n"
        } else {
            b": not found\n"
        };
        sys::write_all(2, b"isolate: cannot execute ");
        sys::write_all(2, plan.argv[0].as_bytes());
        sys::write_all(2, why);
    }
    if not_executable != 0 {
        fail(plan, Stage::Exec, 1, not_executable, 126)
    }
    fail(plan, Stage::Exec, 0, libc::ENOENT, 127)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips() {
        let r = Report {
            stage: Stage::Op as u32,
            index: 7,
            errno: libc::EPERM,
        };
        assert_eq!(Report::from_bytes(&r.to_bytes()), r);
    }

    #[test]
    fn pointer_arrays_end_with_null() {
        let v = vec![CString::new("a").unwrap(), CString::new("b").unwrap()];
        let p = ptr_array(&v);
        assert_eq!(p.len(), 3);
        assert!(p[2].is_null());
    }
}
