//! Owner claim for an instance started without `TARGET_USER_DID` (self-hosted or local).
//!
//! The claim code given at start (`VIBE_CLAIM_CODE`) is stored only as a hash in the
//! system database (`claim/owner`), with its optional expiry and DID restriction. The
//! first valid `POST /api/v1/admin/claim` spends it (guarded by CouchDB's revision check)
//! and records the claimer as the owner, which is reloaded on every start.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use vibe_api::auth::{ClaimRequest, ClaimResponse};
use vibe_identity::Did;

use crate::couch::{CouchError, Database};
use crate::error::{ApiError, ApiResult};
use crate::json::StrictJson;
use crate::state::{AppState, now_unix, str_field};

/// Id of the claim-state document in the system database.
pub const CLAIM_DOC_ID: &str = "claim/owner";

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.to_string())
}

/// At start: load a previously claimed owner, or store the configured claim code's hash.
pub(crate) async fn load_or_seed(state: &AppState, db: &Database) -> ApiResult<()> {
    let existing = db.get(CLAIM_DOC_ID).await?;
    if let Some(claimed) = existing.as_ref().and_then(|d| str_field(d, "claimedByDid")) {
        let did = Did::parse(claimed).map_err(ApiError::internal)?;
        match state.owner() {
            None => {
                tracing::info!(owner = %did, "owner loaded from claim");
                state.set_owner(did);
            }
            Some(configured) if configured != did => tracing::warn!(
                configured = %configured,
                claimed = %did,
                "TARGET_USER_DID differs from the owner who claimed this instance; using TARGET_USER_DID"
            ),
            Some(_) => {}
        }
        return Ok(());
    }
    let (Some(code), None) = (&state.config.claim_code, state.owner()) else {
        if state.owner().is_none() {
            tracing::warn!("no owner configured and no claim code: nobody can log in");
        }
        return Ok(());
    };
    let wanted = json!({
        "codeHash": vibe_identity::secret::hash(&code.code),
        "expiresAt": code.expires_at.map(|t| t.timestamp()),
        "forDid": code.for_did.map(|d| d.to_string()),
        "spentAt": null,
        "claimedByDid": null,
    });
    let unchanged = existing.as_ref().is_some_and(|doc| {
        ["codeHash", "expiresAt", "forDid"]
            .iter()
            .all(|k| doc.get(*k) == wanted.get(*k))
    });
    if unchanged {
        return Ok(());
    }
    let mut doc = wanted;
    doc["createdAt"] = json!(now_unix());
    if let Some(rev) = existing.as_ref().and_then(|d| d.get("_rev")) {
        doc["_rev"] = rev.clone();
    }
    match db.put(CLAIM_DOC_ID, &doc).await {
        Ok(_) => {
            tracing::info!("claim code stored (hashed); waiting for the owner to claim");
            Ok(())
        }
        // Another replica stored it at the same moment.
        Err(CouchError::Conflict) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn already_owned() -> ApiError {
    ApiError::Conflict("This instance already has an owner.".into())
}

/// `value` of the body field `name` when it is a non-empty string of at most 1024 characters
/// (the OpenAPI document's `maxLength`).
fn non_empty<'a>(value: &'a str, name: &str) -> ApiResult<&'a str> {
    if !value.is_empty() && value.chars().count() <= 1024 {
        Ok(value)
    } else {
        Err(ApiError::Validation(format!(
            "'{name}' is required and must be a non-empty string."
        )))
    }
}

/// `POST /api/v1/admin/claim` `{did, claimCode, signature}` → 201.
pub async fn claim(
    State(state): State<AppState>,
    StrictJson(body): StrictJson<ClaimRequest>,
) -> ApiResult<(StatusCode, Json<ClaimResponse>)> {
    state.tokens.throttle()?;
    let did_text = non_empty(&body.did, "did")?;
    let code = non_empty(&body.claim_code, "claimCode")?;
    let signature = non_empty(&body.signature, "signature")?;
    if !super::did_shaped(did_text) {
        return Err(ApiError::Validation("'did' must be a did:vibe DID.".into()));
    }
    // Once there is an owner the claim is over, whatever code comes: 409 before the code is
    // looked at (`TARGET_USER_DID` configured, or claimed already).
    if state.owner().is_some() {
        return Err(already_owned());
    }

    let db = state.system_db().await?;
    let Some(mut doc) = db.get(CLAIM_DOC_ID).await? else {
        return Err(bad("Invalid or unknown claim code."));
    };
    let stored_hash = str_field(&doc, "codeHash").unwrap_or_default();
    if !vibe_identity::secret::matches(code, stored_hash) {
        return Err(bad("Invalid or unknown claim code."));
    }
    if !doc.get("spentAt").is_none_or(Value::is_null) {
        return Err(bad("Claim code has already been used."));
    }
    if doc
        .get("expiresAt")
        .and_then(Value::as_i64)
        .is_some_and(|t| t <= now_unix())
    {
        return Err(bad("Claim code has expired."));
    }
    if str_field(&doc, "forDid").is_some_and(|for_did| for_did != did_text) {
        return Err(bad("Claim code is not valid for the provided DID."));
    }
    // A well-formed DID that names no key cannot have signed anything.
    let did = Did::parse(did_text).map_err(|_| bad("Invalid signature."))?;
    let message = vibe_identity::signed::admin_claim_message(code);
    match vibe_identity::signed::verify_signature(&did, &message, signature) {
        Ok(()) => {}
        Err(vibe_identity::Error::InvalidSignature) => return Err(bad("Invalid signature.")),
        Err(e) => return Err(bad(&format!("Signature verification failed: {e}"))),
    }
    if state.owner().is_some() {
        return Err(already_owned());
    }
    doc["spentAt"] = json!(now_unix());
    doc["claimedByDid"] = json!(did.to_string());
    match db.put(CLAIM_DOC_ID, &doc).await {
        Ok(_) => {}
        Err(CouchError::Conflict) => return Err(bad("Claim code has already been used.")),
        Err(e) => return Err(e.into()),
    }
    state.set_owner(did);
    tracing::info!(owner = %did, "instance claimed");
    Ok((
        StatusCode::CREATED,
        Json(ClaimResponse {
            message: "Admin account claimed successfully.".into(),
            user_did: did.to_string(),
            is_admin: true,
        }),
    ))
}
