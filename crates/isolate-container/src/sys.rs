//! Thin wrappers over the system calls the container child makes.
//!
//! Every wrapper here is safe to call between `clone` and `execve` in a
//! child of a multi-threaded parent: it allocates nothing, takes no lock,
//! and calls the kernel directly (`setuid` and friends go through
//! `syscall(2)`, because glibc's wrappers would try to synchronise with
//! threads that do not exist in the child). Errors are the raw `errno`.

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::ptr;

use libc::{c_int, c_long, c_ulong};

/// A raw `errno` value.
pub type Errno = i32;

/// The calling thread's `errno`.
pub fn errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(rc: c_long) -> Result<c_long, Errno> {
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc)
    }
}

fn opt_ptr(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(ptr::null(), CStr::as_ptr)
}

/// `mount(2)`.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> Result<(), Errno> {
    // SAFETY: every pointer is either null or a NUL-terminated string that
    // outlives the call; the kernel copies them.
    let rc = unsafe {
        libc::mount(
            opt_ptr(source),
            target.as_ptr(),
            opt_ptr(fstype),
            flags,
            opt_ptr(data).cast(),
        )
    };
    check(rc.into()).map(drop)
}

/// `OPEN_TREE_CLONE` of `open_tree(2)`.
const OPEN_TREE_CLONE: c_ulong = 1;
/// `AT_RECURSIVE` of `open_tree(2)` and `mount_setattr(2)`.
const AT_RECURSIVE: c_ulong = 0x8000;
/// `MOVE_MOUNT_F_EMPTY_PATH` of `move_mount(2)`.
const MOVE_MOUNT_F_EMPTY_PATH: c_ulong = 0x4;
/// `MOUNT_ATTR_RDONLY` of `mount_setattr(2)`.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID` of `mount_setattr(2)`.
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV` of `mount_setattr(2)`.
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
/// `MOUNT_ATTR_NOEXEC` of `mount_setattr(2)`.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// A detached copy of the mount tree at `path` (`open_tree(2)` with
/// `OPEN_TREE_CLONE | AT_RECURSIVE`), close-on-exec: a bind mount held as
/// a descriptor, attached later with [`move_mount`] wherever this process
/// then is, even after the tree it came from is gone.
pub fn open_tree_clone(path: &CStr) -> Result<RawFd, Errno> {
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as c_ulong | AT_RECURSIVE;
    // SAFETY: `path` is a NUL-terminated string valid for the call; the
    // other arguments are integers.
    check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) })
        .map(|fd| fd as RawFd)
}

/// Attaches the detached mount tree `fd` (from [`open_tree_clone`]) at
/// `target` (`move_mount(2)`).
pub fn move_mount(fd: RawFd, target: &CStr) -> Result<(), Errno> {
    // SAFETY: both paths are NUL-terminated strings valid for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Makes the mount at `target` and every mount below it read-only
/// (`mount_setattr(2)` with `AT_RECURSIVE`); the mounts' other flags stay.
pub fn set_read_only_recursive(target: &CStr) -> Result<(), Errno> {
    set_attr_recursive(target, MOUNT_ATTR_RDONLY)
}

/// Sets the `MOUNT_ATTR_*` flags `attr` on the mount at `target` and every
/// mount below it (`mount_setattr(2)` with `AT_RECURSIVE`); the mounts'
/// other flags stay.
pub fn set_attr_recursive(target: &CStr, attr: u64) -> Result<(), Errno> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: attr,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `target` is a NUL-terminated string and `attr` a mount_attr
    // of the size passed, both valid for the call; the kernel only reads them.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// `setsid(2)`: a new session without a controlling terminal.
pub fn setsid() -> Result<(), Errno> {
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() }.into()).map(drop)
}

/// `umount2(2)`.
pub fn umount2(target: &CStr, flags: c_int) -> Result<(), Errno> {
    // SAFETY: `target` is a NUL-terminated string valid for the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }.into()).map(drop)
}

/// `pivot_root(2)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
    // SAFETY: both arguments are NUL-terminated strings valid for the call.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

