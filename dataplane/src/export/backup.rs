//! `vibe-dataplane backup`: one scheduled backup of this instance (issue 18), run by the
//! operator's CronJob in the instance's namespace with the data plane's own CouchDB and S3
//! settings.
//!
//! The archive is the one `GET /api/v1/export` writes ([`super::exporter::Job`]), always
//! encrypted to the owner's DID key, streamed into an S3 multipart upload (one part in
//! memory at a time). After a successful upload, the oldest backups beyond the retention
//! count are deleted. The outcome is a [`BackupReport`]: one JSON line on standard output,
//! and the pod's termination message, which the operator reads into `status.lastBackup`;
//! it is also recorded in the instance's system database for the owner console
//! ([`super::last_backup`]).
//!
//! An instance without an owner has nothing anybody could read back (there is no key to
//! encrypt to): the backup is `Skipped` and writes nothing.

use std::io;
use std::path::PathBuf;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use vibe_api::dataplane_env as env;
use vibe_api::export::{BACKUP_SUFFIX, BackupOutcome, BackupReport, ENCRYPTED_MEDIA_TYPE};

use super::exporter::{Job, channel_writer};
use crate::blobs::store::classify;
use crate::state::AppState;

/// Size of one uploaded part (S3 needs at least 5 MiB for every part but the last).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Pieces buffered between the archive writer and the uploader.
const CHANNEL_PIECES: usize = 16;

/// The object key of the backup called `name` under `prefix`.
pub fn backup_key(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}{BACKUP_SUFFIX}")
}

/// Settings of `vibe-dataplane backup`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// Bucket the backups are written to (the platform's backup bucket, or the instance's
    /// `spec.backup.bucket`).
    #[arg(long = "bucket", env = env::VIBE_BACKUP_BUCKET)]
    pub bucket: String,
    /// Key prefix of this instance's backups, normally ending in `/`. A backup is
    /// `<prefix><YYYYMMDDTHHMMSSZ>-<8 hex>.vibe.age`; retention only looks under it.
    #[arg(long = "prefix", env = env::VIBE_BACKUP_PREFIX, default_value = "")]
    pub prefix: String,
    /// How many backups to keep, the new one included; older ones are deleted after a
    /// successful backup.
    #[arg(long = "retention", env = env::VIBE_BACKUP_RETENTION, default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub retention: u32,
    /// File the JSON report is written to as well (`/dev/termination-log` in a pod).
    #[arg(long = "report-file", env = env::VIBE_BACKUP_REPORT_FILE)]
    pub report_file: Option<PathBuf>,
}

/// Runs one backup. Never panics on a failure: the report says what happened.
pub async fn run(state: &AppState, args: &BackupArgs) -> BackupReport {
    let started_at = now();
    let mut report = BackupReport {
        outcome: BackupOutcome::Failed,
        started_at: started_at.clone(),
        finished_at: String::new(),
        bucket: Some(args.bucket.clone()),
        object_key: None,
        name: None,
        size: None,
        sha256: None,
        counts: None,
        deleted: 0,
        message: None,
    };
    if let Err(message) = write(state, args, &mut report).await {
        report.outcome = BackupOutcome::Failed;
        report.message = Some(message);
    }
    report.finished_at = now();
    // Where the owner console's overview reads it.
    super::last_backup::record(state, &report).await;
    report
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn write(
    state: &AppState,
    args: &BackupArgs,
    report: &mut BackupReport,
) -> Result<(), String> {
    // Loads the owner from the claim when it is not configured.
    state
        .system_db()
        .await
        .map_err(|e| format!("CouchDB: {e}"))?;
    let Some(owner) = state.owner() else {
        report.outcome = BackupOutcome::Skipped;
        report.message = Some(
            "this instance has no owner yet: there is nothing to back up and no key to encrypt to"
                .into(),
        );
        return Ok(());
    };
    let client = state
        .blobs
        .as_ref()
        .map(|b| b.store.client.clone())
        .ok_or("S3 is not configured (S3_ENDPOINT, S3_BUCKET_NAME): nowhere to write")?;
    let job = Job::prepare(state, owner, true)
        .await
        .map_err(|e| format!("preparing the export: {e}"))?;
    let name = backup_name(chrono::Utc::now(), &job.head.export_id);
    let key = backup_key(&args.prefix, &name);

    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_PIECES);
    let writer = tokio::spawn(async move {
        let failed = tx.clone();
        let result = job.write_to(channel_writer(tx), true).await;
        if let Err(e) = &result {
            let _ = failed
                .send(Err(io::Error::other(format!("export failed: {e}"))))
                .await;
        }
        result
    });
    let uploaded = upload(&client, &args.bucket, &key, rx).await;
    let written = writer
        .await
        .map_err(|e| format!("export task: {e}"))
        .and_then(|r| r.map_err(|e| format!("export failed: {e}")));
    let (size, sha256) = uploaded?;
    let counts = written?;
    tracing::info!(bucket = %args.bucket, key = %key, size, "backup written");
    report.object_key = Some(key.clone());
    report.name = Some(name);
    report.size = Some(size);
    report.sha256 = Some(sha256);
    report.counts = Some(counts);

    let deleted = apply_retention(&client, &args.bucket, &args.prefix, args.retention, &key)
        .await
        .map_err(|e| format!("backup {key} written, but retention failed: {e}"))?;
    report.deleted = deleted;
    report.outcome = BackupOutcome::Succeeded;
    Ok(())
}

