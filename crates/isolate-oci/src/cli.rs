//! runc's command line, as engines call it:
//! `isolate [--root DIR] [--log FILE] [--log-format text|json] VERB [OPTIONS] ID`.
//!
//! The `isolate` binary hands its arguments here when [`is_runc_invocation`]
//! says so: no `--mode`, only runc's global options before the first word,
//! and that word a runc verb. `kill`, `ps` and `update` are also isolate's
//! own subcommands (for named workloads): they are runc's when a runc
//! global option comes first (engines always pass `--root`) or when a
//! container of that id exists under the default root.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use isolate_core::error_chain;

use crate::error::{OciError, Result};
use crate::runtime::{self, CreateOptions};
use crate::state::{Root, DEFAULT_ROOT};

/// Verbs only runc has.
const RUNC_ONLY: [&str; 12] = [
    "create",
    "start",
    "state",
    "delete",
    "pause",
    "resume",
    "features",
    "spec",
    "list",
    "events",
    "checkpoint",
    "restore",
];

/// Verbs isolate also has as subcommands of its own (`isolate run`,
/// `isolate exec NAME CMD`, ...): runc's only after a runc global option,
/// or when one of the words after the verb is a container under the
/// state root (`run` makes one, so it is runc's only after a global option).
const SHARED: [&str; 5] = ["kill", "ps", "update", "exec", "run"];

/// Global options that take a value.
const GLOBAL_WITH_VALUE: [&str; 5] = ["root", "log", "log-format", "criu", "rootless"];
/// Global options without a value.
const GLOBAL_BOOL: [&str; 2] = ["systemd-cgroup", "debug"];

/// `--name`, `-name`, `--name=value` → (`name`, value).
fn flag(arg: &str) -> Option<(&str, Option<&str>)> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if body.is_empty() {
        return None;
    }
    Some(match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    })
}

/// Whether `args` (with the program name first) is a runc command line.
pub fn is_runc_invocation(args: &[OsString]) -> bool {
    let args: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut i = 0;
    let mut global = false;
    let mut root = PathBuf::from(DEFAULT_ROOT);
    while i < args.len() {
        let Some((name, value)) = flag(&args[i]) else {
            break;
        };
        if GLOBAL_WITH_VALUE.contains(&name) {
            let v = match value {
                Some(v) => v.to_string(),
                None => {
                    i += 1;
                    args.get(i).cloned().unwrap_or_default()
                }
            };
            if name == "root" {
                root = PathBuf::from(v);
            }
        } else if !GLOBAL_BOOL.contains(&name) {
            return false; // an isolate option (or --mode)
        }
        global = true;
        i += 1;
    }
    let Some(verb) = args.get(i) else {
        return false;
    };
    if SHARED.contains(&verb.as_str()) {
        if global {
            return true;
        }
        // Any word, not only the first: `exec --process FILE ID`.
        return args[i + 1..].iter().any(|id| {
            !id.starts_with('-')
                && crate::state::check_id(id).is_ok()
                && root.join(id).join("state.json").exists()
        });
    }
    RUNC_ONLY.contains(&verb.as_str())
}

/// Parsed options and positional words of one verb.
#[derive(Debug, Default)]
struct Parsed {
    opts: Vec<(String, Option<String>)>,
    words: Vec<String>,
}

impl Parsed {
    fn get(&self, names: &[&str]) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(n, _)| names.contains(&n.as_str()))
            .and_then(|(_, v)| v.as_deref())
    }

    fn has(&self, names: &[&str]) -> bool {
        self.opts
            .iter()
            .any(|(n, v)| names.contains(&n.as_str()) && v.as_deref().is_none_or(|v| v != "false"))
    }

    fn id(&self, verb: &str) -> Result<&str> {
        self.words
            .first()
            .map(String::as_str)
            .ok_or_else(|| OciError::Usage(format!("{verb} needs a container id")))
    }
}

