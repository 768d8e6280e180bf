//! Relays between the caller's terminal and the container.
//!
//! A workload never holds a descriptor of the caller's terminal: with one,
//! it could push keystrokes into the caller's shell (`TIOCSTI`), change the
//! terminal's modes or read what the caller types after isolate has ended.
//! Each standard stream the caller gives isolate as a terminal reaches the
//! container as a pipe instead, and a thread of isolate copies bytes between
//! the two (as `docker run -i` without `-t` does). Streams that are not
//! terminals (pipes, files, `/dev/null`) are handed over as they are.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::thread::JoinHandle;

/// Size of one copy.
const CHUNK: usize = 16 << 10;

/// Whether descriptor `fd` of this process is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty takes a descriptor number and touches no memory.
    unsafe { libc::isatty(fd) == 1 }
}

/// The copying threads of one container.
#[derive(Debug, Default)]
pub struct Relays {
    /// Copies into the container (stdin); stopped through `stop`.
    input: Option<JoinHandle<()>>,
    /// Copies out of the container (stdout, stderr); they end at EOF.
    outputs: Vec<JoinHandle<()>>,
    /// Written to stop the input relay (an eventfd).
    stop: Option<OwnedFd>,
}

impl Relays {
    /// Copies what the caller types on its fd 0 into `to` (the write end of
    /// the container's stdin pipe) until stopped, the terminal ends, or the
    /// container closes its stdin.
    pub fn input(&mut self, to: File) -> std::io::Result<()> {
        // SAFETY: eventfd takes integers; the result is checked below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `efd` is a new descriptor this process owns alone.
        let stop = unsafe { OwnedFd::from_raw_fd(efd) };
        let stop_dup = stop.try_clone()?;
        self.stop = Some(stop);
        self.input = Some(std::thread::spawn(move || copy_input(to, stop_dup)));
        Ok(())
    }

    /// Copies everything from `from` (the read end of the container's
    /// stdout or stderr pipe) to this process's descriptor `to` until EOF.
    pub fn output(&mut self, from: File, to: RawFd) {
        self.outputs.push(std::thread::spawn(move || {
            // SAFETY: fds 1 and 2 of this process stay open for its life;
            // the borrow does not outlive this thread's copy.
            let to = unsafe { BorrowedFd::borrow_raw(to) };
            copy_output(from, to);
        }));
    }

    /// Waits until all output has reached the terminal and stops the input
    /// relay; called once the container has ended.
    pub fn finish(&mut self) {
        for t in self.outputs.drain(..) {
            let _ = t.join();
        }
        if let Some(stop) = self.stop.take() {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from `one` to an eventfd this owns.
            unsafe { libc::write(stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
        if let Some(t) = self.input.take() {
            let _ = t.join();
        }
    }
}

fn copy_input(mut to: File, stop: OwnedFd) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is an array of two valid pollfds for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents == 0 {
            continue;
        }
        // SAFETY: reads at most `buf.len()` bytes into `buf` from fd 0.
        let got = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        match got {
            0 => return, // end of input: the container's stdin closes
            n if n > 0 => {
                if to.write_all(&buf[..n as usize]).is_err() {
                    return; // the container closed its stdin
                }
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) {
                    return;
                }
            }
        }
    }
}

fn copy_output(mut from: File, to: BorrowedFd<'_>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut rest = &buf[..n];
                while !rest.is_empty() {
                    // SAFETY: writes at most `rest.len()` bytes from `rest`.
                    let w =
                        unsafe { libc::write(to.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
                    if w > 0 {
                        rest = &rest[w as usize..];
                    } else if std::io::Error::last_os_error().kind()
                        != std::io::ErrorKind::Interrupted
                    {
                        // The terminal is gone: keep draining so that the
                        // container is never blocked on a full pipe.
                        rest = &[];
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
