//! isolate's nftables table, `ip isolate`: NAT for the bridge's subnet,
//! the published ports as two maps, and the forward rules. The whole table
//! is written at once from the live leases with `nft -f -` (one atomic
//! transaction: `add` then `delete` then the new table), so a run that
//! ends, or the sweep after a killed one, leaves exactly the rules of the
//! runs still alive, and no rule of anyone else is ever touched. When no
//! lease is left, the table is deleted.

use std::io::Write;
use std::process::{Command, Stdio};

use isolate_core::Publish;

use crate::error::NetError;
use crate::Subnet;

/// The table's name (family `ip`).
pub const TABLE: &str = "isolate";

/// One published port of a live lease.
pub struct Dnat {
    /// What the user asked for.
    pub publish: Publish,
    /// The workload's address.
    pub to: std::net::Ipv4Addr,
}

/// The ruleset text for `subnet` on `bridge` with these published ports;
/// `uplinks` are interfaces whose forwarding isolate turned on, where
/// nothing but the bridge's traffic may be forwarded.
pub fn ruleset(subnet: &Subnet, bridge: &str, dnats: &[Dnat], uplinks: &[String]) -> String {
    let mut any = Vec::new();
    let mut addr = Vec::new();
    for d in dnats {
        let p = &d.publish;
        let proto = p.protocol.as_str();
        match p.host_ip {
            None => any.push(format!("{proto} . {} : {} . {}", p.host_port, d.to, p.port)),
            Some(ip) => addr.push(format!(
                "{ip} . {proto} . {} : {} . {}",
                p.host_port, d.to, p.port
            )),
        }
    }
    let elements = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!("\n    elements = {{ {} }}", v.join(", "))
        }
    };
    let dnat_rules = "    fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @publish_addr\n    fib daddr type local dnat ip to meta l4proto . th dport map @publish_any\n";
    let uplink_rule = if uplinks.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = uplinks.iter().map(|u| format!("\"{u}\"")).collect();
        format!(
            "    iifname {{ {} }} oifname != \"{bridge}\" drop\n",
            names.join(", ")
        )
    };
    format!(
        "add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{
  map publish_any {{
    type inet_proto . inet_service : ipv4_addr . inet_service{any}
  }}
  map publish_addr {{
    type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service{addr}
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
{dnat_rules}  }}
  chain output {{
    type nat hook output priority -100; policy accept;
{dnat_rules}  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != \"{bridge}\" masquerade
    ip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade
    ip saddr {subnet} oifname \"{bridge}\" ct status dnat masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"{bridge}\" accept
    oifname \"{bridge}\" ct state established,related accept
    oifname \"{bridge}\" ct status dnat accept
    oifname \"{bridge}\" drop
{uplink_rule}  }}
}}
",
        any = elements(&any),
        addr = elements(&addr),
    )
}

/// The text that deletes the table, whether or not it exists.
pub fn delete() -> String {
    format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// Loads `script` with `nft -f -`.
pub fn apply(script: &str) -> Result<(), NetError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Nft {
            detail: format!("cannot run nft: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NetError::Nft {
                detail: format!("cannot write to nft: {e}"),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| NetError::Nft {
        detail: format!("cannot wait for nft: {e}"),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Nft {
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel accepts the generated ruleset (`nft -c`: checked in a
    /// transaction that is not committed, so the host is not touched).
    #[test]
    fn the_kernel_accepts_the_ruleset() {
        // SAFETY: geteuid takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP the_kernel_accepts_the_ruleset: needs root (CAP_NET_ADMIN)");
            return;
        }
        if Command::new("nft").arg("--version").output().is_err() {
            eprintln!("SKIP the_kernel_accepts_the_ruleset: no nft (apt-get install nftables)");
            return;
        }
        let subnet = Subnet::parse("10.123.0.0/16").unwrap();
        let dnats = [
            Dnat {
                publish: isolate_core::parse::publish("127.0.0.1:8080:80").unwrap(),
                to: "10.123.0.2".parse().unwrap(),
            },
            Dnat {
                publish: isolate_core::parse::publish("5353:53/udp").unwrap(),
                to: "10.123.0.3".parse().unwrap(),
            },
        ];
        let text = ruleset(&subnet, "isolate0", &dnats, &["eth0".into()]);
        let mut child = Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft -c refused:\n{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn published_ports_become_map_elements() {
        let subnet = Subnet::parse("10.88.0.0/16").unwrap();
        let d = Dnat {
            publish: isolate_core::parse::publish("127.0.0.1:8080:80").unwrap(),
            to: "10.88.0.2".parse().unwrap(),
        };
        let e = Dnat {
            publish: isolate_core::parse::publish("5353:53/udp").unwrap(),
            to: "10.88.0.3".parse().unwrap(),
        };
        let r = ruleset(&subnet, "isolate0", &[d, e], &[]);
        assert!(r.contains("elements = { 127.0.0.1 . tcp . 8080 : 10.88.0.2 . 80 }"));
        assert!(r.contains("elements = { udp . 5353 : 10.88.0.3 . 53 }"));
        assert!(r.contains("ip saddr 10.88.0.0/16 oifname != \"isolate0\" masquerade"));
        // Nothing from outside reaches a workload unasked (only replies
        // and published ports), and no uplink rule without uplinks.
        assert!(r.contains("oifname \"isolate0\" drop"));
        assert!(!r.contains("iifname {"));
        let r = ruleset(&subnet, "isolate0", &[], &["eth0".into()]);
        assert!(r.contains("iifname { \"eth0\" } oifname != \"isolate0\" drop"));
    }
}
