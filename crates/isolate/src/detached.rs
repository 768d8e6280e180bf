//! Detached workloads (`isolate -d`): one directory per name under
//! `ISOLATE_STATE/detached/NAME/`, which outlives the workload until
//! `isolate rm`:
//!
//! - `record.json`: what `inspect`, `wait` and `ps -a` show (mode, limits,
//!   pids, start, status, exit code), written by the supervisor;
//! - `lock`: held (`flock`, exclusive) by the supervisor for as long as it
//!   supervises, so `wait` and `stop` block on it instead of polling a pid,
//!   and a supervisor killed by SIGKILL is told apart (the lock is free but
//!   the record still says running: status `dead`);
//! - `log`, `log.1`: the workload's stdout and stderr, one entry per line
//!   (`SECONDS.NANOS STREAM PAYLOAD`), rotated at [`LOG_MAX`].
//!
//! The supervisor is isolate itself, started again in a session of its own
//! by the isolate that was given `-d`; it runs the workload through the
//! same `Isolator::spawn` as a foreground run, in either mode.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use isolate_core::{paths, state, Error, Limits, Mode, Result};

/// Size at which the log is rotated (`log` becomes `log.1`, replacing the
/// previous one): at most twice this is kept per workload.
pub const LOG_MAX: u64 = 8 << 20;

/// Where the status of a detached workload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The supervisor runs.
    Running,
    /// The workload ended; its exit code is recorded.
    Exited,
    /// The supervisor ended without recording an end (it was killed):
    /// the workload died with it, its exit code is unknown.
    Dead,
}

/// The record of a detached workload.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The name.
    pub name: String,
    /// Its boundary.
    pub mode: Mode,
    /// The command.
    pub argv: Vec<String>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// CPU quota.
    pub cpus: Option<f64>,
    /// Process limit.
    pub pids_limit: Option<u64>,
    /// The supervising isolate's pid.
    pub supervisor_pid: u32,
    /// The pid of the process holding the boundary (container init, VMM).
    pub pid: Option<u32>,
    /// Start, seconds since the epoch.
    pub started: u64,
    /// End, seconds since the epoch.
    pub finished: Option<u64>,
    /// Status.
    pub status: Status,
    /// The workload's exit code (docker's convention), once exited.
    pub exit_code: Option<i32>,
    /// Why it ended, when isolate ended it (timeout, OOM) or failed.
    pub note: Option<String>,
}

impl Record {
    /// A new record of a workload about to start.
    pub fn new(name: &str, mode: Mode, argv: &[String], limits: &Limits) -> Record {
        Record {
            name: name.to_string(),
            mode,
            argv: argv.to_vec(),
            memory: limits.memory,
            cpus: limits.cpus,
            pids_limit: limits.pids,
            supervisor_pid: std::process::id(),
            pid: None,
            started: now_secs(),
            finished: None,
            status: Status::Running,
            exit_code: None,
            note: None,
        }
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn root() -> PathBuf {
    paths::state_dir().join("detached")
}

/// The directory of a detached workload (the name validated first).
pub fn dir(name: &str) -> Result<PathBuf> {
    isolate_core::check_name("name", name)?;
    Ok(root().join(name))
}

/// Claims `name` for a new detached workload: its directory, and its lock,
/// taken here and handed down to the supervisor (a `flock` belongs to the
/// open file, which the supervisor inherits), so that two claims of one
/// name can never both succeed. A running or stopped workload of that name
/// refuses the claim; a directory left without a record by a supervisor
/// that died before writing one is taken over.
pub fn claim(name: &str) -> Result<(PathBuf, SupervisorLock)> {
    let d = dir(name)?;
    paths::private_dir(&root()).map_err(|e| Error::io("cannot create", root(), e))?;
    let fresh = match std::fs::create_dir(&d) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(Error::io("cannot create", d, e)),
    };
    let lock = SupervisorLock::take(name)?;
    if !fresh && d.join("record.json").exists() {
        return Err(Error::invalid(
            "name",
            format!(
                "a stopped workload named {name:?} exists; remove it first with isolate rm {name}"
            ),
        ));
    }
    Ok((d, lock))
}

/// Whether the supervisor of `name` holds its lock.
fn supervised(name: &str) -> bool {
    let Ok(d) = dir(name) else { return false };
    match File::open(d.join("lock")) {
        Ok(f) => !try_flock(&f, libc::LOCK_SH),
        Err(_) => false,
    }
}

fn try_flock(f: &File, kind: i32) -> bool {
    // SAFETY: flock takes a descriptor of `f`, open for the call.
    unsafe { libc::flock(f.as_raw_fd(), kind | libc::LOCK_NB) == 0 }
}

/// The record of `name`, with a running one whose supervisor is gone
/// shown as [`Status::Dead`].
pub fn read(name: &str) -> Result<Record> {
    let path = dir(name)?.join("record.json");
    let bytes = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NoSuchWorkload(name.to_string())
        } else {
            Error::io("cannot read", &path, e)
        }
    })?;
    let mut r: Record = serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid(
            "record",
            format!(
                "{} is not a record ({e}); remove it with isolate rm -f {name}",
                path.display()
            ),
        )
    })?;
    if r.status == Status::Running && !supervised(name) {
        r.status = Status::Dead;
    }
    Ok(r)
}