/// `chdir(2)`.
pub fn chdir(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a NUL-terminated string valid for the call.
    check(unsafe { libc::chdir(path.as_ptr()) }.into()).map(drop)
}

/// `mkdir(2)`; an existing entry is not an error.
pub fn mkdir(path: &CStr, mode: u32) -> Result<(), Errno> {
    // SAFETY: `path` is a NUL-terminated string valid for the call.
    match check(unsafe { libc::mkdir(path.as_ptr(), mode) }.into()) {
        Err(libc::EEXIST) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `mknod(2)`: `mode` holds the node's type (`S_IFCHR`, `S_IFBLK`) and
/// permission bits.
pub fn mknod(path: &CStr, mode: u32, major: u32, minor: u32) -> Result<(), Errno> {
    let dev = libc::makedev(major, minor);
    // SAFETY: `path` is a NUL-terminated string valid for the call.
    check(unsafe { libc::mknod(path.as_ptr(), mode, dev) }.into()).map(drop)
}

/// `symlink(2)`.
pub fn symlink(target: &CStr, link: &CStr) -> Result<(), Errno> {
    // SAFETY: both are NUL-terminated strings valid for the call.
    check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }.into()).map(drop)
}

/// Creates an empty file if missing (`open(O_CREAT)`, then close).
pub fn touch(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a NUL-terminated string valid for the call; the
    // mode argument is read because of O_CREAT.
    let fd = check(
        unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            )
        }
        .into(),
    )?;
    close(fd as RawFd);
    Ok(())
}

/// `dup3(2)`, or clearing `FD_CLOEXEC` when `old == new`.
pub fn dup_to(old: RawFd, new: RawFd, cloexec: bool) -> Result<(), Errno> {
    if old == new {
        let flags = if cloexec { libc::FD_CLOEXEC } else { 0 };
        // SAFETY: fcntl(F_SETFD) on a descriptor number; no memory involved.
        return check(unsafe { libc::fcntl(new, libc::F_SETFD, flags) }.into()).map(drop);
    }
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 takes descriptor numbers only.
    check(unsafe { libc::dup3(old, new, flags) }.into()).map(drop)
}

/// `close(2)`, errors ignored.
pub fn close(fd: RawFd) {
    // SAFETY: closing a descriptor number this process owns; callers pass
    // descriptors that nothing else in the child uses afterwards.
    unsafe { libc::close(fd) };
}

/// `close_range(2)`: closes `first..=last` (or marks them close-on-exec).
pub fn close_range(first: u32, last: u32, cloexec: bool) -> Result<(), Errno> {
    let flags: c_ulong = if cloexec { 4 } else { 0 }; // CLOSE_RANGE_CLOEXEC
                                                      // SAFETY: close_range takes integers only.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) }).map(drop)
}

/// Closes every descriptor above 2 except those in `keep` (sorted, ascending).
pub fn close_all_except(keep: &[RawFd]) -> Result<(), Errno> {
    let mut next: u32 = 3;
    for &fd in keep {
        let fd = fd as u32;
        if fd < next {
            continue;
        }
        if fd > next {
            close_range(next, fd - 1, false)?;
        }
        next = fd + 1;
    }
    close_range(next, u32::MAX, false)
}

/// `read(2)` into `buf`, retried on EINTR.
pub fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let rc = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match check(rc as c_long) {
            Err(libc::EINTR) => continue,
            r => return r.map(|n| n as usize),
        }
    }
}

/// `write(2)` of all of `buf` in one call (pipe writes below PIPE_BUF are
/// atomic); errors ignored, as there is nobody left to tell.
pub fn write_all(fd: RawFd, buf: &[u8]) {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
}

/// `write(2)` of all of `buf` in one call, with its error.
pub fn write_exact(fd: RawFd, buf: &[u8]) -> Result<(), Errno> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let n = check(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) } as c_long)?;
    if n as usize == buf.len() {
        Ok(())
    } else {
        Err(libc::EIO)
    }
}

