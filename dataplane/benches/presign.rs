//! Presigning in the S3 layer alone, one command:
//!
//! ```text
//! cargo bench -p vibe-dataplane --bench presign
//! ```
//!
//! `BlobStore::presign_put` (SigV4 query signing binding `Content-Type` and `Content-Length`)
//! called in a loop on a current-thread runtime, against a real s3s-fs (presigning makes no
//! request to it). This is the part of `POST /api/v1/blob/upload-url` that the black-box
//! benchmark (`deploy/local/bench`, `e2e/src/bench/blobs.rs`) cannot isolate: that one measures
//! the whole route over HTTP beside everything else in docs/benchmarks.md.
//!
//! Needs the test servers (`deploy/local/install-servers`). `PRESIGN_BENCH_SECONDS` sets the
//! measuring time (default 3).

use std::time::{Duration, Instant};

use vibe_dataplane::blobs::store::BlobStore;
use vibe_dataplane::config::S3Config;
use vibe_test_support::S3Server;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with no argument: skip.
    if !std::env::args().any(|a| a == "--bench") {
        println!("presign bench: run with `cargo bench -p vibe-dataplane --bench presign`");
        return;
    }
    let seconds: f64 = std::env::var("PRESIGN_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(3.0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (rate, per_url) = runtime.block_on(async {
        let s3 = S3Server::start().await.expect("s3s-fs");
        let store = BlobStore::new(&S3Config {
            endpoint: s3.endpoint.parse().expect("endpoint URL"),
            region: s3.region.clone(),
            access_key: s3.access_key.clone(),
            secret_key: s3.secret_key.clone(),
            bucket: "vibe-bench".into(),
            force_path_style: true,
        });
        let presign = |i: usize| {
            let store = store.clone();
            async move {
                store
                    .presign_put(
                        &format!("bench/photos/{i}-a.png"),
                        "image/png",
                        1234,
                        Duration::from_secs(300),
                    )
                    .await
                    .expect("presign");
            }
        };
        for i in 0..100 {
            presign(i).await; // warm-up
        }
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed().as_secs_f64() < seconds {
            for _ in 0..100 {
                presign(n).await;
                n += 1;
            }
        }
        let elapsed = started.elapsed();
        (n as f64 / elapsed.as_secs_f64(), elapsed / n as u32)
    });
    println!();
    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| presigned PUT URLs, S3 layer only (`BlobStore::presign_put`, 1 core) | {rate:.0} URLs/s ({:.1} µs each) |",
        per_url.as_secs_f64() * 1e6
    );
}
