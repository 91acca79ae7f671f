//! Realtime: for each N, N WebSockets on `/ws` authenticate by their first frame and
//! subscribe to one collection; the data plane's RSS growth divided by N is the memory per
//! idle socket. Then documents are written through `POST /api/v1/data/write` while every
//! socket listens, and for every (write, socket) pair the time from sending the write to the
//! push arriving on that socket is recorded (one monotonic clock: the sockets live in this
//! process; the data plane is its own process, so its RSS excludes them).
//!
//! Each N gets a freshly restarted data plane, warmed by one socket that receives one
//! write, so the growth measured is the N sockets' and not the change reader's first use.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::load::Latency;
use super::{APP, Bench, BenchError, Options};

/// The collection the sockets subscribe to.
pub const COLLECTION: &str = "rtbench";
/// Sockets connecting at the same time.
const CONNECTING: usize = 200;
/// File descriptors kept free beyond the sockets (servers, HTTP pools, files).
const SPARE_FDS: u64 = 200;
/// Longest wait for the last pushes after the last write.
const DELIVERY_GRACE: Duration = Duration::from_secs(30);
/// Longest wait for one answer of the server (connect, `auth`, `subscribe`).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One socket count.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Sockets asked for.
    pub sockets: usize,
    /// Why it did not run (e.g. the open-file limit), if it did not.
    pub skipped: Option<String>,
    /// Sockets that authenticated and subscribed.
    pub connected: usize,
    /// Time to connect, authenticate and subscribe all of them.
    pub connect: Duration,
    /// Data plane `VmRSS` before the sockets, KiB.
    pub rss_before_kib: u64,
    /// Data plane `VmRSS` with all sockets idle, KiB.
    pub rss_with_sockets_kib: u64,
    /// Latency of the writes themselves (request → 200).
    pub write: Latency,
    /// Write sent → push arrived, over all (write, socket) pairs.
    pub delivery: Latency,
    /// Pushes that arrived.
    pub delivered: usize,
    /// Pushes expected (connected × writes).
    pub expected: usize,
}

impl Row {
    /// RSS growth per idle socket, KiB.
    pub fn per_socket_kib(&self) -> f64 {
        if self.connected == 0 {
            return 0.0;
        }
        self.rss_with_sockets_kib
            .saturating_sub(self.rss_before_kib) as f64
            / self.connected as f64
    }
}

/// What the realtime section measured.
#[derive(Debug, Clone, Default)]
pub struct RealtimeResults {
    /// One row per socket count.
    pub rows: Vec<Row>,
    /// Writes per socket count.
    pub writes: usize,
    /// Pause between writes.
    pub gap: Duration,
    /// Open-file limit of the data plane process.
    pub plane_open_files: Option<u64>,
}

/// Run every socket count of `options.sockets`.
pub async fn run(bench: &mut Bench, options: &Options) -> Result<RealtimeResults, BenchError> {
    let limit = super::process::raise_open_file_limit();
    let mut results = RealtimeResults {
        writes: options.writes,
        gap: options.write_gap,
        ..RealtimeResults::default()
    };
    for &n in &options.sockets {
        if n as u64 + SPARE_FDS > limit {
            let why = format!("open-file limit {limit} is below {n} sockets + {SPARE_FDS}");
            eprintln!("{n} sockets: skipped ({why})");
            results.rows.push(Row {
                sockets: n,
                skipped: Some(why),
                ..Row::default()
            });
            continue;
        }
        let row = measure(bench, options, n).await?;
        results.plane_open_files = bench
            .plane
            .pid()
            .and_then(super::process::open_file_limit_of);
        eprintln!(
            "{n} sockets: connected {} in {:.1} s, {:.1} KiB/socket, write→push p50 {:.2} ms p99 {:.2} ms max {:.2} ms, delivered {}/{}",
            row.connected,
            row.connect.as_secs_f64(),
            row.per_socket_kib(),
            super::report::ms(row.delivery.p50),
            super::report::ms(row.delivery.p99),
            super::report::ms(row.delivery.max),
            row.delivered,
            row.expected
        );
        results.rows.push(row);
    }
    Ok(results)
}

