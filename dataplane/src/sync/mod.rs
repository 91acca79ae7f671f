//! Multi-device sync: the owner's data database served over CouchDB's replication
//! protocol at `/api/v1/sync/`, behind the data plane's own authentication.
//!
//! PouchDB (`new PouchDB("https://<instance>/api/v1/sync", {fetch})` with a bearer token)
//! and CouchDB's replicator treat that URL as a database root. Requests are
//! - authenticated (bearer token, or Basic auth with the token as password for
//!   replicators that take credentials in the URL): an owner token, or an app whose grant `sync` is `always` (sync
//!   exposes the whole database, so no per-collection grant is enough);
//! - classified against an allow-list of paths, methods and query parameters
//!   ([`request`]); design documents, `_security`, views, `_find`, attachments, other
//!   databases and the system database are refused;
//! - for `_bulk_docs`, checked document by document with the document API's rules
//!   ([`bulk`]); refused items come back as per-item `forbidden` errors, as CouchDB
//!   reports a `validate_doc_update` refusal, and the rest are written; documents of the
//!   reserved `blobs` collection pass only as revisions the server already has;
//! - forwarded to CouchDB with the server's credentials, and the answer streamed back
//!   without buffering (continuous `_changes` included).
//!
//! Request bodies are bounded by `VIBE_MAX_BODY_BYTES`. Writes arriving here appear in
//! `_changes`, so realtime subscribers see them like API writes.

pub mod bulk;
pub mod hide;
pub mod request;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use request::{Refusal, SyncRequest};

/// Where the owner's database is served.
pub const SYNC_ROOT: &str = "/api/v1/sync";
/// The grant an app needs to sync.
pub const SYNC_PERMISSION: &str = "sync";

/// The sync routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sync", get(handle))
        .route("/api/v1/sync/", get(handle))
        .route(
            "/api/v1/sync/{*rest}",
            get(handle).post(handle).put(handle).delete(handle),
        )
}

/// The caller of a sync request. Besides `Authorization: Bearer <token>`, sync accepts
/// HTTP Basic auth whose password is the token (any user name): CouchDB's replicator
/// and PouchDB take credentials in the database URL (`https://sync:<token>@host/…`) and
/// turn them into Basic auth, and some replicators cannot send other headers.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Caller> {
    let app = match headers.get(crate::auth::APP_ID_HEADER) {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::BadRequest("Bad Request: Invalid X-Vibe-App-ID header.".into())
        })?),
        None => None,
    };
    let token = crate::auth::bearer_token(headers)
        .map(str::to_owned)
        .or_else(|| basic_password(headers))
        .ok_or_else(|| ApiError::Unauthorized(crate::error::UNAUTHORIZED_TOKEN.into()))?;
    crate::auth::authenticate(state, &token, app).await
}

/// The password of an `Authorization: Basic` header.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// Owner tokens sync; apps need the `sync` grant.
fn authorize(caller: &Caller) -> ApiResult<()> {
    match caller.app_id {
        None => caller.require_owner(),
        Some(_) => caller.require(SYNC_PERMISSION),
    }
}

async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, &headers).await?;
    authorize(&caller)?;
    let rest = uri
        .path()
        .strip_prefix(SYNC_ROOT)
        .unwrap_or_default()
        .trim_start_matches('/');
    let request = match SyncRequest::classify(&method, rest, uri.query()) {
        Ok(request) => request,
        Err(refusal) => return Ok(refusal_response(refusal)),
    };
    let body = read_body(&state, &method, body).await?;
    let db = state.data_db().await?;
    let mut url = match &request {
        SyncRequest::DbInfo => db.url(&[]),
        SyncRequest::Changes => db.url(&["_changes"]),
        SyncRequest::RevsDiff => db.url(&["_revs_diff"]),
        SyncRequest::BulkDocs => db.url(&["_bulk_docs"]),
        SyncRequest::BulkGet => db.url(&["_bulk_get"]),
        SyncRequest::AllDocs => db.url(&["_all_docs"]),
        SyncRequest::EnsureFullCommit => db.url(&["_ensure_full_commit"]),
        SyncRequest::Local(id) => db.url(&["_local", id]),
        SyncRequest::Document(id) => db.url(&[id]),
    };
    url.set_query(uri.query());

    if request == SyncRequest::BulkDocs {
        return bulk_docs(&db, url, &body).await;
    }
    if request == SyncRequest::BulkGet {
        let asked: Value = crate::json::parse_strict(&body)?;
        if hide::bulk_get_asks_hidden(&asked) {
            return Err(ApiError::Forbidden(
                "Design documents are not available through sync.".into(),
            ));
        }
    }

    let mut upstream = db.client().request(method.clone(), url);
    for name in [header::ACCEPT, header::CONTENT_TYPE] {
        if let Some(value) = headers.get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    if !body.is_empty() {
        upstream = upstream.body(body);
    }
    let response = db.client().send(upstream).await?;
    let feed = url_param(uri.query(), "feed");
    let feed = feed.as_deref();
    match request {
        // Never finishes by itself: ends (after a complete line) when shutdown begins, and
        // the replicator resumes from its checkpoint on the next replica or after restart.
        SyncRequest::Changes if feed == Some("continuous") => {
            Ok(stream_back(response, Some(state.shutdown.signal())))
        }
        // May wait a minute for a change: give way to shutdown with a retryable 503.
        SyncRequest::Changes if feed == Some("longpoll") && response.status().is_success() => {
            tokio::select! {
                answer = filtered_json(response) => answer,
                _ = state.shutdown.started() => Err(ApiError::Unavailable(
                    "The server is shutting down; retry.".into(),
                )),
            }
        }
        SyncRequest::Changes | SyncRequest::AllDocs if response.status().is_success() => {
            filtered_json(response).await
        }
        _ => Ok(stream_back(response, None)),
    }
}

