//! HTTP routes of the blob feature.
//!
//! | route | grant |
//! |---|---|
//! | `POST /api/v1/blob/upload-url` | `blob:write:<collectionName>` |
//! | `POST /api/v1/blob/finalize-upload` | `blob:write:<collectionName>` |
//! | `GET /api/v1/blob/download-url/{objectKey}` | `blob:read:<collection of the key>` |
//! | `DELETE /api/v1/blob/{objectKey}` | `blob:delete:<collection of the key>` |
//! | `GET /api/v1/blob?collection=` | `blob:read:<collection>` |
//! | `PUT /api/v1/blob/upload?collection=&filename=` | `blob:write:<collection>` |
//!
//! Object keys in paths may be percent-encoded (`/` as `%2F`) or not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::metadata::{self, BLOBS_COLLECTION, BlobMetadata};
use super::service::{Blobs, blobs_of};
use super::stream::{MAX_SINGLE_PUT, upload_sized, upload_stream};
use super::{BlobError, ObjectKey, key};
use crate::admission::admit;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::StrictJson;
use crate::state::AppState;
use vibe_api::blobs::{FinalizeUploadRequest, UploadUrlRequest};

/// Default and largest page size of `GET /api/v1/blob`.
const DEFAULT_LIST_LIMIT: u64 = 100;
const MAX_LIST_LIMIT: u64 = 1000;
/// Longest accepted client filename and content type.
const MAX_FILENAME_CHARS: usize = 1024;
const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// The blob routes, merged into the data plane's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/blob", get(list_blobs))
        .route("/api/v1/blob/upload-url", post(upload_url))
        .route("/api/v1/blob/finalize-upload", post(finalize_upload))
        .route("/api/v1/blob/download-url/{*object_key}", get(download_url))
        .route(
            "/api/v1/blob/upload",
            put(stream_upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/blob/{*object_key}",
            axum::routing::delete(delete_blob),
        )
}

#[derive(Deserialize)]
struct ListQuery {
    collection: Option<String>,
    limit: Option<String>,
    bookmark: Option<String>,
}

#[derive(Deserialize)]
struct UploadQuery {
    collection: Option<String>,
    filename: Option<String>,
}

/// `POST /api/v1/blob/upload-url` → `{presignedUrl, objectKey, expiresAt, method, headers}`.
async fn upload_url(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(req): StrictJson<UploadUrlRequest>,
) -> ApiResult<axum::response::Response> {
    check_collection(&req.collection_name)?;
    check_filename(&req.original_filename)?;
    check_content_type(&req.content_type)?;
    caller.require(&format!("blob:write:{}", req.collection_name))?;
    let _admitted = admit(&state, &caller)?;
    crate::export::restore::refuse_before_restore(&state).await?;
    let blobs = blobs_of(&state)?;
    check_file_size(&blobs, req.size)?;
    let scheme = blobs.scheme(&state)?;
    blobs.ready(&scheme).await?;

    let key = scheme.generate(&req.collection_name, &req.original_filename)?;
    let ttl = blobs.settings.upload_url_ttl;
    blobs
        .ledger
        .reserve(key.as_str(), req.size, SystemTime::now() + ttl)?;
    let presigned = match blobs
        .store
        .presign_put(key.as_str(), &req.content_type, req.size, ttl)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            blobs.ledger.release(key.as_str());
            return Err(e.into());
        }
    };
    // Debug, not info: a hot route, logged again when the upload is finalized.
    tracing::debug!(collection = %req.collection_name, size = req.size, "upload URL issued");
    Ok(Json(UploadUrlAnswer {
        expires_at: unix_seconds(presigned.expires_at),
        headers: PresignedHeaders(&presigned.headers),
        method: "PUT",
        object_key: key.as_str(),
        presigned_url: &presigned.url,
    })
    .into_response())
}

/// The answer of `POST /api/v1/blob/upload-url`, serialised straight from the presigned
/// request (no JSON tree in between); members in the order a JSON map had them. The same
/// JSON as the contract type [`vibe_api::blobs::UploadUrlResponse`], without copying the
/// URL and headers into it (a test holds the two together).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadUrlAnswer<'a> {
    expires_at: u64,
    headers: PresignedHeaders<'a>,
    method: &'static str,
    object_key: &'a str,
    presigned_url: &'a str,
}

