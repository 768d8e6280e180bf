//! Terminals on the host side of a `--tty` workload: the caller's terminal
//! in raw mode for as long as a [`RawMode`] guard lives (restored on drop,
//! whatever ended the run), window sizes read from it and written to a
//! pty master, and the [`Relay`] that copies bytes between the two.
//!
//! Where the pty comes from is the backend's business (container mode
//! allocates it from the container's own devpts instance, so that the
//! workload never holds a descriptor of the host's); this module only
//! needs the master's descriptor. The OCI runtime's `--console-socket`
//! hands the same master to another process instead of relaying it.
//!
//! ```no_run
//! use isolate_core::pty::{self, RawMode, Relay};
//! # fn master() -> std::fs::File { unimplemented!() }
//! let master = master();
//! if let Some(size) = pty::window_size(0) {
//!     pty::set_window_size(&master, size).unwrap();
//! }
//! let _raw = RawMode::enter(0).unwrap(); // restored when dropped
//! let relay = Relay::start(master).unwrap();
//! // ... wait for the workload ...
//! relay.finish();
//! ```

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread::JoinHandle;

/// Errors of terminal handling on the host.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    /// A terminal operation on descriptor `fd` failed.
    #[error("cannot {action} (descriptor {fd})")]
    Terminal {
        /// What isolate was doing, e.g. "read the terminal's settings".
        action: &'static str,
        /// The descriptor.
        fd: RawFd,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl From<PtyError> for crate::Error {
    fn from(e: PtyError) -> Self {
        let PtyError::Terminal { action, source, .. } = e;
        crate::Error::Io {
            action,
            path: "the terminal".into(),
            source,
        }
    }
}

fn last_os(action: &'static str, fd: RawFd) -> PtyError {
    PtyError::Terminal {
        action,
        fd,
        source: std::io::Error::last_os_error(),
    }
}

/// A terminal's window size: rows and columns (pixels are copied along).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
    /// Width in pixels (0 when unknown).
    pub xpixel: u16,
    /// Height in pixels (0 when unknown).
    pub ypixel: u16,
}

impl From<libc::winsize> for WindowSize {
    fn from(w: libc::winsize) -> Self {
        WindowSize {
            rows: w.ws_row,
            cols: w.ws_col,
            xpixel: w.ws_xpixel,
            ypixel: w.ws_ypixel,
        }
    }
}

impl From<WindowSize> for libc::winsize {
    fn from(w: WindowSize) -> Self {
        libc::winsize {
            ws_row: w.rows,
            ws_col: w.cols,
            ws_xpixel: w.xpixel,
            ws_ypixel: w.ypixel,
        }
    }
}

/// Whether descriptor `fd` of this process is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty takes a descriptor number and touches no memory.
    unsafe { libc::isatty(fd) == 1 }
}

/// The window size of the terminal on `fd`, if it is one.
pub fn window_size(fd: RawFd) -> Option<WindowSize> {
    // SAFETY: winsize is plain data, filled by the kernel below.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize to the pointer, valid for the call.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0).then(|| ws.into())
}

/// Sets the window size of the pty behind `master`; the kernel sends
/// SIGWINCH to the pty's foreground process group.
pub fn set_window_size(master: &impl AsRawFd, size: WindowSize) -> Result<(), PtyError> {
    let ws: libc::winsize = size.into();
    let fd = master.as_raw_fd();
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, valid for the call.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(last_os("set the window size", fd));
    }
    Ok(())
}

/// The caller's terminal in raw mode (no echo, no line editing, no signal
/// keys: ctrl-C reaches the workload's pty as a byte) until dropped, which
/// puts back the exact settings it found.
#[derive(Debug)]
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Puts the terminal on `fd` in raw mode.
    pub fn enter(fd: RawFd) -> Result<RawMode, PtyError> {
        // SAFETY: termios is plain data, filled by tcgetattr below.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes one termios to the pointer, valid for the call.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(last_os("read the terminal's settings", fd));
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the termios it is given in place.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: tcsetattr reads one termios from the pointer, valid for the call.
        if unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &raw) } != 0 {
            return Err(last_os("put the terminal in raw mode", fd));
        }
        restore_on_panic(fd, saved);
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        *crate::sys::lock(&SAVED) = None;
        // SAFETY: tcsetattr reads `saved`, the settings read in `enter`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
    }
}