/// Writes the record (atomically: a temporary file renamed over it).
pub fn write(r: &Record) -> Result<()> {
    let d = dir(&r.name)?;
    let tmp = d.join("record.json.tmp");
    let body = serde_json::to_vec_pretty(r).expect("record serializes");
    std::fs::write(&tmp, body).map_err(|e| Error::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, d.join("record.json"))
        .map_err(|e| Error::io("cannot write", d.join("record.json"), e))
}

/// All detached records, by name.
pub fn list() -> Vec<Record> {
    let mut out: Vec<Record> = std::fs::read_dir(root())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| read(n).ok()))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The supervisor's lock on `name`, held until dropped (the process's end).
#[derive(Debug)]
pub struct SupervisorLock(File);

impl SupervisorLock {
    /// The descriptor, to hand down to the supervisor.
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }

    /// Adopts the lock inherited on descriptor `fd` (the supervisor).
    ///
    /// # Safety
    ///
    /// `fd` must be an open descriptor this process owns and nothing else
    /// uses: the lock file handed down by [`claim`]'s caller.
    pub unsafe fn adopt(fd: std::os::fd::RawFd) -> std::io::Result<SupervisorLock> {
        use std::os::fd::FromRawFd;
        // SAFETY: the caller guarantees `fd` is open and owned by no one else.
        let f = unsafe { File::from_raw_fd(fd) };
        // Away from a fixed number, and closed on exec of any helper.
        let moved = f.try_clone()?;
        drop(f);
        Ok(SupervisorLock(moved))
    }

    /// Takes the lock, or fails with [`Error::NameInUse`] if it is held.
    fn take(name: &str) -> Result<SupervisorLock> {
        let path = dir(name)?.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io("cannot open", &path, e))?;
        if !try_flock(&f, libc::LOCK_EX) {
            return Err(Error::NameInUse(name.to_string()));
        }
        Ok(SupervisorLock(f))
    }
}

/// Blocks until the supervisor of `name` has ended, or `timeout` passed
/// (`false` then).
pub fn wait_end(name: &str, timeout: Option<Duration>) -> Result<bool> {
    let path = dir(name)?.join("lock");
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(Error::io("cannot open", &path, e)),
    };
    match timeout {
        None => {
            // SAFETY: flock on a descriptor of `f`, open for the call.
            while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH) } != 0 {
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    return Err(Error::io(
                        "cannot lock",
                        &path,
                        std::io::Error::last_os_error(),
                    ));
                }
            }
            Ok(true)
        }
        Some(t) => {
            let deadline = std::time::Instant::now() + t;
            loop {
                if try_flock(&f, libc::LOCK_SH) {
                    return Ok(true);
                }
                if std::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Which stream a log entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Out,
    /// stderr.
    Err,
}

/// The size-capped, rotated log a supervisor writes.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: Mutex<(File, u64)>,
}

impl LogWriter {
    /// Opens (creates) the log of `name`.
    pub fn open(name: &str) -> Result<LogWriter> {
        let path = dir(name)?.join("log");
        let file = open_append(&path)?;
        let len = file.metadata().map_or(0, |m| m.len());
        Ok(LogWriter {
            path,
            file: Mutex::new((file, len)),
        })
    }

    /// Appends `data` from `stream` as entries, one per line; a last
    /// piece without a newline becomes an entry marked partial.
    pub fn append(&self, stream: Stream, data: &[u8]) {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(data.len() + 32);
        for piece in data.split_inclusive(|&b| b == b'\n') {
            let complete = piece.ends_with(b"\n");
            let tag = match (stream, complete) {
                (Stream::Out, true) => 'o',
                (Stream::Err, true) => 'e',
                (Stream::Out, false) => 'O',
                (Stream::Err, false) => 'E',
            };
            let _ = write!(out, "{}.{:09} {tag} ", t.as_secs(), t.subsec_nanos());
            out.extend_from_slice(piece);
            if !complete {
                out.push(b'\n');
            }
        }
        let mut g = isolate_core::sys::lock(&self.file);
        if g.1 + out.len() as u64 > LOG_MAX && g.1 > 0 {
            let _ = std::fs::rename(&self.path, self.path.with_extension("1"));
            if let Ok(f) = open_append(&self.path) {
                *g = (f, 0);
            }
        }
        if g.0.write_all(&out).is_ok() {
            g.1 += out.len() as u64;
        }
    }
}

fn open_append(path: &PathBuf) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("cannot open the log", path, e))
}

/// One entry of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When it was written: seconds and nanoseconds since the epoch.
    pub time: (u64, u32),
    /// Which stream.
    pub stream: Stream,
    /// The bytes, with their newline if the line was complete.
    pub data: Vec<u8>,
}

