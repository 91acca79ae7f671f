//! The one error type of this crate.

use std::fmt;

/// Everything that can go wrong when parsing identities, checking signatures or
/// handling tokens. Messages are suitable for API clients: no secrets, no internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The string is not a valid `did:vibe:` identifier.
    #[error("invalid DID: {0}")]
    InvalidDid(DidProblem),
    /// The signature is well formed but does not verify for the given key and message.
    #[error("signature does not verify")]
    InvalidSignature,
    /// The signature is not standard base64 of 64 bytes.
    #[error("malformed signature: {0}")]
    MalformedSignature(&'static str),
    /// The timestamp is not RFC 3339.
    #[error("timestamp is not an RFC 3339 date-time")]
    MalformedTimestamp,
    /// The timestamp is further from the verifier's clock than the allowed skew.
    #[error("timestamp is outside the allowed clock skew")]
    TimestampOutOfRange,
    /// Key material could not be read or has the wrong shape.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A token was refused; the reason says why.
    #[error("token rejected: {0}")]
    TokenRejected(TokenRejection),
    /// Signing a token failed (should not happen with a valid key).
    #[error("token could not be signed")]
    TokenSigning,
}

/// Why a string is not a valid `did:vibe:` identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DidProblem {
    /// It does not start with `did:vibe:`.
    WrongMethod,
    /// The method-specific id does not start with the multibase base58btc prefix `z`.
    NotBase58Btc,
    /// The method-specific id is not valid base58.
    BadBase58,
    /// The decoded bytes do not start with the Ed25519 multicodec prefix `0xed 0x01`.
    WrongMulticodec,
    /// The decoded key is not 32 bytes long.
    WrongLength,
    /// The 32 bytes are not a valid Ed25519 public key.
    NotAKey,
}

impl fmt::Display for DidProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DidProblem::WrongMethod => "expected a DID starting with 'did:vibe:'",
            DidProblem::NotBase58Btc => {
                "method-specific id must be multibase base58btc (start with 'z')"
            }
            DidProblem::BadBase58 => "method-specific id is not valid base58",
            DidProblem::WrongMulticodec => {
                "key is not an Ed25519 public key (multicodec 0xed01 expected)"
            }
            DidProblem::WrongLength => "Ed25519 public key must be 32 bytes",
            DidProblem::NotAKey => "bytes are not a valid Ed25519 public key",
        })
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// Not a JWT, or its header, claims or signature cannot be decoded.
    Malformed,
    /// The header names an algorithm other than EdDSA (including `none` and HS*).
    DisallowedAlgorithm,
    /// The header points at key material (`jku`, `jwk`, `x5u`, `x5c`), which is never trusted.
    UntrustedKeyReference,
    /// The signature does not verify with any configured key.
    BadSignature,
    /// `exp` is in the past.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iss` is not the expected issuer.
    WrongIssuer,
    /// `aud` is not the expected audience.
    WrongAudience,
    /// The token's `kind` is not the one this endpoint accepts.
    WrongKind,
    /// A required claim is missing.
    MissingClaim,
}

impl fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenRejection::Malformed => "malformed token",
            TokenRejection::DisallowedAlgorithm => "token algorithm is not allowed",
            TokenRejection::UntrustedKeyReference => "token header references external keys",
            TokenRejection::BadSignature => "token signature is invalid",
            TokenRejection::Expired => "token has expired",
            TokenRejection::NotYetValid => "token is not valid yet",
            TokenRejection::WrongIssuer => "token was issued by another authority",
            TokenRejection::WrongAudience => "token is meant for another audience",
            TokenRejection::WrongKind => "token is of the wrong kind",
            TokenRejection::MissingClaim => "token lacks a required claim",
        })
    }
}

impl From<DidProblem> for Error {
    fn from(problem: DidProblem) -> Self {
        Error::InvalidDid(problem)
    }
}

impl From<TokenRejection> for Error {
    fn from(rejection: TokenRejection) -> Self {
        Error::TokenRejected(rejection)
    }
}
