//! The network cases: each needs the host as a party (a server it runs, a
//! port it holds, a namespace standing in for "outside", a count of what
//! isolate left behind), so they are code rather than rows of the table.
//! Only addresses on this machine are used: the bridge, a port on the
//! host, and a network namespace the case makes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{s, Expect, Suite, OK};

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// What isolate's networking has left on the host: its veths (`iso…`
/// other than the bridge; a workload's address lives in its namespace,
/// on the peer of one), its nft table, its leases, and uplinks whose
/// forwarding it turned on. The bridge itself stays, idle, by design.
#[derive(Debug, PartialEq, Eq)]
struct Leftovers {
    veths: usize,
    table: bool,
    leases: usize,
    forwarding_changed: bool,
}

fn leftovers() -> Leftovers {
    let veths = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("iso") && n != "isolate0"
                })
                .count()
        })
        .unwrap_or(0);
    let table = Command::new("nft")
        .args(["list", "table", "ip", "isolate"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let state = std::env::var_os("ISOLATE_NET_STATE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| "/run/isolate-net".into(), std::path::PathBuf::from);
    let leases = std::fs::read_dir(state.join("leases"))
        .map(|d| d.count())
        .unwrap_or(0);
    Leftovers {
        veths,
        table,
        leases,
        forwarding_changed: state.join("uplinks").exists(),
    }
}

/// Starts isolate with piped stdout, for cases that talk to a running
/// workload.
fn start(suite: &Suite, args: &[String]) -> Child {
    Command::new(&suite.bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start isolate")
}

/// Reads lines of `child`'s stdout until one starts with `prefix`.
fn line_starting(child: &mut Child, prefix: &str) -> Option<String> {
    let out = child.stdout.take()?;
    let mut r = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            let rest = rest.trim().to_string();
            child.stdout = Some(r.into_inner());
            return Some(rest);
        }
    }
}

/// Waits for `child` at most `limit`; kills it past that. `None` if it
/// had to be killed.
fn wait_for(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().ok()? {
            return Some(st.code().unwrap_or(-1));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP GET of `/` at `addr`, retried until `limit` (the workload's
/// server may still be starting); the body, or the last error.
fn http_get(addr: &str, limit: Duration) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let tried = (|| -> std::io::Result<String> {
            let mut c = TcpStream::connect(addr)?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut b = String::new();
            c.read_to_string(&mut b)?;
            Ok(b)
        })();
        match tried {
            Ok(b) if b.contains("200") => return Ok(b),
            Ok(b) if start.elapsed() > limit => return Err(format!("answer {b:?}")),
            Err(e) if start.elapsed() > limit => return Err(e.to_string()),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

impl Suite {
    fn verdict(&mut self, label: &str, why: Vec<String>, elapsed: Duration) {
        if why.is_empty() {
            println!("PASS {label} ({} ms)", elapsed.as_millis());
            self.passed += 1;
        } else {
            println!("FAIL {label}: {}", why.join("; "));
            self.failed.push(label.to_string());
        }
    }

    fn skip(&mut self, label: &str, reason: &str) {
        println!("SKIP {label}: {reason}");
        self.skipped += 1;
    }
}

/// Names of the network cases of `mode`, for the skip report of a mode
/// this host cannot run.
pub fn names(mode: &str) -> &'static [&'static str] {
    if mode == "vm" {
        &[
            "net_bridge_refused",
            "net_host_refused",
            "net_publish_refused",
        ]
    } else {
        &[
            "net_unknown_network_refused",
            "net_none_has_only_lo",
            "net_bridge_eth0_address_and_route",
            "net_bridge_eth0_mtu",
            "net_dns_files",
            "net_dns_files_upstream_and_image_untouched",
            "net_outbound_to_host_server",
            "net_outbound_server_got_the_bytes",
            "net_outbound_through_nat",
            "net_publish_reached_from_host",
            "net_two_workloads_talk",
            "net_container_shares_namespace",
            "net_publish_taken_port_refused",
            "net_publish_needs_bridge",
            "net_kill9_cleanup",
            "net_20_concurrent_distinct_addresses",
            "net_nothing_left_behind",
        ]
    }
}

/// The network cases of `mode`; `tag` keeps names and files of concurrent
/// suites apart.
pub fn run(suite: &mut Suite, mode: &str, tag: &str) {
    let m = |rest: &[&str]| {
        let mut a = s(&["--mode", mode]);
        a.extend(s(rest));
        a
    };
    if mode == "vm" {
        // No virtio-net yet: each network a VM cannot have is refused
        // with what is missing, before anything starts.
        for (name, args) in [
            ("net_bridge_refused", m(&["--network", "bridge", "true"])),
            ("net_host_refused", m(&["--network", "host", "true"])),
            (
                "net_publish_refused",
                m(&["--network", "bridge", "-p", "18080:80", "true"]),
            ),
        ] {
            let run = suite.isolate(&args, None);
            suite.check(
                &format!("vm/{name}"),
                &run,
                &Expect {
                    code: 125,
                    stderr_has: Some("not available in VM mode"),
                    ..OK
                },
            );
        }
        return;
    }
    let label = |name: &str| format!("{mode}/{name}");
    let before = leftovers();

    // A network that does not exist is bad input, named as such.
    let run = suite.isolate(&m(&["--network", "bogus", "true"]), None);
    suite.check(
        &label("net_unknown_network_refused"),
        &run,
        &Expect {
            code: 125,
            stderr_has: Some(
                "is not a network; use none, loopback, bridge, host or container:NAME",
            ),
            ..OK
        },
    );

    // --network none: only lo.
    let run = suite.isolate(&m(&["--network", "none", "cat", "/proc/net/dev"]), None);
    suite.check(
        &label("net_none_has_only_lo"),
        &run,
        &Expect {
            stdout_has: Some("lo:"),
            stdout_lacks: Some("eth0"),
            ..OK
        },
    );

    // bridge: eth0 with an address, MTU and a default route.
    let run = suite.isolate(
        &m(&[
            "--network",
            "bridge",
            "sh",
            "-c",
            "ip addr show eth0; ip route",
        ]),
        None,
    );
    suite.check(
        &label("net_bridge_eth0_address_and_route"),
        &run,
        &Expect {
            stdout_has: Some("default via"),
            ..OK
        },
    );
    let mut why = Vec::new();
    if !run.stdout.contains("mtu 1500") || !run.stdout.contains("inet ") {
        why.push(format!(
            "eth0 lacks an address or MTU 1500: {:?}",
            run.stdout
        ));
    }
    suite.verdict(&label("net_bridge_eth0_mtu"), why, run.elapsed);

    // DNS and host files: provided, read-only, the image untouched.
    let rootfs_hosts = super::default_rootfs().join("etc/hosts");
    let hosts_before = std::fs::read(&rootfs_hosts).ok();
    let run = suite.isolate(
        &m(&[
            "--network",
            "bridge",
            "--hostname",
            "webby",
            "sh",
            "-c",
            "cat /etc/hosts /etc/hostname /etc/resolv.conf; (echo x >> /etc/hosts) 2>/dev/null && echo WROTE; exit 0",
        ]),
        None,
    );
    suite.check(
        &label("net_dns_files"),
        &run,
        &Expect {
            stdout_has: Some("\twebby\nwebby\n"),
            stdout_lacks: Some("WROTE"),
            ..OK
        },
    );
    let mut why = Vec::new();
    if run.stdout.contains("nameserver 127.") {
        why.push("resolv.conf names a loopback resolver the workload cannot reach".into());
    }
    if std::fs::read(&rootfs_hosts).ok() != hosts_before {
        why.push(format!("{} changed on disk", rootfs_hosts.display()));
    }
    suite.verdict(
        &label("net_dns_files_upstream_and_image_untouched"),
        why,
        run.elapsed,
    );

    // Outbound: a server on the host, reached at the bridge's address
    // (the workload's default gateway).
    let server = TcpListener::bind("0.0.0.0:0").expect("bind a host server");
    let port = server.local_addr().unwrap().port();
    let got = std::thread::spawn(move || {
        server.set_nonblocking(false).ok();
        let (mut c, peer) = server.accept().ok()?;
        let mut b = String::new();
        c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let _ = c.read_to_string(&mut b);
        Some((b, peer))
    });
    let cmd = format!(
        "gw=$(ip route | awk '/default/ {{print $3}}'); echo hello-host | nc -w 5 $gw {port}; echo sent"
    );
    let run = suite.isolate(&m(&["--network", "bridge", "sh", "-c", &cmd]), None);
    suite.check(
        &label("net_outbound_to_host_server"),
        &run,
        &Expect {
            stdout_has: Some("sent"),
            ..OK
        },
    );
    let mut why = Vec::new();
    if run.code == 0 {
        match got.join().ok().flatten() {
            Some((b, _)) if b.contains("hello-host") => {}
            other => why.push(format!("the host server got {other:?}")),
        }
    } else {
        // Unblock the accept.
        let _ = TcpStream::connect(("127.0.0.1", port));
        why.push("the workload did not run".into());
    }
    suite.verdict(
        &label("net_outbound_server_got_the_bytes"),
        why,
        run.elapsed,
    );

    outbound_through_nat(suite, mode, tag, &m);
    publish_reached_from_host(suite, mode, tag, &m);
    two_workloads(suite, mode, tag, &m);

    // A taken host port is refused, with the port named.
    let held = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let p = held.local_addr().unwrap().port();
    let run = suite.isolate(
        &m(&["--network", "bridge", "-p", &format!("{p}:80"), "true"]),
        None,
    );
    let mut why = Vec::new();
    if run.code != 125 {
        why.push(format!("exit code {} (want 125)", run.code));
    }
    if !run
        .stderr
        .contains(&format!("host port {p}/tcp is already in use"))
    {
        why.push(format!(
            "stderr {:?} does not name the port",
            run.stderr.trim()
        ));
    }
    suite.verdict(&label("net_publish_taken_port_refused"), why, run.elapsed);
    drop(held);
    let run = suite.isolate(&m(&["-p", "18080:80", "true"]), None);
    suite.check(
        &label("net_publish_needs_bridge"),
        &run,
        &Expect {
            code: 125,
            stderr_has: Some("needs --network bridge"),
            ..OK
        },
    );

    kill9_cleanup(suite, mode, &m);
    concurrent(suite, mode, &m);

    // Whatever ran above, nothing is left.
    let after = leftovers();
    let why = if after == before {
        Vec::new()
    } else {
        vec![format!("before the cases {before:?}, after {after:?}")]
    };
    suite.verdict(&label("net_nothing_left_behind"), why, Duration::ZERO);
}

/// A workload reaches a server in a network namespace standing in for
/// "outside" (not the host's own address), and the server sees the host's
/// address: the workload's was translated (NAT).
fn outbound_through_nat(
    suite: &mut Suite,
    mode: &str,
    tag: &str,
    m: &dyn Fn(&[&str]) -> Vec<String>,
) {
    let label = format!("{mode}/net_outbound_through_nat");
    let short: String = tag.chars().filter(|c| c.is_ascii_digit()).collect();
    let short = &short[short.len().saturating_sub(6)..];
    let ns = format!("isolate-ct-out-{short}");
    let host_if = format!("ctout{short}");
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    if Command::new("ip").arg("-V").output().is_err() {
        return suite.skip(&label, "the `ip` command (iproute2) is not installed");
    }
    // A /30 of the documentation range TEST-NET-2, unless the host routes it.
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    if routes.lines().any(|l| l.contains("006433C6")) {
        return suite.skip(&label, "198.51.100.0/24 is routed on this host");
    }
    let setup = [
        vec!["netns", "add", &ns],
        vec![
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ],
        vec!["addr", "add", "198.51.100.1/30", "dev", &host_if],
        vec!["link", "set", &host_if, "up"],
        vec!["-n", &ns, "addr", "add", "198.51.100.2/30", "dev", "eth0"],
        vec!["-n", &ns, "link", "set", "eth0", "up"],
        vec!["-n", &ns, "link", "set", "lo", "up"],
    ];
    let teardown = || {
        let _ = ip(&["link", "del", &host_if]);
        let _ = ip(&["netns", "del", &ns]);
    };
    for step in &setup {
        match ip(step) {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                teardown();
                return suite.skip(
                    &label,
                    &format!(
                        "cannot make the outside namespace (ip {}): {}",
                        step.join(" "),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                );
            }
            Err(e) => {
                teardown();
                return suite.skip(&label, &format!("cannot run ip: {e}"));
            }
        }
    }
    // Replies come back in through the case's own veth.
    let fwd = format!("/proc/sys/net/ipv4/conf/{host_if}/forwarding");
    let _ = std::fs::write(&fwd, "1");
    // The server runs in the outside namespace: a thread enters it, binds,
    // and the listening socket stays there.
    let nsfile = std::fs::File::open(format!("/run/netns/{ns}")).expect("open the outside netns");
    let port = free_port();
    let server = std::thread::spawn(move || {
        // SAFETY: setns on an open nsfs descriptor changes only this
        // thread's network namespace.
        if unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let l = TcpListener::bind(("198.51.100.2", port)).map_err(|e| e.to_string())?;
        let (mut c, peer) = l.accept().map_err(|e| e.to_string())?;
        let mut b = String::new();
        c.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let _ = c.read_to_string(&mut b);
        Ok((b, peer))
    });
    // Wait until the server listens (the connect from the host also
    // proves the namespace is reachable).
    std::thread::sleep(Duration::from_millis(100));
    let cmd = format!("echo through-nat | nc -w 5 198.51.100.2 {port} && echo sent");
    let run = suite.isolate(&m(&["--network", "bridge", "sh", "-c", &cmd]), None);
    let mut why = Vec::new();
    if run.code != 0 || !run.stdout.contains("sent") {
        why.push(format!(
            "the workload could not connect: exit {}, {:?}",
            run.code, run.stderr
        ));
        // Unblock the accept (the host reaches the namespace directly).
        let _ = TcpStream::connect(("198.51.100.2", port));
    }
    let served = server.join();
    if why.is_empty() {
        match served {
            Ok(Ok((b, peer))) => {
                if !b.contains("through-nat") {
                    why.push(format!("the outside server got {b:?}"));
                }
                if peer.ip() != std::net::IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)) {
                    why.push(format!(
                        "the outside server saw {peer}, not the host's 198.51.100.1: no NAT"
                    ));
                }
            }
            other => why.push(format!("outside server: {other:?}")),
        }
    }
    teardown();
    suite.verdict(&label, why, run.elapsed);
}

/// A web server in the workload, published with `-p`, answers the host on
/// 127.0.0.1 and on the bridge's address.
fn publish_reached_from_host(
    suite: &mut Suite,
    mode: &str,
    tag: &str,
    m: &dyn Fn(&[&str]) -> Vec<String>,
) {
    let label = format!("{mode}/net_publish_reached_from_host");
    let www = std::env::temp_dir().join(format!("isolate-contract-www-{tag}"));
    let _ = std::fs::remove_dir_all(&www);
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from the workload\n").unwrap();
    let port = free_port();
    let vol = format!("{}:/www:ro", www.display());
    let publish = format!("{port}:80");
    let cmd = "httpd -p 80 -h /www && ip route | awk '/default/ {print \"gw \" $3}'; while [ ! -e /www/stop ]; do sleep 0.05; done";
    let mut child = start(
        suite,
        &m(&[
            "--network",
            "bridge",
            "-p",
            &publish,
            "-v",
            &vol,
            "sh",
            "-c",
            cmd,
        ]),
    );
    let t = Instant::now();
    let mut why = Vec::new();
    match line_starting(&mut child, "gw ") {
        None => why.push("the workload did not start its server".into()),
        Some(bridge) => {
            // The host's loopback, and the bridge's address.
            for gw in ["127.0.0.1".to_string(), bridge] {
                match http_get(&format!("{gw}:{port}"), Duration::from_secs(20)) {
                    Ok(b) if b.contains("hello from the workload") => {}
                    Ok(b) => why.push(format!("{gw}:{port} answered {b:?}")),
                    Err(e) => why.push(format!("{gw}:{port}: {e}")),
                }
            }
            // Another workload reaches it through the published port
            // too (hairpin NAT on the bridge).
            let get = format!(
                "gw=$(ip route | awk '/default/ {{print $3}}'); printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $gw {port}"
            );
            let run = suite.isolate(&m(&["--network", "bridge", "sh", "-c", &get]), None);
            if !run.stdout.contains("hello from the workload") {
                why.push(format!(
                    "a second workload got {:?} (exit {}) through the published port",
                    run.stdout, run.code
                ));
            }
        }
    }
    let _ = std::fs::write(www.join("stop"), "");
    match wait_for(&mut child, Duration::from_secs(30)) {
        Some(0) => {}
        other => why.push(format!("isolate ended with {other:?}")),
    }
    let _ = std::fs::remove_dir_all(&www);
    suite.verdict(&label, why, t.elapsed());
}

/// Two workloads on the bridge talk by address; a third shares the first
/// one's namespace (`--network container:NAME`) and reaches it on lo.
fn two_workloads(suite: &mut Suite, mode: &str, tag: &str, m: &dyn Fn(&[&str]) -> Vec<String>) {
    let name = format!("net-a-{tag}");
    // Each listener takes connections until one brings the expected line
    // (a client may connect before its data is written, or a probe may
    // come first), then says what it got.
    let listen =
        "ip -4 addr show eth0 | awk '/inet / {split($2, a, \"/\"); print \"addr \" a[1]}'; \
        until nc -l -p 7000 | grep -q hello-from-b; do :; done; echo got hello-from-b; \
        until nc -l -p 7001 | grep -q hello-from-c; do :; done; echo got hello-from-c";
    let mut a = start(
        suite,
        &m(&["--network", "bridge", "--name", &name, "sh", "-c", listen]),
    );
    let t = Instant::now();
    let Some(addr) = line_starting(&mut a, "addr ") else {
        let _ = a.kill();
        let _ = a.wait();
        suite.verdict(
            &format!("{mode}/net_two_workloads_talk"),
            vec!["the first workload did not start".into()],
            t.elapsed(),
        );
        return;
    };
    // nc -l may not listen yet: retry for a while.
    let send = |args: Vec<String>| {
        let start = Instant::now();
        loop {
            let run = suite.isolate(&args, None);
            if run.code == 0 || start.elapsed() > Duration::from_secs(15) {
                return run;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Sent again and again for a while: busybox nc may end with 0 having
    // delivered nothing, and A listens again until the line arrives.
    let to_b = format!(
        "for i in $(seq 20); do echo hello-from-b | nc -w 2 {addr} 7000; sleep 0.3; done; exit 0"
    );
    let run_b = send(m(&["--network", "bridge", "sh", "-c", &to_b]));
    let to_c = "for i in $(seq 20); do echo hello-from-c | nc -w 2 127.0.0.1 7001; sleep 0.3; done; exit 0"
        .to_string();
    let shared = format!("container:{name}");
    let run_c = send(m(&["--network", &shared, "sh", "-c", &to_c]));
    let code = wait_for(&mut a, Duration::from_secs(20));
    let mut out = String::new();
    if let Some(mut o) = a.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let mut why = Vec::new();
    if run_b.code != 0 || !out.contains("hello-from-b") {
        why.push(format!(
            "B to A at {addr}: exit {}, A printed {out:?}",
            run_b.code
        ));
    }
    suite.verdict(&format!("{mode}/net_two_workloads_talk"), why, t.elapsed());
    let mut why = Vec::new();
    if run_c.code != 0 || !out.contains("hello-from-c") {
        why.push(format!(
            "C in A's namespace: exit {} ({}), A printed {out:?}",
            run_c.code,
            run_c.stderr.trim()
        ));
    }
    if code != Some(0) {
        why.push(format!("A ended with {code:?}"));
    }
    suite.verdict(
        &format!("{mode}/net_container_shares_namespace"),
        why,
        t.elapsed(),
    );
}

/// `kill -9` of isolate leaves a lease, a table and a bridge; the next run
/// (of any network) removes them, and the published port is free again.
fn kill9_cleanup(suite: &mut Suite, mode: &str, m: &dyn Fn(&[&str]) -> Vec<String>) {
    let label = format!("{mode}/net_kill9_cleanup");
    let before = leftovers();
    let port = free_port();
    let mut child = start(
        suite,
        &m(&[
            "--network",
            "bridge",
            "-p",
            &format!("{port}:80"),
            "sh",
            "-c",
            "echo up; sleep 60",
        ]),
    );
    let t = Instant::now();
    let mut why = Vec::new();
    if line_starting(&mut child, "up").is_none() {
        why.push("the workload did not start".into());
    }
    let during = leftovers();
    if during.veths != before.veths + 1 || !during.table || during.leases != before.leases + 1 {
        why.push(format!(
            "while running: {during:?} (before: {before:?}); the case cannot see what it counts"
        ));
    }
    let _ = child.kill();
    let _ = child.wait();
    let run = suite.isolate(&m(&["true"]), None);
    if run.code != 0 {
        why.push(format!("the next run failed: {}", run.stderr.trim()));
    }
    let after = leftovers();
    if after != before {
        why.push(format!(
            "after kill -9 and a next run: {after:?} (before: {before:?})"
        ));
    }
    if TcpListener::bind(("0.0.0.0", port)).is_err() {
        why.push(format!("host port {port} is still held"));
    }
    suite.verdict(&label, why, t.elapsed());
}

/// 20 networked workloads at once get 20 distinct addresses, and all of
/// it goes when they end.
fn concurrent(suite: &mut Suite, mode: &str, m: &dyn Fn(&[&str]) -> Vec<String>) {
    let label = format!("{mode}/net_20_concurrent_distinct_addresses");
    let before = leftovers();
    let t = Instant::now();
    let children: Vec<Child> = (0..20)
        .map(|_| {
            start(
                suite,
                &m(&[
                    "--network",
                    "bridge",
                    "sh",
                    "-c",
                    "ip -4 addr show eth0 | awk '/inet / {print \"addr \" $2}'; sleep 1",
                ]),
            )
        })
        .collect();
    let mut addrs = Vec::new();
    let mut why = Vec::new();
    for mut c in children {
        let addr = line_starting(&mut c, "addr ");
        let code = wait_for(&mut c, Duration::from_secs(60));
        match (addr, code) {
            (Some(a), Some(0)) => addrs.push(a),
            (a, code) => {
                let mut err = String::new();
                if let Some(mut e) = c.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                why.push(format!(
                    "a workload: address {a:?}, exit {code:?}, {}",
                    err.trim()
                ));
            }
        }
    }
    let n = addrs.len();
    addrs.sort();
    addrs.dedup();
    if addrs.len() != 20 {
        why.push(format!(
            "{} distinct addresses of {n}: {addrs:?}",
            addrs.len()
        ));
    }
    let after = leftovers();
    if after != before {
        why.push(format!("after: {after:?} (before: {before:?})"));
    }
    suite.verdict(&label, why, t.elapsed());
}