async fn measure(bench: &mut Bench, options: &Options, n: usize) -> Result<Row, BenchError> {
    bench.restart_plane().await?;
    let token = bench.app_token().await?;
    let ws_url = bench.plane.instance().websocket_url().to_string();
    let write_url = format!("{}/api/v1/data/write", bench.plane.url);
    let http = reqwest::Client::new();
    let write = |round: usize, k: usize| {
        http.post(&write_url)
            .bearer_auth(&token)
            .header(vibe_cli::client::APP_ID_HEADER, APP)
            .json(&json!({ "collection": COLLECTION, "data": { "round": round, "k": k } }))
            .send()
    };

    // Warm-up: the change reader and the first socket's allocations, outside the figure.
    let mut warm = open(&ws_url, &token).await.map_err(BenchError::Failed)?;
    write(0, 0)
        .await
        .map_err(|e| BenchError::Failed(format!("warm-up write: {e}")))?;
    tokio::time::timeout(ANSWER_TIMEOUT, next_update(&mut warm, 0))
        .await
        .map_err(|_| BenchError::Failed("warm-up push never arrived".into()))?;
    drop(warm);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_kib = bench.plane.rss_kib().unwrap_or(0);

    // N sockets, each in its own task that then listens until told to stop.
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (url, token, gate) = (ws_url.clone(), token.clone(), gate.clone());
        let (ready, failed, arrived) = (ready.clone(), failed.clone(), arrived.clone());
        let mut stop = stop_rx.clone();
        let writes = options.writes;
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let mut socket = match open(&url, &token).await {
                Ok(socket) => socket,
                Err(e) => {
                    if failed.fetch_add(1, Ordering::SeqCst) == 0 {
                        eprintln!("a socket failed: {e}");
                    }
                    return Vec::new();
                }
            };
            drop(permit);
            ready.fetch_add(1, Ordering::SeqCst);
            let mut arrivals = Vec::with_capacity(writes);
            while arrivals.len() < writes {
                tokio::select! {
                    k = next_update(&mut socket, n) => match k {
                        Some(arrival) => {
                            arrivals.push(arrival);
                            arrived.fetch_add(1, Ordering::Relaxed);
                        }
                        None => break,
                    },
                    _ = stop.changed() => break,
                }
            }
            // Stay connected until every socket is done, so the fan-out size never shrinks.
            let _ = stop.wait_for(|stopped| *stopped).await;
            let _ = socket.close(None).await;
            arrivals
        }));
    }
    while ready.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect = started.elapsed();
    let connected = ready.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with_sockets_kib = bench.plane.rss_kib().unwrap_or(0);

    // Writes while everything listens.
    let mut sent = Vec::with_capacity(options.writes);
    let mut write_latencies = Vec::with_capacity(options.writes);
    for k in 0..options.writes {
        let at = Instant::now();
        let response = write(n, k)
            .await
            .map_err(|e| BenchError::Failed(format!("write: {e}")))?;
        if !response.status().is_success() {
            return Err(BenchError::Failed(format!(
                "write answered {}",
                response.status()
            )));
        }
        write_latencies.push(at.elapsed());
        sent.push(at);
        tokio::time::sleep(options.write_gap).await;
    }
    let expected = connected * options.writes;
    let deadline = Instant::now() + DELIVERY_GRACE;
    while arrived.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut delivery = Vec::with_capacity(expected);
    for task in tasks {
        for (k, at) in task.await.unwrap_or_default() {
            if let Some(written) = sent.get(k) {
                delivery.push(at.saturating_duration_since(*written));
            }
        }
    }
    Ok(Row {
        sockets: n,
        skipped: None,
        connected,
        connect,
        rss_before_kib,
        rss_with_sockets_kib,
        write: Latency::of(&mut write_latencies),
        delivered: delivery.len(),
        delivery: Latency::of(&mut delivery),
        expected,
    })
}

/// Connect, authenticate by first frame, subscribe to [`COLLECTION`].
async fn open(url: &str, token: &str) -> Result<Socket, String> {
    // Small buffers: the harness holds up to 10,000 of these.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let (mut socket, _) = tokio::time::timeout(ANSWER_TIMEOUT, connect)
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let frames = [
        (
            json!({ "action": "auth", "token": token, "appId": APP }),
            "authenticated",
        ),
        (
            json!({ "action": "subscribe", "collection": COLLECTION }),
            "subscribed",
        ),
    ];
    for (frame, status) in frames {
        socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, next_json(&mut socket))
            .await
            .map_err(|_| format!("no answer to {}", frame["action"]))?
            .ok_or_else(|| format!("closed before answering {}", frame["action"]))?;
        if answer["status"] != status {
            return Err(format!("{} answered {answer}", frame["action"]));
        }
    }
    Ok(socket)
}

/// The next JSON text frame; `None` when the socket ends.
async fn next_json(socket: &mut Socket) -> Option<Value> {
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Text(text)) => {
                return Some(serde_json::from_str(text.as_str()).unwrap_or(Value::Null));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    None
}

/// The `k` of the next update push of `round` and when its frame arrived (taken before the
/// frame is decoded, so the harness's own parsing is not in the figure); `None` when the
/// socket ends.
async fn next_update(socket: &mut Socket, round: usize) -> Option<(usize, Instant)> {
    while let Some(message) = socket.next().await {
        let at = Instant::now();
        match message {
            Ok(Message::Text(text)) => {
                // Only the members needed: the harness shares the cores with the data plane.
                let Ok(push) = serde_json::from_str::<Push>(text.as_str()) else {
                    continue;
                };
                if push.kind == "update"
                    && let Some(PushData {
                        round: Some(r),
                        k: Some(k),
                    }) = push.data
                    && r == round as u64
                {
                    return Some((k as usize, at));
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    None
}

/// What [`next_update`] reads of a push frame; other members are skipped.
#[derive(serde::Deserialize)]
struct Push<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    data: Option<PushData>,
}

#[derive(serde::Deserialize)]
struct PushData {
    round: Option<u64>,
    k: Option<u64>,
}
