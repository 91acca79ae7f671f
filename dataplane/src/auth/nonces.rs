//! Login nonces: issued by `/api/v1/auth/challenge`, stored in the system database (so
//! they survive restarts and work across replicas), single use, short-lived.
//!
//! Spending a nonce deletes its document at the revision read; CouchDB's revision check
//! makes two concurrent logins with one nonce succeed at most once.

use serde_json::json;

use crate::couch::{CouchError, Database};
use crate::error::ApiResult;
use crate::state::now_unix;

const PREFIX: &str = "nonce/";

fn doc_id(nonce: &str) -> String {
    format!("{PREFIX}{nonce}")
}

/// Create a nonce valid for `ttl_seconds`; returns it and its expiry (UNIX seconds).
pub async fn issue(db: &Database, ttl_seconds: u64) -> ApiResult<(String, i64)> {
    let nonce = vibe_identity::secret::generate(24);
    let expires_at = now_unix() + ttl_seconds as i64;
    db.put(
        &doc_id(&nonce),
        &json!({ "expiresAt": expires_at, "createdAt": now_unix() }),
    )
    .await?;
    Ok((nonce, expires_at))
}

/// Spend `nonce`: true when it existed, had not expired and this call consumed it.
pub async fn spend(db: &Database, nonce: &str) -> ApiResult<bool> {
    if nonce.is_empty() || nonce.len() > 128 {
        return Ok(false);
    }
    let Some(doc) = db.get(&doc_id(nonce)).await? else {
        return Ok(false);
    };
    let rev = doc.get("_rev").and_then(|v| v.as_str()).unwrap_or_default();
    let expires_at = doc.get("expiresAt").and_then(|v| v.as_i64()).unwrap_or(0);
    match db.delete(&doc_id(nonce), rev).await {
        Ok(_) => Ok(expires_at > now_unix()),
        Err(CouchError::Conflict) | Err(CouchError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Delete expired nonces (called periodically); returns how many were removed.
pub async fn sweep(db: &Database) -> Result<usize, CouchError> {
    let now = now_unix();
    let docs = db.docs_with_prefix(PREFIX, 10_000).await?;
    let expired: Vec<_> = docs
        .into_iter()
        .filter(|d| d.get("expiresAt").and_then(|v| v.as_i64()).unwrap_or(0) <= now)
        .filter_map(|d| {
            Some(json!({
                "_id": d.get("_id")?.clone(),
                "_rev": d.get("_rev")?.clone(),
                "_deleted": true,
            }))
        })
        .collect();
    if expired.is_empty() {
        return Ok(0);
    }
    db.bulk_docs(&expired).await?;
    Ok(expired.len())
}
