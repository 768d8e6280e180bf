//! isolate's host networking for `--network bridge`: the bridge
//! `isolate0` on a private subnet, an address lease per workload
//! ([`ipam`]), NAT and published ports in an nftables table of isolate's
//! own ([`nft`]), and a veth pair per workload whose inner end is `eth0`
//! in a network namespace made here ([`Attachment::netns`]), for the
//! backend to enter.
//!
//! Everything a run sets up is undone when its [`Attachment`] drops, and,
//! after a `kill -9`, by [`cleanup_stale`] at the next run: its veth is
//! deleted, its lease and files removed, the table is rewritten from the
//! leases still held, and the last run out deletes the table and turns
//! off the forwarding it turned on. The bridge itself stays, idle, as
//! docker0 does (see [`BRIDGE`]).
//!
//! ```no_run
//! let att = isolate_net::attach(&isolate_net::Request {
//!     id: "run-1",
//!     hostname: "web",
//!     publish: &[isolate_core::parse::publish("8080:80").unwrap()],
//! })
//! .unwrap();
//! println!("{} in {:?}", att.address(), att.netns());
//! ```

pub mod error;
pub mod ipam;
pub mod netlink;
pub mod nft;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use isolate_core::{paths, Protocol, Publish};

pub use error::NetError;
use netlink::Netlink;

/// The host bridge. Made by the first networked run and left in place
/// when idle (its own address, no workload port, no NAT rule): deleting
/// it would cost every last run out an RCU wait. `ip link del isolate0`
/// removes it when no workload runs; the next run makes it again.
pub const BRIDGE: &str = "isolate0";
/// MTU of the bridge and of every veth.
pub const MTU: u32 = 1500;
/// Subnets tried in order when `ISOLATE_NET_SUBNET` is not set: the first
/// that no host route overlaps is used. Docker's (172.17.0.0/16), podman's
/// (10.88.0.0/16) and libvirt's (192.168.122.0/24) defaults are left out,
/// so that a bridge of theirs made later does not clash with isolate0.
pub const CANDIDATES: [&str; 4] = [
    "10.123.0.0/16",
    "10.124.0.0/16",
    "172.30.0.0/16",
    "192.168.234.0/24",
];

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub net: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `A.B.C.D/N` (N from 8 to 29); host bits are cleared.
    pub fn parse(s: &str) -> Option<Subnet> {
        let (a, n) = s.trim().split_once('/')?;
        let ip: Ipv4Addr = a.parse().ok()?;
        let prefix: u8 = n.parse().ok()?;
        if !(8..=29).contains(&prefix) {
            return None;
        }
        Some(Subnet {
            net: Ipv4Addr::from(u32::from(ip) & Self::mask(prefix)),
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0)
    }

    /// The `n`th address (the gateway is 1).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) + n)
    }

    /// The bridge's address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    /// How many workload addresses it has (2 to broadcast - 1).
    pub fn capacity(&self) -> u32 {
        (1u32 << (32 - self.prefix as u32)) - 3
    }

    /// Whether it overlaps `net/prefix`.
    pub fn overlaps(&self, net: Ipv4Addr, prefix: u8) -> bool {
        let p = prefix.min(self.prefix);
        let m = Self::mask(p);
        u32::from(self.net) & m == u32::from(net) & m
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// What a run asks for.
pub struct Request<'a> {
    /// The run's id, recorded in its lease.
    pub id: &'a str,
    /// The workload's hostname, for its `/etc/hosts` and `/etc/hostname`.
    pub hostname: &'a str,
    /// Ports to publish.
    pub publish: &'a [Publish],
}

/// A workload's place on the bridge, held for as long as it runs: the
/// network namespace with `eth0` configured, its address, the files for
/// its `/etc`, and the host ports it publishes. Dropping it undoes all of
/// it.
pub struct Attachment {
    netns: OwnedFd,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
    lease_path: PathBuf,
    files: PathBuf,
    veth: String,
    /// The lease, locked while this run lives.
    _lease: File,
    /// Sockets bound to the published host ports: no host process can
    /// take them while the workload runs.
    _ports: Vec<OwnedFd>,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("address", &self.address)
            .field("veth", &self.veth)
            .finish()
    }
}

impl Attachment {
    /// The network namespace (an `nsfs` descriptor) to enter with `setns`.
    pub fn netns(&self) -> &OwnedFd {
        &self.netns
    }

