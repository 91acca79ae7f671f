//! A streaming upload far larger than the memory it may use: 256 MiB generated on the fly
//! goes through `PUT /api/v1/blob/upload` of an in-process data plane to a real S3-compatible
//! server, and the process's peak RSS grows by a small fraction of that. Alone in its test
//! binary so that nothing else moves the peak.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::TestInstance;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use vibe_dataplane::config::S3Config;
use vibe_test_support::S3Server;

const APP: &str = "https://backup.example";
const TOTAL: usize = 256 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
/// Allowed growth of the peak RSS while 256 MiB stream through.
const RSS_BUDGET: u64 = 96 * 1024 * 1024;

/// `VmRSS` / `VmHWM` of this process, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("{field} missing"))
}

/// Chunk `i` of the generated body (cheap, deterministic, not compressible).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_streamed_upload_keeps_memory_flat() {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    let s3_config = S3Config {
        endpoint: s3.endpoint.parse().unwrap(),
        region: s3.region.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        bucket: "vibe-rss".into(),
        force_path_style: true,
    };
    let inst = TestInstance::start_with(|c| {
        c.s3 = Some(s3_config);
        c.blobs.create_bucket = true;
    })
    .await;
    let token = inst.owner_token().await;
    inst.upsert_app(
        &token,
        APP,
        &[
            ("blob:write:backups", "always"),
            ("blob:read:backups", "always"),
        ],
    )
    .await;

    let chunks = TOTAL / CHUNK;
    let expected = {
        let mut hash = Sha256::new();
        for i in 0..chunks {
            hash.update(chunk(i));
        }
        hash.finalize()
    };

    // Reset the peak to the current RSS (Linux `clear_refs` 5), then stream.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let baseline = status_bytes("VmRSS:");
    let body = futures::stream::iter(0..chunks).map(|i| Ok::<_, std::io::Error>(chunk(i)));
    let resp = inst
        .http
        .put(inst.url("/api/v1/blob/upload?collection=backups&filename=disk.img"))
        .bearer_auth(&token)
        .header("x-vibe-app-id", APP)
        .header("content-type", "application/octet-stream")
        .timeout(Duration::from_secs(600))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("upload");
    let status = resp.status();
    let meta: Value = resp.json().await.unwrap();
    let peak = status_bytes("VmHWM:");
    assert_eq!(status, StatusCode::CREATED, "{meta}");
    assert_eq!(meta["size"].as_u64(), Some(TOTAL as u64));
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "streamed {} MiB: baseline RSS {} MiB, peak {} MiB, growth {} MiB",
        TOTAL >> 20,
        baseline >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(
        growth < RSS_BUDGET,
        "peak RSS grew by {} MiB while streaming {} MiB (budget {} MiB)",
        growth >> 20,
        TOTAL >> 20,
        RSS_BUDGET >> 20
    );

    // The stored object is the generated body, byte for byte.
    let key = meta["objectKey"].as_str().unwrap();
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, dl) = inst
        .get(
            &format!("/api/v1/blob/download-url/{encoded}"),
            Some(&token),
            Some(APP),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dl}");
    let mut download = reqwest::get(dl["url"].as_str().unwrap())
        .await
        .unwrap()
        .bytes_stream();
    let mut hash = Sha256::new();
    let mut size = 0usize;
    while let Some(part) = download.next().await {
        let part = part.unwrap();
        size += part.len();
        hash.update(&part);
    }
    assert_eq!(size, TOTAL);
    assert!(
        hash.finalize() == expected,
        "stored bytes differ from the streamed body"
    );
}
