//! The console's API routes. Every one but the code exchange takes the owner's own token
//! (no app tokens, no owner token acting as an app: [`owner_itself`]).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use vibe_api::Collection;
use vibe_api::auth::{BEARER, TokenResponse};
use vibe_api::console::{
    BlobInfo, BlobList, CODE_TTL_SECONDS, CONSOLE_PATH, CollectionCount, CollectionList,
    ConsoleCodeRequest, ConsoleCodeResponse, ConsoleOverview, ConsoleSessionRequest,
    DEFAULT_CODE_TTL_SECONDS, DocumentList, LogoutAllResponse, ServiceHealth, SessionInfo,
    SessionList, StorageUsage,
};

use super::codes;
use crate::access::{document_collection, id_collection};
use crate::auth::refresh::{self, FAMILY_DOC_PREFIX};
use crate::auth::{Caller, CallerKind};
use crate::blobs::metadata::{self, BLOBS_COLLECTION, BlobMetadata};
use crate::blobs::service::blobs_of;
use crate::couch::Database;
use crate::error::{ApiError, ApiResult};
use crate::json::StrictJson;
use crate::state::AppState;

/// Default and largest page of documents and blobs.
const DEFAULT_PAGE: u64 = 20;
const MAX_PAGE: u64 = 200;
/// Ids read per `_all_docs` page when counting, and the most counted in all.
const COUNT_PAGE: u64 = 5_000;
const MAX_COUNTED: u64 = 1_000_000;
/// Sessions listed at most.
const MAX_SESSIONS: usize = 10_000;

/// 403 unless the owner itself calls: app tokens, devices and an owner token acting as an
/// app (`X-Vibe-App-ID`) may not use the console's routes.
pub(crate) fn owner_itself(caller: &Caller) -> ApiResult<()> {
    if caller.kind != CallerKind::Owner || caller.app_id.is_some() {
        return Err(ApiError::Forbidden(
            "Forbidden: The console is for the owner itself, not an app.".into(),
        ));
    }
    Ok(())
}

/// `POST /api/v1/console/code` `{ttlSeconds?}` → `{code, expiresAt, url}`.
pub(crate) async fn mint_code(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<ConsoleCodeRequest>,
) -> ApiResult<Json<ConsoleCodeResponse>> {
    owner_itself(&caller)?;
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_CODE_TTL_SECONDS);
    if !CODE_TTL_SECONDS.contains(&ttl) {
        return Err(ApiError::Validation(format!(
            "'ttlSeconds' must be between {} and {}.",
            CODE_TTL_SECONDS.start(),
            CODE_TTL_SECONDS.end()
        )));
    }
    let db = state.system_db().await?;
    let instance = state.config.public_url.trim_end_matches('/').to_string();
    let (code, expires_at) = codes::issue(&db, &instance, &caller.did.to_string(), ttl).await?;
    // Codes are few: the expired ones go whenever a new one is minted.
    tokio::spawn(async move {
        if let Err(e) = codes::sweep(&db).await {
            tracing::debug!(error = %e, "console code sweep failed");
        }
    });
    tracing::info!("console code minted");
    let url = format!("{instance}{CONSOLE_PATH}#code={code}");
    Ok(Json(ConsoleCodeResponse {
        code,
        expires_at,
        url,
    }))
}

