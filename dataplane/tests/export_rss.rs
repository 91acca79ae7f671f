//! Issue 18's memory bound: a 300 MiB blob goes through export and import as a stream.
//! Instance A's export response is piped straight into instance B's import request (both
//! data planes in this process, one s3s-fs), and the process's peak RSS may grow by at most
//! 64 MiB meanwhile, so neither side holds a blob (or the archive) in memory. Alone in its
//! test binary so that nothing else moves the peak.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestInstance;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use vibe_dataplane::config::S3Config;
use vibe_identity::Keypair;
use vibe_test_support::{CouchServer, S3Server};

const APP: &str = "https://backup.example";
const TOTAL: usize = 300 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
/// Allowed growth of the peak RSS while the archive streams through both data planes.
const RSS_BUDGET: u64 = 64 * 1024 * 1024;

fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("{field} missing"))
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

async fn instance(s3: &S3Server, owner: &Keypair, bucket: &str) -> TestInstance {
    let couch = CouchServer::start().await.expect("start CouchDB");
    let config = S3Config {
        endpoint: s3.endpoint.parse().unwrap(),
        region: s3.region.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        bucket: bucket.into(),
        force_path_style: true,
    };
    TestInstance::start_on(couch, owner.clone(), Keypair::generate(), |c| {
        c.s3 = Some(config);
        c.blobs.create_bucket = true;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_mib_blob_streams_through_export_and_import_in_flat_memory() {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    let owner = Keypair::generate();
    let a = instance(&s3, &owner, "vibe-rss-a").await;
    let b = instance(&s3, &owner, "vibe-rss-b").await;
    let token_a = a.owner_token().await;
    a.upsert_app(
        &token_a,
        APP,
        &[
            ("blob:write:disks", "always"),
            ("blob:read:disks", "always"),
        ],
    )
    .await;
    let chunks = TOTAL / CHUNK;
    let body = futures::stream::iter(0..chunks).map(|i| Ok::<_, std::io::Error>(chunk(i)));
    let resp = a
        .http
        .put(a.url("/api/v1/blob/upload?collection=disks&filename=disk.img"))
        .bearer_auth(&token_a)
        .header("x-vibe-app-id", APP)
        .header("content-type", "application/octet-stream")
        .timeout(Duration::from_secs(900))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let meta: Value = resp.json().await.unwrap();
    let key = meta["objectKey"].as_str().unwrap().to_string();
    let token_b = b.owner_token().await;

    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let baseline = status_bytes("VmRSS:");
    let started = Instant::now();
    let exported = a
        .http
        .get(a.url("/api/v1/export"))
        .bearer_auth(&token_a)
        .timeout(Duration::from_secs(900))
        .send()
        .await
        .expect("export");
    assert_eq!(exported.status(), StatusCode::OK);
    let imported = b
        .http
        .post(b.url("/api/v1/import"))
        .bearer_auth(&token_b)
        .header("content-type", "application/x-tar")
        .timeout(Duration::from_secs(900))
        .body(reqwest::Body::wrap_stream(exported.bytes_stream()))
        .send()
        .await
        .expect("import");
    let status = imported.status();
    let report: Value = imported.json().await.unwrap();
    let peak = status_bytes("VmHWM:");
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["counts"]["blobBytes"].as_u64(), Some(TOTAL as u64));
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "export→import of a {} MiB blob in {:.1} s: baseline RSS {} MiB, peak {} MiB, growth {} MiB",
        TOTAL >> 20,
        elapsed.as_secs_f64(),
        baseline >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(
        growth <= RSS_BUDGET,
        "peak RSS grew by {} MiB (budget {} MiB)",
        growth >> 20,
        RSS_BUDGET >> 20
    );

    // B's copy holds the same bytes (the app and its grants came along).
    let (status, url) = b
        .get(
            &format!("/api/v1/blob/download-url/{key}"),
            Some(&token_b),
            Some(APP),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{url}");
    let download = b
        .http
        .get(url["url"].as_str().unwrap())
        .timeout(Duration::from_secs(900))
        .send()
        .await
        .expect("download from B");
    let mut body = download.bytes_stream();
    let mut hash = Sha256::new();
    while let Some(piece) = body.next().await {
        hash.update(piece.unwrap());
    }
    let mut expected = Sha256::new();
    for i in 0..chunks {
        expected.update(chunk(i));
    }
    assert_eq!(hash.finalize(), expected.finalize());
}