/// Parses a verb's arguments; `with_value` names the options that take one.
fn parse(args: &[String], with_value: &[&str], bools: &[&str], verb: &str) -> Result<Parsed> {
    let mut p = Parsed::default();
    let mut i = 0;
    let mut only_words = false;
    while i < args.len() {
        let a = &args[i];
        if only_words || !a.starts_with('-') || a == "-" {
            // As Go's flag parsing (runc's): options end at the first word,
            // so `exec ID sh -c …` keeps `-c` for the command.
            p.words.push(a.clone());
            only_words = true;
        } else if a == "--" {
            only_words = true;
        } else {
            let (name, value) = flag(a).expect("starts with -");
            if with_value.contains(&name) {
                let v = match value {
                    Some(v) => v.to_string(),
                    None => {
                        i += 1;
                        args.get(i).cloned().ok_or_else(|| {
                            OciError::Usage(format!("{verb}: --{name} needs a value"))
                        })?
                    }
                };
                p.opts.push((name.to_string(), Some(v)));
            } else if bools.contains(&name) {
                p.opts.push((name.to_string(), value.map(str::to_string)));
            } else {
                return Err(OciError::Usage(format!(
                    "{verb}: option --{name} is not supported by isolate"
                )));
            }
        }
        i += 1;
    }
    Ok(p)
}

/// Where and how errors are logged (`--log`, `--log-format`).
struct Log {
    file: Option<PathBuf>,
    json: bool,
}

