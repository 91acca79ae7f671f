//! The one rule deciding whether a document may leave the data plane.
//!
//! Selectors sent to the store say which documents the data plane *wants*; they are not
//! what makes a read safe, because stores disagree on what a selector means
//! (pouchdb-server lets a client's `$and` override the collection clause). So every path
//! that hands out documents — `/api/v1/data/read`, `GET /api/v1/data/{c}/{id}`, blob
//! listings, realtime pushes and replays, and every sync answer (`_changes` in all feeds,
//! `_all_docs`, `_bulk_get`, single document GETs) — passes each document
//! through a [`ReadGate`] before sending it, and drops what the gate refuses.
//!
//! A document is admitted when
//! 1. its `_id` is `<collection>/<rest>` with a valid collection name and a non-empty rest
//!    (so design and local documents never pass);
//! 2. its `collection` field is that same collection (a deletion tombstone may lack the
//!    field; its id prefix decides); and
//! 3. the caller may read that collection *now* (grants are looked up live in the grants
//!    cache, so a revoked grant stops documents from the next one on).
//!
//! Who may read what: an app reads collection `c` with the grant `read:c`; sync callers
//! (the owner, or an app holding `sync`) read every collection; a gate made for one
//! collection admits only that collection.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use vibe_api::Collection;

use crate::auth::{Caller, CallerKind};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::sync::SYNC_PERMISSION;

/// What a gate lets through.
#[derive(Debug, Clone)]
enum Reach {
    /// One collection, for the app holding `read:<it>`.
    Collection { app: String, collection: String },
    /// Every collection the app holds `read:<c>` for.
    Granted { app: String },
    /// Every collection: sync by an app holding `sync`.
    SyncApp { app: String },
    /// Every collection: sync by the owner itself.
    Owner,
}

/// Decides, document by document, what a caller may receive. Cheap to clone.
#[derive(Clone)]
pub struct ReadGate {
    state: AppState,
    reach: Reach,
}

impl std::fmt::Debug for ReadGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadGate")
            .field("reach", &self.reach)
            .finish()
    }
}

impl ReadGate {
    /// A gate for reading `collection`: 400/403 as [`Caller::require`] unless the caller's
    /// app holds `read:<collection>`.
    pub fn collection(state: &AppState, caller: &Caller, collection: &str) -> ApiResult<Self> {
        caller.require(&format!("read:{collection}"))?;
        Ok(Self {
            state: state.clone(),
            reach: Reach::Collection {
                app: caller.acting_app()?.to_string(),
                collection: collection.to_string(),
            },
        })
    }

    /// A gate for sync: the owner without an app (an owner token, or one of the owner's
    /// devices with the `sync` scope) reads everything; an app must hold `sync` (403
    /// otherwise).
    pub fn sync(state: &AppState, caller: &Caller) -> ApiResult<Self> {
        let reach = match caller.app_id.as_deref() {
            None => {
                match caller.kind {
                    CallerKind::Owner => {}
                    CallerKind::Device if caller.scoped(SYNC_PERMISSION) => {}
                    _ => return Err(ApiError::missing_permission(SYNC_PERMISSION)),
                }
                Reach::Owner
            }
            Some(app) => {
                caller.require(SYNC_PERMISSION)?;
                Reach::SyncApp {
                    app: app.to_string(),
                }
            }
        };
        Ok(Self {
            state: state.clone(),
            reach,
        })
    }

    /// A gate for an app reading any collection it holds `read:<c>` for (realtime).
    pub fn app(state: &AppState, app_id: &str) -> Self {
        Self {
            state: state.clone(),
            reach: Reach::Granted {
                app: app_id.to_string(),
            },
        }
    }

    /// Whether the caller may read `collection` now.
    pub fn may_read(&self, collection: &str) -> bool {
        let grants = &self.state.grants;
        match &self.reach {
            Reach::Owner => true,
            Reach::SyncApp { app } => grants.allows(app, SYNC_PERMISSION),
            Reach::Granted { app } => grants.allows(app, &format!("read:{collection}")),
            Reach::Collection {
                app,
                collection: only,
            } => only == collection && grants.allows(app, &format!("read:{collection}")),
        }
    }

    /// Whether a document with this id may be mentioned to the caller (rows without a
    /// body: `_changes` without `include_docs`, `_all_docs`).
    pub fn admits_id(&self, id: &str) -> bool {
        id_collection(id).is_some_and(|c| self.may_read(c))
    }

    /// Whether `doc` may be handed to the caller (rules 1–3 of the module).
    pub fn admits_doc(&self, doc: &Value) -> bool {
        document_collection(doc).is_some_and(|c| self.may_read(c))
    }

    /// Whether the document whose JSON text is `json` may be handed to the caller: the same
    /// rules as [`ReadGate::admits_doc`], read without building the document (for answers
    /// passed on as the store sent them). Text that is not a JSON object, or names `_id`,
    /// `collection` or `_deleted` twice, is refused.
    pub fn admits_json(&self, json: &[u8]) -> bool {
        json_admitted(json, |c| self.may_read(c))
    }

    /// Whether a row about `id`, carrying `doc` when it has one, may be sent: the id must
    /// pass, and the document must be the one the row names and pass too.
    pub fn admits_row(&self, id: &str, doc: Option<&Value>) -> bool {
        self.admits_id(id)
            && doc.is_none_or(|doc| {
                doc.get("_id").and_then(Value::as_str) == Some(id) && self.admits_doc(doc)
            })
    }

    /// Whether a change of `id` classified into `collection` (a realtime event) may be
    /// sent: the id's prefix must be that collection.
    pub fn admits_change(&self, id: &str, collection: &str) -> bool {
        id_collection(id) == Some(collection) && self.may_read(collection)
    }
}

