//! `GET /api/v1/export`: the owner's whole instance as one streamed archive.
//!
//! A task writes the tar (optionally through age) into a bounded channel that is the
//! response body: documents are read page by page, blob bytes straight from S3, so memory
//! stays flat whatever the size. A failure after the first byte aborts the response (the
//! client sees a cut transfer and the archive lacks its manifest, so no import accepts it).

use std::collections::HashSet;
use std::io;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::SinkExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::io::{CopyToBytes, SinkWriter};
use tokio_util::sync::PollSender;
use vibe_api::export::{
    self as format, ArchiveHeader, BlobRecord, Counts, DocumentRecord, Manifest,
};

use super::archive::ArchiveWriter;
use super::{crypto, leaves, require_owner_itself};
use crate::auth::Caller;
use crate::blobs::Blobs;
use crate::blobs::store::classify;
use crate::couch::Database;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use vibe_identity::Did;

/// Lines per document chunk.
pub const CHUNK_LINES: usize = 1000;
/// Bytes after which a document chunk is closed.
pub const CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Body pieces buffered between the writer task and the connection.
const CHANNEL_PIECES: usize = 16;

/// Query of `GET /api/v1/export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `false` leaves blob bytes out.
    #[serde(default = "yes")]
    blobs: bool,
    /// `owner`: encrypt to the owner's DID key.
    #[serde(default)]
    encrypt: Option<String>,
}

fn yes() -> bool {
    true
}

/// The handler.
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ExportQuery>,
) -> ApiResult<Response> {
    require_owner_itself(&caller)?;
    let encrypt = match query.encrypt.as_deref() {
        None => false,
        Some("owner") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "'encrypt' must be 'owner' (encrypt to the owner's DID key).".into(),
            ));
        }
    };
    let job = Job::prepare(&state, caller.did, query.blobs).await?;
    let export_id = job.head.export_id.clone();
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_PIECES);
    tokio::spawn(async move {
        let failed = tx.clone();
        if let Err(e) = job.write_to(channel_writer(tx), encrypt).await {
            tracing::warn!(error = %e, "export failed; the response is cut");
            let _ = failed.send(Err(io::Error::other("export failed"))).await;
        }
    });
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let (media, suffix) = if encrypt {
        (format::ENCRYPTED_MEDIA_TYPE, ".age")
    } else {
        (format::MEDIA_TYPE, "")
    };
    let disposition = format!("attachment; filename=\"vibe-export-{export_id}.vibe{suffix}\"");
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&export_id) {
        headers.insert("x-vibe-export-id", value);
    }
    Ok(response)
}

/// An [`AsyncWrite`] whose bytes become the items of `tx` (the response body, or the parts
/// of a backup upload).
pub(crate) fn channel_writer(
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
) -> impl AsyncWrite + Unpin + Send + 'static {
    let sink = PollSender::new(tx)
        .sink_map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
        .with(|piece: Bytes| futures::future::ready(Ok::<_, io::Error>(Ok(piece))));
    SinkWriter::new(CopyToBytes::new(sink))
}

/// What one export writes: the route's response, or a scheduled backup
/// ([`super::backup`]).
pub struct Job {
    state: AppState,
    db: Database,
    blobs: Option<std::sync::Arc<Blobs>>,
    /// The archive's header (its `exportId` names the export).
    pub head: ArchiveHeader,
}

impl Job {
    /// Everything an export of `owner`'s instance needs, checked before the first byte:
    /// the data database, and the bucket when `include_blobs` and blobs are configured
    /// (so a failure is an error status, not a cut stream).
    pub async fn prepare(state: &AppState, owner: Did, include_blobs: bool) -> ApiResult<Self> {
        let db = state.data_db().await?;
        let blobs = match (&state.blobs, include_blobs) {
            (Some(blobs), true) => {
                blobs.ready(&blobs.scheme(state)?).await?;
                Some(blobs.clone())
            }
            _ => None,
        };
        let head = ArchiveHeader {
            format: format::FORMAT.into(),
            version: format::FORMAT_VERSION,
            export_id: uuid::Uuid::now_v7().to_string(),
            owner_did: owner.to_string(),
            source_instance: state.config.public_url.to_string(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            includes_blobs: blobs.is_some(),
        };
        Ok(Self {
            state: state.clone(),
            db,
            blobs,
            head,
        })
    }

    /// Writes the archive to `out`, encrypted to the owner (the header's DID) when `encrypt`,
    /// and shuts `out` down. Returns the manifest's counts.
    pub async fn write_to<W>(self, out: W, encrypt: bool) -> io::Result<Counts>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        if encrypt {
            let owner = Did::parse(&self.head.owner_did).map_err(io::Error::other)?;
            let out = crypto::encrypt_to_owner(&owner, out).await?;
            self.write(out).await
        } else {
            self.write(out).await
        }
    }

