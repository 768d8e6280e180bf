//! Parsing of the user-facing forms: sizes (`256m`), durations (`30s`),
//! volumes (`SRC:DST[:ro]`), users (`UID[:GID]`) and `KEY=VAL`; and the
//! flat keyed files of cgroup v2 and v1 (`key value` per line), read by the
//! host's cgroups and by the guest init alike.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::workload::{Device, Protocol, Publish, User, Volume, VolumeSource};

/// Parses a published port, `[HOSTIP:]HOSTPORT:PORT[/tcp|udp]`, as
/// docker's `-p` (TCP by default).
pub fn publish(s: &str) -> Result<Publish> {
    let bad = |why: &str| {
        Error::invalid(
            "publish",
            format!("{s:?}: {why}; use [HOSTIP:]HOSTPORT:PORT[/tcp|udp], e.g. 8080:80"),
        )
    };
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((spec, "tcp")) => (spec, Protocol::Tcp),
        Some((spec, "udp")) => (spec, Protocol::Udp),
        Some(_) => return Err(bad("the protocol is tcp or udp")),
        None => (s, Protocol::Tcp),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (host_ip, host_port, port) = match parts.as_slice() {
        [h, p] => (None, *h, *p),
        [ip, h, p] => (
            Some(
                ip.parse::<std::net::Ipv4Addr>()
                    .map_err(|_| bad("the host address is not an IPv4 address"))?,
            ),
            *h,
            *p,
        ),
        _ => return Err(bad("two or three fields separated by ':'")),
    };
    let port_of = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad("a port is a number from 1 to 65535")),
    };
    Ok(Publish {
        host_ip,
        host_port: port_of(host_port)?,
        port: port_of(port)?,
        protocol,
    })
}

/// Parses a size like `256m`, `1g`, `512k`, `1048576` or `1.5g` into bytes
/// (binary units, as docker).
pub fn size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        Some((i, 't')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    let bad = || {
        Error::invalid(
            "size",
            format!("{s:?} is not a size; use e.g. 256m, 1g, 512k"),
        )
    };
    let value: f64 = num.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    let bytes = value * mult as f64;
    if bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Parses a duration like `30s`, `500ms`, `2m`, `1h` or `1.5` (seconds).
pub fn duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let bad = || {
        Error::invalid(
            "duration",
            format!("{s:?} is not a duration; use e.g. 30s, 500ms, 2m"),
        )
    };
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `SRC:DST[:ro|:rw]`. A `SRC` with a `/` is a host path (made
/// absolute against the current directory); otherwise it names a volume.
pub fn volume(s: &str) -> Result<Volume> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [src, dst] => (*src, *dst, None),
        [src, dst, mode] => (*src, *dst, Some(*mode)),
        _ => {
            return Err(Error::invalid(
                "volume",
                format!("{s:?} is not SRC:DST[:ro]"),
            ))
        }
    };
    if src.is_empty() || dst.is_empty() {
        return Err(Error::invalid(
            "volume",
            format!("{s:?} is not SRC:DST[:ro]"),
        ));
    }
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => {
            return Err(Error::invalid(
                "volume",
                format!("{m:?} in {s:?} is not a mode; use ro or rw"),
            ))
        }
    };
    let source = if src.contains('/') || src == "." || src == ".." {
        let p = PathBuf::from(src);
        let abs = if p.is_absolute() {
            p
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("cannot read the current directory", ".", e))?
                .join(p)
        };
        VolumeSource::Host(abs)
    } else {
        VolumeSource::Named(src.to_string())
    };
    Ok(Volume {
        source,
        target: PathBuf::from(dst),
        read_only,
    })
}

/// Parses docker's `--device HOST[:CONTAINER][:rwm]`; the container path
/// defaults to the host path and the access to `rwm`.
pub fn device(s: &str) -> Result<Device> {
    let bad = || {
        Error::invalid(
            "device",
            format!(
                "{s:?} is not HOST[:CONTAINER][:rwm], e.g. /dev/fuse or /dev/fuse:/dev/fuse:rw"
            ),
        )
    };
    let is_access = |p: &str| !p.is_empty() && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    let parts: Vec<&str> = s.split(':').collect();
    let (host, container, access) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, a] if is_access(a) => (*h, *h, *a),
        [h, c] => (*h, *c, "rwm"),
        [h, c, a] => (*h, *c, *a),
        _ => return Err(bad()),
    };
    if host.is_empty() || container.is_empty() {
        return Err(bad());
    }
    Ok(Device {
        host: PathBuf::from(host),
        container: PathBuf::from(container),
        access: access.to_string(),
    })
}

