//! Authentication of requests and the owner's login flows.
//!
//! The [`Caller`] extractor authenticates `Authorization: Bearer <token>`:
//! - an **owner access token** (from `/api/v1/auth/login` or `/refresh`). With an
//!   `X-Vibe-App-ID` header it acts as that app (agent mode); without one it is the owner
//!   itself (owner-only routes such as `/api/v1/apps/*`).
//! - an **app token** (from `/api/v1/apps/token`): acts as its bound app only; an
//!   `X-Vibe-App-ID` naming another app is refused with 403. It dies with the owner
//!   session (refresh family) that minted it and with the app registration it was minted
//!   for: deleting the app, also when the same app id is registered again, ends it.
//! - a **device** credential ([`authenticate_device`], sync only): see [`crate::devices`].
//!
//! Then [`Caller::require`] checks a grant (`read:<c>`, `blob:write:<c>`, …) against the
//! in-memory grants cache, and [`Caller::require_owner`] guards owner-only routes.
//! WebSocket and other non-header transports call [`authenticate`] directly. Long-lived
//! streams (WebSocket, continuous and longpoll sync feeds) also wait on [`until_revoked`]
//! so a revocation ends them within a second. Every request authenticated as a registered
//! app or as a device notes it as seen ([`crate::last_seen`]; memory only, never waiting).

pub mod claim;
mod nonces;
pub(crate) mod refresh;
mod routes;
pub mod tokens;
mod verified;

pub use routes::{routes, sweep_nonces_forever};

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use vibe_identity::{Claims, Did, TokenKind};

use crate::apps::AppRecord;
use crate::devices::DeviceRecord;
use crate::error::{ApiError, ApiResult, UNAUTHORIZED_TOKEN};
use crate::last_seen::Seen;
use crate::state::{AppState, now_unix};

/// The header naming the app an owner token acts for.
pub const APP_ID_HEADER: &str = "x-vibe-app-id";

/// Whether `text` has the shape of a `did:vibe` DID: `did:vibe:z6Mk` and 44 base58btc
/// characters — what every Ed25519 key encodes to, and exactly the OpenAPI document's
/// pattern for DIDs in request bodies. Not every such text is a key (wrong multicodec or
/// length after decoding, not a curve point): callers refuse those as a wrong identity or
/// signature, not as malformed input.
pub(crate) fn did_shaped(text: &str) -> bool {
    text.strip_prefix("did:vibe:z6Mk").is_some_and(|rest| {
        rest.len() == 44
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l'))
    })
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// Owner access token (possibly acting as an app through `X-Vibe-App-ID`).
    Owner,
    /// App-bound token.
    App,
    /// A registered device's credential (sync only; see [`crate::devices`]).
    Device,
}

/// What the caller presented.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A verified access or app token.
    Token(Claims),
    /// A trusted device.
    Device(Arc<DeviceRecord>),
}

/// An authenticated request: the instance owner, possibly acting as an app.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The owner's DID (tokens of any other subject are refused).
    pub did: Did,
    /// Owner token, app token or device.
    pub kind: CallerKind,
    /// The app this request acts as, if any.
    pub app_id: Option<String>,
    /// The token's claims or the device.
    pub credential: Credential,
    app: Option<Arc<AppRecord>>,
}

