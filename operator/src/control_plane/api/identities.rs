//! `/api/v1/identities`: the registry, read and changed by owners and admins.
//!
//! Changes from the original: admin rights are read from the registry on every request (not
//! trusted from a token claim); the list is paginated (`?limit=&continue=`, next page token in
//! the `X-Continue` header, body still a plain array); the owner's signed update checks the
//! timestamp and spends the nonce; there is no internal-secret role — instance status comes
//! from the VibeInstance, not from callbacks.

use super::error::ApiError;
use super::model::IdentityView;
use super::signed::{self, SignedMessages};
use super::tokens::Caller;
use super::{ApiJson, ControlPlane};
use crate::control_plane::registry::records::{ClaimPurpose, IdentityRecord};
use crate::control_plane::registry::{ClaimProblem, check_claim};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

const FETCH_FAILED: &str = "Failed to fetch identity.";
const LIST_FAILED: &str = "Failed to list identities.";
const STATUS_FAILED: &str = "Failed to get identity status.";
const UPDATE_FAILED: &str = "Failed to update identity.";
const DELETE_FAILED: &str = "Failed to delete identity.";

/// Loads an identity and its instance; an identity whose deletion was requested and whose
/// instance is gone is finished off here and reported as absent.
pub async fn load(
    state: &ControlPlane,
    did: &str,
    public: &'static str,
) -> Result<Option<IdentityView>, ApiError> {
    let Some(record) = state
        .registry
        .identity(did)
        .await
        .map_err(ApiError::or_internal(public))?
    else {
        return Ok(None);
    };
    view(state, record, public).await
}

async fn view(
    state: &ControlPlane,
    record: IdentityRecord,
    public: &'static str,
) -> Result<Option<IdentityView>, ApiError> {
    let instance = match &record.instance {
        Some(at) => state
            .registry
            .instance(at)
            .await
            .map_err(ApiError::or_internal(public))?,
        None => None,
    };
    if record.deletion_requested_at.is_some() && instance.is_none() {
        state
            .registry
            .delete_identity(&record.did)
            .await
            .map_err(ApiError::or_internal(public))?;
        return Ok(None);
    }
    Ok(Some(IdentityView::new(&record, instance.as_ref())))
}

async fn is_admin(state: &ControlPlane, did: &str, public: &'static str) -> Result<bool, ApiError> {
    Ok(state
        .registry
        .identity(did)
        .await
        .map_err(ApiError::or_internal(public))?
        .is_some_and(|r| r.is_admin))
}

/// Query of the list route.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

/// `GET /api/v1/identities` (admin): one page of identities.
pub async fn list(
    State(state): State<ControlPlane>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<(HeaderMap, Json<Vec<IdentityView>>), ApiError> {
    if !is_admin(&state, &caller.did, LIST_FAILED).await? {
        return Err(ApiError::forbidden("Forbidden: Admin privileges required."));
    }
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let (records, next) = state
        .registry
        .list_identities(limit, query.continue_token.as_deref())
        .await
        .map_err(|err| match &err {
            crate::control_plane::registry::RegistryError::Kube(kube::Error::Api(s))
                if s.code == 410 =>
            {
                ApiError::bad_request("The continue token has expired; start the listing again.")
            }
            _ => ApiError::internal(LIST_FAILED, err),
        })?;
    let mut views = Vec::with_capacity(records.len());
    for record in records {
        if let Some(view) = view(&state, record, LIST_FAILED).await? {
            views.push(view);
        }
    }
    let mut headers = HeaderMap::new();
    if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        headers.insert("x-continue", next);
    }
    Ok((headers, Json(views)))
}

/// `GET /api/v1/identities/{did}/status` (public): `{isActive, instanceStatus}`.
pub async fn status(
    State(state): State<ControlPlane>,
    Path(did): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(match load(&state, &did, STATUS_FAILED).await? {
        Some(view) => json!({ "isActive": true, "instanceStatus": view.instance_status }),
        None => json!({ "isActive": false }),
    }))
}

/// `GET /api/v1/identities/{did}` (owner or admin).
pub async fn get_one(
    State(state): State<ControlPlane>,
    caller: Caller,
    Path(did): Path<String>,
) -> Result<Json<IdentityView>, ApiError> {
    if caller.did != did && !is_admin(&state, &caller.did, FETCH_FAILED).await? {
        return Err(ApiError::forbidden("Forbidden: Access denied."));
    }
    load(&state, &did, FETCH_FAILED)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Identity not found."))
}

/// Body of `PUT /api/v1/identities/{did}`: the owner sends the signed fields, an admin the
/// plain ones.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateBody {
    nonce: Option<String>,
    timestamp: Option<String>,
    signature: Option<String>,
    profile_name: Option<String>,
    profile_picture_url: Option<String>,
    claim_code: Option<String>,
    is_admin: Option<bool>,
}

