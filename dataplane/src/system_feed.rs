//! Follows the system database so this process's caches — the owner once claimed, app
//! registrations and grants, trusted devices, revoked refresh families, when apps and
//! devices were last seen — stay what is stored, whoever stored it:
//! this process, or another replica of the same instance.
//!
//! [`crate::startup`] loads the caches once, after noting the
//! database's update sequence, and starts [`follow`] from that sequence: a continuous
//! `_changes` feed with documents and a heartbeat, resumed from the last row after any
//! interruption. Each row replaces, removes or adds the cached entry when it differs, so
//! this process's own writes (already applied by the API before answering) change
//! nothing. A change that revokes something wakes the open streams
//! ([`crate::auth::until_revoked`]), so a revocation made on another replica ends them
//! there too, within the feed's latency (milliseconds).

use std::io;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::io::StreamReader;

use crate::apps::{APP_DOC_PREFIX, AppRecord};
use crate::couch::{ChangeRow, ChangesFeed, ChangesQuery, Database};
use crate::devices::{DEVICE_DOC_PREFIX, DeviceRecord};
use crate::revocations::REVOKED_FAMILY_PREFIX;
use crate::state::AppState;

/// Heartbeat asked of CouchDB; three missed ones count as a dead connection.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Longest line read (system documents are small).
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Back-off after a failed feed: from this …
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// … doubling up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Follow `db` from `since` until shutdown begins.
pub async fn follow(state: AppState, db: Database, since: Value) {
    let mut since = since;
    let mut delay = BACKOFF_MIN;
    tracing::info!("following the system database");
    loop {
        let outcome = tokio::select! {
            _ = state.shutdown.started() => return,
            outcome = read_feed(&state, &db, &mut since) => outcome,
        };
        match outcome {
            Ok(()) => delay = BACKOFF_MIN,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "system database feed interrupted; resuming");
                tokio::select! {
                    _ = state.shutdown.started() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Read one continuous feed until it ends; `since` moves with every row.
async fn read_feed(state: &AppState, db: &Database, since: &mut Value) -> Result<(), String> {
    let query = ChangesQuery {
        feed: ChangesFeed::Continuous,
        since: Some(since.clone()),
        include_docs: true,
        heartbeat_ms: Some(HEARTBEAT.as_millis() as u64),
        ..ChangesQuery::default()
    };
    let response = db.changes_stream(&query).await.map_err(|e| e.to_string())?;
    let body = StreamReader::new(response.bytes_stream().map_err(io::Error::other));
    let mut lines = FramedRead::new(body, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    loop {
        let line = match tokio::time::timeout(HEARTBEAT * 3, lines.next()).await {
            Err(_) => return Err(format!("no data or heartbeat for {:?}", HEARTBEAT * 3)),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(line))) => line,
        };
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        if let Some(error) = value.get("error") {
            return Err(format!("CouchDB reported an error in the feed: {error}"));
        }
        if value.get("id").is_none() {
            if let Some(last) = value.get("last_seq").filter(|v| !v.is_null()) {
                *since = last.clone();
            }
            continue;
        }
        let row: ChangeRow = serde_json::from_value(value).map_err(|e| e.to_string())?;
        *since = row.seq.clone();
        apply(state, row);
    }
}

/// Bring the caches in line with one changed document.
pub fn apply(state: &AppState, row: ChangeRow) {
    let doc = if row.deleted { None } else { row.doc };
    if let Some(app_id) = row.id.strip_prefix(APP_DOC_PREFIX) {
        apply_app(state, app_id, doc);
    } else if let Some(device_id) = row.id.strip_prefix(DEVICE_DOC_PREFIX) {
        apply_device(state, device_id, doc);
    } else if row.id.starts_with(crate::last_seen::LAST_SEEN_PREFIX) {
        state.last_seen.apply(&row.id, doc);
    } else if row.id == crate::auth::claim::CLAIM_DOC_ID {
        apply_claim(state, doc);
    } else if row.id.starts_with(REVOKED_FAMILY_PREFIX)
        && let Some(doc) = doc
        && crate::revocations::apply(&state.tokens, doc)
    {
        tracing::info!("refresh family revoked elsewhere");
    }
}

/// An instance claimed through another replica gets its owner here too.
fn apply_claim(state: &AppState, doc: Option<Value>) {
    if state.owner().is_some() {
        return;
    }
    let claimed = doc
        .as_ref()
        .and_then(|doc| doc.get("claimedByDid"))
        .and_then(Value::as_str)
        .and_then(|did| vibe_identity::Did::parse(did).ok());
    if let Some(did) = claimed {
        tracing::info!(owner = %did, "instance claimed elsewhere");
        state.set_owner(did);
    }
}

fn apply_app(state: &AppState, app_id: &str, doc: Option<Value>) {
    let stored = doc.and_then(|doc| match serde_json::from_value::<AppRecord>(doc) {
        Ok(app) => Some(app),
        Err(e) => {
            tracing::warn!(error = %e, "skipping an unreadable app document");
            None
        }
    });
    let cached = state.grants.get(app_id);
    match (stored, cached) {
        (Some(app), Some(cached)) if *cached == app => {}
        (Some(app), _) => state.grants.put(app),
        (None, Some(_)) => {
            tracing::info!("app registration deleted elsewhere");
            state.grants.remove(app_id);
        }
        (None, None) => {}
    }
}

fn apply_device(state: &AppState, device_id: &str, doc: Option<Value>) {
    let stored = doc.and_then(|doc| match serde_json::from_value::<DeviceRecord>(doc) {
        Ok(device) => Some(device),
        Err(e) => {
            tracing::warn!(error = %e, "skipping an unreadable device document");
            None
        }
    });
    let cached = state.devices.get(device_id);
    match (stored, cached) {
        (Some(device), Some(cached)) if *cached == device => {}
        (Some(device), cached) => {
            let replaced = cached.is_some();
            state.devices.put(device);
            if replaced {
                state.tokens.announce_revocation();
            }
        }
        (None, Some(_)) => {
            tracing::info!("device revoked elsewhere");
            state.devices.remove(device_id);
            state.tokens.announce_revocation();
        }
        (None, None) => {}
    }
}
