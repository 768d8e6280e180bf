//! The contract suite: one table of behaviours, run against the `isolate`
//! binary for each mode. See ../README.md.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "contract/interactive.rs"]
mod interactive;
mod network;

/// What a case expects of one `isolate` invocation.
struct Expect {
    code: i32,
    stdout: Option<&'static str>,
    stdout_has: Option<&'static str>,
    stderr_has: Option<&'static str>,
    stdout_lacks: Option<&'static str>,
}

const OK: Expect = Expect {
    code: 0,
    stdout: None,
    stdout_has: None,
    stderr_has: None,
    stdout_lacks: None,
};

/// One behaviour: the isolate arguments (before the command), the command,
/// what to feed on stdin, and what to expect.
struct Case {
    name: &'static str,
    args: Vec<String>,
    stdin: Option<&'static str>,
    expect: Expect,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn case(name: &'static str, args: &[&str], expect: Expect) -> Case {
    Case {
        name,
        args: s(args),
        stdin: None,
        expect,
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

struct Suite {
    bin: PathBuf,
    per_case: Duration,
    passed: usize,
    failed: Vec<String>,
    skipped: usize,
    /// Cases whose first run hung (they were run once more).
    hung: Vec<String>,
}

impl Suite {
    fn isolate(&self, args: &[String], stdin: Option<&str>) -> Run {
        let start = Instant::now();
        let mut child = Command::new(&self.bin)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        if let Some(input) = stdin {
            let mut w = child.stdin.take().unwrap();
            let input = input.to_string();
            std::thread::spawn(move || {
                let _ = w.write_all(input.as_bytes());
            });
        }
        // Readers report through channels, so that a process that outlives
        // isolate and keeps its stdout or stderr open cannot block the suite.
        let reader = |mut f: Box<dyn Read + Send>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut b = String::new();
                let _ = f.read_to_string(&mut b);
                let _ = tx.send(b);
            });
            rx
        };
        let o = reader(Box::new(child.stdout.take().unwrap()));
        let e = reader(Box::new(child.stderr.take().unwrap()));
        let code = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.code().unwrap_or(-1);
            }
            if start.elapsed() > self.per_case {
                let _ = child.kill();
                let _ = child.wait();
                break -2;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let grace = self
            .per_case
            .saturating_sub(start.elapsed())
            .max(Duration::from_secs(5));
        let (stdout, stderr) = (o.recv_timeout(grace), e.recv_timeout(grace));
        let leaked = stdout.is_err() || stderr.is_err();
        let mut stderr = stderr.unwrap_or_default();
        if leaked {
            stderr.push_str("\n[contract] stdout or stderr stayed open after isolate ended: a process outlived isolate\n");
        }
        Run {
            code: if leaked { -2 } else { code },
            stdout: stdout.unwrap_or_default(),
            stderr,
            elapsed: start.elapsed(),
        }
    }

    fn check(&mut self, label: &str, run: &Run, x: &Expect) {
        let mut why = Vec::new();
        if run.code == -2 {
            why.push(format!("isolate did not end within {:?}", self.per_case));
        } else if run.code != x.code {
            why.push(format!("exit code {} (want {})", run.code, x.code));
        }
        if let Some(want) = x.stdout {
            if run.stdout != want {
                why.push(format!("stdout {:?} (want {want:?})", run.stdout));
            }
        }
        if let Some(want) = x.stdout_has {
            if !run.stdout.contains(want) {
                why.push(format!("stdout {:?} lacks {want:?}", run.stdout));
            }
        }
        if let Some(bad) = x.stdout_lacks {
            if run.stdout.contains(bad) {
                why.push(format!("stdout {:?} has {bad:?}", run.stdout));
            }
        }
        if let Some(want) = x.stderr_has {
            if !run.stderr.contains(want) {
                why.push(format!("stderr lacks {want:?}"));
            }
        }
        if why.is_empty() {
            println!("PASS {label} ({} ms)", run.elapsed.as_millis());
            self.passed += 1;
        } else {
            println!("FAIL {label}: {}", why.join("; "));
            for line in run.stderr.lines().take(12) {
                println!("     stderr: {line}");
            }
            self.failed.push(label.to_string());
        }
    }
}

