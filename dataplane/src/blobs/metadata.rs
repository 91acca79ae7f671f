//! Blob metadata documents in the owner's database.
//!
//! One document per finalised blob, id `blobs/<uuid>` (the uuid of the object key), in the
//! `blobs` collection like any other document, so it reaches realtime subscribers and synced
//! devices. Fields follow the original (`originalFilename`, `contentType`, `size`, `ownerDid`,
//! `uploadTimestamp`, `bucket`, `collection`), plus `objectKey` and `collectionName` (the user
//! collection the blob belongs to; the original kept that in `collection` and could never
//! store the document, see the module docs of [`crate::blobs`]).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::ObjectKey;
use crate::couch::{CouchError, Database};
use crate::error::{ApiError, ApiResult};

/// The collection holding blob metadata documents.
pub const BLOBS_COLLECTION: &str = "blobs";
/// Page size used when reading every metadata document (the sweep).
const SCAN_PAGE: u64 = 500;

/// A blob metadata document (the contract type: its answers are the same bytes).
pub use vibe_api::blobs::BlobMetadata;

/// Stores a new metadata document; 409 when the blob was already finalised.
pub async fn create(db: &Database, meta: &BlobMetadata) -> ApiResult<BlobMetadata> {
    let doc = serde_json::to_value(meta).map_err(ApiError::internal)?;
    match db.put(&meta.id, &doc).await {
        Ok(result) => Ok(BlobMetadata {
            rev: Some(result.rev),
            ..meta.clone()
        }),
        Err(CouchError::Conflict) => Err(ApiError::Conflict(
            "This upload has already been finalized.".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The metadata of `key`, if the blob was finalised (and the document really describes it).
pub async fn get(db: &Database, key: &ObjectKey) -> ApiResult<Option<BlobMetadata>> {
    let Some(doc) = db.get(&key.metadata_id()).await? else {
        return Ok(None);
    };
    match serde_json::from_value::<BlobMetadata>(doc) {
        Ok(meta) if meta.object_key == key.as_str() && meta.collection == BLOBS_COLLECTION => {
            Ok(Some(meta))
        }
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::warn!(id = %key.metadata_id(), error = %e, "malformed blob metadata document");
            Ok(None)
        }
    }
}

/// Deletes the metadata of `key`, re-reading the revision once if it changed meanwhile.
/// A document that is already gone is not an error.
pub async fn delete(db: &Database, key: &ObjectKey, meta: &BlobMetadata) -> ApiResult<()> {
    let mut rev = meta.rev.clone();
    for _ in 0..3 {
        let Some(current) = rev.take() else {
            return Ok(());
        };
        match db.delete(&meta.id, &current).await {
            Ok(_) | Err(CouchError::NotFound { .. }) => return Ok(()),
            Err(CouchError::Conflict) => {
                rev = get(db, key).await?.and_then(|m| m.rev);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict("Revision conflict".into()))
}

/// A page of metadata of the blobs of `collection`, in upload order, after the cursor.
pub async fn list(
    db: &Database,
    collection: &str,
    after: Option<&str>,
    limit: u64,
) -> ApiResult<(Vec<Value>, Option<String>)> {
    let after_id = after.map(|uuid| format!("{BLOBS_COLLECTION}/{uuid}"));
    let query = json!({
        "selector": { "$and": [
            { "collection": { "$eq": BLOBS_COLLECTION } },
            { "_id": { "$gt": after_id.clone().map_or(Value::Null, Value::String) } },
            { "collectionName": { "$eq": collection } },
        ]},
        "sort": [ { "collection": "asc" }, { "_id": "asc" } ],
        // One more to learn whether another page exists, one more because some servers
        // treat the exclusive bound on `_id` as inclusive.
        "limit": limit + 2,
    });
    let found = db.find(&query).await?;
    let mut docs: Vec<Value> = found
        .docs
        .into_iter()
        .filter(|d| {
            let id = d.get("_id").and_then(Value::as_str).unwrap_or_default();
            after_id.as_deref().is_none_or(|a| id > a)
        })
        // The result check (see `crate::access`): only metadata documents of this
        // collection's blobs, whatever the store made of the selector.
        .filter(|d| {
            crate::access::document_collection(d) == Some(BLOBS_COLLECTION)
                && d.get("collectionName").and_then(Value::as_str) == Some(collection)
        })
        .collect();
    let more = docs.len() as u64 > limit;
    docs.truncate(limit as usize);
    let bookmark = if more {
        docs.last()
            .and_then(|d| d.get("_id").and_then(Value::as_str))
            .and_then(|id| id.strip_prefix("blobs/"))
            .map(str::to_string)
    } else {
        None
    };
    Ok((docs, bookmark))
}

/// Object keys of every finalised blob (for the sweep).
pub async fn all_object_keys(db: &Database) -> ApiResult<HashSet<String>> {
    let mut keys = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let query = json!({
            "selector": { "$and": [
                { "collection": { "$eq": BLOBS_COLLECTION } },
                { "_id": { "$gt": after.clone().map_or(Value::Null, Value::String) } },
            ]},
            "sort": [ { "collection": "asc" }, { "_id": "asc" } ],
            "fields": ["_id", "objectKey"],
            "limit": SCAN_PAGE,
        });
        let page = db.find(&query).await?.docs;
        let mut last = None;
        for doc in &page {
            if let Some(key) = doc.get("objectKey").and_then(Value::as_str) {
                keys.insert(key.to_string());
            }
            last = doc.get("_id").and_then(Value::as_str).map(str::to_string);
        }
        match last {
            Some(id) if after.as_deref() != Some(id.as_str()) && page.len() as u64 >= SCAN_PAGE => {
                after = Some(id);
            }
            _ => return Ok(keys),
        }
    }
}
