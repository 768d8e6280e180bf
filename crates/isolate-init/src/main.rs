//! `isolate-init`: PID 1 of an isolate VM guest.
//!
//! Boot order (docs/ARCHITECTURE.md, "Host ↔ guest protocol"):
//! mount /dev, /proc, /sys → open hvc0..2 in raw mode (or fall back to
//! /dev/console) → read `/isolate/spec.json` → set up the root (initramfs,
//! read-only bind of it, or block image + tmpfs overlay) → /dev/pts,
//! /dev/shm, /tmp → volumes → hostname, loopback → cgroup with limits →
//! run the workload, report `started` and `exit` → kill the rest, sync,
//! unmount volumes → `reboot(RB_AUTOBOOT)`, which ends the VM.
//!
//! PID 1 must never exit or die (the kernel would panic): every failure
//! becomes an `error` control message followed by the same power-off, and
//! the panic hook does the same for bugs.
//!
//! Host side, two rules follow from the guest's ttys:
//! - send nothing on hvc0 or hvc2 before the guest's first control message
//!   (`started` or `error`): an hvc tty starts in cooked mode, and bytes
//!   that arrive before the init has made it raw are echoed back with
//!   `\n` turned into `\r\n` (hvc reads nothing before the first open, so
//!   anything queued early arrives exactly in that window);
//! - `stdin_eof` travels on another port than the data: it carries the
//!   number of bytes the host sent, and the init keeps reading hvc0 until it
//!   has them (or, without a count, until hvc0 has been quiet for 20 ms)
//!   before closing the workload's stdin.

mod cgroup;
mod console;
mod mounts;
mod privileges;
mod relay;
mod run;
mod spec;

use std::error::Error as StdError;
use std::os::fd::AsFd;
use std::path::Path;

use isolate_core::protocol::{ControlMessage, SPEC_PATH};
use nix::sys::reboot::{reboot, RebootMode};

/// `error` message text: the error and its source chain.
fn setup_error(e: impl StdError) -> String {
    isolate_core::error_chain(&e)
}

/// Everything from the spec to the workload's end. Messages other than a
/// setup error (`started`, `exit`, exec errors) are sent from here.
fn guest(ports: &mut console::Ports, volumes: &mut Vec<String>) -> Result<(), String> {
    let spec = spec::read(Path::new(SPEC_PATH)).map_err(setup_error)?;
    // The spec may carry secrets in its environment: the workload need not see it.
    let _ = std::fs::remove_file(SPEC_PATH);

    mounts::setup_root(&spec.root, spec.read_only).map_err(setup_error)?;
    mounts::finish_specials().map_err(setup_error)?;
    *volumes = mounts::mount_volumes(&spec.volumes).map_err(setup_error)?;
    nix::unistd::sethostname(&spec.hostname)
        .map_err(|e| format!("cannot set hostname {:?}: {e}", spec.hostname))?;
    if spec.loopback {
        isolate_core::sys::loopback_up().map_err(|e| format!("cannot bring loopback up: {e}"))?;
    }
    let cg = cgroup::Cgroup::create(spec.memory_limit, spec.pids_limit).map_err(setup_error)?;

    let Some(status) = run::run(&spec, &cg, ports).map_err(setup_error)? else {
        return Ok(()); // exec error, already reported
    };
    let (peak_memory, cpu_time_ns) = (cg.peak_memory(), cg.cpu_time_ns());
    // `run` has killed what the workload left and relayed its output.
    // Volumes must be clean before the host hears of the end (it may stop
    // the VM right away).
    nix::unistd::sync();
    mounts::unmount(volumes);
    volumes.clear();
    let _ = nix::sys::termios::tcdrain(ports.stdout.as_fd());
    let _ = nix::sys::termios::tcdrain(ports.stderr.as_fd());
    ports.control.send(&ControlMessage::Exit {
        status,
        peak_memory,
        cpu_time_ns,
    });
    Ok(())
}

/// Ends the VM: kill everything, sync, unmount volumes, reboot (with
/// `reboot=k` an i8042 reset the VMM takes as the end). Never returns.
fn power_off(volumes: &[String]) -> ! {
    run::kill_all();
    nix::unistd::sync();
    mounts::unmount(volumes);
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_AUTOBOOT);
    // Unreachable on a working kernel; PID 1 must not exit regardless.
    loop {
        // SAFETY: pause(2) has no arguments and no memory effects.
        unsafe { libc::pause() };
    }
}

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "isolate-init: refusing to run as pid {}: this is the guest init of an isolate VM \
             (it mounts, reboots and must be PID 1 of a guest kernel)",
            std::process::id()
        );
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        console::emergency_send(&ControlMessage::Error {
            exec: None,
            message: format!("guest init failed: {info}"),
        });
        power_off(&[]);
    }));

    let mut volumes = Vec::new();
    let result = match mounts::early().map_err(setup_error) {
        Err(e) => Err(e),
        Ok(()) => match console::open_ports() {
            Err(e) => Err(setup_error(e)),
            Ok(mut ports) => match guest(&mut ports, &mut volumes) {
                Ok(()) => Ok(()),
                Err(msg) => {
                    ports.control.send(&ControlMessage::Error {
                        exec: None,
                        message: msg,
                    });
                    Ok(())
                }
            },
        },
    };
    if let Err(message) = result {
        console::emergency_send(&ControlMessage::Error {
            exec: None,
            message,
        });
    }
    power_off(&volumes);
}
