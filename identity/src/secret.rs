//! One-time secrets (claim codes, refresh tokens, nonces) and their at-rest form.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A random secret of `bytes` bytes from the OS random source, as URL-safe base64
/// without padding (safe in URLs, headers, JSON and Kubernetes Secrets).
pub fn generate(bytes: usize) -> String {
    use base64::Engine;
    let mut buffer = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buffer);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer)
}

/// The at-rest form of a high-entropy secret: lowercase hex SHA-256, prefixed with
/// the scheme so the format can change later (`sha256:…`). Only for random secrets
/// such as claim codes and refresh tokens, never for passwords.
pub fn hash(secret: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(secret.as_bytes())))
}

/// Whether `secret` matches a stored [`hash`], compared in constant time.
pub fn matches(secret: &str, stored_hash: &str) -> bool {
    let computed = hash(secret);
    let (a, b) = (computed.as_bytes(), stored_hash.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_random_and_url_safe() {
        let a = generate(32);
        let b = generate(32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn hashes_match_only_their_secret() {
        let stored = hash("code-1");
        assert!(stored.starts_with("sha256:"));
        assert_eq!(stored.len(), 7 + 64);
        assert!(matches("code-1", &stored));
        assert!(!matches("code-2", &stored));
        assert!(!matches("code-1", "sha256:00"));
        assert_eq!(
            hash("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
