//! `POST /api/v1/import`: an archive into a new, empty instance of the same owner.
//!
//! Stage, verify, then commit:
//! 1. **Stage** while the archive streams in. Documents go with `_bulk_docs new_edits=false`
//!    into a staging database (`<prefix>vibe_import_<export id>`, made fresh for every
//!    attempt); apps are held in memory; blob bytes go to their final object keys (without
//!    their metadata document no route can see them, and the blob sweep reclaims them if
//!    they stay orphaned), except keys whose metadata and object an earlier run of this
//!    import already committed, which are only read and summed so a damaged copy can never
//!    overwrite them.
//! 2. **Verify** once the manifest (the last entry) arrives: the order of entries, every
//!    entry's size and SHA-256, and the counts. A cut, damaged or altered archive is
//!    refused (400) and everything staged is removed: the staging database and every object
//!    this attempt uploaded. The instance is as before.
//! 3. **Commit**: a marker `import/state` in the system database names the export, then the
//!    staged documents are copied into the owner's database (again `new_edits=false`), apps
//!    registered, the marker set to `committed` and the staging database dropped.
//!
//! Interrupted during 1–2: nothing was committed; send the archive again. Interrupted during
//! 3: the instance is not empty any more, but the marker names this export, so sending the
//! same archive again is accepted and completes the commit (storing a revision twice with
//! `new_edits=false` changes nothing). Repeating a finished import is accepted the same way
//! and changes nothing. Any other archive into a non-empty instance is refused (409).
//!
//! **Blobs are not sent twice.** When an attempt is cut off (the archive's stream broke or
//! ended early, or a store was unavailable), the blob objects it stored completely stay, still
//! invisible, and [`RESUME_ID`] in the system database lists them with their size, SHA-256
//! and entity tag (also written when a commit starts). The next attempt of the same export
//! finds an object there with the same key, size and entity tag: it reads and sums the
//! archive's bytes without uploading them, and refuses the archive if they are not the bytes
//! stored. An archive refused for its content (damaged, altered) removes every object of
//! every attempt that has no metadata document, and the record; a committed import removes
//! the record. Objects of an attempt that is never resumed are reclaimed by the blob sweep.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::{ReaderStream, StreamReader};
use vibe_api::export::{
    self as format, ArchiveHeader, BlobRecord, Counts, ImportReport, Manifest, ManifestEntry,
};

use super::archive::{Summing, sum_of};
use super::exporter::blob_of;
use super::leaves::{self, DistinctIds};
use super::require_owner_itself;
use crate::apps::{APP_DOC_PREFIX, AppRecord, is_valid_permission};
use crate::auth::Caller;
use crate::blobs::stream::{MAX_SINGLE_PUT, upload_sized, upload_stream};
use crate::blobs::{BlobError, Blobs, KeyScheme};
use crate::couch::{CouchError, Database};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The marker document in the system database.
pub const MARKER_ID: &str = "import/state";
/// The system-database document listing the blob objects that attempts of an import stored
/// completely (for the next attempt, which does not upload them again).
pub const RESUME_ID: &str = "import/stored-blobs";
/// How every refusal of an archive that ends too early begins.
const TRUNCATED: &str = "Archive refused: it is truncated";

/// A blob object an import attempt stored completely: what the next attempt checks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredBlob {
    /// Id of the blob's metadata document.
    pub metadata_id: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
    /// The object's entity tag when it was stored (a rewrite changes it).
    pub etag: String,
}

/// Whether a failed attempt was cut off (the archive's stream ended or broke, or a store
/// was away) rather than refused for its content: its complete blobs are kept for the next
/// attempt.
fn interrupted(error: &ApiError) -> bool {
    match error {
        ApiError::Unavailable(_) => true,
        ApiError::BadRequest(message) => message.starts_with(TRUNCATED),
        _ => false,
    }
}
/// Largest JSON entry (header, document chunk, apps, index, manifest) read into memory.
pub const MAX_JSON_ENTRY_BYTES: u64 = 64 * 1024 * 1024;

