//! Tokens whose signature was already checked, so a client sending the same access or app
//! token request after request pays for one Ed25519 verification per token lifetime
//! instead of one (two, for an app token) per request.
//!
//! Only what the signature proves is remembered: the claims of a token that passed the
//! full check (signature, issuer, audience, kind, `nbf`). Everything that can change while
//! a token lives — its refresh family being revoked, its app registration being deleted
//! or replaced, the app's grants — is not part of an entry and is checked on every
//! request as before ([`super::tokens::TokenService::verify`], [`super::authenticate`]).
//! An entry is served only before the token's `exp`; after that the full check runs
//! again (and refuses once the verifier's leeway is over).
//!
//! Entries are keyed by the SHA-256 of the token text, so the map holds no token, and a
//! token that differs in any byte (a forged signature included) misses. The map is
//! bounded ([`CAPACITY`]): when full, expired entries go, and if that frees nothing the
//! map is emptied (each live token then pays one verification again).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use vibe_identity::Claims;

/// Most tokens remembered at once. A tenant's clients hold a handful of live tokens each;
/// this leaves room for thousands of clients, at about 0.5 KiB per entry.
pub const CAPACITY: usize = 4096;

/// The SHA-256 of a token's text.
type Key = [u8; 32];

/// Claims of tokens that passed full verification, until they expire.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<Key, Claims>>,
}

impl VerifiedTokens {
    /// The key of `token`.
    pub fn key(token: &str) -> Key {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The claims of the token with `key` if it was verified and has not expired at `now`
    /// (UNIX seconds).
    pub fn get(&self, key: &Key, now: i64) -> Option<Claims> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|claims| claims.exp > now).cloned()
    }

    /// Remember the claims of a token that just passed full verification, while it lives.
    pub fn insert(&self, key: Key, claims: &Claims, now: i64) {
        if claims.exp <= now {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            entries.retain(|_, c| c.exp > now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, claims.clone());
    }

    /// How many tokens are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no token is remembered.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vibe_identity::TokenKind;

    fn claims(jti: &str, exp: i64) -> Claims {
        Claims {
            iss: "https://a.example".into(),
            sub: "did:vibe:z1".into(),
            aud: "https://a.example".into(),
            exp,
            nbf: 0,
            iat: 0,
            jti: jti.into(),
            kind: TokenKind::Access,
            app: None,
            family: Some("f".into()),
            reg: None,
        }
    }

    #[test]
    fn an_entry_is_served_only_before_its_expiry() {
        let cache = VerifiedTokens::default();
        let key = VerifiedTokens::key("token-a");
        cache.insert(key, &claims("a", 100), 50);
        assert_eq!(cache.get(&key, 99).map(|c| c.jti), Some("a".into()));
        assert_eq!(cache.get(&key, 100), None, "expired at exp");
        assert_eq!(cache.get(&VerifiedTokens::key("token-b"), 50), None);
        cache.insert(VerifiedTokens::key("token-c"), &claims("c", 10), 10);
        assert_eq!(cache.len(), 1, "an expired token is not remembered");
    }

    #[test]
    fn the_map_stays_within_its_capacity() {
        let cache = VerifiedTokens::default();
        for i in 0..CAPACITY {
            // Half of them expire at 20.
            let exp = if i % 2 == 0 { 20 } else { 1_000 };
            cache.insert(VerifiedTokens::key(&format!("t{i}")), &claims("x", exp), 10);
        }
        assert_eq!(cache.len(), CAPACITY);
        cache.insert(VerifiedTokens::key("new"), &claims("new", 1_000), 30);
        assert_eq!(cache.len(), CAPACITY / 2 + 1, "expired entries went first");
        for i in 0..CAPACITY {
            cache.insert(
                VerifiedTokens::key(&format!("u{i}")),
                &claims("u", 1_000),
                30,
            );
        }
        assert!(cache.len() <= CAPACITY);
        assert!(!cache.is_empty());
    }
}