/// The settings to put back if isolate panics while a terminal is raw
/// (release builds abort on panic, so no `Drop` runs then).
static SAVED: std::sync::Mutex<Option<(RawFd, libc::termios)>> = std::sync::Mutex::new(None);

fn restore_on_panic(fd: RawFd, saved: libc::termios) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    *crate::sys::lock(&SAVED) = Some((fd, saved));
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut g) = SAVED.try_lock() {
                if let Some((fd, t)) = g.take() {
                    // SAFETY: tcsetattr reads `t`, a copy of the saved settings.
                    unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &t) };
                }
            }
            previous(info);
        }));
    });
}

/// Size of one copy.
const CHUNK: usize = 16 << 10;

/// Copies the caller's fd 0 into a pty master and the master's output to
/// the caller's fd 1, on two threads.
#[derive(Debug)]
pub struct Relay {
    input: JoinHandle<()>,
    output: JoinHandle<()>,
    stop: OwnedFd,
}

impl Relay {
    /// Starts both directions over `master`.
    pub fn start(master: File) -> std::io::Result<Relay> {
        // SAFETY: eventfd takes integers; the result is checked below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `efd` is a new descriptor this process owns alone.
        let stop = unsafe { OwnedFd::from_raw_fd(efd) };
        let stop_in = stop.try_clone()?;
        let to = master.try_clone()?;
        let input = std::thread::spawn(move || copy_input(to, stop_in));
        let output = std::thread::spawn(move || copy_output(master));
        Ok(Relay {
            input,
            output,
            stop,
        })
    }

    /// Waits until the pty's output has all reached fd 1 (the master reads
    /// end-of-file or `EIO` once every slave descriptor is closed, i.e. the
    /// workload has ended) and stops the input side.
    pub fn finish(self) {
        let _ = self.output.join();
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to an eventfd this owns.
        unsafe { libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        let _ = self.input.join();
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
            // The caller's input ended: the pty gets its end-of-file
            // character, as a terminal would on ctrl-D.
            0 => {
                let _ = to.write_all(&[4]);
                return;
            }
            n if n > 0 => {
                if to.write_all(&buf[..n as usize]).is_err() {
                    return;
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

fn copy_output(master: File) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        // SAFETY: reads at most `buf.len()` bytes into `buf` from the master.
        let got = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return; // EIO: no slave is open any more
        }
        if got == 0 {
            return;
        }
        let mut rest = &buf[..got as usize];
        while !rest.is_empty() {
            // SAFETY: writes at most `rest.len()` bytes from `rest` to fd 1.
            let w = unsafe { libc::write(1, rest.as_ptr().cast(), rest.len()) };
            if w > 0 {
                rest = &rest[w as usize..];
            } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                rest = &[]; // the caller's terminal is gone: keep draining
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pty pair of this process: (master, slave).
    fn openpty() -> (File, File) {
        let (mut m, mut s) = (-1, -1);
        // SAFETY: openpty writes two descriptors; null name/termios/size are allowed.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: openpty returned two new descriptors nothing else owns.
        unsafe { (File::from_raw_fd(m), File::from_raw_fd(s)) }
    }

    fn lflag(fd: RawFd) -> libc::tcflag_t {
        // SAFETY: plain data filled by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer for the call.
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
        t.c_lflag
    }

    #[test]
    fn raw_mode_is_restored_on_drop() {
        let (_m, s) = openpty();
        let before = lflag(s.as_raw_fd());
        assert_ne!(before & libc::ECHO, 0);
        {
            let _raw = RawMode::enter(s.as_raw_fd()).unwrap();
            let during = lflag(s.as_raw_fd());
            assert_eq!(during & (libc::ECHO | libc::ICANON | libc::ISIG), 0);
        }
        assert_eq!(lflag(s.as_raw_fd()), before);
    }

    #[test]
    fn window_size_round_trips_through_the_master() {
        let (m, s) = openpty();
        let size = WindowSize {
            rows: 33,
            cols: 101,
            xpixel: 0,
            ypixel: 0,
        };
        set_window_size(&m, size).unwrap();
        assert_eq!(window_size(s.as_raw_fd()), Some(size));
        assert_eq!(window_size(-1), None);
    }
}