/// Most descriptors one [`recv_fds`] takes (cgroup v1 has at most a dozen
/// hierarchies).
pub const MAX_FDS: usize = 16;

/// `CMSG_SPACE` for [`MAX_FDS`] descriptors, rounded up to 8 bytes.
const FDS_SPACE: usize = 16 + MAX_FDS * 4;

/// Receives one byte and up to [`MAX_FDS`] descriptors (`SCM_RIGHTS`,
/// close-on-exec) on the unix socket `sock`, retried on EINTR. Returns the
/// byte (`None` at end-of-file) and the number of descriptors stored in
/// `fds`.
pub fn recv_fds(sock: RawFd, fds: &mut [RawFd; MAX_FDS]) -> Result<(Option<u8>, usize), Errno> {
    let mut byte = [0u8; 1];
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; FDS_SPACE / 8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; every field used is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = FDS_SPACE as _;
    let n = loop {
        // SAFETY: `msg` points to the live `iov` (one byte of `byte`) and
        // to `control`, whose size msg_controllen gives.
        let rc = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        match check(rc as c_long) {
            Err(libc::EINTR) => continue,
            r => break r?,
        }
    };
    let mut count = 0;
    // SAFETY: `msg` was filled by recvmsg; the CMSG_* walk stays within
    // msg_controllen bytes of `control`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = data.add(i).read_unaligned();
                    if count < MAX_FDS {
                        fds[count] = fd;
                        count += 1;
                    } else {
                        close(fd);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(((n > 0).then_some(byte[0]), count))
}

/// Sends the byte `byte` with the descriptors `fds` (`SCM_RIGHTS`, at most
/// [`MAX_FDS`]) on the unix socket `sock`.
pub fn send_fds(sock: RawFd, byte: u8, fds: &[RawFd]) -> Result<(), Errno> {
    if fds.len() > MAX_FDS {
        return Err(libc::E2BIG);
    }
    let mut data = [byte];
    let mut control = [0u64; FDS_SPACE / 8];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; every field used is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let bytes = std::mem::size_of_val(fds) as u32;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(bytes) } as _;
        // SAFETY: the control buffer holds CMSG_SPACE(bytes) <= FDS_SPACE
        // bytes, so the header and `fds` fit; CMSG_DATA points inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    loop {
        // SAFETY: `msg` points to the live `iov` and `control` set above.
        let rc = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        match check(rc as c_long) {
            Err(libc::EINTR) => continue,
            r => return r.map(|_| ()),
        }
    }
}

/// Peak resident memory of the calling process, bytes (`getrusage`).
pub fn max_rss_bytes() -> u64 {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid for writing.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    ru.ru_maxrss.max(0) as u64 * 1024
}

/// Names the calling process `name` (its `comm`, as `ps` shows it).
pub fn set_process_name(name: &CStr) {
    let _ = prctl(libc::PR_SET_NAME, name.as_ptr() as c_ulong, 0);
}

/// `_exit(2)`: ends the child without running any destructor or atexit.
pub fn exit(code: c_int) -> ! {
    // SAFETY: _exit never returns and touches no user-space state.
    unsafe { libc::_exit(code) }
}

/// `prctl(2)` with integer arguments.
pub fn prctl(option: c_int, a2: c_ulong, a3: c_ulong) -> Result<(), Errno> {
    // SAFETY: the options used here take integer arguments only.
    check(unsafe { libc::prctl(option, a2, a3, 0 as c_ulong, 0 as c_ulong) }.into()).map(drop)
}

/// `sethostname(2)`.
pub fn sethostname(name: &CStr) -> Result<(), Errno> {
    let b = name.to_bytes();
    // SAFETY: `b` is valid for reads of `b.len()` bytes.
    check(unsafe { libc::sethostname(b.as_ptr().cast(), b.len()) }.into()).map(drop)
}

/// `unshare(2)`.
pub fn unshare(flags: c_int) -> Result<(), Errno> {
    // SAFETY: unshare takes integer flags only.
    check(unsafe { libc::unshare(flags) }.into()).map(drop)
}

