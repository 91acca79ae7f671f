//! Blob benchmark, one command, everything side by side in one run:
//!
//! ```text
//! cargo bench -p vibe-dataplane --bench blobs
//! ```
//!
//! 1. Presigned-URL issue rate on one core: the S3 layer alone (`BlobStore::presign_put`)
//!    and the whole `POST /api/v1/blob/upload-url` route (token check, grant, quota
//!    reservation, presigning, JSON) served by an in-process data plane, both on a
//!    current-thread runtime.
//! 2. Streaming-upload throughput of the same generated body to the same s3s-fs server:
//!    through the data plane (`PUT /api/v1/blob/upload`, multipart to S3) versus a direct
//!    presigned `PUT` to S3.
//!
//! Needs the test servers (`deploy/local/install-servers`). `BLOB_BENCH_MIB` sets the upload
//! size (default 256), `BLOB_BENCH_ROUNDS` the rounds per upload measurement (default 3).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestInstance;
use futures::StreamExt;
use serde_json::json;
use vibe_dataplane::blobs::store::BlobStore;
use vibe_dataplane::config::S3Config;
use vibe_test_support::S3Server;

const APP: &str = "https://bench.example";
const CHUNK: usize = 64 * 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn chunk(i: usize) -> Bytes {
    let mut state = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(CHUNK);
    while out.len() < CHUNK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    Bytes::from(out)
}

fn body(total: usize) -> reqwest::Body {
    reqwest::Body::wrap_stream(
        futures::stream::iter(0..total / CHUNK).map(|i| Ok::<_, std::io::Error>(chunk(i))),
    )
}

fn s3_config(s3: &S3Server, bucket: &str) -> S3Config {
    S3Config {
        endpoint: s3.endpoint.parse().unwrap(),
        region: s3.region.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        bucket: bucket.into(),
        force_path_style: true,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Runs `op` repeatedly for about `budget`; returns operations per second.
async fn rate<F, Fut>(budget: Duration, mut op: F) -> (f64, usize)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..50 {
        op(i).await; // warm-up
    }
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < budget {
        for _ in 0..50 {
            op(n).await;
            n += 1;
        }
    }
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

fn presign_rates() -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s3 = S3Server::start().await.expect("s3s-fs");
        let store = BlobStore::new(&s3_config(&s3, "vibe-bench"));
        let (store_rate, _) = rate(Duration::from_secs(3), |i| {
            let store = store.clone();
            async move {
                store
                    .presign_put(&format!("bench/photos/{i}-a.png"), "image/png", 1234, Duration::from_secs(300))
                    .await
                    .unwrap();
            }
        })
        .await;

        let config = s3_config(&s3, "vibe-bench");
        let inst = TestInstance::start_with(|c| {
            c.s3 = Some(config);
            c.blobs.create_bucket = true;
            c.blobs.quota_bytes = u64::MAX / 2;
        })
        .await;
        let token = inst.owner_token().await;
        inst.upsert_app(&token, APP, &[("blob:write:photos", "always")]).await;
        let url = inst.url("/api/v1/blob/upload-url");
        let (route_rate, _) = rate(Duration::from_secs(3), |_| {
            let request = inst
                .http
                .post(&url)
                .bearer_auth(&token)
                .header("x-vibe-app-id", APP)
                .json(&json!({ "collectionName": "photos", "originalFilename": "a.png", "contentType": "image/png", "size": 1 }));
            async move {
                let resp = request.send().await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                resp.bytes().await.unwrap();
            }
        })
        .await;
        (store_rate, route_rate)
    })
}

fn upload_throughputs(total: usize, rounds: usize) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s3 = S3Server::start().await.expect("s3s-fs");
        let config = s3_config(&s3, "vibe-bench");
        let store = BlobStore::new(&config);
        let inst = TestInstance::start_with(|c| {
            c.s3 = Some(config);
            c.blobs.create_bucket = true;
            c.blobs.quota_bytes = u64::MAX / 2;
            c.blobs.max_file_size = u64::MAX / 4;
        })
        .await;
        let token = inst.owner_token().await;
        inst.upsert_app(&token, APP, &[("blob:write:bench", "always")])
            .await;
        store.ensure_bucket().await.unwrap();
        let http = reqwest::Client::new();
        let mib = total as f64 / (1024.0 * 1024.0);
        let (mut via, mut direct) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Direct: a presigned PUT of the whole body to S3.
            let key = format!("direct/bench/{round}.bin");
            let put = store
                .presign_put(
                    &key,
                    "application/octet-stream",
                    total as u64,
                    Duration::from_secs(600),
                )
                .await
                .unwrap();
            let start = Instant::now();
            let resp = http
                .put(&put.url)
                .header("content-type", "application/octet-stream")
                .header("content-length", total)
                .body(body(total))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "direct PUT: {}", resp.status());
            direct.push(mib / start.elapsed().as_secs_f64());
            store.delete(&key).await.unwrap();

            // Through the data plane: streamed, multipart to the same server.
            let start = Instant::now();
            let resp = http
                .put(inst.url("/api/v1/blob/upload?collection=bench&filename=disk.img"))
                .bearer_auth(&token)
                .header("x-vibe-app-id", APP)
                .header("content-type", "application/octet-stream")
                .body(body(total))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
            via.push(mib / start.elapsed().as_secs_f64());
            let meta: serde_json::Value = resp.json().await.unwrap();
            store
                .delete(meta["objectKey"].as_str().unwrap())
                .await
                .unwrap();
        }
        (median(via), median(direct))
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with no argument: skip.
    if !std::env::args().any(|a| a == "--bench") {
        println!("blobs bench: run with `cargo bench -p vibe-dataplane --bench blobs`");
        return;
    }
    let total = env_usize("BLOB_BENCH_MIB", 256) * 1024 * 1024;
    let rounds = env_usize("BLOB_BENCH_ROUNDS", 3).max(1);
    let (store_rate, route_rate) = presign_rates();
    let (via, direct) = upload_throughputs(total, rounds);
    println!();
    println!("| measurement | result |");
    println!("|---|---|");
    println!("| presigned PUT URLs, S3 layer only (1 core) | {store_rate:.0} URLs/s |");
    println!(
        "| `POST /api/v1/blob/upload-url` over HTTP (1 core, client included) | {route_rate:.0} URLs/s |"
    );
    println!(
        "| streaming upload through the data plane, {} MiB (median of {rounds}) | {via:.1} MiB/s |",
        total >> 20
    );
    println!(
        "| direct presigned PUT to the same s3s-fs, {} MiB (median of {rounds}) | {direct:.1} MiB/s |",
        total >> 20
    );
    println!("| through the data plane / direct | {:.2} |", via / direct);
}