/// `PUT /api/v1/identities/{did}`: the owner (signed over
/// `did|nonce|timestamp|claimCode|profileName|profilePictureUrl`) updates the profile and may
/// redeem an admin claim code (the answer then carries a fresh `token`); an admin may also set
/// `isAdmin`.
pub async fn update(
    State(state): State<ControlPlane>,
    caller: Caller,
    Path(did): Path<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    let (profile_name, profile_picture_url) = super::auth::check_profile(
        body.profile_name.as_deref(),
        body.profile_picture_url.as_deref(),
    )?;
    let mut grants_admin = false;
    let set_admin = if caller.did == did {
        let (Some(nonce), Some(timestamp), Some(signature)) =
            (&body.nonce, &body.timestamp, &body.signature)
        else {
            return Err(ApiError::bad_request(
                "Missing signature parameters for owner update.",
            ));
        };
        let message = [
            did.as_str(),
            nonce,
            timestamp,
            body.claim_code.as_deref().unwrap_or(""),
            body.profile_name.as_deref().unwrap_or(""),
            body.profile_picture_url.as_deref().unwrap_or(""),
        ]
        .join("|");
        let answers = SignedMessages {
            bad_signature: "Invalid signature for owner update.",
            internal: UPDATE_FAILED,
        };
        signed::verify(
            &state, &did, nonce, timestamp, signature, &message, &answers,
        )
        .await?;
        if state
            .registry
            .identity(&did)
            .await
            .map_err(ApiError::or_internal(UPDATE_FAILED))?
            .is_none()
        {
            return Err(ApiError::not_found("Identity not found."));
        }
        if let Some(code) = body
            .claim_code
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            let now = Utc::now();
            let record = state
                .registry
                .claim_code(code)
                .await
                .map_err(ApiError::or_internal(UPDATE_FAILED))?
                .filter(|r| r.purpose == ClaimPurpose::Admin)
                .ok_or_else(|| ApiError::bad_request(ClaimProblem::Unknown.message()))?;
            check_claim(&record, &did, now).map_err(|p| ApiError::bad_request(p.message()))?;
            state
                .registry
                .spend_claim_code(code, &did, now)
                .await
                .map_err(ApiError::or_internal(UPDATE_FAILED))?
                .map_err(|p| ApiError::bad_request(p.message()))?;
            grants_admin = true;
        }
        grants_admin.then_some(true)
    } else if is_admin(&state, &caller.did, UPDATE_FAILED).await? {
        body.is_admin
    } else {
        return Err(ApiError::forbidden("Forbidden: Insufficient permissions."));
    };
    let record = state
        .registry
        .update_identity(&did, |r| {
            if profile_name.is_some() {
                r.profile_name = profile_name.clone();
            }
            if profile_picture_url.is_some() {
                r.profile_picture_url = profile_picture_url.clone();
            }
            if let Some(admin) = set_admin {
                r.is_admin = admin;
            }
        })
        .await
        .map_err(ApiError::or_internal(UPDATE_FAILED))?
        .ok_or_else(|| ApiError::not_found("Identity not found."))?;
    let view = view(&state, record, UPDATE_FAILED)
        .await?
        .ok_or_else(|| ApiError::not_found("Identity not found."))?;
    let mut answer = serde_json::to_value(view).map_err(ApiError::or_internal(UPDATE_FAILED))?;
    if grants_admin {
        let token = state
            .tokens
            .access(&did)
            .map_err(ApiError::or_internal(UPDATE_FAILED))?;
        answer["token"] = Value::String(token.token);
    }
    Ok(Json(answer))
}

/// `DELETE /api/v1/identities/{did}` (owner or admin): deletes the VibeInstance — its
/// `deletionPolicy` decides whether the data goes — and the identity once the instance is gone.
pub async fn delete(
    State(state): State<ControlPlane>,
    caller: Caller,
    Path(did): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if caller.did != did && !is_admin(&state, &caller.did, DELETE_FAILED).await? {
        return Err(ApiError::forbidden("Forbidden: Access denied."));
    }
    let registry = &state.registry;
    let record = registry
        .identity(&did)
        .await
        .map_err(ApiError::or_internal(DELETE_FAILED))?
        .ok_or_else(|| ApiError::not_found("Identity not found."))?;
    registry
        .revoke_all_refresh_tokens(&did)
        .await
        .map_err(ApiError::or_internal(DELETE_FAILED))?;
    if let Some(at) = &record.instance {
        let instance = registry
            .instance(at)
            .await
            .map_err(ApiError::or_internal(DELETE_FAILED))?;
        if instance.is_some() {
            registry
                .update_identity(&did, |r| {
                    r.deletion_requested_at.get_or_insert_with(Utc::now);
                })
                .await
                .map_err(ApiError::or_internal(DELETE_FAILED))?;
            registry
                .deprovision_instance(at)
                .await
                .map_err(ApiError::or_internal(DELETE_FAILED))?;
            tracing::info!(instance = %at.name, "identity deletion requested; deprovisioning its instance");
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({
                    "message": format!("Deprovisioning process initiated for identity {did} and instance {}.", at.name)
                })),
            ));
        }
    }
    registry
        .delete_identity(&did)
        .await
        .map_err(ApiError::or_internal(DELETE_FAILED))?;
    Ok((
        StatusCode::OK,
        Json(
            json!({ "message": format!("Identity {did} deleted successfully (no instance to deprovision).") }),
        ),
    ))
}
