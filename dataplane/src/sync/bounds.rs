//! How many ids one sync request may name (`query.max_sync_ids`).
//!
//! The replication protocol lets a client name documents in bulk: `doc_ids` of a
//! `_changes` with `filter=_doc_ids`, `keys` of `_all_docs`, `docs` of `_bulk_get`, and
//! the revisions of `_revs_diff`. A 1 MiB body holds about 50,000 short ids, and CouchDB
//! 3.5's work for them grows faster than their number (measured: 10,000 `doc_ids` 19 s,
//! 50,000 `_revs_diff` entries 102 s), so the count is bounded before CouchDB is asked.
//! Replicators ask in batches (PouchDB 100, CouchDB's replicator 500), well inside the
//! default of 1,000.

use serde_json::Value;

use super::request::SyncRequest;
use crate::documents::limits;
use crate::error::ApiResult;

/// Refuse with 400 naming `query.max_sync_ids` when `request` (its `query` string and
/// parsed JSON `body`) names more than `max` ids.
pub fn check(
    request: &SyncRequest,
    query: Option<&str>,
    body: Option<&Value>,
    max: u32,
) -> ApiResult<()> {
    let (what, count) = match request {
        SyncRequest::Changes => ("doc_ids", list_len(query, body, "doc_ids")),
        SyncRequest::AllDocs => ("keys", list_len(query, body, "keys")),
        SyncRequest::BulkGet => ("docs", body.map_or(0, |b| array_len(b.get("docs")))),
        SyncRequest::RevsDiff => ("revisions", body.map_or(0, revs_diff_len)),
        _ => return Ok(()),
    };
    if count > max as usize {
        return Err(limits::exceeded(
            format!("the request names {count} {what}"),
            "max_sync_ids",
            max,
        ));
    }
    Ok(())
}

/// Items of the JSON array `name`, in the body or as a query parameter, whichever is
/// larger (CouchDB reads either).
fn list_len(query: Option<&str>, body: Option<&Value>, name: &str) -> usize {
    let in_body = body.map_or(0, |b| array_len(b.get(name)));
    let in_query = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(key, _)| key == name)
        .map(|(_, value)| {
            serde_json::from_str::<Value>(&value)
                .ok()
                .map_or(0, |v| array_len(Some(&v)))
        })
        .max()
        .unwrap_or(0);
    in_body.max(in_query)
}

fn array_len(value: Option<&Value>) -> usize {
    value.and_then(Value::as_array).map_or(0, Vec::len)
}

/// A `_revs_diff` body maps ids to revision lists: each id counts at least once, and
/// every revision it lists counts.
fn revs_diff_len(body: &Value) -> usize {
    body.as_object().map_or(0, |map| {
        map.values().map(|revs| array_len(Some(revs)).max(1)).sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("notes/{i}")).collect()
    }

    fn refused(result: ApiResult<()>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn doc_ids_are_counted_in_body_and_query() {
        let body = json!({ "doc_ids": ids(11) });
        assert!(check(&SyncRequest::Changes, None, Some(&body), 11).is_ok());
        let message = refused(check(&SyncRequest::Changes, None, Some(&body), 10));
        assert!(message.contains("11 doc_ids"), "{message}");
        assert!(message.contains("query.max_sync_ids = 10"), "{message}");
        let query = format!(
            "filter=_doc_ids&doc_ids={}",
            url::form_urlencoded::byte_serialize(json!(ids(11)).to_string().as_bytes())
                .collect::<String>()
        );
        assert!(check(&SyncRequest::Changes, Some(&query), None, 10).is_err());
        assert!(check(&SyncRequest::Changes, Some("feed=longpoll"), None, 10).is_ok());
    }

    #[test]
    fn keys_docs_and_revisions_are_counted() {
        let keys = json!({ "keys": ids(3) });
        assert!(check(&SyncRequest::AllDocs, None, Some(&keys), 2).is_err());
        let docs = json!({ "docs": ids(3).iter().map(|id| json!({"id": id})).collect::<Vec<_>>() });
        assert!(check(&SyncRequest::BulkGet, None, Some(&docs), 2).is_err());
        assert!(check(&SyncRequest::BulkGet, None, Some(&docs), 3).is_ok());
        // One id with many revisions costs like many ids.
        let diff = json!({ "notes/1": ["1-a", "2-b", "3-c"] });
        assert!(check(&SyncRequest::RevsDiff, None, Some(&diff), 2).is_err());
        let diff = json!({ "notes/1": [], "notes/2": ["1-a"] });
        assert!(check(&SyncRequest::RevsDiff, None, Some(&diff), 2).is_ok());
    }

    #[test]
    fn other_requests_are_not_counted() {
        let body = json!({ "docs": ids(5) });
        assert!(check(&SyncRequest::BulkDocs, None, Some(&body), 1).is_ok());
        assert!(check(&SyncRequest::DbInfo, None, None, 1).is_ok());
    }
}
