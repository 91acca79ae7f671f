//! EdDSA (Ed25519) JSON Web Tokens.
//!
//! Issuing and verifying are separate types so a service that only checks
//! tokens never holds a signing key. Verification pins the algorithm to EdDSA,
//! refuses headers that point at key material (`jku`, `jwk`, `x5u`, `x5c`),
//! ignores `kid` for key selection, and checks `iss`, `aud`, `exp`, `nbf` and the
//! token kind.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, Utc};
use ed25519_dalek::VerifyingKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{Error, Keypair, TokenRejection};

/// What a token is for. Carried in the `kind` claim; a verifier accepts one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Short-lived token for the owner (or an admin) to call an API.
    Access,
    /// Long-lived token exchanged for a new access token, single use.
    Refresh,
    /// Access token bound to one app (`app` claim): it can act only as that app.
    App,
}

/// The claims of every Vibe token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the public URL of the instance or control plane that minted it.
    pub iss: String,
    /// Subject: the DID the token speaks for.
    pub sub: String,
    /// Audience: the public URL of the service meant to accept it.
    pub aud: String,
    /// Expiry, UNIX seconds.
    pub exp: i64,
    /// Not valid before, UNIX seconds.
    pub nbf: i64,
    /// Issued at, UNIX seconds.
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
    /// What the token is for.
    pub kind: TokenKind,
    /// For [`TokenKind::App`]: the app the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The rotation family the token belongs to: for [`TokenKind::Refresh`] its own,
    /// for access and app tokens the family of the session that minted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// For [`TokenKind::App`]: the registration of the app it was minted for (an app
    /// deleted and registered again is a new registration, which the token does not fit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reg: Option<String>,
}

/// What to put in a new token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    subject: String,
    kind: TokenKind,
    lifetime: Duration,
    app: Option<String>,
    family: Option<String>,
    registration: Option<String>,
    issued_at: Option<i64>,
    not_before: Option<i64>,
}

impl TokenSpec {
    /// A token of `kind` for `subject`, valid for `lifetime` from now.
    pub fn new(subject: impl Into<String>, kind: TokenKind, lifetime: Duration) -> Self {
        Self {
            subject: subject.into(),
            kind,
            lifetime,
            app: None,
            family: None,
            registration: None,
            issued_at: None,
            not_before: None,
        }
    }

    /// Binds the token to an app.
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.app = Some(app.into());
        self
    }

    /// Places a refresh token in a rotation family.
    pub fn family(mut self, family: impl Into<String>) -> Self {
        self.family = Some(family.into());
        self
    }

    /// Binds an app token to one registration of its app (the `reg` claim).
    pub fn registration(mut self, registration: impl Into<String>) -> Self {
        self.registration = Some(registration.into());
        self
    }

    /// Pretends the token was issued at `unix_seconds` (tests and clock control).
    pub fn issued_at(mut self, unix_seconds: i64) -> Self {
        self.issued_at = Some(unix_seconds);
        self
    }

    /// Makes the token valid only from `unix_seconds` on.
    pub fn not_before(mut self, unix_seconds: i64) -> Self {
        self.not_before = Some(unix_seconds);
        self
    }
}

/// A freshly minted token and the claims inside it.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWS.
    pub token: String,
    /// What it says.
    pub claims: Claims,
}

/// Mints tokens for one issuer and audience with one Ed25519 key.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer signing with `key`, writing `iss` = `issuer` and `aud` = `audience`.
    pub fn new(key: &Keypair, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            key: EncodingKey::from_ed_der(&key.pkcs8_der()),
            issuer: issuer.into(),
            audience: audience.into(),
        }
    }

    /// Signs a token described by `spec`.
    pub fn issue(&self, spec: TokenSpec) -> Result<IssuedToken, Error> {
        let iat = spec.issued_at.unwrap_or_else(|| Utc::now().timestamp());
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: spec.subject,
            aud: self.audience.clone(),
            exp: iat + spec.lifetime.num_seconds(),
            nbf: spec.not_before.unwrap_or(iat),
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            kind: spec.kind,
            app: spec.app,
            family: spec.family,
            reg: spec.registration,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("JWT".into());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| Error::TokenSigning)?;
        Ok(IssuedToken { token, claims })
    }
}

