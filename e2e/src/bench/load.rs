//! The closed-loop load generator and the latency statistics every section uses.
//!
//! [`closed_loop`] runs `clients` tasks for a fixed time; each sends one request, waits for
//! the whole answer, records its latency and sends the next. Throughput is completed
//! requests per second of the cell; p50/p99 are exact (nearest-rank) percentiles of every
//! request's latency.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Nearest-rank percentile `p` (0–100) of ascending `sorted`; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of `values` (any order); zero when empty.
pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    percentile(&sorted, 50.0)
}

/// Median of floating-point `values` (any order, NaN-free); zero when empty.
pub fn median_f64(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Latency distribution of many samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl Latency {
    /// The distribution of `samples` (sorted in place).
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        Self {
            count: samples.len(),
            p50: percentile(samples, 50.0),
            p99: percentile(samples, 99.0),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// What one closed-loop cell measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadStats {
    /// Concurrent clients.
    pub clients: usize,
    /// Completed requests per second (failed ones included).
    pub per_sec: f64,
    /// Latencies of all requests.
    pub latency: Latency,
    /// Requests that failed (transport error or non-success status).
    pub errors: usize,
}

/// Runs `clients` concurrent loops of `op` for `seconds`, after a short warm-up (one
/// request per client, at most 8). `op(n)` gets a run-wide sequence number and answers
/// whether the request succeeded.
pub async fn closed_loop<F, Fut>(clients: usize, seconds: f64, op: F) -> LoadStats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let sequence = Arc::new(AtomicUsize::new(0));
    for _ in 0..clients.min(8) {
        op(sequence.fetch_add(1, Ordering::Relaxed)).await;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let op = op.clone();
        let sequence = sequence.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let n = sequence.fetch_add(1, Ordering::Relaxed);
                let at = Instant::now();
                let ok = op(n).await;
                latencies.push(at.elapsed());
                errors += usize::from(!ok);
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        match task.await {
            Ok((l, e)) => {
                latencies.extend(l);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    LoadStats {
        clients,
        per_sec: latencies.len() as f64 / elapsed,
        latency: Latency::of(&mut latencies),
        errors,
    }
}

/// Sends `request` and reads the whole answer; true on a success status.
pub async fn succeeded(request: reqwest::RequestBuilder) -> bool {
    match request.send().await {
        Ok(response) => {
            let ok = response.status().is_success();
            ok & response.bytes().await.is_ok()
        }
        Err(_) => false,
    }
}
