//! Document benchmark, one command, data plane and direct CouchDB side by side in one run:
//!
//! ```text
//! cargo bench -p vibe-dataplane --bench documents
//! ```
//!
//! Against the same pouchdb-server (started by `vibe-test-support`), the same documents:
//! 1. single-document create: `POST /api/v1/data/write` vs `PUT /{db}/{id}`;
//! 2. single-document read: `GET /api/v1/data/{c}/{id}` vs `GET /{db}/{id}`;
//! 3. a page of 100 from a collection: `POST /api/v1/data/read` vs `POST /{db}/_find`;
//!
//! each sequentially (latency) and with `DOCS_BENCH_CONCURRENCY` clients (throughput,
//! default 16). `DOCS_BENCH_OPS` sets operations per measurement (default 400). Client, data
//! plane and pouchdb-server share the machine, so read the numbers as the data plane's
//! overhead relative to CouchDB, not as absolute capacity.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestInstance;
use reqwest::Method;
use serde_json::{Value, json};

const APP: &str = "https://bench.example";
const COLLECTION: &str = "bench";

struct Target {
    http: reqwest::Client,
    dataplane: String,
    token: String,
    couch: String,
    couch_user: String,
    couch_password: String,
    db: String,
}

#[derive(Clone, Copy)]
enum Op {
    WriteDataplane,
    WriteCouch,
    GetDataplane,
    GetCouch,
    PageDataplane,
    PageCouch,
}

impl Target {
    async fn run(&self, op: Op, i: usize, ids: &[String]) {
        let request = match op {
            Op::WriteDataplane => self
                .http
                .post(format!("{}/api/v1/data/write", self.dataplane))
                .bearer_auth(&self.token)
                .header("X-Vibe-App-ID", APP)
                .json(&json!({"collection": COLLECTION, "data": {"n": i, "text": "hello world"}})),
            Op::WriteCouch => {
                let id = format!("{COLLECTION}%2F{}", uuid::Uuid::now_v7());
                self.http
                    .put(format!("{}/{}/{id}", self.couch, self.db))
                    .basic_auth(&self.couch_user, Some(&self.couch_password))
                    .json(&json!({"collection": COLLECTION, "n": i, "text": "hello world"}))
            }
            Op::GetDataplane => {
                let id = &ids[i % ids.len()];
                let rest = id.strip_prefix(&format!("{COLLECTION}/")).unwrap();
                self.http
                    .get(format!(
                        "{}/api/v1/data/{COLLECTION}/{rest}",
                        self.dataplane
                    ))
                    .bearer_auth(&self.token)
                    .header("X-Vibe-App-ID", APP)
            }
            Op::GetCouch => {
                let id = ids[i % ids.len()].replace('/', "%2F");
                self.http
                    .get(format!("{}/{}/{id}", self.couch, self.db))
                    .basic_auth(&self.couch_user, Some(&self.couch_password))
            }
            Op::PageDataplane => self
                .http
                .post(format!("{}/api/v1/data/read", self.dataplane))
                .bearer_auth(&self.token)
                .header("X-Vibe-App-ID", APP)
                .json(&json!({"collection": COLLECTION, "limit": 100})),
            Op::PageCouch => self
                .http
                .request(Method::POST, format!("{}/{}/_find", self.couch, self.db))
                .basic_auth(&self.couch_user, Some(&self.couch_password))
                .json(&json!({
                    "selector": {"collection": COLLECTION},
                    "sort": [{"collection": "asc"}, {"_id": "asc"}],
                    "limit": 100,
                })),
        };
        let response = request.send().await.expect("request");
        assert!(response.status().is_success(), "{}", response.status());
        let _ = response.bytes().await.expect("body");
    }
}

struct Stats {
    ops_per_second: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure(
    target: &Arc<Target>,
    op: Op,
    ops: usize,
    concurrency: usize,
    ids: &Arc<Vec<String>>,
) -> Stats {
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let target = target.clone();
        let ids = ids.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = w;
            while i < ops {
                let t0 = Instant::now();
                target.run(op, i, &ids).await;
                latencies.push(t0.elapsed());
                i += concurrency;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.expect("worker"));
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        ops_per_second: ops as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let ops = env_usize("DOCS_BENCH_OPS", 400);
    let concurrency = env_usize("DOCS_BENCH_CONCURRENCY", 16);
    let t = TestInstance::start().await;
    let token = t.owner_token().await;
    t.upsert_app(
        &token,
        APP,
        &[("read:bench", "always"), ("write:bench", "always")],
    )
    .await;
    let db = t.state.data_db().await.expect("data db");

    // Documents to read: 200 created up front.
    let seed: Vec<Value> = (0..200).map(|n| json!({"n": n, "text": "seed"})).collect();
    let (_, created) = t
        .post(
            "/api/v1/data/write",
            Some(&token),
            Some(APP),
            json!({"collection": COLLECTION, "data": seed}),
        )
        .await;
    let ids: Arc<Vec<String>> = Arc::new(
        created
            .as_array()
            .expect("bulk results")
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect(),
    );
    let target = Arc::new(Target {
        http: reqwest::Client::new(),
        dataplane: t.base.clone(),
        token,
        couch: t.couch.url.clone(),
        couch_user: t.couch.user.clone(),
        couch_password: t.couch.password.clone(),
        db: db.name().to_string(),
    });
    // Warm up both paths (connections, indexes).
    for op in [
        Op::WriteDataplane,
        Op::WriteCouch,
        Op::GetDataplane,
        Op::GetCouch,
        Op::PageDataplane,
        Op::PageCouch,
    ] {
        measure(&target, op, 20, 4, &ids).await;
    }

    println!("| operation | via | clients | ops/s | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|");
    let rows = [
        ("create one document", Op::WriteDataplane, Op::WriteCouch),
        ("read one document", Op::GetDataplane, Op::GetCouch),
        ("page of 100 (Mango)", Op::PageDataplane, Op::PageCouch),
    ];
    for (name, through, direct) in rows {
        for clients in [1, concurrency] {
            for (via, op) in [("data plane", through), ("CouchDB direct", direct)] {
                let s = measure(&target, op, ops, clients, &ids).await;
                println!(
                    "| {name} | {via} | {clients} | {:.0} | {:.2} | {:.2} |",
                    s.ops_per_second,
                    s.p50.as_secs_f64() * 1000.0,
                    s.p99.as_secs_f64() * 1000.0
                );
            }
        }
    }
}
