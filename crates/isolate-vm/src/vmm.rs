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
//!
//! The guest is hostile: its control lines are bounded and split by a
//! [`LineSplitter`], each message is checked with
//! [`ControlMessage::check_from_guest`] before the VMM acts on it, and guest
//! text (error messages, console lines) is escaped before it reaches a
//! host terminal. A guest that breaks the protocol ends the run with a
//! [`FailKind::Guest`] report.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use isolate_core::protocol::{
    escape_guest_text, ControlMessage, GuestBounds, LineSplitter, MAX_GUEST_TEXT,
};
use isolate_core::{error_chain, ExecFailure, Status};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::builder::{self, ConsoleSinks, MicroVm, VcpuStopped};
use crate::devices::virtio::ConsoleInput;
use crate::seccomp::Role;
use crate::vcpu::StopReason;
use crate::wire::{FailKind, Report, VmmConfig, FORWARDED_SIGNALS};

/// Console lines kept in boot-failure messages.
const CONSOLE_LINES_IN_ERRORS: usize = 15;
/// Longest console line shown in an error (characters).
const CONSOLE_LINE_CHARS: usize = 300;
/// Most characters of a guest's non-message control line shown in an error.
const BAD_LINE_CHARS: usize = 200;
/// Wall time added to the time since the VMM started when bounding the
/// CPU time a guest reports (clock granularity, accounting lag).
const CPU_TIME_SLACK: Duration = Duration::from_secs(1);
/// Input bytes allowed to wait for the guest before the stdin reader pauses.
const STDIN_BACKLOG: usize = 1 << 20;

/// What the main thread waits for.
enum Event {
    Control(ControlMessage),
    /// The guest broke the control protocol (the run ends): what it did,
    /// guest text already escaped.
    Protocol(String),
    Vcpu(VcpuStopped),
    Signal(i32),
    ParentGone,
    /// The host's reader of the workload's output fd 1 or 2 went away.
    OutputClosed(u8),
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
    if let Some(level) = cfg
        .log_level
        .as_deref()
        .and_then(isolate_core::logger::parse_level)
    {
        isolate_core::logger::init("isolate-vmm", level);
    }
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
        Err(e) => return fail(FailKind::Vmm, error_chain(&e)),
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
        stdout: Box::new(HostOutput::new(
            unsafe { File::from_raw_fd(stdout) },
            1,
            tx.clone(),
        )),
        // SAFETY: as above.
        stderr: Box::new(HostOutput::new(
            unsafe { File::from_raw_fd(stderr) },
            2,
            tx.clone(),
        )),
        control: Box::new(ControlSink::new(tx.clone())),
    };
    trace.mark("KVM and files open");
    if let Err(e) = crate::jail::enter(cfg.jail) {
        return fail(FailKind::Vmm, error_chain(&e));
    }
    trace.mark("jailed");
    let mut vm = match build_vm(&cfg, kvm, files, sinks, &trace) {
        Ok(vm) => vm,
        Err(e) => return fail(FailKind::Vmm, error_chain(&e)),
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
        Err(e) => return fail(FailKind::Vmm, error_chain(&e)),
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
        // Nothing the guest says is acted on before it is checked.
        let ev = ev.map(|ev| checked(ev, guest_bounds(cfg, t0)));
        match ev {
            Ok(Event::Protocol(what)) => return fail(FailKind::Guest, what),
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
                return guest_error(exec, &message);
            }
            Ok(Event::Control(_)) => {}
            Ok(Event::Signal(signo)) => {
                vm.control
                    .push(ControlMessage::Signal { signo }.to_line().as_bytes());
            }
            Ok(Event::OutputClosed(fd)) => {
                vm.control
                    .push(ControlMessage::OutputClosed { fd }.to_line().as_bytes());
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
        s.push_str(&escape_guest_text(l.trim_end(), CONSOLE_LINE_CHARS));
    }
    s
}

