//! Per-client-address token buckets for the endpoints that cost the provider something
//! (register, login, refresh, claims).
//!
//! The client address is the TCP peer, or — behind the provider's ingress, when
//! `--trust-forwarded-for` is set — the last address the ingress appended to
//! `X-Forwarded-For` (earlier entries are client-controlled and ignored).

use super::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most addresses tracked at once; the stalest are forgotten beyond this.
const MAX_TRACKED: usize = 100_000;

/// A token bucket per client address.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    burst: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    trust_forwarded_for: bool,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// Allows `burst` requests at once and `per_minute` sustained, per address.
    pub fn new(per_minute: u32, burst: u32, trust_forwarded_for: bool) -> Self {
        Self {
            per_minute: per_minute.max(1),
            burst: burst.max(1),
            buckets: Mutex::new(HashMap::new()),
            trust_forwarded_for,
        }
    }

    /// Takes one token for `addr` at `now`; `Err(wait)` when the bucket is empty.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(self.per_minute) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&addr) {
            let full_after = Duration::from_secs_f64(f64::from(self.burst) / rate);
            buckets.retain(|_, b| now.duration_since(b.updated) < full_after);
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(addr).or_insert(Bucket {
            tokens: f64::from(self.burst),
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(f64::from(self.burst));
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// The address a request is counted against.
    pub fn client_addr(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        if self.trust_forwarded_for
            && let Some(last) = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|part| part.trim().parse::<IpAddr>().ok())
                .next_back()
        {
            return Some(last);
        }
        peer.map(|p| p.ip())
    }
}

/// Middleware refusing requests over the limit with 429 and `Retry-After`.
pub async fn limit(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if let Some(addr) = limiter.client_addr(peer, request.headers())
        && let Err(wait) = limiter.check(addr, Instant::now())
    {
        return Err(ApiError::RateLimited {
            retry_after_seconds: wait.as_secs().max(1),
        });
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_configured_rate() {
        let limiter = RateLimiter::new(60, 3, false);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(a, t0).is_ok());
        }
        let wait = limiter.check(a, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(
            limiter.check(b, t0).is_ok(),
            "other addresses have their own bucket"
        );
        assert!(limiter.check(a, t0 + Duration::from_millis(1100)).is_ok());
        assert!(limiter.check(a, t0 + Duration::from_millis(1100)).is_err());
    }

    #[test]
    fn forwarded_for_is_used_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        let peer: SocketAddr = "10.0.0.9:1234".parse().unwrap();
        let trusting = RateLimiter::new(1, 1, true);
        assert_eq!(
            trusting.client_addr(Some(peer), &headers),
            Some("2.2.2.2".parse().unwrap())
        );
        let direct = RateLimiter::new(1, 1, false);
        assert_eq!(direct.client_addr(Some(peer), &headers), Some(peer.ip()));
    }
}