/// `setns(2)`.
pub fn setns(fd: RawFd, nstype: c_int) -> Result<(), Errno> {
    // SAFETY: setns takes a descriptor and integer flags only.
    check(unsafe { libc::setns(fd, nstype) }.into()).map(drop)
}

/// `umask(2)`.
pub fn umask(mask: u32) {
    // SAFETY: umask takes an integer and cannot fail.
    unsafe { libc::umask(mask) };
}

/// `setgroups(0, NULL)`, `setresgid`, `setresuid`, through `syscall(2)`.
/// (`groups`: false in a user namespace whose setgroups is denied).
pub fn set_ids(uid: u32, gid: u32, groups: Option<&[libc::gid_t]>) -> Result<(), (u8, Errno)> {
    if let Some(groups) = groups {
        // SAFETY: `groups` is a live slice of `groups.len()` gids, which
        // the kernel only reads.
        check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })
            .map_err(|e| (0, e))?;
    }
    // SAFETY: integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map_err(|e| (1, e))?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map_err(|e| (2, e))?;
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `setrlimit(2)` of `resource` to `soft`/`hard`.
pub fn setrlimit(resource: c_int, soft: u64, hard: u64) -> Result<(), Errno> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit the kernel only reads during the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            resource,
            &lim,
            ptr::null_mut::<libc::rlimit>(),
        )
    })
    .map(drop)
}

/// Writes `data` to the existing file `path` (a sysctl under /proc/sys).
pub fn write_file(path: &CStr, data: &[u8]) -> Result<(), Errno> {
    // SAFETY: `path` is a NUL-terminated string valid for the call.
    let fd = check(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        ) as c_long
    })? as RawFd;
    let r = write_exact(fd, data);
    close(fd);
    r
}

/// A new pseudo-terminal pair from `/dev/ptmx` (the devpts mounted at
/// `/dev/pts` where the caller is): (master, slave), close-on-exec, the
/// slave sized `rows` x `cols` unless they are 0.
pub fn open_pty(rows: u16, cols: u16) -> Result<(RawFd, RawFd), Errno> {
    // SAFETY: a NUL-terminated literal path and flags.
    let m = check(unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ) as c_long
    })? as RawFd;
    let unlock: c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the valid `unlock`.
    if let Err(e) = check(unsafe { libc::ioctl(m, libc::TIOCSPTLCK, &unlock) } as c_long) {
        close(m);
        return Err(e);
    }
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
    let s = match check(unsafe {
        libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    } as c_long)
    {
        Ok(s) => s as RawFd,
        Err(e) => {
            close(m);
            return Err(e);
        }
    };
    if rows > 0 && cols > 0 {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the valid `ws`.
        unsafe { libc::ioctl(s, libc::TIOCSWINSZ, &ws) };
    }
    Ok((m, s))
}

/// Makes terminal `fd` the controlling terminal of the caller's new
/// session (`setsid` first) and its fds 0, 1 and 2.
pub fn take_terminal(fd: RawFd) -> Result<(), Errno> {
    setsid()?;
    // SAFETY: TIOCSCTTY takes an integer argument.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } as c_long)?;
    for target in 0..3 {
        dup_to(fd, target, false)?;
    }
    Ok(())
}

/// `capset(2)` (version 3): permitted = effective = `mask`, inheritable empty.
pub fn capset(mask: u64) -> Result<(), Errno> {
    let header = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: `header` and `data` (two elements, as version 3 requires)
    // are valid for the call; the kernel only reads them.
    check(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }).map(drop)
}

