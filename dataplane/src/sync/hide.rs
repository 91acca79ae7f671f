//! What sync answers leave out: every row or document the caller's
//! [`ReadGate`](crate::access::ReadGate) refuses. That covers the data plane's own design
//! documents (Mango indexes), which are not collection documents, and anything a store
//! returns that does not belong where its id says. `_bulk_get` requests naming a design
//! document are refused outright.
//!
//! The functions here only know the shapes of CouchDB's answers; the decision is the
//! `admit(id, doc)` predicate, i.e. [`ReadGate::admits_row`](crate::access::ReadGate::admits_row).

use serde_json::Value;

/// The decision: may a row about `id` (carrying `doc`, if any) be sent?
pub type Admit<'a> = dyn Fn(&str, Option<&Value>) -> bool + 'a;

/// Whether a document id is one sync hides.
pub fn is_hidden(id: &str) -> bool {
    id.starts_with("_design/")
}

/// The document a row carries (`doc`), if not null.
fn row_doc(row: &Value) -> Option<&Value> {
    row.get("doc").filter(|d| !d.is_null())
}

/// Whether a `_changes` or `_all_docs` row may be sent. Rows without an `id` are
/// `_all_docs` answers for `keys` that do not exist (`{"key", "error"}`): they pass when
/// their key would.
fn row_passes(row: &Value, admit: &Admit<'_>) -> bool {
    match row.get("id").and_then(Value::as_str) {
        Some(id) => admit(id, row_doc(row)),
        None => {
            row.get("error").is_some()
                && row
                    .get("key")
                    .and_then(Value::as_str)
                    .is_some_and(|key| admit(key, None))
        }
    }
}

/// Drop refused rows from a `_changes` (`results`) or `_all_docs` (`rows`) answer.
pub fn filter_answer(answer: &mut Value, admit: &Admit<'_>) {
    for key in ["results", "rows"] {
        if let Some(Value::Array(rows)) = answer.get_mut(key) {
            let before = rows.len();
            rows.retain(|row| row_passes(row, admit));
            let removed = before - rows.len();
            if key == "rows"
                && removed > 0
                && let Some(total) = answer.get("total_rows").and_then(Value::as_u64)
            {
                answer["total_rows"] = Value::from(total.saturating_sub(removed as u64));
            }
        }
    }
}

/// Whether one line of a continuous `_changes` feed may pass: heartbeats, the final
/// `last_seq` line, and admitted rows. Anything unreadable is dropped.
pub fn line_passes(line: &[u8], admit: &Admit<'_>) -> bool {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return true; // heartbeat
    }
    match serde_json::from_slice::<Value>(trimmed) {
        Ok(row) if row.get("id").is_none() => row.get("last_seq").is_some(),
        Ok(row) => row_passes(&row, admit),
        Err(_) => false,
    }
}

/// Drop refused documents from a `_bulk_get` answer
/// (`{"results": [{"id", "docs": [{"ok": doc} | {"error": …}]}]}`).
pub fn filter_bulk_get(answer: &mut Value, admit: &Admit<'_>) {
    let Some(Value::Array(results)) = answer.get_mut("results") else {
        return;
    };
    results.retain_mut(|result| {
        let Some(id) = result.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return false;
        };
        if !admit(&id, None) {
            return false;
        }
        if let Some(Value::Array(docs)) = result.get_mut("docs") {
            docs.retain(|entry| match entry.get("ok") {
                Some(doc) => admit(&id, Some(doc)),
                None => entry.get("error").is_some(),
            });
        }
        true
    });
}

/// The answer to `GET {id}` if it may be sent: one document, or (with `open_revs`) a list
/// of `{"ok": doc}` / `{"missing": rev}` entries, refused entries dropped. `None` when a
/// single document is refused.
pub fn filter_document(mut answer: Value, id: &str, admit: &Admit<'_>) -> Option<Value> {
    match &mut answer {
        Value::Array(entries) => {
            entries.retain(|entry| match entry.get("ok") {
                Some(doc) => admit(id, Some(doc)),
                None => entry.get("missing").is_some(),
            });
            Some(answer)
        }
        Value::Object(_) => admit(id, Some(&answer)).then_some(answer),
        _ => None,
    }
}

