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
//! - admitted per app like document requests ([`crate::admission`]; feeds held open
//!   count against the rate only), and refused with 400 when they name more ids than
//!   `query.max_sync_ids` ([`bounds`]);
//! - for `_bulk_docs`, checked document by document with the document API's rules
//!   ([`bulk`]); refused items come back as per-item `forbidden` errors, as CouchDB
//!   reports a `validate_doc_update` refusal, and the rest are written; documents of the
//!   reserved `blobs` collection pass only as revisions the server already has;
//! - for `_revs_diff`, asked of CouchDB only about ids the caller may read; other ids
//!   are always answered as missing ([`revs_diff`]);
//! - forwarded to CouchDB with the server's credentials, and the answer streamed back
//!   without buffering (continuous `_changes` included).
//!
//! Request bodies are bounded by `VIBE_MAX_BODY_BYTES` and must be JSON (415 otherwise).
//! Writes arriving here appear in `_changes`, so realtime subscribers see them like API
//! writes.

pub mod bounds;
pub mod bulk;
pub mod hide;
pub mod request;
pub mod revs_diff;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use std::time::Duration;

use crate::access::ReadGate;
use crate::admission::{admit, admit_feed};
use crate::auth::{Caller, CallerKind};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Open;
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
/// HTTP Basic auth: a registered device's id and secret ([`crate::devices`]), or a token
/// as the password (any user name), since CouchDB's replicator and PouchDB take
/// credentials in the database URL (`https://sync:<token>@host/…`) and turn them into
/// Basic auth, and some replicators cannot send other headers. A token always contains
/// dots, a device secret never does.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<Caller> {
    let app = match headers.get(crate::auth::APP_ID_HEADER) {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::BadRequest("Bad Request: Invalid X-Vibe-App-ID header.".into())
        })?),
        None => None,
    };
    if let Some(token) = crate::auth::bearer_token(headers) {
        return crate::auth::authenticate(state, token, app).await;
    }
    let (user, password) = basic_credentials(headers)
        .ok_or_else(|| ApiError::Unauthorized(crate::error::UNAUTHORIZED_TOKEN.into()))?;
    if password.contains('.') {
        crate::auth::authenticate(state, &password, app).await
    } else {
        crate::auth::authenticate_device(state, &user, &password, app).await
    }
}

/// The user name and password of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
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
    let (user, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| (user.to_owned(), password.to_owned()))
}

/// Owner tokens and the owner's own devices sync; apps (and app devices) need the
/// `sync` grant, devices also the `sync` scope.
fn authorize(caller: &Caller) -> ApiResult<()> {
    match (caller.kind, &caller.app_id) {
        (CallerKind::Owner, None) => Ok(()),
        (CallerKind::Device, None) if caller.scoped(SYNC_PERMISSION) => Ok(()),
        (CallerKind::Device, None) => Err(ApiError::missing_permission(SYNC_PERMISSION)),
        _ => caller.require(SYNC_PERMISSION),
    }
}

/// Whether a caller may still sync (for streams re-checking after a revocation).
fn still_syncs(caller: &Caller) -> bool {
    authorize(caller).is_ok()
}

/// The longest a longpoll `_changes` waits, whatever `timeout` asks (CouchDB's default).
pub const MAX_LONGPOLL_WAIT: Duration = Duration::from_secs(60);

