//! Connection timeouts of the HTTP server (`VIBE_HTTP_*`).

use std::time::Duration;

use vibe_api::SettingError;
use vibe_api::dataplane_env as env;

/// How long a connection may stay silent and how long a request head may take.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// A connection with no request under way (new, or kept alive after a response) is
    /// closed when no byte of a next request arrives within this time
    /// (`VIBE_HTTP_IDLE_TIMEOUT_SECS`, 75).
    pub idle_timeout: Duration,
    /// Once the first byte of a request has arrived, its head (request line and headers)
    /// must be complete within this time, else the connection is closed
    /// (`VIBE_HTTP_HEADER_READ_TIMEOUT_SECS`, 10).
    pub header_read_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(75),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The `VIBE_HTTP_*` flags (with environment fallbacks), flattened into
/// [`crate::config::Cli`] and validated into [`HttpSettings`] by [`HttpArgs::resolve`].
#[derive(Clone, Debug, clap::Args)]
pub struct HttpArgs {
    /// Seconds a connection may wait for the first byte of its next request (a new
    /// connection, or one kept alive after a response) before it is closed. Running
    /// requests, streamed responses (sync feeds) and WebSockets are not affected.
    #[arg(
        long = "http-idle-timeout-secs",
        env = env::VIBE_HTTP_IDLE_TIMEOUT_SECS,
        default_value_t = 75
    )]
    pub http_idle_timeout_secs: u64,
    /// Seconds a request's head (request line and headers) may take from its first byte;
    /// a client sending it slower is disconnected.
    #[arg(
        long = "http-header-read-timeout-secs",
        env = env::VIBE_HTTP_HEADER_READ_TIMEOUT_SECS,
        default_value_t = 10
    )]
    pub http_header_read_timeout_secs: u64,
}

impl HttpArgs {
    /// Validate into [`HttpSettings`]: both timeouts between 1 s and one hour.
    pub fn resolve(&self) -> Result<HttpSettings, SettingError> {
        let check = |value: u64, setting: &'static str| {
            if (1..=3600).contains(&value) {
                Ok(Duration::from_secs(value))
            } else {
                Err(SettingError::new(
                    setting,
                    "must be between 1 and 3600 seconds",
                ))
            }
        };
        Ok(HttpSettings {
            idle_timeout: check(
                self.http_idle_timeout_secs,
                env::VIBE_HTTP_IDLE_TIMEOUT_SECS,
            )?,
            header_read_timeout: check(
                self.http_header_read_timeout_secs,
                env::VIBE_HTTP_HEADER_READ_TIMEOUT_SECS,
            )?,
        })
    }
}