    /// The workload's address.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// Its default gateway (the bridge).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The host files to bind read-only over the workload's `/etc/hosts`,
    /// `/etc/hostname` and `/etc/resolv.conf`: (file, path inside).
    pub fn etc_files(&self) -> [(PathBuf, &'static str); 3] {
        [
            (self.files.join("hosts"), "/etc/hosts"),
            (self.files.join("hostname"), "/etc/hostname"),
            (self.files.join("resolv.conf"), "/etc/resolv.conf"),
        ]
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let t0 = std::time::Instant::now();
        // The veth is this lease's alone: deleted (an RCU wait) before the
        // network lock is taken, so that other runs do not wait for it.
        if let Ok(mut nl) = Netlink::open() {
            if let Some(i) = Netlink::index(&self.veth) {
                let _ = nl.delete(i);
            }
        }
        trace(t0, "teardown: veth deleted");
        let Ok(_guard) = NetLock::take() else {
            return;
        };
        trace(t0, "teardown: network lock taken");
        let _ = std::fs::remove_dir_all(&self.files);
        let _ = std::fs::remove_file(&self.lease_path);
        let _ = sync_host();
        trace(t0, "teardown: lease released, table and bridge in step");
    }
}

/// With `ISOLATE_NET_TRACE` set, prints how long each step took since `t0`.
fn trace(t0: std::time::Instant, what: &str) {
    if std::env::var_os("ISOLATE_NET_TRACE").is_some() {
        eprintln!(
            "isolate-net: {:>8.3} ms {what}",
            t0.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// The network state, `/run/isolate-net` (or `ISOLATE_NET_STATE`): one per
/// host, whatever `ISOLATE_STATE` a run has, because what it describes
/// (the bridge, the table, the addresses on the bridge) is one per host.
pub fn dir() -> PathBuf {
    std::env::var_os("ISOLATE_NET_STATE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/run/isolate-net"), PathBuf::from)
}

fn leases_dir() -> PathBuf {
    dir().join("leases")
}

fn files_dir(ip: Ipv4Addr) -> PathBuf {
    dir().join("files").join(ip.to_string())
}

/// The network lock, `/run/isolate-net/lock`: every change to leases,
/// the table or the bridge happens under it.
struct NetLock(#[allow(dead_code)] File);

impl NetLock {
    fn take() -> Result<NetLock, NetError> {
        use std::os::unix::fs::OpenOptionsExt;
        let d = dir();
        for sub in [d.clone(), d.join("leases")] {
            paths::private_dir(&sub)
                .map_err(|e| NetError::host(format!("create {}", sub.display()), e))?;
        }
        let path = d.join("lock");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| NetError::host(format!("open {}", path.display()), e))?;
        ipam::lock(&f, true).map_err(|e| NetError::host(format!("lock {}", path.display()), e))?;
        Ok(NetLock(f))
    }
}

/// IPv4 routes of the host's main table: (destination, prefix, device).
fn host_routes() -> Vec<(Ipv4Addr, u8, String)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // /proc/net/route prints addresses in host (little-endian) order.
            Some((
                Ipv4Addr::from(u32::from_be(dest)),
                u32::from_be(mask).count_ones() as u8,
                f[0].to_string(),
            ))
        })
        .collect()
}

/// The subnet: `ISOLATE_NET_SUBNET`, else the one the bridge was made
/// with, else the first of [`CANDIDATES`] that no host route overlaps.
pub fn subnet() -> Result<Subnet, NetError> {
    if let Some(v) = std::env::var_os("ISOLATE_NET_SUBNET") {
        let s = v.to_string_lossy();
        return Subnet::parse(&s).ok_or_else(|| NetError::BadSubnet(s.into_owned()));
    }
    if Netlink::index(BRIDGE).is_some() {
        if let Some(s) = std::fs::read_to_string(dir().join("subnet"))
            .ok()
            .and_then(|t| Subnet::parse(&t))
        {
            return Ok(s);
        }
    }
    let routes = host_routes();
    CANDIDATES
        .iter()
        .filter_map(|c| Subnet::parse(c))
        .find(|s| {
            !routes
                .iter()
                .any(|(net, p, dev)| dev != BRIDGE && *p > 0 && s.overlaps(*net, *p))
        })
        .ok_or(NetError::NoFreeSubnet)
}

fn write_sysctl(path: &str, value: &str) -> Result<(), NetError> {
    std::fs::write(path, value).map_err(|e| NetError::host(format!("write {value} to {path}"), e))
}

