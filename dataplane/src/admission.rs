//! Per-app admission of requests that cost the store or S3 work, so one app cannot starve
//! the owner's other apps: each app (the owner without an app, and the owner's own
//! devices, count as one more) may have at most `query.app_concurrency` such requests in
//! flight and send `query.app_rate_per_sec` per second (bursts of twice that). Over
//! either bound the request is answered 429 with `Retry-After` and a message naming the
//! bound; nothing reaches the store.
//!
//! Admitted: the document routes, the blob routes and sync. Sync feeds that stay open
//! (`_changes` with `feed=continuous|longpoll`) count against the rate only: holding a
//! slot for minutes would let two live replications lock their app out.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Caller;
use crate::documents::settings::QuerySettings;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The key of requests made by the owner without acting as an app.
const OWNER_KEY: &str = "\u{0}owner";

/// Bounds in-flight and per-second document requests per app.
pub struct Admission {
    concurrency: u32,
    rate_per_sec: u32,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
    rate: DefaultKeyedRateLimiter<String>,
}

/// Held while a request runs; dropping it frees the app's slot.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
}

/// Which bound refused a request (for the metrics label and the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many requests in flight.
    Concurrency,
    /// Too many requests per second.
    Rate,
}

impl Refused {
    /// The bound's name, as in `query.<name>`.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Concurrency => "app_concurrency",
            Refused::Rate => "app_rate_per_sec",
        }
    }
}

impl Admission {
    /// Bounds from `settings`.
    pub fn new(settings: &QuerySettings) -> Self {
        let rate = NonZeroU32::new(settings.app_rate_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        Self {
            concurrency: settings.app_concurrency.max(1),
            rate_per_sec: rate.get(),
            in_flight: Mutex::new(HashMap::new()),
            rate: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// Admit one request of `app` (`None`: the owner without an app), or refuse it.
    pub fn admit(&self, app: Option<&str>) -> Result<Admitted, (Refused, ApiError)> {
        let key = app.unwrap_or(OWNER_KEY).to_string();
        let semaphore = {
            let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.concurrency as usize)))
                .clone()
        };
        let permit = semaphore.try_acquire_owned().map_err(|_| {
            (
                Refused::Concurrency,
                ApiError::TooManyRequests(format!(
                    "Too many requests of this app in flight; query.app_concurrency = {}.",
                    self.concurrency
                )),
            )
        })?;
        self.check_rate(&key)?;
        Ok(Admitted { _permit: permit })
    }

    /// Admit the start of a long-lived feed of `app`: counted against the rate only.
    pub fn admit_feed(&self, app: Option<&str>) -> Result<(), (Refused, ApiError)> {
        self.check_rate(app.unwrap_or(OWNER_KEY))
    }

    fn check_rate(&self, key: &str) -> Result<(), (Refused, ApiError)> {
        self.rate.check_key(&key.to_string()).map_err(|_| {
            (
                Refused::Rate,
                ApiError::TooManyRequests(format!(
                    "Too many requests of this app per second; query.app_rate_per_sec = {}.",
                    self.rate_per_sec
                )),
            )
        })
    }
}

/// Admit one request of the caller's app, or 429 (counted in the metrics by bound); the
/// permit is held until it is dropped, i.e. until the handler returns.
pub fn admit(state: &AppState, caller: &Caller) -> ApiResult<Admitted> {
    state
        .admission
        .admit(caller.app_id.as_deref())
        .map_err(|refused| refuse(state, refused))
}

/// Admit the start of a long-lived feed of the caller's app (rate only), or 429.
pub fn admit_feed(state: &AppState, caller: &Caller) -> ApiResult<()> {
    state
        .admission
        .admit_feed(caller.app_id.as_deref())
        .map_err(|refused| refuse(state, refused))
}

fn refuse(state: &AppState, (refused, error): (Refused, ApiError)) -> ApiError {
    state.metrics.query_refused(refused.label());
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(concurrency: u32, rate: u32) -> QuerySettings {
        QuerySettings {
            app_concurrency: concurrency,
            app_rate_per_sec: rate,
            ..QuerySettings::default()
        }
    }

    #[test]
    fn concurrency_is_per_app() {
        let admission = Admission::new(&settings(2, 1000));
        let a1 = admission.admit(Some("a")).unwrap();
        let _a2 = admission.admit(Some("a")).unwrap();
        let (why, error) = admission.admit(Some("a")).unwrap_err();
        assert_eq!(why, Refused::Concurrency);
        assert!(error.to_string().contains("query.app_concurrency = 2"));
        // Other apps and the owner are not affected.
        let _b = admission.admit(Some("b")).unwrap();
        let _owner = admission.admit(None).unwrap();
        drop(a1);
        assert!(admission.admit(Some("a")).is_ok());
    }

    #[test]
    fn feeds_take_no_slot_but_count_against_the_rate() {
        // Rate 2 per second: bursts of 4.
        let admission = Admission::new(&settings(1, 2));
        let _slot = admission.admit(Some("a")).unwrap();
        for _ in 0..3 {
            admission.admit_feed(Some("a")).unwrap();
        }
        let (why, _) = admission.admit_feed(Some("a")).unwrap_err();
        assert_eq!(why, Refused::Rate);
        assert!(admission.admit_feed(Some("b")).is_ok());
    }

    #[test]
    fn rate_is_per_app() {
        let admission = Admission::new(&settings(100, 5));
        for _ in 0..10 {
            admission.admit(Some("a")).unwrap();
        }
        let (why, error) = admission.admit(Some("a")).unwrap_err();
        assert_eq!(why, Refused::Rate);
        assert!(error.to_string().contains("query.app_rate_per_sec = 5"));
        assert!(admission.admit(Some("b")).is_ok());
    }
}
