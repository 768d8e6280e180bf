//! The VMM's jail, entered once it holds every file it needs (the KVM
//! device, kernel, initrd, disk images, its pipes) and before it builds
//! the VM, as Firecracker's jailer does:
//!
//! 1. it runs as PID 1 of a pid namespace of its own, with its own mount,
//!    network, IPC and UTS namespaces: the library starts it that way
//!    ([`crate::spawn`]); [`enter`] refuses to go on otherwise;
//! 2. its root becomes an empty, read-only tmpfs that exists only in its
//!    mount namespace (`pivot_root`, the old root detached): nothing of the
//!    host is reachable by path, and nothing is left on the host when the
//!    VMM ends, even by SIGKILL;
//! 3. it drops to the unprivileged uid and gid it was given (never 0), with
//!    no supplementary groups, no capabilities (effective, permitted,
//!    inheritable, ambient, and an empty bounding set) and `no_new_privs`.
//!
//! The environment is already empty (the library passes none). The
//! seccomp filters come last, per thread ([`crate::seccomp`]).

use std::ffi::CStr;
use std::path::Path;

/// First uid (and gid) of the range VMMs run as: a VMM whose host pid is
/// P runs as `VMM_ID_BASE + P`. Live processes have distinct pids, so no
/// two running VMMs share a uid. The range (up to `VMM_ID_BASE +
/// PID_MAX_LIMIT`, 4 Mi ids) lies inside the span systemd reserves for
/// container uids (524288–1879048191), which no login user gets.
pub const VMM_ID_BASE: u32 = 1_800_000_000;

/// Highest pid a Linux kernel hands out (`PID_MAX_LIMIT` on 64-bit).
const PID_MAX_LIMIT: u32 = 4 << 20;

/// The ids a VMM runs as once jailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JailIds {
    /// User id (never 0).
    pub uid: u32,
    /// Group id (never 0).
    pub gid: u32,
}

impl JailIds {
    /// The ids of the VMM whose host pid is `pid`.
    pub fn for_pid(pid: u32) -> Self {
        let id = VMM_ID_BASE + pid % PID_MAX_LIMIT;
        Self { uid: id, gid: id }
    }
}

/// A step of the jail that failed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// Not started in namespaces of its own.
    #[error("isolate-vmm is not PID 1 of a pid namespace of its own (it is pid {0}); it must be started by isolate, which creates its namespaces")]
    NotIsolated(i32),
    /// Asked to stay root.
    #[error("refusing to run the VMM as uid {uid} / gid {gid}: the jail needs an unprivileged id")]
    Privileged {
        /// Asked uid.
        uid: u32,
        /// Asked gid.
        gid: u32,
    },
    /// A system call of the jail failed.
    #[error("cannot jail the VMM: {step}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The privileges are still there after dropping them.
    #[error("cannot jail the VMM: {0}")]
    Verify(&'static str),
}