/// Creates the bridge if missing, with the gateway address, forwarding
/// and `route_localnet` (published ports reached from the host's own
/// loopback) on it. The bridge stays when no run uses it, as docker0
/// does: deleting a network device waits for RCU grace periods (30 to
/// 300 ms measured here), which every last run out would pay; with no
/// workload port on it, it forwards nothing.
fn ensure_bridge(nl: &mut Netlink, subnet: &Subnet) -> Result<u32, NetError> {
    if let Some(i) = Netlink::index(BRIDGE) {
        return Ok(i);
    }
    nl.add_bridge(BRIDGE, MTU)
        .map_err(|e| NetError::netlink(format!("create bridge {BRIDGE}"), e))?;
    let index = Netlink::index(BRIDGE).ok_or_else(|| {
        NetError::netlink(
            format!("find bridge {BRIDGE}"),
            std::io::Error::from_raw_os_error(libc::ENODEV),
        )
    })?;
    let made = (|| {
        nl.add_address(index, subnet.gateway(), subnet.prefix)
            .map_err(|e| NetError::netlink(format!("add {} to {BRIDGE}", subnet.gateway()), e))?;
        nl.set_up(index)
            .map_err(|e| NetError::netlink(format!("set {BRIDGE} up"), e))?;
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding"), "1")?;
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet"),
            "1",
        )?;
        std::fs::write(dir().join("subnet"), subnet.to_string())
            .map_err(|e| NetError::host("record the bridge's subnet", e))
    })();
    if let Err(e) = made {
        let _ = nl.delete(index);
        return Err(e);
    }
    Ok(index)
}

/// Turns forwarding on for the uplinks (the devices of the default
/// routes) whose forwarding is off, for the replies to the workloads'
/// NATed traffic, and records them; the table then forwards nothing from
/// them but to the bridge. Undone with the table ([`restore_uplinks`]).
fn enable_uplinks() -> Result<(), NetError> {
    let mut enabled = uplinks();
    let all = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/forwarding")
        .is_ok_and(|v| v.trim() == "1");
    for (_, prefix, dev) in host_routes() {
        // A host that forwards everywhere needs nothing from isolate.
        if all {
            break;
        }
        if prefix != 0 || dev == BRIDGE || enabled.contains(&dev) {
            continue;
        }
        let path = format!("/proc/sys/net/ipv4/conf/{dev}/forwarding");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
            enabled.push(dev);
            std::fs::write(dir().join("uplinks"), enabled.join("\n"))
                .map_err(|e| NetError::host("record the uplinks' forwarding", e))?;
            write_sysctl(&path, "1")?;
        }
    }
    Ok(())
}

