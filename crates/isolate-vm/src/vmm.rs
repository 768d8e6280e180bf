//! The `isolate-vmm` process: reads a [`VmmConfig`], builds and runs the
//! VM, steers the workload's lifecycle, and reports on the report pipe.
//!
//! Order: read the config → open everything (`/dev/kvm`, kernel, initrd,
//! disk images, `/proc/self/statm`) → enter the jail ([`crate::jail`]) →
//! build the VM from the open files → start the threads, each of which
//! installs its seccomp filter first ([`crate::seccomp::FilterGate`]) →
//! the main thread installs its own → only then do the vCPUs run.
//!
//! Threads: one per vCPU, one feeding fd 0 to the guest's stdin (if
//! asked), one forwarding signals (SIGTERM, SIGINT, … sent to the VMM go to
//! the workload as control messages), one watching the config pipe (EOF:
//! the library's process is gone, the VM ends). The main thread waits for
//! events: control lines from the guest init, vCPU stops, signals,
//! deadlines (boot watchdog, workload timeout).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use isolate_core::protocol::ControlMessage;
use isolate_core::{ExecFailure, Status};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::builder::{self, ConsoleSinks, MicroVm, VcpuStopped};
use crate::config::{FailKind, Report, VmmConfig};
use crate::devices::virtio::ConsoleInput;
use crate::seccomp::Role;
use crate::vcpu::StopReason;

/// Signals the VMM forwards to the workload.
pub const FORWARDED_SIGNALS: &[i32] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGWINCH,
];

/// Console lines kept in boot-failure messages.
const CONSOLE_LINES_IN_ERRORS: usize = 15;
/// Longest control line accepted from the guest.
const MAX_CONTROL_LINE: usize = 64 * 1024;
/// Input bytes allowed to wait for the guest before the stdin reader pauses.
const STDIN_BACKLOG: usize = 1 << 20;

/// What the main thread waits for.
enum Event {
    Control(ControlMessage),
    Vcpu(VcpuStopped),
    Signal(i32),
    ParentGone,
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("run") => {
            let fd = |name: &str| -> Option<RawFd> {
                let i = args.iter().position(|a| a == name)?;
                args.get(i + 1)?.parse().ok()
            };
            match (fd("--config-fd"), fd("--report-fd")) {
                (Some(c), Some(r)) => run_fds(c, r),
                _ => usage(),
            }
        }
        Some("probe") => crate::probe::main(),
        _ => usage(),
    }
}

fn usage() -> i32 {
    eprintln!(
        "isolate-vmm is started by isolate (VM mode), not by hand.\n\
         usage: isolate-vmm run --config-fd N --report-fd M\n       isolate-vmm probe   (runs a tiny guest; prints the time to its first exit)"
    );
    2
}

/// The whole error chain on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

fn run_fds(config_fd: RawFd, report_fd: RawFd) -> i32 {
    // SAFETY: the library passes these two fds to this process for its own
    // use; nothing else in the process owns or closes them.
    let (config, mut report) =
        unsafe { (File::from_raw_fd(config_fd), File::from_raw_fd(report_fd)) };
    let mut config = BufReader::new(config);
    let mut line = String::new();
    let cfg: VmmConfig = match config
        .read_line(&mut line)
        .ok()
        .and_then(|_| serde_json::from_str(&line).ok())
    {
        Some(c) => c,
        None => {
            let _ = report.write_all(
                Report::Failed {
                    kind: FailKind::Vmm,
                    message: "the VMM received no valid configuration".into(),
                }
                .to_line()
                .as_bytes(),
            );
            return 1;
        }
    };
    let r = run(cfg, config, &mut report);
    let _ = report.write_all(r.to_line().as_bytes());
    0
}

fn fail(kind: FailKind, message: impl Into<String>) -> Report {
    Report::Failed {
        kind,
        message: message.into(),
    }
}

