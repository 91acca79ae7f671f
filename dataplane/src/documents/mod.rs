//! Document routes over the owner's CouchDB database:
//! `POST /api/v1/data/read`, `POST /api/v1/data/write`,
//! `GET|DELETE /api/v1/data/{collection}/{id}`.
//!
//! Every document carries `collection` and an id `<collection>/<…>`; apps reach a
//! collection only with the `read:<c>` / `write:<c>` grant. Reserved collections
//! ([`validate::RESERVED_COLLECTIONS`], i.e. `blobs`) are read-only here for every caller,
//! the owner included: their documents are written by their own routes.
//!
//! Every request here is first admitted per app ([`crate::admission`]); reads are bounded
//! ([`limits`], [`regex`], [`settings`]): filter shape, sort fields and sort indexes are
//! checked before the store sees them, and the store's work has a deadline.

pub mod limits;
pub mod query;
pub mod regex;
pub mod settings;
pub mod validate;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use vibe_api::documents::{Page, ReadQuery, WriteRequest, WriteResult};

use self::query::{ReadRequest, collection_of};
use self::validate::{check_collection, check_writable, prepare_document};
use crate::access::ReadGate;
use crate::admission::admit;
use crate::auth::Caller;
use crate::couch::{CouchError, Database};
use crate::error::{ApiError, ApiResult};
use crate::json::StrictJson;
use crate::state::{AppState, INDEX_DESIGN_DOC};

/// Most documents accepted in one write.
pub const MAX_BULK_DOCS: usize = 1000;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/data/read", post(read))
        .route("/api/v1/data/write", post(write))
        .route(
            "/api/v1/data/{collection}/{*id}",
            get(get_document).delete(delete_document),
        )
}

fn validation(details: String) -> ApiError {
    ApiError::Validation(details)
}

/// 403 for a write or delete in a reserved collection: the request is well formed, and
/// no credential or grant could make it allowed.
fn writable(collection: &str) -> ApiResult<()> {
    check_writable(collection).map_err(ApiError::Forbidden)
}

/// Creation of sort indexes is serialised, so that concurrent reads cannot together create
/// more than `query.max_sort_indexes`.
static INDEX_CREATION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn ensure_index(state: &AppState, db: &Database, request: &ReadRequest) -> ApiResult<()> {
    let name = request.index_name();
    if request.sort.is_empty() || state.has_index(&name) {
        return Ok(());
    }
    let _creating = INDEX_CREATION.lock().await;
    let existing = db.index_names(INDEX_DESIGN_DOC).await?;
    if !existing.contains(&name) {
        let max = state.config.query.max_sort_indexes;
        let sort_indexes = existing
            .iter()
            .filter(|n| n.starts_with(query::SORT_INDEX_PREFIX))
            .count();
        if sort_indexes >= max as usize {
            state.metrics.query_refused("max_sort_indexes");
            return Err(limits::exceeded(
                format!(
                    "sorting on {:?} needs a new index and {sort_indexes} exist",
                    request.sort
                ),
                "max_sort_indexes",
                max,
            ));
        }
        let fields = request.index_fields();
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        db.create_index(&name, INDEX_DESIGN_DOC, &fields).await?;
    }
    state.remember_index(name);
    Ok(())
}

/// The 400 details of a read the store refused as malformed.
pub const STORE_REFUSED_QUERY: &str = "Invalid query: the filter or sort is not a valid Mango query \
     (operators take arguments of their documented types, e.g. $and, $or, $in and $nin take arrays).";

/// `POST /api/v1/data/read` → `{docs, doc?, bookmark}`.
async fn read(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<ReadQuery>,
) -> ApiResult<Json<Page<Box<RawValue>>>> {
    let _admitted = admit(&state, &caller)?;
    let collection = collection_of(&body.collection).map_err(validation)?;
    let gate = ReadGate::collection(&state, &caller, &collection)?;
    let bounds = &state.config.query;
    if let Some(filter) = &body.filter {
        limits::check_filter(bounds, filter)
            .inspect_err(|_| state.metrics.query_refused("filter"))?;
    }
    let request = ReadRequest::parse(&body).map_err(validation)?;
    limits::check_sort(bounds, &request.sort)
        .inspect_err(|_| state.metrics.query_refused("sort_fields"))?;
    let db = state.data_db().await?;
    ensure_index(&state, &db, &request).await?;
    // On expiry the find's future is dropped, which closes its connection to CouchDB;
    // CouchDB then stops the query at its next disconnect check.
    let query = request.mango_query();
    let found = match tokio::time::timeout(bounds.timeout(), db.find_raw(&query)).await {
        Ok(Ok(found)) => found,
        // The store's own words name its internals (pouchdb-server: `selectors.forEach is
        // not a function`), so the client gets ours; the store's go to the log.
        Ok(Err(CouchError::BadRequest { error, reason })) => {
            tracing::info!(%error, %reason, "store refused a read query");
            return Err(ApiError::Validation(STORE_REFUSED_QUERY.into()));
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            state.metrics.query_refused("timeout_ms");
            tracing::warn!(collection = %request.collection, "read: store deadline reached");
            return Err(ApiError::Unavailable(format!(
                "The query did not finish in time; query.timeout_ms = {}. Narrow the filter.",
                bounds.timeout_ms
            )));
        }
    };
    let (docs, bookmark) =
        request.finish_page(found.docs, |doc| gate.admits_json(doc.get().as_bytes()));
    Ok(Json(Page {
        doc: docs.first().cloned(),
        docs,
        bookmark,
    }))
}

