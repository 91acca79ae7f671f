//! `POST /api/v1/auth/register|login|refresh`.
//!
//! Changes from the original: nonces are spent (no 5-minute replay window); registration obeys
//! the provider's policy (open, invite-only, closed); re-registering an existing DID never
//! resets or re-provisions its instance; tokens are EdDSA with the control plane as audience.

use super::error::ApiError;
use super::model::{IdentityView, TokenDetails};
use super::signed::{self, SignedMessages};
use super::{ApiJson, ControlPlane, RegistrationPolicy};
use crate::control_plane::registry::records::{ClaimPurpose, IdentityRecord};
use crate::control_plane::registry::{ClaimProblem, RefreshProblem, check_claim, status};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use vibe_identity::{Error as IdentityError, TokenKind, TokenRejection};

const REGISTER_FAILED: &str = "Registration failed.";
const LOGIN_FAILED: &str = "Login failed due to an internal error.";
const REFRESH_FAILED: &str = "Token refresh failed.";

/// Body of `POST /api/v1/auth/register`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBody {
    did: String,
    nonce: String,
    timestamp: String,
    signature: String,
    profile_name: Option<String>,
    profile_picture_url: Option<String>,
    claim_code: Option<String>,
}

/// Body of `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginBody {
    did: String,
    nonce: String,
    timestamp: String,
    signature: String,
}

/// Body of `POST /api/v1/auth/refresh`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshBody {
    refresh_token: String,
}

/// Checks the optional profile fields; returns them trimmed.
pub fn check_profile(
    name: Option<&str>,
    picture: Option<&str>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 100) {
        return Err(ApiError::Validation(
            "profileName must be at most 100 characters".into(),
        ));
    }
    let picture = picture.map(str::trim).filter(|p| !p.is_empty());
    if let Some(url) = picture {
        let ok = (url.starts_with("https://") || url.starts_with("http://"))
            && url.len() <= 2048
            && !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(ApiError::Validation(
                "profilePictureUrl must be an http(s) URL".into(),
            ));
        }
    }
    Ok((name.map(String::from), picture.map(String::from)))
}

/// Registers a DID and provisions its instance. 201 `{identity, tokenDetails}`.
pub async fn register(
    State(state): State<ControlPlane>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let claim_code = body
        .claim_code
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let (profile_name, profile_picture_url) = check_profile(
        body.profile_name.as_deref(),
        body.profile_picture_url.as_deref(),
    )?;
    let message = vibe_identity::signed::register_message(
        &body.did,
        &body.nonce,
        &body.timestamp,
        body.claim_code.as_deref(),
    );
    let answers = SignedMessages {
        bad_signature: "Invalid signature for registration.",
        internal: REGISTER_FAILED,
    };
    let did = signed::verify(
        &state,
        &body.did,
        &body.nonce,
        &body.timestamp,
        &body.signature,
        &message,
        &answers,
    )
    .await?;
    let did = did.to_string();
    let registry = &state.registry;
    let existing = registry
        .identity(&did)
        .await
        .map_err(ApiError::or_internal(REGISTER_FAILED))?;

    if existing.is_none() {
        match state.policy {
            RegistrationPolicy::Closed => {
                return Err(ApiError::forbidden("Registration is closed."));
            }
            RegistrationPolicy::InviteOnly if claim_code.is_none() => {
                return Err(ApiError::forbidden("Registration requires an invite code."));
            }
            _ => {}
        }
    }
    let mut grants_admin = false;
    if let Some(code) = claim_code {
        let now = Utc::now();
        let record = registry
            .claim_code(code)
            .await
            .map_err(ApiError::or_internal(REGISTER_FAILED))?;
        let record =
            record.ok_or_else(|| ApiError::bad_request(ClaimProblem::Unknown.message()))?;
        check_claim(&record, &did, now).map_err(|p| ApiError::bad_request(p.message()))?;
        let spent = registry
            .spend_claim_code(code, &did, now)
            .await
            .map_err(ApiError::or_internal(REGISTER_FAILED))?
            .map_err(|p| ApiError::bad_request(p.message()))?;
        grants_admin = spent.purpose == ClaimPurpose::Admin;
    }

    let now = Utc::now();
    let mut fresh = IdentityRecord::new(&did, now);
    fresh.is_admin = grants_admin;
    fresh.profile_name = profile_name.clone();
    fresh.profile_picture_url = profile_picture_url.clone();
    fresh.instance = Some(registry.new_instance_ref());
    let (mut record, created) = registry
        .create_identity(&fresh)
        .await
        .map_err(ApiError::or_internal(REGISTER_FAILED))?;
    if !created {
        let needs_change = grants_admin
            || record.instance.is_none()
            || (profile_name.is_some() && profile_name != record.profile_name)
            || (profile_picture_url.is_some() && profile_picture_url != record.profile_picture_url);
        if needs_change {
            let new_ref = fresh.instance.clone();
            record = registry
                .update_identity(&did, |r| {
                    r.is_admin |= grants_admin;
                    if r.instance.is_none() {
                        r.instance = new_ref.clone();
                    }
                    if profile_name.is_some() {
                        r.profile_name = profile_name.clone();
                    }
                    if profile_picture_url.is_some() {
                        r.profile_picture_url = profile_picture_url.clone();
                    }
                })
                .await
                .map_err(ApiError::or_internal(REGISTER_FAILED))?
                .ok_or_else(|| {
                    ApiError::internal(REGISTER_FAILED, std::io::Error::other("identity vanished"))
                })?;
        }
    }

    let at = record
        .instance
        .clone()
        .expect("registration always sets an instance");
    let instance = match registry
        .instance(&at)
        .await
        .map_err(ApiError::or_internal(REGISTER_FAILED))?
    {
        // Alive or being deleted: leave it alone (never reset a healthy instance).
        Some(instance) => instance,
        None => registry
            .provision_instance(&at, &did)
            .await
            .map_err(ApiError::or_internal(REGISTER_FAILED))?,
    };
    if !status::is_alive(&instance) {
        tracing::info!(instance = %at.name, "registration of an identity whose instance is being deprovisioned");
    }
    let tokens: TokenDetails = state
        .tokens
        .sign_in(registry, &did, REGISTER_FAILED)
        .await?;
    let identity = IdentityView::new(&record, Some(&instance));
    tracing::info!(created, instance = %at.name, "identity registered");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "identity": identity, "tokenDetails": tokens })),
    ))
}

