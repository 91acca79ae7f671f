//! The signed messages Vibe clients send, byte-for-byte as the existing clients
//! build them: Ed25519 over the UTF-8 bytes of `|`-joined fields, signature in
//! standard base64.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{Signature, Verifier};

use crate::{Did, Error};

/// How far a signed timestamp may be from the verifier's clock by default.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::minutes(5);

/// `did|nonce|timestamp`: what a client signs to log in.
pub fn login_message(did: &str, nonce: &str, timestamp: &str) -> String {
    format!("{did}|{nonce}|{timestamp}")
}

/// `did|nonce|timestamp|claimCode`: what a client signs to register. Without a
/// claim code the message still ends with `|`.
pub fn register_message(
    did: &str,
    nonce: &str,
    timestamp: &str,
    claim_code: Option<&str>,
) -> String {
    format!("{did}|{nonce}|{timestamp}|{}", claim_code.unwrap_or(""))
}

/// The claim code itself: what a client signs to claim an instance or admin rights.
pub fn admin_claim_message(claim_code: &str) -> String {
    claim_code.to_owned()
}

/// Checks that `signature` (standard base64 of 64 bytes) is `did`'s signature of `message`.
pub fn verify_signature(did: &Did, message: &str, signature: &str) -> Result<(), Error> {
    let bytes = STANDARD
        .decode(signature.trim())
        .map_err(|_| Error::MalformedSignature("not standard base64"))?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| Error::MalformedSignature("an Ed25519 signature is 64 bytes"))?;
    did.public_key()
        .verify(message.as_bytes(), &Signature::from_bytes(&bytes))
        .map_err(|_| Error::InvalidSignature)
}

/// Parses an RFC 3339 timestamp and checks it lies within `skew` of `now`,
/// in either direction.
pub fn check_timestamp(
    timestamp: &str,
    now: DateTime<Utc>,
    skew: Duration,
) -> Result<DateTime<Utc>, Error> {
    let at = DateTime::parse_from_rfc3339(timestamp)
        .map_err(|_| Error::MalformedTimestamp)?
        .with_timezone(&Utc);
    if (now - at).abs() > skew {
        return Err(Error::TimestampOutOfRange);
    }
    Ok(at)
}

/// A login or registration request as clients send it, before any check.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedChallenge {
    /// The signer's DID.
    pub did: String,
    /// The nonce the signer was given (or chose, where the server allows it).
    pub nonce: String,
    /// When the client signed, RFC 3339.
    pub timestamp: String,
    /// Standard base64 Ed25519 signature.
    pub signature: String,
}

impl SignedChallenge {
    /// Verifies a login: DID syntax, timestamp within `skew` of `now`, and the
    /// signature over `did|nonce|timestamp`. Nonce freshness is the caller's job.
    pub fn verify_login(&self, now: DateTime<Utc>, skew: Duration) -> Result<Did, Error> {
        self.verify(
            &login_message(&self.did, &self.nonce, &self.timestamp),
            now,
            skew,
        )
    }

    /// Verifies a registration: as [`SignedChallenge::verify_login`] with the
    /// signature over `did|nonce|timestamp|claimCode`.
    pub fn verify_register(
        &self,
        claim_code: Option<&str>,
        now: DateTime<Utc>,
        skew: Duration,
    ) -> Result<Did, Error> {
        let message = register_message(&self.did, &self.nonce, &self.timestamp, claim_code);
        self.verify(&message, now, skew)
    }

