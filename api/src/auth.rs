//! Owner authentication bodies: challenge, login, refresh, logout and the owner claim.
//!
//! Request bodies refuse unknown fields; response bodies are read leniently by clients
//! (an instance may add fields).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema;

/// `POST /api/v1/auth/challenge` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeResponse {
    /// Single-use server nonce.
    pub nonce: String,
    /// When it expires (UNIX seconds).
    pub expires_at: i64,
}

/// Body of `POST /api/v1/auth/login`: the owner's signature over `did|nonce|timestamp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    /// The owner's did:vibe (an Ed25519 key, multibase base58btc).
    #[schemars(regex(pattern = schema::DID_VIBE), example = schema::DID_VIBE_EXAMPLE)]
    pub did: String,
    /// The nonce from `POST /api/v1/auth/challenge`.
    #[schemars(length(min = 1, max = 4096))]
    pub nonce: String,
    /// RFC 3339 time of signing.
    #[schemars(schema_with = "schema::date_time")]
    pub timestamp: String,
    /// Standard base64 Ed25519 signature of `did|nonce|timestamp`.
    #[schemars(length(min = 1, max = 4096))]
    pub signature: String,
    /// Which kind of client will hold the session: absent for a signed login of the CLI or
    /// an agent; `console` for the owner console signing in with the key file in the page.
    /// It only names the session in the console's list (`kind`); the session is the same.
    /// Not signed: it grants nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<LoginClient>,
}

/// The kinds of client a login may name (its `client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LoginClient {
    /// The owner console page (`/console/`), signing in with the owner's key file.
    Console,
}

impl LoginClient {
    /// The name stored on the session (the console's session `kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Console => "console",
        }
    }
}

/// Body of `POST /api/v1/auth/refresh` and `POST /api/v1/auth/logout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshRequest {
    /// The session's current refresh token.
    #[schemars(length(min = 1, max = 4096))]
    pub refresh_token: String,
}

/// Token response of login and refresh. Expiry fields are absolute UNIX seconds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// Access token: an EdDSA JWT whose issuer and audience are the instance's public URL.
    pub access_token: String,
    /// When the access token expires (UNIX seconds, despite the name — the original's).
    pub access_token_expires_in: i64,
    /// Refresh token (rotated on every use).
    pub refresh_token: String,
    /// When the refresh token expires (UNIX seconds).
    pub refresh_token_expires_at: i64,
    /// Always `Bearer`.
    #[serde(default = "bearer")]
    #[schemars(schema_with = "schema::bearer")]
    pub token_type: String,
}

/// The token type every token response names.
pub const BEARER: &str = "Bearer";

fn bearer() -> String {
    BEARER.to_string()
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token_expires_in", &self.access_token_expires_in)
            .field("refresh_token_expires_at", &self.refresh_token_expires_at)
            .finish_non_exhaustive()
    }
}

/// Body of `POST /api/v1/admin/claim`: the claim code signed by the new owner's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimRequest {
    /// The claimer's did:vibe (an Ed25519 key, multibase base58btc).
    #[schemars(regex(pattern = schema::DID_VIBE), example = schema::DID_VIBE_EXAMPLE)]
    pub did: String,
    /// The code the instance was started with.
    #[schemars(length(min = 1, max = 1024))]
    pub claim_code: String,
    /// Standard base64 Ed25519 signature of the claim code.
    #[schemars(length(min = 1, max = 1024))]
    pub signature: String,
}

/// `POST /api/v1/admin/claim` answer (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimResponse {
    /// `Admin account claimed successfully.`
    pub message: String,
    /// The new owner's DID.
    pub user_did: String,
    /// Always `true`.
    pub is_admin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{BodyError, from_slice};

    #[test]
    fn requests_refuse_unknown_fields_and_keep_the_wire_names() {
        let login: LoginRequest =
            from_slice(br#"{"did":"d","nonce":"n","timestamp":"t","signature":"s"}"#).unwrap();
        assert_eq!(login.did, "d");
        assert_eq!(login.client, None);
        let console: LoginRequest = from_slice(
            br#"{"did":"d","nonce":"n","timestamp":"t","signature":"s","client":"console"}"#,
        )
        .unwrap();
        assert_eq!(console.client, Some(LoginClient::Console));
        assert_eq!(
            serde_json::to_value(&console).unwrap()["client"],
            serde_json::json!("console")
        );
        assert!(
            from_slice::<LoginRequest>(
                br#"{"did":"d","nonce":"n","timestamp":"t","signature":"s","client":"agent"}"#
            )
            .is_err()
        );
        let extra = from_slice::<LoginRequest>(
            br#"{"did":"d","nonce":"n","timestamp":"t","signature":"s","x":1}"#,
        );
        assert_eq!(extra, Err(BodyError::Invalid("Unknown field 'x'.".into())));
        let refresh: RefreshRequest = from_slice(br#"{"refreshToken":"r"}"#).unwrap();
        assert_eq!(refresh.refresh_token, "r");
        let claim: ClaimRequest =
            from_slice(br#"{"did":"d","claimCode":"c","signature":"s"}"#).unwrap();
        assert_eq!(claim.claim_code, "c");
    }

    #[test]
    fn token_responses_name_their_fields_like_the_original() {
        let tokens = TokenResponse {
            access_token: "a".into(),
            access_token_expires_in: 1,
            refresh_token: "r".into(),
            refresh_token_expires_at: 2,
            token_type: BEARER.into(),
        };
        let text = serde_json::to_value(&tokens).unwrap();
        assert_eq!(
            text,
            serde_json::json!({"accessToken":"a","accessTokenExpiresIn":1,"refreshToken":"r",
                "refreshTokenExpiresAt":2,"tokenType":"Bearer"})
        );
        assert!(!format!("{tokens:?}").contains("\"a\""));
    }
}