impl Suite {
    /// The multi-step scenarios of `mode` ([`interactive`]); those that
    /// need a host that runs the mode are skipped with `skip_reason`.
    fn scenarios(&mut self, mode: &str, tag: &str, host_ok: bool, skip_reason: Option<&str>) {
        let ctx = interactive::Ctx {
            bin: self.bin.clone(),
            mode: mode.to_string(),
            tag: tag.to_string(),
        };
        for (name, needs_host, body) in interactive::scenarios(mode) {
            let label = format!("{mode}/{name}");
            if needs_host && !host_ok {
                println!(
                    "SKIP {label}: {}",
                    skip_reason.unwrap_or("the mode cannot run here")
                );
                self.skipped += 1;
                continue;
            }
            let start = Instant::now();
            match body(&ctx) {
                Ok(()) => {
                    println!("PASS {label} ({} ms)", start.elapsed().as_millis());
                    self.passed += 1;
                }
                Err(why) => {
                    println!("FAIL {label}: {why}");
                    self.failed.push(label);
                }
            }
        }
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/contract sits two levels below the workspace")
        .to_path_buf()
}

fn find_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ISOLATE_BIN") {
        return PathBuf::from(p);
    }
    let root = workspace_root();
    for p in ["target/release/isolate", "target/debug/isolate"] {
        let c = root.join(p);
        if c.is_file() {
            return c;
        }
    }
    panic!("no isolate binary: build it (cargo build --release -p isolate) or set ISOLATE_BIN");
}

/// The argument of a host `sleep` that runs during the suite: a workload
/// that can see it shares the host's process table.
const HOST_MARKER: &str = "3600.4242";

/// The table, for one mode. `tag` makes names (volumes, markers) unique.
fn cases(tag: &str) -> Vec<Case> {
    let vol = format!("contract-{tag}:/data");
    let marker_write = format!("echo x > /isolate-contract-{tag}");
    let marker_test = format!("test ! -e /isolate-contract-{tag}");
    let mut v = vec![
        case("exit_code_zero", &["/bin/true"], OK),
        case(
            "unknown_option_refused_with_a_suggestion",
            &["--tyy", "/bin/true"],
            Expect {
                code: 125,
                stderr_has: Some("--tty"),
                ..OK
            },
        ),
        case(
            "options_after_the_program_belong_to_it",
            &["/bin/sh", "-c", "echo \"$0\"", "-t"],
            Expect {
                stdout: Some("-t\n"),
                ..OK
            },
        ),
        case(
            "exit_code_mirrored",
            &["/bin/sh", "-c", "exit 3"],
            Expect { code: 3, ..OK },
        ),
        case(
            "signal_is_128_plus_n",
            &["/bin/sh", "-c", "kill -TERM $$; sleep 5"],
            Expect { code: 143, ..OK },
        ),
        case(
            "command_not_found_is_127",
            &["/no/such/program"],
            Expect { code: 127, ..OK },
        ),
        case(
            "not_executable_is_126",
            &["/etc/passwd"],
            Expect { code: 126, ..OK },
        ),
        case(
            "stdout_and_stderr_kept_apart",
            &["/bin/sh", "-c", "echo out; echo err >&2"],
            Expect {
                stdout: Some("out\n"),
                stderr_has: Some("err"),
                ..OK
            },
        ),
        Case {
            name: "stdin_passes_through",
            args: s(&["/bin/cat"]),
            stdin: Some("line one\nline two\n"),
            expect: Expect {
                stdout: Some("line one\nline two\n"),
                ..OK
            },
        },
        case(
            "env_is_set",
            &[
                "-e",
                "GREETING=hello world",
                "/bin/sh",
                "-c",
                "echo \"$GREETING\"",
            ],
            Expect {
                stdout: Some("hello world\n"),
                ..OK
            },
        ),
        case(
            "workdir_is_set",
            &["-w", "/tmp", "/bin/pwd"],
            Expect {
                stdout: Some("/tmp\n"),
                ..OK
            },
        ),
        case(
            "hostname_is_own",
            &["--hostname", "sandbox-1", "/bin/hostname"],
            Expect {
                stdout: Some("sandbox-1\n"),
                ..OK
            },
        ),
        case(
            "user_is_set",
            &["-u", "1000:1001", "/bin/sh", "-c", "echo $(id -u):$(id -g)"],
            Expect {
                stdout: Some("1000:1001\n"),
                ..OK
            },
        ),
        case(
            "private_process_table",
            // A host process (`sleep` with the argument HOST_MARKER, started
            // by this suite) must not be in the workload's process table,
            // and the workload's own pid is small.
            &[
                "/bin/sh",
                "-c",
                "test $$ -lt 200 || echo \"pid $$ is large\"; \
                 cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '",
            ],
            Expect {
                stdout_lacks: Some(HOST_MARKER),
                stdout_has: Some("/bin/sh"),
                ..OK
            },
        ),
        case(
            "memory_limit_enforced_and_reported",
            &[
                "-m",
                "24m",
                "/bin/sh",
                "-c",
                "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
            ],
            Expect {
                code: 137,
                stderr_has: Some("memory limit"),
                stdout_lacks: Some("survived"),
                ..OK
            },
        ),
        case(
            "pids_limit_enforced",
            &[
                "--pids-limit",
                "6",
                "/bin/sh",
                "-c",
                "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & done; wait",
            ],
            // busybox sh stops with code 2 when fork fails.
            Expect {
                code: 2,
                stderr_has: Some("fork"),
                ..OK
            },
        ),
        case(
            "timeout_kills_and_reports",
            &["--timeout", "2s", "/bin/sleep", "60"],
            Expect {
                code: 124,
                stderr_has: Some("timeout"),
                ..OK
            },
        ),
        case(
            "read_only_root_refuses_writes",
            &["--read-only", "/bin/sh", "-c", "echo x > /file-on-root"],
            Expect {
                code: 1,
                stderr_has: Some("Read-only"),
                ..OK
            },
        ),
        case(
            "read_only_root_keeps_tmp_writable",
            &[
                "--read-only",
                "/bin/sh",
                "-c",
                "echo ok > /tmp/f && cat /tmp/f",
            ],
            Expect {
                stdout: Some("ok\n"),
                ..OK
            },
        ),
        case(
            "bad_input_is_125_and_named",
            &["--memory", "0", "/bin/true"],
            Expect {
                code: 125,
                stderr_has: Some("memory"),
                ..OK
            },
        ),
        case(
            "missing_rootfs_is_125",
            &["--rootfs", "/no/such/rootfs", "/bin/true"],
            Expect {
                code: 125,
                stderr_has: Some("rootfs"),
                ..OK
            },
        ),
    ];
    // Sequences: the first run writes, the second checks.
    v.push(case(
        "volume_write",
        &[
            "-v",
            &vol,
            "/bin/sh",
            "-c",
            "echo persisted > /data/f && sync",
        ],
        OK,
    ));
    v.push(case(
        "volume_persists_into_next_run",
        &["-v", &vol, "/bin/cat", "/data/f"],
        Expect {
            stdout: Some("persisted\n"),
            ..OK
        },
    ));
    v.push(case("root_write", &["/bin/sh", "-c", &marker_write], OK));
    v.push(case(
        "root_write_vanished_in_next_run",
        &["/bin/sh", "-c", &marker_test],
        OK,
    ));
    v
}

