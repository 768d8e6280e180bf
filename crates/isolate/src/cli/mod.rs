//! The `isolate` command: parses the line, builds the [`Workload`], runs it
//! or a subcommand, and turns the result into docker's exit codes.

pub mod args;
mod compare_view;
mod detach;

use std::sync::Arc;
use std::time::Duration;

use isolate::{
    named, parse, pty, Capabilities, Error, Limits, Mode, Network, Result, Seccomp, VmOptions,
    Workload,
};

use args::{Cli, Command, ExecArgs, ModeArg, RunArgs, WorkloadOpts};

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Vm => Mode::Vm,
            ModeArg::Container => Mode::Container,
        }
    }
}

/// Builds the workload from the options and the command.
pub fn workload(opts: &WorkloadOpts, command: &[String]) -> Result<Workload> {
    let mut w = Workload {
        argv: command.to_vec(),
        ..Default::default()
    };
    if let Some(r) = &opts.rootfs {
        let abs = std::path::absolute(r).map_err(|e| Error::io("cannot resolve", r, e))?;
        w.rootfs(abs);
    }
    w.limits = Limits {
        memory: opts
            .memory
            .as_deref()
            .map(parse::size)
            .transpose()
            .map_err(|e| rename(e, "memory"))?,
        cpus: opts.cpus,
        pids: opts.pids_limit,
        io_weight: opts.io_weight,
    };
    for v in &opts.volumes {
        w.volume(parse::volume(v)?);
    }
    for d in &opts.devices {
        w.devices.push(parse::device(d)?);
    }
    for e in &opts.env {
        let (k, v) = parse::env(e)?;
        w.env(k, v);
    }
    w.cwd = opts.workdir.clone();
    w.hostname = opts.hostname.clone();
    w.read_only = opts.read_only;
    if let Some(u) = &opts.user {
        let u = parse::user(u)?;
        w.user(u.uid, u.gid);
    }
    if let Some(t) = &opts.timeout {
        w.timeout(parse::duration(t).map_err(|e| rename(e, "timeout"))?);
    }
    w.name = opts.name.clone();
    w.network(Network::parse(&opts.network)?);
    for p in &opts.publish {
        w.publish(parse::publish(p)?);
    }
    w.capabilities = Capabilities {
        add: opts.cap_add.clone(),
        drop: opts.cap_drop.clone(),
    };
    for opt in &opts.security_opt {
        if let Some(policy) = parse_security_opt(opt)? {
            w.seccomp(policy);
        }
    }
    w.vm = VmOptions {
        kernel: opts.kernel.clone(),
        vcpus: opts.vcpus,
        console_log: opts.console_log,
    };
    w.validate()?;
    Ok(w)
}