/// The collection an id belongs to: `<collection>/<non-empty rest>`, else `None`.
pub fn id_collection(id: &str) -> Option<&str> {
    let (collection, rest) = id.split_once('/')?;
    (Collection::is_valid(collection) && !rest.is_empty()).then_some(collection)
}

/// The collection of a document when its id and its `collection` field agree (a
/// tombstone without the field belongs to its id's collection); `None` for anything
/// else, which no caller may receive.
pub fn document_collection(doc: &Value) -> Option<&str> {
    collection_of(
        doc.get("_id")?.as_str()?,
        doc.get("collection"),
        doc.get("_deleted"),
    )
}

/// [`document_collection`] of a document given by its `_id` and, when present, its
/// `collection` and `_deleted` fields.
fn collection_of<'a>(
    id: &'a str,
    collection: Option<&Value>,
    deleted: Option<&Value>,
) -> Option<&'a str> {
    let from_id = id_collection(id)?;
    match collection {
        Some(Value::String(field)) if field == from_id => Some(from_id),
        None if deleted == Some(&Value::Bool(true)) => Some(from_id),
        _ => None,
    }
}

/// Whether the document with JSON text `json` belongs to a collection (as
/// [`document_collection`] says) that `may_read` allows.
fn json_admitted(json: &[u8], may_read: impl Fn(&str) -> bool) -> bool {
    let Ok(view) = serde_json::from_slice::<GateView<'_>>(json) else {
        return false;
    };
    view.id.as_deref().is_some_and(|id| {
        collection_of(id, view.collection.as_ref(), view.deleted.as_ref()).is_some_and(may_read)
    })
}

/// The fields of a document the gate reads, taken from its JSON text; the rest of the
/// document is skipped, not built. A repeated field is an error (so refused).
#[derive(Deserialize)]
struct GateView<'a> {
    #[serde(rename = "_id", borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    collection: Option<Value>,
    #[serde(rename = "_deleted", default, deserialize_with = "present")]
    deleted: Option<Value>,
}

/// A field that is present, `null` included (`Option`'s own rule would make `null`
/// absent, which [`document_collection`] does not).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn id_and_field_must_agree() {
        assert_eq!(
            document_collection(&json!({"_id": "notes/1", "collection": "notes"})),
            Some("notes")
        );
        for refused in [
            json!({"_id": "secretz/1", "collection": "notes"}),
            json!({"_id": "notes/1", "collection": "secretz"}),
            json!({"_id": "notes/1"}),
            json!({"_id": "notes/1", "collection": ["notes"]}),
            json!({"_id": "notes/", "collection": "notes"}),
            json!({"_id": "notes", "collection": "notes"}),
            json!({"_id": "_design/notes", "collection": "_design"}),
            json!({"_id": "Notes/1", "collection": "Notes"}),
            json!({"_id": 1, "collection": "notes"}),
            json!({"collection": "notes"}),
            json!({"_id": "notes/1", "collection": "secretz", "_deleted": true}),
            json!({"_id": "notes/1", "_deleted": "true"}),
        ] {
            assert_eq!(document_collection(&refused), None, "{refused}");
        }
        assert_eq!(
            document_collection(&json!({"_id": "notes/1", "_rev": "2-a", "_deleted": true})),
            Some("notes")
        );
    }

    #[test]
    fn the_json_text_check_agrees_with_the_document_check() {
        let notes = |c: &str| c == "notes";
        let cases = [
            json!({"_id": "notes/1", "collection": "notes", "n": {"deep": [1, 2]}}),
            json!({"_id": "notes/1", "_rev": "2-a", "_deleted": true}),
            json!({"_id": "notes/1", "collection": "notes", "_deleted": "x"}),
            json!({"_id": "secretz/1", "collection": "notes"}),
            json!({"_id": "notes/1", "collection": "secretz"}),
            json!({"_id": "secretz/1", "collection": "secretz"}),
            json!({"_id": "notes/1"}),
            json!({"_id": "notes/1", "collection": ["notes"]}),
            json!({"_id": "notes/1", "collection": null, "_deleted": true}),
            json!({"_id": "notes/1", "_deleted": "true"}),
            json!({"_id": "notes/", "collection": "notes"}),
            json!({"_id": "_design/notes", "collection": "_design"}),
            json!({"_id": 1, "collection": "notes"}),
            json!({"_id": null, "collection": "notes"}),
            json!({"collection": "notes"}),
            json!([{"_id": "notes/1", "collection": "notes"}]),
            json!("notes/1"),
        ];
        for doc in cases {
            let text = serde_json::to_vec(&doc).unwrap();
            assert_eq!(
                json_admitted(&text, notes),
                document_collection(&doc).is_some_and(notes),
                "{doc}"
            );
        }
        // Escapes in the id are read like any JSON string.
        assert!(json_admitted(
            br#"{"_id":"notes\/1\u0041","collection":"not\u0065s"}"#,
            notes
        ));
        // A field named twice is refused whichever copy would win.
        for twice in [
            &br#"{"_id":"notes/1","collection":"secretz","collection":"notes"}"#[..],
            br#"{"_id":"secretz/1","_id":"notes/1","collection":"notes"}"#,
            br#"{"_id":"notes/1","_deleted":false,"_deleted":true}"#,
        ] {
            assert!(!json_admitted(twice, notes));
        }
        assert!(!json_admitted(b"not json", notes));
        assert!(!json_admitted(b"", notes));
    }

    #[test]
    fn ids() {
        assert_eq!(id_collection("notes/a/b"), Some("notes"));
        assert_eq!(id_collection("_local/x"), None);
        assert_eq!(id_collection("_design/x"), None);
        assert_eq!(id_collection("plain"), None);
    }
}
