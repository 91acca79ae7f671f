//! Limits and timings of the realtime endpoint.

use std::time::Duration;

use vibe_api::SettingError;
use vibe_api::dataplane_env as env;

use super::hub::HubSettings;

/// Realtime settings: [`RealtimeArgs`] (the `VIBE_WS_*` variables) sets the tunable ones.
#[derive(Clone, Debug)]
pub struct RealtimeSettings {
    /// Change-reader tuning (buffer size, heartbeat, backoff).
    pub hub: HubSettings,
    /// Time a socket has to send its `auth` frame (`VIBE_WS_AUTH_TIMEOUT_SECS`, 5).
    pub auth_timeout: Duration,
    /// Interval of server pings (`VIBE_WS_PING_INTERVAL_SECS`, 25).
    pub ping_interval: Duration,
    /// A socket silent (no frame, no pong) this long is closed: two ping intervals plus 10 s.
    pub idle_timeout: Duration,
    /// Largest client frame/message in bytes (`VIBE_WS_MAX_FRAME_BYTES`, 16384).
    pub max_frame_bytes: usize,
    /// Sustained client messages per second (`VIBE_WS_MAX_MESSAGES_PER_SEC`, 20).
    pub messages_per_sec: u32,
    /// Burst of client messages allowed above the rate (twice the rate).
    pub message_burst: u32,
    /// Subscriptions per socket (`VIBE_WS_MAX_SUBSCRIPTIONS`, 100).
    pub max_subscriptions: usize,
    /// Longest wait for one frame to be written to a client before it is dropped.
    pub send_timeout: Duration,
    /// How often an open socket re-checks its token (logout revokes a token's family).
    pub token_recheck: Duration,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        let ping_interval = Duration::from_secs(25);
        Self {
            hub: HubSettings::default(),
            auth_timeout: Duration::from_secs(5),
            ping_interval,
            idle_timeout: ping_interval * 2 + Duration::from_secs(10),
            max_frame_bytes: 16 * 1024,
            messages_per_sec: 20,
            message_burst: 40,
            max_subscriptions: 100,
            send_timeout: Duration::from_secs(10),
            token_recheck: Duration::from_secs(30),
        }
    }
}

/// The `VIBE_WS_*` flags (with environment fallbacks), flattened into
/// [`crate::config::Cli`] and validated into [`RealtimeSettings`] by [`RealtimeArgs::resolve`].
#[derive(Clone, Debug, clap::Args)]
pub struct RealtimeArgs {
    /// Seconds a WebSocket has to send its `auth` frame (when not authenticated by query).
    #[arg(
        long = "ws-auth-timeout-secs",
        env = env::VIBE_WS_AUTH_TIMEOUT_SECS,
        default_value_t = 5
    )]
    pub ws_auth_timeout_secs: u64,
    /// Seconds between server pings; a socket silent for two intervals plus 10 s is closed.
    #[arg(
        long = "ws-ping-interval-secs",
        env = env::VIBE_WS_PING_INTERVAL_SECS,
        default_value_t = 25
    )]
    pub ws_ping_interval_secs: u64,
    /// Largest client frame or message in bytes (larger → close 1009); at least 256.
    #[arg(long = "ws-max-frame-bytes", env = env::VIBE_WS_MAX_FRAME_BYTES, default_value_t = 16 * 1024)]
    pub ws_max_frame_bytes: usize,
    /// Sustained client messages per second per socket (bursts of twice that; more → close 4029).
    #[arg(
        long = "ws-max-messages-per-sec",
        env = env::VIBE_WS_MAX_MESSAGES_PER_SEC,
        default_value_t = 20
    )]
    pub ws_max_messages_per_sec: u32,
    /// Subscriptions per socket.
    #[arg(
        long = "ws-max-subscriptions",
        env = env::VIBE_WS_MAX_SUBSCRIPTIONS,
        default_value_t = 100
    )]
    pub ws_max_subscriptions: usize,
    /// Change events buffered per database; a socket further behind is closed (4008). At least 16.
    #[arg(
        long = "ws-buffer-events",
        env = env::VIBE_WS_BUFFER_EVENTS,
        default_value_t = 1024
    )]
    pub ws_buffer_events: usize,
}

