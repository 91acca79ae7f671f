//! Identity primitives shared by the Vibe Cloud operator and data plane.
//!
//! - [`Did`]: `did:vibe:` identifiers, byte-for-byte the `did:key` Ed25519 encoding.
//! - [`Keypair`]: Ed25519 keys, generated or loaded from PEM or raw 32-byte seeds.
//! - [`signed`]: the `|`-joined messages Vibe clients sign, and their verification.
//! - [`token`]: EdDSA JWTs with a pinned algorithm, issuer, audience and token kind.
//! - [`secret`]: random one-time codes and their at-rest hashes.
//!
//! Every fallible operation returns [`Error`], whose messages are safe to show to a
//! client: they never contain key material or token contents.

mod did;
mod error;
mod keys;
pub mod secret;
pub mod signed;
pub mod token;

pub use did::{DID_PREFIX, Did};
pub use error::{DidProblem, Error, TokenRejection};
pub use keys::Keypair;
pub use token::{Claims, IssuedToken, TokenIssuer, TokenKind, TokenSpec, TokenVerifier};