/// Parses `UID[:GID]` (numeric; the GID defaults to the UID).
pub fn user(s: &str) -> Result<User> {
    let bad = |why: &str| {
        Error::invalid(
            "user",
            format!("{s:?} {why}; use UID[:GID], e.g. 1000:1000"),
        )
    };
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid: u32 = u
        .parse()
        .map_err(|_| bad("is not a numeric user id or is out of range"))?;
    let gid: u32 = match g {
        Some(g) => g
            .parse()
            .map_err(|_| bad("has a group that is not a numeric id or is out of range"))?,
        None => uid,
    };
    Ok(User { uid, gid })
}

/// Parses `KEY=VAL`; a bare `KEY` takes its value from isolate's own
/// environment (as docker's `-e KEY`), and is an error if unset.
pub fn env(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        Some(_) => Err(Error::invalid(
            "env",
            format!("{s:?} has no name before '='"),
        )),
        None => std::env::var(s).map(|v| (s.to_string(), v)).map_err(|_| {
            Error::invalid(
                "env",
                format!("{s:?} has no '=' and is not set in this environment"),
            )
        }),
    }
}

/// The value of `key` in a flat keyed file (`key value` per line, as in
/// `memory.events`, `cpu.stat`, `memory.oom_control`): `None` when no line
/// has exactly that key or its value is not a number.
pub fn keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_takes_docker_forms() {
        let p = publish("8080:80").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.port, p.protocol),
            (None, 8080, 80, Protocol::Tcp)
        );
        let p = publish("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p.host_ip, Some(std::net::Ipv4Addr::LOCALHOST));
        assert_eq!(p.protocol, Protocol::Udp);
        for bad in ["80", "0:80", "8080:70000", "x:1:2", "1:2/sctp", "a:b:c:d"] {
            assert!(publish(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn devices_parse_as_docker_does() {
        let d = device("/dev/fuse").unwrap();
        assert_eq!(
            (d.container.to_str(), d.access.as_str()),
            (Some("/dev/fuse"), "rwm")
        );
        let d = device("/dev/fuse:r").unwrap();
        assert_eq!(
            (d.container.to_str(), d.access.as_str()),
            (Some("/dev/fuse"), "r")
        );
        let d = device("/dev/net/tun:/dev/tun0:rw").unwrap();
        assert_eq!(
            (d.container.to_str(), d.access.as_str()),
            (Some("/dev/tun0"), "rw")
        );
        assert!(device("/dev/a:/dev/b:rwx:extra").is_err());
        assert!(device(":/dev/b").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("256m").unwrap(), 256 << 20);
        assert_eq!(size("1G").unwrap(), 1 << 30);
        assert_eq!(size("512k").unwrap(), 512 << 10);
        assert_eq!(size("100").unwrap(), 100);
        assert_eq!(size("1.5g").unwrap(), 3 << 29);
        assert_eq!(size("64MiB").unwrap(), 64 << 20);
        assert!(size("lots").is_err());
        assert!(size("-1m").is_err());
        assert!(size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(duration("soon").is_err());
        assert!(duration("5d").is_err());
    }

    #[test]
    fn volumes() {
        let v = volume("/srv/data:/data:ro").unwrap();
        assert_eq!(v.source, VolumeSource::Host("/srv/data".into()));
        assert_eq!(v.target, PathBuf::from("/data"));
        assert!(v.read_only);
        let v = volume("cache:/cache").unwrap();
        assert_eq!(v.source, VolumeSource::Named("cache".into()));
        assert!(!v.read_only);
        assert!(volume("/a").is_err());
        assert!(volume("/a:/b:rx").is_err());
        assert!(volume(":/b").is_err());
    }

    #[test]
    fn users() {
        assert_eq!(
            user("1000").unwrap(),
            User {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(user("1:2").unwrap(), User { uid: 1, gid: 2 });
        assert!(user("root").is_err());
        assert!(user("99999999999").is_err());
    }

    #[test]
    fn env_pairs() {
        assert_eq!(env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(env("=x").is_err());
        assert!(env("ISOLATE_SURELY_UNSET_VARIABLE").is_err());
    }

    #[test]
    fn keyed_files_are_read_by_exact_key() {
        let stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(keyed(stat, "usage_usec"), Some(1500));
        assert_eq!(keyed(stat, "usage"), None);
        let events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(events, "oom_kill"), Some(1));
        assert_eq!(keyed(events, "oom"), Some(1));
        assert_eq!(keyed("", "oom_kill"), None);
        assert_eq!(keyed("oom_kill x\n", "oom_kill"), None);
    }
}
