//! When each app and each device was last seen: the last request authenticated as it
//! (an app token, an owner token acting as the app, a device's credential; a device of an
//! app counts for both). The owner console shows it, `GET /api/v1/apps` and
//! `GET /api/v1/devices` return it (`lastSeenAt`).
//!
//! A request only notes the time in memory ([`LastSeen::touch`]: one short lock, no I/O).
//! At most once per [`WRITE_EVERY`] per app or device, the note is also handed to a
//! background writer (a bounded channel; when it is full the note waits for the next
//! period), which stores it in the system database as `last-seen/app/<appId>` or
//! `last-seen/device/<deviceId>`, so it survives restarts and reaches the other replicas.
//! Each process loads those documents at start-up and follows them through the system
//! database's change feed ([`crate::system_feed`]), keeping the latest time it heard of.
//! Deleting an app or revoking a device forgets its time (and deletes the document).
//!
//! So a time shown is at most [`WRITE_EVERY`] old for a process that did not serve the
//! request itself (and exact for the one that did), or older by whatever a crash lost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use crate::couch::{CouchError, Database};
use crate::state::{AppState, now_unix};

/// Prefix of the documents in the system database.
pub const LAST_SEEN_PREFIX: &str = "last-seen/";
/// The longest a stored time lags behind the truth (per app or device, per process).
pub const WRITE_EVERY: Duration = Duration::from_secs(60);
/// Notes waiting for the writer; more are dropped (and written a period later).
const QUEUE: usize = 1024;

/// Who was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Seen {
    /// A registered app.
    App,
    /// A trusted device.
    Device,
}

impl Seen {
    const ALL: [Seen; 2] = [Seen::App, Seen::Device];

    fn prefix(self) -> &'static str {
        match self {
            Seen::App => "app/",
            Seen::Device => "device/",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The kind and id of a key (`app/<id>`, `device/<id>`).
    fn parse(key: &str) -> Option<(Seen, &str)> {
        Seen::ALL
            .into_iter()
            .find_map(|kind| key.strip_prefix(kind.prefix()).map(|id| (kind, id)))
    }
}

/// A stored time (`last-seen/<kind>/<id>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Record {
    /// When it was last seen (UNIX seconds).
    last_seen_at: i64,
}

fn doc_id(key: &str) -> String {
    format!("{LAST_SEEN_PREFIX}{key}")
}

fn key(kind: Seen, id: &str) -> String {
    format!("{}{id}", kind.prefix())
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Last seen (UNIX seconds).
    at: i64,
    /// When a note was last handed to the writer or loaded from storage (UNIX seconds).
    stored: i64,
}

enum Note {
    Seen(String, i64),
    Forget(String),
}

type Times = [HashMap<String, Entry>; 2];

/// The in-memory times (by kind, then id) and the writer's queue (one per [`AppState`]).
pub struct LastSeen {
    times: Mutex<Times>,
    tx: mpsc::Sender<Note>,
    rx: Mutex<Option<mpsc::Receiver<Note>>>,
}

