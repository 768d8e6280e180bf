//! The OCI runtime's errors, each naming what failed and what to do.

use std::path::PathBuf;

/// What went wrong in a runc verb.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// A part of the bundle's config.json that isolate does not support.
    #[error("config.json: {field} is not supported by isolate: {why}")]
    Unsupported {
        /// The field, as the spec names it (`linux.uidMappings`).
        field: String,
        /// Why, and what to do instead.
        why: String,
    },
    /// A value in config.json that is wrong.
    #[error("config.json: {field}: {why}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// The bundle's config.json cannot be read.
    #[error("cannot read the bundle's config {}: {detail}", .path.display())]
    Config {
        /// Its path.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// No container of that id.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// A container of that id already exists.
    #[error("container {0} already exists; delete it first")]
    Exists(String),
    /// The verb needs the container in another state.
    #[error("container {id} is {status}: cannot {verb} it{hint}")]
    WrongState {
        /// The container.
        id: String,
        /// Its status.
        status: &'static str,
        /// The verb.
        verb: &'static str,
        /// What to do.
        hint: &'static str,
    },
    /// A host-side operation failed.
    #[error("cannot {action}")]
    Io {
        /// What isolate was doing (with the path).
        action: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The container backend failed.
    #[error(transparent)]
    Isolate(#[from] isolate_core::Error),
}

impl OciError {
    /// An unsupported field.
    pub fn unsupported(field: impl Into<String>, why: impl Into<String>) -> Self {
        OciError::Unsupported {
            field: field.into(),
            why: why.into(),
        }
    }

    /// An invalid field.
    pub fn invalid(field: impl Into<String>, why: impl Into<String>) -> Self {
        OciError::Invalid {
            field: field.into(),
            why: why.into(),
        }
    }

    /// A host-side failure.
    pub fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        OciError::Io {
            action: action.into(),
            source,
        }
    }
}

/// Results of this crate.
pub type Result<T, E = OciError> = std::result::Result<T, E>;
