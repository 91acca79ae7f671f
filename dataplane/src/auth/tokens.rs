//! Access and app tokens (EdDSA JWTs from `vibe-identity`, `iss` = `aud` = the public URL),
//! revocation of refresh families for access and app tokens already issued, and the
//! revocation signal long-lived streams wait on.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use vibe_identity::{Claims, Did, IssuedToken, TokenIssuer, TokenKind, TokenSpec, TokenVerifier};

use super::verified::VerifiedTokens;
use crate::config::Config;
use crate::error::{ApiError, UNAUTHORIZED_TOKEN};

/// How long a revoked family is remembered after its revocation: the longest access-token
/// lifetime allowed ([`crate::config::ACCESS_TOKEN_TTL_SECONDS`]) plus a minute for the
/// verifier's clock leeway.
pub const REVOKED_FAMILY_HORIZON: Duration =
    Duration::from_secs(*crate::config::ACCESS_TOKEN_TTL_SECONDS.end() + 60);

/// Mints and verifies this instance's tokens.
pub struct TokenService {
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    access_ttl: Duration,
    /// Families revoked by logout or refresh reuse → when the entry may be forgotten
    /// (after every access token of the family has expired). Stored as well
    /// ([`crate::revocations`]), so a restart or another replica knows them.
    revoked_families: RwLock<HashMap<String, Instant>>,
    /// Bumped on every revocation (family, device); streams re-check their caller on
    /// each change ([`crate::auth::until_revoked`]).
    revocations: watch::Sender<u64>,
    /// Bounds the unauthenticated, CouchDB-writing auth routes (challenge, login, claim).
    pub(crate) throttle: Throttle,
    /// Tokens whose signature was checked, until they expire (revocation is not cached).
    verified: VerifiedTokens,
}

/// A token bucket shared by all clients of the unauthenticated auth routes: each call
/// writes to CouchDB, so an anonymous flood must not turn into a write flood.
pub struct Throttle {
    state: std::sync::Mutex<(f64, Instant)>,
    rate_per_second: f64,
    burst: f64,
}

impl Throttle {
    /// `rate_per_second` sustained, `burst` at once.
    pub fn new(rate_per_second: f64, burst: f64) -> Self {
        Self {
            state: std::sync::Mutex::new((burst, Instant::now())),
            rate_per_second,
            burst,
        }
    }

    /// Take one token, or 429.
    pub fn check(&self) -> Result<(), ApiError> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *guard;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate_per_second)
            .min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(ApiError::TooManyRequests(
                "Too many authentication requests; retry shortly.".into(),
            ))
        }
    }
}

impl TokenService {
    /// Tokens for `config.public_url`, signed with `config.signing_key`.
    pub fn new(config: &Config) -> Self {
        let key = &config.signing_key;
        Self {
            issuer: TokenIssuer::new(key, &config.public_url, &config.public_url),
            verifier: TokenVerifier::new(&key.public_key(), &config.public_url, &config.public_url),
            access_ttl: config.limits.access_token_ttl,
            revoked_families: RwLock::new(HashMap::new()),
            revocations: watch::Sender::new(0),
            throttle: Throttle::new(50.0, 200.0),
            verified: VerifiedTokens::default(),
        }
    }

    /// Lifetime of access and app tokens.
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// An owner access token in refresh family `family`.
    pub fn issue_access(&self, owner: &Did, family: &str) -> Result<IssuedToken, ApiError> {
        let spec =
            TokenSpec::new(owner.to_string(), TokenKind::Access, self.chrono_ttl()).family(family);
        self.issuer.issue(spec).map_err(ApiError::internal)
    }

    /// An app-bound token: acts only as `app_id`, and only while registration
    /// `registration` of the app and the owner session `family` it was minted from last.
    pub fn issue_app(
        &self,
        owner: &Did,
        app_id: &str,
        registration: &str,
        family: &str,
    ) -> Result<IssuedToken, ApiError> {
        let spec = TokenSpec::new(owner.to_string(), TokenKind::App, self.chrono_ttl())
            .app(app_id)
            .registration(registration)
            .family(family);
        self.issuer.issue(spec).map_err(ApiError::internal)
    }