/// `POST /api/v1/data/write` `{collection, data}` → `{ok,id,rev}` or bulk results.
async fn write(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<WriteRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let _admitted = admit(&state, &caller)?;
    let collection = collection_of(&body.collection).map_err(validation)?;
    writable(&collection)?;
    caller.require(&format!("write:{collection}"))?;
    crate::export::restore::refuse_before_restore(&state).await?;
    let data_error = || validation("Data must be a single object or an array of objects.".into());
    match &body.data {
        doc @ Value::Object(_) => {
            let doc = prepare_document(&collection, doc, &[]).map_err(validation)?;
            let id = doc["_id"].as_str().unwrap_or_default().to_string();
            let db = state.data_db().await?;
            let result = db.put(&id, &doc).await?;
            let written = WriteResult {
                ok: true,
                id: result.id,
                rev: result.rev,
            };
            Ok((
                StatusCode::OK,
                Json(serde_json::to_value(written).map_err(ApiError::internal)?),
            ))
        }
        Value::Array(items) => {
            if items.len() > MAX_BULK_DOCS {
                return Err(validation(format!(
                    "At most {MAX_BULK_DOCS} documents per write."
                )));
            }
            if items.iter().any(|d| !d.is_object()) {
                return Err(data_error());
            }
            let docs = items
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    prepare_document(&collection, d, &[]).map_err(|e| format!("Item {i}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(validation)?;
            if docs.is_empty() {
                return Ok((StatusCode::OK, Json(json!([]))));
            }
            let db = state.data_db().await?;
            let results = db.bulk_docs(&docs).await?;
            let failed = results.iter().any(|r| r.get("error").is_some());
            let results: Vec<Value> = results
                .into_iter()
                .map(|mut r| {
                    if r.get("error").is_none() && r.get("ok").is_none() {
                        r["ok"] = json!(true);
                    }
                    r
                })
                .collect();
            let status = if failed {
                StatusCode::MULTI_STATUS
            } else {
                StatusCode::OK
            };
            Ok((status, Json(Value::Array(results))))
        }
        _ => Err(data_error()),
    }
}

fn full_id(collection: &str, id: &str) -> ApiResult<String> {
    check_collection(collection).map_err(validation)?;
    let full = format!("{collection}/{id}");
    validate::check_id(collection, &full).map_err(validation)?;
    Ok(full)
}

/// `GET /api/v1/data/{collection}/{id}` → the document, passed on as CouchDB sent it once
/// the gate admits it (read from the text, the document is not rebuilt).
async fn get_document(
    State(state): State<AppState>,
    caller: Caller,
    Path((collection, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let _admitted = admit(&state, &caller)?;
    check_collection(&collection).map_err(validation)?;
    let gate = ReadGate::collection(&state, &caller, &collection)?;
    let full = full_id(&collection, &id)?;
    let db = state.data_db().await?;
    match db.get_json(&full).await? {
        Some(doc) if gate.admits_json(&doc) => {
            Ok(([(header::CONTENT_TYPE, JSON_CONTENT_TYPE)], doc).into_response())
        }
        _ => Err(ApiError::NotFound(format!(
            "Document with id \"{full}\" not found."
        ))),
    }
}

/// The `Content-Type` of JSON answers passed on from the store (axum's `Json` says the same).
const JSON_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/json");

#[derive(serde::Deserialize)]
struct RevQuery {
    rev: Option<String>,
}

/// `DELETE /api/v1/data/{collection}/{id}?rev=` → `{ok, id, rev}` (the deletion's rev).
async fn delete_document(
    State(state): State<AppState>,
    caller: Caller,
    Path((collection, id)): Path<(String, String)>,
    query: Result<Query<RevQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let _admitted = admit(&state, &caller)?;
    check_collection(&collection).map_err(validation)?;
    writable(&collection)?;
    caller.require(&format!("write:{collection}"))?;
    let full = full_id(&collection, &id)?;
    let rev = query
        .ok()
        .and_then(|Query(q)| q.rev)
        .filter(|r| !r.is_empty() && r.len() <= 256)
        .ok_or_else(|| validation("Query parameter 'rev' is required.".into()))?;
    crate::export::restore::refuse_before_restore(&state).await?;
    let db = state.data_db().await?;
    match db.delete(&full, &rev).await {
        Ok(result) => Ok(Json(
            json!({ "ok": true, "id": result.id, "rev": result.rev }),
        )),
        // A rev that is not a leaf of an existing document is a conflict (CouchDB says
        // 409; pouchdb-server says 404, so look).
        Err(CouchError::NotFound { .. }) => match db.get(&full).await? {
            Some(_) => Err(ApiError::Conflict("Revision conflict".into())),
            None => Err(ApiError::NotFound(format!(
                "Document with id \"{full}\" not found."
            ))),
        },
        // pouchdb-server answers 400 for a malformed rev; CouchDB 409 for a stale one.
        Err(CouchError::BadRequest { .. }) => Err(ApiError::Conflict("Revision conflict".into())),
        Err(e) => Err(e.into()),
    }
}
