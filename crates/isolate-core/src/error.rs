//! The errors of the contract: invalid workloads, unavailable backends, and
//! failures to start the workload.

use std::path::PathBuf;

/// Why a workload's command could not be started (docker's 126 and 127).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecFailure {
    /// The program does not exist in the root filesystem (exit code 127).
    NotFound,
    /// The program exists but cannot be executed (exit code 126).
    NotExecutable,
}

/// Errors every backend and the core can report.
///
/// [`Error::exit_code`] maps each to the exit code the CLI uses (docker's
/// convention: 125 for isolate's own errors, 126/127 for the command).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the [`Workload`](crate::Workload) is invalid.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, as a user knows it (`memory`, `volume /data`, ...).
        field: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The backend cannot run on this host.
    #[error("{backend} mode is not available on this host: {reason}")]
    Unavailable {
        /// `vm` or `container`.
        backend: &'static str,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A file isolate needs (kernel, rootfs, guest init) was not found.
    #[error("{what} not found: {hint}")]
    AssetNotFound {
        /// What is missing.
        what: &'static str,
        /// Where it was looked for and how to provide it.
        hint: String,
    },
    /// The workload's command could not be executed.
    #[error("{program}: {}", match .kind { ExecFailure::NotFound => "command not found in the root filesystem", ExecFailure::NotExecutable => "permission denied: not an executable" })]
    Exec {
        /// Not found or not executable.
        kind: ExecFailure,
        /// The program as given.
        program: String,
    },
    /// No running workload has this name.
    #[error("no workload named {0:?} is running")]
    NoSuchWorkload(String),
    /// A named workload with this name is already running.
    #[error("a workload named {0:?} is already running; choose another --name or stop it")]
    NameInUse(String),
    /// An operation on a host file failed.
    #[error("{action} {}", .path.display())]
    Io {
        /// What isolate was doing.
        action: &'static str,
        /// The file it was doing it to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The operation is not supported by this backend.
    #[error("{0}")]
    Unsupported(String),
    /// A backend-specific failure (its own error enum, with context).
    #[error("{backend} backend")]
    Backend {
        /// `vm` or `container`.
        backend: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Builds an [`Error::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The process exit code the CLI reports for this error: 127 and 126
    /// for a command not found / not executable, 125 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exec {
                kind: ExecFailure::NotFound,
                ..
            } => 127,
            Error::Exec {
                kind: ExecFailure::NotExecutable,
                ..
            } => 126,
            _ => 125,
        }
    }

    /// The whole error as one line: this error and its chain of sources
    /// (see [`chain`]).
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// Any error as one line: its message, then each source's after `": "`.
/// A source whose message the line already ends with is left out, so an
/// error that repeats its source in its own message (`"...: {0}"`) does
/// not print it twice.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Result of the contract's operations.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_failures_map_to_docker_codes() {
        let nf = Error::Exec {
            kind: ExecFailure::NotFound,
            program: "nope".into(),
        };
        let ne = Error::Exec {
            kind: ExecFailure::NotExecutable,
            program: "/etc/passwd".into(),
        };
        assert_eq!(nf.exit_code(), 127);
        assert_eq!(ne.exit_code(), 126);
        assert_eq!(Error::invalid("memory", "zero").exit_code(), 125);
    }

    #[test]
    fn chain_includes_sources_once() {
        let e = Error::io(
            "cannot read",
            "/x",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        let text = e.chain();
        assert!(text.starts_with("cannot read /x: "), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("mount failed")]
        Plain(#[source] std::io::Error),
        #[error("mount failed: {0}")]
        Repeats(#[source] std::io::Error),
    }

    #[test]
    fn chain_joins_each_source_once() {
        let enoent = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let plain = chain(&Outer::Plain(enoent()));
        let repeats = chain(&Outer::Repeats(enoent()));
        assert_eq!(plain, format!("mount failed: {}", enoent()));
        assert_eq!(repeats, plain);
    }
}