fn check(step: &'static str, rc: libc::c_int) -> Result<(), JailError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(JailError::Step {
            step,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Where the empty root is mounted before `pivot_root` (only inside the
/// VMM's mount namespace): `/tmp` as bubblewrap does, else `/dev` (which
/// exists: `/dev/kvm` was opened from it).
fn mount_point() -> &'static CStr {
    if Path::new("/tmp").is_dir() {
        c"/tmp"
    } else {
        c"/dev"
    }
}

/// Enters the jail (see the module docs). Must run while the process has
/// one thread: namespaces, credentials and `no_new_privs` are per thread,
/// and threads started afterwards inherit them.
pub fn enter(ids: JailIds) -> Result<(), JailError> {
    if ids.uid == 0 || ids.gid == 0 {
        return Err(JailError::Privileged {
            uid: ids.uid,
            gid: ids.gid,
        });
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if pid != 1 {
        return Err(JailError::NotIsolated(pid));
    }
    empty_root()?;
    drop_privileges(ids)?;
    verify(ids)
}

/// Steps 1–2: a private mount tree whose root is an empty read-only tmpfs.
fn empty_root() -> Result<(), JailError> {
    let at = mount_point();
    // SAFETY: each call below takes NUL-terminated strings that live for
    // the call (literals) or null pointers where the kernel allows them;
    // none writes to our memory.
    unsafe {
        // A mount namespace of our own even if the caller's clone gave
        // none: pivot_root must never touch a namespace another process uses.
        check(
            "unshare the mount namespace",
            libc::unshare(libc::CLONE_NEWNS),
        )?;
        check(
            "make the mount tree private",
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
        )?;
        check(
            "mount the empty root (tmpfs)",
            libc::mount(
                c"isolate-vmm".as_ptr(),
                at.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=4k,nr_inodes=2,mode=0555".as_ptr().cast(),
            ),
        )?;
        check("enter the empty root", libc::chdir(at.as_ptr()))?;
        // pivot_root(".", "."): the old root is stacked on the new one,
        // then detached; no directory for it is needed in the new root.
        check(
            "pivot_root into the empty root",
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
        )?;
        check(
            "detach the host's root",
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
        )?;
        check("enter the new root", libc::chdir(c"/".as_ptr()))?;
        check(
            "make the empty root read-only",
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                std::ptr::null(),
            ),
        )?;
    }
    Ok(())
}

/// Step 3: no capability can come back (empty bounding set, no ambient,
/// `no_new_privs`), then the unprivileged ids, then nothing inheritable.
fn drop_privileges(ids: JailIds) -> Result<(), JailError> {
    // SAFETY: prctl and the set*id calls take integers only.
    unsafe {
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
            {
                return Err(JailError::Step {
                    step: "empty the capability bounding set",
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        check(
            "clear the ambient capabilities",
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
        )?;
        check(
            "drop the supplementary groups",
            libc::setgroups(0, std::ptr::null()),
        )?;
        check(
            "set the VMM's gid",
            libc::setresgid(ids.gid, ids.gid, ids.gid),
        )?;
        check(
            "set the VMM's uid",
            libc::setresuid(ids.uid, ids.uid, ids.uid),
        )?;
        check(
            "set no_new_privs",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        )?;
    }
    set_caps(&[CapData::default(); 2])
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn set_caps(data: &[CapData; 2]) -> Result<(), JailError> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: `header` and the two-element `data` array are the layout
    // capset(2) reads for version 3; both live for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    check("clear the capability sets", rc as libc::c_int)
}

fn get_caps() -> Result<[CapData; 2], JailError> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) writes two `CapData` for version 3 into `data`,
    // which is that large; `header` is valid for the call.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    check("read the capability sets", rc as libc::c_int)?;
    Ok(data)
}

/// Checks the result rather than trusting each step.
fn verify(ids: JailIds) -> Result<(), JailError> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: getresuid writes three uids into valid out-pointers.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    if [r, e, s] != [ids.uid; 3] {
        return Err(JailError::Verify("the uid did not change"));
    }
    if get_caps()?
        .iter()
        .any(|c| c.effective | c.permitted | c.inheritable != 0)
    {
        return Err(JailError::Verify("capabilities remain"));
    }
    // SAFETY: prctl(PR_GET_NO_NEW_PRIVS) takes no pointers.
    if unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } != 1 {
        return Err(JailError::Verify("no_new_privs is not set"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unprivileged_and_distinct_per_pid() {
        let a = JailIds::for_pid(1);
        let b = JailIds::for_pid(2);
        assert_ne!(a, b);
        let top = JailIds::for_pid(PID_MAX_LIMIT - 1);
        assert!(top.uid > 0 && top.uid < 1_879_048_191);
        assert!(a.uid >= 524_288);
    }

    #[test]
    fn refuses_root_and_a_shared_pid_namespace() {
        assert!(matches!(
            enter(JailIds { uid: 0, gid: 5 }),
            Err(JailError::Privileged { .. })
        ));
        // The test runner is not PID 1: nothing is changed.
        assert!(matches!(
            enter(JailIds::for_pid(7)),
            Err(JailError::NotIsolated(_))
        ));
    }
}