/// Whether a `_bulk_get` body asks for a hidden document.
pub fn bulk_get_asks_hidden(body: &Value) -> bool {
    body.get("docs")
        .and_then(Value::as_array)
        .is_some_and(|docs| {
            docs.iter()
                .any(|d| d.get("id").and_then(Value::as_str).is_some_and(is_hidden))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Admits `notes/…` ids whose document, if any, has `collection: notes`.
    fn notes_only(id: &str, doc: Option<&Value>) -> bool {
        id.starts_with("notes/") && doc.is_none_or(|d| d["_id"] == id && d["collection"] == "notes")
    }

    #[test]
    fn refused_rows_are_dropped() {
        let mut changes = json!({"results": [
            {"id": "_design/vibe-indexes", "seq": 1},
            {"id": "notes/1", "seq": 2},
            {"id": "secretz/1", "seq": 3},
            {"id": "notes/2", "seq": 4, "doc": {"_id": "notes/2", "collection": "secretz"}},
        ], "last_seq": 4});
        filter_answer(&mut changes, &notes_only);
        assert_eq!(changes["results"], json!([{"id": "notes/1", "seq": 2}]));
        assert_eq!(changes["last_seq"], 4);
        let mut all = json!({"total_rows": 4, "rows": [
            {"id": "_design/vibe-indexes"}, {"id": "notes/1"},
            {"key": "notes/9", "error": "not_found"}, {"key": "secretz/9", "error": "not_found"},
        ]});
        filter_answer(&mut all, &notes_only);
        assert_eq!(
            all,
            json!({"total_rows": 2, "rows": [{"id": "notes/1"}, {"key": "notes/9", "error": "not_found"}]})
        );
    }

    #[test]
    fn continuous_lines_are_filtered() {
        assert!(line_passes(b"\n", &notes_only));
        assert!(line_passes(
            br#"{"seq":3,"id":"notes/1","changes":[]}"#,
            &notes_only
        ));
        assert!(!line_passes(
            br#"{"seq":4,"id":"_design/vibe-indexes","changes":[]}"#,
            &notes_only
        ));
        assert!(!line_passes(
            br#"{"seq":5,"id":"secretz/1","changes":[]}"#,
            &notes_only
        ));
        assert!(!line_passes(br#"{"seq":6,"id":"notes/1"#, &notes_only));
        assert!(line_passes(br#"{"last_seq":4,"pending":0}"#, &notes_only));
        assert!(bulk_get_asks_hidden(
            &json!({"docs": [{"id": "_design/x"}]})
        ));
        assert!(!bulk_get_asks_hidden(&json!({"docs": [{"id": "notes/1"}]})));
    }

    #[test]
    fn bulk_get_and_documents() {
        let mut bulk = json!({"results": [
            {"id": "notes/1", "docs": [
                {"ok": {"_id": "notes/1", "collection": "notes"}},
                {"ok": {"_id": "notes/1", "collection": "secretz"}},
                {"error": {"id": "notes/1", "rev": "9-x", "error": "not_found"}},
            ]},
            {"id": "secretz/1", "docs": [{"ok": {"_id": "secretz/1", "collection": "secretz"}}]},
        ]});
        filter_bulk_get(&mut bulk, &notes_only);
        assert_eq!(
            bulk,
            json!({"results": [{"id": "notes/1", "docs": [
                {"ok": {"_id": "notes/1", "collection": "notes"}},
                {"error": {"id": "notes/1", "rev": "9-x", "error": "not_found"}},
            ]}]})
        );
        let doc = json!({"_id": "notes/1", "collection": "notes"});
        assert_eq!(
            filter_document(doc.clone(), "notes/1", &notes_only),
            Some(doc.clone())
        );
        assert_eq!(
            filter_document(
                json!({"_id": "notes/1", "collection": "secretz"}),
                "notes/1",
                &notes_only
            ),
            None
        );
        assert_eq!(
            filter_document(
                json!([{"ok": doc}, {"ok": {"_id": "notes/1"}}, {"missing": "2-b"}]),
                "notes/1",
                &notes_only
            ),
            Some(json!([{"ok": {"_id": "notes/1", "collection": "notes"}}, {"missing": "2-b"}]))
        );
    }
}
