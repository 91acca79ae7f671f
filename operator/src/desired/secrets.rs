//! Secrets of an instance. Generated values are created once and then always carried over from
//! the existing Secret, so a reconcile never rotates a password, cookie or key.

use super::Inputs;
use super::common::meta;
use crate::naming::Component;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::core::v1::Secret;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Key of the CouchDB admin user name.
pub const COUCHDB_USERNAME_KEY: &str = "username";
/// Key of the CouchDB admin password.
pub const COUCHDB_PASSWORD_KEY: &str = "password";
/// Key of the Erlang distribution cookie.
pub const ERLANG_COOKIE_KEY: &str = "erlangCookie";
/// Key of CouchDB's `[chttpd_auth] secret`.
pub const COUCHDB_SECRET_KEY: &str = "couchdbSecret";
/// Key of the claim code.
pub const CLAIM_CODE_KEY: &str = "claimCode";
/// Key of the S3 access key id.
pub const S3_ACCESS_KEY_ID_KEY: &str = "accessKeyId";
/// Key of the S3 secret access key.
pub const S3_SECRET_ACCESS_KEY_KEY: &str = "secretAccessKey";
/// The CouchDB admin user name.
pub const COUCHDB_ADMIN_USER: &str = "admin";

/// Objects already in the cluster whose content the builders must keep.
#[derive(Clone, Debug, Default)]
pub struct ExistingSecrets {
    /// `<name>-couchdb-auth`.
    pub couchdb_auth: Option<Secret>,
    /// `<name>-token-key`.
    pub token_key: Option<Secret>,
    /// `<name>-claim`.
    pub claim: Option<Secret>,
    /// Volume claim templates of the existing CouchDB StatefulSet (immutable once created).
    pub couchdb_volume_templates: Option<Vec<PersistentVolumeClaim>>,
}

impl ExistingSecrets {
    /// Takes the volume claim templates of an existing StatefulSet.
    pub fn with_stateful_set(mut self, sts: Option<&StatefulSet>) -> Self {
        self.couchdb_volume_templates = sts
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.volume_claim_templates.clone());
        self
    }
}

/// CouchDB admin credentials, Erlang cookie (CVE-2022-24706: never the default) and
/// `COUCHDB_SECRET`.
pub fn couchdb_auth(inputs: &Inputs<'_>, existing: Option<&Secret>) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        COUCHDB_USERNAME_KEY.to_string(),
        ByteString(COUCHDB_ADMIN_USER.as_bytes().to_vec()),
    );
    keep_or(&mut data, existing, COUCHDB_PASSWORD_KEY, || {
        random_token(32)
    });
    keep_or(&mut data, existing, ERLANG_COOKIE_KEY, || random_token(48));
    keep_or(&mut data, existing, COUCHDB_SECRET_KEY, || {
        hex::encode(random_bytes(32))
    });
    secret(
        inputs,
        &inputs.names().couchdb_secret,
        Component::Database,
        data,
    )
}

/// The data plane's Ed25519 token signing key (PKCS#8 PEM).
pub fn token_key(inputs: &Inputs<'_>) -> Secret {
    token_key_keeping(inputs, None)
}

/// The token key Secret, keeping an existing key.
pub fn token_key_keeping(inputs: &Inputs<'_>, existing: Option<&Secret>) -> Secret {
    let mut data = BTreeMap::new();
    keep_or(
        &mut data,
        existing,
        crate::dataplane_env::TOKEN_KEY_FILE_NAME,
        generate_ed25519_pem,
    );
    secret(
        inputs,
        &inputs.names().token_key_secret,
        Component::DataPlane,
        data,
    )
}

/// The owner claim code of an unowned instance (the provider hands it to the user).
pub fn claim(inputs: &Inputs<'_>, existing: Option<&Secret>) -> Secret {
    let mut data = BTreeMap::new();
    keep_or(&mut data, existing, CLAIM_CODE_KEY, generate_claim_code);
    secret(
        inputs,
        &inputs.names().claim_secret,
        Component::Credentials,
        data,
    )
}

/// The tenant's S3 credentials (copied from the operator's configuration).
pub fn s3_credentials(inputs: &Inputs<'_>) -> Secret {
    let s3 = &inputs.config.s3;
    let data = BTreeMap::from([
        (
            S3_ACCESS_KEY_ID_KEY.to_string(),
            ByteString(s3.access_key_id.as_bytes().to_vec()),
        ),
        (
            S3_SECRET_ACCESS_KEY_KEY.to_string(),
            ByteString(s3.secret_access_key.as_bytes().to_vec()),
        ),
    ]);
    secret(
        inputs,
        &inputs.names().s3_secret,
        Component::Credentials,
        data,
    )
}