/// Installs a seccomp BPF program on the calling thread (no_new_privs must
/// be set).
pub fn seccomp_install(prog: &[seccompiler::sock_filter]) -> Result<(), Errno> {
    // seccompiler's sock_filter is #[repr(C)] with the kernel's layout
    // (u16 code, u8 jt, u8 jf, u32 k), the same as libc's.
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog` (same layout as the kernel's
    // sock_filter, see above), valid for `len` instructions for the
    // duration of the call; the kernel copies the program.
    check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    })
    .map(drop)
}

/// Resets the signals in `mask` (bit `n - 1` for signal `n`) to their
/// default action and unblocks all. `execve` resets caught signals itself
/// but keeps ignored ones; resetting caught ones too means no handler of
/// the parent can run between here and `execve`.
pub fn reset_signals(mask: u64) {
    for sig in 1..=64 {
        if mask & (1u64 << (sig - 1)) == 0 || sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL needs no handler memory; glibc's
        // reserved signals fail with EINVAL, which is fine.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    set_sigmask(false);
}

/// The signals this process catches or ignores, as a mask for
/// [`reset_signals`] (from `SigCgt` and `SigIgn` of `/proc/self/status`;
/// all of them if that cannot be read).
pub fn handled_signals() -> u64 {
    let Some(status) = read_proc("/proc/self/status") else {
        return u64::MAX;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    match (field("SigCgt:"), field("SigIgn:")) {
        (Some(c), Some(i)) => c | i,
        _ => u64::MAX,
    }
}

/// A small file of /proc or /sys, read into a 16 KiB buffer: one `read`
/// gets it whole and a second one the end-of-file, where
/// `std::fs::read_to_string` makes about ten calls (a size query, then
/// reads from 32 bytes up). Parent side only: it
/// allocates. `None` if it cannot be read or is not UTF-8.
pub fn read_proc(path: &str) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 16 << 10];
    let mut len = 0;
    loop {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == buf.len() {
                    buf.resize(buf.len() * 2, 0);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

/// `pidfd_open(2)` of the calling process.
pub fn pidfd_self() -> Result<std::os::fd::OwnedFd, Errno> {
    // SAFETY: getpid has no arguments and cannot fail.
    let me = unsafe { libc::getpid() };
    // SAFETY: pidfd_open takes integers; it returns a new descriptor.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, me, 0) })?;
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as RawFd) })
}

/// Blocks (`true`) or unblocks (`false`) every signal of the calling
/// thread; returns the previous mask.
pub fn set_sigmask(block: bool) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; all-zero is a valid value that
    // sigfillset/sigemptyset then overwrite.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` and `old` are valid sigset_t for the calls.
    unsafe {
        if block {
            libc::sigfillset(&mut set);
        } else {
            libc::sigemptyset(&mut set);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, &mut old);
    }
    old
}

/// Restores a mask returned by [`set_sigmask`].
pub fn restore_sigmask(old: &libc::sigset_t) {
    // SAFETY: `old` is a valid sigset_t; the previous mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, ptr::null_mut()) };
}

/// Brings the loopback interface up (in the caller's network namespace);
/// see [`isolate_core::sys::loopback_up`].
pub fn loopback_up() -> Result<(), Errno> {
    isolate_core::sys::loopback_up().map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// Sets a terminal's window size (`TIOCSWINSZ`).
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16, xpixel: u16, ypixel: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: xpixel,
        ws_ypixel: ypixel,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, valid for the call.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

/// `fchown(2)`.
pub fn fchown(fd: RawFd, uid: u32, gid: u32) -> Result<(), Errno> {
    // SAFETY: fchown takes integers only.
    check(unsafe { libc::fchown(fd, uid, gid) }.into()).map(drop)
}

/// Makes the terminal on `fd` the calling session leader's controlling
/// terminal (`TIOCSCTTY`).
pub fn set_controlling_terminal(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }.into()).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_proc_reads_whole_generated_files() {
        let fs = read_proc("/proc/filesystems").unwrap();
        assert_eq!(fs, std::fs::read_to_string("/proc/filesystems").unwrap());
        // Far more than a page, which the kernel hands out a page at a
        // time: a reader that stopped at a short read would lose lines.
        let want = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let got = read_proc("/proc/kallsyms").unwrap();
        assert!(got.len() > 64 << 10, "{}", got.len());
        assert_eq!(got.lines().count(), want.lines().count());
        assert!(read_proc("/proc/self/status").unwrap().contains("SigCgt:"));
        assert!(read_proc("/nonexistent").is_none());
    }
}