impl Log {
    fn error(&self, msg: &str) {
        eprintln!("isolate: {msg}");
        let Some(path) = &self.file else {
            return;
        };
        let time = crate::state::now_rfc3339();
        let line = if self.json {
            serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
        } else {
            format!("time={time:?} level=error msg={msg:?}")
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Runs a runc command line (program name first); returns the exit code:
/// 0, the container's own status for `run`, or 125 with the error printed
/// (and logged to `--log`).
pub fn main(args: &[OsString]) -> i32 {
    let args: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut root = PathBuf::from(DEFAULT_ROOT);
    let mut log = Log {
        file: None,
        json: false,
    };
    let mut systemd = false;
    let mut i = 0;
    while i < args.len() {
        let Some((name, value)) = flag(&args[i]) else {
            break;
        };
        let mut take = || -> String {
            match value {
                Some(v) => v.to_string(),
                None => {
                    i += 1;
                    args.get(i).cloned().unwrap_or_default()
                }
            }
        };
        match name {
            "root" => root = PathBuf::from(take()),
            "log" => log.file = Some(PathBuf::from(take())),
            "log-format" => log.json = take() == "json",
            "criu" | "rootless" => {
                take();
            }
            "systemd-cgroup" => systemd = value.is_none_or(|v| v != "false"),
            "debug" => {}
            _ => {}
        }
        i += 1;
    }
    let verb = args.get(i).cloned().unwrap_or_default();
    let rest = args.get(i + 1..).unwrap_or_default().to_vec();
    let result = if systemd {
        Err(OciError::Usage(
            "--systemd-cgroup is not supported: isolate manages cgroups itself (cgroupfs); \
             configure the engine for cgroupfs (podman --cgroup-manager cgroupfs; containerd \
             SystemdCgroup = false)"
                .into(),
        ))
    } else {
        dispatch(&Root::new(&root), &verb, &rest)
    };
    match result {
        Ok(code) => code,
        // Engines tell "not found" (127) and "cannot execute" (126) from
        // other failures by runc's wording.
        Err(OciError::Isolate(isolate_core::Error::Exec { kind, program })) => {
            let (why, code) = match kind {
                isolate_core::ExecFailure::NotFound => (
                    "executable file not found in $PATH: no such file or directory",
                    127,
                ),
                isolate_core::ExecFailure::NotExecutable => ("permission denied", 126),
            };
            log.error(&format!("exec: {program:?}: {why}"));
            code
        }
        Err(e) => {
            log.error(&error_chain(&e));
            125
        }
    }
}

fn dispatch(root: &Root, verb: &str, args: &[String]) -> Result<i32> {
    match verb {
        "create" | "run" => {
            let p = parse(
                args,
                &["bundle", "b", "pid-file", "console-socket", "preserve-fds"],
                &[
                    "no-new-keyring",
                    "no-pivot",
                    "detach",
                    "d",
                    "keep",
                    "no-subreaper",
                ],
                verb,
            )?;
            if p.has(&["no-pivot"]) {
                return Err(OciError::Usage(
                    "--no-pivot is not supported: isolate always uses pivot_root".into(),
                ));
            }
            if p.get(&["preserve-fds"]).is_some_and(|n| n != "0") {
                return Err(OciError::Usage(
                    "--preserve-fds is not supported: isolate passes fds 0-2 only".into(),
                ));
            }
            let opts = CreateOptions {
                bundle: p.get(&["bundle", "b"]).map(PathBuf::from),
                pid_file: p.get(&["pid-file"]).map(PathBuf::from),
                console_socket: p.get(&["console-socket"]).map(PathBuf::from),
            };
            let id = p.id(verb)?;
            if verb == "create" {
                runtime::create(root, id, &opts)?;
                Ok(0)
            } else {
                runtime::run(root, id, &opts, p.has(&["detach", "d"]))
            }
        }
        "start" => {
            let p = parse(args, &[], &[], verb)?;
            runtime::start(root, p.id(verb)?)?;
            Ok(0)
        }
        "state" => {
            let p = parse(args, &[], &[], verb)?;
            let v = runtime::state_json(root, p.id(verb)?)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("state serializes")
            );
            Ok(0)
        }
        "kill" => {
            let p = parse(args, &[], &["all", "a"], verb)?;
            let sig = runtime::parse_signal(p.words.get(1).map_or("TERM", String::as_str))?;
            runtime::kill(root, p.id(verb)?, sig, p.has(&["all", "a"]))?;
            Ok(0)
        }
        "delete" => {
            let p = parse(args, &[], &["force", "f"], verb)?;
            runtime::delete(root, p.id(verb)?, p.has(&["force", "f"]))?;
            Ok(0)
        }
        "pause" | "resume" => {
            let p = parse(args, &[], &[], verb)?;
            runtime::freeze(root, p.id(verb)?, verb == "pause")?;
            Ok(0)
        }
        "ps" => {
            let p = parse(args, &["format", "f"], &[], verb)?;
            let pids = runtime::pids(root, p.id(verb)?)?;
            if p.get(&["format", "f"]) == Some("json") {
                println!("{}", serde_json::to_string(&pids).expect("pids serialize"));
            } else {
                print_ps_table(&pids)?;
            }
            Ok(0)
        }
        "update" => {
            let p = parse(args, &["resources", "r"], &[], verb)?;
            let src = p.get(&["resources", "r"]).ok_or_else(|| {
                OciError::Usage("update: give --resources FILE (or - for stdin); other update options are not supported".into())
            })?;
            let json = if src == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| OciError::io("read the resources from stdin", e))?;
                s
            } else {
                std::fs::read_to_string(src).map_err(|e| OciError::io(format!("read {src}"), e))?
            };
            runtime::update(root, p.id(verb)?, &json)?;
            Ok(0)
        }
        "features" => {
            let v = runtime::features();
            println!(
                "{}",
                serde_json::to_string_pretty(&v).expect("features serialize")
            );
            Ok(0)
        }
        "spec" => {
            let p = parse(args, &["bundle", "b"], &["rootless"], verb)?;
            if p.has(&["rootless"]) {
                return Err(OciError::Usage(
                    "spec --rootless: isolate's OCI runtime needs root".into(),
                ));
            }
            let dir = p
                .get(&["bundle", "b"])
                .map_or_else(|| PathBuf::from("."), PathBuf::from);
            write_spec(&dir.join("config.json"))?;
            Ok(0)
        }
        "list" => {
            let p = parse(args, &["format", "f"], &["quiet", "q"], verb)?;
            let all = runtime::list(root);
            if p.has(&["quiet", "q"]) {
                for (r, _) in &all {
                    println!("{}", r.id);
                }
            } else if p.get(&["format", "f"]) == Some("json") {
                let v: Vec<_> = all
                    .iter()
                    .map(|(r, s)| {
                        serde_json::json!({"id": r.id, "pid": r.pid, "status": s.as_str(),
                            "bundle": r.bundle, "rootfs": r.rootfs, "created": r.created})
                    })
                    .collect();
                println!("{}", serde_json::to_string(&v).expect("list serializes"));
            } else {
                println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED");
                for (r, s) in &all {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        r.id,
                        r.pid,
                        s.as_str(),
                        r.bundle.display(),
                        r.created
                    );
                }
            }
            Ok(0)
        }
        "exec" => {
            let p = parse(
                args,
                &[
                    "process",
                    "p",
                    "env",
                    "e",
                    "cwd",
                    "user",
                    "u",
                    "pid-file",
                    "console-socket",
                    "preserve-fds",
                    "process-label",
                    "apparmor",
                    "cap",
                    "c",
                    "cgroup",
                ],
                &["tty", "t", "detach", "d", "no-new-privs", "ignore-paused"],
                verb,
            )?;
            for unsupported in ["process-label", "apparmor", "cap", "c", "cgroup"] {
                if p.get(&[unsupported]).is_some() {
                    return Err(OciError::Usage(format!(
                        "exec --{unsupported} is not supported by isolate"
                    )));
                }
            }
            if p.get(&["preserve-fds"]).is_some_and(|n| n != "0") {
                return Err(OciError::Usage(
                    "--preserve-fds is not supported: isolate passes fds 0-2 only".into(),
                ));
            }
            let a = runtime::ExecArgs {
                process: p.get(&["process", "p"]).map(PathBuf::from),
                args: p.words.get(1..).unwrap_or_default().to_vec(),
                env: p
                    .opts
                    .iter()
                    .filter(|(n, _)| n == "env" || n == "e")
                    .filter_map(|(_, v)| v.clone())
                    .collect(),
                cwd: p.get(&["cwd"]).map(str::to_string),
                user: p.get(&["user", "u"]).map(str::to_string),
                tty: p.has(&["tty", "t"]),
                console_socket: p.get(&["console-socket"]).map(PathBuf::from),
                detach: p.has(&["detach", "d"]),
                pid_file: p.get(&["pid-file"]).map(PathBuf::from),
            };
            runtime::exec(root, p.id(verb)?, &a)
        }
        "events" | "checkpoint" | "restore" => Err(OciError::Usage(format!(
            "`{verb}` is not supported by isolate's OCI runtime yet"
        ))),
        "" => Err(OciError::Usage("no verb given".into())),
        other => Err(OciError::Usage(format!("unknown verb {other:?}"))),
    }
}