    fn verify(&self, message: &str, now: DateTime<Utc>, skew: Duration) -> Result<Did, Error> {
        let did = Did::parse(&self.did)?;
        check_timestamp(&self.timestamp, now, skew)?;
        verify_signature(&did, message, &self.signature)?;
        Ok(did)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    #[test]
    fn messages_join_fields_with_bars() {
        assert_eq!(login_message("did:vibe:z1", "n", "t"), "did:vibe:z1|n|t");
        assert_eq!(register_message("d", "n", "t", Some("c")), "d|n|t|c");
        assert_eq!(register_message("d", "n", "t", None), "d|n|t|");
        assert_eq!(register_message("d", "n", "t", Some("")), "d|n|t|");
        assert_eq!(admin_claim_message("CODE-1"), "CODE-1");
    }

    #[test]
    fn signatures_verify_only_for_the_signer_and_message() {
        let key = Keypair::generate();
        let other = Keypair::generate();
        let signature = key.sign_base64("claim-code");
        assert_eq!(
            verify_signature(&key.did(), "claim-code", &signature),
            Ok(())
        );
        assert_eq!(
            verify_signature(&key.did(), "claim-codE", &signature),
            Err(Error::InvalidSignature)
        );
        assert_eq!(
            verify_signature(&other.did(), "claim-code", &signature),
            Err(Error::InvalidSignature)
        );
        assert!(matches!(
            verify_signature(&key.did(), "claim-code", "not base64!"),
            Err(Error::MalformedSignature(_))
        ));
        assert!(matches!(
            verify_signature(&key.did(), "claim-code", &STANDARD.encode([0u8; 32])),
            Err(Error::MalformedSignature(_))
        ));
    }

    #[test]
    fn known_answer_for_a_fixed_key() {
        // Ed25519 is deterministic: the all-zero seed's signature of a login message is fixed.
        let key = Keypair::from_seed([0u8; 32]);
        let message = login_message(&key.did().to_string(), "nonce-1", "2026-01-01T00:00:00Z");
        let signature = key.sign_base64(&message);
        assert_eq!(signature, key.sign_base64(&message));
        verify_signature(&key.did(), &message, &signature).unwrap();
    }

    #[test]
    fn timestamps_must_be_rfc3339_and_within_skew() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(check_timestamp("2026-11-25T12:04:59Z", now, DEFAULT_CLOCK_SKEW).is_ok());
        assert!(check_timestamp("2026-11-25T11:55:01.123Z", now, DEFAULT_CLOCK_SKEW).is_ok());
        assert!(check_timestamp("2026-11-25T13:00:00+01:00", now, DEFAULT_CLOCK_SKEW).is_ok());
        assert_eq!(
            check_timestamp("2026-11-25T12:05:01Z", now, DEFAULT_CLOCK_SKEW),
            Err(Error::TimestampOutOfRange)
        );
        assert_eq!(
            check_timestamp("2026-11-25T11:54:59Z", now, DEFAULT_CLOCK_SKEW),
            Err(Error::TimestampOutOfRange)
        );
        assert_eq!(
            check_timestamp("yesterday", now, DEFAULT_CLOCK_SKEW),
            Err(Error::MalformedTimestamp)
        );
        assert_eq!(
            check_timestamp("1764072000", now, DEFAULT_CLOCK_SKEW),
            Err(Error::MalformedTimestamp)
        );
    }

    #[test]
    fn signed_challenges_verify_end_to_end() {
        let key = Keypair::generate();
        let now = Utc::now();
        let timestamp = now.to_rfc3339();
        let did = key.did().to_string();
        let login = SignedChallenge {
            signature: key.sign_base64(&login_message(&did, "abc", &timestamp)),
            did: did.clone(),
            nonce: "abc".into(),
            timestamp: timestamp.clone(),
        };
        assert_eq!(login.verify_login(now, DEFAULT_CLOCK_SKEW), Ok(key.did()));
        // The same signature is not a registration signature.
        assert_eq!(
            login.verify_register(None, now, DEFAULT_CLOCK_SKEW),
            Err(Error::InvalidSignature)
        );

        let register = SignedChallenge {
            signature: key.sign_base64(&register_message(&did, "abc", &timestamp, None)),
            ..login.clone()
        };
        assert_eq!(
            register.verify_register(None, now, DEFAULT_CLOCK_SKEW),
            Ok(key.did())
        );
        assert_eq!(
            register.verify_register(Some("X"), now, DEFAULT_CLOCK_SKEW),
            Err(Error::InvalidSignature)
        );

        let late = now + Duration::minutes(6);
        assert_eq!(
            login.verify_login(late, DEFAULT_CLOCK_SKEW),
            Err(Error::TimestampOutOfRange)
        );
        let bad_did = SignedChallenge {
            did: "did:key:z6Mk".into(),
            ..login
        };
        assert!(matches!(
            bad_did.verify_login(now, DEFAULT_CLOCK_SKEW),
            Err(Error::InvalidDid(_))
        ));
    }
}