fn uplinks() -> Vec<String> {
    std::fs::read_to_string(dir().join("uplinks"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Turns off the uplinks' forwarding that [`enable_uplinks`] turned on,
/// unless the host has turned forwarding on everywhere since (another
/// tool setting `net.ipv4.ip_forward=1`, which sets every device's): that
/// is then the host's wish, not isolate's to undo.
fn restore_uplinks() {
    let all = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/forwarding")
        .is_ok_and(|v| v.trim() == "1");
    if !all {
        for dev in uplinks() {
            let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/forwarding"), "0");
        }
    }
    let _ = std::fs::remove_file(dir().join("uplinks"));
}

/// Under the network lock: removes the leases of runs that are gone (with
/// their veth and files), then makes the table match the leases left;
/// with none left, deletes the table and restores the uplinks.
fn sync_host() -> Result<(), NetError> {
    // A lease being made is `<addr>.new` only under the lock: one seen
    // here is a killed run's half-made lease.
    if let Ok(rd) = std::fs::read_dir(leases_dir()) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().ends_with(".new") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let mut live = Vec::new();
    for (ip, path) in ipam::list(&leases_dir()) {
        let Ok(f) = File::open(&path) else { continue };
        let rec = ipam::Record::parse(&std::fs::read_to_string(&path).unwrap_or_default());
        if ipam::lock(&f, false).unwrap_or(false) {
            // Its isolate is gone: what it set up goes.
            if let (Some(i), Ok(mut nl)) = (Netlink::index(&rec.veth), Netlink::open()) {
                let _ = nl.delete(i);
            }
            let _ = std::fs::remove_dir_all(files_dir(ip));
            let _ = std::fs::remove_file(&path);
        } else {
            live.push((rec, ip));
        }
    }
    let table_marker = dir().join("table");
    if live.is_empty() {
        if table_marker.exists() {
            nft::apply(&nft::delete())?;
            let _ = std::fs::remove_file(&table_marker);
        }
        restore_uplinks();
        return Ok(());
    }
    let subnet = subnet()?;
    let dnats: Vec<nft::Dnat> = live
        .iter()
        .flat_map(|(rec, ip)| {
            rec.publish.iter().map(|p| nft::Dnat {
                publish: *p,
                to: *ip,
            })
        })
        .collect();
    if !table_marker.exists() {
        enable_uplinks()?;
    }
    let text = nft::ruleset(&subnet, BRIDGE, &dnats, &uplinks());
    // Skip `nft` when the table is already what it should be.
    if std::fs::read_to_string(&table_marker).is_ok_and(|t| t == text) {
        return Ok(());
    }
    nft::apply(&text)?;
    std::fs::write(&table_marker, text).map_err(|e| NetError::host("record the nft table", e))
}

/// Removes what killed runs left (their leases, veths, files, published
/// ports), and the table when no run uses it. Cheap when there is
/// nothing to do (no lease, no table).
pub fn cleanup_stale() {
    let d = dir();
    if !d.exists() {
        return;
    }
    let leases = ipam::list(&leases_dir());
    // Without the lock: is any lease's run gone? (Its lock is free.)
    let stale = leases
        .iter()
        .any(|(_, path)| File::open(path).is_ok_and(|f| ipam::lock(&f, false).unwrap_or(false)));
    let idle_table = leases.is_empty() && (d.join("table").exists() || d.join("uplinks").exists());
    if !stale && !idle_table {
        return;
    }
    if let Ok(_guard) = NetLock::take() {
        let _ = sync_host();
    }
}

/// Binds a socket to the published host port: it fails if the port is
/// taken, and while held, no host process can take it.
fn reserve(p: &Publish) -> Result<OwnedFd, NetError> {
    let kind = match p.protocol {
        Protocol::Tcp => libc::SOCK_STREAM,
        Protocol::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(NetError::host(
            "create a socket",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: socket returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: p.host_port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a sockaddr_in that lives across the call, and the
    // length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let shown = format!(
            "{}{}:{}/{}",
            p.host_ip.map_or(String::new(), |ip| format!("{ip}:")),
            p.host_port,
            p.port,
            p.protocol.as_str()
        );
        return Err(match e.raw_os_error() {
            Some(libc::EADDRINUSE) => NetError::PortTaken {
                publish: shown,
                port: p.host_port,
                protocol: p.protocol.as_str(),
            },
            _ => NetError::host(format!("reserve host port {shown}"), e),
        });
    }
    Ok(fd)
}

/// The host's upstream resolvers for the workload's `/etc/resolv.conf`:
/// `/etc/resolv.conf` without loopback nameservers (a local stub, such as
/// systemd-resolved's 127.0.0.53, is not reachable from the workload),
/// falling back to systemd-resolved's list of upstream servers.
fn resolv_conf() -> String {
    let keep = |text: &str| -> (String, bool) {
        let mut out = String::new();
        let mut servers = false;
        for line in text.lines() {
            let t = line.trim();
            if let Some(ns) = t.strip_prefix("nameserver") {
                let ns = ns.trim();
                let local = ns
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
                if local {
                    continue;
                }
                servers = true;
            }
            out.push_str(line);
            out.push('\n');
        }
        (out, servers)
    };
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (text, servers) = keep(&host);
    if servers {
        return text;
    }
    if let Ok(up) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
        let (t, s) = keep(&up);
        if s {
            return t;
        }
    }
    text
}

fn write_files(dir: &Path, ip: Ipv4Addr, hostname: &str) -> Result<(), NetError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| NetError::host(format!("create {}", dir.display()), e))?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"
    );
    for (name, text) in [
        ("hosts", hosts),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv_conf()),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text)
            .map_err(|e| NetError::host(format!("write {}", p.display()), e))?;
    }
    Ok(())
}

/// Name of the host end of the veth of `ip`: unique while the lease is held.
fn veth_name(ip: Ipv4Addr) -> String {
    format!("iso{:08x}", u32::from(ip))
}

