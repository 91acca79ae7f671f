//! `_bulk_docs` through sync: every document obeys the document API's rules, and the
//! ones that don't are answered per item, as CouchDB answers a `validate_doc_update`
//! refusal: `{"id", "error": "forbidden", "reason"}` in the result list, while the valid
//! ones are written. Documents are never modified here: with `new_edits: false` the
//! revision id is a hash the client computed over the content, so changing a single
//! field would make two devices disagree about what one revision contains.

use serde_json::{Map, Value, json};

use super::request::is_collection_doc_id;
use crate::documents::validate::check_reserved_fields;

/// Fields with a leading `_` that replication carries besides the document API's.
const REPLICATION_FIELDS: [&str; 3] = ["_revisions", "_attachments", "_conflicts"];

/// A `_bulk_docs` body split into what may be written and what is refused.
#[derive(Debug)]
pub struct CheckedBatch {
    /// The body to forward (the original options with only the accepted documents).
    pub forward: Map<String, Value>,
    /// Per input position: `None` when forwarded, `Some(error item)` when refused.
    pub refused: Vec<Option<Value>>,
    /// Whether the batch uses `new_edits: false` (replication mode).
    pub replicating: bool,
}

/// Check a parsed `_bulk_docs` body. `Err` carries a message for a 400 when the body is
/// not a `{"docs": [...]}` object.
pub fn check_batch(body: Value) -> Result<CheckedBatch, String> {
    let Value::Object(mut options) = body else {
        return Err("Request body must be a JSON object with a 'docs' array.".into());
    };
    let Some(Value::Array(docs)) = options.remove("docs") else {
        return Err("Request body must be a JSON object with a 'docs' array.".into());
    };
    options.retain(|key, _| key == "new_edits");
    let replicating = options.get("new_edits") == Some(&Value::Bool(false));
    let mut accepted = Vec::with_capacity(docs.len());
    let mut refused = Vec::with_capacity(docs.len());
    for doc in docs {
        match check_document(&doc) {
            Ok(()) => {
                accepted.push(doc);
                refused.push(None);
            }
            Err(reason) => {
                let id = doc.get("_id").cloned().unwrap_or(Value::Null);
                refused.push(Some(
                    json!({ "id": id, "error": "forbidden", "reason": reason }),
                ));
            }
        }
    }
    options.insert("docs".into(), Value::Array(accepted));
    Ok(CheckedBatch {
        forward: options,
        refused,
        replicating,
    })
}

/// The document API's rules, without completing the document: an id `<collection>/…`
/// with a valid collection, no reserved `_` fields, and (unless deleted) a `collection`
/// field equal to the id's collection so realtime and reads can place it.
pub fn check_document(doc: &Value) -> Result<(), String> {
    let Value::Object(fields) = doc else {
        return Err("Each document must be a JSON object.".into());
    };
    let Some(Value::String(id)) = fields.get("_id") else {
        return Err("Documents written through sync must carry an _id '<collection>/<id>'.".into());
    };
    if id.starts_with("_design/") {
        return Err("Design documents cannot be written through sync.".into());
    }
    if !is_collection_doc_id(id) {
        return Err(
            "Document _id must be '<collection>/<id>' with a valid collection name.".into(),
        );
    }
    check_reserved_fields(fields, &REPLICATION_FIELDS)?;
    let deleted = fields.get("_deleted") == Some(&Value::Bool(true));
    let collection = id.split_once('/').map(|(c, _)| c).unwrap_or_default();
    match fields.get("collection") {
        Some(Value::String(c)) if c == collection => Ok(()),
        None if deleted => Ok(()),
        None => Err(format!(
            "Document must have \"collection\": \"{collection}\"."
        )),
        Some(_) => Err(format!(
            "Document collection does not match its _id prefix '{collection}/'."
        )),
    }
}

/// Merge CouchDB's answer for the forwarded documents with the refused items.
///
/// With `new_edits: true` CouchDB answers one item per forwarded document, in order, and
/// the refusals are slotted back in at their input positions. With `new_edits: false` it
/// lists only failures, so the refusals are appended.
pub fn merge_results(batch: &CheckedBatch, couch: Vec<Value>) -> Vec<Value> {
    if batch.replicating {
        let mut out = couch;
        out.extend(batch.refused.iter().flatten().cloned());
        return out;
    }
    let mut written = couch.into_iter();
    batch
        .refused
        .iter()
        .map(|slot| match slot {
            Some(error) => error.clone(),
            None => written
                .next()
                .unwrap_or_else(|| json!({ "error": "unknown_error" })),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_documents_pass_unchanged() {
        let doc = json!({"_id": "notes/1", "_rev": "1-abc", "collection": "notes", "text": "hi",
                         "_revisions": {"start": 1, "ids": ["abc"]}});
        assert_eq!(check_document(&doc), Ok(()));
        let tomb = json!({"_id": "notes/1", "_rev": "2-def", "_deleted": true});
        assert_eq!(check_document(&tomb), Ok(()));
    }

    #[test]
    fn invalid_documents_are_refused_with_reasons() {
        for doc in [
            json!({"_id": "_design/evil", "views": {}}),
            json!({"_id": "notes", "collection": "notes"}),
            json!({"_id": "Notes/1", "collection": "Notes"}),
            json!({"_id": "notes/1", "collection": "todos"}),
            json!({"_id": "notes/1"}),
            json!({"_id": "notes/1", "collection": "notes", "_security": {}}),
            json!({"collection": "notes"}),
            json!("string"),
        ] {
            assert!(check_document(&doc).is_err(), "{doc}");
        }
    }

    #[test]
    fn results_merge_in_input_order() {
        let body = json!({"docs": [
            {"_id": "notes/1", "collection": "notes"},
            {"_id": "_design/x"},
            {"_id": "notes/2", "collection": "notes"}
        ], "all_or_nothing": true});
        let batch = check_batch(body).unwrap();
        assert!(!batch.replicating);
        assert_eq!(batch.forward["docs"].as_array().unwrap().len(), 2);
        assert!(batch.forward.get("all_or_nothing").is_none());
        let merged = merge_results(
            &batch,
            vec![
                json!({"ok": true, "id": "notes/1"}),
                json!({"ok": true, "id": "notes/2"}),
            ],
        );
        assert_eq!(merged[0]["id"], "notes/1");
        assert_eq!(merged[1]["error"], "forbidden");
        assert_eq!(merged[1]["id"], "_design/x");
        assert_eq!(merged[2]["id"], "notes/2");
    }

    #[test]
    fn replication_batches_append_refusals() {
        let batch =
            check_batch(json!({"new_edits": false, "docs": [{"_id": "_design/x"}]})).unwrap();
        assert!(batch.replicating);
        let merged = merge_results(&batch, vec![]);
        assert_eq!(
            merged,
            vec![json!({"id": "_design/x", "error": "forbidden",
            "reason": "Design documents cannot be written through sync."})]
        );
        assert!(check_batch(json!([1])).is_err());
    }
}