/// `POST /api/v1/console/session` `{code}` → a token response for a new owner session
/// (refresh family marked `console`). 401 for an unknown, expired or used code.
pub(crate) async fn exchange(
    State(state): State<AppState>,
    StrictJson(body): StrictJson<ConsoleSessionRequest>,
) -> ApiResult<Json<TokenResponse>> {
    state.tokens.throttle()?;
    let db = state.system_db().await?;
    let owner = state
        .owner()
        .ok_or_else(|| ApiError::Unauthorized("This instance has no owner yet.".into()))?;
    let instance = state.config.public_url.trim_end_matches('/');
    if !codes::spend(&db, &body.code, instance, &owner.to_string()).await? {
        tracing::info!("console code refused");
        return Err(ApiError::Unauthorized(
            "Invalid, expired or already used console code. Run `vibe console` again.".into(),
        ));
    }
    let refresh = refresh::start_family_as(
        &db,
        &owner.to_string(),
        state.config.limits.refresh_token_ttl.as_secs(),
        Some("console"),
    )
    .await?;
    let access = state.tokens.issue_access(&owner, &refresh.family)?;
    tracing::info!("console session started");
    Ok(Json(TokenResponse {
        access_token: access.token,
        access_token_expires_in: access.claims.exp,
        refresh_token: refresh.token,
        refresh_token_expires_at: refresh.expires_at,
        token_type: BEARER.into(),
    }))
}

