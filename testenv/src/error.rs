//! The one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while finding the tools or running the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool binary could not be found, and building it did not help (or was impossible).
    #[error("binary `{name}` not found (looked in: {searched}). {hint}")]
    MissingBinary {
        /// The binary's file name, e.g. `kube-apiserver`.
        name: String,
        /// Where it was looked for, in order.
        searched: String,
        /// How to get it.
        hint: String,
    },

    /// `tests/tools/build.sh` failed or printed something unusable.
    #[error("building the tools with {script} failed: {reason}")]
    Build {
        /// The script that was run.
        script: PathBuf,
        /// What went wrong (exit status and stderr tail).
        reason: String,
    },

    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Generating a certificate or key failed.
    #[error("generating {what}: {source}")]
    Cert {
        /// Which certificate or key.
        what: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },

    /// Talking to the API server failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },

    /// A kubeconfig could not be loaded.
    #[error("loading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// A component exited while the control plane was starting (or running).
    #[error("{component} exited ({status}); last lines of {log}:\n{tail}")]
    Exited {
        /// The component, e.g. `etcd`.
        component: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },

    /// A readiness condition did not become true in time.
    #[error("timed out after {secs:.1}s waiting for {what}{detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long was waited.
        secs: f64,
        /// The last observed error and relevant log tails, if any.
        detail: String,
    },

    /// Anything else (serialisation of generated config files, bad arguments).
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            context: context.into(),
            source,
        }
    }
}
