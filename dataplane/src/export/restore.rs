//! `GET /api/v1/restore/archive`: the backup this instance is restored from
//! (`VIBE_RESTORE_BUCKET`/`VIBE_RESTORE_OBJECT_KEY`, set by the operator from
//! `spec.restoreFrom`), streamed to the owner as stored: encrypted to the owner's key.
//!
//! The data plane cannot read a backup (it never holds the owner's private key), so a
//! restore is driven by the owner: `vibe restore` fetches the archive here, decrypts it on
//! the owner's machine and sends the plain archive to `POST /api/v1/import`, which verifies
//! and commits it as any import (docs/backup-and-migration.md).

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;
use vibe_api::export::ENCRYPTED_MEDIA_TYPE;

use super::require_owner_itself;
use crate::auth::Caller;
use crate::blobs::store::classify;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Header naming the object key of the archive served.
pub const BACKUP_KEY_HEADER: &str = "x-vibe-backup-key";

/// The handler.
pub async fn archive(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    require_owner_itself(&caller)?;
    let source = state.config.restore.clone().ok_or_else(|| {
        ApiError::NotFound("This instance is not being restored from a backup.".into())
    })?;
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
