//! Realtime benchmark, one command:
//!
//! ```text
//! cargo bench -p vibe-dataplane --bench realtime
//! ```
//!
//! The data plane (real router, real pouchdb-server from `vibe-test-support`) runs in this
//! process; the WebSocket clients run in a child process (this binary re-executed with
//! `--clients`), so the server's resident memory is measured without the clients'. For each
//! N in `RT_BENCH_SOCKETS` (default `1,100,1000,10000`): N sockets authenticate by first
//! frame and subscribe to one collection; the server's RSS growth divided by N gives memory
//! per idle socket; then `RT_BENCH_WRITES` (default 20) documents are written through
//! `POST /api/v1/data/write`, `RT_BENCH_GAP_MS` (default 500) apart, and for every socket the
//! time from the write's 200 to the push's arrival is recorded (wall clock shared by both
//! processes). p50/p99/max over all (write, socket) pairs are printed as a Markdown table.
//! Both processes raise their open-file limit to the hard limit.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

const APP: &str = "https://rt-bench.example";
const COLLECTION: &str = "rtbench";

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn raise_nofile() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        limit.rlim_cur
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if let Some(i) = args.iter().position(|a| a == "--clients") {
        let url = args[i + 1].clone();
        let token = args[i + 2].clone();
        let n: usize = args[i + 3].parse().unwrap();
        let writes: usize = args[i + 4].parse().unwrap();
        runtime.block_on(clients(url, token, n, writes));
    } else {
        runtime.block_on(server());
    }
}

/// Child: open `n` sockets, report readiness, collect arrival times per write marker.
async fn clients(url: String, token: String, n: usize, writes: usize) {
    raise_nofile();
    let arrivals: Arc<Mutex<HashMap<u64, Vec<i64>>>> = Arc::default();
    let ready = Arc::new(AtomicUsize::new(0));
    let connected = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let url = url.clone();
        let token = token.clone();
        let arrivals = arrivals.clone();
        let ready = ready.clone();
        let gate = connected.clone();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let (mut ws, _) = connect_async(url.as_str()).await.expect("connect");
            ws.send(Message::Text(
                json!({"action": "auth", "token": token, "appId": APP})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
            let _auth = ws.next().await;
            ws.send(Message::Text(
                json!({"action": "subscribe", "collection": COLLECTION})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
            let _sub = ws.next().await;
            drop(permit);
            ready.fetch_add(1, Ordering::SeqCst);
            let mut seen = 0;
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Text(text) = message {
                    let at = now_micros();
                    let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    if let Some(k) = value["data"]["k"].as_u64() {
                        arrivals.lock().await.entry(k).or_default().push(at);
                        seen += 1;
                        if seen == writes {
                            break;
                        }
                    }
                }
            }
            // Keep the socket open until the parent ends the run.
            std::future::pending::<()>().await;
        }));
    }
    while ready.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("ready");
    // Wait for "done" from the parent, then a grace period for stragglers.
    let stdin = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok();
    });
    stdin.await.ok();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let complete = {
            let a = arrivals.lock().await;
            a.len() == writes && a.values().all(|v| v.len() == n)
        };
        if complete || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = arrivals.lock().await;
    println!("{}", serde_json::to_string(&*a).unwrap());
    std::io::stdout().flush().ok();
    std::process::exit(0);
}

struct Row {
    n: usize,
    connect_s: f64,
    rss_per_socket_kib: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    delivered: usize,
    expected: usize,
}

/// Parent: data plane + pouchdb-server, one child per N.
async fn server() {
    let nofile = raise_nofile();
    let sizes = env_list("RT_BENCH_SOCKETS", "1,100,1000,10000");
    let writes = env_num("RT_BENCH_WRITES", 20) as usize;
    let gap = Duration::from_millis(env_num("RT_BENCH_GAP_MS", 500));
    let instance = common::TestInstance::start().await;
    let owner = instance.owner_token().await;
    instance
        .upsert_app(
            &owner,
            APP,
            &[
                (&*format!("read:{COLLECTION}"), "always"),
                (&*format!("write:{COLLECTION}"), "always"),
            ],
        )
        .await;
    let (_, body) = instance
        .post(
            "/api/v1/apps/token",
            Some(&owner),
            None,
            json!({"appId": APP}),
        )
        .await;
    let token = body["accessToken"].as_str().expect("app token").to_string();
    let ws_url = format!("{}/ws", instance.base.replacen("http", "ws", 1));
    eprintln!("open-file limit {nofile}; writes per N {writes}, {gap:?} apart");

    let exe = std::env::current_exe().unwrap();
    let mut rows = Vec::new();
    let mut k: u64 = 0;
    for &n in &sizes {
        if (n as u64) + 500 > nofile {
            eprintln!("skipping N={n}: open-file limit {nofile} too low");
            continue;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kib();
        let started = std::time::Instant::now();
        let mut child = Command::new(&exe)
            .args([
                "--clients",
                &ws_url,
                &token,
                &n.to_string(),
                &writes.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn client process");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let mut reader = tokio::task::spawn_blocking(move || {
            stdout.read_line(&mut line).unwrap();
            (stdout, line)
        })
        .await
        .unwrap();
        assert_eq!(reader.1.trim(), "ready", "client process failed");
        let connect_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kib();
        let rss_per_socket_kib = after.saturating_sub(before) as f64 / n as f64;

        let mut written = HashMap::new();
        for _ in 0..writes {
            k += 1;
            let (status, body) = instance
                .post(
                    "/api/v1/data/write",
                    Some(&token),
                    Some(APP),
                    json!({"collection": COLLECTION, "data": {"k": k}}),
                )
                .await;
            assert!(status.is_success(), "{status} {body}");
            written.insert(k, now_micros());
            tokio::time::sleep(gap).await;
        }
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "done").unwrap();
        let json_line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            reader.0.read_line(&mut line).unwrap();
            reader.1 = line;
            reader
        })
        .await
        .unwrap()
        .1;
        let _ = child.wait();
        let arrivals: HashMap<String, Vec<i64>> =
            serde_json::from_str(json_line.trim()).expect("client results");
        let mut latencies: Vec<i64> = Vec::new();
        for (key, times) in &arrivals {
            let k: u64 = key.parse().unwrap();
            if let Some(t200) = written.get(&k) {
                latencies.extend(times.iter().map(|t| (t - t200).max(0)));
            }
        }
        latencies.sort_unstable();
        let pct = |p: f64| {
            if latencies.is_empty() {
                f64::NAN
            } else {
                let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
                latencies[i] as f64 / 1000.0
            }
        };
        let row = Row {
            n,
            connect_s,
            rss_per_socket_kib,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
            delivered: latencies.len(),
            expected: n * writes,
        };
        eprintln!(
            "N={n}: connected in {:.1}s, {:.1} KiB/socket, p50 {:.2} ms, p99 {:.2} ms, delivered {}/{}",
            row.connect_s,
            row.rss_per_socket_kib,
            row.p50_ms,
            row.p99_ms,
            row.delivered,
            row.expected
        );
        rows.push(row);
    }

    println!();
    println!(
        "| sockets | connect+auth+subscribe (s) | server RSS per idle socket (KiB) | write 200 → push p50 (ms) | p99 (ms) | max (ms) | delivered |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {}/{} |",
            r.n,
            r.connect_s,
            r.rss_per_socket_kib,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.delivered,
            r.expected
        );
    }
}