/// SHA-256 (hex) of a claim code, as published in `status.claimCodeHash`.
pub fn claim_code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.trim().as_bytes()))
}

/// Reads a key of a Secret as UTF-8.
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

fn secret(
    inputs: &Inputs<'_>,
    name: &str,
    component: Component,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    Secret {
        metadata: meta(inputs, name, component),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

fn keep_or(
    data: &mut BTreeMap<String, ByteString>,
    existing: Option<&Secret>,
    key: &str,
    generate: impl FnOnce() -> String,
) {
    let kept = existing
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(key))
        .filter(|v| !v.0.is_empty())
        .cloned();
    data.insert(
        key.to_string(),
        kept.unwrap_or_else(|| ByteString(generate().into_bytes())),
    );
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    OsRng.fill_bytes(&mut buf);
    buf
}

/// URL-safe random token with `bytes` bytes of entropy.
fn random_token(bytes: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(bytes))
}

/// A claim code like `K7QX2-M9TPA-…`: 4 groups of 5 characters from an alphabet without
/// look-alikes (≈100 bits).
pub fn generate_claim_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = random_bytes(20);
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    chars
        .chunks(5)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

fn generate_ed25519_pem() -> String {
    let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    key.to_pkcs8_pem(LineEnding::LF)
        .expect("an Ed25519 key encodes as PKCS#8")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OperatorConfig;
    use crate::crd::{VibeInstance, VibeInstanceSpec};

    fn instance() -> VibeInstance {
        let mut i = VibeInstance::new("alice", VibeInstanceSpec::default());
        i.metadata.namespace = Some("tenants".into());
        i.metadata.uid = Some("uid-1".into());
        i
    }

    #[test]
    fn couchdb_auth_generates_strong_distinct_values() {
        let config = OperatorConfig::default();
        let inst = instance();
        let s = couchdb_auth(&Inputs::new(&inst, &config), None);
        assert_eq!(s.metadata.name.as_deref(), Some("alice-couchdb-auth"));
        let password = secret_value(&s, COUCHDB_PASSWORD_KEY).unwrap();
        let cookie = secret_value(&s, ERLANG_COOKIE_KEY).unwrap();
        let couch_secret = secret_value(&s, COUCHDB_SECRET_KEY).unwrap();
        assert!(password.len() >= 40 && cookie.len() >= 60 && couch_secret.len() == 64);
        assert_ne!(cookie, "monster", "never the default Erlang cookie");
        assert_eq!(
            secret_value(&s, COUCHDB_USERNAME_KEY).as_deref(),
            Some("admin")
        );
        let again = couchdb_auth(&Inputs::new(&inst, &config), None);
        assert_ne!(
            secret_value(&again, COUCHDB_PASSWORD_KEY).unwrap(),
            password
        );
        let owner = s.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owner[0].uid, "uid-1");
        assert_eq!(owner[0].controller, Some(true));
    }

    #[test]
    fn existing_values_are_kept() {
        let config = OperatorConfig::default();
        let inst = instance();
        let inputs = Inputs::new(&inst, &config);
        let first = couchdb_auth(&inputs, None);
        let second = couchdb_auth(&inputs, Some(&first));
        assert_eq!(first, second);
        let key = token_key(&inputs);
        assert_eq!(token_key_keeping(&inputs, Some(&key)), key);
        let code = claim(&inputs, None);
        assert_eq!(claim(&inputs, Some(&code)), code);
    }

    #[test]
    fn token_key_is_pkcs8_ed25519_pem() {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let config = OperatorConfig::default();
        let inst = instance();
        let s = token_key(&Inputs::new(&inst, &config));
        let pem = secret_value(&s, crate::dataplane_env::TOKEN_KEY_FILE_NAME).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).expect("parses back");
    }

    #[test]
    fn claim_codes_are_grouped_and_hashed() {
        let code = generate_claim_code();
        assert_eq!(code.len(), 23);
        assert_eq!(code.split('-').count(), 4);
        assert!(
            !code.contains('0')
                && !code.contains('O')
                && !code.contains('I')
                && !code.contains('1')
        );
        assert_eq!(claim_code_hash(&code).len(), 64);
        assert_eq!(
            claim_code_hash(&code),
            claim_code_hash(&format!(" {code}\n"))
        );
        assert_ne!(generate_claim_code(), code);
    }
}
