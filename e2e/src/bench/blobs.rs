//! Blobs, against the data plane's S3-compatible server (s3s-fs):
//!
//! 1. presign rate: `POST /api/v1/blob/upload-url` over HTTP at 1 and 16 clients (token
//!    check, grant, quota reservation, SigV4 presigning, JSON; no S3 round trip);
//! 2. upload throughput of the same generated body to the same s3s-fs: through the data
//!    plane (`PUT /api/v1/blob/upload`, streamed to S3 as multipart) versus a direct `PUT` to
//!    a presigned URL the data plane issued (only the PUT is timed); rounds alternate and
//!    the median is reported;
//! 3. data plane memory during one large (1 GiB) streamed upload, on a freshly restarted
//!    process: `VmHWM` (kernel peak) and the largest `VmRSS` sampled every 20 ms.
//!
//! Every uploaded blob is deleted through the API right after it is measured.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Value, json};

use super::load::{self, LoadStats};
use super::process::RssSampler;
use super::{APP, Bench, BenchError, Options};
use vibe_cli::client::Client;

/// The blob collection.
pub const COLLECTION: &str = "benchfiles";
const CONTENT: &str = "application/octet-stream";
/// Bytes per body chunk, and the distinct chunks the body cycles through.
const CHUNK: usize = 64 * 1024;
const DISTINCT_CHUNKS: usize = 16;
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// Throughput of one path of the upload comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Throughput {
    /// Median MiB/s over the rounds.
    pub median_mib_s: f64,
    /// Slowest round.
    pub min_mib_s: f64,
    /// Fastest round.
    pub max_mib_s: f64,
}

impl Throughput {
    fn of(rounds: &[f64]) -> Self {
        Self {
            median_mib_s: load::median_f64(rounds),
            min_mib_s: rounds.iter().copied().fold(f64::INFINITY, f64::min),
            max_mib_s: rounds.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// Memory of the data plane during the large streamed upload.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UploadMemory {
    /// Bytes uploaded.
    pub bytes: u64,
    /// Its throughput, MiB/s.
    pub mib_s: f64,
    /// `VmRSS` of the fresh process before the upload, KiB.
    pub rss_before_kib: u64,
    /// Largest sampled `VmRSS` during the upload, KiB.
    pub sampled_max_kib: u64,
    /// Samples taken.
    pub samples: u64,
    /// `VmHWM` (peak since start) after the upload, KiB.
    pub hwm_kib: u64,
    /// `VmRSS` after the upload, KiB.
    pub rss_after_kib: u64,
}

/// What the blobs section measured.
#[derive(Debug, Clone, Default)]
pub struct BlobResults {
    /// Presign rate per client count.
    pub presign: Vec<LoadStats>,
    /// Seconds per presign cell.
    pub seconds: f64,
    /// Bytes per upload in the comparison.
    pub upload_bytes: u64,
    /// Rounds of the comparison.
    pub rounds: usize,
    /// Through the data plane.
    pub streamed: Throughput,
    /// Direct presigned PUT.
    pub direct: Throughput,
    /// The large streamed upload.
    pub memory: UploadMemory,
}

/// Run presign rate, upload comparison and the RSS-sampled upload.
pub async fn run(bench: &mut Bench, options: &Options) -> Result<BlobResults, BenchError> {
    let mut results = BlobResults {
        seconds: options.seconds,
        upload_bytes: options.upload_bytes,
        rounds: options.upload_rounds,
        ..BlobResults::default()
    };
    let upload_body = Body::new();

    let token = bench.app_token().await?;
    let url = format!("{}/api/v1/blob/upload-url", bench.plane.url);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| BenchError::Failed(format!("HTTP client: {e}")))?;
    // The request's body and headers are made once: the harness shares the two cores with
    // the data plane, so its own per-request work is kept small.
    let body = Bytes::from(
        json!({
            "collectionName": COLLECTION,
            "originalFilename": "photo.png",
            "contentType": "image/png",
            "size": 1,
        })
        .to_string(),
    );
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .map_err(|e| BenchError::Failed(format!("token header: {e}")))?,
    );
    headers.insert(
        reqwest::header::HeaderName::from_static("x-vibe-app-id"),
        reqwest::header::HeaderValue::from_static(APP),
    );
    headers.insert(
        CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    for &clients in &options.presign_clients {
        let (http, url, body, headers) = (http.clone(), url.clone(), body.clone(), headers.clone());
        let stats = load::closed_loop(clients, options.seconds, move |_| {
            load::succeeded(http.post(&url).headers(headers.clone()).body(body.clone()))
        })
        .await;
        eprintln!(
            "upload-url, {clients} clients: {:.0} URLs/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
            stats.per_sec,
            super::report::ms(stats.latency.p50),
            super::report::ms(stats.latency.p99),
            stats.errors
        );
        results.presign.push(stats);
    }

    let app = bench.app_client().await?;
    let (mut streamed, mut direct) = (Vec::new(), Vec::new());
    for round in 0..options.upload_rounds {
        direct.push(direct_put(&app, &upload_body, options.upload_bytes).await?);
        streamed.push(streamed_upload(&app, &upload_body, options.upload_bytes).await?);
        eprintln!(
            "upload round {}: direct {:.1} MiB/s, through the data plane {:.1} MiB/s",
            round + 1,
            direct[round],
            streamed[round]
        );
    }
    results.streamed = Throughput::of(&streamed);
    results.direct = Throughput::of(&direct);

    // The large upload on a fresh process, so VmHWM is this upload's peak.
    bench.restart_plane().await?;
    let app = bench.app_client().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = bench
        .plane
        .pid()
        .ok_or_else(|| BenchError::Failed("the data plane is not running".into()))?;
    let rss_before_kib = bench.plane.rss_kib().unwrap_or(0);
    let sampler = RssSampler::start(pid, RSS_SAMPLE_EVERY);
    let mib_s = streamed_upload(&app, &upload_body, options.rss_upload_bytes).await?;
    let (sampled_max_kib, samples) = sampler.finish().await;
    results.memory = UploadMemory {
        bytes: options.rss_upload_bytes,
        mib_s,
        rss_before_kib,
        sampled_max_kib,
        samples,
        hwm_kib: bench.plane.peak_rss_kib().unwrap_or(0),
        rss_after_kib: bench.plane.rss_kib().unwrap_or(0),
    };
    eprintln!(
        "{} MiB streamed at {mib_s:.1} MiB/s: RSS {} KiB before, sampled max {} KiB, VmHWM {} KiB",
        options.rss_upload_bytes >> 20,
        rss_before_kib,
        sampled_max_kib,
        results.memory.hwm_kib
    );
    Ok(results)
}

/// The upload body: the same pseudo-random chunks, cycled, for every path and round (no
/// per-upload generation cost; nothing compresses it).
#[derive(Clone)]
struct Body {
    chunks: Vec<Bytes>,
}

impl Body {
    fn new() -> Self {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let chunks = (0..DISTINCT_CHUNKS)
            .map(|_| {
                let mut chunk = Vec::with_capacity(CHUNK);
                while chunk.len() < CHUNK {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    chunk.extend_from_slice(&state.to_le_bytes());
                }
                Bytes::from(chunk)
            })
            .collect();
        Self { chunks }
    }