impl Caller {
    /// 403 unless the caller used an owner token (app tokens cannot manage apps etc.).
    pub fn require_owner(&self) -> ApiResult<()> {
        match self.kind {
            CallerKind::Owner => Ok(()),
            CallerKind::App | CallerKind::Device => Err(ApiError::Forbidden(
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

    /// Whether the acting app holds `permission` with `always` (false without an app),
    /// and, for a device, whether its scopes include it.
    pub fn allows(&self, permission: &str) -> bool {
        self.app.as_ref().is_some_and(|app| app.allows(permission)) && self.scoped(permission)
    }

    /// Whether the credential's own scope covers `permission` (tokens: always; devices:
    /// their scopes).
    pub fn scoped(&self, permission: &str) -> bool {
        match &self.credential {
            Credential::Token(_) => true,
            Credential::Device(device) => device.has_scope(permission),
        }
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

    /// The registration of the acting app as it stood when the caller was authenticated
    /// (or [`Caller::refreshed`]).
    pub fn app(&self) -> Option<&Arc<AppRecord>> {
        self.app.as_ref()
    }

    /// The token's claims (none for a device).
    pub fn claims(&self) -> Option<&Claims> {
        match &self.credential {
            Credential::Token(claims) => Some(claims),
            Credential::Device(_) => None,
        }
    }

    /// The refresh family of the owner session behind the credential, if any.
    pub fn family(&self) -> Option<&str> {
        self.claims().and_then(|c| c.family.as_deref())
    }

    /// When the credential expires (UNIX seconds); `None`: while trusted (devices).
    pub fn expires_at(&self) -> Option<i64> {
        self.claims().map(|c| c.exp)
    }

    /// The caller as it stands now: the same credential checked again against revoked
    /// families, app registrations and devices, with the app's current grants. Long-lived
    /// streams call it whenever something was revoked; `Err` means the credential is dead.
    pub fn refreshed(&self, state: &AppState) -> ApiResult<Caller> {
        if self.expires_at().is_some_and(|exp| exp <= now_unix()) {
            return Err(ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into()));
        }
        if self
            .family()
            .is_some_and(|family| state.tokens.is_family_revoked(family))
        {
            return Err(ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into()));
        }
        match &self.credential {
            Credential::Token(claims) => {
                let app = bound_app(state, self.kind, claims, self.app_id.as_deref())?;
                Ok(Caller {
                    app,
                    ..self.clone()
                })
            }
            Credential::Device(device) => {
                let device = state
                    .devices
                    .get(&device.device_id)
                    .filter(|current| current.secret_hash == device.secret_hash)
                    .ok_or_else(|| ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into()))?;
                device_caller(state, self.did, device, self.app_id.as_deref())
            }
        }
    }
}

/// The app record an authenticated token acts with. An app token must fit the app's
/// current registration: deleted, or deleted and registered again, means 401.
fn bound_app(
    state: &AppState,
    kind: CallerKind,
    claims: &Claims,
    app_id: Option<&str>,
) -> ApiResult<Option<Arc<AppRecord>>> {
    let app = app_id.and_then(|id| state.grants.get(id));
    if kind == CallerKind::App {
        let fits = app.as_ref().is_some_and(|app| {
            claims
                .reg
                .as_deref()
                .is_some_and(|reg| reg == app.registration_id())
        });
        if !fits {
            tracing::debug!("app token of a deleted or replaced app registration");
            return Err(ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into()));
        }
    }
    Ok(app)
}

/// Authenticate a bearer `token`, with the app id the client names (header or query), if
/// any. Used by the [`Caller`] extractor and by transports without headers (WebSocket).
pub async fn authenticate(
    state: &AppState,
    token: &str,
    requested_app: Option<&str>,
) -> ApiResult<Caller> {
    let claims = state.tokens.verify(token)?;
    let owner = owner_of_instance(state).await?;
    // Stored revocations are loaded with the system database: a request that arrived
    // before that (just after a start) is checked again now.
    if claims
        .family
        .as_deref()
        .is_some_and(|family| state.tokens.is_family_revoked(family))
    {
        return Err(ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into()));
    }
    if !state.is_owner_text(&claims.sub) {
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
    let app = bound_app(state, kind, &claims, app_id.as_deref())?;
    if let Some(app) = &app {
        state.last_seen.touch(Seen::App, &app.app_id);
    }
    Ok(Caller {
        did: owner,
        kind,
        app_id,
        credential: Credential::Token(claims),
        app,
    })
}

/// Authenticate a device by its id and secret (sync's Basic credentials).
pub async fn authenticate_device(
    state: &AppState,
    device_id: &str,
    secret: &str,
    requested_app: Option<&str>,
) -> ApiResult<Caller> {
    let owner = owner_of_instance(state).await?;
    let device = state.devices.verify(device_id, secret).ok_or_else(|| {
        tracing::debug!("unknown device or wrong device secret");
        ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into())
    })?;
    let requested_app = requested_app.map(str::trim).filter(|a| !a.is_empty());
    let caller = device_caller(state, owner, device, requested_app)?;
    if let Credential::Device(device) = &caller.credential {
        state.last_seen.touch(Seen::Device, &device.device_id);
    }
    if let Some(app) = &caller.app {
        state.last_seen.touch(Seen::App, &app.app_id);
    }
    Ok(caller)
}

