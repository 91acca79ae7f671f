//! Validation of documents written through the API (and, for the sync feature, through
//! replication): collection prefix on ids, no reserved `_` fields, matching `collection`.

use serde_json::{Value, json};
use vibe_api::Collection;

use crate::blobs::metadata::BLOBS_COLLECTION;

/// `_`-prefixed fields a client may send.
pub const ALLOWED_UNDERSCORE_FIELDS: [&str; 3] = ["_id", "_rev", "_deleted"];
/// Longest accepted document id.
pub const MAX_ID_LEN: usize = 512;

/// Collections whose documents only their own routes write: `blobs` holds the blob
/// metadata that `/api/v1/blob/*` keeps consistent with the objects in S3.
pub const RESERVED_COLLECTIONS: [&str; 1] = [BLOBS_COLLECTION];

/// Refuse writes to a [reserved collection](RESERVED_COLLECTIONS), with the message clients
/// see. Reads are not affected.
pub fn check_writable(collection: &str) -> Result<(), String> {
    if RESERVED_COLLECTIONS.contains(&collection) {
        Err(format!(
            "Forbidden: documents in the '{collection}' collection are written only by the blob API (/api/v1/blob)."
        ))
    } else {
        Ok(())
    }
}

/// Validate a collection name, with the message clients see.
pub fn check_collection(collection: &str) -> Result<(), String> {
    if Collection::is_valid(collection) {
        Ok(())
    } else {
        Err(format!(
            "Invalid collection name '{}': it must match [a-z0-9][a-z0-9_-]{{0,63}}.",
            collection.chars().take(80).collect::<String>()
        ))
    }
}

/// Validate `doc` for `collection` and complete it: set `collection` and, when absent, an
/// `_id` of `<collection>/<uuidv7>`. `extra_underscore` lists further `_` fields the
/// caller accepts (e.g. replication's `_revisions`).
pub fn prepare_document(
    collection: &str,
    doc: &Value,
    extra_underscore: &[&str],
) -> Result<Value, String> {
    let Value::Object(fields) = doc else {
        return Err("Data must be a single object or an array of objects.".into());
    };
    check_reserved_fields(fields, extra_underscore)?;
    let prefix = format!("{collection}/");
    match fields.get("_id") {
        None => {}
        Some(Value::String(id)) => check_id(collection, id)?,
        Some(_) => return Err("Document _id must be a string.".into()),
    }
    if !matches!(fields.get("_rev"), None | Some(Value::String(_))) {
        return Err("Document _rev must be a string.".into());
    }
    if !matches!(fields.get("_deleted"), None | Some(Value::Bool(_))) {
        return Err("Document _deleted must be a boolean.".into());
    }
    match fields.get("collection") {
        None => {}
        Some(Value::String(c)) if c == collection => {}
        Some(other) => {
            return Err(format!(
                "Document collection {} does not match the request collection '{collection}'.",
                other.to_string().chars().take(80).collect::<String>()
            ));
        }
    }
    let mut out = fields.clone();
    out.insert("collection".into(), json!(collection));
    if !out.contains_key("_id") {
        out.insert(
            "_id".into(),
            json!(format!("{prefix}{}", uuid::Uuid::now_v7())),
        );
    }
    Ok(Value::Object(out))
}

/// Refuse `_`-prefixed fields other than [`ALLOWED_UNDERSCORE_FIELDS`] and `extra_underscore`.
pub fn check_reserved_fields(
    fields: &serde_json::Map<String, Value>,
    extra_underscore: &[&str],
) -> Result<(), String> {
    match fields.keys().find(|key| {
        key.starts_with('_')
            && !ALLOWED_UNDERSCORE_FIELDS.contains(&key.as_str())
            && !extra_underscore.contains(&key.as_str())
    }) {
        Some(key) => Err(format!(
            "Field '{}' is not allowed: fields starting with '_' are reserved.",
            key.chars().take(64).collect::<String>()
        )),
        None => Ok(()),
    }
}

/// Validate a full document id for `collection`.
pub fn check_id(collection: &str, id: &str) -> Result<(), String> {
    let rest = id
        .strip_prefix(collection)
        .and_then(|r| r.strip_prefix('/'));
    match rest {
        Some(rest)
            if !rest.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "Document _id must start with '{collection}/' followed by an id of at most {MAX_ID_LEN} characters."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_ids_and_collection() {
        let doc = prepare_document("notes", &json!({"title": "a"}), &[]).unwrap();
        assert_eq!(doc["collection"], "notes");
        assert!(doc["_id"].as_str().unwrap().starts_with("notes/"));
        let doc = prepare_document(
            "notes",
            &json!({"_id": "notes/x", "_rev": "1-a", "collection": "notes"}),
            &[],
        )
        .unwrap();
        assert_eq!(doc["_id"], "notes/x");
    }

    #[test]
    fn refuses_bad_documents() {
        for bad in [
            json!({"_id": "other/x"}),
            json!({"_id": "notes/"}),
            json!({"_id": "_design/x"}),
            json!({"_id": 5}),
            json!({"_attachments": {}}),
            json!({"_conflicts": []}),
            json!({"collection": "other"}),
            json!({"_deleted": "yes"}),
            json!("text"),
            json!([1]),
        ] {
            assert!(prepare_document("notes", &bad, &[]).is_err(), "{bad}");
        }
        assert!(prepare_document("notes", &json!({"_attachments": {}}), &["_attachments"]).is_ok());
    }

    #[test]
    fn reserved_collections_are_not_writable() {
        assert!(check_writable("blobs").unwrap_err().contains("blob API"));
        assert!(check_writable("notes").is_ok());
        assert!(check_writable("blobs_extra").is_ok());
    }

    #[test]
    fn collection_names() {
        assert!(check_collection("test_items_1").is_ok());
        assert!(check_collection("Bad").is_err());
        assert!(check_collection("_design").is_err());
        assert!(check_collection(&"a".repeat(65)).is_err());
    }
}
