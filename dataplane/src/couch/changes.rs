//! `_changes` requests (normal, longpoll, continuous). Sequences stay opaque JSON values:
//! CouchDB 3 uses strings, pouchdb-server integers; callers must only store and pass
//! them back.

use std::time::Duration;

use reqwest::{Method, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CouchError, Database, REQUEST_TIMEOUT, check_status};

/// The `feed` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChangesFeed {
    /// Return what is there and stop.
    #[default]
    Normal,
    /// Wait until at least one change (or the timeout), then stop.
    Longpoll,
    /// Stream one JSON object per line until closed.
    Continuous,
}

impl ChangesFeed {
    fn as_param(self) -> &'static str {
        match self {
            ChangesFeed::Normal => "normal",
            ChangesFeed::Longpoll => "longpoll",
            ChangesFeed::Continuous => "continuous",
        }
    }
}

/// Parameters of a `_changes` request.
#[derive(Debug, Clone, Default)]
pub struct ChangesQuery {
    /// Feed type.
    pub feed: ChangesFeed,
    /// Start after this sequence (exclusive); `None` = from the beginning. Pass
    /// `Value::String("now".into())` to start at the current end.
    pub since: Option<Value>,
    /// Include the documents (`include_docs=true`).
    pub include_docs: bool,
    /// Maximum number of rows.
    pub limit: Option<u64>,
    /// Longpoll/continuous timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Continuous heartbeat in milliseconds.
    pub heartbeat_ms: Option<u64>,
    /// `style=all_docs` (all leaf revisions).
    pub all_docs_style: bool,
}

/// One row of a `_changes` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChangeRow {
    /// Opaque sequence of this change.
    pub seq: Value,
    /// Document id.
    pub id: String,
    /// Leaf revisions (`[{rev}]`).
    #[serde(default)]
    pub changes: Vec<Value>,
    /// True when the change is a deletion.
    #[serde(default)]
    pub deleted: bool,
    /// The document, with `include_docs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<Value>,
}

impl ChangeRow {
    /// The revision of this change (first leaf), if any.
    pub fn rev(&self) -> Option<&str> {
        self.changes
            .first()
            .and_then(|c| c.get("rev"))
            .and_then(Value::as_str)
    }
}

/// A normal or longpoll `_changes` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct ChangesPage {
    /// The changes.
    pub results: Vec<ChangeRow>,
    /// Sequence to pass as `since` next time.
    pub last_seq: Value,
    /// Rows left after `limit` (CouchDB 2+).
    #[serde(default)]
    pub pending: Option<u64>,
}

/// Render an opaque sequence as the `since` query parameter.
pub fn seq_to_param(seq: &Value) -> String {
    match seq {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Database {
    fn changes_url(&self, query: &ChangesQuery) -> url::Url {
        let mut url = self.url(&["_changes"]);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("feed", query.feed.as_param());
            if let Some(since) = &query.since {
                pairs.append_pair("since", &seq_to_param(since));
            }
            if query.include_docs {
                pairs.append_pair("include_docs", "true");
            }
            if let Some(limit) = query.limit {
                pairs.append_pair("limit", &limit.to_string());
            }
            if let Some(timeout) = query.timeout_ms {
                pairs.append_pair("timeout", &timeout.to_string());
            }
            if let Some(heartbeat) = query.heartbeat_ms {
                pairs.append_pair("heartbeat", &heartbeat.to_string());
            }
            if query.all_docs_style {
                pairs.append_pair("style", "all_docs");
            }
        }
        url
    }

    /// A normal or longpoll `_changes` request, decoded. For longpoll the HTTP timeout
    /// is the requested `timeout_ms` plus a margin (pouchdb-server ignores `timeout`, so
    /// the HTTP timeout is what bounds the wait there).
    pub async fn changes(&self, query: &ChangesQuery) -> Result<ChangesPage, CouchError> {
        let wait = match query.feed {
            ChangesFeed::Longpoll => {
                Duration::from_millis(query.timeout_ms.unwrap_or(60_000)) + Duration::from_secs(10)
            }
            _ => REQUEST_TIMEOUT,
        };
        let request = self
            .client
            .request(Method::GET, self.changes_url(query))
            .timeout(wait);
        let response = check_status(self.client.send(request).await?).await?;
        response
            .json()
            .await
            .map_err(|e| CouchError::Decode(e.without_url().to_string()))
    }

    /// Open a `_changes` request and return the streaming response (status checked),
    /// e.g. for `feed=continuous`: read it line by line; empty lines are heartbeats.
    /// No overall timeout is set; use `heartbeat_ms` to detect dead connections.
    pub async fn changes_stream(&self, query: &ChangesQuery) -> Result<Response, CouchError> {
        let request = self.client.request(Method::GET, self.changes_url(query));
        check_status(self.client.send(request).await?).await
    }
}