/// `<UTC time to the millisecond>-<last 8 hex digits of the export id>`: sorts by time,
/// unique per export.
pub fn backup_name(at: chrono::DateTime<chrono::Utc>, export_id: &str) -> String {
    let hex: String = export_id.chars().filter(char::is_ascii_hexdigit).collect();
    let tail = &hex[hex.len().saturating_sub(8)..];
    format!("{}-{tail}", at.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// Whether `name` (a key's part after the prefix) is a backup this module wrote.
pub fn is_backup_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(BACKUP_SUFFIX) else {
        return false;
    };
    let b = stem.as_bytes();
    b.len() == 29
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'.'
        && b[16..19].iter().all(u8::is_ascii_digit)
        && b[19] == b'Z'
        && b[20] == b'-'
        && b[21..].iter().all(u8::is_ascii_hexdigit)
}

/// Streams the pieces of `rx` into `bucket`/`key` as a multipart upload. Returns the size
/// and SHA-256 of what was stored. On any error (an `Err` piece included) the upload is
/// aborted, so no partial object is ever visible.
async fn upload(
    client: &Client,
    bucket: &str,
    key: &str,
    mut rx: mpsc::Receiver<Result<Bytes, io::Error>>,
) -> Result<(u64, String), String> {
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type(ENCRYPTED_MEDIA_TYPE)
        .send()
        .await
        .map_err(|e| classify("CreateMultipartUpload", e).to_string())?;
    let upload_id = created
        .upload_id()
        .ok_or("CreateMultipartUpload returned no upload id")?
        .to_string();
    let parts = async {
        let mut parts = Vec::new();
        let mut buffer = BytesMut::with_capacity(PART_BYTES);
        let mut size = 0u64;
        let mut sum = Sha256::new();
        while let Some(piece) = rx.recv().await {
            let piece = piece.map_err(|e| e.to_string())?;
            size += piece.len() as u64;
            sum.update(&piece);
            buffer.extend_from_slice(&piece);
            while buffer.len() >= PART_BYTES {
                let part = buffer.split_to(PART_BYTES).freeze();
                parts.push(upload_part(client, bucket, key, &upload_id, parts.len(), part).await?);
            }
        }
        if !buffer.is_empty() || parts.is_empty() {
            let part = buffer.split().freeze();
            parts.push(upload_part(client, bucket, key, &upload_id, parts.len(), part).await?);
        }
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify("CompleteMultipartUpload", e).to_string())?;
        Ok::<_, String>((size, hex::encode(sum.finalize())))
    }
    .await;
    if parts.is_err() {
        // Dropping the receiver first stops the writer; then nothing of the upload stays.
        rx.close();
        if let Err(e) = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .send()
            .await
        {
            tracing::warn!(error = %classify("AbortMultipartUpload", e), key, "could not abort the upload");
        }
    }
    parts
}

async fn upload_part(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    index: usize,
    bytes: Bytes,
) -> Result<CompletedPart, String> {
    let number = i32::try_from(index + 1).map_err(|_| "too many parts".to_string())?;
    let part = client
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(number)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .map_err(|e| classify("UploadPart", e).to_string())?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .set_e_tag(part.e_tag().map(str::to_string))
        .build())
}

/// The backups under `prefix` (keys whose rest is a [`is_backup_name`]), oldest first.
pub async fn list_backups(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| classify("ListObjectsV2", e).to_string())?;
        for object in page.contents() {
            if let Some(key) = object.key()
                && key.strip_prefix(prefix).is_some_and(is_backup_name)
            {
                keys.push(key.to_string());
            }
        }
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
            _ => break,
        }
    }
    keys.sort();
    Ok(keys)
}