/// How long a longpoll waits: the client's `timeout` (milliseconds), at most
/// [`MAX_LONGPOLL_WAIT`]. Not every CouchDB-compatible server honours `timeout`
/// (pouchdb-server ignores it), so the data plane bounds the wait itself.
fn longpoll_wait(query: Option<&str>) -> Duration {
    url_param(query, "timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(MAX_LONGPOLL_WAIT, |ms| {
            Duration::from_millis(ms).min(MAX_LONGPOLL_WAIT)
        })
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
    // Every document of every answer passes this gate (see `crate::access`).
    let gate = ReadGate::sync(&state, &caller)?;
    let rest = uri
        .path()
        .strip_prefix(SYNC_ROOT)
        .unwrap_or_default()
        .trim_start_matches('/');
    let request = match SyncRequest::classify(&method, rest, uri.query()) {
        Ok(request) => request,
        Err(refusal) => return Ok(refusal_response(refusal)),
    };
    if let SyncRequest::Document(id) = &request
        && !gate.admits_id(id)
    {
        return Err(not_found(id));
    }
    let feed = url_param(uri.query(), "feed");
    let feed = feed.as_deref();
    let held_open =
        request == SyncRequest::Changes && matches!(feed, Some("continuous" | "longpoll"));
    // Per-app admission (see `crate::admission`): a feed held open takes no slot.
    let _admitted = if held_open {
        admit_feed(&state, &caller)?;
        None
    } else {
        Some(admit(&state, &caller)?)
    };
    let body = read_body(&state, &method, &headers, body).await?;
    if !body.is_empty() {
        // CouchDB itself takes only JSON bodies here; a form or text body is what a web
        // page can send cross-origin with the browser's saved Basic credentials.
        crate::json::require_json(&headers)?;
    }
    let names_ids = matches!(
        request,
        SyncRequest::Changes | SyncRequest::AllDocs | SyncRequest::BulkGet | SyncRequest::RevsDiff
    );
    // Parsed once here, for the bound and for the checks below that read the body.
    let parsed: Option<Value> = if names_ids && !body.is_empty() {
        Some(crate::json::parse_strict(&body)?)
    } else {
        None
    };
    bounds::check(
        &request,
        uri.query(),
        parsed.as_ref(),
        state.config.query.max_sync_ids,
    )?;
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
        crate::export::restore::refuse_before_restore(&state).await?;
        return bulk_docs(&db, url, &body).await;
    }
    if request == SyncRequest::RevsDiff {
        let asked = match parsed {
            Some(asked) => asked,
            None => crate::json::parse_strict(&body)?,
        };
        return revs_diff(&db, url, asked, &gate).await;
    }
    if request == SyncRequest::BulkGet {
        let asked = match &parsed {
            Some(asked) => asked,
            None => &crate::json::parse_strict(&body)?,
        };
        if hide::bulk_get_asks_hidden(asked) {
            return Err(ApiError::Forbidden(
                "Design documents are not available through sync.".into(),
            ));
        }
    }

    let mut upstream = db.client().request(method.clone(), url);
    for name in [header::ACCEPT, header::CONTENT_TYPE] {
        if name == header::ACCEPT && matches!(request, SyncRequest::Document(_)) {
            continue;
        }
        if let Some(value) = headers.get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    if matches!(request, SyncRequest::Document(_)) {
        // JSON, never multipart, so each revision can be checked before it is sent
        // (replicators read either form). Replaces the client's Accept: with both,
        // CouchDB 3.5 answers multipart.
        upstream = upstream.header(header::ACCEPT, "application/json");
    }
    if !body.is_empty() {
        upstream = upstream.body(body.clone());
    }
    // Counted as an open feed from the moment it is asked of CouchDB until it ends.
    let open = held_open.then(|| state.metrics.open(Open::SyncFeed));
    let response = if held_open {
        // A feed's head may come late: pouchdb-server sends a continuous feed's head only
        // with its first change or heartbeat (every 6 s, or the client's `heartbeat`).
        // A revocation or shutdown meanwhile must not wait for it.
        tokio::select! {
            response = db.client().send(upstream) => response?,
            _ = crate::auth::until_revoked(state.clone(), caller.clone(), still_syncs) => {
                tracing::info!("sync: feed refused by revocation before CouchDB answered");
                return Err(ApiError::Unauthorized(crate::error::UNAUTHORIZED_TOKEN.into()));
            }
            _ = state.shutdown.started() => {
                return Err(ApiError::Unavailable("The server is shutting down; retry.".into()));
            }
        }
    } else {
        db.client().send(upstream).await?
    };
    let ok = response.status().is_success();
    match request {
        // Never finishes by itself: ends (after a complete line) when shutdown begins or
        // the caller's credential is revoked; the replicator resumes from its checkpoint
        // on the next replica, after restart, or never (revoked).
        SyncRequest::Changes if feed == Some("continuous") => {
            let shutdown = state.shutdown.signal();
            let revoked = crate::auth::until_revoked(state.clone(), caller, still_syncs);
            let end = async move {
                let _counted = open;
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = revoked => tracing::info!("sync: continuous feed ended by revocation"),
                }
            };
            Ok(stream_back(response, Some((gate, Box::pin(end)))))
        }
        // May wait a minute for a change: answers when a change comes, when the client's
        // `timeout` runs out (with what a normal feed says then), 401 when the credential
        // is revoked, and a retryable 503 when shutdown begins.
        SyncRequest::Changes if feed == Some("longpoll") && ok => {
            let revoked = crate::auth::until_revoked(state.clone(), caller, still_syncs);
            let _open = open;
            tokio::select! {
                answer = filtered_json(response, &gate, hide::filter_answer) => answer,
                _ = tokio::time::sleep(longpoll_wait(uri.query())) => {
                    changes_now(&db, &gate, &method, uri.query(), &headers, body).await
                }
                _ = revoked => Err(ApiError::Unauthorized(
                    crate::error::UNAUTHORIZED_TOKEN.into(),
                )),
                _ = state.shutdown.started() => Err(ApiError::Unavailable(
                    "The server is shutting down; retry.".into(),
                )),
            }
        }
        SyncRequest::Changes | SyncRequest::AllDocs if ok => {
            filtered_json(response, &gate, hide::filter_answer).await
        }
        SyncRequest::BulkGet if ok => filtered_json(response, &gate, hide::filter_bulk_get).await,
        SyncRequest::Document(id) if ok && method == Method::GET => {
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::OK);
            let answer = read_json(response).await?;
            let admit = |id: &str, doc: Option<&Value>| gate.admits_row(id, doc);
            match hide::filter_document(answer, &id, &admit) {
                Some(answer) => Ok((status, Json(answer)).into_response()),
                None => Err(not_found(&id)),
            }
        }
        _ => Ok(stream_back(response, None)),
    }
}