/// Data databases with an import running in this process.
static RUNNING: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

/// Whether an import into the data database `db` is running in this process.
pub fn import_running(db: &str) -> bool {
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(db)
}

/// One import at a time per data database (in this process).
struct Running(String);

impl Running {
    fn claim(db: &str) -> ApiResult<Self> {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if !running.insert(db.to_string()) {
            return Err(ApiError::Conflict(
                "An import into this instance is already running.".into(),
            ));
        }
        Ok(Self(db.to_string()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

fn damaged(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(format!("Archive refused: {}", message.into()))
}

fn cut(error: io::Error) -> ApiError {
    tracing::info!(error = %error, "import: archive unreadable");
    damaged("it is truncated or not a tar archive (the stream ended or broke inside an entry).")
}

/// The handler.
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<ImportReport>> {
    require_owner_itself(&caller)?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = media.split(';').next().unwrap_or_default().trim();
    if media != format::MEDIA_TYPE && media != "application/octet-stream" {
        return Err(ApiError::UnsupportedMediaType(format!(
            "An archive is sent as '{}' (or application/octet-stream).",
            format::MEDIA_TYPE
        )));
    }
    // In a task of its own: a client that goes away mid-upload must not cancel the
    // clean-up of what this attempt staged.
    tokio::spawn(run_import(state, body))
        .await
        .map_err(ApiError::internal)?
}

async fn run_import(state: AppState, body: Body) -> ApiResult<Json<ImportReport>> {
    let data = state.data_db().await?;
    let system = state.system_db().await?;
    let _running = Running::claim(data.name())?;

    let stream = body.into_data_stream().map_err(io::Error::other);
    let mut reader = tokio::io::BufReader::with_capacity(64 * 1024, StreamReader::new(stream));
    let first = reader.fill_buf().await.map_err(cut)?;
    if first.starts_with(format::AGE_MAGIC) {
        return Err(damaged(
            "it is encrypted to the owner (age). Decrypt it with the owner's key first; \
             `vibe import` does this.",
        ));
    }
    let mut archive = tokio_tar::Archive::new(reader);
    let mut entries = archive.entries().map_err(cut)?;
    let mut run = Run::new(state, data, system);
    match run.read(&mut entries).await {
        Ok(()) => run.commit().await,
        Err(e) => {
            run.discard(interrupted(&e)).await;
            Err(e)
        }
    }
}

/// Where in the fixed entry order the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Documents,
    Index,
    Blobs,
    End,
}

/// One import attempt.
struct Run {
    state: AppState,
    data: Database,
    system: Database,
    phase: Phase,
    head: Option<ArchiveHeader>,
    staging: Option<Database>,
    repeated: bool,
    next_chunk: u32,
    entries: Vec<ManifestEntry>,
    counts: Counts,
    ids: DistinctIds,
    apps: Vec<AppRecord>,
    blob_meta: HashMap<String, BlobRecord>,
    expected: VecDeque<BlobRecord>,
    reserved: Vec<(String, u64)>,
    uploaded: Vec<String>,
    /// Complete blob objects earlier attempts of this export stored, by object key.
    resume: HashMap<String, StoredBlob>,
    /// Complete blob objects of this attempt (uploaded, or kept from `resume`), by key.
    stored: HashMap<String, StoredBlob>,
    manifest: Option<Manifest>,
}

impl Run {
    fn new(state: AppState, data: Database, system: Database) -> Self {
        Self {
            state,
            data,
            system,
            phase: Phase::Header,
            head: None,
            staging: None,
            repeated: false,
            next_chunk: 1,
            entries: Vec::new(),
            counts: Counts::default(),
            ids: DistinctIds::default(),
            apps: Vec::new(),
            blob_meta: HashMap::new(),
            expected: VecDeque::new(),
            reserved: Vec::new(),
            uploaded: Vec::new(),
            resume: HashMap::new(),
            stored: HashMap::new(),
            manifest: None,
        }
    }

    /// Stage every entry, then verify against the manifest.
    async fn read<S, E>(&mut self, entries: &mut S) -> ApiResult<()>
    where
        S: Stream<Item = io::Result<E>> + Unpin,
        E: AsyncRead + Unpin + EntryInfo,
    {
        while let Some(entry) = entries.next().await {
            let mut entry = entry.map_err(cut)?;
            let path = entry.entry_path()?;
            let size = entry.entry_size();
            if self.phase == Phase::End {
                return Err(damaged(format!(
                    "entry '{path}' follows the manifest, which must be last."
                )));
            }
            if self.phase == Phase::Blobs && self.expected.front().is_some_and(|b| b.path == path) {
                self.blob(&mut entry, size).await?;
                continue;
            }
            let bytes = read_json_entry(&mut entry, &path, size).await?;
            match (self.phase, path.as_str()) {
                (Phase::Header, format::HEADER_PATH) => self.header(&bytes).await?,
                (Phase::Documents, p) if p == format::document_chunk_path(self.next_chunk) => {
                    self.documents(&bytes).await?;
                    self.next_chunk += 1;
                }
                (Phase::Documents, format::APPS_PATH) => {
                    self.app_lines(&bytes)?;
                    self.phase = Phase::Index;
                }
                (Phase::Index, format::BLOB_INDEX_PATH) => {
                    self.index(&bytes)?;
                    self.phase = Phase::Blobs;
                }
                (Phase::Blobs, format::MANIFEST_PATH) if self.expected.is_empty() => {
                    self.manifest = Some(parse(&bytes, format::MANIFEST_PATH)?);
                    self.phase = Phase::End;
                    continue;
                }
                (_, other) => {
                    return Err(damaged(format!(
                        "entry '{other}' is not the one expected here \
                         (see docs/export-format.md for the order)."
                    )));
                }
            }
            let (size, sha256) = sum_of(&bytes);
            self.entries.push(ManifestEntry { path, size, sha256 });
        }
        if self.phase != Phase::End {
            return Err(damaged("it is truncated: it ends before its manifest."));
        }
        self.verify()
    }

    async fn header(&mut self, bytes: &[u8]) -> ApiResult<()> {
        let head: ArchiveHeader = parse(bytes, format::HEADER_PATH)?;
        if head.format != format::FORMAT {
            return Err(damaged("it is not a Vibe export (wrong 'format')."));
        }
        if head.version != format::FORMAT_VERSION {
            return Err(damaged(format!(
                "format version {} is not one this data plane reads (it reads version {}).",
                head.version,
                format::FORMAT_VERSION
            )));
        }
        let export = uuid::Uuid::parse_str(&head.export_id)
            .map_err(|_| damaged("its export id is not a UUID."))?;
        let owner = self
            .state
            .owner()
            .ok_or_else(|| ApiError::Unavailable("This instance has no owner yet.".into()))?;
        if head.owner_did != owner.to_string() {
            return Err(ApiError::Forbidden(format!(
                "This archive belongs to {}; this instance's owner is {owner}. \
                 An import goes only into an instance of the same owner.",
                head.owner_did
            )));
        }
        let marker = self.system.get(MARKER_ID).await?;
        let same_export = marker
            .as_ref()
            .and_then(|m| m.get("exportId"))
            .and_then(Value::as_str)
            == Some(head.export_id.as_str());
        if same_export {
            self.repeated = marker
                .as_ref()
                .and_then(|m| m.get("state"))
                .and_then(Value::as_str)
                == Some("committed");
        } else if self.holds_data().await? {
            return Err(ApiError::Conflict(
                "This instance already holds data; an import goes only into a new, empty \
                 instance (sending the same archive again resumes or repeats its import)."
                    .into(),
            ));
        }
        let name = format!(
            "{}vibe_import_{}",
            self.state.config.db_prefix,
            export.simple()
        );
        let staging = self.state.couch.db(&name);
        match staging.destroy().await {
            Ok(()) | Err(CouchError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        staging.ensure_exists().await?;
        self.staging = Some(staging);
        self.resume = self.load_resume(&head.export_id).await?;
        self.head = Some(head);
        self.phase = Phase::Documents;
        Ok(())
    }

    /// The blobs earlier attempts of `export_id` stored completely (none when the record
    /// belongs to another export, or is unreadable).
    async fn load_resume(&self, export_id: &str) -> ApiResult<HashMap<String, StoredBlob>> {
        let Some(doc) = self.system.get(RESUME_ID).await? else {
            return Ok(HashMap::new());
        };
        if doc.get("exportId").and_then(Value::as_str) != Some(export_id) {
            return Ok(HashMap::new());
        }
        Ok(doc
            .get("blobs")
            .cloned()
            .and_then(|b| serde_json::from_value(b).ok())
            .unwrap_or_default())
    }

    /// Records the complete blob objects of this and earlier attempts of this export.
    async fn save_resume(&self) -> ApiResult<()> {
        let head = self.head.as_ref().ok_or(ApiError::Internal)?;
        let mut blobs = self.resume.clone();
        blobs.extend(self.stored.clone());
        let mut doc = json!({ "exportId": head.export_id, "blobs": blobs });
        if let Some(rev) = self
            .system
            .get(RESUME_ID)
            .await?
            .and_then(|d| d.get("_rev").cloned())
        {
            doc["_rev"] = rev;
        }
        self.system.put(RESUME_ID, &doc).await?;
        Ok(())
    }

    /// Removes the record of stored blobs (best effort: a stale one is ignored by an import
    /// of another export, and checked object by object by one of the same export).
    async fn forget_resume(&self) {
        let rev = match self.system.get(RESUME_ID).await {
            Ok(Some(doc)) => doc.get("_rev").and_then(Value::as_str).map(str::to_string),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "import: record of stored blobs left behind");
                return;
            }
        };
        if let Some(rev) = rev
            && let Err(e) = self.system.delete(RESUME_ID, &rev).await
        {
            tracing::warn!(error = %e, "import: record of stored blobs left behind");
        }
    }

    /// The copy an earlier attempt stored of `record`, when the object is still the one it
    /// stored (same size and entity tag).
    async fn resumable(&self, blobs: &Blobs, record: &BlobRecord) -> ApiResult<Option<StoredBlob>> {
        let Some(stored) = self.resume.get(&record.object_key) else {
            return Ok(None);
        };
        if stored.size != record.size
            || stored.metadata_id != record.metadata_id
            || stored.etag.is_empty()
        {
            return Ok(None);
        }
        let found = blobs.store.head(&record.object_key).await?;
        Ok(found
            .filter(|o| o.size == stored.size && o.etag.as_deref() == Some(stored.etag.as_str()))
            .map(|_| stored.clone()))
    }

    /// Whether the instance holds documents or apps.
    async fn holds_data(&self) -> ApiResult<bool> {
        if !self.state.grants.is_empty() {
            return Ok(true);
        }
        let docs = self.data.docs_with_prefix("", 20).await?;
        Ok(docs.iter().any(|d| {
            d.get("_id")
                .and_then(Value::as_str)
                .is_some_and(leaves::is_exported_id)
        }))
    }

    async fn documents(&mut self, bytes: &[u8]) -> ApiResult<()> {
        let mut docs = Vec::new();
        for line in lines(bytes) {
            let doc: Value = serde_json::from_slice(line)
                .map_err(|_| damaged("a document line is not JSON."))?;
            let id = doc.get("_id").and_then(Value::as_str);
            let rev = doc.get("_rev").and_then(Value::as_str);
            let (Some(id), Some(_)) = (id, rev) else {
                return Err(damaged("a document line lacks '_id' or '_rev'."));
            };
            if !leaves::is_exported_id(id) || doc.get("_attachments").is_some() {
                return Err(damaged(format!(
                    "document '{id}' is not one an export writes."
                )));
            }
            self.ids.insert(id);
            if let Some(record) = blob_of(&doc) {
                self.blob_meta.insert(record.metadata_id.clone(), record);
            }
            self.counts.revisions += 1;
            docs.push(doc);
        }
        let staging = self.staging.as_ref().ok_or(ApiError::Internal)?;
        leaves::store(staging, &docs).await.map_err(|e| match e {
            CouchError::BadRequest { .. } => {
                tracing::info!(error = %e, "import: a document was refused");
                damaged("it holds a document revision the database refuses.")
            }
            other => other.into(),
        })
    }

    fn app_lines(&mut self, bytes: &[u8]) -> ApiResult<()> {
        for line in lines(bytes) {
            let record: format::AppRecord = parse(line, format::APPS_PATH)?;
            let value = serde_json::to_value(&record).map_err(ApiError::internal)?;
            let app: AppRecord = serde_json::from_value(value).map_err(|_| {
                damaged(format!(
                    "app '{}' has an unknown grant setting.",
                    record.app_id
                ))
            })?;
            if app.app_id.trim().is_empty()
                || !app.permissions.iter().all(|p| is_valid_permission(p))
                || !app.grants.keys().all(|p| is_valid_permission(p))
            {
                return Err(damaged(format!(
                    "app '{}' has an invalid id or permission.",
                    app.app_id
                )));
            }
            self.counts.apps += 1;
            self.apps.push(app);
        }
        Ok(())
    }

    fn index(&mut self, bytes: &[u8]) -> ApiResult<()> {
        let head = self.head.as_ref().ok_or(ApiError::Internal)?;
        let mut listed = HashSet::new();
        let scheme = match &self.state.blobs {
            Some(blobs) if !self.blob_meta.is_empty() => Some(blobs.scheme(&self.state)?),
            _ => None,
        };
        for line in lines(bytes) {
            let record: BlobRecord = parse(line, format::BLOB_INDEX_PATH)?;
            if self.blob_meta.get(&record.metadata_id) != Some(&record) {
                return Err(damaged(format!(
                    "blob '{}' in the index does not match its metadata document.",
                    record.path
                )));
            }
            let Some(scheme) = &scheme else {
                return Err(ApiError::BadRequest(
                    "This instance has no object store, and the archive holds blobs.".into(),
                ));
            };
            if scheme.parse(&record.object_key).is_err() {
                return Err(ApiError::BadRequest(format!(
                    "Blob key '{}' is outside this instance's key prefix '{}'; \
                     import needs the same S3_KEY_PREFIX as the exporting instance.",
                    record.object_key,
                    scheme.instance_prefix()
                )));
            }
            listed.insert(record.metadata_id.clone());
            self.expected.push_back(record);
        }
        if !head.includes_blobs && !self.blob_meta.is_empty() {
            return Err(ApiError::BadRequest(
                "Archive refused: it was exported without blob bytes (?blobs=false) and holds \
                 blob metadata, which would point at nothing here."
                    .into(),
            ));
        }
        if listed.len() != self.blob_meta.len() {
            return Err(damaged(
                "its blob index leaves out blobs its documents describe.",
            ));
        }
        if let Some(blobs) = self.blobs()? {
            let until = SystemTime::now() + Duration::from_secs(3600);
            for record in &self.expected {
                blobs
                    .ledger
                    .reserve(&record.object_key, record.size, until)?;
                self.reserved.push((record.object_key.clone(), record.size));
            }
        }
        Ok(())
    }

    fn blobs(&self) -> ApiResult<Option<std::sync::Arc<Blobs>>> {
        if self.expected.is_empty() {
            return Ok(None);
        }
        self.state.blobs.clone().map(Some).ok_or_else(|| {
            ApiError::BadRequest(
                "This instance has no object store, and the archive holds blobs.".into(),
            )
        })
    }

    async fn blob<E: AsyncRead + Unpin>(&mut self, entry: &mut E, size: u64) -> ApiResult<()> {
        let record = self.expected.pop_front().ok_or(ApiError::Internal)?;
        if size != record.size {
            return Err(damaged(format!(
                "blob '{}' is {size} bytes, its index says {}.",
                record.path, record.size
            )));
        }
        let blobs = self
            .blobs()?
            .or(self.state.blobs.clone())
            .ok_or(ApiError::Internal)?;
        let scheme: KeyScheme = blobs.scheme(&self.state)?;
        blobs.ready(&scheme).await?;
        // Bytes an earlier run of this import committed (metadata in, object of the right
        // size there) are only read and summed, never overwritten.
        let committed = self.data.get(&record.metadata_id).await?.is_some()
            && blobs
                .store
                .head(&record.object_key)
                .await?
                .is_some_and(|o| o.size == record.size);
        // Bytes an earlier, interrupted attempt stored completely are checked, not sent again.
        let kept = match committed {
            true => None,
            false => self.resumable(&blobs, &record).await?,
        };
        let mut summing = Summing::new(entry);
        if committed || kept.is_some() {
            tokio::io::copy(&mut summing, &mut tokio::io::sink())
                .await
                .map_err(cut)?;
        } else if record.size <= MAX_SINGLE_PUT {
            // The archive says the exact size: one PutObject fed chunk by chunk through a
            // small channel (the entry reader is borrowed, the upload wants a 'static body),
            // nothing buffered beyond a few chunks.
            self.uploaded.push(record.object_key.clone());
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(4);
            let pump = async {
                let mut reader = ReaderStream::with_capacity(&mut summing, 64 * 1024);
                while let Some(chunk) = reader.next().await {
                    match chunk {
                        Ok(chunk) => {
                            if tx.send(Ok(chunk)).await.is_err() {
                                // The upload stopped; its own error says why.
                                return Ok(());
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string())).await;
                            return Err(e);
                        }
                    }
                }
                drop(tx);
                Ok(())
            };
            let upload = upload_sized(
                &blobs.store,
                &record.object_key,
                &record.content_type,
                ReceiverStream::new(rx),
                record.size,
            );
            let (pumped, sent) = tokio::join!(pump, upload);
            pumped.map_err(cut)?;
            sent.map_err(|e| match e {
                // The archive's own stream broke, ended early or ran long.
                BlobError::Body(cause) => cut(io::Error::other(cause)),
                other => other.into(),
            })?;
        } else {
            let body = ReaderStream::with_capacity(&mut summing, 64 * 1024);
            self.uploaded.push(record.object_key.clone());
            upload_stream(
                &blobs.store,
                &record.object_key,
                &record.content_type,
                body,
                record.size,
            )
            .await
            .map_err(|e| match e {
                // The archive's own stream broke (cut, or not a tar any more).
                BlobError::Body(cause) => cut(io::Error::other(cause)),
                other => other.into(),
            })?;
        }
        if summing.bytes_read() != record.size {
            return Err(damaged("it is truncated inside a blob."));
        }
        let (size, sha256) = summing.finish();
        let metrics = &self.state.metrics;
        match kept {
            Some(kept) if kept.sha256 != sha256 => {
                return Err(damaged(format!(
                    "blob '{}' is not the one an earlier, interrupted attempt of this import \
                     stored (its SHA-256 differs): one of the two copies of the archive is \
                     damaged.",
                    record.path
                )));
            }
            Some(kept) => {
                metrics.import_blob_bytes("kept", size);
                self.stored.insert(record.object_key.clone(), kept);
            }
            None if committed => metrics.import_blob_bytes("kept", size),
            None => {
                metrics.import_blob_bytes("uploaded", size);
                let etag = blobs
                    .store
                    .head(&record.object_key)
                    .await?
                    .and_then(|o| o.etag)
                    .unwrap_or_default();
                self.stored.insert(
                    record.object_key.clone(),
                    StoredBlob {
                        metadata_id: record.metadata_id.clone(),
                        size,
                        sha256: sha256.clone(),
                        etag,
                    },
                );
            }
        }
        self.entries.push(ManifestEntry {
            path: record.path,
            size,
            sha256,
        });
        self.counts.blobs += 1;
        self.counts.blob_bytes += size;
        Ok(())
    }

    fn verify(&mut self) -> ApiResult<()> {
        let manifest = self.manifest.as_ref().ok_or(ApiError::Internal)?;
        let head = self.head.as_ref().ok_or(ApiError::Internal)?;
        if manifest.format != format::FORMAT
            || manifest.version != head.version
            || manifest.export_id != head.export_id
        {
            return Err(damaged("its manifest belongs to another export."));
        }
        for (i, found) in self.entries.iter().enumerate() {
            match manifest.entries.get(i) {
                Some(listed) if listed == found => {}
                _ => {
                    return Err(damaged(format!(
                        "entry '{}' does not match the manifest (size or SHA-256 differs): \
                         the archive is damaged or was altered.",
                        found.path
                    )));
                }
            }
        }
        if manifest.entries.len() != self.entries.len() {
            return Err(damaged(
                "the manifest lists entries the archive does not hold.",
            ));
        }
        self.counts.documents = self.ids.count();
        if manifest.counts != self.counts {
            return Err(damaged(
                "the counts in its manifest do not match its content.",
            ));
        }
        Ok(())
    }

    async fn set_marker(&self, state: &str) -> ApiResult<()> {
        let head = self.head.as_ref().ok_or(ApiError::Internal)?;
        let mut doc = json!({
            "exportId": head.export_id,
            "state": state,
            "sourceInstance": head.source_instance,
            "at": chrono::Utc::now().to_rfc3339(),
        });
        if let Some(rev) = self
            .system
            .get(MARKER_ID)
            .await?
            .and_then(|d| d.get("_rev").cloned())
        {
            doc["_rev"] = rev;
        }
        self.system.put(MARKER_ID, &doc).await?;
        Ok(())
    }

    async fn commit(mut self) -> ApiResult<Json<ImportReport>> {
        if !self.stored.is_empty() {
            // A commit cut off half-way is finished by the next attempt: it need not send
            // the blobs again.
            self.save_resume().await?;
        }
        self.set_marker("committing").await?;
        let staging = self.staging.take().ok_or(ApiError::Internal)?;
        let mut since = None;
        loop {
            let page = leaves::page(&staging, since.take()).await?;
            if page.done {
                break;
            }
            leaves::store(&self.data, &page.docs).await?;
            since = Some(page.next);
        }
        let owner = self.state.owner().ok_or(ApiError::Internal)?;
        for app in std::mem::take(&mut self.apps) {
            let id = format!("{APP_DOC_PREFIX}{}", app.app_id);
            let mut doc = serde_json::to_value(&app).map_err(ApiError::internal)?;
            doc["collection"] = json!("apps");
            doc["userDid"] = json!(owner.to_string());
            if let Some(rev) = self
                .system
                .get(&id)
                .await?
                .and_then(|d| d.get("_rev").cloned())
            {
                doc["_rev"] = rev;
            }
            self.system.put(&id, &doc).await?;
            self.state.grants.put(app);
        }
        if let Some(blobs) = &self.state.blobs {
            for (key, size) in std::mem::take(&mut self.reserved) {
                if let Err(e) = blobs.ledger.commit(&key, size) {
                    tracing::warn!(error = %e, "import: blob counted over quota");
                }
            }
        }
        self.set_marker("committed").await?;
        self.forget_resume().await;
        super::restore::import_committed(&self.state);
        if let Err(e) = staging.destroy().await {
            tracing::warn!(error = %e, "import: staging database left behind");
        }
        let head = self.head.take().ok_or(ApiError::Internal)?;
        tracing::info!(export = %head.export_id, counts = ?self.counts, "import committed");
        Ok(Json(ImportReport {
            export_id: head.export_id,
            counts: self.counts.clone(),
            repeated: self.repeated,
        }))
    }

    /// Remove what a failed attempt staged (best effort; the blob sweep reclaims objects
    /// left behind). An `interrupted` attempt keeps its complete blob objects and records
    /// them for the next attempt; one refused for its content removes them, and those of
    /// earlier attempts, unless a committed metadata document points at them.
    async fn discard(mut self, interrupted: bool) {
        if let Some(staging) = self.staging.take()
            && let Err(e) = staging.destroy().await
        {
            tracing::warn!(error = %e, "import: staging database left behind");
        }
        if let Some(blobs) = &self.state.blobs {
            let mut remove: Vec<(String, Option<String>)> = self
                .uploaded
                .iter()
                .filter(|k| !interrupted || !self.stored.contains_key(*k))
                .map(|k| (k.clone(), None))
                .collect();
            if interrupted {
                if self.head.is_some()
                    && !(self.stored.is_empty() && self.resume.is_empty())
                    && let Err(e) = self.save_resume().await
                {
                    tracing::warn!(error = %e, "import: stored blobs not recorded; the next attempt sends them again");
                }
            } else {
                for (key, stored) in self.resume.iter().chain(self.stored.iter()) {
                    remove.push((key.clone(), Some(stored.metadata_id.clone())));
                }
                self.forget_resume().await;
            }
            let mut seen = HashSet::new();
            for (key, metadata_id) in remove {
                if !seen.insert(key.clone()) {
                    continue;
                }
                if let Some(id) = metadata_id
                    && !matches!(self.data.get(&id).await, Ok(None))
                {
                    // Committed (or unknown): not this attempt's to remove.
                    continue;
                }
                if let Err(e) = blobs.store.delete(&key).await {
                    tracing::warn!(error = %e, "import: uploaded object left for the sweep");
                }
            }
            for (key, _) in &self.reserved {
                blobs.ledger.release(key);
            }
        }
    }
}

/// What the importer needs of a tar entry.
pub trait EntryInfo {
    /// The entry's path, as text.
    fn entry_path(&self) -> ApiResult<String>;
    /// The size its header declares.
    fn entry_size(&self) -> u64;
}

impl<R: AsyncRead + Unpin> EntryInfo for tokio_tar::Entry<R> {
    fn entry_path(&self) -> ApiResult<String> {
        let path = self.path().map_err(cut)?;
        path.to_str()
            .map(str::to_string)
            .ok_or_else(|| damaged("an entry's path is not UTF-8."))
    }
    fn entry_size(&self) -> u64 {
        self.effective_size()
    }
}

async fn read_json_entry<E: AsyncRead + Unpin>(
    entry: &mut E,
    path: &str,
    size: u64,
) -> ApiResult<Vec<u8>> {
    if size > MAX_JSON_ENTRY_BYTES {
        return Err(damaged(format!(
            "entry '{path}' is larger than {MAX_JSON_ENTRY_BYTES} bytes."
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .take(MAX_JSON_ENTRY_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(cut)?;
    if bytes.len() as u64 != size {
        return Err(damaged("it is truncated inside an entry."));
    }
    Ok(bytes)
}

fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], path: &str) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        damaged(format!(
            "entry '{path}' is not what the format says ({}).",
            e.to_string().split(" at line").next().unwrap_or_default()
        ))
    })
}