/// The keys to delete so that `retention` backups stay: the oldest ones, never `keep`.
pub fn beyond_retention(mut keys: Vec<String>, retention: u32, keep: &str) -> Vec<String> {
    keys.sort();
    keys.retain(|k| k != keep);
    // `keep` counts as one of the kept.
    let kept_others = (retention as usize).saturating_sub(1);
    let excess = keys.len().saturating_sub(kept_others);
    keys.truncate(excess);
    keys
}

async fn apply_retention(
    client: &Client,
    bucket: &str,
    prefix: &str,
    retention: u32,
    written: &str,
) -> Result<u32, String> {
    let keys = list_backups(client, bucket, prefix).await?;
    let mut deleted = 0;
    for key in beyond_retention(keys, retention, written) {
        client
            .delete_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| classify("DeleteObject", e).to_string())?;
        tracing::info!(key = %key, "old backup deleted (retention)");
        deleted += 1;
    }
    Ok(deleted)
}

/// `vibe-dataplane backup`: configuration from the same flags and environment as the
/// server, one backup, the report, and exit status 0 (succeeded or skipped) or 1 (failed,
/// so the Job is retried and reported failed).
pub async fn main(mut cli: crate::config::Cli, args: BackupArgs) -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to standard error: standard output is the report.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if cli.signing_key_file.is_none() && cli.signing_key.as_deref().unwrap_or("").is_empty() {
        // A backup signs nothing; the pod is not given the instance's token key.
        cli.signing_key = Some(hex::encode(vibe_identity::Keypair::generate().seed()));
    }
    let started_at = now();
    let failed = |message: String| {
        let report = BackupReport {
            outcome: BackupOutcome::Failed,
            started_at: started_at.clone(),
            finished_at: now(),
            bucket: Some(args.bucket.clone()),
            object_key: None,
            name: None,
            size: None,
            sha256: None,
            counts: None,
            deleted: 0,
            message: Some(message),
        };
        publish(&report, &args);
        std::process::ExitCode::FAILURE
    };
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(e) => return failed(format!("configuration error: {e}")),
    };
    let state = match AppState::new(config) {
        Ok(state) => state,
        Err(e) => return failed(format!("cannot build the CouchDB client: {e}")),
    };
    // The same start-up as the server's: the owner comes from the claim record when it is
    // not configured.
    crate::startup::spawn(&state);
    let report = run(&state, &args).await;
    publish(&report, &args);
    match report.outcome {
        BackupOutcome::Failed => std::process::ExitCode::FAILURE,
        BackupOutcome::Succeeded | BackupOutcome::Skipped => std::process::ExitCode::SUCCESS,
    }
}

/// Writes `report` as one JSON line to standard output and, when set, to the report file.
pub fn publish(report: &BackupReport, args: &BackupArgs) {
    let line = serde_json::to_string(report).unwrap_or_else(|_| "{}".into());
    println!("{line}");
    if let Some(path) = &args.report_file
        && let Err(e) = std::fs::write(path, &line)
    {
        eprintln!(
            "vibe-dataplane backup: cannot write {}: {e}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_are_recognised() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-04T03:00:09.042Z")
            .unwrap()
            .to_utc();
        let name = backup_name(at, "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(name, "20261204T030009.042Z-2e3f4a5b");
        assert!(is_backup_name(&format!("{name}.vibe.age")));
        assert!(!is_backup_name(&name));
        assert!(!is_backup_name("notes.vibe.age"));
        assert!(!is_backup_name(
            "sub/20261204T030009.042Z-2e3f4a5b.vibe.age"
        ));
        let later = backup_name(at + chrono::Duration::milliseconds(1), "00000000");
        assert!(later > name, "{later} sorts after {name}");
    }

    #[test]
    fn retention_deletes_the_oldest_and_never_the_new_one() {
        let keys: Vec<String> = ["p/3", "p/1", "p/4", "p/2"].map(String::from).to_vec();
        assert_eq!(beyond_retention(keys.clone(), 2, "p/4"), ["p/1", "p/2"]);
        assert_eq!(
            beyond_retention(keys.clone(), 1, "p/4"),
            ["p/1", "p/2", "p/3"]
        );
        assert!(beyond_retention(keys.clone(), 4, "p/4").is_empty());
        assert!(beyond_retention(keys.clone(), 9, "p/4").is_empty());
        // A clock that went back: the new backup sorts first but is still kept.
        assert_eq!(beyond_retention(keys, 2, "p/1"), ["p/2", "p/3"]);
    }
}