fn url_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A `_changes` (normal or longpoll) or `_all_docs` answer without hidden rows. These
/// answers are bounded by the client's `limit` (replicators page with it), so they are
/// read whole to be filtered; continuous feeds are filtered line by line instead.
async fn filtered_json(response: reqwest::Response) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::OK);
    let mut answer = read_json(response).await?;
    hide::filter_answer(&mut answer);
    Ok((status, Json(answer)).into_response())
}

/// Read CouchDB's whole JSON answer. The connection breaking mid-answer (CouchDB stopped
/// during a longpoll) means CouchDB is unavailable: a retryable 503, as when it refuses
/// the connection. Only an answer that is not JSON is an internal error.
async fn read_json(response: reqwest::Response) -> ApiResult<Value> {
    let bytes = response.bytes().await.map_err(|e| {
        ApiError::from(crate::couch::CouchError::Unavailable(
            e.without_url().to_string(),
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(ApiError::internal)
}

/// Read a request body up to the configured limit (413 beyond it).
async fn read_body(state: &AppState, method: &Method, body: Body) -> ApiResult<Bytes> {
    if matches!(*method, Method::GET | Method::HEAD | Method::DELETE) {
        return Ok(Bytes::new());
    }
    let limit = state.config.limits.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::PayloadTooLarge(format!("Request body exceeds the limit of {limit} bytes."))
    })
}

async fn bulk_docs(
    db: &crate::couch::Database,
    url: url::Url,
    body: &[u8],
) -> Result<Response, ApiError> {
    let parsed = crate::json::parse_strict(body)?;
    let mut batch = bulk::check_batch(parsed).map_err(ApiError::BadRequest)?;
    let reserved = batch.reserved_revisions();
    if !reserved.is_empty() {
        let missing = db.missing_revisions(&reserved).await?;
        batch.refuse_unknown(&missing);
    }
    let refused = batch.refused.iter().flatten().count();
    if refused > 0 {
        tracing::info!(refused, "sync: refused documents in a _bulk_docs batch");
    }
    let forwarded = batch.forward["docs"].as_array().map_or(0, Vec::len);
    let results = if forwarded == 0 {
        Vec::new()
    } else {
        let client = db.client();
        let request = client.request(Method::POST, url).json(&batch.forward);
        let response = client.send(request).await?;
        let status = response.status();
        let answer = read_json(response).await?;
        match answer {
            Value::Array(items) => items,
            // A whole-batch error from CouchDB (e.g. 400 bad_request): pass it through.
            other => return Ok((status, Json(other)).into_response()),
        }
    };
    let merged = bulk::merge_results(&batch, results);
    Ok((StatusCode::CREATED, Json(Value::Array(merged))).into_response())
}

/// Stream CouchDB's answer back with its status and content headers. With
/// `continuous_until`, the answer is a continuous feed: the lines of hidden documents are
/// dropped, and it ends cleanly when that signal fires.
fn stream_back(
    response: reqwest::Response,
    continuous_until: Option<tokio_util::sync::CancellationToken>,
) -> Response {
    let mut builder = Response::builder().status(response.status().as_u16());
    for name in [header::CONTENT_TYPE, header::ETAG, header::CACHE_CONTROL] {
        if let Some(value) = response.headers().get(name.as_str()) {
            builder = builder.header(name, value.as_bytes());
        }
    }
    let body = if let Some(until) = continuous_until {
        use futures::StreamExt;
        Body::from_stream(
            filter_lines(Box::pin(response.bytes_stream())).take_until(until.cancelled_owned()),
        )
    } else {
        Body::from_stream(response.bytes_stream())
    };
    builder
        .body(body)
        .unwrap_or_else(|e| ApiError::internal(e).into_response())
}

/// Split a byte stream into lines and keep those [`hide::line_passes`] admits. Lines
/// are forwarded as soon as they are complete (heartbeats included).
fn filter_lines<S>(upstream: S) -> impl futures::Stream<Item = Result<Bytes, reqwest::Error>>
where
    S: futures::Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
{
    use futures::StreamExt;
    futures::stream::unfold(
        (upstream, Vec::<u8>::new(), false),
        |(mut upstream, mut pending, done)| async move {
            if done {
                return None;
            }
            loop {
                match upstream.next().await {
                    Some(Ok(chunk)) => {
                        pending.extend_from_slice(&chunk);
                        let Some(last_newline) = pending.iter().rposition(|b| *b == b'\n') else {
                            continue;
                        };
                        let rest = pending.split_off(last_newline + 1);
                        let complete = std::mem::replace(&mut pending, rest);
                        let kept: Vec<u8> = complete
                            .split_inclusive(|b| *b == b'\n')
                            .filter(|line| hide::line_passes(line))
                            .flatten()
                            .copied()
                            .collect();
                        return Some((Ok(Bytes::from(kept)), (upstream, pending, false)));
                    }
                    Some(Err(error)) => return Some((Err(error), (upstream, pending, true))),
                    None => {
                        let tail = std::mem::take(&mut pending);
                        if tail.is_empty() || !hide::line_passes(&tail) {
                            return None;
                        }
                        return Some((Ok(Bytes::from(tail)), (upstream, pending, true)));
                    }
                }
            }
        },
    )
}

fn refusal_response(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Forbidden(reason) => ApiError::Forbidden(reason).into_response(),
        Refusal::BadParameter(reason) => ApiError::BadRequest(reason).into_response(),
        Refusal::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(json!({ "error": "Method not allowed." })),
        )
            .into_response(),
    }
}
