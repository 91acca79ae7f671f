//! `_revs_diff` through sync: the store is asked only about ids the caller may read.
//!
//! A replicator pushing to the instance sends `{"<id>": ["<rev>", …]}` and CouchDB answers
//! `{"<id>": {"missing": [...]}}` for the ids with revisions it lacks; an id absent from
//! the answer means "already there, nothing to send". Forwarded as is, the answer tells
//! anyone who can sync which revisions of the data plane's design documents (or of any
//! id outside the caller's reach) exist.
//!
//! So ids the caller's [`ReadGate`](crate::access::ReadGate) refuses never reach the
//! store, and the answer for them is always the same, whatever the store holds: every
//! asked revision is missing. That is also what keeps replication honest: the replicator
//! then sends those documents to `_bulk_docs`, which refuses them one by one (`forbidden`,
//! PouchDB's `denied` event and a counted write failure), so the device learns they were
//! not stored. Leaving them out of the answer instead would tell the replicator they are
//! already on the server, and it would skip them silently.

use serde_json::{Map, Value, json};

/// A `_revs_diff` body split by the gate.
#[derive(Debug, Default, PartialEq)]
pub struct SplitDiff {
    /// The part to ask the store about (ids the caller may read).
    pub forward: Map<String, Value>,
    /// The answer for the other ids: every asked revision missing.
    pub refused: Map<String, Value>,
}

/// Split a parsed `_revs_diff` body; `Err` carries the 400 message for a body that is
/// not `{"<id>": ["<rev>", …]}`.
pub fn split(body: Value, admits: impl Fn(&str) -> bool) -> Result<SplitDiff, String> {
    let Value::Object(asked) = body else {
        return Err(SHAPE.into());
    };
    let mut split = SplitDiff::default();
    for (id, revs) in asked {
        let valid = revs
            .as_array()
            .is_some_and(|revs| revs.iter().all(Value::is_string));
        if !valid {
            return Err(SHAPE.into());
        }
        if admits(&id) {
            split.forward.insert(id, revs);
        } else {
            split.refused.insert(id, json!({ "missing": revs }));
        }
    }
    Ok(split)
}

const SHAPE: &str =
    "Request body must be a JSON object mapping document ids to arrays of revision strings.";

/// The answer: the store's answer for the forwarded ids (only those: a store naming any
/// other id is ignored) and the fixed answer for the refused ones.
pub fn merge(split: SplitDiff, store: Value) -> Value {
    let SplitDiff { forward, refused } = split;
    let mut answer = Map::new();
    if let Value::Object(entries) = store {
        for (id, entry) in entries {
            if forward.contains_key(&id) {
                answer.insert(id, entry);
            }
        }
    }
    answer.extend(refused);
    Value::Object(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(id: &str) -> bool {
        crate::access::id_collection(id).is_some()
    }

    #[test]
    fn refused_ids_are_never_forwarded_and_always_missing() {
        let body = json!({
            "notes/1": ["1-a", "2-b"],
            "_design/vibe-indexes": ["1-x"],
            "_local/x": ["0-1"],
        });
        let split = split(body, admits).unwrap();
        assert_eq!(
            split.forward,
            json!({"notes/1": ["1-a", "2-b"]})
                .as_object()
                .cloned()
                .unwrap()
        );
        let answer = merge(
            split,
            json!({
                "notes/1": {"missing": ["2-b"], "possible_ancestors": ["1-a"]},
                "_design/vibe-indexes": {"missing": []},
            }),
        );
        assert_eq!(
            answer,
            json!({
                "notes/1": {"missing": ["2-b"], "possible_ancestors": ["1-a"]},
                "_design/vibe-indexes": {"missing": ["1-x"]},
                "_local/x": {"missing": ["0-1"]},
            })
        );
    }

    #[test]
    fn bad_shapes_are_refused() {
        for body in [
            json!([]),
            json!({"notes/1": "1-a"}),
            json!({"notes/1": [1]}),
        ] {
            assert!(split(body, admits).is_err());
        }
        assert_eq!(split(json!({}), admits).unwrap(), SplitDiff::default());
    }
}
