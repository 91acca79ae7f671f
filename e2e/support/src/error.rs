//! The one error type of this crate.

use std::path::PathBuf;
use std::time::Duration;

/// Why a test server could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// The server's executable is not installed.
    #[error(
        "{server} not found at {path} (set {env_var} to its path, or run deploy/local/install-servers)"
    )]
    MissingBinary {
        /// Which server or tool (`pouchdb-server`, `s3s-fs`, the PouchDB client).
        server: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The environment variable that overrides the location.
        env_var: &'static str,
    },

    /// A file-system or process operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The server process ended before it answered.
    #[error("{server} exited during start-up ({status}); last lines of {log}:\n{log_tail}")]
    Exited {
        /// Which server.
        server: &'static str,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        log_tail: String,
    },

    /// The server did not answer an authenticated request in time.
    #[error("{server} did not answer within {waited:?}; last lines of {log}:\n{log_tail}")]
    NotReady {
        /// Which server.
        server: &'static str,
        /// How long we waited.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        log_tail: String,
    },

    /// A setting of the external-CouchDB switch is missing or malformed.
    #[error("{name} {problem}")]
    Setting {
        /// The environment variable.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// A request to a running server failed or got an unexpected answer.
    #[error("{server}: {message}")]
    Request {
        /// Which server.
        server: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl SupportError {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let action = action.into();
        move |source| SupportError::Io { action, source }
    }
}
