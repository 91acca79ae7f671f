//! `did:vibe:` identifiers.
//!
//! The method-specific id is multibase base58btc (`z…`) of the multicodec prefix
//! `0xed 0x01` followed by the 32-byte Ed25519 public key: exactly the `did:key`
//! Ed25519 encoding under another method name, so every DID reads `did:vibe:z6Mk…`.

use std::{fmt, str::FromStr};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{DidProblem, Error};

/// The fixed start of every Vibe DID.
pub const DID_PREFIX: &str = "did:vibe:";
const MULTIBASE_BASE58BTC: char = 'z';
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];

/// A parsed `did:vibe:` identifier: an Ed25519 public key.
///
/// Equality and hashing follow the key, and the text form is canonical, so two
/// `Did`s are equal exactly when their strings are.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Did {
    key: VerifyingKey,
}

impl Did {
    /// Parses `did:vibe:z…`, rejecting other methods, encodings, codecs and lengths.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let id = text
            .strip_prefix(DID_PREFIX)
            .ok_or(DidProblem::WrongMethod)?;
        Self::from_method_specific_id(id)
    }

    /// Parses the part after the method name (`z6Mk…`).
    pub fn from_method_specific_id(id: &str) -> Result<Self, Error> {
        let encoded = id
            .strip_prefix(MULTIBASE_BASE58BTC)
            .ok_or(DidProblem::NotBase58Btc)?;
        let bytes = bs58::decode(encoded)
            .into_vec()
            .map_err(|_| DidProblem::BadBase58)?;
        let key_bytes = bytes
            .strip_prefix(&ED25519_MULTICODEC)
            .ok_or(DidProblem::WrongMulticodec)?;
        let key_bytes: &[u8; 32] = key_bytes.try_into().map_err(|_| DidProblem::WrongLength)?;
        let key = VerifyingKey::from_bytes(key_bytes).map_err(|_| DidProblem::NotAKey)?;
        Ok(Self { key })
    }

    /// The DID of an Ed25519 public key.
    pub fn from_public_key(key: VerifyingKey) -> Self {
        Self { key }
    }

    /// The Ed25519 public key this DID names.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The method-specific id (`z6Mk…`), also the `did:key` method-specific id.
    pub fn method_specific_id(&self) -> String {
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&ED25519_MULTICODEC);
        bytes.extend_from_slice(self.key.as_bytes());
        format!("{MULTIBASE_BASE58BTC}{}", bs58::encode(bytes).into_string())
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DID_PREFIX}{}", self.method_specific_id())
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Did({self})")
    }
}

impl FromStr for Did {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl Serialize for Did {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Did {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Did::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ed25519 test vectors of the W3C did:key specification (method name swapped).
    const W3C_ED25519_DID_KEYS: [&str; 3] = [
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
        "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf",
    ];

    fn as_vibe(did_key: &str) -> String {
        did_key.replacen("did:key:", DID_PREFIX, 1)
    }

    #[test]
    fn w3c_vectors_round_trip_as_did_vibe() {
        for vector in W3C_ED25519_DID_KEYS {
            let text = as_vibe(vector);
            let did = Did::parse(&text).expect(vector);
            assert_eq!(did.to_string(), text);
            assert_eq!(Did::parse(&did.to_string()).unwrap(), did);
        }
    }

    #[test]
    fn all_zero_seed_gives_the_first_w3c_vector() {
        // RFC 8032 / did:key: the key of the all-zero seed is 3b6a27bc…da29.
        let key = ed25519_dalek::SigningKey::from_bytes(&[0u8; 32]).verifying_key();
        assert_eq!(
            hex::encode(key.as_bytes()),
            "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
        );
        assert_eq!(
            Did::from_public_key(key).to_string(),
            as_vibe(W3C_ED25519_DID_KEYS[0])
        );
    }

    #[test]
    fn public_key_base58_matches_published_did_documents() {
        // Pairs of (did:key, publicKeyBase58) from published did:key documents.
        let pairs = [
            (
                "did:key:z6MkmjY8GnV5i9YTDtPETC2uUAW6ejw3nk5mXF5yci5ab7th",
                "8HH5gYEeNc3z7PYXmd54d4x6qAfCNrqQqEB3nS7Zfu7K",
            ),
            (
                "did:key:z6Mkgg342Ycpuk263R9d8Aq6MUaxPn1DDeHyGo38EefXmgDL",
                "3Dn1SJNPaCXcvvJvSbsFWP2xaCjMom3can8CQNhWrTRx",
            ),
        ];
        for (did_key, key_base58) in pairs {
            let did = Did::parse(&as_vibe(did_key)).unwrap();
            assert_eq!(
                bs58::encode(did.public_key().as_bytes()).into_string(),
                key_base58
            );
        }
    }

    fn problem(text: &str) -> DidProblem {
        match Did::parse(text) {
            Err(Error::InvalidDid(problem)) => problem,
            other => panic!("expected an invalid DID for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn rejects_each_malformation_with_its_reason() {
        let good = as_vibe(W3C_ED25519_DID_KEYS[0]);
        let id = good.strip_prefix(DID_PREFIX).unwrap();
        assert_eq!(problem(W3C_ED25519_DID_KEYS[0]), DidProblem::WrongMethod);
        assert_eq!(problem(&format!("did:web:{id}")), DidProblem::WrongMethod);
        assert_eq!(problem(""), DidProblem::WrongMethod);
        assert_eq!(problem(&format!("DID:VIBE:{id}")), DidProblem::WrongMethod);
        assert_eq!(
            problem(&format!("{DID_PREFIX}{}", &id[1..])),
            DidProblem::NotBase58Btc
        );
        assert_eq!(
            problem(&format!("{DID_PREFIX}z0OIl")),
            DidProblem::BadBase58
        );
        assert_eq!(problem(DID_PREFIX), DidProblem::NotBase58Btc);

        // secp256k1 multicodec (0xe7 0x01) with 33 bytes: wrong codec.
        let mut secp = vec![0xe7, 0x01];
        secp.extend_from_slice(&[2u8; 33]);
        let secp = format!("{DID_PREFIX}z{}", bs58::encode(secp).into_string());
        assert_eq!(problem(&secp), DidProblem::WrongMulticodec);

        // Right codec, 31 and 33 key bytes.
        for len in [31usize, 33] {
            let mut bytes = vec![0xed, 0x01];
            bytes.extend(std::iter::repeat_n(7u8, len));
            let text = format!("{DID_PREFIX}z{}", bs58::encode(bytes).into_string());
            assert_eq!(problem(&text), DidProblem::WrongLength, "length {len}");
        }
    }

    #[test]
    fn error_messages_are_clear() {
        let err = Did::parse("did:key:z6Mk").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid DID: expected a DID starting with 'did:vibe:'"
        );
    }

    #[test]
    fn serde_uses_the_text_form() {
        let text = as_vibe(W3C_ED25519_DID_KEYS[1]);
        let did: Did = serde_json::from_value(serde_json::json!(text)).unwrap();
        assert_eq!(serde_json::to_value(did).unwrap(), serde_json::json!(text));
        assert!(serde_json::from_value::<Did>(serde_json::json!("did:vibe:nope")).is_err());
    }
}
