//! Address leases: `/run/isolate-net/leases/<address>`, one file per
//! address in use, held locked (`flock`) by the isolate process that uses
//! it. The kernel drops the lock when that process dies, however it dies,
//! so an unlocked lease is a killed run's: the sweep (under the network
//! lock, like every lease change) undoes what it recorded and removes it.
//!
//! A lease records what its run set up on the host: the host end of its
//! veth and its published ports, one per line:
//!
//! ```text
//! id run-3
//! veth iso0a580002
//! publish tcp - 8080 80
//! publish udp 127.0.0.1 5353 53
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use isolate_core::{Protocol, Publish};

/// What a lease says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The run's id (`run-N` or its name).
    pub id: String,
    /// The host end of its veth.
    pub veth: String,
    /// Its published ports.
    pub publish: Vec<Publish>,
}

impl Record {
    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut s = format!("id {}\nveth {}\n", self.id, self.veth);
        for p in &self.publish {
            let ip = p.host_ip.map_or("-".to_string(), |ip| ip.to_string());
            s.push_str(&format!(
                "publish {} {ip} {} {}\n",
                p.protocol.as_str(),
                p.host_port,
                p.port
            ));
        }
        s
    }

    /// Reads the file's text; lines it does not know are skipped.
    pub fn parse(text: &str) -> Record {
        let mut r = Record {
            id: String::new(),
            veth: String::new(),
            publish: Vec::new(),
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["id", id] => r.id = id.to_string(),
                ["veth", v] => r.veth = v.to_string(),
                ["publish", proto, ip, hp, p] => {
                    let protocol = match *proto {
                        "udp" => Protocol::Udp,
                        _ => Protocol::Tcp,
                    };
                    if let (Ok(host_port), Ok(port)) = (hp.parse(), p.parse()) {
                        r.publish.push(Publish {
                            host_ip: ip.parse().ok(),
                            host_port,
                            port,
                            protocol,
                        });
                    }
                }
                _ => {}
            }
        }
        r
    }
}

/// Takes `flock` on `file`, without waiting when `wait` is false: `false`
/// if another process holds it.
pub fn lock(file: &File, wait: bool) -> io::Result<bool> {
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock(2) on a descriptor `file` owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// The leases directory's entries: (address, path).
pub fn list(dir: &Path) -> Vec<(Ipv4Addr, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let ip = e.file_name().to_str()?.parse().ok()?;
        Some((ip, e.path()))
    })
    .collect()
}

/// Creates the lease at `path`, locked (the caller holds the network
/// lock, so no other isolate races for the address). It is made locked
/// and written under a temporary name, then renamed into place: a lease
/// seen at its name is always locked by a live run or stale, never
/// half-made (the sweep's look without the lock relies on it).
pub fn create(path: &Path, record: &Record) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let made = (|| {
        if !lock(&f, false)? {
            return Err(io::Error::from_raw_os_error(libc::EWOULDBLOCK));
        }
        f.write_all(record.to_text().as_bytes())?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_reads_back_what_was_written() {
        let r = Record {
            id: "run-3".into(),
            veth: "iso0a580002".into(),
            publish: vec![
                isolate_core::parse::publish("8080:80").unwrap(),
                isolate_core::parse::publish("127.0.0.1:5353:53/udp").unwrap(),
            ],
        };
        assert_eq!(Record::parse(&r.to_text()), r);
    }

    #[test]
    fn a_lease_held_by_another_descriptor_is_busy() {
        let dir = std::env::temp_dir().join(format!("isolate-ipam-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("10.88.0.2");
        let _ = std::fs::remove_file(&path);
        let rec = Record::parse("id run-1\nveth x\n");
        let held = create(&path, &rec).unwrap();
        let other = File::open(&path).unwrap();
        assert!(!lock(&other, false).unwrap());
        drop(held);
        assert!(lock(&other, false).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