/// Checks tokens for one issuer and audience against trusted public keys.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Vec<DecodingKey>,
    issuer: String,
    audience: String,
    leeway_seconds: u64,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The allowed clock difference when checking `exp` and `nbf`, by default.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;

/// Header fields that reference key material, which a verifier must not follow.
const KEY_REFERENCE_HEADERS: [&str; 4] = ["jku", "jwk", "x5u", "x5c"];

impl TokenVerifier {
    /// A verifier trusting `key` for tokens from `issuer` meant for `audience`.
    pub fn new(key: &VerifyingKey, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            keys: vec![DecodingKey::from_ed_der(key.as_bytes())],
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
        }
    }

    /// Also trusts `key` (for key rotation: old and new keys side by side).
    pub fn also_trust(mut self, key: &VerifyingKey) -> Self {
        self.keys.push(DecodingKey::from_ed_der(key.as_bytes()));
        self
    }

    /// Sets the clock leeway for `exp` and `nbf`.
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway_seconds = seconds;
        self
    }

    /// Verifies `token` and returns its claims when it is a valid token of `kind`.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, Error> {
        check_header(token)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = self.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);

        let mut last = TokenRejection::BadSignature;
        for key in &self.keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) if data.claims.kind == kind => return Ok(data.claims),
                Ok(_) => return Err(TokenRejection::WrongKind.into()),
                Err(err) => {
                    last = rejection(err.kind());
                    if last != TokenRejection::BadSignature {
                        break;
                    }
                }
            }
        }
        Err(last.into())
    }
}

/// Refuses any algorithm but EdDSA and any key-referencing header before the
/// library sees the token.
fn check_header(token: &str) -> Result<(), Error> {
    let encoded = token.split('.').next().ok_or(TokenRejection::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenRejection::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenRejection::Malformed)?;
    if header.get("alg").and_then(|alg| alg.as_str()) != Some("EdDSA") {
        return Err(TokenRejection::DisallowedAlgorithm.into());
    }
    if KEY_REFERENCE_HEADERS
        .iter()
        .any(|name| header.contains_key(*name))
    {
        return Err(TokenRejection::UntrustedKeyReference.into());
    }
    Ok(())
}

