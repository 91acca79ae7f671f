//! `GET /api/v1/restore/archive`: the backup this instance is restored from
//! (`VIBE_RESTORE_BUCKET`/`VIBE_RESTORE_OBJECT_KEY`, set by the operator from
//! `spec.restoreFrom`), streamed to the owner as stored: encrypted to the owner's key.
//!
//! The data plane cannot read a backup (it never holds the owner's private key), so a
//! restore is driven by the owner: `vibe restore` fetches the archive here, decrypts it on
//! the owner's machine and sends the plain archive to `POST /api/v1/import`, which verifies
//! and commits it as any import (docs/backup-and-migration.md).
//!
//! Until that import completes, the instance refuses writes that would make it non-empty
//! ([`refuse_before_restore`], a 409 `restore_pending`), because an import only goes into an
//! empty instance. `spec.restoreFrom` is immutable, so the owner's way out is
//! `POST /api/v1/restore/abandon` ([`abandon`]). Either end is recorded in the system
//! database (the import's marker `import/state` committed, or [`ABANDONED_ID`]), so it
//! survives restarts and every replica sees it, and published to the instance's own bucket
//! at [`RESTORE_OUTCOME_KEY`], where the operator reads it into `status.restore`
//! ([`publish_outcome`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio_util::io::ReaderStream;
use vibe_api::export::{ENCRYPTED_MEDIA_TYPE, RESTORE_OUTCOME_KEY, RestoreEnd, RestoreOutcome};

use super::import::{MARKER_ID, import_running};
use super::require_owner_itself;
use crate::auth::Caller;
use crate::blobs::store::classify;
use crate::couch::Database;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The system-database document recording that the owner abandoned the restore.
pub const ABANDONED_ID: &str = "restore/abandoned";
/// `code` of the 409 a write gets while the restore is pending.
pub const PENDING_CODE: &str = "restore_pending";
/// How often publishing the outcome to the bucket is retried after a failure.
pub const PUBLISH_RETRY: Duration = Duration::from_secs(30);

/// Whether writes are still refused because the restore has not ended. Starts closed when
/// the instance is restored from a backup; opens (for the life of the process) once the
/// system database records the restore's end.
#[derive(Debug)]
pub struct RestoreGate {
    open: AtomicBool,
}

impl RestoreGate {
    /// A gate for an instance that is (`pending`) or is not restored from a backup.
    pub fn new(pending: bool) -> Self {
        Self {
            open: AtomicBool::new(!pending),
        }
    }

    /// Whether writes pass.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    fn open(&self) {
        self.open.store(true, Ordering::Release);
    }
}

/// The 409 a write gets before the restore.
pub fn pending_error() -> ApiError {
    ApiError::RestorePending(
        "This instance is waiting to be restored from a backup: it takes no writes until \
         then. Run `vibe restore` to import the backup, or `vibe restore --abandon` to start \
         with an empty instance instead."
            .into(),
    )
}

/// `Ok` unless this instance waits for its restore (409 `restore_pending`). Cheap once the
/// restore has ended (one atomic load); while it is pending, asks the system database, so an
/// end recorded by another replica is seen at once.
pub async fn refuse_before_restore(state: &AppState) -> ApiResult<()> {
    if state.restore_gate.is_open() {
        return Ok(());
    }
    let system = state.system_db().await?;
    if ended(state, &system).await?.is_some() {
        state.restore_gate.open();
        return Ok(());
    }
    Err(pending_error())
}

/// How the restore ended, from the system database: abandoned ([`ABANDONED_ID`]) or an
/// import committed (its marker). `None` while pending or without a restore source.
pub async fn ended(state: &AppState, system: &Database) -> ApiResult<Option<RestoreOutcome>> {
    let Some(source) = &state.config.restore else {
        return Ok(None);
    };
    let outcome = |end, at: Option<&str>, export_id: Option<&str>| RestoreOutcome {
        outcome: end,
        time: at.unwrap_or_default().to_string(),
        bucket: source.bucket.clone(),
        object_key: source.key.clone(),
        export_id: export_id.map(str::to_string),
    };
    if let Some(doc) = system.get(ABANDONED_ID).await? {
        return Ok(Some(outcome(
            RestoreEnd::Abandoned,
            doc.get("at").and_then(Value::as_str),
            None,
        )));
    }
    if let Some(marker) = system.get(MARKER_ID).await?
        && marker.get("state").and_then(Value::as_str) == Some("committed")
    {
        return Ok(Some(outcome(
            RestoreEnd::Restored,
            marker.get("at").and_then(Value::as_str),
            marker.get("exportId").and_then(Value::as_str),
        )));
    }
    Ok(None)
}

