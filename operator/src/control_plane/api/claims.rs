//! `POST /api/v1/admin/claim` (platform admin codes) and `POST /api/v1/instances/claim`
//! (owner codes of unowned VibeInstances). Both take `{did, claimCode, signature}` with the
//! signature over the claim code, answer with the original's error strings, and spend the code
//! with a conditional write so that of any number of concurrent claims exactly one succeeds.

use super::error::ApiError;
use super::model::IdentityView;
use super::{ApiJson, ControlPlane};
use crate::control_plane::registry::records::{ClaimPurpose, IdentityRecord, InstanceRef};
use crate::control_plane::registry::{ClaimProblem, check_claim};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{Value, json};
use vibe_identity::{Did, signed};

const CLAIM_FAILED: &str = "Claim failed due to an internal error.";

/// Body of both claim routes.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimBody {
    did: String,
    claim_code: String,
    signature: String,
}

fn check_signature(body: &ClaimBody) -> Result<Did, ApiError> {
    let did = Did::parse(&body.did).map_err(|_| ApiError::bad_request("Invalid signature."))?;
    signed::verify_signature(
        &did,
        &signed::admin_claim_message(&body.claim_code),
        &body.signature,
    )
    .map_err(|_| ApiError::bad_request("Invalid signature."))?;
    Ok(did)
}

/// Redeems a platform admin claim code. 201 `{message, userDid, isAdmin: true, token}`.
pub async fn admin_claim(
    State(state): State<ControlPlane>,
    ApiJson(body): ApiJson<ClaimBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let registry = &state.registry;
    let code = body.claim_code.trim();
    let now = Utc::now();
    // The original's order: the code's own problems first, then the signature.
    let record = registry
        .claim_code(code)
        .await
        .map_err(ApiError::or_internal(CLAIM_FAILED))?
        .filter(|r| r.purpose == ClaimPurpose::Admin)
        .ok_or_else(|| ApiError::bad_request(ClaimProblem::Unknown.message()))?;
    check_claim(&record, &body.did, now).map_err(|p| ApiError::bad_request(p.message()))?;
    let did = check_signature(&body)?.to_string();
    registry
        .spend_claim_code(code, &did, now)
        .await
        .map_err(ApiError::or_internal(CLAIM_FAILED))?
        .map_err(|p| ApiError::bad_request(p.message()))?;

    let mut fresh = IdentityRecord::new(&did, now);
    fresh.is_admin = true;
    let (stored, created) = registry
        .create_identity(&fresh)
        .await
        .map_err(ApiError::or_internal(CLAIM_FAILED))?;
    if !created && !stored.is_admin {
        registry
            .update_identity(&did, |r| r.is_admin = true)
            .await
            .map_err(ApiError::or_internal(CLAIM_FAILED))?;
    }
    let token = state
        .tokens
        .access(&did)
        .map_err(ApiError::or_internal(CLAIM_FAILED))?;
    tracing::info!("admin claim code redeemed");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "message": "Admin account claimed successfully.",
            "userDid": did,
            "isAdmin": true,
            "token": token.token,
        })),
    ))
}

/// Claims an unowned VibeInstance with its owner claim code: sets `spec.owner.did`, links the
/// identity to it and signs the new owner in. 200 `{message, identity, tokenDetails}`.
pub async fn instance_claim(
    State(state): State<ControlPlane>,
    ApiJson(body): ApiJson<ClaimBody>,
) -> Result<Json<Value>, ApiError> {
    let registry = &state.registry;
    let code = body.claim_code.trim();
    let instance = registry
        .find_claimable_instance(code)
        .await
        .map_err(ApiError::or_internal(CLAIM_FAILED))?
        .ok_or_else(|| ApiError::bad_request(ClaimProblem::Unknown.message()))?;
    if instance.owner_did().is_some() {
        return Err(ApiError::bad_request(ClaimProblem::Spent.message()));
    }
    let did = check_signature(&body)?.to_string();
    let claimed = registry
        .claim_instance(&instance, code, &did)
        .await
        .map_err(ApiError::or_internal(CLAIM_FAILED))?
        .map_err(|p| ApiError::bad_request(p.message()))?;
    let at = InstanceRef {
        namespace: claimed.namespace().unwrap_or_default(),
        name: claimed.name_any(),
    };
    let mut fresh = IdentityRecord::new(&did, Utc::now());
    fresh.instance = Some(at.clone());
    let (mut record, created) = registry
        .create_identity(&fresh)
        .await
        .map_err(ApiError::or_internal(CLAIM_FAILED))?;
    if !created && record.instance.is_none() {
        record = registry
            .update_identity(&did, |r| {
                r.instance.get_or_insert_with(|| at.clone());
            })
            .await
            .map_err(ApiError::or_internal(CLAIM_FAILED))?
            .unwrap_or(record);
    }
    let tokens = state.tokens.sign_in(registry, &did, CLAIM_FAILED).await?;
    tracing::info!(namespace = %at.namespace, instance = %at.name, "instance claimed by its owner");
    let shown = (record.instance.as_ref() == Some(&at)).then_some(&claimed);
    Ok(Json(json!({
        "message": "Instance claimed successfully.",
        "instance": { "namespace": at.namespace, "name": at.name },
        "identity": IdentityView::new(&record, shown),
        "tokenDetails": tokens,
    })))
}