/// The `_changes` answer of a normal feed for the same request: what a longpoll whose
/// `timeout` ran out answers (no results, and the sequence to continue from).
async fn changes_now(
    db: &crate::couch::Database,
    gate: &ReadGate,
    method: &Method,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut url = db.url(&["_changes"]);
    {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !matches!(name.as_ref(), "feed" | "timeout" | "heartbeat") {
                pairs.append_pair(&name, &value);
            }
        }
        pairs.append_pair("feed", "normal");
    }
    let mut upstream = db.client().request(method.clone(), url);
    if let Some(value) = headers.get(header::CONTENT_TYPE) {
        upstream = upstream.header(header::CONTENT_TYPE, value);
    }
    if !body.is_empty() {
        upstream = upstream.body(body);
    }
    let response = db.client().send(upstream).await?;
    if !response.status().is_success() {
        return Ok(stream_back(response, None));
    }
    filtered_json(response, gate, hide::filter_answer).await
}

/// The 404 for a document the caller may not see (the same as for a missing one).
fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "Document with id \"{}\" not found.",
        id.chars().take(256).collect::<String>()
    ))
}

fn url_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A `_changes` (normal or longpoll), `_all_docs` or `_bulk_get` answer
/// without the rows `gate` refuses, `filter` knowing the answer's shape. These answers
/// are bounded by the client's request (replicators page with `limit`), so they are read
/// whole to be filtered; continuous feeds are filtered line by line instead.
async fn filtered_json(
    response: reqwest::Response,
    gate: &ReadGate,
    filter: fn(&mut Value, &hide::Admit<'_>),
) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::OK);
    let mut answer = read_json(response).await?;
    filter(&mut answer, &|id, doc| gate.admits_row(id, doc));
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
async fn read_body(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Bytes> {
    if matches!(*method, Method::GET | Method::HEAD | Method::DELETE) {
        return Ok(Bytes::new());
    }
    let limit = state.config.limits.max_body_bytes;
    crate::json::refuse_declared_oversize(headers, limit)?;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::PayloadTooLarge(format!("Request body exceeds the limit of {limit} bytes."))
    })
}

