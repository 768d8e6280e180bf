//! The few system calls and std helpers that both backends and the guest
//! init need: who the effective user is, a close-on-exec pipe, a signal
//! through a pidfd, the loopback interface, a fork-like `clone3`, and a
//! lock that survives a panicked holder.
//!
//! Everything here is safe to call in a freshly cloned child that must not
//! allocate: no function allocates, and errors are plain `io::Error`s made
//! from an errno.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether isolate runs rootless (as a user other than root): no cgroups,
/// a user namespace, state under the user's runtime directory.
pub fn rootless() -> bool {
    euid() != 0
}

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is an array of two c_ints, the room pipe2(2) writes into.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are new open descriptors that nothing
    // else owns; each is wrapped exactly once.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `signo` to the process `pidfd` refers to (`pidfd_send_signal`):
/// never to another process that reused its pid.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signo: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal(2) takes a descriptor that `pidfd` keeps open
    // for the call, a signal number, a null siginfo (the kernel then fills
    // in one as kill(2) would) and no flags; it touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signo,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Brings the interface `lo` up in the caller's network namespace
/// (`SIOCGIFFLAGS`, then `SIOCSIFFLAGS` with `IFF_UP`).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) takes integers only; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifreq` is plain old data (integers, arrays and a union of
    // them); all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name from `req` and
    // writes the flags into it; `req` is a valid ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS has just written the `ifru_flags` member, so it is
    // the union's initialized member.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS only reads the name and flags from `req`, valid
    // as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`),
/// the argument of [`clone3`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct CloneArgs {
    /// `CLONE_*` flags (namespaces, `CLONE_PIDFD`, [`CLONE_INTO_CGROUP`]).
    pub flags: u64,
    /// With `CLONE_PIDFD`: the address of the `c_int` the kernel writes
    /// the child's pidfd into.
    pub pidfd: u64,
    /// With `CLONE_CHILD_SETTID`/`CLEARTID`: the child's tid address.
    pub child_tid: u64,
    /// With `CLONE_PARENT_SETTID`: the parent's copy of the child's tid.
    pub parent_tid: u64,
    /// The signal the parent gets when the child ends (`SIGCHLD`).
    pub exit_signal: u64,
    /// The child's stack (0: a copy of the caller's, as fork).
    pub stack: u64,
    /// The size of `stack`.
    pub stack_size: u64,
    /// With `CLONE_SETTLS`: the child's thread-local storage.
    pub tls: u64,
    /// The pids the child gets in each pid namespace (0: none asked).
    pub set_tid: u64,
    /// The number of entries at `set_tid`.
    pub set_tid_size: u64,
    /// With [`CLONE_INTO_CGROUP`]: a directory descriptor of the cgroup
    /// the child starts in.
    pub cgroup: u64,
}

/// `clone3` flag: start the child in the cgroup `CloneArgs::cgroup` names
/// (not in libc yet).
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A fork-like `clone3(2)` (no stack given): `Ok(0)` in the child,
/// `Ok(pid)` in the parent.
///
/// # Safety
/// The child runs on a copy of the calling thread's stack in a copy of the
/// address space that holds only this thread. If the process has other
/// threads, the child may only make async-signal-safe calls (no allocator,
/// no lock another thread may hold) until it calls `execve` or `_exit`,
/// and it must never return from the caller's frame. The addresses in
/// `args` (`pidfd` with `CLONE_PIDFD`, the tid fields, `set_tid`) must be
/// valid for the writes the flags ask for, and `cgroup` must be an open
/// descriptor with `CLONE_INTO_CGROUP`.
pub unsafe fn clone3(args: &CloneArgs) -> io::Result<u32> {
    // SAFETY: `args` is a `clone_args` of the size passed, valid for the
    // call; the caller upholds the rest (see above).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid as u32)
    }
}

/// Locks `m`, recovering from poisoning: a thread that panicked while it held
/// the lock must not take the state away from the others (every user keeps
/// it consistent between statements, so it is still usable).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn pipe_carries_bytes_and_closes_on_exec() {
        let (r, w) = pipe().unwrap();
        for fd in [&r, &w] {
            // SAFETY: F_GETFD on an open descriptor that `fd` owns.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
        std::fs::File::from(w).write_all(b"hi").unwrap();
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi");
    }

    #[test]
    fn lock_survives_a_panicked_holder() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }

    #[test]
    fn pidfd_send_signal_reaches_the_process() {
        use std::os::fd::AsFd;
        use std::os::unix::process::ExitStatusExt;

        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        // SAFETY: pidfd_open(2) takes a pid and no flags; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) };
        assert!(fd >= 0, "pidfd_open: {}", io::Error::last_os_error());
        // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let e = pidfd_send_signal(pidfd.as_fd(), 1000).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        let e = pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
    }

    #[test]
    fn rootless_follows_the_effective_user() {
        assert_eq!(rootless(), euid() != 0);
    }
}
