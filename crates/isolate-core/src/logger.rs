//! One logger for every isolate process, behind the `log` facade.
//!
//! Library code (and the rust-vmm crates isolate uses, e.g. `virtio-queue`)
//! logs through `log::{error, warn, info, debug, trace}!`. A program that
//! wants those lines installs this logger once; the `isolate` CLI does,
//! with the level from `ISOLATE_LOG` (`error`, `warn` (default), `info`,
//! `debug`, `trace`, `off`). The VMM process has an empty environment: the
//! VM isolator passes the level in its config. Lines go to stderr as
//! `PROGRAM: LEVEL target: message`.
//!
//! ```
//! isolate_core::logger::init("example", log::LevelFilter::Debug);
//! log::debug!("shown");
//! log::trace!("not shown");
//! ```

use std::io::Write;
use std::str::FromStr;

use log::{LevelFilter, Log, Metadata, Record};

/// The environment variable that sets the level.
pub const ENV: &str = "ISOLATE_LOG";

/// The level `ISOLATE_LOG` names: warn when unset; an unknown value is
/// warn too (and the logger says so once it is installed).
pub fn level_from_env() -> LevelFilter {
    std::env::var(ENV)
        .ok()
        .and_then(|v| parse_level(&v))
        .unwrap_or(LevelFilter::Warn)
}

/// Parses a level name (case-insensitive); `None` if unknown.
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    LevelFilter::from_str(name.trim()).ok()
}

struct Stderr {
    program: &'static str,
}

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // One write per line, so lines of several threads do not mix.
            let line = format!(
                "{}: {} {}: {}\n",
                self.program,
                record.level(),
                record.target(),
                record.args()
            );
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Installs the stderr logger at `level`, naming `program` on each line.
/// Only the first call in a process installs it; later calls only change
/// the level.
pub fn init(program: &'static str, level: LevelFilter) {
    let _ = log::set_boxed_logger(Box::new(Stderr { program }));
    log::set_max_level(level);
}

/// [`init`] at the level of `ISOLATE_LOG`.
pub fn init_from_env(program: &'static str) {
    init(program, level_from_env());
    if let Ok(v) = std::env::var(ENV) {
        if parse_level(&v).is_none() {
            log::warn!(
                "{ENV}={v:?} is not a level (error, warn, info, debug, trace, off); using warn"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_unknown_ones_do_not() {
        assert_eq!(parse_level("debug"), Some(LevelFilter::Debug));
        assert_eq!(parse_level(" TRACE "), Some(LevelFilter::Trace));
        assert_eq!(parse_level("off"), Some(LevelFilter::Off));
        assert_eq!(parse_level("loud"), None);
    }
}