/// `_revs_diff`, asking the store only about ids the gate admits ([`revs_diff`]).
async fn revs_diff(
    db: &crate::couch::Database,
    url: url::Url,
    asked: Value,
    gate: &ReadGate,
) -> Result<Response, ApiError> {
    let split = revs_diff::split(asked, |id| gate.admits_id(id)).map_err(ApiError::BadRequest)?;
    let store = if split.forward.is_empty() {
        Value::Object(Default::default())
    } else {
        let client = db.client();
        client
            .json::<Value>(client.request(Method::POST, url).json(&split.forward))
            .await?
    };
    Ok(Json(revs_diff::merge(split, store)).into_response())
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
/// `continuous`, the answer is a continuous feed: the lines the gate refuses are dropped,
/// and it ends cleanly when the future completes.
fn stream_back(
    response: reqwest::Response,
    continuous: Option<(ReadGate, futures::future::BoxFuture<'static, ()>)>,
) -> Response {
    let mut builder = Response::builder().status(response.status().as_u16());
    for name in [header::CONTENT_TYPE, header::ETAG, header::CACHE_CONTROL] {
        if let Some(value) = response.headers().get(name.as_str()) {
            builder = builder.header(name, value.as_bytes());
        }
    }
    let body = if let Some((gate, until)) = continuous {
        use futures::StreamExt;
        Body::from_stream(filter_lines(Box::pin(response.bytes_stream()), gate).take_until(until))
    } else {
        Body::from_stream(response.bytes_stream())
    };
    builder
        .body(body)
        .unwrap_or_else(|e| ApiError::internal(e).into_response())
}

/// Split a byte stream into lines and keep those [`hide::line_passes`] admits under
/// `gate`. Lines are forwarded as soon as they are complete (heartbeats included).
fn filter_lines<S>(
    upstream: S,
    gate: ReadGate,
) -> impl futures::Stream<Item = Result<Bytes, reqwest::Error>>
where
    S: futures::Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
{
    use futures::StreamExt;
    futures::stream::unfold(
        (upstream, Vec::<u8>::new(), false),
        move |(mut upstream, mut pending, done)| {
            let gate = gate.clone();
            async move {
                let admit = |id: &str, doc: Option<&Value>| gate.admits_row(id, doc);
                if done {
                    return None;
                }
                loop {
                    match upstream.next().await {
                        Some(Ok(chunk)) => {
                            pending.extend_from_slice(&chunk);
                            let Some(last_newline) = pending.iter().rposition(|b| *b == b'\n')
                            else {
                                continue;
                            };
                            let rest = pending.split_off(last_newline + 1);
                            let complete = std::mem::replace(&mut pending, rest);
                            let kept: Vec<u8> = complete
                                .split_inclusive(|b| *b == b'\n')
                                .filter(|line| hide::line_passes(line, &admit))
                                .flatten()
                                .copied()
                                .collect();
                            return Some((Ok(Bytes::from(kept)), (upstream, pending, false)));
                        }
                        Some(Err(error)) => return Some((Err(error), (upstream, pending, true))),
                        None => {
                            let tail = std::mem::take(&mut pending);
                            if tail.is_empty() || !hide::line_passes(&tail, &admit) {
                                return None;
                            }
                            return Some((Ok(Bytes::from(tail)), (upstream, pending, true)));
                        }
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