/// `ev`, or a protocol error if it is a guest message that fails
/// [`ControlMessage::check_from_guest`].
fn checked(ev: Event, bounds: GuestBounds) -> Event {
    match ev {
        Event::Control(msg) => match msg.check_from_guest(bounds) {
            Ok(()) => Event::Control(msg),
            Err(e) => Event::Protocol(e.to_string()),
        },
        other => other,
    }
}

/// The report for a guest's `error` message: its text is escaped and cut
/// to [`MAX_GUEST_TEXT`] characters.
fn guest_error(exec: Option<ExecFailure>, message: &str) -> Report {
    let kind = match exec {
        Some(ExecFailure::NotFound) => FailKind::NotFound,
        Some(ExecFailure::NotExecutable) => FailKind::NotExecutable,
        None => FailKind::Setup,
    };
    fail(kind, escape_guest_text(message, MAX_GUEST_TEXT))
}

/// What the guest's reports can hold: its RAM, and the CPU time all its
/// vCPUs can have used since the VMM started (with [`CPU_TIME_SLACK`]).
fn guest_bounds(cfg: &VmmConfig, t0: Instant) -> GuestBounds {
    let wall = t0.elapsed().saturating_add(CPU_TIME_SLACK);
    let wall_ns = u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX);
    GuestBounds {
        memory: cfg.boot.mem_size,
        cpu_time_ns: wall_ns.saturating_mul(u64::from(cfg.boot.vcpus.max(1))),
    }
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

/// Console 2's output: control lines from the guest init. Runs on a vCPU
/// thread, so it never blocks.
///
/// It holds at most one bounded line ([`LineSplitter`]) and passes on at
/// most one `started`, then one `exit` or `error`, or one protocol error:
/// the first line that is too long or is not a control message ends the
/// run, and nothing after it, or after the workload's end, is read. So the
/// guest can neither grow the VMM's memory nor flood its event queue.
/// The workload's stdout or stderr on the host. When its reader goes away
/// (`EPIPE`), the guest is told once and what follows is dropped, as a
/// pipe's writer on the host would meet `EPIPE` too.
struct HostOutput {
    out: File,
    fd: u8,
    events: Sender<Event>,
    closed: bool,
}

impl HostOutput {
    fn new(out: File, fd: u8, events: Sender<Event>) -> Self {
        Self {
            out,
            fd,
            events,
            closed: false,
        }
    }
}

impl Write for HostOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.out.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                let _ = self.events.send(Event::OutputClosed(self.fd));
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.out.flush()
    }
}

struct ControlSink {
    lines: LineSplitter,
    started: bool,
    done: bool,
    tx: Sender<Event>,
}

impl ControlSink {
    fn new(tx: Sender<Event>) -> Self {
        Self {
            lines: LineSplitter::default(),
            started: false,
            done: false,
            tx,
        }
    }

    /// One complete line: the event it makes, if any.
    fn event(&mut self, line: &[u8]) -> Option<Event> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let Some(msg) = std::str::from_utf8(line)
            .ok()
            .and_then(ControlMessage::from_line)
        else {
            return Some(Event::Protocol(format!(
                "the guest sent a line that is not a control message: \"{}\"",
                escape_guest_text(&String::from_utf8_lossy(line), BAD_LINE_CHARS)
            )));
        };
        match msg {
            ControlMessage::Started { .. } if self.started => None,
            ControlMessage::Started { .. } => {
                self.started = true;
                Some(Event::Control(msg))
            }
            // Checked (and refused) by the main thread.
            _ => Some(Event::Control(msg)),
        }
    }

    fn send(&mut self, ev: Event) {
        // After an exit, an error or a protocol error the run is over.
        self.done = !matches!(ev, Event::Control(ControlMessage::Started { .. }));
        let _ = self.tx.send(ev);
    }
}

