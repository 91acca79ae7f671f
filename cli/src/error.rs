//! The one error type of the client library, [`ClientError`]. The CLI prints it as one
//! line (`error: …`) or, with `--json`, as `{"error":…,"status":…}`.

use serde_json::Value;

/// Everything that can go wrong talking to a Vibe Cloud instance.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The instance answered with an error status; `message` is its `error` field
    /// (plus `details` when present).
    #[error("{status} {message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// Human-readable message from the instance.
        message: String,
        /// The whole JSON error body (`{error, details?}`), or `null`.
        body: Value,
    },
    /// The instance (or a presigned storage URL) could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// What we tried to reach (no query string, so no signatures leak).
        url: String,
        /// Why (connection refused, timeout, …).
        reason: String,
    },
    /// The instance answered something this client does not understand.
    #[error("unexpected response from {what}: {problem}")]
    InvalidResponse {
        /// Which call.
        what: String,
        /// What was wrong with the answer.
        problem: String,
    },
    /// A command needs a login first.
    #[error("not logged in to {instance}: run `vibe login` first")]
    NotLoggedIn {
        /// Instance URL.
        instance: String,
    },
    /// The stored session can no longer be refreshed.
    #[error("the session for {instance} has expired or was revoked: run `vibe login` again")]
    SessionExpired {
        /// Instance URL.
        instance: String,
    },
    /// A key file problem (missing, unreadable, too open, not a key).
    #[error("key: {0}")]
    Key(String),
    /// Bad input given to the client (a flag, a file, JSON).
    #[error("{0}")]
    Usage(String),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The WebSocket failed or the server closed it.
    #[error("realtime: {0}")]
    Realtime(String),
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The message of an [`ClientError::Api`] error (the instance's `error` field).
    pub fn api_message(&self) -> Option<&str> {
        match self {
            ClientError::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        ClientError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// Map a transport error, naming the URL without its query (presigned URLs carry
    /// signatures in the query).
    pub(crate) fn transport(url: &url::Url, error: reqwest::Error) -> Self {
        let mut shown = url.clone();
        shown.set_query(None);
        let reason = if error.is_timeout() {
            "timed out".to_string()
        } else if error.is_connect() {
            "connection failed (is the instance running?)".to_string()
        } else {
            // reqwest errors may carry the URL; strip it to keep signatures out.
            let mut causes = String::new();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                causes.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            format!("{}{causes}", error.without_url())
        };
        ClientError::Unreachable {
            url: shown.to_string(),
            reason,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