/// One `--security-opt`: `seccomp=unconfined|FILE.json` (docker also
/// accepts `seccomp:`), or `no-new-privileges[=true]` (always on, so
/// nothing to change: `None`).
fn parse_security_opt(opt: &str) -> Result<Option<Seccomp>> {
    let (key, value) = match opt.split_once(['=', ':']) {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    match (key, value) {
        ("seccomp", Some(v)) => Seccomp::from_option_value(v).map(Some),
        ("no-new-privileges", None | Some("true")) => Ok(None),
        ("no-new-privileges", Some(_)) => Err(Error::invalid(
            "security-opt",
            "no-new-privileges is always on in isolate; it cannot be turned off",
        )),
        _ => Err(Error::invalid(
            "security-opt",
            format!("{opt:?} is not supported; use seccomp=unconfined, seccomp=FILE.json or no-new-privileges"),
        )),
    }
}

/// A parse error of a generic field, renamed to the option the user typed.
fn rename(e: Error, field: &str) -> Error {
    match e {
        Error::Invalid { reason, .. } => Error::Invalid {
            field: field.to_string(),
            reason,
        },
        other => other,
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    // Set (with the workload's name) when this isolate is the supervisor of
    // a detached workload, started by `isolate -d`.
    let supervise = std::env::var(detach::SUPERVISE_ENV).ok();
    std::env::remove_var(detach::SUPERVISE_ENV);
    let result = match cli.command {
        None => run(cli.run, supervise),
        Some(Command::Run(args)) => run(args, supervise),
        Some(Command::Compare(args)) => compare_view::compare(args),
        Some(Command::Ps { json, all }) => ps(json, all),
        Some(Command::Exec(args)) => exec(args),
        Some(Command::Logs {
            name,
            follow,
            tail,
            timestamps,
        }) => detach::logs(&name, follow, tail, timestamps),
        Some(Command::Stop { name, time }) => detach::stop(&name, time),
        Some(Command::Wait { name }) => detach::wait(&name),
        Some(Command::Inspect { name }) => detach::inspect(&name),
        Some(Command::Rm { names, force }) => names.iter().try_fold(0, |_, n| detach::rm(n, force)),
        Some(Command::Stats { name, json }) => stats(&name, json),
        Some(Command::Update {
            name,
            memory,
            cpus,
            pids_limit,
        }) => update(&name, memory.as_deref(), cpus, pids_limit),
        Some(Command::Kill { name, signal }) => kill(&name, &signal),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("isolate: {}", e.chain());
            e.exit_code()
        }
    }
}

/// Signals isolate forwards to the workload.
const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn run(args: RunArgs, supervise: Option<String>) -> Result<i32> {
    let Some(mode) = args.mode else {
        return Err(Error::invalid(
            "mode",
            "choose the boundary with --mode vm (own kernel) or --mode container (shared kernel); see isolate --help",
        ));
    };
    if args.command.is_empty() {
        return Err(Error::invalid(
            "command",
            "no command given: isolate --mode <vm|container> [OPTIONS] <APP> [ARGS]...",
        ));
    }
    let mut w = workload(&args.opts, &args.command)?;
    w.tty = args.tty;
    Mode::from(mode).refuse_unsupported(&w)?;
    if let Some(name) = supervise {
        return detach::supervise(name, mode.into(), w);
    }
    if args.detach {
        if args.tty {
            return Err(Error::invalid(
                "detach",
                "-d with -t needs isolate attach, which does not exist yet; \
                 run -t in the foreground, or -d without -t (see isolate logs)",
            ));
        }
        return detach::start(&w);
    }
    let backend = isolate::isolator(mode.into())?;
    backend.check_host()?;
    // Handlers first: a signal that comes while the workload starts is
    // held, then forwarded, instead of killing isolate mid-start.
    let signals = forwarded_signals()?;
    let running: Arc<dyn isolate::Running> = Arc::from(backend.spawn(&w)?);
    let outcome = attend(running, signals)?;
    match outcome.status {
        isolate::Status::TimedOut => eprintln!(
            "isolate: the workload ran past its timeout of {} and was killed",
            fmt_duration(w.timeout.unwrap_or_default())
        ),
        isolate::Status::OomKilled => {
            eprintln!("isolate: the workload was killed at its memory limit (OOM)")
        }
        _ => {}
    }
    Ok(outcome.exit_code())
}

/// The window size of the caller's terminal (stdin, else stdout or stderr).
fn caller_window_size() -> Option<pty::WindowSize> {
    [0, 1, 2].into_iter().find_map(pty::window_size)
}

/// The handlers of the signals isolate forwards, installed before the
/// workload starts (the container's shim resets them in its child).
fn forwarded_signals() -> Result<signal_hook::iterator::Signals> {
    signal_hook::iterator::Signals::new(FORWARDED)
        .map_err(|e| Error::io("cannot install signal handlers for", "isolate", e))
}

/// Stays with a started workload to its end: forwards signals, relays its
/// pty (`--tty`) with the caller's terminal in raw mode, and restores the
/// terminal before returning, whatever happened.
fn attend(
    running: Arc<dyn isolate::Running>,
    mut signals: signal_hook::iterator::Signals,
) -> Result<isolate::Outcome> {
    let master = running.take_tty();
    let handle = signals.handle();
    // `--tty`: the window size follows the caller's terminal.
    let resize = match &master {
        Some(m) => {
            signals
                .add_signal(libc::SIGWINCH)
                .map_err(|e| Error::io("cannot install signal handlers for", "isolate", e))?;
            Some(
                m.try_clone()
                    .map_err(|e| Error::io("cannot duplicate", "the pty's master", e))?,
            )
        }
        None => None,
    };
    // The forwarder holds the workload weakly and is not joined: it ends
    // with the process, and the handle is still dropped at the end here.
    let target = Arc::downgrade(&running);
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == libc::SIGWINCH {
                if let (Some(m), Some(size)) = (&resize, caller_window_size()) {
                    let _ = pty::set_window_size(m, size);
                }
                continue;
            }
            if let Some(t) = target.upgrade() {
                let _ = t.signal(sig);
            }
        }
    });
    // The caller's terminal is raw while the workload has the pty, and put
    // back as it was when `raw` drops: at the end, or on any error below.
    let mut raw = None;
    let mut relay = None;
    if let Some(m) = master {
        if let Some(size) = caller_window_size() {
            pty::set_window_size(&m, size)?;
        }
        if pty::is_terminal(0) {
            raw = Some(pty::RawMode::enter(0)?);
        }
        relay = Some(
            pty::Relay::start(m).map_err(|e| Error::io("cannot relay", "the pty's master", e))?,
        );
    }
    let outcome = running.wait();
    if let Some(r) = relay {
        r.finish();
    }
    drop(raw);
    handle.close();
    outcome
}