fn rejection(kind: &ErrorKind) -> TokenRejection {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidEddsaKey => TokenRejection::BadSignature,
        ErrorKind::ExpiredSignature => TokenRejection::Expired,
        ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
        ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
        ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => TokenRejection::DisallowedAlgorithm,
        ErrorKind::MissingRequiredClaim(_) => TokenRejection::MissingClaim,
        _ => TokenRejection::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://alice.vibe.example";

    fn setup() -> (Keypair, TokenIssuer, TokenVerifier) {
        let key = Keypair::generate();
        let issuer = TokenIssuer::new(&key, ISSUER, ISSUER);
        let verifier = TokenVerifier::new(&key.public_key(), ISSUER, ISSUER);
        (key, issuer, verifier)
    }

    fn access(subject: &str) -> TokenSpec {
        TokenSpec::new(subject, TokenKind::Access, Duration::minutes(15))
    }

    fn rejected(result: Result<Claims, Error>) -> TokenRejection {
        match result {
            Err(Error::TokenRejected(reason)) => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn segments(token: &str) -> (serde_json::Value, serde_json::Value, String) {
        let mut parts = token.split('.');
        let header = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        let payload = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
        (
            serde_json::from_slice(&header).unwrap(),
            serde_json::from_slice(&payload).unwrap(),
            parts.next().unwrap().to_owned(),
        )
    }

    fn encode_json(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    #[test]
    fn valid_tokens_verify_with_all_claims() {
        let (key, issuer, verifier) = setup();
        let did = key.did().to_string();
        let issued = issuer.issue(access(&did)).unwrap();
        let claims = verifier.verify(&issued.token, TokenKind::Access).unwrap();
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.sub, did);
        assert_eq!((claims.iss.as_str(), claims.aud.as_str()), (ISSUER, ISSUER));
        assert_eq!(claims.exp - claims.iat, 15 * 60);
        assert_eq!(claims.nbf, claims.iat);
        assert!(!claims.jti.is_empty());
        let (header, payload, _) = segments(&issued.token);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(payload["kind"], "access");
        assert!(payload.get("app").is_none());
    }

    #[test]
    fn app_and_family_claims_round_trip() {
        let (_, issuer, verifier) = setup();
        let app = issuer
            .issue(
                TokenSpec::new("did:vibe:zX", TokenKind::App, Duration::minutes(5))
                    .app("notes")
                    .family("f0")
                    .registration("r1"),
            )
            .unwrap();
        let claims = verifier.verify(&app.token, TokenKind::App).unwrap();
        assert_eq!(claims.app.as_deref(), Some("notes"));
        assert_eq!(claims.family.as_deref(), Some("f0"));
        assert_eq!(claims.reg.as_deref(), Some("r1"));
        let refresh = issuer
            .issue(
                TokenSpec::new("did:vibe:zX", TokenKind::Refresh, Duration::days(7)).family("f1"),
            )
            .unwrap();
        let claims = verifier.verify(&refresh.token, TokenKind::Refresh).unwrap();
        assert_eq!(claims.family.as_deref(), Some("f1"));
    }

    #[test]
    fn rejects_wrong_audience() {
        let (key, _, verifier) = setup();
        let other = TokenIssuer::new(&key, ISSUER, "https://bob.vibe.example");
        let token = other.issue(access("did:vibe:zA")).unwrap().token;
        assert_eq!(
            rejected(verifier.verify(&token, TokenKind::Access)),
            TokenRejection::WrongAudience
        );
    }

    #[test]
    fn rejects_wrong_issuer() {
        let (key, _, verifier) = setup();
        let other = TokenIssuer::new(&key, "https://evil.example", ISSUER);
        let token = other.issue(access("did:vibe:zA")).unwrap().token;
        assert_eq!(
            rejected(verifier.verify(&token, TokenKind::Access)),
            TokenRejection::WrongIssuer
        );
    }

    #[test]
    fn rejects_expired() {
        let (_, issuer, verifier) = setup();
        let hour_ago = Utc::now().timestamp() - 3600;
        let token = issuer
            .issue(access("did:vibe:zA").issued_at(hour_ago))
            .unwrap()
            .token;
        assert_eq!(
            rejected(verifier.verify(&token, TokenKind::Access)),
            TokenRejection::Expired
        );
    }

    #[test]
    fn rejects_not_yet_valid() {
        let (_, issuer, verifier) = setup();
        let later = Utc::now().timestamp() + 600;
        let token = issuer
            .issue(access("did:vibe:zA").not_before(later))
            .unwrap()
            .token;
        assert_eq!(
            rejected(verifier.verify(&token, TokenKind::Access)),
            TokenRejection::NotYetValid
        );
    }

    #[test]
    fn rejects_alg_none() {
        let (_, issuer, verifier) = setup();
        let (_, payload, _) = segments(&issuer.issue(access("did:vibe:zA")).unwrap().token);
        let header = serde_json::json!({"alg": "none", "typ": "JWT"});
        for token in [
            format!("{}.{}.", encode_json(&header), encode_json(&payload)),
            format!("{}.{}", encode_json(&header), encode_json(&payload)),
        ] {
            assert_eq!(
                rejected(verifier.verify(&token, TokenKind::Access)),
                TokenRejection::DisallowedAlgorithm
            );
        }
    }

    #[test]
    fn rejects_hs256_signed_with_the_public_key() {
        use hmac::{Hmac, Mac};
        let hs256 = |secret: &[u8], input: &[u8]| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
            mac.update(input);
            mac.finalize().into_bytes().to_vec()
        };
        let (key, issuer, verifier) = setup();
        let (_, payload, _) = segments(&issuer.issue(access("did:vibe:zA")).unwrap().token);
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let signing_input = format!("{}.{}", encode_json(&header), encode_json(&payload));
        // The classic confusion attack: HMAC keyed with the public key bytes (raw and PEM).
        for secret in [
            key.public_key().as_bytes().to_vec(),
            key.public_key_pem().into_bytes(),
        ] {
            let mac = hs256(&secret, signing_input.as_bytes());
            let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac));
            assert_eq!(
                rejected(verifier.verify(&token, TokenKind::Access)),
                TokenRejection::DisallowedAlgorithm
            );
        }
    }

    #[test]
    fn rejects_tampered_payload() {
        let (_, issuer, verifier) = setup();
        let token = issuer.issue(access("did:vibe:zAlice")).unwrap().token;
        let (header, mut payload, signature) = segments(&token);
        payload["sub"] = serde_json::json!("did:vibe:zMallory");
        let forged = format!(
            "{}.{}.{signature}",
            encode_json(&header),
            encode_json(&payload)
        );
        assert_eq!(
            rejected(verifier.verify(&forged, TokenKind::Access)),
            TokenRejection::BadSignature
        );
    }

    #[test]
    fn rejects_wrong_kind() {
        let (_, issuer, verifier) = setup();
        let refresh = issuer
            .issue(TokenSpec::new(
                "did:vibe:zA",
                TokenKind::Refresh,
                Duration::days(1),
            ))
            .unwrap()
            .token;
        assert_eq!(
            rejected(verifier.verify(&refresh, TokenKind::Access)),
            TokenRejection::WrongKind
        );
        let access_token = issuer.issue(access("did:vibe:zA")).unwrap().token;
        assert_eq!(
            rejected(verifier.verify(&access_token, TokenKind::Refresh)),
            TokenRejection::WrongKind
        );
    }

    #[test]
    fn rejects_tokens_from_another_key() {
        let (_, _, verifier) = setup();
        let stranger = TokenIssuer::new(&Keypair::generate(), ISSUER, ISSUER);
        let token = stranger.issue(access("did:vibe:zA")).unwrap().token;
        assert_eq!(
            rejected(verifier.verify(&token, TokenKind::Access)),
            TokenRejection::BadSignature
        );
    }

    #[test]
    fn never_follows_key_references_in_the_header() {
        let (_, issuer, verifier) = setup();
        let token = issuer.issue(access("did:vibe:zA")).unwrap().token;
        let (mut header, payload, signature) = segments(&token);
        header["jku"] = serde_json::json!("https://evil.example/keys.json");
        let with_jku = format!(
            "{}.{}.{signature}",
            encode_json(&header),
            encode_json(&payload)
        );
        assert_eq!(
            rejected(verifier.verify(&with_jku, TokenKind::Access)),
            TokenRejection::UntrustedKeyReference
        );
        // A `kid` is not a key reference we follow; the signature still decides.
        let (mut header, payload, signature) = segments(&token);
        header["kid"] = serde_json::json!("attacker-key");
        let with_kid = format!(
            "{}.{}.{signature}",
            encode_json(&header),
            encode_json(&payload)
        );
        assert_eq!(
            rejected(verifier.verify(&with_kid, TokenKind::Access)),
            TokenRejection::BadSignature
        );
    }

    #[test]
    fn rejects_garbage() {
        let (_, _, verifier) = setup();
        for garbage in ["", "abc", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9.e30.AAAA"] {
            let reason = rejected(verifier.verify(garbage, TokenKind::Access));
            assert!(
                matches!(
                    reason,
                    TokenRejection::Malformed
                        | TokenRejection::BadSignature
                        | TokenRejection::MissingClaim
                ),
                "{garbage:?}: {reason:?}"
            );
        }
    }

    #[test]
    fn rotation_trusts_old_and_new_keys() {
        let old = Keypair::generate();
        let new = Keypair::generate();
        let verifier =
            TokenVerifier::new(&new.public_key(), ISSUER, ISSUER).also_trust(&old.public_key());
        for key in [&old, &new] {
            let token = TokenIssuer::new(key, ISSUER, ISSUER)
                .issue(access("did:vibe:zA"))
                .unwrap()
                .token;
            assert!(verifier.verify(&token, TokenKind::Access).is_ok());
        }
    }
}
