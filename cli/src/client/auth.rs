//! Owner authentication: challenge → sign `did|nonce|timestamp` → login; refresh,
//! logout and the owner claim.

use reqwest::Method;
use serde_json::json;
use vibe_api::auth::{
    ChallengeResponse, ClaimRequest, ClaimResponse, LoginRequest, RefreshRequest, TokenResponse,
};
use vibe_identity::Keypair;
use vibe_identity::signed::{admin_claim_message, login_message};

use super::{Instance, send, send_json};
use crate::error::Result;

/// `POST /api/v1/auth/challenge` answer.
pub type Challenge = ChallengeResponse;

/// Token response of login and refresh (the session the client keeps).
pub type Tokens = TokenResponse;

/// Sign a login for `key` with `nonce`, timestamped now.
pub fn sign_login(key: &Keypair, nonce: &str) -> LoginRequest {
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    sign_login_at(key, nonce, &timestamp)
}

/// Sign a login for `key` with `nonce` and a given `timestamp`.
pub fn sign_login_at(key: &Keypair, nonce: &str, timestamp: &str) -> LoginRequest {
    let did = key.did().to_string();
    let signature = key.sign_base64(&login_message(&did, nonce, timestamp));
    LoginRequest {
        did,
        nonce: nonce.to_string(),
        timestamp: timestamp.to_string(),
        signature,
        client: None,
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
        self.login_with(&sign_login(key, &challenge.nonce)).await
    }

    /// `POST /api/v1/auth/refresh`: rotates the refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens> {
        send_json(
            self.request(Method::POST, "api/v1/auth/refresh")
                .json(&RefreshRequest {
                    refresh_token: refresh_token.to_string(),
                }),
            "POST /api/v1/auth/refresh",
        )
        .await
    }

    /// `POST /api/v1/auth/logout`: revokes the session's refresh-token family.
    pub async fn logout(&self, tokens: &Tokens) -> Result<()> {
        send(
            self.request(Method::POST, "api/v1/auth/logout")
                .bearer_auth(&tokens.access_token)
                .json(&RefreshRequest {
                    refresh_token: tokens.refresh_token.clone(),
                }),
            "POST /api/v1/auth/logout",
        )
        .await?;
        Ok(())
    }

    /// `POST /api/v1/admin/claim`: become the owner of an unclaimed instance with its
    /// claim code (signed by `key`).
    pub async fn claim(&self, key: &Keypair, claim_code: &str) -> Result<ClaimResponse> {
        let body = ClaimRequest {
            did: key.did().to_string(),
            claim_code: claim_code.to_string(),
            signature: key.sign_base64(&admin_claim_message(claim_code)),
        };
        send_json(
            self.request(Method::POST, "api/v1/admin/claim").json(&body),
            "POST /api/v1/admin/claim",
        )
        .await
    }
}