/// Parses one log line (without its newline); `None` for a malformed one.
pub fn parse_entry(line: &[u8]) -> Option<Entry> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let ts = std::str::from_utf8(&line[..sp]).ok()?;
    let (s, n) = ts.split_once('.')?;
    let rest = &line[sp + 1..];
    let (&tag, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ")?;
    let (stream, complete) = match tag {
        b'o' => (Stream::Out, true),
        b'e' => (Stream::Err, true),
        b'O' => (Stream::Out, false),
        b'E' => (Stream::Err, false),
        _ => return None,
    };
    let mut data = rest.to_vec();
    if complete {
        data.push(b'\n');
    }
    Some(Entry {
        time: (s.parse().ok()?, n.parse().ok()?),
        stream,
        data,
    })
}

/// Reads a log as it grows: what is there now (`log.1` first), then what
/// is appended, across a rotation.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    file: Option<BufReader<File>>,
    ino: u64,
    pos: u64,
    partial: Vec<u8>,
}

impl LogReader {
    /// Every entry there is now, and a reader positioned after them.
    pub fn open(name: &str) -> Result<(Vec<Entry>, LogReader)> {
        let path = dir(name)?.join("log");
        let mut entries = Vec::new();
        if let Ok(f) = File::open(path.with_extension("1")) {
            for line in BufReader::new(f).split(b'\n').map_while(|l| l.ok()) {
                entries.extend(parse_entry(&line));
            }
        }
        let mut r = LogReader {
            path,
            file: None,
            ino: 0,
            pos: 0,
            partial: Vec::new(),
        };
        entries.extend(r.more());
        Ok((entries, r))
    }

    /// Entries appended since the last call.
    pub fn more(&mut self) -> Vec<Entry> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        // Rotated (a new inode) or truncated: start over on the new file.
        if let Ok(m) = std::fs::metadata(&self.path) {
            if self.file.is_none() || m.ino() != self.ino || m.len() < self.pos {
                if let Ok(mut f) = File::open(&self.path) {
                    if self.file.is_some() {
                        // Finish the old file first.
                        out.extend(self.drain());
                    }
                    let _ = f.seek(SeekFrom::Start(0));
                    self.file = Some(BufReader::new(f));
                    self.ino = m.ino();
                    self.pos = 0;
                    self.partial.clear();
                }
            }
        }
        out.extend(self.drain());
        out
    }

    fn drain(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        let Some(f) = self.file.as_mut() else {
            return out;
        };
        let mut buf = Vec::new();
        if let Ok(n) = f.read_to_end(&mut buf) {
            self.pos += n as u64;
        }
        self.partial.extend_from_slice(&buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            out.extend(parse_entry(&line[..line.len() - 1]));
        }
        out
    }
}

/// `2026-12-01T04:05:06.123456789Z` for seconds and nanoseconds since the epoch.
pub fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The running workload's pid as its named record has it.
pub fn workload_pid(name: &str) -> Option<u32> {
    state::get_live(name).ok().map(|r| r.pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests that point `ISOLATE_STATE` somewhere run one at a time.
    static STATE_ENV: Mutex<()> = Mutex::new(());

    #[test]
    fn entries_round_trip_with_partial_lines() {
        let _one = isolate_core::sys::lock(&STATE_ENV);
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("ISOLATE_STATE", dir.path());
        let _claimed = claim("logtest").unwrap();
        let w = LogWriter::open("logtest").unwrap();
        w.append(Stream::Out, b"one\ntwo\npart");
        w.append(Stream::Err, b"err\n");
        let (entries, mut r) = LogReader::open("logtest").unwrap();
        let got: Vec<_> = entries.iter().map(|e| (e.stream, e.data.clone())).collect();
        assert_eq!(
            got,
            [
                (Stream::Out, b"one\n".to_vec()),
                (Stream::Out, b"two\n".to_vec()),
                (Stream::Out, b"part".to_vec()),
                (Stream::Err, b"err\n".to_vec()),
            ]
        );
        w.append(Stream::Out, b"later\n");
        assert_eq!(r.more()[0].data, b"later\n");
        assert!(r.more().is_empty());
    }

    #[test]
    fn a_name_is_claimed_once() {
        let _one = isolate_core::sys::lock(&STATE_ENV);
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("ISOLATE_STATE", dir.path());
        let held = claim("once").unwrap();
        assert!(matches!(claim("once"), Err(Error::NameInUse(_))));
        drop(held);
        // Left without a record (its supervisor died early): taken over.
        let again = claim("once").unwrap();
        let mut r = Record::new("once", Mode::Container, &[], &Limits::default());
        r.status = Status::Exited;
        write(&r).unwrap();
        drop(again);
        assert!(matches!(claim("once"), Err(Error::Invalid { .. })));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0, 5), "1970-01-01T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_764_561_906, 0), "2025-12-01T04:05:06.000000000Z");
    }
}