/// Blocks the forwarded signals in this thread (and the threads it starts).
fn block_forwarded_signals() -> libc::sigset_t {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before
    // use; pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in FORWARDED_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// With `trace` in the config (`ISOLATE_VMM_TRACE` set for the library),
/// prints the VMM's phases with their time since the VMM started, to stderr.
struct Trace(Option<Instant>);

impl Trace {
    fn new(t0: Instant, on: bool) -> Self {
        Trace(on.then_some(t0))
    }
    fn mark(&self, what: &str) {
        if let Some(t0) = self.0 {
            eprintln!(
                "isolate-vmm: {:>9.3} ms {what}",
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}

fn run(cfg: VmmConfig, lifeline: BufReader<File>, report: &mut File) -> Report {
    let t0 = Instant::now();
    let trace = Trace::new(t0, cfg.trace);
    trace.mark("config read");
    let sigset = block_forwarded_signals();
    let (tx, rx) = mpsc::channel::<Event>();

    // Everything the VMM will use is opened here, before its jail.
    let kvm = match crate::host::open_kvm() {
        Ok(k) => k,
        Err(e) => return fail(FailKind::Vmm, e.chain()),
    };
    let files = match builder::BootFiles::open(&cfg.boot) {
        Ok(f) => f,
        Err(e) => return fail(FailKind::Vmm, chain(&e)),
    };
    let statm = File::open("/proc/self/statm").ok();
    // SAFETY: dup of the process's own stdout/stderr; the new fds are owned
    // by the returned Files.
    let (stdout, stderr) = unsafe { (libc::dup(1), libc::dup(2)) };
    if stdout < 0 || stderr < 0 {
        return fail(
            FailKind::Vmm,
            "cannot duplicate the workload's stdout/stderr",
        );
    }
    let sinks = ConsoleSinks {
        // SAFETY: fresh fds from dup above, owned by nothing else.
        stdout: Box::new(unsafe { File::from_raw_fd(stdout) }),
        // SAFETY: as above.
        stderr: Box::new(unsafe { File::from_raw_fd(stderr) }),
        control: Box::new(ControlSink {
            buf: Vec::new(),
            tx: tx.clone(),
        }),
    };
    trace.mark("KVM and files open");
    if let Err(e) = crate::jail::enter(cfg.jail) {
        return fail(FailKind::Vmm, chain(&e));
    }
    trace.mark("jailed");
    let mut vm = match build_vm(&cfg, kvm, files, sinks, &trace) {
        Ok(vm) => vm,
        Err(e) => return fail(FailKind::Vmm, chain(&e)),
    };
    trace.mark("VM built");

    // Each thread installs its seccomp filter first; the vCPUs run once
    // all have (see `seccomp::FilterGate`).
    let filters = crate::seccomp::FilterGate::new(seccomp_enabled(&cfg));
    let mut threads = 0;
    let gate = Gate::new();
    if cfg.stdin {
        let input = vm.stdin.clone();
        let control = vm.control.clone();
        let gate = gate.clone();
        let filters = filters.clone();
        threads += std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                if filters.install(Role::Service).is_ok() {
                    gate.wait();
                    feed_stdin(input, control)
                }
            })
            .is_ok() as usize;
    }
    {
        let tx = tx.clone();
        let filters = filters.clone();
        threads += std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if filters.install(Role::Service).is_ok() {
                    forward_signals(sigset, tx)
                }
            })
            .is_ok() as usize;
    }
    {
        let tx = tx.clone();
        let filters = filters.clone();
        threads += std::thread::Builder::new()
            .name("lifeline".into())
            .spawn(move || {
                if filters.install(Role::Service).is_ok() {
                    watch_lifeline(lifeline, tx)
                }
            })
            .is_ok() as usize;
    }
    let first_exit_trace = Trace::new(t0, cfg.trace);
    let vcpu_filters = filters.clone();
    match vm.start(
        tx.clone(),
        Event::Vcpu,
        move || first_exit_trace.mark("first guest exit"),
        move || vcpu_filters.install_and_wait(Role::Vcpu),
    ) {
        Ok(vcpus) => threads += vcpus.len(),
        Err(e) => return fail(FailKind::Vmm, chain(&e)),
    }
    if let Err(e) = filters.seal(threads) {
        return fail(FailKind::Vmm, e);
    }
    drop(tx);
    trace.mark("vCPUs started");
    let run = RunState {
        t0,
        statm,
        trace,
        gate,
    };
    supervise(&cfg, &vm, &rx, &run, report)
}