/// `isolate exec`.
fn exec(args: ExecArgs) -> Result<i32> {
    let mut req = isolate::ExecRequest {
        argv: args.command,
        tty: args.tty,
        cwd: args.workdir,
        ..Default::default()
    };
    if let Some(cwd) = &req.cwd {
        if !cwd.starts_with('/') {
            return Err(Error::invalid(
                "workdir",
                format!("{cwd:?} is not absolute; give a path from the workload's root"),
            ));
        }
    }
    for e in &args.env {
        req.env.push(parse::env(e)?);
    }
    if let Some(u) = &args.user {
        req.user = Some(parse::user(u)?);
    }
    let signals = forwarded_signals()?;
    let running: Arc<dyn isolate::Running> = Arc::from(named::exec(&args.name, &req)?);
    Ok(attend(running, signals)?.exit_code())
}

fn fmt_duration(d: Duration) -> String {
    if d.as_secs() > 0 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn ps(json: bool, all: bool) -> Result<i32> {
    let list = named::list()?;
    let ended: Vec<isolate::detached::Record> = if all {
        isolate::detached::list()
            .into_iter()
            .filter(|r| r.status != isolate::detached::Status::Running)
            .filter(|r| !list.iter().any(|l| l.name == r.name))
            .collect()
    } else {
        Vec::new()
    };
    if json {
        let mut v = serde_json::to_value(&list).expect("records serialize");
        if all {
            v = serde_json::json!({ "running": v, "ended": ended });
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("records serialize")
        );
        return Ok(0);
    }
    let now = isolate::detached::now_secs();
    println!(
        "{:<20} {:<10} {:>8} {:>10}  {:<12} COMMAND",
        "NAME", "MODE", "PID", "UP", "STATUS"
    );
    for r in list {
        println!(
            "{:<20} {:<10} {:>8} {:>9}s  {:<12} {}",
            r.name,
            r.mode,
            r.pid,
            now.saturating_sub(r.started),
            "running",
            r.argv.join(" ")
        );
    }
    for r in ended {
        let status = match (r.status, r.exit_code) {
            (isolate::detached::Status::Exited, Some(c)) => format!("exited ({c})"),
            (isolate::detached::Status::Exited, None) => "exited".to_string(),
            _ => "dead".to_string(),
        };
        println!(
            "{:<20} {:<10} {:>8} {:>10}  {:<12} {}",
            r.name,
            r.mode,
            "-",
            "-",
            status,
            r.argv.join(" ")
        );
    }
    Ok(0)
}

fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

fn stats(name: &str, json: bool) -> Result<i32> {
    let s = named::stats(name)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).expect("stats serialize")
        );
        return Ok(0);
    }
    println!("name          {name}");
    println!(
        "cpu time      {}",
        s.cpu_time
            .map_or("-".into(), |d| format!("{:.3} s", d.as_secs_f64()))
    );
    println!(
        "memory        {} (peak {}, limit {})",
        mib(s.memory_current),
        mib(s.memory_peak),
        mib(s.memory_limit)
    );
    println!(
        "pids          {} (limit {})",
        s.pids_current.map_or("-".into(), |p| p.to_string()),
        s.pids_limit.map_or("none".into(), |p| p.to_string())
    );
    println!(
        "cpus limit    {}",
        s.cpus_limit.map_or("none".into(), |c| format!("{c}"))
    );
    Ok(0)
}

