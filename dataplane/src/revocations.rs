//! Revoked refresh families, stored so every process of the instance refuses their access
//! and app tokens: the one that revoked, the same one after a restart, and every other
//! replica.
//!
//! Logout and refresh-token reuse mark the family document revoked (which stops its
//! refresh tokens) and write one small `revoked/<family>` document to the system database.
//! Each process loads those documents with the other caches ([`load`], from
//! [`crate::startup`]) and hears about new ones through the system
//! database's change feed ([`crate::system_feed`]). In memory a revocation is kept for
//! [`crate::auth::tokens::REVOKED_FAMILY_HORIZON`] after it happened — no token of the
//! family can live longer — and older documents are deleted when a process loads them
//! (at start-up) and then every [`crate::config::Limits::revocation_sweep`] by
//! [`sweep_forever`], so they do not pile up in the system database of a process that
//! runs for months.
//!
//! Device revocations and app deletions need nothing extra: they delete the device or app
//! document, which every process loads and follows anyway.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::tokens::{REVOKED_FAMILY_HORIZON, TokenService};
use crate::couch::{CouchError, Database};

/// Prefix of revoked-family documents in the system database.
pub const REVOKED_FAMILY_PREFIX: &str = "revoked/";

/// A stored revocation (`revoked/<family>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RevokedFamily {
    /// The refresh family.
    pub family: String,
    /// When it was revoked (UNIX seconds).
    pub revoked_at: i64,
}

fn doc_id(family: &str) -> String {
    format!("{REVOKED_FAMILY_PREFIX}{family}")
}

/// Store that `family` was revoked now. Idempotent: an existing record is kept.
pub async fn store(db: &Database, family: &str) -> Result<(), CouchError> {
    let record = RevokedFamily {
        family: family.to_string(),
        revoked_at: crate::state::now_unix(),
    };
    let mut doc = serde_json::to_value(&record).map_err(|e| CouchError::Decode(e.to_string()))?;
    doc["collection"] = json!("revoked");
    match db.put(&doc_id(family), &doc).await {
        Ok(_) | Err(CouchError::Conflict) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Apply one stored record (loaded or followed) to `tokens`; returns whether it was news.
pub fn apply(tokens: &TokenService, doc: serde_json::Value) -> bool {
    match serde_json::from_value::<RevokedFamily>(doc) {
        Ok(record) => tokens.remember_revoked_family(&record.family, record.revoked_at),
        Err(e) => {
            tracing::warn!(error = %e, "skipping an unreadable revoked-family document");
            false
        }
    }
}

/// Load every stored revocation still within the horizon into `tokens`, and delete the
/// records past it: no token of their family can still be valid.
pub async fn load(tokens: &TokenService, db: &Database) -> Result<(), CouchError> {
    let docs = db
        .docs_with_prefix(REVOKED_FAMILY_PREFIX, 1_000_000)
        .await?;
    let total = docs.len();
    let mut remembered = 0;
    let mut pruned = 0;
    for doc in docs {
        if is_past_horizon(&doc) {
            pruned += prune(db, &doc).await as usize;
        } else if apply(tokens, doc) {
            remembered += 1;
        }
    }
    tracing::debug!(total, remembered, pruned, "revoked families loaded");
    Ok(())
}

/// Delete every stored record past the horizon, every `every` until shutdown begins.
/// Started once, when the system database is ready (start-up has just done the first
/// sweep). Every replica sweeps; a record another one deleted first is skipped.
pub async fn sweep_forever(state: crate::state::AppState, db: Database) {
    let every = state.config.limits.revocation_sweep;
    loop {
        tokio::select! {
            _ = state.shutdown.started() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match sweep(&db).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "expired revocation records deleted"),
            Err(e) => tracing::debug!(error = %e, "expired revocation records not swept"),
        }
    }
}

/// Delete the stored records past the horizon; returns how many were deleted.
async fn sweep(db: &Database) -> Result<usize, CouchError> {
    let docs = db
        .docs_with_prefix(REVOKED_FAMILY_PREFIX, 1_000_000)
        .await?;
    let mut pruned = 0;
    for doc in docs.iter().filter(|doc| is_past_horizon(doc)) {
        pruned += prune(db, doc).await as usize;
    }
    Ok(pruned)
}

/// Whether a stored record is older than [`REVOKED_FAMILY_HORIZON`].
fn is_past_horizon(doc: &serde_json::Value) -> bool {
    serde_json::from_value::<RevokedFamily>(doc.clone()).is_ok_and(|record| {
        let age = crate::state::now_unix().saturating_sub(record.revoked_at);
        age > REVOKED_FAMILY_HORIZON.as_secs() as i64
    })
}

/// Delete one expired record; a failure (another process pruned it first, or CouchDB is
/// busy) is left for the next sweep.
async fn prune(db: &Database, doc: &serde_json::Value) -> bool {
    let (Some(id), Some(rev)) = (doc["_id"].as_str(), doc["_rev"].as_str()) else {
        return false;
    };
    match db.delete(id, rev).await {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(error = %e, "an expired revocation record was not deleted");
            false
        }
    }
}