    /// A streamed body of `total` bytes.
    fn stream(&self, total: u64) -> reqwest::Body {
        let chunks = self.chunks.clone();
        let full = (total / CHUNK as u64) as usize;
        let tail = (total % CHUNK as u64) as usize;
        let tail_chunk = chunks[0].slice(..tail);
        let stream = futures::stream::iter(0..full)
            .map(move |i| chunks[i % chunks.len()].clone())
            .chain(futures::stream::iter((tail > 0).then_some(tail_chunk)))
            .map(Ok::<_, std::io::Error>);
        reqwest::Body::wrap_stream(stream)
    }
}

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

/// `PUT /api/v1/blob/upload` with `bytes` of the body; deletes the blob after. Returns
/// MiB/s.
async fn streamed_upload(app: &Client, body: &Body, bytes: u64) -> Result<f64, BenchError> {
    let token = app
        .access_token()
        .await
        .map_err(BenchError::client("token"))?;
    let mut url = app.instance().endpoint("api/v1/blob/upload");
    url.query_pairs_mut()
        .append_pair("collection", COLLECTION)
        .append_pair("filename", "disk.img");
    let started = Instant::now();
    let response = app
        .instance()
        .http()
        .put(url)
        .bearer_auth(token)
        .header(vibe_cli::client::APP_ID_HEADER, APP)
        .header(CONTENT_TYPE, CONTENT)
        .header(CONTENT_LENGTH, bytes)
        .body(body.stream(bytes))
        .send()
        .await
        .map_err(|e| BenchError::Failed(format!("streamed upload: {e}")))?;
    let status = response.status();
    let meta: Value = response.json().await.unwrap_or(Value::Null);
    let took = started.elapsed();
    if !status.is_success() {
        return Err(BenchError::Failed(format!(
            "streamed upload answered {status}: {meta}"
        )));
    }
    let key = meta["objectKey"]
        .as_str()
        .ok_or_else(|| BenchError::Failed(format!("streamed upload: no objectKey in {meta}")))?
        .to_string();
    app.blob_delete(&key)
        .await
        .map_err(BenchError::client("delete the streamed blob"))?;
    Ok(mib_per_s(bytes, took))
}

/// A presigned URL from the data plane, then a timed direct `PUT` of `bytes` of the body to
/// s3s-fs; finalised and deleted through the API after. Returns MiB/s.
async fn direct_put(app: &Client, body: &Body, bytes: u64) -> Result<f64, BenchError> {
    let upload = app
        .blob_upload_url(COLLECTION, "disk.img", CONTENT, bytes)
        .await
        .map_err(BenchError::client("upload-url"))?;
    let started = Instant::now();
    app.put_presigned(&upload, body.stream(bytes), CONTENT, bytes)
        .await
        .map_err(BenchError::client("direct presigned PUT"))?;
    let took = started.elapsed();
    app.blob_finalize(COLLECTION, &upload, "disk.img", CONTENT, bytes)
        .await
        .map_err(BenchError::client("finalize"))?;
    app.blob_delete(&upload.object_key)
        .await
        .map_err(BenchError::client("delete the direct blob"))?;
    Ok(mib_per_s(bytes, took))
}
