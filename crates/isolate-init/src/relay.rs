//! The workload's stdout and stderr, relayed to their ports through pipes.
//!
//! Every write to a virtio console port costs the guest one exit to the
//! VMM, whatever its size. A workload writing its ports itself pays that
//! per write (`yes | head` writes a few bytes at a time: about 1 KiB/s under
//! nested emulation); through a pipe, the init moves whatever has piled up
//! in one write of up to [`CHUNK`] bytes, which the port splits into
//! page-sized transfers. The workload sees a pipe, as in container mode
//! when isolate's own output is not a terminal.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Most bytes moved per read of a pipe.
pub const CHUNK: usize = 64 * 1024;
/// Pipe capacity asked for: the workload may run this far ahead of the port.
const PIPE_SIZE: i32 = 1 << 20;

/// One output stream: the read end of the workload's pipe, until the last
/// writer closes it.
#[derive(Debug)]
pub struct Output {
    pipe: Option<OwnedFd>,
    /// Whether writing to the port failed (what follows is read and dropped,
    /// so the workload never blocks on a dead port).
    broken: bool,
}

impl Output {
    /// A pipe for one stream: the relay (read end, non-blocking) and the
    /// write end, for the workload.
    pub fn pipe() -> Result<(Output, OwnedFd), Errno> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        fcntl(r.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        // A larger pipe is an optimisation only; the default 64 KiB works.
        let _ = fcntl(r.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        Ok((
            Output {
                pipe: Some(r),
                broken: false,
            },
            w,
        ))
    }

    /// Closes the read end: writers get `EPIPE` (and `SIGPIPE`) from now on.
    pub fn close(&mut self) {
        self.pipe = None;
    }

    /// The read end, to poll, while some writer may still write.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.pipe.as_ref().map(AsFd::as_fd)
    }

    /// Moves what the pipe holds now to `port`, at most four buffers' worth
    /// (so that a writer keeping pace cannot starve the init's other work).
    /// Returns the bytes moved; the pipe is closed at end of file (every
    /// writer gone).
    pub fn pump(&mut self, port: &mut File, buf: &mut [u8]) -> usize {
        let mut moved = 0;
        while let Some(fd) = &self.pipe {
            match nix::unistd::read(fd.as_raw_fd(), buf) {
                Ok(0) => self.pipe = None,
                Ok(n) => {
                    moved += n;
                    if !self.broken && port.write_all(&buf[..n]).is_err() {
                        self.broken = true;
                    }
                    if n < buf.len() || moved >= 4 * buf.len() {
                        break;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(_) => self.pipe = None,
            }
        }
        moved
    }

    /// Moves everything left to `port`, once no process may write any more
    /// (the workload and everything it started are gone): until end of file,
    /// or until nothing arrived for `quiet` (a writer that escaped the kill).
    pub fn drain(&mut self, port: &mut File, buf: &mut [u8], quiet: Duration) {
        let mut last = Instant::now();
        while let Some(fd) = self.fd() {
            let left = quiet.saturating_sub(last.elapsed());
            if left.is_zero() {
                self.pipe = None;
                return;
            }
            let ms = left.as_millis().min(u16::MAX as u128) as u16;
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Err(_) => self.pipe = None,
                Ok(_) => {
                    if self.pump(port, buf) > 0 {
                        last = Instant::now();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    fn sink() -> File {
        tempfile::tempfile().unwrap()
    }

    fn contents(mut f: File) -> Vec<u8> {
        let mut v = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn many_small_writes_arrive_in_order_and_whole() {
        let (mut out, w) = Output::pipe().unwrap();
        let mut port = sink();
        let mut buf = vec![0u8; CHUNK];
        let mut want = Vec::new();
        let mut w = File::from(w);
        for i in 0..5000u32 {
            let line = format!("{i}\n");
            w.write_all(line.as_bytes()).unwrap();
            want.extend_from_slice(line.as_bytes());
            if i % 997 == 0 {
                out.pump(&mut port, &mut buf);
            }
        }
        drop(w);
        out.drain(&mut port, &mut buf, Duration::from_secs(5));
        assert!(out.fd().is_none(), "end of file closes the relay");
        assert_eq!(contents(port), want);
    }

    #[test]
    fn pump_never_blocks_on_an_empty_pipe() {
        let (mut out, _w) = Output::pipe().unwrap();
        let mut port = sink();
        let mut buf = vec![0u8; 16];
        assert_eq!(out.pump(&mut port, &mut buf), 0);
        assert!(out.fd().is_some(), "a writer is still there");
    }

    #[test]
    fn drain_gives_up_on_a_writer_that_stays() {
        let (mut out, w) = Output::pipe().unwrap();
        let mut port = sink();
        let mut buf = vec![0u8; 16];
        nix::unistd::write(&w, b"last words").unwrap();
        let t = Instant::now();
        out.drain(&mut port, &mut buf, Duration::from_millis(100));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(out.fd().is_none());
        assert_eq!(contents(port), b"last words");
        drop(w);
    }

    #[test]
    fn a_dead_port_still_empties_the_pipe() {
        let (mut out, w) = Output::pipe().unwrap();
        // A read-only file: every write to it fails.
        let path = tempfile::NamedTempFile::new().unwrap();
        let mut port = File::open(path.path()).unwrap();
        let mut buf = vec![0u8; 1024];
        let mut w = File::from(w);
        w.write_all(&[7u8; 4096]).unwrap();
        assert_eq!(out.pump(&mut port, &mut buf), 4096);
        drop(w);
        out.drain(&mut port, &mut buf, Duration::from_secs(1));
        assert!(out.fd().is_none());
    }
}
