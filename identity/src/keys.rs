//! Ed25519 key pairs: generation and loading from PEM or raw 32-byte seeds.

use std::{fmt, path::Path};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding,
};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use crate::{Did, Error};

/// An Ed25519 signing key with its public half.
///
/// `Debug` prints only the DID; the secret never leaves except through the
/// explicit export methods.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The key pair of a 32-byte seed (the Ed25519 "private key" of RFC 8032).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Reads a PKCS#8 `-----BEGIN PRIVATE KEY-----` PEM document.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let signing = SigningKey::from_pkcs8_pem(pem.trim())
            .map_err(|_| Error::InvalidKey("not a PKCS#8 Ed25519 private key PEM".into()))?;
        Ok(Self { signing })
    }

    /// Reads a key given as text: PKCS#8 PEM, or a 32-byte seed in base64
    /// (standard or URL-safe) or hex. This is the form used in environment variables.
    pub fn from_text(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.starts_with("-----BEGIN") {
            return Self::from_pem(text);
        }
        let decoded = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .ok()
            .filter(|bytes| bytes.len() == 32)
            .or_else(|| hex::decode(text).ok().filter(|bytes| bytes.len() == 32));
        match decoded {
            Some(bytes) => Ok(Self::from_seed(bytes.try_into().expect("length checked"))),
            None => Err(Error::InvalidKey(
                "expected a PKCS#8 PEM or a 32-byte seed in base64 or hex".into(),
            )),
        }
    }

    /// Reads a key file: exactly 32 raw bytes (a seed), or text as in [`Keypair::from_text`].
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|err| {
            Error::InvalidKey(format!(
                "cannot read key file {}: {}",
                path.display(),
                err.kind()
            ))
        })?;
        if let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice())
            && std::str::from_utf8(&seed)
                .ok()
                .is_none_or(|text| Self::from_text(text).is_err())
        {
            return Ok(Self::from_seed(seed));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            Error::InvalidKey(format!(
                "key file {} is neither 32 raw bytes nor text",
                path.display()
            ))
        })?;
        Self::from_text(text)
    }

    /// Reads a key from the named environment variable (text as in [`Keypair::from_text`]).
    pub fn from_env(variable: &str) -> Result<Self, Error> {
        let value = std::env::var(variable).map_err(|_| {
            Error::InvalidKey(format!("environment variable {variable} is not set"))
        })?;
        Self::from_text(&value)
    }

    /// The 32-byte seed. Handle with care: this is the secret key.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The seed as standard base64, the form [`Keypair::from_text`] reads.
    pub fn seed_base64(&self) -> String {
        STANDARD.encode(self.seed())
    }

    /// The private key as a PKCS#8 PEM document.
    pub fn to_pem(&self) -> String {
        self.signing
            .to_pkcs8_pem(LineEnding::LF)
            .expect("Ed25519 keys always encode")
            .to_string()
    }

    /// The private key as PKCS#8 DER (what `jsonwebtoken` signs with).
    pub(crate) fn pkcs8_der(&self) -> Vec<u8> {
        self.signing
            .to_pkcs8_der()
            .expect("Ed25519 keys always encode")
            .as_bytes()
            .to_vec()
    }

    /// The public key as a SubjectPublicKeyInfo PEM document.
    pub fn public_key_pem(&self) -> String {
        self.public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("Ed25519 keys always encode")
    }

    /// The public key.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The DID naming this key pair's public key.
    pub fn did(&self) -> Did {
        Did::from_public_key(self.public_key())
    }

    /// Signs a message and returns the 64-byte signature in standard base64,
    /// the form Vibe clients send.
    pub fn sign_base64(&self, message: &str) -> String {
        STANDARD.encode(self.signing.sign(message.as_bytes()).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("did", &self.did())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_sign() {
        let a = Keypair::generate();
        let b = Keypair::generate();
        assert_ne!(a.did(), b.did());
        let signature = a.sign_base64("hello");
        assert_eq!(STANDARD.decode(signature).unwrap().len(), 64);
    }

    #[test]
    fn pem_round_trips() {
        let key = Keypair::generate();
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(Keypair::from_pem(&pem).unwrap().did(), key.did());
        assert_eq!(Keypair::from_text(&pem).unwrap().did(), key.did());
        assert!(
            key.public_key_pem()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }

    #[test]
    fn seeds_load_from_base64_and_hex() {
        let key = Keypair::from_seed([9u8; 32]);
        assert_eq!(
            Keypair::from_text(&key.seed_base64()).unwrap().did(),
            key.did()
        );
        assert_eq!(
            Keypair::from_text(&URL_SAFE_NO_PAD.encode(key.seed()))
                .unwrap()
                .did(),
            key.did()
        );
        assert_eq!(
            Keypair::from_text(&hex::encode(key.seed())).unwrap().did(),
            key.did()
        );
        assert!(Keypair::from_text("c2hvcnQ=").is_err());
        assert!(
            Keypair::from_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----")
                .is_err()
        );
    }

    #[test]
    fn files_hold_raw_seeds_or_text() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate();

        let raw = dir.path().join("seed.bin");
        std::fs::write(&raw, key.seed()).unwrap();
        assert_eq!(Keypair::from_file(&raw).unwrap().did(), key.did());

        let pem = dir.path().join("key.pem");
        std::fs::write(&pem, key.to_pem()).unwrap();
        assert_eq!(Keypair::from_file(&pem).unwrap().did(), key.did());

        let b64 = dir.path().join("seed.txt");
        std::fs::write(&b64, format!("{}\n", key.seed_base64())).unwrap();
        assert_eq!(Keypair::from_file(&b64).unwrap().did(), key.did());

        let missing = Keypair::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(missing.to_string().contains("cannot read key file"));
    }

    #[test]
    fn env_variables_hold_text() {
        let key = Keypair::generate();
        let variable = "VIBE_IDENTITY_TEST_KEY_FROM_ENV";
        // SAFETY: this test is the only reader and writer of this variable.
        unsafe { std::env::set_var(variable, key.seed_base64()) };
        assert_eq!(Keypair::from_env(variable).unwrap().did(), key.did());
        assert!(Keypair::from_env("VIBE_IDENTITY_TEST_KEY_UNSET").is_err());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let key = Keypair::from_seed([1u8; 32]);
        let printed = format!("{key:?}");
        assert!(printed.contains("did:vibe:z6Mk"));
        assert!(!printed.contains(&key.seed_base64()));
        assert!(!printed.contains(&hex::encode(key.seed())));
    }
}
