//! Owner authentication: challenge → sign `did|nonce|timestamp` → login; refresh,
//! logout and the owner claim.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vibe_identity::Keypair;
use vibe_identity::signed::{admin_claim_message, login_message};

use super::{Instance, send, send_json};
use crate::error::Result;

/// `POST /api/v1/auth/challenge` answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Challenge {
    /// Single-use server nonce.
    pub nonce: String,
    /// When it expires (UNIX seconds).
    pub expires_at: i64,
}

/// Body of `POST /api/v1/auth/login`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    /// The owner's DID.
    pub did: String,
    /// The nonce from the challenge.
    pub nonce: String,
    /// RFC 3339 time of signing.
    pub timestamp: String,
    /// Base64 Ed25519 signature over `did|nonce|timestamp`.
    pub signature: String,
}

impl LoginRequest {
    /// Sign a login for `key` with `nonce`, timestamped now.
    pub fn sign(key: &Keypair, nonce: &str) -> Self {
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Self::sign_at(key, nonce, &timestamp)
    }

    /// Sign a login for `key` with `nonce` and a given `timestamp`.
    pub fn sign_at(key: &Keypair, nonce: &str, timestamp: &str) -> Self {
        let did = key.did().to_string();
        let signature = key.sign_base64(&login_message(&did, nonce, timestamp));
        Self {
            did,
            nonce: nonce.to_string(),
            timestamp: timestamp.to_string(),
            signature,
        }
    }
}

/// Token response of login and refresh. Expiry fields are absolute UNIX seconds.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Tokens {
    /// Access token (EdDSA JWT, 15 minutes).
    pub access_token: String,
    /// When the access token expires (UNIX seconds, despite the name — the original's).
    pub access_token_expires_in: i64,
    /// Refresh token (rotated on every use).
    pub refresh_token: String,
    /// When the refresh token expires (UNIX seconds).
    pub refresh_token_expires_at: i64,
    /// Always `Bearer`.
    #[serde(default = "bearer")]
    pub token_type: String,
}

fn bearer() -> String {
    "Bearer".to_string()
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token_expires_in", &self.access_token_expires_in)
            .field("refresh_token_expires_at", &self.refresh_token_expires_at)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// `POST /api/v1/auth/challenge`.
    pub async fn challenge(&self) -> Result<Challenge> {
        send_json(
            self.request(Method::POST, "api/v1/auth/challenge")
                .json(&json!({})),
            "POST /api/v1/auth/challenge",
        )
        .await
    }

    /// `POST /api/v1/auth/login` with a prepared body.
    pub async fn login_with(&self, body: &LoginRequest) -> Result<Tokens> {
        send_json(
            self.request(Method::POST, "api/v1/auth/login").json(body),
            "POST /api/v1/auth/login",
        )
        .await
    }

    /// The whole owner login: challenge, sign, login.
    pub async fn login(&self, key: &Keypair) -> Result<Tokens> {
        let challenge = self.challenge().await?;
        self.login_with(&LoginRequest::sign(key, &challenge.nonce))
            .await
    }

    /// `POST /api/v1/auth/refresh`: rotates the refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens> {
        send_json(
            self.request(Method::POST, "api/v1/auth/refresh")
                .json(&json!({ "refreshToken": refresh_token })),
            "POST /api/v1/auth/refresh",
        )
        .await
    }

    /// `POST /api/v1/auth/logout`: revokes the session's refresh-token family.
    pub async fn logout(&self, tokens: &Tokens) -> Result<()> {
        send(
            self.request(Method::POST, "api/v1/auth/logout")
                .bearer_auth(&tokens.access_token)
                .json(&json!({ "refreshToken": tokens.refresh_token })),
            "POST /api/v1/auth/logout",
        )
        .await?;
        Ok(())
    }

    /// `POST /api/v1/admin/claim`: become the owner of an unclaimed instance with its
    /// claim code (signed by `key`).
    pub async fn claim(&self, key: &Keypair, claim_code: &str) -> Result<Value> {
        let body = json!({
            "did": key.did().to_string(),
            "claimCode": claim_code,
            "signature": key.sign_base64(&admin_claim_message(claim_code)),
        });
        send_json(
            self.request(Method::POST, "api/v1/admin/claim").json(&body),
            "POST /api/v1/admin/claim",
        )
        .await
    }
}
