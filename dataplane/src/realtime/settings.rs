//! Limits and timings of the realtime endpoint.

use std::time::Duration;

use super::hub::HubSettings;

/// Realtime settings. [`RealtimeSettings::from_env`] reads the `VIBE_WS_*` variables.
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

impl RealtimeSettings {
    /// Defaults overridden by `VIBE_WS_*` environment variables; names the bad one on error.
    pub fn from_env() -> Result<Self, String> {
        let mut s = Self::default();
        fn read<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{name}: not a valid number")),
                Err(_) => Ok(None),
            }
        }
        if let Some(secs) = read::<u64>("VIBE_WS_AUTH_TIMEOUT_SECS")? {
            s.auth_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = read::<u64>("VIBE_WS_PING_INTERVAL_SECS")? {
            s.ping_interval = Duration::from_secs(secs.max(1));
            s.idle_timeout = s.ping_interval * 2 + Duration::from_secs(10);
        }
        if let Some(bytes) = read::<usize>("VIBE_WS_MAX_FRAME_BYTES")? {
            s.max_frame_bytes = bytes.max(256);
        }
        if let Some(rate) = read::<u32>("VIBE_WS_MAX_MESSAGES_PER_SEC")? {
            s.messages_per_sec = rate.max(1);
            s.message_burst = s.messages_per_sec * 2;
        }
        if let Some(max) = read::<usize>("VIBE_WS_MAX_SUBSCRIPTIONS")? {
            s.max_subscriptions = max.max(1);
        }
        if let Some(events) = read::<usize>("VIBE_WS_BUFFER_EVENTS")? {
            s.hub.capacity = events.max(16);
        }
        Ok(s)
    }
}