/// Headers as a JSON object, in their order (by name: see
/// [`PresignedRequest::headers`](super::store::PresignedRequest::headers)).
struct PresignedHeaders<'a>(&'a [(String, String)]);

impl Serialize for PresignedHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// `POST /api/v1/blob/finalize-upload` → 201 metadata, after verifying the stored object.
async fn finalize_upload(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(req): StrictJson<FinalizeUploadRequest>,
) -> ApiResult<impl IntoResponse> {
    check_collection(&req.collection_name)?;
    check_filename(&req.original_filename)?;
    check_content_type(&req.content_type)?;
    caller.require(&format!("blob:write:{}", req.collection_name))?;
    let _admitted = admit(&state, &caller)?;
    crate::export::restore::refuse_before_restore(&state).await?;
    let blobs = blobs_of(&state)?;
    let scheme = blobs.scheme(&state)?;
    let key = scheme.parse(&req.object_key)?;
    if key.collection() != req.collection_name {
        return Err(ApiError::BadRequest(format!(
            "Object key does not belong to collection '{}'.",
            req.collection_name
        )));
    }
    let db = state.data_db().await?;
    blobs.ready(&scheme).await?;

    let info = blobs
        .store
        .head(key.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound("Uploaded object not found.".into()))?;
    if info.size != req.size {
        return Err(ApiError::BadRequest(format!(
            "Stored object has {} bytes, not the declared {}.",
            info.size, req.size
        )));
    }
    if !same_content_type(info.content_type.as_deref(), &req.content_type) {
        return Err(ApiError::BadRequest(
            "Stored object's content type differs from the declared one.".into(),
        ));
    }
    let window = blobs.settings.finalize_window;
    if info
        .last_modified
        .is_some_and(|t| t + window < SystemTime::now())
    {
        return Err(ApiError::BadRequest(
            "The upload is too old to be finalized; upload the file again.".into(),
        ));
    }
    check_file_size(&blobs, info.size)?;
    blobs.ledger.commit(key.as_str(), info.size)?;

    let meta = metadata::create(
        &db,
        &new_metadata(
            &blobs,
            &caller,
            &key,
            &req.original_filename,
            &req.content_type,
            info.size,
        ),
    )
    .await?;
    tracing::info!(collection = %req.collection_name, size = info.size, "upload finalized");
    Ok((StatusCode::CREATED, Json(meta)))
}

/// `GET /api/v1/blob/download-url/{objectKey}` → `{url, expiresAt}`.
async fn download_url(
    State(state): State<AppState>,
    caller: Caller,
    Path(object_key): Path<String>,
) -> ApiResult<Json<Value>> {
    let (blobs, key) = known_key(&state, &object_key)?;
    caller.require(&format!("blob:read:{}", key.collection()))?;
    let _admitted = admit(&state, &caller)?;
    let db = state.data_db().await?;
    metadata::get(&db, &key).await?.ok_or_else(blob_not_found)?;
    let presigned = blobs
        .store
        .presign_get(key.as_str(), blobs.settings.download_url_ttl)
        .await?;
    Ok(Json(json!({
        "url": presigned.url,
        "expiresAt": unix_seconds(presigned.expires_at),
    })))
}

/// `DELETE /api/v1/blob/{objectKey}` → 204. The object goes first (retried); if that fails
/// the metadata stays and the client gets 503, so metadata never points at nothing. A
/// failed metadata delete after the object is gone is also 503; repeating the request
/// completes it (deleting a missing object succeeds).
async fn delete_blob(
    State(state): State<AppState>,
    caller: Caller,
    Path(object_key): Path<String>,
) -> ApiResult<StatusCode> {
    let (blobs, key) = known_key(&state, &object_key)?;
    caller.require(&format!("blob:delete:{}", key.collection()))?;
    let _admitted = admit(&state, &caller)?;
    let db = state.data_db().await?;
    let meta = metadata::get(&db, &key).await?.ok_or_else(blob_not_found)?;
    blobs.store.delete(key.as_str()).await?;
    blobs.ledger.forget(key.as_str());
    metadata::delete(&db, &key, &meta).await?;
    tracing::info!(collection = %key.collection(), "blob deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/blob?collection=&limit=&bookmark=` → `{docs, bookmark}`.
async fn list_blobs(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let collection = query
        .collection
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::Validation("Query parameter 'collection' is required.".into()))?;
    check_collection(&collection)?;
    let limit = match query.limit.as_deref() {
        None | Some("") => DEFAULT_LIST_LIMIT,
        Some(l) => l
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::Validation(format!(
                    "limit must be an integer between 1 and {MAX_LIST_LIMIT}."
                ))
            })?,
    };
    let after = match query.bookmark.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => Some(parse_bookmark(b)?),
    };
    caller.require(&format!("blob:read:{collection}"))?;
    let _admitted = admit(&state, &caller)?;
    let db = state.data_db().await?;
    let (docs, bookmark) = metadata::list(&db, &collection, after.as_deref(), limit).await?;
    Ok(Json(json!({ "docs": docs, "bookmark": bookmark })))
}

