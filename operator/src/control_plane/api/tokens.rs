//! Control plane tokens: EdDSA JWTs whose issuer and audience are the control plane's URL, so a
//! data plane (audience = its own URL) never accepts them. Refresh tokens belong to a rotation
//! family recorded in the registry; each can be exchanged once.

use super::error::ApiError;
use super::model::TokenDetails;
use crate::control_plane::registry::Registry;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{Duration, Utc};
use vibe_identity::{
    Claims, Did, Error as IdentityError, Keypair, TokenIssuer, TokenKind, TokenSpec, TokenVerifier,
};

/// Lifetime of an access token (the original's default).
pub const ACCESS_TOKEN_TTL: Duration = Duration::minutes(15);
/// Lifetime of a refresh token (the original's default).
pub const REFRESH_TOKEN_TTL: Duration = Duration::days(30);

/// Mints and checks control plane tokens.
#[derive(Debug)]
pub struct Tokens {
    issuer: TokenIssuer,
    verifier: TokenVerifier,
}

impl Tokens {
    /// Tokens signed with `key`, issued by and meant for `control_plane_url`.
    pub fn new(key: &Keypair, control_plane_url: &str) -> Self {
        let url = control_plane_url.trim_end_matches('/');
        Self {
            issuer: TokenIssuer::new(key, url, url),
            verifier: TokenVerifier::new(&key.public_key(), url, url),
        }
    }

    /// A new access token for `did`.
    pub fn access(&self, did: &str) -> Result<vibe_identity::IssuedToken, IdentityError> {
        self.issuer
            .issue(TokenSpec::new(did, TokenKind::Access, ACCESS_TOKEN_TTL))
    }

    /// A refresh token of `family` for `did`.
    pub fn refresh(
        &self,
        did: &str,
        family: &str,
    ) -> Result<vibe_identity::IssuedToken, IdentityError> {
        self.issuer
            .issue(TokenSpec::new(did, TokenKind::Refresh, REFRESH_TOKEN_TTL).family(family))
    }

    /// Checks a token of `kind`.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, IdentityError> {
        self.verifier.verify(token, kind)
    }

    /// Access and refresh token for a fresh sign-in (a new rotation family).
    pub async fn sign_in(
        &self,
        registry: &Registry,
        did: &str,
        public: &'static str,
    ) -> Result<TokenDetails, ApiError> {
        let family = uuid::Uuid::new_v4().simple().to_string();
        let access = self.access(did).map_err(ApiError::or_internal(public))?;
        let refresh = self
            .refresh(did, &family)
            .map_err(ApiError::or_internal(public))?;
        let expires =
            chrono::DateTime::from_timestamp(refresh.claims.exp, 0).unwrap_or_else(Utc::now);
        registry
            .start_refresh_family(&family, did, &refresh.claims.jti, expires)
            .await
            .map_err(ApiError::or_internal(public))?;
        Ok(TokenDetails::new(&access, &refresh))
    }
}

/// The caller of a bearer-authenticated route: the DID its access token speaks for.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's DID.
    pub did: String,
}

impl FromRequestParts<super::ControlPlane> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &super::ControlPlane,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Unauthorized: Missing Bearer token."))?;
        let claims = state
            .tokens
            .verify(token, TokenKind::Access)
            .map_err(|err| match err {
                IdentityError::TokenRejected(reason) => {
                    ApiError::unauthorized(format!("Unauthorized: {reason}"))
                }
                _ => ApiError::unauthorized("Unauthorized: Invalid token payload."),
            })?;
        if Did::parse(&claims.sub).is_err() {
            return Err(ApiError::unauthorized(
                "Unauthorized: Invalid token payload.",
            ));
        }
        Ok(Caller { did: claims.sub })
    }
}