impl Default for LastSeen {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            times: Mutex::new(Default::default()),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl LastSeen {
    fn lock(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Note that `id` was seen now. Never waits for I/O.
    pub fn touch(&self, kind: Seen, id: &str) {
        let now = now_unix();
        let mut guard = self.lock();
        let times = &mut guard[kind.index()];
        let due = match times.get_mut(id) {
            Some(entry) => {
                entry.at = entry.at.max(now);
                let due = now - entry.stored >= WRITE_EVERY.as_secs() as i64;
                if due {
                    entry.stored = now;
                }
                due
            }
            None => {
                times.insert(
                    id.to_string(),
                    Entry {
                        at: now,
                        stored: now,
                    },
                );
                true
            }
        };
        drop(guard);
        if due {
            // A full queue drops the note; the next request a period later writes it.
            let _ = self.tx.try_send(Note::Seen(key(kind, id), now));
        }
    }

    /// When `id` was last seen (UNIX seconds), as far as this process knows.
    pub fn get(&self, kind: Seen, id: &str) -> Option<i64> {
        self.lock()[kind.index()].get(id).map(|entry| entry.at)
    }

    /// [`LastSeen::get`] as RFC 3339 (UTC, seconds), what the API returns.
    pub fn get_rfc3339(&self, kind: Seen, id: &str) -> Option<String> {
        self.get(kind, id)
            .and_then(|at| chrono::DateTime::from_timestamp(at, 0))
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }

    /// Forget `id` (its app was deleted, or the device revoked), here and in storage.
    pub fn forget(&self, kind: Seen, id: &str) {
        self.lock()[kind.index()].remove(id);
        let _ = self.tx.try_send(Note::Forget(key(kind, id)));
    }

    /// Take in a stored time (loaded or followed); the latest one wins.
    fn heard(&self, key: &str, at: i64) {
        let Some((kind, id)) = Seen::parse(key) else {
            return;
        };
        let mut times = self.lock();
        match times[kind.index()].get_mut(id) {
            Some(entry) => {
                entry.at = entry.at.max(at);
                entry.stored = entry.stored.max(at);
            }
            None => {
                times[kind.index()].insert(id.to_string(), Entry { at, stored: at });
            }
        }
    }

    /// Apply a changed `last-seen/…` document (from the system database's feed).
    pub fn apply(&self, doc_id: &str, doc: Option<serde_json::Value>) {
        let Some(key) = doc_id.strip_prefix(LAST_SEEN_PREFIX) else {
            return;
        };
        match doc {
            None => {
                // Deleted: the app or device was forgotten (here or on another replica).
                if let Some((kind, id)) = Seen::parse(key) {
                    self.lock()[kind.index()].remove(id);
                }
            }
            Some(doc) => {
                if let Ok(record) = serde_json::from_value::<Record>(doc) {
                    self.heard(key, record.last_seen_at);
                }
            }
        }
    }

    /// Load every stored time (at start-up).
    pub async fn load(&self, db: &Database) -> Result<(), CouchError> {
        let docs = db.docs_with_prefix(LAST_SEEN_PREFIX, 1_000_000).await?;
        let loaded = docs.len();
        for doc in docs {
            let id = doc
                .get("_id")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string);
            if let Some(id) = id {
                self.apply(&id, Some(doc));
            }
        }
        tracing::debug!(loaded, "last-seen times loaded");
        Ok(())
    }
}

/// Store the notes of `state.last_seen` in `db` until shutdown begins. Started once, when
/// the system database is ready; a second call finds no queue and returns.
pub async fn write_forever(state: AppState, db: Database) {
    let rx = state
        .last_seen
        .rx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let Some(mut rx) = rx else {
        return;
    };
    loop {
        let note = tokio::select! {
            _ = state.shutdown.started() => return,
            note = rx.recv() => match note {
                Some(note) => note,
                None => return,
            },
        };
        let result = match &note {
            Note::Seen(key, at) => store(&db, key, *at).await,
            Note::Forget(key) => remove(&db, key).await,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "a last-seen time was not stored");
        }
    }
}

/// Store `at` unless a later time is stored already (another replica's).
async fn store(db: &Database, key: &str, at: i64) -> Result<(), CouchError> {
    let id = doc_id(key);
    for _ in 0..3 {
        let existing = db.get(&id).await?;
        let stored = existing
            .as_ref()
            .and_then(|doc| serde_json::from_value::<Record>(doc.clone()).ok());
        if stored.is_some_and(|r| r.last_seen_at >= at) {
            return Ok(());
        }
        let mut doc = json!({ "collection": "last-seen", "lastSeenAt": at });
        if let Some(rev) = existing.as_ref().and_then(|d| d.get("_rev")) {
            doc["_rev"] = rev.clone();
        }
        match db.put(&id, &doc).await {
            Ok(_) => return Ok(()),
            Err(CouchError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn remove(db: &Database, key: &str) -> Result<(), CouchError> {
    let id = doc_id(key);
    if let Some(doc) = db.get(&id).await?
        && let Some(rev) = doc.get("_rev").and_then(serde_json::Value::as_str)
    {
        match db.delete(&id, rev).await {
            Ok(_) | Err(CouchError::NotFound { .. }) | Err(CouchError::Conflict) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touch_is_noted_at_once_and_queued_once_a_period() {
        let seen = LastSeen::default();
        let mut rx = seen.rx.lock().unwrap().take().unwrap();
        assert_eq!(seen.get(Seen::App, "a"), None);
        seen.touch(Seen::App, "a");
        seen.touch(Seen::App, "a");
        seen.touch(Seen::Device, "a");
        assert!(seen.get(Seen::App, "a").is_some());
        assert!(seen.get(Seen::Device, "a").is_some());
        let mut queued = Vec::new();
        while let Ok(Note::Seen(key, _)) = rx.try_recv() {
            queued.push(key);
        }
        assert_eq!(
            queued,
            ["app/a", "device/a"],
            "one write each within a period"
        );
        // A time heard from storage that is a period old makes the next touch write.
        seen.forget(Seen::App, "a");
        assert!(matches!(rx.try_recv(), Ok(Note::Forget(k)) if k == "app/a"));
        seen.heard("app/a", now_unix() - 61);
        seen.touch(Seen::App, "a");
        assert!(matches!(rx.try_recv(), Ok(Note::Seen(k, _)) if k == "app/a"));
        // A later stored time wins over an earlier one.
        seen.apply("last-seen/app/b", Some(json!({ "lastSeenAt": 100 })));
        seen.apply("last-seen/app/b", Some(json!({ "lastSeenAt": 50 })));
        assert_eq!(
            seen.get_rfc3339(Seen::App, "b").as_deref(),
            Some("1970-01-01T00:01:40Z")
        );
        assert_eq!(seen.get(Seen::App, "b"), Some(100));
        seen.apply("last-seen/app/b", None);
        assert_eq!(seen.get(Seen::App, "b"), None, "deleted elsewhere");
    }
}