    fn chrono_ttl(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.access_ttl).unwrap_or(chrono::Duration::minutes(15))
    }

    /// Verify an owner access token or an app token. Any failure (bad signature, other
    /// instance, expired, revoked family) is a 401 with the original's message; the reason
    /// is logged at debug level without the token.
    ///
    /// The signature of a token is checked once while it lives ([`VerifiedTokens`]); the
    /// revoked-family check runs on every call.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let now = crate::state::now_unix();
        let key = VerifiedTokens::key(token);
        let claims = match self.verified.get(&key, now) {
            Some(claims) => claims,
            None => {
                let claims = self.verify_signature(token)?;
                self.verified.insert(key, &claims, now);
                claims
            }
        };
        if claims
            .family
            .as_deref()
            .is_some_and(|family| self.is_family_revoked(family))
        {
            tracing::debug!("bearer token of a revoked family");
            return Err(ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into()));
        }
        Ok(claims)
    }

    /// The full check of a token's signature and claims, without the revocation check.
    fn verify_signature(&self, token: &str) -> Result<Claims, ApiError> {
        let claims = match self.verifier.verify(token, TokenKind::Access) {
            Ok(claims) => claims,
            Err(_) => self.verifier.verify(token, TokenKind::App).map_err(|e| {
                tracing::debug!(reason = %e, "bearer token rejected");
                ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into())
            })?,
        };
        if claims.kind == TokenKind::App && claims.app.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::Unauthorized(UNAUTHORIZED_TOKEN.into()));
        }
        Ok(claims)
    }

    /// Make access tokens of `family` invalid immediately (refresh tokens are revoked
    /// in the system database by the caller, which also stores the revocation).
    pub fn revoke_family(&self, family: &str) {
        self.remember_revoked_family(family, crate::state::now_unix());
    }

    /// Refuse tokens of `family`, revoked at `revoked_at` (UNIX seconds), for as long as
    /// any of them can live: the longest allowed token lifetime plus leeway after the
    /// revocation (the lifetime may have been longer before a restart). Announces the
    /// revocation when it is news; returns whether it was.
    pub fn remember_revoked_family(&self, family: &str, revoked_at: i64) -> bool {
        let age =
            Duration::from_secs(crate::state::now_unix().saturating_sub(revoked_at).max(0) as u64);
        let Some(left) = REVOKED_FAMILY_HORIZON.checked_sub(age) else {
            return false;
        };
        let mut revoked = self
            .revoked_families
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        revoked.retain(|_, until| *until > now);
        let news = revoked.insert(family.to_string(), now + left).is_none();
        drop(revoked);
        if news {
            self.announce_revocation();
        }
        news
    }

    /// Tell every open stream to re-check its caller (after any revocation).
    pub fn announce_revocation(&self) {
        self.revocations
            .send_modify(|epoch| *epoch = epoch.wrapping_add(1));
    }

    /// Hear about revocations (the value is only a counter).
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// 429 when the unauthenticated auth routes are flooded.
    pub fn throttle(&self) -> Result<(), ApiError> {
        self.throttle.check()
    }

    /// Whether tokens of `family` were revoked (logout, refresh-token reuse).
    pub fn is_family_revoked(&self, family: &str) -> bool {
        self.revoked_families
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(family)
            .is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> TokenService {
        let couch = crate::couch::CouchSettings {
            url: "http://127.0.0.1:5984".parse().unwrap(),
            user: None,
            password: None,
        };
        TokenService::new(&Config::new(
            "https://a.example",
            couch,
            vibe_identity::Keypair::generate(),
        ))
    }

    #[test]
    fn a_revoked_family_is_remembered_as_long_as_a_token_can_live() {
        let tokens = service();
        let now = crate::state::now_unix();
        assert!(tokens.remember_revoked_family("recent", now - 3_600));
        assert!(tokens.is_family_revoked("recent"));
        assert!(
            !tokens.remember_revoked_family("recent", now),
            "not news twice"
        );
        let older = now - REVOKED_FAMILY_HORIZON.as_secs() as i64 - 1;
        assert!(!tokens.remember_revoked_family("old", older));
        assert!(!tokens.is_family_revoked("old"));
        let revocations = tokens.revocations();
        tokens.revoke_family("fresh");
        assert!(revocations.has_changed().unwrap(), "announced");
        assert!(tokens.is_family_revoked("fresh"));
    }

    #[test]
    fn a_verified_token_is_refused_right_after_its_family_is_revoked() {
        let tokens = service();
        let owner = vibe_identity::Keypair::generate().did();
        let access = tokens.issue_access(&owner, "family-a").unwrap();
        let app = tokens
            .issue_app(&owner, "notes", "reg-1", "family-a")
            .unwrap();
        let other = tokens.issue_access(&owner, "family-b").unwrap();
        for token in [&access, &app, &other] {
            assert_eq!(tokens.verify(&token.token).unwrap(), token.claims);
            assert_eq!(tokens.verify(&token.token).unwrap(), token.claims, "twice");
        }
        assert_eq!(
            tokens.verified.len(),
            3,
            "each signature checked once, then remembered"
        );
        tokens.revoke_family("family-a");
        for token in [&access, &app] {
            assert!(
                matches!(tokens.verify(&token.token), Err(ApiError::Unauthorized(_))),
                "a remembered token of a revoked family is refused"
            );
        }
        assert!(
            tokens.verify(&other.token).is_ok(),
            "other families live on"
        );
    }

    #[test]
    fn a_remembered_token_is_not_served_past_its_expiry() {
        let tokens = service();
        let owner = vibe_identity::Keypair::generate().did();
        let issued_at = crate::state::now_unix() - 3_600;
        let spec = TokenSpec::new(
            owner.to_string(),
            TokenKind::Access,
            chrono::Duration::minutes(15),
        )
        .issued_at(issued_at)
        .family("f");
        let expired = tokens.issuer.issue(spec).unwrap();
        assert!(tokens.verify(&expired.token).is_err());
        // Remembered while it was valid (as if verified an hour ago): refused now anyway.
        tokens.verified.insert(
            VerifiedTokens::key(&expired.token),
            &expired.claims,
            issued_at,
        );
        assert!(matches!(
            tokens.verify(&expired.token),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn a_token_altered_in_any_byte_is_verified_afresh_and_refused() {
        let tokens = service();
        let owner = vibe_identity::Keypair::generate().did();
        let issued = tokens.issue_access(&owner, "f").unwrap();
        tokens.verify(&issued.token).unwrap();
        let mut forged = issued.token.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(tokens.verify(&forged).is_err());
        assert_eq!(
            tokens.verified.len(),
            1,
            "refused tokens are not remembered"
        );
    }

    #[test]
    fn throttle_allows_a_burst_then_refuses() {
        let throttle = Throttle::new(0.001, 3.0);
        for _ in 0..3 {
            throttle.check().expect("within burst");
        }
        assert!(matches!(
            throttle.check(),
            Err(ApiError::TooManyRequests(_))
        ));
    }
}
