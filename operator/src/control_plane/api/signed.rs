//! Checks of signed requests: signature, timestamp window, and a nonce spent in the registry
//! so a captured request cannot be replayed — not even against another replica.

use super::ControlPlane;
use super::error::ApiError;
use chrono::Utc;
use vibe_identity::{Did, signed};

/// Longest accepted nonce.
const MAX_NONCE_LEN: usize = 128;

/// What to answer for each failed check.
pub struct SignedMessages {
    /// 401 when the signature (or DID) does not verify.
    pub bad_signature: &'static str,
    /// 500 message when the registry cannot record the nonce.
    pub internal: &'static str,
}

/// Answer to a replayed request.
pub const REPLAYED: &str = "Request has already been used.";
/// Answer to a stale or malformed timestamp (the original's).
pub const BAD_TIMESTAMP: &str = "Request timestamp is invalid or expired.";

/// Verifies `signature` by `did` over `message`, then the timestamp, then spends the nonce.
/// The order keeps unauthenticated requests from burning anyone's nonces.
pub async fn verify(
    state: &ControlPlane,
    did: &str,
    nonce: &str,
    timestamp: &str,
    signature: &str,
    message: &str,
    answers: &SignedMessages,
) -> Result<Did, ApiError> {
    let parsed = Did::parse(did).map_err(|_| ApiError::unauthorized(answers.bad_signature))?;
    signed::verify_signature(&parsed, message, signature)
        .map_err(|_| ApiError::unauthorized(answers.bad_signature))?;
    let at = signed::check_timestamp(timestamp, Utc::now(), state.clock_skew)
        .map_err(|_| ApiError::bad_request(BAD_TIMESTAMP))?;
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
        return Err(ApiError::bad_request(
            "Validation failed: nonce must be 1 to 128 characters.",
        ));
    }
    let fresh = state
        .registry
        .consume_nonce(did, nonce, at + state.clock_skew)
        .await
        .map_err(ApiError::or_internal(answers.internal))?;
    if !fresh {
        tracing::warn!("replayed signed request refused");
        return Err(ApiError::unauthorized(REPLAYED));
    }
    Ok(parsed)
}