fn device_caller(
    state: &AppState,
    owner: Did,
    device: Arc<DeviceRecord>,
    requested_app: Option<&str>,
) -> ApiResult<Caller> {
    if requested_app.is_some_and(|a| Some(a) != device.app_id.as_deref()) {
        return Err(ApiError::Forbidden(
            "Forbidden: Device is bound to another application.".into(),
        ));
    }
    let app = match &device.app_id {
        None => None,
        Some(app_id) => {
            let app = state
                .grants
                .get(app_id)
                .filter(|app| device.app_registration.as_deref() == Some(&app.registration_id()))
                .ok_or_else(|| {
                    tracing::debug!("device of a deleted or replaced app registration");
                    ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into())
                })?;
            Some(app)
        }
    };
    Ok(Caller {
        did: owner,
        kind: CallerKind::Device,
        app_id: device.app_id.clone(),
        credential: Credential::Device(device),
        app,
    })
}

/// The instance's owner, loaded from the system database when the instance was claimed.
async fn owner_of_instance(state: &AppState) -> ApiResult<Did> {
    state.system_db().await?;
    state
        .owner()
        .ok_or_else(|| ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into()))
}

/// Whether the acting app lost a grant between two states of a caller: one it held
/// `before` is not held `after`, or the app is gone. Granting more is no revocation.
pub fn grants_revoked(before: Option<&AppRecord>, after: Option<&AppRecord>) -> bool {
    match (before, after) {
        (Some(before), Some(after)) => before.revoked_in(after),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Completes once `caller` may no longer do what a long-lived stream serves it: its
/// credential expired or was revoked (logout, refresh-token reuse, app registration
/// deleted or replaced, device revoked), its app lost any grant it held while the stream
/// was open (the owner revoked one: the stream ends as with the other revocations, and
/// a new request is checked against what is left), or `still_allowed` fails for the
/// caller with its current grants. Woken by every revocation and grant change, so it
/// fires within milliseconds of the revoking request; the per-request check stays the
/// authority.
pub async fn until_revoked(state: AppState, caller: Caller, still_allowed: fn(&Caller) -> bool) {
    let mut revocations = state.tokens.revocations();
    let mut grants = state.grants.subscribe();
    let expiry = caller.expires_at();
    // The grants the stream has been served under: those at authentication, then each
    // later state that took nothing away (a grant added, then revoked, ends it too).
    let mut held = caller.app.clone();
    loop {
        match caller.refreshed(&state) {
            Ok(current)
                if still_allowed(&current)
                    && !grants_revoked(held.as_deref(), current.app.as_deref()) =>
            {
                held = current.app;
            }
            _ => return,
        }
        let expired = async {
            match expiry {
                Some(exp) => {
                    let left = exp.saturating_sub(now_unix()).max(0) as u64;
                    tokio::time::sleep(std::time::Duration::from_secs(left)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = revocations.changed() => if changed.is_err() {
                std::future::pending::<()>().await
            },
            _ = grants.recv() => {}
            _ = expired => return,
        }
    }
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