impl Write for ControlSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(data.len());
        }
        let mut events = Vec::new();
        let split = self.lines.push(data, |line| events.push(line.to_vec()));
        for line in events {
            if self.done {
                return Ok(data.len());
            }
            if let Some(ev) = self.event(&line) {
                self.send(ev);
            }
        }
        if let Err(e) = split {
            if !self.done {
                self.send(Event::Protocol(e.to_string()));
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

    fn sink() -> (ControlSink, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        (ControlSink::new(tx), rx)
    }

    /// The events sent so far, as control messages or `Err(protocol error)`.
    fn events(rx: &mpsc::Receiver<Event>) -> Vec<Result<ControlMessage, String>> {
        rx.try_iter()
            .map(|e| match e {
                Event::Control(m) => Ok(m),
                Event::Protocol(p) => Err(p),
                _ => panic!("not a control event"),
            })
            .collect()
    }

    const EXIT_3: &[u8] =
        b"{\"t\":\"exit\",\"status\":{\"exited\":3},\"peak_memory\":null,\"cpu_time_ns\":5}\n";

    fn exit_3() -> ControlMessage {
        ControlMessage::Exit {
            status: Status::Exited(3),
            peak_memory: None,
            cpu_time_ns: Some(5),
        }
    }

    #[test]
    fn control_sink_parses_lines_split_across_writes() {
        let (mut sink, rx) = sink();
        sink.write_all(b"{\"t\":\"sta").unwrap();
        sink.write_all(b"rted\",\"uptime_ns\":7}\r\n\r\n").unwrap();
        sink.write_all(EXIT_3).unwrap();
        assert_eq!(
            events(&rx),
            vec![Ok(ControlMessage::Started { uptime_ns: 7 }), Ok(exit_3())]
        );
    }

    #[test]
    fn an_oversize_control_line_ends_the_run() {
        let (mut sink, rx) = sink();
        let chunk = [b'A'; 4096];
        for _ in 0..20 {
            sink.write_all(&chunk).unwrap();
        }
        sink.write_all(b"\n").unwrap();
        sink.write_all(EXIT_3).unwrap();
        let got = events(&rx);
        assert_eq!(
            got.len(),
            1,
            "nothing is taken from the guest after the error"
        );
        let err = got[0].as_ref().unwrap_err();
        assert!(err.contains("longer than 65536 bytes"), "{err}");
        assert_eq!(sink.lines.pending(), 0, "the line is not kept");
    }

    #[test]
    fn a_garbage_control_line_ends_the_run_with_escaped_text() {
        let (mut sink, rx) = sink();
        sink.write_all(b"\x1b]0;pwned\x07\x1b[2J\xff\n").unwrap();
        sink.write_all(EXIT_3).unwrap();
        let got = events(&rx);
        assert_eq!(got.len(), 1);
        let err = got[0].as_ref().unwrap_err();
        assert!(
            !err.chars().any(|c| c.is_control()),
            "raw control characters in {err:?}"
        );
        assert!(err.contains("\\x1b]0;pwned\\x07"), "{err:?}");
    }

    #[test]
    fn control_sink_passes_one_start_and_nothing_after_the_end() {
        let (mut sink, rx) = sink();
        let started = b"{\"t\":\"started\",\"uptime_ns\":1}\n";
        for _ in 0..1000 {
            sink.write_all(started).unwrap();
        }
        sink.write_all(EXIT_3).unwrap();
        for _ in 0..1000 {
            sink.write_all(EXIT_3).unwrap();
            sink.write_all(b"garbage\n").unwrap();
        }
        assert_eq!(
            events(&rx),
            vec![Ok(ControlMessage::Started { uptime_ns: 1 }), Ok(exit_3())]
        );
    }

    #[test]
    fn host_messages_from_the_guest_are_passed_on_to_be_refused() {
        let (mut sink, rx) = sink();
        sink.write_all(b"{\"t\":\"signal\",\"signo\":9}\n").unwrap();
        sink.write_all(EXIT_3).unwrap();
        let got = events(&rx);
        assert_eq!(got, vec![Ok(ControlMessage::Signal { signo: 9 })]);
        let bounds = guest_bounds(&test_config(1 << 30, 1), Instant::now());
        let Event::Protocol(why) =
            checked(Event::Control(ControlMessage::Signal { signo: 9 }), bounds)
        else {
            panic!("a signal from the guest passed the check");
        };
        assert!(why.contains("only the host sends"), "{why}");
    }

    fn test_config(mem_size: u64, vcpus: u8) -> VmmConfig {
        VmmConfig {
            boot: crate::wire::BootSpec {
                kernel: "/k".into(),
                initrd: vec![],
                mem_size,
                vcpus,
                disks: vec![],
                console_log: false,
                cmdline_extra: String::new(),
            },
            stdin: false,
            timeout_ms: None,
            boot_timeout_ms: 30_000,
            seccomp: true,
            jail: crate::jail::JailIds { uid: 1, gid: 1 },
            trace: false,
            log_level: None,
            #[cfg(feature = "test-hooks")]
            test_guest: None,
        }
    }

    #[test]
    fn guest_bounds_are_the_ram_and_the_cpu_time_so_far() {
        let cfg = test_config(64 << 20, 2);
        let t0 = Instant::now() - Duration::from_secs(10);
        let b = guest_bounds(&cfg, t0);
        assert_eq!(b.memory, 64 << 20);
        // 2 vCPUs × (10 s + 1 s of slack), and not much more.
        assert!(b.cpu_time_ns >= 22_000_000_000, "{b:?}");
        assert!(b.cpu_time_ns < 23_000_000_000, "{b:?}");
    }

    #[test]
    fn lying_exit_reports_become_protocol_errors() {
        let bounds = guest_bounds(&test_config(64 << 20, 1), Instant::now());
        let lies = [
            (Status::Exited(99_999), None, None, "exit code 99999"),
            (Status::Signaled(-7), None, None, "signal -7"),
            (Status::TimedOut, None, None, "only the host decides"),
            (Status::Exited(0), Some(u64::MAX), None, "peak memory"),
            (Status::Exited(0), None, Some(u64::MAX), "CPU time"),
        ];
        for (status, peak_memory, cpu_time_ns, named) in lies {
            let msg = ControlMessage::Exit {
                status,
                peak_memory,
                cpu_time_ns,
            };
            match checked(Event::Control(msg), bounds) {
                Event::Protocol(why) => assert!(why.contains(named), "{why}"),
                _ => panic!("{status:?} passed the check"),
            }
        }
        let honest = ControlMessage::Exit {
            status: Status::Exited(3),
            peak_memory: Some(1 << 20),
            cpu_time_ns: Some(1_000),
        };
        assert!(matches!(
            checked(Event::Control(honest.clone()), bounds),
            Event::Control(m) if m == honest
        ));
    }

    #[test]
    fn guest_error_text_is_escaped_and_bounded() {
        let message = format!("\x1b]0;pwned\x07\x1b[2J{}", "x".repeat(100_000));
        let Report::Failed { kind, message } = guest_error(None, &message) else {
            panic!("not a failure");
        };
        assert_eq!(kind, FailKind::Setup);
        assert!(
            message.starts_with("\\x1b]0;pwned\\x07\\x1b[2J"),
            "{message:.40}"
        );
        assert!(!message.chars().any(|c| c.is_control()));
        // Cut after MAX_GUEST_TEXT characters of the guest's text.
        assert!(message.ends_with('…'));
        assert!(message.len() < MAX_GUEST_TEXT + 20, "{}", message.len());
        assert!(matches!(
            guest_error(Some(ExecFailure::NotFound), "x"),
            Report::Failed {
                kind: FailKind::NotFound,
                ..
            }
        ));
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
