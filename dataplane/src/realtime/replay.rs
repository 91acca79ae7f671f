//! Replay of what changed after a client's last sequence, and the fence that keeps the live
//! feed from repeating (or regressing behind) what the replay already delivered.

use std::collections::HashMap;
use std::sync::Arc;

use super::event::Event;
use super::seq::Seq;
use crate::couch::{ChangesQuery, CouchError, Database};

/// Rows fetched per replay request.
pub const REPLAY_PAGE_ROWS: u64 = 500;

/// One page of a replay.
pub struct ReplayPage {
    /// Pushable events of the page, in feed order (all collections).
    pub events: Vec<Arc<Event>>,
    /// Where the next page starts.
    pub next: Seq,
    /// True when the feed had nothing more.
    pub complete: bool,
}

/// Fetch the changes after `since` (exclusive, as CouchDB's `since`), one page.
/// A `since` CouchDB does not understand yields [`CouchError::BadRequest`].
pub async fn replay_page(db: &Database, since: &Seq, limit: u64) -> Result<ReplayPage, CouchError> {
    let query = ChangesQuery {
        since: Some(since.as_json().clone()),
        include_docs: true,
        limit: Some(limit),
        ..ChangesQuery::default()
    };
    let page = db.changes(&query).await?;
    let rows = page.results.len() as u64;
    let complete = rows < limit || page.pending == Some(0);
    let events = page
        .results
        .into_iter()
        .filter_map(Event::from_row)
        .map(Arc::new)
        .collect();
    Ok(ReplayPage {
        events,
        next: Seq::from(page.last_seq),
        complete: complete || rows == 0,
    })
}

/// Remembers the revision generation the replay delivered for each document, so that live
/// events already covered by the replay (the live receiver was opened before the replay
/// ran) are dropped instead of being sent twice or out of order.
#[derive(Debug, Default)]
pub struct ReplayFence {
    delivered: HashMap<String, u64>,
}

impl ReplayFence {
    /// Note an event the replay delivered.
    pub fn record(&mut self, event: &Event) {
        let generation = self.delivered.entry(event.id.clone()).or_default();
        *generation = (*generation).max(event.generation);
    }

    /// Whether a live event should be delivered. A live event at or below the generation the
    /// replay showed for its document is a duplicate; the first newer one lifts the fence for
    /// that document.
    pub fn admits(&mut self, event: &Event) -> bool {
        match self.delivered.get(&event.id) {
            Some(&generation) if event.generation <= generation => false,
            Some(_) => {
                self.delivered.remove(&event.id);
                true
            }
            None => true,
        }
    }

    /// True when nothing is fenced.
    pub fn is_empty(&self) -> bool {
        self.delivered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::couch::ChangeRow;
    use serde_json::json;

    fn event(id: &str, rev: &str) -> Event {
        let row: ChangeRow = serde_json::from_value(json!({
            "seq": 1, "id": id, "changes": [{"rev": rev}],
            "doc": {"_id": id, "_rev": rev, "collection": "c"}
        }))
        .unwrap();
        Event::from_row(row).unwrap()
    }

    #[test]
    fn fence_drops_covered_and_admits_newer() {
        let mut fence = ReplayFence::default();
        fence.record(&event("c/1", "3-a"));
        assert!(!fence.admits(&event("c/1", "2-x")));
        assert!(!fence.admits(&event("c/1", "3-a")));
        assert!(fence.admits(&event("c/2", "1-a")));
        assert!(fence.admits(&event("c/1", "4-b")));
        assert!(fence.is_empty());
        assert!(
            fence.admits(&event("c/1", "3-a")),
            "fence lifted after a newer rev"
        );
    }
}