/// `GET /api/v1/console/overview`.
pub(crate) async fn overview(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ConsoleOverview>> {
    owner_itself(&caller)?;
    let down: BTreeMap<String, String> = state.readiness_failures().await.into_iter().collect();
    let mut names = vec!["couchdb".to_string()];
    names.extend(state.readiness.iter().map(|p| p.name().to_string()));
    let services = names
        .into_iter()
        .map(|name| ServiceHealth {
            ok: !down.contains_key(&name),
            reason: down.get(&name).cloned(),
            name,
        })
        .collect();
    let documents_bytes = match state.data_db().await {
        Ok(db) => db.info().await.ok().and_then(|info| database_bytes(&info)),
        Err(_) => None,
    };
    let (blobs_bytes, blob_quota_bytes) = match &state.blobs {
        Some(blobs) => {
            // The ledger is loaded on first use; a failure leaves the numbers unknown.
            let loaded = match blobs.scheme(&state) {
                Ok(scheme) => blobs.ready(&scheme).await.is_ok(),
                Err(_) => false,
            };
            let usage = blobs.ledger.usage();
            (loaded.then_some(usage.used()), Some(usage.quota))
        }
        None => (None, None),
    };
    // Recorded by `vibe-dataplane backup`; unknown when CouchDB does not answer.
    let backups = match state.system_db().await {
        Ok(db) => crate::export::last_backup::load(&db)
            .await
            .unwrap_or_default(),
        Err(_) => Default::default(),
    };
    Ok(Json(ConsoleOverview {
        owner_did: caller.did.to_string(),
        instance_url: state.config.public_url.trim_end_matches('/').to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        services,
        storage: StorageUsage {
            documents_bytes,
            blobs_bytes,
            blob_quota_bytes,
        },
        last_backup: backups.last,
        last_successful_backup: backups.last_succeeded,
    }))
}

/// Bytes a database takes: CouchDB 3's `sizes.active`, else what the server reports.
fn database_bytes(info: &Value) -> Option<u64> {
    info.pointer("/sizes/active")
        .or_else(|| info.pointer("/sizes/file"))
        .or_else(|| info.get("data_size"))
        .or_else(|| info.get("disk_size"))
        .and_then(Value::as_u64)
}

/// The owner's sessions not revoked: `family/<id>` documents of the system database.
async fn live_families(state: &AppState, db: &Database) -> ApiResult<Vec<Value>> {
    let owner = caller_owner(state)?;
    Ok(db
        .docs_with_prefix(FAMILY_DOC_PREFIX, MAX_SESSIONS)
        .await?
        .into_iter()
        .filter(|doc| doc.get("revokedAt").is_none_or(Value::is_null))
        .filter(|doc| doc.get("did").and_then(Value::as_str) == Some(owner.as_str()))
        .collect())
}

fn caller_owner(state: &AppState) -> ApiResult<String> {
    state
        .owner()
        .map(|d| d.to_string())
        .ok_or_else(|| ApiError::Unavailable("This instance has no owner yet.".into()))
}

fn family_id(doc: &Value) -> Option<&str> {
    doc.get("_id")?.as_str()?.strip_prefix(FAMILY_DOC_PREFIX)
}

/// `GET /api/v1/console/sessions` → the owner's sessions not revoked nor expired (their
/// newest refresh token ran out), newest first.
pub(crate) async fn sessions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<SessionList>> {
    owner_itself(&caller)?;
    let db = state.system_db().await?;
    let now = crate::state::now_unix();
    let mut sessions: Vec<SessionInfo> = live_families(&state, &db)
        .await?
        .iter()
        .filter_map(|doc| {
            let id = family_id(doc)?.to_string();
            let expires_at = doc.get(refresh::REFRESH_EXPIRES_AT).and_then(Value::as_i64);
            // Nobody can refresh it any more, and its access tokens died long before.
            if expires_at.is_some_and(|at| at <= now) {
                return None;
            }
            Some(SessionInfo {
                current: caller.family() == Some(id.as_str()),
                created_at: doc.get("createdAt").and_then(Value::as_i64).unwrap_or(0),
                expires_at,
                kind: doc
                    .get("client")
                    .and_then(Value::as_str)
                    .unwrap_or("login")
                    .to_string(),
                id,
            })
        })
        .filter(|s| !state.tokens.is_family_revoked(&s.id))
        .collect();
    sessions.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(Json(SessionList { sessions }))
}

/// `POST /api/v1/console/sessions/logout-all` → every owner session ends (the caller's
/// too): refresh tokens, access tokens and the app tokens minted from them; open streams
/// close at once.
pub(crate) async fn logout_all(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<LogoutAllResponse>> {
    owner_itself(&caller)?;
    let db = state.system_db().await?;
    let mut revoked = 0;
    for doc in live_families(&state, &db).await? {
        let Some(family) = family_id(&doc) else {
            continue;
        };
        refresh::revoke_family(&db, family).await?;
        state.tokens.revoke_family(family);
        revoked += 1;
    }
    // The caller's own session, should its family document be missing.
    if let Some(family) = caller.family() {
        state.tokens.revoke_family(family);
    }
    tracing::info!(revoked, "every owner session logged out from the console");
    Ok(Json(LogoutAllResponse { revoked }))
}

#[derive(Deserialize)]
struct AllDocsRow {
    id: String,
    #[serde(default)]
    doc: Option<Value>,
}

#[derive(Deserialize)]
struct AllDocs {
    rows: Vec<AllDocsRow>,
}

/// One `_all_docs` page: ids from `start` (inclusive) to `end`, at most `limit`.
async fn all_docs(
    db: &Database,
    start: &str,
    end: &str,
    limit: u64,
    include_docs: bool,
) -> ApiResult<Vec<AllDocsRow>> {
    let mut url = db.url(&["_all_docs"]);
    url.query_pairs_mut()
        .append_pair("startkey", &Value::String(start.to_string()).to_string())
        .append_pair("endkey", &Value::String(end.to_string()).to_string())
        .append_pair("limit", &limit.to_string())
        .append_pair("include_docs", if include_docs { "true" } else { "false" });
    let client = db.client();
    let page: AllDocs = client.json(client.request(Method::GET, url)).await?;
    Ok(page.rows)
}

/// `GET /api/v1/console/collections` → every collection with its document count.
pub(crate) async fn collections(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<CollectionList>> {
    owner_itself(&caller)?;
    let db = state.data_db().await?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut start = String::new();
    let mut seen = 0u64;
    let mut truncated = false;
    loop {
        let rows = all_docs(&db, &start, "\u{fff0}", COUNT_PAGE + 1, false).await?;
        let fresh: Vec<&AllDocsRow> = rows.iter().filter(|r| r.id > start).collect();
        for row in &fresh {
            if let Some(collection) = id_collection(&row.id) {
                *counts.entry(collection.to_string()).or_default() += 1;
            }
        }
        seen += fresh.len() as u64;
        match fresh.last() {
            Some(last) if (rows.len() as u64) > COUNT_PAGE => {
                if seen >= MAX_COUNTED {
                    truncated = true;
                    break;
                }
                start = last.id.clone();
            }
            _ => break,
        }
    }
    Ok(Json(CollectionList {
        collections: counts
            .into_iter()
            .map(|(name, count)| CollectionCount { name, count })
            .collect(),
        truncated,
    }))
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    after: Option<String>,
    limit: Option<String>,
}

fn page_limit(limit: Option<&str>) -> ApiResult<u64> {
    match limit {
        None | Some("") => Ok(DEFAULT_PAGE),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::Validation(format!("'limit' must be between 1 and {MAX_PAGE}."))
            }),
    }
}

fn valid_collection(name: &str) -> ApiResult<()> {
    if Collection::is_valid(name) {
        Ok(())
    } else {
        Err(ApiError::Validation(format!(
            "{} is not a collection name.",
            json!(name)
        )))
    }
}

/// A page of the documents of `collection` after the id `after`, in id order, each one
/// passing the read rule of [`crate::access`] for that collection.
async fn documents_page(
    db: &Database,
    collection: &str,
    after: Option<&str>,
    limit: u64,
) -> ApiResult<(Vec<Value>, Option<String>)> {
    let prefix = format!("{collection}/");
    let start = after
        .filter(|a| a.starts_with(&prefix))
        .map_or(prefix.clone(), str::to_string);
    let end = format!("{prefix}\u{fff0}");
    let mut docs = Vec::new();
    let mut cursor = start;
    let mut exclusive = after.is_some();
    // Rows the gate drops (a document whose field disagrees with its id) are skipped;
    // reading stops after a few pages so a page is answered in bounded time.
    for _ in 0..5 {
        let rows = all_docs(db, &cursor, &end, limit + 1, true).await?;
        let full = rows.len() as u64 > limit;
        for row in rows {
            if exclusive && row.id <= cursor {
                continue;
            }
            cursor = row.id.clone();
            if let Some(doc) = row.doc
                && document_collection(&doc) == Some(collection)
            {
                docs.push(doc);
                if docs.len() as u64 > limit {
                    break;
                }
            }
        }
        exclusive = true;
        if docs.len() as u64 > limit || !full {
            break;
        }
    }
    let more = docs.len() as u64 > limit;
    docs.truncate(limit as usize);
    let next = more
        .then(|| {
            docs.last()
                .and_then(|d| d["_id"].as_str())
                .map(str::to_string)
        })
        .flatten();
    Ok((docs, next))
}

/// `GET /api/v1/console/collections/{collection}/documents?after=&limit=`.
pub(crate) async fn documents(
    State(state): State<AppState>,
    caller: Caller,
    Path(collection): Path<String>,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<DocumentList>> {
    owner_itself(&caller)?;
    valid_collection(&collection)?;
    let limit = page_limit(query.limit.as_deref())?;
    let db = state.data_db().await?;
    let (docs, next) = documents_page(&db, &collection, query.after.as_deref(), limit).await?;
    Ok(Json(DocumentList { docs, next }))
}

/// `GET /api/v1/console/collections/{collection}/documents/{*rest}`: the document
/// `<collection>/<rest>`.
pub(crate) async fn document(
    State(state): State<AppState>,
    caller: Caller,
    Path((collection, rest)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    owner_itself(&caller)?;
    valid_collection(&collection)?;
    let db = state.data_db().await?;
    let id = format!("{collection}/{rest}");
    match db.get(&id).await? {
        Some(doc) if document_collection(&doc) == Some(collection.as_str()) => Ok(Json(doc)),
        _ => Err(ApiError::NotFound("Document not found.".into())),
    }
}

/// `GET /api/v1/console/blobs?after=&limit=` → blobs in upload order.
pub(crate) async fn blobs(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<BlobList>> {
    owner_itself(&caller)?;
    let limit = page_limit(query.limit.as_deref())?;
    let db = state.data_db().await?;
    let (docs, next) = documents_page(&db, BLOBS_COLLECTION, query.after.as_deref(), limit).await?;
    let blobs = docs
        .into_iter()
        .filter_map(|doc| serde_json::from_value::<BlobMetadata>(doc).ok())
        .map(|meta| BlobInfo {
            object_key: meta.object_key,
            collection: meta.collection_name,
            filename: meta.original_filename,
            content_type: meta.content_type,
            size: meta.size,
            uploaded_at: meta.upload_timestamp,
            app_id: meta.app_id,
        })
        .collect();
    Ok(Json(BlobList { blobs, next }))
}

/// The blob storage and the finalised blob named by `raw` (404 for anything else).
async fn known_blob(
    state: &AppState,
    raw: &str,
) -> ApiResult<(
    std::sync::Arc<crate::blobs::Blobs>,
    crate::blobs::ObjectKey,
    BlobMetadata,
    Database,
)> {
    let blobs = blobs_of(state)?;
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    let not_found = || ApiError::NotFound("Blob not found.".into());
    let key = blobs.scheme(state)?.parse(raw).map_err(|_| not_found())?;
    let db = state.data_db().await?;
    let meta = metadata::get(&db, &key).await?.ok_or_else(not_found)?;
    Ok((blobs, key, meta, db))
}

fn download_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_default()
    })
}

/// `GET /api/v1/console/blobs/content/{*objectKey}`: the blob's bytes, as an attachment.
///
/// The console streams downloads through the data plane (other clients get presigned
/// URLs): its Content-Security-Policy lets the page fetch from its own origin only, and a
/// fetch with the owner's token is what keeps the download owner-only.
pub(crate) async fn blob_content(
    State(state): State<AppState>,
    caller: Caller,
    Path(object_key): Path<String>,
) -> ApiResult<Response> {
    owner_itself(&caller)?;
    let (blobs, key, meta, _) = known_blob(&state, &object_key).await?;
    let presigned = blobs
        .store
        .presign_get(key.as_str(), std::time::Duration::from_secs(60))
        .await?;
    let upstream = download_client()
        .get(&presigned.url)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e.without_url(), "blob download from the object store failed");
            ApiError::Unavailable("Blob storage is not available.".into())
        })?;
    match upstream.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND => return Err(ApiError::NotFound("Blob not found.".into())),
        s => {
            tracing::warn!(status = %s, "object store refused a blob download");
            return Err(ApiError::Unavailable(
                "Blob storage is not available.".into(),
            ));
        }
    }
    let mut response = Response::new(Body::from_stream(upstream.bytes_stream()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&attachment(&meta.original_filename))
            .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `attachment; filename="…"; filename*=UTF-8''…` for a client's filename.
fn attachment(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// `DELETE /api/v1/console/blobs/{*objectKey}` → 204: the object, then its metadata.
pub(crate) async fn delete_blob(
    State(state): State<AppState>,
    caller: Caller,
    Path(object_key): Path<String>,
) -> ApiResult<StatusCode> {
    owner_itself(&caller)?;
    let (blobs, key, meta, db) = known_blob(&state, &object_key).await?;
    blobs.store.delete(key.as_str()).await?;
    blobs.ledger.forget(key.as_str());
    metadata::delete(&db, &key, &meta).await?;
    tracing::info!(collection = %key.collection(), "blob deleted from the console");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_quoted_safely() {
        assert_eq!(
            attachment("a b.txt"),
            "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
        );
        let odd = attachment("é\"\\\n.txt");
        assert!(HeaderValue::from_str(&odd).is_ok(), "{odd}");
        assert!(
            odd.starts_with("attachment; filename=\"____.txt\""),
            "{odd}"
        );
    }

    #[test]
    fn database_sizes_are_read_from_either_shape() {
        assert_eq!(
            database_bytes(&json!({"sizes": {"active": 5, "file": 9}})),
            Some(5)
        );
        assert_eq!(database_bytes(&json!({"data_size": 7})), Some(7));
        assert_eq!(database_bytes(&json!({})), None);
    }
}
