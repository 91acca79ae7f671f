//! The data plane as a process: start-up time, idle RSS, an RSS sampler, and the open-file
//! limit the realtime section needs.
//!
//! Memory figures come from `/proc/<pid>/status` of the data plane process (`VmRSS`: resident
//! now; `VmHWM`: the peak since the process started), so client memory never counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Bench, BenchError, Options};
use crate::stack::proc_status_kib;

/// What the process section measured.
#[derive(Debug, Clone, Default)]
pub struct ProcessResults {
    /// `VmRSS` 2 s after the last start, before any request but the probes, KiB.
    pub idle_rss_kib: Option<u64>,
    /// Spawn → first `/health` 200, per start.
    pub startup_health: Vec<Duration>,
    /// Spawn → first `/ready` 200 (CouchDB and S3 reachable), per start.
    pub startup_ready: Vec<Duration>,
}

/// Restart the data plane `options.startups` times, timing `/health` and `/ready`, then
/// read its idle RSS.
pub async fn run(bench: &mut Bench, options: &Options) -> Result<ProcessResults, BenchError> {
    let mut results = ProcessResults::default();
    for _ in 0..options.startups {
        bench.plane.stop().await;
        let spawned = Instant::now();
        bench.plane.restart().await?;
        results.startup_health.push(bench.plane.started_in);
        wait_ready(&bench.plane.url).await?;
        results.startup_ready.push(spawned.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    results.idle_rss_kib = bench.plane.rss_kib();
    eprintln!(
        "start-up /health {:.1} ms, /ready {:.1} ms (medians); idle RSS {} KiB",
        super::report::ms(super::load::median(&results.startup_health)),
        super::report::ms(super::load::median(&results.startup_ready)),
        results.idle_rss_kib.unwrap_or(0)
    );
    Ok(results)
}

/// Poll `/ready` every 5 ms until it answers 200 (at most 30 s).
pub async fn wait_ready(url: &str) -> Result<(), BenchError> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http
            .get(format!("{url}/ready"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Failed(
                "the data plane did not become ready within 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Raise this process's soft `RLIMIT_NOFILE` to its hard limit and return the limit now in
/// force. Child processes (the data plane, the servers) inherit it, so the data plane can
/// hold as many sockets as the harness opens.
pub fn raise_open_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// The soft "Max open files" of process `pid` (`/proc/<pid>/limits`).
pub fn open_file_limit_of(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// Samples `VmRSS` of one process every `every` in the background and keeps the largest.
pub struct RssSampler {
    max_kib: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Start sampling process `pid`.
    pub fn start(pid: u32, every: Duration) -> Self {
        let max_kib = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (max_kib, samples, stop) = (max_kib.clone(), samples.clone(), stop.clone());
            async move {
                let mut ticks = tokio::time::interval(every);
                while !stop.load(Ordering::Relaxed) {
                    ticks.tick().await;
                    if let Some(kib) = proc_status_kib(pid, "VmRSS:") {
                        max_kib.fetch_max(kib, Ordering::Relaxed);
                        samples.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self {
            max_kib,
            samples,
            stop,
            task,
        }
    }

    /// Stop; returns (largest sample in KiB, number of samples).
    pub async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.max_kib.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}