    async fn write<W: AsyncWrite + Unpin + Send + 'static>(self, out: W) -> io::Result<Counts> {
        let mut archive = ArchiveWriter::new(out);
        let head = serde_json::to_vec(&self.head).map_err(io::Error::other)?;
        archive.append_bytes(format::HEADER_PATH, &head).await?;

        let mut counts = Counts::default();
        let mut ids = leaves::DistinctIds::default();
        let mut blobs: Vec<BlobRecord> = Vec::new();
        let mut blob_paths = HashSet::new();
        let mut chunk = Vec::new();
        let (mut lines, mut chunk_no) = (0usize, 1u32);
        let mut since = None;
        loop {
            let page = leaves::page(&self.db, since.take())
                .await
                .map_err(io::Error::other)?;
            if page.done {
                break;
            }
            for doc in page.docs {
                if let Some(id) = doc.get("_id").and_then(Value::as_str) {
                    ids.insert(id);
                }
                if self.blobs.is_some()
                    && let Some(record) = blob_of(&doc)
                    && blob_paths.insert(record.path.clone())
                {
                    blobs.push(record);
                }
                serde_json::to_writer(&mut chunk, &DocumentRecord(doc))
                    .map_err(io::Error::other)?;
                chunk.push(b'\n');
                counts.revisions += 1;
                lines += 1;
                if lines >= CHUNK_LINES || chunk.len() >= CHUNK_BYTES {
                    archive
                        .append_bytes(&format::document_chunk_path(chunk_no), &chunk)
                        .await?;
                    chunk.clear();
                    lines = 0;
                    chunk_no += 1;
                }
            }
            since = Some(page.next);
        }
        if lines > 0 {
            archive
                .append_bytes(&format::document_chunk_path(chunk_no), &chunk)
                .await?;
        }
        counts.documents = ids.count();

        let mut apps = Vec::new();
        for app in self.state.grants.all() {
            let value = serde_json::to_value(&*app).map_err(io::Error::other)?;
            let record: format::AppRecord =
                serde_json::from_value(value).map_err(io::Error::other)?;
            serde_json::to_writer(&mut apps, &record).map_err(io::Error::other)?;
            apps.push(b'\n');
            counts.apps += 1;
        }
        archive.append_bytes(format::APPS_PATH, &apps).await?;

        let mut index = Vec::new();
        for record in &blobs {
            serde_json::to_writer(&mut index, record).map_err(io::Error::other)?;
            index.push(b'\n');
        }
        archive
            .append_bytes(format::BLOB_INDEX_PATH, &index)
            .await?;
        if let Some(store) = &self.blobs {
            for record in &blobs {
                let object = store
                    .store
                    .client
                    .get_object()
                    .bucket(store.store.bucket())
                    .key(&record.object_key)
                    .send()
                    .await
                    .map_err(|e| io::Error::other(classify("GetObject", e)))?;
                let length = object.content_length().unwrap_or(-1);
                if u64::try_from(length).ok() != Some(record.size) {
                    return Err(io::Error::other(format!(
                        "object {} has {length} bytes, its metadata says {}",
                        record.object_key, record.size
                    )));
                }
                let reader = object.body.into_async_read();
                archive
                    .append_stream(&record.path, record.size, reader)
                    .await?;
                counts.blobs += 1;
                counts.blob_bytes += record.size;
            }
        }

        let manifest = Manifest {
            format: format::FORMAT.into(),
            version: format::FORMAT_VERSION,
            export_id: self.head.export_id.clone(),
            counts: counts.clone(),
            entries: archive.entries().to_vec(),
        };
        let manifest = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
        archive.finish(&manifest).await.map(|_| counts)
    }
}

/// The blob a document describes, when it is a live blob metadata document.
pub(super) fn blob_of(doc: &Value) -> Option<BlobRecord> {
    let id = doc.get("_id")?.as_str()?;
    let uuid = id.strip_prefix("blobs/")?;
    uuid::Uuid::parse_str(uuid).ok()?;
    if doc.get("_deleted").and_then(Value::as_bool) == Some(true)
        || doc.get("collection").and_then(Value::as_str) != Some("blobs")
    {
        return None;
    }
    Some(BlobRecord {
        path: format::blob_path(uuid),
        metadata_id: id.to_string(),
        object_key: doc.get("objectKey")?.as_str()?.to_string(),
        content_type: doc
            .get("contentType")
            .and_then(Value::as_str)
            .unwrap_or("application/octet-stream")
            .to_string(),
        size: doc.get("size")?.as_u64()?,
    })
}