fn update(name: &str, memory: Option<&str>, cpus: Option<f64>, pids: Option<u64>) -> Result<i32> {
    let limits = Limits {
        memory: memory
            .map(parse::size)
            .transpose()
            .map_err(|e| rename(e, "memory"))?,
        cpus,
        pids,
        io_weight: None,
    };
    if limits == Limits::default() {
        return Err(Error::invalid(
            "update",
            "nothing to change: give --memory, --cpus or --pids-limit",
        ));
    }
    named::update(name, &limits)?;
    Ok(0)
}

pub(crate) fn signal_number(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    let n = match name.as_str() {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        _ => {
            return Err(Error::invalid(
                "signal",
                format!("{s:?} is not a signal; use e.g. TERM, KILL, 9"),
            ))
        }
    };
    Ok(n)
}

fn kill(name: &str, signal: &str) -> Result<i32> {
    named::kill(name, signal_number(signal)?)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(line: &[&str]) -> Cli {
        Cli::try_parse_from(line).unwrap()
    }

    #[test]
    fn run_line_keeps_app_flags_for_the_app() {
        let cli = parse(&[
            "isolate",
            "--mode",
            "container",
            "-m",
            "64m",
            "/bin/ls",
            "-l",
            "--all",
        ]);
        assert!(cli.command.is_none());
        assert_eq!(cli.run.command, ["/bin/ls", "-l", "--all"]);
        let w = workload(&cli.run.opts, &cli.run.command).unwrap();
        assert_eq!(w.limits.memory, Some(64 << 20));
    }

    #[test]
    fn unknown_option_before_the_program_is_refused() {
        let e = Cli::try_parse_from(["isolate", "--mode", "container", "--tyy", "/bin/sh"])
            .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument, "{e}");
        assert!(e.to_string().contains("--tty"), "no suggestion: {e}");
        let e =
            Cli::try_parse_from(["isolate", "--mode", "container", "-x", "/bin/sh"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument, "{e}");
    }

    #[test]
    fn interactive_tty_and_detach_are_options() {
        let cli = parse(&["isolate", "--mode", "container", "-it", "/bin/sh"]);
        assert!(cli.run.interactive && cli.run.tty && !cli.run.detach);
        assert_eq!(cli.run.command, ["/bin/sh"]);
        let cli = parse(&["isolate", "--mode", "container", "-d", "sleep", "9"]);
        assert!(cli.run.detach);
        assert_eq!(cli.run.command, ["sleep", "9"]);
    }

    #[test]
    fn words_after_the_program_or_dashdash_belong_to_it() {
        let cli = parse(&[
            "isolate",
            "--mode",
            "container",
            "/bin/sh",
            "-c",
            "echo hi",
            "-t",
        ]);
        assert!(!cli.run.tty);
        assert_eq!(cli.run.command, ["/bin/sh", "-c", "echo hi", "-t"]);
        let cli = parse(&["isolate", "--mode", "container", "--", "-weird", "-x"]);
        assert_eq!(cli.run.command, ["-weird", "-x"]);
    }

    #[test]
    fn exec_takes_its_options_before_the_name() {
        let cli = parse(&[
            "isolate",
            "exec",
            "-it",
            "-e",
            "A=b",
            "-w",
            "/tmp",
            "-u",
            "1000:1000",
            "web",
            "/bin/sh",
            "-c",
            "echo -t",
        ]);
        match cli.command {
            Some(Command::Exec(e)) => {
                assert!(e.tty && e.interactive);
                assert_eq!(e.name, "web");
                assert_eq!(e.env, ["A=b"]);
                assert_eq!(e.command, ["/bin/sh", "-c", "echo -t"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn detached_subcommands_parse() {
        let cli = parse(&[
            "isolate",
            "logs",
            "-f",
            "--tail",
            "3",
            "--timestamps",
            "web",
        ]);
        assert!(matches!(
            cli.command,
            Some(Command::Logs {
                follow: true,
                tail: Some(3),
                timestamps: true,
                ..
            })
        ));
        let cli = parse(&["isolate", "stop", "-t", "4", "web"]);
        assert!(matches!(cli.command, Some(Command::Stop { time: 4, .. })));
        let cli = parse(&["isolate", "ps", "-a"]);
        assert!(matches!(cli.command, Some(Command::Ps { all: true, .. })));
        let cli = parse(&["isolate", "rm", "-f", "a", "b"]);
        assert!(
            matches!(cli.command, Some(Command::Rm { force: true, ref names }) if names.len() == 2)
        );
    }

    #[test]
    fn app_named_like_a_subcommand_runs_as_app() {
        let cli = parse(&["isolate", "--mode", "container", "ps", "aux"]);
        assert!(cli.command.is_none(), "{cli:?}");
        assert_eq!(cli.run.command, ["ps", "aux"]);
    }

    #[test]
    fn subcommands_parse() {
        let cli = parse(&["isolate", "update", "job", "--cpus", "2"]);
        assert!(matches!(cli.command, Some(Command::Update { cpus: Some(c), .. }) if c == 2.0));
        let cli = parse(&[
            "isolate", "compare", "--runs", "3", "--", "/bin/sh", "-c", "echo hi",
        ]);
        match cli.command {
            Some(Command::Compare(c)) => {
                assert_eq!(c.runs, 3);
                assert_eq!(c.command, ["/bin/sh", "-c", "echo hi"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_values_name_the_option() {
        let cli = parse(&[
            "isolate",
            "--mode",
            "container",
            "--memory",
            "0",
            "/bin/true",
        ]);
        let e = workload(&cli.run.opts, &cli.run.command).unwrap_err();
        assert!(e.to_string().starts_with("invalid memory"), "{e}");
        let cli = parse(&[
            "isolate",
            "--mode",
            "container",
            "--timeout",
            "soon",
            "/bin/true",
        ]);
        let e = workload(&cli.run.opts, &cli.run.command).unwrap_err();
        assert!(e.to_string().starts_with("invalid timeout"), "{e}");
    }

    fn with_security_opt(opt: &str) -> Result<Workload> {
        let cli = parse(&[
            "isolate",
            "--mode",
            "container",
            "--security-opt",
            opt,
            "/bin/true",
        ]);
        workload(&cli.run.opts, &cli.run.command)
    }

    #[test]
    fn security_opt_sets_the_seccomp_policy() {
        let w = with_security_opt("seccomp=unconfined").unwrap();
        assert_eq!(w.seccomp, Seccomp::Unconfined);
        let w = with_security_opt("no-new-privileges").unwrap();
        assert_eq!(w.seccomp, Seccomp::Default);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(
            &path,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let w = with_security_opt(&format!("seccomp={}", path.display())).unwrap();
        assert!(matches!(w.seccomp, Seccomp::Profile(_)));
        let w = with_security_opt(&format!("seccomp:{}", path.display())).unwrap();
        assert!(matches!(w.seccomp, Seccomp::Profile(_)));
    }

    #[test]
    fn bad_security_opts_say_what_is_wrong() {
        let e = with_security_opt("apparmor=unconfined").unwrap_err();
        assert!(e.to_string().starts_with("invalid security-opt"), "{e}");
        assert_eq!(e.exit_code(), 125);
        let e = with_security_opt("seccomp=/nonexistent.json").unwrap_err();
        assert!(e.chain().contains("/nonexistent.json"), "{}", e.chain());
        assert_eq!(e.exit_code(), 125);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).unwrap();
        let e = with_security_opt(&format!("seccomp={}", path.display())).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("bad.json") && text.contains("SCMP_ACT_NOTIFY"),
            "{text}"
        );
    }

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(signal_number("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(signal_number("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(signal_number("9").unwrap(), 9);
        assert!(signal_number("NOPE").is_err());
    }
}
