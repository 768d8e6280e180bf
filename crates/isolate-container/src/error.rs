//! The container backend's own errors, each with the context a user needs.

use std::path::PathBuf;

/// What went wrong while preparing or running a container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A host-side system call failed.
    #[error("cannot {action}")]
    Host {
        /// What isolate was doing.
        action: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A step of the container's set-up (inside its namespaces) failed.
    #[error("container set-up failed: cannot {step}")]
    Setup {
        /// The step, e.g. `mount proc on /proc`.
        step: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The container's set-up process ended without saying why.
    #[error("container set-up process ended unexpectedly ({0})")]
    SetupDied(String),
    /// A named volume's image is in use by another running workload.
    #[error("named volume image {} is in use by another running workload", .0.display())]
    VolumeBusy(PathBuf),
    /// A named volume's file system failed its check before the host
    /// kernel would mount it.
    #[error(
        "named volume image {} is damaged (e2fsck -n -f: {detail}); a VM guest, which is \
         untrusted, may have written it: inspect it, then repair it with `e2fsck -f {}` or \
         remove it",
        .image.display(),
        .image.display()
    )]
    VolumeDamaged {
        /// The image.
        image: PathBuf,
        /// What e2fsck said.
        detail: String,
    },
    /// A capability name is not known.
    #[error(transparent)]
    UnknownCapability(#[from] isolate_policy::caps::UnknownCapability),
    /// The seccomp filter could not be built.
    #[error("cannot build the seccomp filter")]
    Seccomp(#[source] isolate_policy::seccomp::SeccompError),
    /// The cgroup of the container failed.
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// The workload's network could not be set up.
    #[error(transparent)]
    Net(#[from] isolate_net::NetError),
}

impl ContainerError {
    /// A host-side failure with the current `errno`.
    pub(crate) fn last_os(action: impl Into<String>) -> Self {
        ContainerError::Host {
            action: action.into(),
            source: std::io::Error::last_os_error(),
        }
    }

    /// A host-side failure with a given error.
    pub(crate) fn host(action: impl Into<String>, source: std::io::Error) -> Self {
        ContainerError::Host {
            action: action.into(),
            source,
        }
    }
}

impl From<ContainerError> for isolate_core::Error {
    fn from(e: ContainerError) -> Self {
        isolate_core::Error::Backend {
            backend: "container",
            source: Box::new(e),
        }
    }
}
