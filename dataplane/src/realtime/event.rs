//! Turning `_changes` rows into the events pushed to sockets.
//!
//! A row becomes at most one [`Event`]; its wire frame is serialised once here and shared by
//! every socket that receives it.

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::Value;
use vibe_api::Collection;

use super::seq::Seq;
use crate::couch::ChangeRow;

/// What happened to a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Update,
    /// Deleted (a tombstone revision).
    Delete,
}

/// A change that subscribers of `collection` may receive.
#[derive(Debug)]
pub struct Event {
    /// Collection the document belongs to.
    pub collection: String,
    /// Document id.
    pub id: String,
    /// Revision the change produced (for deletions: the tombstone's rev).
    pub rev: String,
    /// Generation of `rev` (the number before the dash), used to drop duplicates after a replay.
    pub generation: u64,
    /// Update or delete.
    pub kind: EventKind,
    /// Feed position.
    pub seq: Seq,
    /// The JSON text frame sent to sockets.
    pub frame: Utf8Bytes,
    /// Position in this process's live feed (1, 2, …), set by the reader; 0 for replayed events.
    pub ordinal: u64,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum PushFrame<'a> {
    Update {
        collection: &'a str,
        data: &'a Value,
        seq: &'a Seq,
    },
    Delete {
        collection: &'a str,
        id: &'a str,
        rev: &'a str,
        seq: &'a Seq,
    },
}

/// The generation of a CouchDB revision id (`"3-abc…"` → 3); 0 when malformed.
pub fn rev_generation(rev: &str) -> u64 {
    rev.split_once('-')
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0)
}

impl Event {
    /// Classifies a change row. Returns `None` for changes never pushed: design documents
    /// (and any other `_`-prefixed id), documents without a string `collection`, and rows
    /// without a revision.
    pub fn from_row(mut row: ChangeRow) -> Option<Event> {
        if row.id.starts_with('_') {
            return None;
        }
        let doc_rev = row
            .doc
            .as_ref()
            .and_then(|d| d.get("_rev"))
            .and_then(Value::as_str);
        let rev = doc_rev.or_else(|| row.rev())?.to_owned();
        let doc_deleted = row
            .doc
            .as_ref()
            .and_then(|d| d.get("_deleted"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let doc_collection = row
            .doc
            .as_ref()
            .and_then(|d| d.get("collection"))
            .and_then(Value::as_str);

        let seq = Seq::from(std::mem::take(&mut row.seq));
        if row.deleted || doc_deleted {
            // A plain DELETE leaves a body-less tombstone: the collection comes from the id's
            // `<collection>/` prefix, which the document API and sync both enforce.
            let collection = doc_collection
                .or_else(|| row.id.split_once('/').map(|(c, _)| c))
                .filter(|c| Collection::is_valid(c))?
                .to_owned();
            let frame = serde_json::to_string(&PushFrame::Delete {
                collection: &collection,
                id: &row.id,
                rev: &rev,
                seq: &seq,
            })
            .ok()?;
            return Some(Event {
                collection,
                generation: rev_generation(&rev),
                id: row.id,
                rev,
                kind: EventKind::Delete,
                seq,
                frame: frame.into(),
                ordinal: 0,
            });
        }

        let doc = row.doc.as_ref()?;
        let collection = doc_collection?.to_owned();
        let frame = serde_json::to_string(&PushFrame::Update {
            collection: &collection,
            data: doc,
            seq: &seq,
        })
        .ok()?;
        Some(Event {
            collection,
            generation: rev_generation(&rev),
            id: row.id,
            rev,
            kind: EventKind::Update,
            seq,
            frame: frame.into(),
            ordinal: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> ChangeRow {
        serde_json::from_value(v).unwrap()
    }

    fn frame(e: &Event) -> Value {
        serde_json::from_str(&e.frame).unwrap()
    }

    #[test]
    fn update_carries_doc_and_opaque_seq() {
        let e = Event::from_row(row(json!({
            "seq": "7-g1AAAA", "id": "notes/1", "changes": [{"rev": "2-b"}],
            "doc": {"_id": "notes/1", "_rev": "2-b", "collection": "notes", "t": "hi"}
        })))
        .unwrap();
        assert_eq!(e.kind, EventKind::Update);
        assert_eq!(e.generation, 2);
        assert_eq!(
            frame(&e),
            json!({"type": "update", "collection": "notes",
                   "data": {"_id": "notes/1", "_rev": "2-b", "collection": "notes", "t": "hi"},
                   "seq": "7-g1AAAA"})
        );
        assert!(
            e.frame
                .starts_with(r#"{"type":"update","collection":"notes","data":"#)
        );
    }

    #[test]
    fn delete_uses_tombstone_rev_and_id_prefix() {
        let e = Event::from_row(row(json!({
            "seq": 9, "id": "notes/1", "deleted": true, "changes": [{"rev": "3-c"}],
            "doc": {"_id": "notes/1", "_rev": "3-c", "_deleted": true}
        })))
        .unwrap();
        assert_eq!(
            frame(&e),
            json!({"type": "delete", "collection": "notes", "id": "notes/1", "rev": "3-c", "seq": 9})
        );
    }

    #[test]
    fn never_pushed() {
        // design document
        assert!(
            Event::from_row(row(json!({
                "seq": 1, "id": "_design/x", "changes": [{"rev": "1-a"}],
                "doc": {"_id": "_design/x", "_rev": "1-a", "collection": "notes"}
            })))
            .is_none()
        );
        // no collection
        assert!(
            Event::from_row(row(json!({
                "seq": 2, "id": "notes/2", "changes": [{"rev": "1-a"}],
                "doc": {"_id": "notes/2", "_rev": "1-a"}
            })))
            .is_none()
        );
        // non-string collection
        assert!(
            Event::from_row(row(json!({
                "seq": 3, "id": "x", "changes": [{"rev": "1-a"}],
                "doc": {"_id": "x", "_rev": "1-a", "collection": 5}
            })))
            .is_none()
        );
        // deletion of an id without a collection prefix
        assert!(
            Event::from_row(row(json!({
                "seq": 4, "id": "plain", "deleted": true, "changes": [{"rev": "2-a"}]
            })))
            .is_none()
        );
    }
}
