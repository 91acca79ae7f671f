//! Refresh tokens: opaque random secrets, stored only as hashes (`refresh/<sha256>` in the
//! system database), grouped in rotation families (`family/<id>`).
//!
//! Refreshing spends the presented token and issues a new one in the same family.
//! Presenting a spent token again (a sign it was stolen) revokes the whole family, as
//! does logout.

use serde_json::{Value, json};

use crate::couch::{CouchError, Database};
use crate::error::{ApiError, ApiResult};
use crate::state::{now_unix, str_field};

const TOKEN_PREFIX: &str = "refresh/";
const FAMILY_PREFIX: &str = "family/";

fn token_doc_id(token: &str) -> String {
    let hash = vibe_identity::secret::hash(token);
    let hex = hash.strip_prefix("sha256:").unwrap_or(&hash);
    format!("{TOKEN_PREFIX}{hex}")
}

fn family_doc_id(family: &str) -> String {
    format!("{FAMILY_PREFIX}{family}")
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::Unauthorized(message.to_string())
}

/// A freshly issued refresh token.
pub struct IssuedRefresh {
    /// The secret to hand to the client (never stored).
    pub token: String,
    /// Its family.
    pub family: String,
    /// Expiry, UNIX seconds.
    pub expires_at: i64,
}

/// Start a new family (at login, or a console code's exchange) for a kind of client
/// (`console`; `None`: a signed login of the CLI or an agent) and issue its first token.
pub async fn start_family_as(
    db: &Database,
    did: &str,
    ttl_seconds: u64,
    client: Option<&str>,
) -> ApiResult<IssuedRefresh> {
    let family = uuid::Uuid::now_v7().to_string();
    let now = now_unix();
    let expires_at = now + ttl_seconds as i64;
    let mut doc = json!({
        "did": did,
        "createdAt": now,
        "revokedAt": null,
        REFRESH_EXPIRES_AT: expires_at,
    });
    if let Some(client) = client {
        doc["client"] = json!(client);
    }
    db.put(&family_doc_id(&family), &doc).await?;
    issue(db, &family, expires_at).await
}

/// Field of a family document: when its newest refresh token expires (UNIX seconds), so
/// the session list can leave out families nobody can refresh any more. Families started
/// before it was recorded lack it until their next refresh.
pub const REFRESH_EXPIRES_AT: &str = "refreshExpiresAt";

/// Record on the family document that its newest refresh token expires at `expires_at`.
/// Best effort: the session list is what reads it, the tokens stay the authority.
async fn note_expiry(db: &Database, family: &str, expires_at: i64) {
    let id = family_doc_id(family);
    for _ in 0..3 {
        let mut doc = match db.get(&id).await {
            Ok(Some(doc)) => doc,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not record a session's refresh expiry");
                return;
            }
        };
        let recorded = doc.get(REFRESH_EXPIRES_AT).and_then(Value::as_i64);
        if !doc.get("revokedAt").is_none_or(Value::is_null)
            || recorded.is_some_and(|at| at >= expires_at)
        {
            return;
        }
        doc[REFRESH_EXPIRES_AT] = json!(expires_at);
        match db.put(&id, &doc).await {
            Ok(_) => return,
            Err(CouchError::Conflict) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not record a session's refresh expiry");
                return;
            }
        }
    }
}

/// Prefix of family documents in the system database.
pub const FAMILY_DOC_PREFIX: &str = FAMILY_PREFIX;

async fn issue(db: &Database, family: &str, expires_at: i64) -> ApiResult<IssuedRefresh> {
    let token = vibe_identity::secret::generate(32);
    db.put(
        &token_doc_id(&token),
        &json!({
            "tokenHash": vibe_identity::secret::hash(&token),
            "family": family,
            "createdAt": now_unix(),
            "expiresAt": expires_at,
            "spentAt": null,
        }),
    )
    .await?;
    Ok(IssuedRefresh {
        token,
        family: family.to_string(),
        expires_at,
    })
}

/// Mark `family` revoked, and store the revocation for every process of the instance
/// ([`crate::revocations`]). Idempotent.
pub async fn revoke_family(db: &Database, family: &str) -> ApiResult<()> {
    crate::revocations::store(db, family).await?;
    for _ in 0..3 {
        let id = family_doc_id(family);
        let Some(mut doc) = db.get(&id).await? else {
            return Ok(());
        };
        if !doc.get("revokedAt").is_none_or(Value::is_null) {
            return Ok(());
        }
        doc["revokedAt"] = json!(now_unix());
        match db.put(&id, &doc).await {
            Ok(_) => return Ok(()),
            Err(CouchError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(
        "could not revoke refresh family after 3 attempts",
    ))
}

/// The family of a presented token, if the token is known (spent or not).
pub async fn family_of(db: &Database, token: &str) -> ApiResult<Option<String>> {
    Ok(db
        .get(&token_doc_id(token))
        .await?
        .and_then(|doc| str_field(&doc, "family").map(str::to_string)))
}

/// The result of a successful rotation.
pub struct Rotated {
    /// The new refresh token.
    pub refresh: IssuedRefresh,
}

/// Spend `token` and issue its successor. Errors are 401 with the original's messages:
/// `Invalid refresh token.`, `Refresh token has been revoked.`, `Refresh token expired.`
/// Reuse of a spent token revokes the family; `on_family_revoked` is told so access
/// tokens of the family stop working too.
pub async fn rotate(
    db: &Database,
    token: &str,
    ttl_seconds: u64,
    on_family_revoked: impl Fn(&str),
) -> ApiResult<Rotated> {
    if token.is_empty() || token.len() > 256 {
        return Err(unauthorized("Invalid refresh token."));
    }
    let id = token_doc_id(token);
    let Some(mut doc) = db.get(&id).await? else {
        return Err(unauthorized("Invalid refresh token."));
    };
    let family = str_field(&doc, "family").unwrap_or_default().to_string();
    let family_doc = db.get(&family_doc_id(&family)).await?;
    let revoked = family_doc
        .as_ref()
        .is_none_or(|f| !f.get("revokedAt").is_none_or(Value::is_null));
    if revoked {
        return Err(unauthorized("Refresh token has been revoked."));
    }
    if !doc.get("spentAt").is_none_or(Value::is_null) {
        tracing::warn!("spent refresh token presented again; revoking its family");
        revoke_family(db, &family).await?;
        on_family_revoked(&family);
        return Err(unauthorized("Refresh token has been revoked."));
    }
    if doc.get("expiresAt").and_then(Value::as_i64).unwrap_or(0) <= now_unix() {
        return Err(unauthorized("Refresh token expired."));
    }
    doc["spentAt"] = json!(now_unix());
    match db.put(&id, &doc).await {
        Ok(_) => {}
        Err(CouchError::Conflict) => {
            // Someone spent it at the same moment: treat as reuse.
            tracing::warn!("concurrent use of one refresh token; revoking its family");
            revoke_family(db, &family).await?;
            on_family_revoked(&family);
            return Err(unauthorized("Refresh token has been revoked."));
        }
        Err(e) => return Err(e.into()),
    }
    let refresh = issue(db, &family, now_unix() + ttl_seconds as i64).await?;
    note_expiry(db, &family, refresh.expires_at).await;
    Ok(Rotated { refresh })
}