/// Whether this host can run `mode`, decided from the host itself (never
/// from the backend's own error text, so that a broken backend fails its
/// cases instead of being skipped): `Err(reason)` if it cannot.
fn host_can_run(mode: &str) -> Result<(), String> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the contract suite runs isolate as root; run it as root".into());
    }
    match mode {
        "container" => Ok(()),
        "vm" => {
            if !std::path::Path::new("/dev/kvm").exists() {
                return Err("this host has no /dev/kvm".into());
            }
            if std::path::Path::new("/sys/module/kvm_pvm").exists() {
                return Err(
                    "this host's KVM is PVM (kvm_pvm), which cannot boot a standard guest kernel; \
                     run VM mode in the emulated KVM host (tests/emulated-host)"
                        .into(),
                );
            }
            let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            if !cpu.split_whitespace().any(|f| f == "vmx" || f == "svm") {
                return Err("this CPU offers neither VMX nor SVM".into());
            }
            Ok(())
        }
        other => Err(format!("unknown mode {other}")),
    }
}

/// The content of every file under `dir` (VM boot images built from the
/// rootfs), to see that no run changed one.
fn snapshot(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

fn default_rootfs() -> PathBuf {
    let home = std::env::var_os("ISOLATE_HOME")
        .map_or_else(|| PathBuf::from("/var/lib/isolate"), PathBuf::from);
    std::env::var_os("ISOLATE_ROOTFS").map_or_else(|| home.join("rootfs"), PathBuf::from)
}

fn main() {
    // `cargo test -- --list` and friends: this harness has no filters.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let bin = find_bin();
    let per_case = Duration::from_secs(
        std::env::var("ISOLATE_CONTRACT_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120),
    );
    let modes = std::env::var("ISOLATE_CONTRACT_MODES").unwrap_or_else(|_| "container,vm".into());
    // Modes that must run here: a skip of one of them is a failure.
    let required: Vec<String> = std::env::var("ISOLATE_CONTRACT_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    let mut suite = Suite {
        bin,
        per_case,
        passed: 0,
        failed: Vec::new(),
        skipped: 0,
        hung: Vec::new(),
    };
    println!(
        "contract suite: {} against modes {modes}",
        suite.bin.display()
    );
    let tag = format!("{}", std::process::id());
    let mut host_process = Command::new("sleep")
        .arg(HOST_MARKER)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start a host process for private_process_table");
    for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let table = cases(&format!("{mode}-{tag}"));
        if let Err(reason) = host_can_run(mode) {
            if required.iter().any(|r| r == mode) {
                println!("FAIL {mode} mode is required here (ISOLATE_CONTRACT_REQUIRE) but cannot run: {reason}");
                suite.failed.push(format!("{mode}/required_mode_runs"));
                continue;
            }
            println!("SKIP {mode} mode, every case below: {reason}");
            for c in &table {
                println!(
                    "SKIP {mode}/{}: {mode} mode cannot run on this host (reason above)",
                    c.name
                );
            }
            for name in network::names(mode) {
                println!("SKIP {mode}/{name}: {mode} mode cannot run on this host (reason above)");
            }
            suite.skipped += table.len() + network::names(mode).len();
            suite.scenarios(mode, &tag, false, Some(&reason));
            continue;
        }
        let images = std::env::var_os("ISOLATE_HOME")
            .map_or_else(|| PathBuf::from("/var/lib/isolate"), PathBuf::from)
            .join("images");
        let images_before = snapshot(&images);
        for c in &table {
            let mut args = s(&["--mode", mode]);
            args.extend(c.args.iter().cloned());
            let mut run = suite.isolate(&args, c.stdin);
            if run.code == -2 {
                // A hang is a bug either way; say so loudly, and run the
                // case once more so that one hang does not hide the rest.
                println!(
                    "HUNG {mode}/{}: isolate did not end within {:?}; stderr so far: {:?}; running it once more",
                    c.name, suite.per_case, run.stderr
                );
                suite.hung.push(format!("{mode}/{}", c.name));
                run = suite.isolate(&args, c.stdin);
                // A hang is a failure even when the second run passes.
                suite.check(&format!("{mode}/{} (second run)", c.name), &run, &c.expect);
                suite.failed.push(format!("{mode}/{} (hung once)", c.name));
                continue;
            }
            suite.check(&format!("{mode}/{}", c.name), &run, &c.expect);
        }
        network::run(&mut suite, mode, &tag);
        suite.scenarios(mode, &tag, true, None);
        // The VM boot images made from the rootfs never change either.
        let label = format!("{mode}/boot_images_unchanged");
        let changed: Vec<String> = images_before
            .iter()
            .filter(|(p, b)| std::fs::read(p).is_ok_and(|now| &now != b))
            .map(|(p, _)| p.display().to_string())
            .collect();
        if changed.is_empty() {
            println!("PASS {label} ({} images)", images_before.len());
            suite.passed += 1;
        } else {
            println!("FAIL {label}: changed by a run: {}", changed.join(", "));
            suite.failed.push(label);
        }
        // The rootfs on disk never changes.
        let marker = default_rootfs().join(format!("isolate-contract-{mode}-{tag}"));
        let label = format!("{mode}/rootfs_on_disk_unchanged");
        if marker.exists() {
            println!("FAIL {label}: {} appeared on the host", marker.display());
            suite.failed.push(label);
        } else {
            println!("PASS {label}");
            suite.passed += 1;
        }
        let volume = std::env::var_os("ISOLATE_HOME")
            .map_or_else(|| PathBuf::from("/var/lib/isolate"), PathBuf::from)
            .join(format!("volumes/contract-{mode}-{tag}.ext4"));
        let _ = std::fs::remove_file(volume);
    }
    let _ = host_process.kill();
    let _ = host_process.wait();
    println!(
        "contract: {} passed, {} failed, {} skipped",
        suite.passed,
        suite.failed.len(),
        suite.skipped
    );
    if !suite.hung.is_empty() {
        println!(
            "hung once (passed or failed on the second run, see above): {}",
            suite.hung.join(", ")
        );
    }
    if !suite.failed.is_empty() {
        println!("failed: {}", suite.failed.join(", "));
        std::process::exit(1);
    }
}