/// A blob-list bookmark: the hyphenated UUID of the last blob of the previous page (as
/// answered, in either letter case), nothing else — the form the OpenAPI document's pattern
/// allows (`uuid::Uuid::parse_str` alone also takes the simple, braced and URN forms).
fn parse_bookmark(text: &str) -> ApiResult<String> {
    let hyphenated = text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    hyphenated
        .then(|| uuid::Uuid::parse_str(text).ok())
        .flatten()
        .map(|id| id.hyphenated().to_string())
        .ok_or_else(|| ApiError::Validation("Invalid bookmark.".into()))
}

/// `PUT /api/v1/blob/upload?collection=&filename=`: streams the body to S3 (one `PutObject`
/// fed as the body arrives when its length is declared, else multipart for large bodies;
/// memory bounded either way), then writes the metadata → 201 metadata.
async fn stream_upload(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let collection = query
        .collection
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::Validation("Query parameter 'collection' is required.".into()))?;
    check_collection(&collection)?;
    let filename = query
        .filename
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::Validation("Query parameter 'filename' is required.".into()))?;
    check_filename(&filename)?;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => "application/octet-stream".to_string(),
        Some(v) => v
            .to_str()
            .map_err(|_| ApiError::Validation("Invalid Content-Type header.".into()))?
            .to_string(),
    };
    check_content_type(&content_type)?;
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Invalid Content-Length header.".into()))?,
        ),
    };
    caller.require(&format!("blob:write:{collection}"))?;
    let _admitted = admit(&state, &caller)?;
    crate::export::restore::refuse_before_restore(&state).await?;
    let blobs = blobs_of(&state)?;
    if let Some(size) = declared {
        check_file_size(&blobs, size)?;
    }
    let scheme = blobs.scheme(&state)?;
    // CouchDB must answer before any byte is stored: the metadata goes there.
    let db = state.data_db().await?;
    blobs.ready(&scheme).await?;

    let key = scheme.generate(&collection, &filename)?;
    // Reserve the declared size, or whatever the per-file limit and the quota leave.
    let max = blobs.settings.max_file_size;
    let (limit, quota_bound) = match declared {
        Some(size) => (size, false),
        None => {
            let usage = blobs.ledger.usage();
            let room = usage.quota.saturating_sub(usage.used());
            (max.min(room), room < max)
        }
    };
    let expires = SystemTime::now() + blobs.settings.upload_url_ttl.max(Duration::from_secs(3600));
    blobs.ledger.reserve(key.as_str(), limit.max(1), expires)?;

    let stream = body.into_data_stream();
    let outcome = match declared {
        // A known length: one PutObject fed by the request body as it arrives.
        Some(size) if size <= MAX_SINGLE_PUT => {
            upload_sized(&blobs.store, key.as_str(), &content_type, stream, size).await
        }
        _ => upload_stream(&blobs.store, key.as_str(), &content_type, stream, limit).await,
    };
    let stored = match outcome {
        Ok(n) => n,
        Err(e) => {
            blobs.ledger.release(key.as_str());
            return Err(match e {
                BlobError::TooLarge { size, .. } if quota_bound => {
                    let usage = blobs.ledger.usage();
                    BlobError::QuotaExceeded {
                        used: usage.used(),
                        requested: size,
                        quota: usage.quota,
                    }
                    .into()
                }
                other => other.into(),
            });
        }
    };
    if declared.is_some_and(|d| d != stored) {
        blobs.ledger.release(key.as_str());
        discard(&blobs, &key).await;
        return Err(ApiError::BadRequest(
            "The body is shorter than its Content-Length.".into(),
        ));
    }
    if let Err(e) = blobs.ledger.commit(key.as_str(), stored) {
        discard(&blobs, &key).await;
        return Err(e.into());
    }
    let meta = new_metadata(&blobs, &caller, &key, &filename, &content_type, stored);
    match metadata::create(&db, &meta).await {
        Ok(meta) => {
            tracing::info!(collection = %collection, size = stored, "streamed upload stored");
            Ok((StatusCode::CREATED, Json(meta)))
        }
        Err(e) => {
            discard(&blobs, &key).await;
            Err(e)
        }
    }
}