/// The VM of `cfg` from the files opened before the jail.
fn build_vm(
    cfg: &VmmConfig,
    kvm: kvm_ioctls::Kvm,
    files: builder::BootFiles,
    sinks: ConsoleSinks,
    trace: &Trace,
) -> Result<MicroVm, builder::BuildError> {
    #[cfg(feature = "test-hooks")]
    if let Some(guest) = &cfg.test_guest {
        return crate::test_guest::build(kvm, guest, sinks);
    }
    builder::build_traced(kvm, &cfg.boot, files, sinks, &|m| trace.mark(m))
}

/// Whether the seccomp filters are installed: always in release builds;
/// a debug build obeys the config (`ISOLATE_VMM_SECCOMP=0` for the library).
fn seccomp_enabled(cfg: &VmmConfig) -> bool {
    cfg.seccomp || !cfg!(debug_assertions)
}

/// What the main thread keeps while the VM runs.
struct RunState {
    t0: Instant,
    statm: Option<File>,
    trace: Trace,
    gate: Gate,
}

fn supervise(
    cfg: &VmmConfig,
    vm: &MicroVm,
    rx: &mpsc::Receiver<Event>,
    run: &RunState,
    report: &mut File,
) -> Report {
    let RunState {
        t0,
        statm,
        trace,
        gate,
    } = run;
    let (t0, statm) = (*t0, statm.as_ref());
    let boot_deadline = t0 + Duration::from_millis(cfg.boot_timeout_ms);
    let timeout = cfg.timeout_ms.map(|ms| t0 + Duration::from_millis(ms));
    let mut started = false;
    let mut exit: Option<(Status, Option<u64>, Option<u64>)> = None;
    let mut exit_deadline = None;
    // Signals that arrive before the guest listens.
    let mut held_signals: Vec<i32> = Vec::new();
    loop {
        let now = Instant::now();
        let deadline = [
            (!started && exit.is_none()).then_some(boot_deadline),
            timeout.filter(|_| exit.is_none()),
            exit_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        let ev = match deadline {
            Some(d) => rx.recv_timeout(d.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match ev {
            Ok(Event::Control(ControlMessage::Started { uptime_ns })) => {
                if !started {
                    started = true;
                    // The init's ports are open and raw now: input may flow.
                    vm.stdin.open();
                    vm.control.open();
                    gate.open();
                    for signo in held_signals.drain(..) {
                        vm.control
                            .push(ControlMessage::Signal { signo }.to_line().as_bytes());
                    }
                    trace.mark(&format!("workload started (guest uptime {uptime_ns} ns)"));
                    let r = Report::Started {
                        guest_uptime_ns: uptime_ns,
                        vmm_ns: t0.elapsed().as_nanos() as u64,
                    };
                    let _ = report.write_all(r.to_line().as_bytes());
                }
            }
            Ok(Event::Control(ControlMessage::Exit {
                status,
                peak_memory,
                cpu_time_ns,
            })) => {
                if exit.is_none() {
                    trace.mark("workload exited");
                    exit = Some((status, cpu_time_ns, peak_memory));
                    // The init syncs and unmounts volumes, then resets.
                    exit_deadline =
                        Some(Instant::now() + Duration::from_millis(cfg.boot_timeout_ms));
                }
            }
            Ok(Event::Control(ControlMessage::Error { exec, message })) => {
                let kind = match exec {
                    Some(ExecFailure::NotFound) => FailKind::NotFound,
                    Some(ExecFailure::NotExecutable) => FailKind::NotExecutable,
                    None => FailKind::Setup,
                };
                return fail(kind, message);
            }
            Ok(Event::Control(_)) => {}
            Ok(Event::Signal(signo)) => {
                vm.control
                    .push(ControlMessage::Signal { signo }.to_line().as_bytes());
            }
            Ok(Event::ParentGone) => {
                return fail(
                    FailKind::Vmm,
                    "the isolate process that started this VM is gone",
                );
            }
            Ok(Event::Vcpu(stopped)) => {
                trace.mark(&format!(
                    "vCPU {} stopped: {:?}",
                    stopped.id, stopped.reason
                ));
                if let Some((status, cpu, peak)) = exit {
                    return finished(vm, statm, status, cpu, peak);
                }
                return fail(
                    FailKind::Boot,
                    early_stop_message(&stopped.reason, vm, started),
                );
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if let Some((status, cpu, peak)) = exit {
                    if exit_deadline.is_some_and(|d| now >= d) {
                        return finished(vm, statm, status, cpu, peak);
                    }
                }
                if timeout.is_some_and(|d| now >= d) && exit.is_none() {
                    return finished(vm, statm, Status::TimedOut, None, None);
                }
                if !started && exit.is_none() && now >= boot_deadline {
                    return fail(
                        FailKind::Boot,
                        format!(
                            "the guest did not start the workload within {:.1} s (raise ISOLATE_BOOT_TIMEOUT on slow hosts){}",
                            cfg.boot_timeout_ms as f64 / 1000.0,
                            console_tail(vm)
                        ),
                    );
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return fail(FailKind::Vmm, "all VMM threads ended unexpectedly");
            }
        }
    }
}

fn early_stop_message(reason: &StopReason, vm: &MicroVm, started: bool) -> String {
    let what = match reason {
        StopReason::Reset => "reset",
        StopReason::Shutdown => "stopped with a triple fault",
        StopReason::Halt => "halted",
        StopReason::SystemEvent(_) => "shut down",
        StopReason::Requested => "was stopped",
        StopReason::Error(e) => e.as_str(),
    };
    let when = if started {
        "before reporting the workload's exit"
    } else {
        "before starting the workload"
    };
    format!("the guest {what} {when}{}", console_tail(vm))
}

/// "; last console lines: …" with the tail of the serial log.
fn console_tail(vm: &MicroVm) -> String {
    let lines = vm.serial_log.last_lines();
    let tail: Vec<&String> = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(CONSOLE_LINES_IN_ERRORS)
        .collect();
    if tail.is_empty() {
        return "; the guest kernel printed nothing (try --console-log)".into();
    }
    let mut s = String::from("; last console lines:");
    for l in tail.into_iter().rev() {
        s.push_str("\n  ");
        s.push_str(l);
    }
    s
}

fn finished(
    vm: &MicroVm,
    statm: Option<&File>,
    status: Status,
    cpu_time_ns: Option<u64>,
    peak_memory: Option<u64>,
) -> Report {
    let touched = guest_memory_touched(&vm.machine.mem);
    let rss = statm.and_then(resident_bytes);
    Report::Finished {
        status,
        cpu_time_ns,
        peak_memory,
        host_overhead: rss.zip(touched).map(|(r, t)| r.saturating_sub(t)),
        guest_memory_touched: touched,
    }
}

const PAGE: usize = 4096;

/// Bytes of guest RAM resident on the host (`mincore` over the mapping).
pub fn guest_memory_touched(mem: &GuestMemoryMmap) -> Option<u64> {
    let mut total = 0u64;
    for region in mem.iter() {
        let len = region.len() as usize;
        let mut vec = vec![0u8; len.div_ceil(PAGE)];
        // SAFETY: `as_ptr()..+len` is the live, page-aligned mapping of this
        // region (kept alive by `mem`); `vec` has one byte per page of it.
        let rc = unsafe { libc::mincore(region.as_ptr().cast(), len, vec.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        total += vec.iter().filter(|b| *b & 1 != 0).count() as u64 * PAGE as u64;
    }
    Some(total)
}

/// Resident set size from an open `/proc/self/statm`.
pub fn resident_bytes(statm: &File) -> Option<u64> {
    let mut buf = [0u8; 128];
    let n = statm.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE as u64)
}

/// Opens once the guest init reported `started`: before that its ports are
/// still in cooked mode and would echo (and mangle) what the host sends.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn new() -> Self {
        Self::default()
    }

    fn open(&self) {
        *self.0 .0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0 .1.notify_all();
    }

    fn wait(&self) {
        let mut open = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.0 .1.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Feeds fd 0 to console 0; at end-of-file tells the guest init.
///
/// `stdin_eof` goes on another port than the data, so it is sent only once
/// the guest has taken every byte into its buffers, and it carries the
/// total count: the guest init reads hvc0 until it has that many bytes.
fn feed_stdin(input: ConsoleInput, control: ConsoleInput) {
    // SAFETY: fd 0 is the workload's stdin, handed to this process for
    // exactly this; ManuallyDrop keeps it open (nothing else closes it).
    let mut stdin = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(0) });
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent: u64 = 0;
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                input.push(&buf[..n]);
                sent += n as u64;
                while input.pending_len() > STDIN_BACKLOG {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if sent > 0 {
        while input.pending_len() > 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    control.push(
        ControlMessage::StdinEof { bytes: Some(sent) }
            .to_line()
            .as_bytes(),
    );
}

fn forward_signals(set: libc::sigset_t, tx: Sender<Event>) {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is an initialised sigset_t; `sig` is a valid out-pointer.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 && tx.send(Event::Signal(sig)).is_err() {
            return;
        }
    }
}

fn watch_lifeline(mut pipe: BufReader<File>, tx: Sender<Event>) {
    let mut buf = [0u8; 64];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = tx.send(Event::ParentGone);
}

/// Console 2's output: control lines from the guest init.
struct ControlSink {
    buf: Vec<u8>,
    tx: Sender<Event>,
}

impl Write for ControlSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        for &b in data {
            if b == b'\n' {
                let line = std::mem::take(&mut self.buf);
                if let Some(msg) = std::str::from_utf8(&line)
                    .ok()
                    .and_then(ControlMessage::from_line)
                {
                    let _ = self.tx.send(Event::Control(msg));
                }
            } else if self.buf.len() < MAX_CONTROL_LINE {
                self.buf.push(b);
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sink_parses_lines_split_across_writes() {
        let (tx, rx) = mpsc::channel();
        let mut sink = ControlSink {
            buf: Vec::new(),
            tx,
        };
        sink.write_all(b"{\"t\":\"sta").unwrap();
        sink.write_all(b"rted\",\"uptime_ns\":7}\r\nnot json\n{\"t\":\"exit\",\"status\":{\"exited\":3},\"peak_memory\":null,\"cpu_time_ns\":5}\n")
            .unwrap();
        let msgs: Vec<ControlMessage> = rx
            .try_iter()
            .map(|e| match e {
                Event::Control(m) => m,
                _ => panic!("not a control event"),
            })
            .collect();
        assert_eq!(
            msgs,
            vec![
                ControlMessage::Started { uptime_ns: 7 },
                ControlMessage::Exit {
                    status: Status::Exited(3),
                    peak_memory: None,
                    cpu_time_ns: Some(5)
                }
            ]
        );
    }

    #[test]
    fn resident_bytes_reads_statm() {
        let f = File::open("/proc/self/statm").unwrap();
        assert!(resident_bytes(&f).unwrap() > 0);
    }

    #[test]
    fn touched_memory_counts_written_pages() {
        use vm_memory::GuestMemoryRegion;
        use vm_memory::{Bytes, GuestAddress};
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        // Where transparent huge pages are `always` (Debian's cloud kernel),
        // one write would make 2 MiB resident: count 4 KiB pages here.
        for region in mem.iter() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .unwrap();
            // SAFETY: `host` and the region's length describe the mapping
            // `mem` owns for the rest of this test; madvise only changes
            // how the kernel backs it.
            unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_NOHUGEPAGE) };
        }
        let before = guest_memory_touched(&mem).unwrap();
        for i in 0..8u64 {
            mem.write_obj(1u8, GuestAddress(i * 4096 * 3)).unwrap();
        }
        let after = guest_memory_touched(&mem).unwrap();
        assert_eq!(after - before, 8 * 4096);
    }
}
