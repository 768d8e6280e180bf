//! The workload's privileges inside the guest, the same as in container
//! mode: a mount namespace of its own where Docker's masked and read-only
//! paths apply (the init keeps its own view), Docker's capability set (or
//! the one `--cap-add`/`--cap-drop` made), `no_new_privs`, and the seccomp
//! programs the host compiled. Without them the workload would be root with
//! every capability in the guest, one guest-kernel bug away from the VMM.
//!
//! Everything here runs in the forked child between `fork` and `execve`.

use isolate_core::protocol::{masks, GuestPrivileges};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

/// Highest capability number there can be (the kernel's `CAP_LAST_CAP` is
/// read from /proc; this bounds the loop).
const MAX_CAPS: u32 = 64;

/// A mount namespace of the workload's own, with Docker's masks, a
/// read-only `/sys` and cgroup file system. Must run while the child still
/// has CAP_SYS_ADMIN.
pub fn mask_paths() -> Result<(), Errno> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    let exists = |p: &str| std::path::Path::new(p).exists();
    for f in masks::FILES.iter().filter(|f| exists(f)) {
        mount(
            Some("/dev/null"),
            *f,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
    }
    for d in masks::DIRS.iter().filter(|d| exists(d)) {
        mount(
            Some("tmpfs"),
            *d,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )?;
    }
    let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for p in masks::READ_ONLY.iter().filter(|p| exists(p)) {
        mount(Some(*p), *p, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
        mount(None::<&str>, *p, None::<&str>, ro | nosuid, None::<&str>)?;
    }
    // /sys and the cgroup file system below it: read-only for the workload
    // (it cannot raise its own limits); the init writes through its own
    // mount namespace.
    for p in ["/sys/fs/cgroup", "/sys"].iter().filter(|p| exists(p)) {
        match mount(None::<&str>, *p, None::<&str>, ro | nosuid, None::<&str>) {
            Ok(()) | Err(Errno::EINVAL) => {} // not a mount point of its own
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Drops every capability outside the mask from the bounding set and the
/// ambient set. Must run before the uid changes (it needs CAP_SETPCAP).
pub fn drop_bounding(p: &GuestPrivileges) -> Result<(), Errno> {
    for cap in 0..MAX_CAPS {
        if p.capabilities & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            match Errno::last() {
                Errno::EINVAL => break, // past the kernel's last capability
                e => return Err(e),
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(())
}

/// Sets the permitted, effective and inheritable sets to the mask (uid 0)
/// or to nothing (other users), then `no_new_privs`, then the seccomp
/// programs, last of all before `execve`.
pub fn apply(p: &GuestPrivileges, uid: u32) -> Result<(), Errno> {
    let caps = if uid == 0 { p.capabilities } else { 0 };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let word = |i: u32| Data {
        effective: (caps >> (32 * i)) as u32,
        permitted: (caps >> (32 * i)) as u32,
        inheritable: 0,
    };
    let data = [word(0), word(1)];
    // SAFETY: `header` and `data` are a v3 capability header and its two
    // data words, valid for the call; the kernel only reads them.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(Errno::last());
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Errno::last());
    }
    for program in &p.seccomp {
        let insns: Vec<libc::sock_filter> = program
            .iter()
            .map(|i| {
                let (code, jt, jf, k) = GuestPrivileges::unpack(*i);
                libc::sock_filter { code, jt, jf, k }
            })
            .collect();
        let prog = libc::sock_fprog {
            len: u16::try_from(insns.len()).map_err(|_| Errno::E2BIG)?,
            filter: insns.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `insns`, alive for the call; the kernel
        // copies the program.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_round_trip() {
        for (code, jt, jf, k) in [
            (0x20u16, 0u8, 0u8, 4u32),
            (0x15, 3, 250, 0xc000_003e),
            (6, 0, 0, 0x7fff_0000),
        ] {
            assert_eq!(
                GuestPrivileges::unpack(GuestPrivileges::pack(code, jt, jf, k)),
                (code, jt, jf, k)
            );
        }
    }
}