/// Removes an object whose upload could not be completed (the sweep retries on failure).
async fn discard(blobs: &Blobs, key: &ObjectKey) {
    if let Err(e) = blobs.store.delete(key.as_str()).await {
        tracing::warn!(error = %e, "could not remove an incomplete upload; the sweep will");
    }
    blobs.ledger.forget(key.as_str());
}

fn new_metadata(
    blobs: &Blobs,
    caller: &Caller,
    key: &ObjectKey,
    filename: &str,
    content_type: &str,
    size: u64,
) -> BlobMetadata {
    BlobMetadata {
        id: key.metadata_id(),
        rev: None,
        collection: BLOBS_COLLECTION.into(),
        collection_name: key.collection().into(),
        object_key: key.as_str().into(),
        original_filename: filename.into(),
        content_type: content_type.into(),
        size,
        owner_did: caller.did.to_string(),
        upload_timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        bucket: blobs.store.bucket().into(),
        app_id: caller.app_id.clone(),
    }
}

/// Blob storage and the parsed key; a key that is not this instance's is simply unknown.
fn known_key(state: &AppState, raw: &str) -> ApiResult<(std::sync::Arc<Blobs>, ObjectKey)> {
    let blobs = blobs_of(state)?;
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    let key = blobs
        .scheme(state)?
        .parse(raw)
        .map_err(|_| blob_not_found())?;
    Ok((blobs, key))
}

fn blob_not_found() -> ApiError {
    ApiError::NotFound("Blob not found.".into())
}

fn check_collection(collection: &str) -> ApiResult<()> {
    key::validate_collection(collection).map_err(|e| ApiError::Validation(e.to_string()))
}

/// A file name as the OpenAPI document describes it: 1 to [`MAX_FILENAME_CHARS`] characters,
/// not all white space (Unicode `White_Space`, the class spelled out in the document's
/// `pattern`).
fn check_filename(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.chars().count() > MAX_FILENAME_CHARS {
        return Err(ApiError::Validation(format!(
            "originalFilename must be 1 to {MAX_FILENAME_CHARS} characters, not only spaces."
        )));
    }
    Ok(())
}

/// A media type `type/subtype` with optional parameters, usable as a header value.
fn check_content_type(content_type: &str) -> ApiResult<()> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let valid = content_type.len() <= MAX_CONTENT_TYPE_BYTES
        && axum::http::HeaderValue::from_str(content_type).is_ok()
        && essence
            .split_once('/')
            .is_some_and(|(t, s)| token(t) && token(s));
    if valid {
        Ok(())
    } else {
        Err(ApiError::Validation(
            "contentType must be a media type such as 'image/png'.".into(),
        ))
    }
}

fn check_file_size(blobs: &Blobs, size: u64) -> ApiResult<()> {
    let limit = blobs.settings.max_file_size;
    if size > limit {
        return Err(BlobError::TooLarge { size, limit }.into());
    }
    Ok(())
}

fn same_content_type(stored: Option<&str>, declared: &str) -> bool {
    stored.is_some_and(|s| s.trim().eq_ignore_ascii_case(declared.trim()))
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_url_answer_is_the_contract_type() {
        let headers = vec![
            ("content-length".to_string(), "5".to_string()),
            ("content-type".to_string(), "text/plain".to_string()),
        ];
        let answer = UploadUrlAnswer {
            expires_at: 1_800_000_000,
            headers: PresignedHeaders(&headers),
            method: "PUT",
            object_key: "i/notes/k",
            presigned_url: "http://s3/b/i/notes/k?X-Amz-Signature=s",
        };
        let json = serde_json::to_value(&answer).unwrap();
        let contract: vibe_api::blobs::UploadUrlResponse =
            serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&contract).unwrap(), json);
        assert_eq!(contract.headers["content-type"], "text/plain");
        assert_eq!(contract.method, "PUT");
    }
}
