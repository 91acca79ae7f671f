//! Every leaf revision of a database, page by page: the documents an export writes and the
//! staged documents an import commits.
//!
//! `_changes?style=all_docs` names each document's leaf revisions (winner, conflicts,
//! tombstones); `_bulk_get?revs=true` returns each of them with its revision history
//! (`_revisions`), which is what `_bulk_docs` with `new_edits: false` needs to store the same
//! tree elsewhere. Design and `_local` documents are left out.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::couch::{ChangesQuery, CouchError, Database};

/// Rows of `_changes` asked per page.
pub const PAGE_ROWS: u64 = 200;

/// One page of leaf revisions.
pub struct LeafPage {
    /// Leaf revisions with `_revisions`, grouped by document.
    pub docs: Vec<Value>,
    /// Pass as `since` for the next page.
    pub next: Value,
    /// No more pages.
    pub done: bool,
}

/// Whether a document id is one that an archive carries.
pub fn is_exported_id(id: &str) -> bool {
    !id.starts_with("_design/") && !id.starts_with("_local/")
}

#[derive(Deserialize)]
struct BulkGet {
    results: Vec<BulkGetResult>,
}

#[derive(Deserialize)]
struct BulkGetResult {
    #[serde(default)]
    docs: Vec<Value>,
}

/// The page of leaf revisions after `since` (`None`: from the start).
pub async fn page(db: &Database, since: Option<Value>) -> Result<LeafPage, CouchError> {
    let changes = db
        .changes(&ChangesQuery {
            since,
            limit: Some(PAGE_ROWS),
            all_docs_style: true,
            ..ChangesQuery::default()
        })
        .await?;
    let done = changes.results.is_empty();
    let mut wanted = Vec::new();
    for row in &changes.results {
        if !is_exported_id(&row.id) {
            continue;
        }
        for change in &row.changes {
            if let Some(rev) = change.get("rev").and_then(Value::as_str) {
                wanted.push(json!({ "id": row.id, "rev": rev }));
            }
        }
    }
    let mut docs = Vec::with_capacity(wanted.len());
    if !wanted.is_empty() {
        let mut url = db.url(&["_bulk_get"]);
        url.query_pairs_mut().append_pair("revs", "true");
        let request = db
            .client()
            .request(Method::POST, url)
            .json(&json!({ "docs": wanted }));
        let answer: BulkGet = db.client().json(request).await?;
        for result in answer.results {
            // A revision that is gone (replaced and compacted since `_changes` named it)
            // is skipped: its successor comes later in the feed with this history.
            docs.extend(result.docs.into_iter().filter_map(|d| d.get("ok").cloned()));
        }
    }
    Ok(LeafPage {
        docs,
        next: changes.last_seq,
        done,
    })
}

/// Store revisions as they are (`_bulk_docs` with `new_edits: false`): the same revision
/// ids and histories; storing one again changes nothing. Fails on any per-document error.
pub async fn store(db: &Database, docs: &[Value]) -> Result<(), CouchError> {
    if docs.is_empty() {
        return Ok(());
    }
    let request = db
        .client()
        .request(Method::POST, db.url(&["_bulk_docs"]))
        .json(&json!({ "docs": docs, "new_edits": false }));
    let results: Vec<Value> = db.client().json(request).await?;
    if let Some(failed) = results.iter().find(|r| r.get("error").is_some()) {
        return Err(CouchError::BadRequest {
            error: failed["error"].as_str().unwrap_or_default().to_string(),
            reason: failed["reason"].as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(())
}

/// Counts distinct document ids without keeping them (a 64-bit keyed hash per id).
#[derive(Default)]
pub struct DistinctIds {
    hasher: std::collections::hash_map::RandomState,
    seen: std::collections::HashSet<u64>,
}

impl DistinctIds {
    /// Note `id`.
    pub fn insert(&mut self, id: &str) {
        use std::hash::BuildHasher;
        self.seen.insert(self.hasher.hash_one(id));
    }

    /// How many distinct ids were noted.
    pub fn count(&self) -> u64 {
        self.seen.len() as u64
    }
}