impl RealtimeArgs {
    /// Validate the flags into settings (defaults for everything they do not cover).
    pub fn resolve(&self) -> Result<RealtimeSettings, SettingError> {
        fn at_least<T: PartialOrd + std::fmt::Display>(
            setting: &'static str,
            value: T,
            min: T,
        ) -> Result<T, SettingError> {
            if value >= min {
                Ok(value)
            } else {
                Err(SettingError {
                    setting,
                    problem: format!("must be at least {min}"),
                })
            }
        }
        let defaults = RealtimeSettings::default();
        let ping_interval = Duration::from_secs(at_least(
            env::VIBE_WS_PING_INTERVAL_SECS,
            self.ws_ping_interval_secs,
            1,
        )?);
        let messages_per_sec = at_least(
            env::VIBE_WS_MAX_MESSAGES_PER_SEC,
            self.ws_max_messages_per_sec,
            1,
        )?;
        Ok(RealtimeSettings {
            hub: HubSettings {
                capacity: at_least(env::VIBE_WS_BUFFER_EVENTS, self.ws_buffer_events, 16)?,
                ..defaults.hub
            },
            auth_timeout: Duration::from_secs(at_least(
                env::VIBE_WS_AUTH_TIMEOUT_SECS,
                self.ws_auth_timeout_secs,
                1,
            )?),
            ping_interval,
            idle_timeout: ping_interval * 2 + Duration::from_secs(10),
            max_frame_bytes: at_least(env::VIBE_WS_MAX_FRAME_BYTES, self.ws_max_frame_bytes, 256)?,
            messages_per_sec,
            message_burst: messages_per_sec.saturating_mul(2),
            max_subscriptions: at_least(
                env::VIBE_WS_MAX_SUBSCRIPTIONS,
                self.ws_max_subscriptions,
                1,
            )?,
            ..defaults
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        realtime: RealtimeArgs,
    }

    fn resolve(args: &[&str]) -> Result<RealtimeSettings, SettingError> {
        let mut all = vec!["test"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all)
            .expect("parses")
            .realtime
            .resolve()
    }

    #[test]
    fn defaults_match_the_settings_defaults() {
        let resolved = resolve(&[]).unwrap();
        let defaults = RealtimeSettings::default();
        assert_eq!(resolved.auth_timeout, defaults.auth_timeout);
        assert_eq!(resolved.ping_interval, defaults.ping_interval);
        assert_eq!(resolved.idle_timeout, defaults.idle_timeout);
        assert_eq!(resolved.max_frame_bytes, defaults.max_frame_bytes);
        assert_eq!(resolved.messages_per_sec, defaults.messages_per_sec);
        assert_eq!(resolved.message_burst, defaults.message_burst);
        assert_eq!(resolved.max_subscriptions, defaults.max_subscriptions);
        assert_eq!(resolved.hub.capacity, defaults.hub.capacity);
    }

    #[test]
    fn values_are_applied_and_out_of_range_ones_named() {
        let s = resolve(&[
            "--ws-ping-interval-secs",
            "3",
            "--ws-max-messages-per-sec",
            "7",
        ])
        .unwrap();
        assert_eq!(s.idle_timeout, Duration::from_secs(16));
        assert_eq!(s.message_burst, 14);
        for (flag, value, setting) in [
            ("--ws-max-frame-bytes", "255", "VIBE_WS_MAX_FRAME_BYTES"),
            ("--ws-buffer-events", "15", "VIBE_WS_BUFFER_EVENTS"),
            ("--ws-ping-interval-secs", "0", "VIBE_WS_PING_INTERVAL_SECS"),
            ("--ws-auth-timeout-secs", "0", "VIBE_WS_AUTH_TIMEOUT_SECS"),
            ("--ws-max-subscriptions", "0", "VIBE_WS_MAX_SUBSCRIPTIONS"),
            (
                "--ws-max-messages-per-sec",
                "0",
                "VIBE_WS_MAX_MESSAGES_PER_SEC",
            ),
        ] {
            assert_eq!(resolve(&[flag, value]).unwrap_err().setting, setting);
        }
    }
}
