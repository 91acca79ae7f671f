//! Owner authentication routes: challenge, login, refresh, logout, and the owner claim.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use chrono::Utc;
use vibe_api::auth::{
    BEARER, ChallengeResponse, LoginClient, LoginRequest, RefreshRequest, TokenResponse,
};
use vibe_identity::Did;

use super::{Caller, claim, nonces, refresh};
use crate::error::{ApiError, ApiResult};
use crate::json::StrictJson;
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/challenge", post(challenge))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh_tokens))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/admin/claim", post(claim::claim))
}

/// `value` of the body field `name` when it is a non-empty string of at most 4096 characters
/// (the OpenAPI document's `maxLength`).
fn non_empty<'a>(value: &'a str, name: &str) -> ApiResult<&'a str> {
    if !value.is_empty() && value.chars().count() <= 4096 {
        Ok(value)
    } else {
        Err(ApiError::Validation(format!(
            "'{name}' is required and must be a non-empty string."
        )))
    }
}

/// `POST /api/v1/auth/challenge` → `{nonce, expiresAt}` (UNIX seconds).
async fn challenge(State(state): State<AppState>) -> ApiResult<Json<ChallengeResponse>> {
    state.tokens.throttle()?;
    let db = state.system_db().await?;
    let (nonce, expires_at) = nonces::issue(&db, state.config.limits.nonce_ttl.as_secs()).await?;
    Ok(Json(ChallengeResponse { nonce, expires_at }))
}

fn token_response(
    access: &vibe_identity::IssuedToken,
    refresh: &refresh::IssuedRefresh,
) -> Json<TokenResponse> {
    Json(TokenResponse {
        access_token: access.token.clone(),
        access_token_expires_in: access.claims.exp,
        refresh_token: refresh.token.clone(),
        refresh_token_expires_at: refresh.expires_at,
        token_type: BEARER.into(),
    })
}

/// `POST /api/v1/auth/login` `{did, nonce, timestamp, signature, client?}` → token response;
/// `client: "console"` marks the session as the console's (the page signing in with the key
/// file).
async fn login(
    State(state): State<AppState>,
    StrictJson(body): StrictJson<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    state.tokens.throttle()?;
    let did_text = non_empty(&body.did, "did")?;
    let nonce = non_empty(&body.nonce, "nonce")?;
    let timestamp = non_empty(&body.timestamp, "timestamp")?;
    let signature = non_empty(&body.signature, "signature")?;
    if !super::did_shaped(did_text) {
        return Err(ApiError::Validation("'did' must be a did:vibe DID.".into()));
    }

    let db = state.system_db().await?;
    let owner = state
        .owner()
        .ok_or_else(|| ApiError::Unauthorized("This instance has no owner yet.".into()))?;
    // A well-formed DID that names no key is not the owner either.
    let did = Did::parse(did_text)
        .ok()
        .filter(|did| *did == owner)
        .ok_or_else(|| {
            ApiError::Unauthorized("Identity is not the owner of this instance.".into())
        })?;
    let message = vibe_identity::signed::login_message(did_text, nonce, timestamp);
    if vibe_identity::signed::verify_signature(&did, &message, signature).is_err() {
        return Err(ApiError::Unauthorized(
            "Invalid signature or authentication failed.".into(),
        ));
    }
    let skew = chrono::Duration::from_std(state.config.limits.login_skew)
        .unwrap_or(vibe_identity::signed::DEFAULT_CLOCK_SKEW);
    if vibe_identity::signed::check_timestamp(timestamp, Utc::now(), skew).is_err() {
        return Err(ApiError::BadRequest(
            "Request timestamp is invalid or expired.".into(),
        ));
    }
    if !nonces::spend(&db, nonce).await? {
        return Err(ApiError::Unauthorized(
            "Invalid, expired or already used nonce.".into(),
        ));
    }
    let refresh = refresh::start_family_as(
        &db,
        did_text,
        state.config.limits.refresh_token_ttl.as_secs(),
        body.client.map(LoginClient::as_str),
    )
    .await?;
    let access = state.tokens.issue_access(&owner, &refresh.family)?;
    tracing::info!("owner logged in");
    Ok(token_response(&access, &refresh))
}

/// `POST /api/v1/auth/refresh` `{refreshToken}` → token response (rotation).
async fn refresh_tokens(
    State(state): State<AppState>,
    StrictJson(body): StrictJson<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let token = non_empty(&body.refresh_token, "refreshToken")?;
    let db = state.system_db().await?;
    let owner = state
        .owner()
        .ok_or_else(|| ApiError::Unauthorized("Invalid refresh token.".into()))?;
    let rotated = refresh::rotate(
        &db,
        token,
        state.config.limits.refresh_token_ttl.as_secs(),
        |family| state.tokens.revoke_family(family),
    )
    .await?;
    let access = state.tokens.issue_access(&owner, &rotated.refresh.family)?;
    Ok(token_response(&access, &rotated.refresh))
}

/// `POST /api/v1/auth/logout` `{refreshToken}` with the owner's bearer token → 204.
/// Revokes the refresh token's family and every access token issued in it.
async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<RefreshRequest>,
) -> ApiResult<StatusCode> {
    caller.require_owner()?;
    let token = non_empty(&body.refresh_token, "refreshToken")?;
    let db = state.system_db().await?;
    if let Some(family) = refresh::family_of(&db, token).await? {
        refresh::revoke_family(&db, &family).await?;
        state.tokens.revoke_family(&family);
        tracing::info!("refresh family revoked by logout");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Delete expired nonces now and then (spawned by `main`).
pub async fn sweep_nonces_forever(state: AppState) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(300));
    loop {
        interval.tick().await;
        let Ok(db) = state.system_db().await else {
            continue;
        };
        match nonces::sweep(&db).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "expired nonces swept"),
            Err(e) => tracing::debug!(error = %e, "nonce sweep failed"),
        }
    }
}
