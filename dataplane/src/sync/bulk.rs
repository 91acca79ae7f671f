//! `_bulk_docs` through sync: every document obeys the document API's rules, and the
//! ones that don't are answered per item, as CouchDB answers a `validate_doc_update`
//! refusal: `{"id", "error": "forbidden", "reason"}` in the result list, while the valid
//! ones are written. Documents are never modified here: with `new_edits: false` the
//! revision id is a hash the client computed over the content, so changing a single
//! field would make two devices disagree about what one revision contains.
//!
//! Documents of a reserved collection (`blobs/*`, the blob metadata) are written only by
//! their own routes. Devices still hold them and their replicators may push them back, so
//! a replication batch (`new_edits: false`) may carry the revisions the server already has
//! (a no-op for CouchDB); any other revision is refused, as is every `blobs/*` document
//! in a `new_edits: true` batch. Which revisions are known is asked of CouchDB
//! (`_revs_diff`) by the caller, see [`CheckedBatch::reserved_revisions`].

use serde_json::{Map, Value, json};

use super::request::is_collection_doc_id;
use crate::documents::validate::{RESERVED_COLLECTIONS, check_reserved_fields, check_writable};

/// Fields with a leading `_` that replication carries besides the document API's.
/// `_attachments` is not one of them: the document API refuses it (files go through the
/// blob API, whose metadata the grants cover), and so does sync, per item.
const REPLICATION_FIELDS: [&str; 2] = ["_revisions", "_conflicts"];

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
        match check_document(&doc).and_then(|()| check_reserved(&doc, replicating)) {
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

impl CheckedBatch {
    /// `(id, rev)` of the forwarded documents of reserved collections. In a replication
    /// batch they may only be revisions the server already has: ask CouchDB which of
    /// these it is missing and pass them to [`CheckedBatch::refuse_unknown`].
    pub fn reserved_revisions(&self) -> Vec<(String, String)> {
        self.forwarded()
            .filter(|doc| is_reserved(doc))
            .filter_map(|doc| Some((doc_str(doc, "_id")?, doc_str(doc, "_rev")?)))
            .collect()
    }

    /// Refuse the forwarded reserved documents whose `(id, rev)` is in `missing`: they
    /// would be new revisions of documents only their own routes write.
    pub fn refuse_unknown(&mut self, missing: &[(String, String)]) {
        let Some(Value::Array(docs)) = self.forward.remove("docs") else {
            return;
        };
        let mut docs = docs.into_iter();
        let mut kept = Vec::new();
        for slot in self.refused.iter_mut().filter(|slot| slot.is_none()) {
            let Some(doc) = docs.next() else { break };
            let revision = (doc_str(&doc, "_id"), doc_str(&doc, "_rev"));
            let unknown = is_reserved(&doc)
                && missing
                    .iter()
                    .any(|(id, rev)| revision == (Some(id.clone()), Some(rev.clone())));
            if unknown {
                *slot = Some(json!({
                    "id": doc.get("_id").cloned().unwrap_or(Value::Null),
                    "error": "forbidden",
                    "reason": reserved_reason(&doc),
                }));
            } else {
                kept.push(doc);
            }
        }
        self.forward.insert("docs".into(), Value::Array(kept));
    }

    fn forwarded(&self) -> impl Iterator<Item = &Value> {
        self.forward
            .get("docs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }
}

fn doc_str(doc: &Value, field: &str) -> Option<String> {
    doc.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// The collection of a document's id (`<collection>/…`).
fn collection_of_id(doc: &Value) -> &str {
    doc.get("_id")
        .and_then(Value::as_str)
        .and_then(|id| id.split_once('/'))
        .map_or("", |(collection, _)| collection)
}

fn is_reserved(doc: &Value) -> bool {
    RESERVED_COLLECTIONS.contains(&collection_of_id(doc))
}

fn reserved_reason(doc: &Value) -> String {
    let refusal = check_writable(collection_of_id(doc))
        .err()
        .unwrap_or_default();
    format!("{refusal} Sync accepts only revisions of these documents that the server already has.")
}

/// Reserved documents pass only in replication batches (and then only known revisions,
/// checked later); a `new_edits: true` batch would create new revisions.
fn check_reserved(doc: &Value, replicating: bool) -> Result<(), String> {
    if !is_reserved(doc) {
        return Ok(());
    }
    if replicating && doc.get("_rev").is_some_and(Value::is_string) {
        Ok(())
    } else {
        Err(reserved_reason(doc))
    }
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
            json!({"_id": "notes/1", "collection": "notes",
                   "_attachments": {"a.txt": {"content_type": "text/plain", "data": "aGk="}}}),
            json!({"_id": "notes/1", "_rev": "2-b", "_deleted": true, "_attachments": {}}),
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
    fn reserved_documents_pass_only_as_known_revisions() {
        let meta = |rev: &str| {
            json!({"_id": "blobs/0190", "_rev": rev, "collection": "blobs", "size": 1,
                   "_revisions": {"start": 1, "ids": [rev.trim_start_matches("1-")]}})
        };
        // A new_edits:true batch never writes them.
        let batch =
            check_batch(json!({"docs": [meta("1-a"), {"_id": "blobs/x", "collection": "blobs"}]}))
                .unwrap();
        assert!(batch.refused.iter().all(Option::is_some));
        assert!(batch.reserved_revisions().is_empty());
        assert!(
            batch.refused[0].as_ref().unwrap()["reason"]
                .as_str()
                .unwrap()
                .contains("blob API")
        );
        // A replication batch: both forwarded at first, then the unknown one refused.
        let mut batch = check_batch(json!({"new_edits": false, "docs": [
            meta("1-a"),
            {"_id": "notes/1", "_rev": "1-n", "collection": "notes"},
            meta("1-b"),
            {"_id": "blobs/0191", "collection": "blobs"}
        ]}))
        .unwrap();
        assert!(batch.refused[3].is_some(), "no _rev: nothing to be known");
        assert_eq!(
            batch.reserved_revisions(),
            vec![
                ("blobs/0190".to_string(), "1-a".to_string()),
                ("blobs/0190".to_string(), "1-b".to_string())
            ]
        );
        batch.refuse_unknown(&[("blobs/0190".to_string(), "1-b".to_string())]);
        let forwarded: Vec<&str> = batch.forward["docs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["_rev"].as_str().unwrap())
            .collect();
        assert_eq!(forwarded, ["1-a", "1-n"]);
        assert!(batch.refused[0].is_none() && batch.refused[1].is_none());
        assert_eq!(batch.refused[2].as_ref().unwrap()["id"], "blobs/0190");
        assert_eq!(merge_results(&batch, vec![]).len(), 2);
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
