//! The data plane keeps its own design documents (Mango indexes) in the owner's
//! database. Sync never hands them out: they are dropped from `_changes` and
//! `_all_docs` answers, and `_bulk_get` requests for them are refused, so devices only
//! ever see the owner's documents.

use serde_json::Value;

/// Whether a document id is one sync hides.
pub fn is_hidden(id: &str) -> bool {
    id.starts_with("_design/")
}

/// Whether a row (`_changes` or `_all_docs`) is about a hidden document.
fn row_is_hidden(row: &Value) -> bool {
    row.get("id").and_then(Value::as_str).is_some_and(is_hidden)
}

/// Drop hidden rows from a `_changes` (`results`) or `_all_docs` (`rows`) answer.
pub fn filter_answer(answer: &mut Value) {
    for key in ["results", "rows"] {
        if let Some(Value::Array(rows)) = answer.get_mut(key) {
            let before = rows.len();
            rows.retain(|row| !row_is_hidden(row));
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

/// Whether one line of a continuous `_changes` feed may pass.
pub fn line_passes(line: &[u8]) -> bool {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return true; // heartbeat
    }
    match serde_json::from_slice::<Value>(trimmed) {
        Ok(row) => !row_is_hidden(&row),
        Err(_) => true,
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

    #[test]
    fn design_rows_are_dropped() {
        let mut changes = json!({"results": [{"id": "_design/vibe-indexes", "seq": 1}, {"id": "notes/1", "seq": 2}], "last_seq": 2});
        filter_answer(&mut changes);
        assert_eq!(changes["results"].as_array().unwrap().len(), 1);
        assert_eq!(changes["last_seq"], 2);
        let mut all =
            json!({"total_rows": 2, "rows": [{"id": "_design/vibe-indexes"}, {"id": "notes/1"}]});
        filter_answer(&mut all);
        assert_eq!(all, json!({"total_rows": 1, "rows": [{"id": "notes/1"}]}));
    }

    #[test]
    fn continuous_lines_are_filtered() {
        assert!(line_passes(b"\n"));
        assert!(line_passes(br#"{"seq":3,"id":"notes/1","changes":[]}"#));
        assert!(!line_passes(
            br#"{"seq":4,"id":"_design/vibe-indexes","changes":[]}"#
        ));
        assert!(line_passes(br#"{"last_seq":4,"pending":0}"#));
        assert!(bulk_get_asks_hidden(
            &json!({"docs": [{"id": "_design/x"}]})
        ));
        assert!(!bulk_get_asks_hidden(&json!({"docs": [{"id": "notes/1"}]})));
    }
}