/// Signs a DID in. 200 `{identity, tokenDetails}`.
pub async fn login(
    State(state): State<ControlPlane>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<Value>, ApiError> {
    let message = vibe_identity::signed::login_message(&body.did, &body.nonce, &body.timestamp);
    let answers = SignedMessages {
        bad_signature: "Invalid signature or authentication failed.",
        internal: LOGIN_FAILED,
    };
    let did = signed::verify(
        &state,
        &body.did,
        &body.nonce,
        &body.timestamp,
        &body.signature,
        &message,
        &answers,
    )
    .await?;
    let did = did.to_string();
    let record = state
        .registry
        .identity(&did)
        .await
        .map_err(ApiError::or_internal(LOGIN_FAILED))?
        .ok_or_else(|| ApiError::not_found("Identity not found. Please register first."))?;
    let instance = match &record.instance {
        Some(at) => state
            .registry
            .instance(at)
            .await
            .map_err(ApiError::or_internal(LOGIN_FAILED))?,
        None => None,
    };
    let tokens = state
        .tokens
        .sign_in(&state.registry, &did, LOGIN_FAILED)
        .await?;
    Ok(Json(
        json!({ "identity": IdentityView::new(&record, instance.as_ref()), "tokenDetails": tokens }),
    ))
}

/// Exchanges a refresh token (once) for a new pair. 200 `TokenResponse`.
pub async fn refresh(
    State(state): State<ControlPlane>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<TokenDetails>, ApiError> {
    let claims = state
        .tokens
        .verify(body.refresh_token.trim(), TokenKind::Refresh)
        .map_err(|err| match err {
            IdentityError::TokenRejected(TokenRejection::Expired) => {
                ApiError::unauthorized("Refresh token expired.")
            }
            _ => ApiError::unauthorized("Invalid refresh token."),
        })?;
    let family = claims
        .family
        .clone()
        .filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or_else(|| ApiError::unauthorized("Invalid refresh token."))?;
    let now = Utc::now();
    let access = state
        .tokens
        .access(&claims.sub)
        .map_err(ApiError::or_internal(REFRESH_FAILED))?;
    let next = state
        .tokens
        .refresh(&claims.sub, &family)
        .map_err(ApiError::or_internal(REFRESH_FAILED))?;
    let next_expiry = chrono::DateTime::from_timestamp(next.claims.exp, 0).unwrap_or(now);
    let outcome = state
        .registry
        .rotate_refresh_token(
            &family,
            &claims.sub,
            &claims.jti,
            &next.claims.jti,
            next_expiry,
            now,
        )
        .await
        .map_err(ApiError::or_internal(REFRESH_FAILED))?;
    match outcome {
        Ok(()) => {}
        Err(RefreshProblem::Revoked) => {
            return Err(ApiError::unauthorized("Refresh token has been revoked."));
        }
        Err(RefreshProblem::Expired) => {
            return Err(ApiError::unauthorized("Refresh token expired."));
        }
    }
    Ok(Json(TokenDetails::new(&access, &next)))
}