/// Attaches a new workload to the bridge: reserves its published ports,
/// leases an address, makes a network namespace with `lo` up and `eth0`
/// (address, MTU, default route via the bridge), and loads the table.
pub fn attach(req: &Request) -> Result<Attachment, NetError> {
    let t0 = std::time::Instant::now();
    let ports = req
        .publish
        .iter()
        .map(reserve)
        .collect::<Result<Vec<_>, _>>()?;
    let (netns, mut inner) = Netlink::open_in_new_netns()
        .map_err(|e| NetError::host("create a network namespace", e))?;
    trace(t0, "namespace made");
    let guard = NetLock::take()?;
    trace(t0, "network lock taken");
    sync_host()?;
    trace(t0, "stale leases swept");
    let subnet = subnet()?;
    if Netlink::index(BRIDGE).is_some() {
        let made = std::fs::read_to_string(dir().join("subnet"))
            .ok()
            .and_then(|t| Subnet::parse(&t));
        if made.is_some_and(|m| m != subnet) {
            return Err(NetError::SubnetChanged {
                bridge: made.map(|m| m.to_string()).unwrap_or_default(),
                wanted: subnet.to_string(),
            });
        }
    }
    let mut nl = Netlink::open().map_err(|e| NetError::netlink("open a socket", e))?;
    let bridge = ensure_bridge(&mut nl, &subnet)?;
    trace(t0, "bridge ready");
    let taken: Vec<Ipv4Addr> = ipam::list(&leases_dir())
        .into_iter()
        .map(|(ip, _)| ip)
        .collect();
    let address = (2..=subnet.capacity() + 1)
        .map(|n| subnet.host(n))
        .find(|ip| !taken.contains(ip))
        .ok_or_else(|| NetError::NoFreeAddress(subnet.to_string()))?;
    let record = ipam::Record {
        id: req.id.to_string(),
        veth: veth_name(address),
        publish: req.publish.to_vec(),
    };
    let lease_path = leases_dir().join(address.to_string());
    let lease = ipam::create(&lease_path, &record)
        .map_err(|e| NetError::host(format!("create lease {}", lease_path.display()), e))?;
    let att = Attachment {
        netns,
        address,
        gateway: subnet.gateway(),
        lease_path,
        files: files_dir(address),
        veth: record.veth.clone(),
        _lease: lease,
        _ports: ports,
    };
    // From here on, dropping `att` undoes what was made; it takes the
    // network lock itself.
    drop(guard);
    let r = (|| {
        write_files(&att.files, address, req.hostname)?;
        trace(t0, "address leased, files written");
        nl.add_veth(&att.veth, bridge, "eth0", &att.netns, MTU)
            .map_err(|e| NetError::netlink(format!("create veth {}", att.veth), e))?;
        trace(t0, "veth made");
        let lo = inner
            .index_of("lo")
            .map_err(|e| NetError::netlink("find lo in the workload's namespace", e))?;
        inner
            .set_up(lo)
            .map_err(|e| NetError::netlink("set lo up", e))?;
        let eth0 = inner
            .index_of("eth0")
            .map_err(|e| NetError::netlink("find eth0 in the workload's namespace", e))?;
        inner
            .add_address(eth0, address, subnet.prefix)
            .map_err(|e| NetError::netlink(format!("add {address} to eth0"), e))?;
        inner
            .set_up(eth0)
            .map_err(|e| NetError::netlink("set eth0 up", e))?;
        inner
            .add_default_route(eth0, subnet.gateway())
            .map_err(|e| NetError::netlink("add the default route", e))?;
        trace(t0, "eth0 configured");
        let _guard = NetLock::take()?;
        let r = sync_host();
        trace(t0, "table loaded");
        r
    })();
    r.map(|()| att)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_parses_and_clears_host_bits() {
        let s = Subnet::parse("10.88.3.4/16").unwrap();
        assert_eq!(s.to_string(), "10.88.0.0/16");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(s.capacity(), 65533);
        assert!(Subnet::parse("10.0.0.0/30").is_none());
        assert!(Subnet::parse("nonsense").is_none());
    }

    #[test]
    fn overlapping_routes_are_detected() {
        let s = Subnet::parse("10.88.0.0/16").unwrap();
        assert!(s.overlaps(Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(s.overlaps(Ipv4Addr::new(10, 88, 5, 0), 24));
        assert!(!s.overlaps(Ipv4Addr::new(192, 0, 2, 0), 24));
    }

    #[test]
    fn loopback_nameservers_are_not_given_to_workloads() {
        // Whatever the host has, the result names no 127.x server.
        assert!(!resolv_conf().contains("nameserver 127."));
    }

    #[test]
    fn veth_names_fit_ifnamsiz() {
        assert!(veth_name(Ipv4Addr::new(255, 255, 255, 255)).len() < 16);
    }
}
