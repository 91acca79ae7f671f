//! Authentication of requests and the owner's login flows.
//!
//! The [`Caller`] extractor authenticates `Authorization: Bearer <token>`:
//! - an **owner access token** (from `/api/v1/auth/login` or `/refresh`). With an
//!   `X-Vibe-App-ID` header it acts as that app (agent mode); without one it is the owner
//!   itself (owner-only routes such as `/api/v1/apps/*`).
//! - an **app token** (from `/api/v1/apps/token`): acts as its bound app only; an
//!   `X-Vibe-App-ID` naming another app is refused with 403.
//!
//! Then [`Caller::require`] checks a grant (`read:<c>`, `blob:write:<c>`, …) against the
//! in-memory grants cache, and [`Caller::require_owner`] guards owner-only routes.
//! WebSocket and other non-header transports call [`authenticate`] directly.

pub mod claim;
mod nonces;
mod refresh;
mod routes;
pub mod tokens;

pub use routes::{routes, sweep_nonces_forever};

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use vibe_identity::{Claims, Did, TokenKind};

use crate::apps::AppRecord;
use crate::error::{ApiError, ApiResult, UNAUTHORIZED_TOKEN};
use crate::state::AppState;

/// The header naming the app an owner token acts for.
pub const APP_ID_HEADER: &str = "x-vibe-app-id";

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// Owner access token (possibly acting as an app through `X-Vibe-App-ID`).
    Owner,
    /// App-bound token.
    App,
}

/// An authenticated request: the instance owner, possibly acting as an app.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The owner's DID (tokens of any other subject are refused).
    pub did: Did,
    /// Owner token or app token.
    pub kind: CallerKind,
    /// The app this request acts as, if any.
    pub app_id: Option<String>,
    /// The token's claims.
    pub claims: Claims,
    app: Option<Arc<AppRecord>>,
}

impl Caller {
    /// 403 unless the caller used an owner token (app tokens cannot manage apps etc.).
    pub fn require_owner(&self) -> ApiResult<()> {
        match self.kind {
            CallerKind::Owner => Ok(()),
            CallerKind::App => Err(ApiError::Forbidden(
                "Forbidden: This operation requires an owner token.".into(),
            )),
        }
    }

    /// The acting app id; 400 `Bad Request: Missing X-Vibe-App-ID header.` when an owner
    /// token was sent without the header.
    pub fn acting_app(&self) -> ApiResult<&str> {
        self.app_id.as_deref().ok_or_else(|| {
            ApiError::BadRequest("Bad Request: Missing X-Vibe-App-ID header.".into())
        })
    }

    /// Whether the acting app holds `permission` with `always` (false without an app).
    pub fn allows(&self, permission: &str) -> bool {
        self.app.as_ref().is_some_and(|app| app.allows(permission))
    }

    /// Require an acting app holding `permission` with `always`: 400 without an app,
    /// 403 `Forbidden: Application does not have permission '<p>' for this user.` otherwise.
    pub fn require(&self, permission: &str) -> ApiResult<()> {
        self.acting_app()?;
        if self.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::missing_permission(permission))
        }
    }
}

/// Authenticate a bearer `token`, with the app id the client names (header or query), if
/// any. Used by the [`Caller`] extractor and by transports without headers (WebSocket).
pub async fn authenticate(
    state: &AppState,
    token: &str,
    requested_app: Option<&str>,
) -> ApiResult<Caller> {
    let claims = state.tokens.verify(token)?;
    // The owner may come from the system database (claimed instance): load it first.
    state.system_db().await?;
    let owner = state
        .owner()
        .ok_or_else(|| ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into()))?;
    if claims.sub != owner.to_string() {
        return Err(ApiError::Forbidden(
            "Forbidden: Token identity does not match this instance.".into(),
        ));
    }
    let requested_app = requested_app.map(str::trim).filter(|a| !a.is_empty());
    let (kind, app_id) = match claims.kind {
        TokenKind::App => {
            let bound = claims.app.clone().unwrap_or_default();
            if requested_app.is_some_and(|a| a != bound) {
                return Err(ApiError::Forbidden(
                    "Forbidden: Token is bound to another application.".into(),
                ));
            }
            (CallerKind::App, Some(bound))
        }
        _ => (CallerKind::Owner, requested_app.map(str::to_string)),
    };
    let app = app_id.as_deref().and_then(|id| state.grants.get(id));
    Ok(Caller {
        did: owner,
        kind,
        app_id,
        claims,
        app,
    })
}

/// The bearer token of a request, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers)
            .ok_or_else(|| ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into()))?;
        let app = parts
            .headers
            .get(APP_ID_HEADER)
            .map(|v| {
                v.to_str().map_err(|_| {
                    ApiError::BadRequest("Bad Request: Invalid X-Vibe-App-ID header.".into())
                })
            })
            .transpose()?;
        authenticate(state, token, app).await
    }
}
