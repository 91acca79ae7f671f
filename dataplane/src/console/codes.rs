//! One-time console codes: minted by the owner (`POST /api/v1/console/code`), exchanged
//! once by the console page for an owner session (`POST /api/v1/console/session`).
//!
//! A code is 256 random bits. Only its SHA-256 is stored (`console-code/<hex>` in the
//! system database), with its expiry, the instance URL and the owner it was minted for:
//! a code is good on this instance only, for this owner only, until it expires. Spending
//! deletes the document at the revision read, so of two exchanges of one code at most one
//! succeeds (CouchDB's revision check), on any replica.

use serde_json::{Value, json};

use crate::couch::{CouchError, Database};
use crate::error::ApiResult;
use crate::state::now_unix;

/// Prefix of console-code documents in the system database.
pub const PREFIX: &str = "console-code/";

/// Longest code accepted for a lookup (a real one is 43 characters).
const MAX_CODE_LEN: usize = 128;

fn doc_id(code: &str) -> String {
    let hash = vibe_identity::secret::hash(code);
    let hex = hash.strip_prefix("sha256:").unwrap_or(&hash);
    format!("{PREFIX}{hex}")
}

/// Mint a code valid for `ttl_seconds` on the instance at `instance` owned by `owner`;
/// returns it and its expiry (UNIX seconds).
pub async fn issue(
    db: &Database,
    instance: &str,
    owner: &str,
    ttl_seconds: u64,
) -> ApiResult<(String, i64)> {
    let code = vibe_identity::secret::generate(32);
    let expires_at = now_unix() + ttl_seconds as i64;
    db.put(
        &doc_id(&code),
        &json!({
            "collection": "console-codes",
            "instance": instance,
            "owner": owner,
            "createdAt": now_unix(),
            "expiresAt": expires_at,
        }),
    )
    .await?;
    Ok((code, expires_at))
}

/// Spend `code`: true when it exists, was minted for this `instance` and `owner`, has
/// not expired, and this call consumed it. A code that is refused for any reason but
/// reuse is consumed too.
pub async fn spend(db: &Database, code: &str, instance: &str, owner: &str) -> ApiResult<bool> {
    if code.is_empty() || code.len() > MAX_CODE_LEN {
        return Ok(false);
    }
    let id = doc_id(code);
    let Some(doc) = db.get(&id).await? else {
        return Ok(false);
    };
    let rev = doc.get("_rev").and_then(Value::as_str).unwrap_or_default();
    let fits = doc.get("instance").and_then(Value::as_str) == Some(instance)
        && doc.get("owner").and_then(Value::as_str) == Some(owner)
        && doc.get("expiresAt").and_then(Value::as_i64).unwrap_or(0) > now_unix();
    match db.delete(&id, rev).await {
        Ok(_) => Ok(fits),
        Err(CouchError::Conflict) | Err(CouchError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Delete expired codes; returns how many went.
pub async fn sweep(db: &Database) -> Result<usize, CouchError> {
    let now = now_unix();
    let expired: Vec<Value> = db
        .docs_with_prefix(PREFIX, 10_000)
        .await?
        .into_iter()
        .filter(|d| d.get("expiresAt").and_then(Value::as_i64).unwrap_or(0) <= now)
        .filter_map(|d| {
            Some(json!({ "_id": d.get("_id")?.clone(), "_rev": d.get("_rev")?.clone(), "_deleted": true }))
        })
        .collect();
    if expired.is_empty() {
        return Ok(0);
    }
    db.bulk_docs(&expired).await?;
    Ok(expired.len())
}