/// `POST /api/v1/restore/abandon`: the owner gives the restore up; the instance takes writes
/// from then on and the operator reports `Abandoned`. Repeating it answers the same.
pub async fn abandon(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<RestoreOutcome>> {
    require_owner_itself(&caller)?;
    let source = state.config.restore.clone().ok_or_else(not_restored)?;
    let system = state.system_db().await?;
    match ended(&state, &system).await? {
        Some(done) if done.outcome == RestoreEnd::Abandoned => {
            state.restore_gate.open();
            spawn_publish(state.clone());
            return Ok(Json(done));
        }
        Some(done) => {
            return Err(ApiError::Conflict(format!(
                "The restore already ended: an import completed at {}.",
                done.time
            )));
        }
        None => {}
    }
    let data = state.data_db().await?;
    if import_running(data.name()) {
        return Err(ApiError::Conflict(
            "An import into this instance is running; wait for it to end.".into(),
        ));
    }
    if let Some(marker) = system.get(MARKER_ID).await? {
        return Err(ApiError::Conflict(format!(
            "An import (export {}) is partly committed; run `vibe restore` again to finish it.",
            marker
                .get("exportId")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
        )));
    }
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    system
        .put(
            ABANDONED_ID,
            &json!({
                "state": "abandoned",
                "at": at,
                "bucket": source.bucket,
                "objectKey": source.key,
            }),
        )
        .await?;
    tracing::info!(backup = %source.key, "restore abandoned by the owner");
    let done = ended(&state, &system).await?.ok_or(ApiError::Internal)?;
    state.restore_gate.open();
    spawn_publish(state.clone());
    Ok(Json(done))
}

fn not_restored() -> ApiError {
    ApiError::NotFound("This instance is not being restored from a backup.".into())
}

/// After a committed import: opens the gate and publishes the outcome (no-op for an
/// instance that is not restored from a backup).
pub fn import_committed(state: &AppState) {
    if state.config.restore.is_some() {
        state.restore_gate.open();
        spawn_publish(state.clone());
    }
}

/// Writes the restore's outcome, as the system database records it, to
/// [`RESTORE_OUTCOME_KEY`] in the instance's bucket. `Ok(None)`: nothing to publish (no
/// restore source, or still pending).
pub async fn publish_outcome(state: &AppState) -> ApiResult<Option<RestoreOutcome>> {
    if state.config.restore.is_none() {
        return Ok(None);
    }
    let system = state.system_db().await?;
    let Some(done) = ended(state, &system).await? else {
        return Ok(None);
    };
    state.restore_gate.open();
    let blobs = state
        .blobs
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("Object storage is not configured.".into()))?;
    if blobs.settings.create_bucket {
        blobs.store.ensure_bucket().await?;
    }
    let body = serde_json::to_vec(&done).map_err(ApiError::internal)?;
    blobs
        .store
        .put(RESTORE_OUTCOME_KEY, "application/json", Bytes::from(body))
        .await?;
    Ok(Some(done))
}

/// [`publish_outcome`] in the background, retried every [`PUBLISH_RETRY`] until it succeeds:
/// the end is already recorded in the system database, and the operator must learn of it
/// even when the object store is briefly away. Also run once after start-up, which covers a
/// process that stopped before it published.
pub fn spawn_publish(state: AppState) {
    if state.config.restore.is_none() {
        return;
    }
    tokio::spawn(async move {
        loop {
            match publish_outcome(&state).await {
                Ok(Some(done)) => {
                    tracing::info!(outcome = ?done.outcome, "restore outcome published for the operator");
                    return;
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?PUBLISH_RETRY, "restore outcome not published yet");
                    tokio::time::sleep(PUBLISH_RETRY).await;
                }
            }
        }
    });
}

/// Header naming the object key of the archive served.
pub const BACKUP_KEY_HEADER: &str = "x-vibe-backup-key";

/// The handler.
pub async fn archive(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    require_owner_itself(&caller)?;
    let source = state.config.restore.clone().ok_or_else(not_restored)?;
    let blobs = state
        .blobs
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("Object storage is not configured.".into()))?;
    let object = match blobs
        .store
        .client
        .get_object()
        .bucket(&source.bucket)
        .key(&source.key)
        .send()
        .await
    {
        Ok(object) => object,
        Err(SdkError::ServiceError(e)) if matches!(e.err(), GetObjectError::NoSuchKey(_)) => {
            return Err(ApiError::NotFound(format!(
                "The backup {} is not in bucket {}.",
                source.key, source.bucket
            )));
        }
        Err(e) => return Err(classify("GetObject", e).into()),
    };
    let length = object.content_length();
    let body = Body::from_stream(ReaderStream::new(object.body.into_async_read()));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ENCRYPTED_MEDIA_TYPE),
    );
    if let Some(length) = length.and_then(|l| HeaderValue::from_str(&l.to_string()).ok()) {
        headers.insert(header::CONTENT_LENGTH, length);
    }
    if let Ok(value) = HeaderValue::from_str(&source.key) {
        headers.insert(BACKUP_KEY_HEADER, value);
    }
    Ok(response)
}