fn write_spec(path: &Path) -> Result<()> {
    if path.exists() {
        return Err(OciError::Usage(format!(
            "{} exists; remove it first",
            path.display()
        )));
    }
    let text = serde_json::to_string_pretty(&runtime::default_spec()).expect("spec serializes");
    std::fs::write(path, text + "\n")
        .map_err(|e| OciError::io(format!("write {}", path.display()), e))
}

/// runc's `ps` table: `ps -ef` lines of the container's processes.
fn print_ps_table(pids: &[u32]) -> Result<()> {
    let out = std::process::Command::new("ps")
        .arg("-ef")
        .output()
        .map_err(|e| OciError::io("run ps -ef", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    if let Some(h) = lines.next() {
        println!("{h}");
    }
    for l in lines {
        let pid = l
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{l}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        std::iter::once("isolate")
            .chain(s.split_whitespace())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn runc_verbs_after_runc_globals_are_runc() {
        assert!(is_runc_invocation(&args("create --bundle /b c1")));
        assert!(is_runc_invocation(&args(
            "--root /run/x --log-format json state c1"
        )));
        assert!(is_runc_invocation(&args("--root=/run/x kill c1 9")));
        assert!(is_runc_invocation(&args("--systemd-cgroup create c1")));
    }

    #[test]
    fn isolate_command_lines_stay_isolates() {
        assert!(!is_runc_invocation(&args("--mode container /bin/true")));
        assert!(!is_runc_invocation(&args("--mode container create")));
        assert!(!is_runc_invocation(&args("/bin/echo start")));
        assert!(!is_runc_invocation(&args("kill job1")));
        assert!(!is_runc_invocation(&args("exec job1 /bin/hostname")));
        assert!(!is_runc_invocation(&args("run /bin/true")));
        assert!(is_runc_invocation(&args("--root /run/x exec c1 /bin/true")));
        assert!(!is_runc_invocation(&args("--memory 64m state")));
    }

    #[test]
    fn options_take_values_inline_or_next() {
        let a: Vec<String> = ["--bundle=/b", "--pid-file", "/p", "c1"]
            .map(String::from)
            .to_vec();
        let p = parse(&a, &["bundle", "pid-file"], &[], "create").unwrap();
        assert_eq!(p.get(&["bundle"]), Some("/b"));
        assert_eq!(p.get(&["pid-file"]), Some("/p"));
        assert_eq!(p.id("create").unwrap(), "c1");
        let bad: Vec<String> = ["--nope", "c1"].map(String::from).to_vec();
        assert!(matches!(
            parse(&bad, &[], &[], "start"),
            Err(OciError::Usage(_))
        ));
    }

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(runtime::parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(runtime::parse_signal("SIGKILL").unwrap(), libc::SIGKILL);
        assert_eq!(runtime::parse_signal("9").unwrap(), 9);
        assert!(runtime::parse_signal("NOPE").is_err());
        assert!(runtime::parse_signal("0").is_err());
    }
}
