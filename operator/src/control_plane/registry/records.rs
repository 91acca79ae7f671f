//! How registry state is laid out in Kubernetes Secrets (pure encode/decode).
//!
//! Every record is a Secret in the registry namespace, labelled
//! `app.kubernetes.io/managed-by=vibe-operator` and `cloud.vibeapp.dev/record=<kind>`, with a
//! custom `type` so `kubectl get secrets --field-selector type=…` lists one kind:
//!
//! | kind            | name                               | type                              | data keys |
//! |-----------------|------------------------------------|-----------------------------------|-----------|
//! | identity        | `vibe-identity-<h(did)>`           | `cloud.vibeapp.dev/identity`      | `did`, `isAdmin`, `profileName`, `profilePictureUrl`, `createdAt`, `updatedAt`, `instanceNamespace`, `instanceName`, `deletionRequestedAt` |
//! | claim code      | `vibe-claim-<h(code)>`             | `cloud.vibeapp.dev/claim-code`    | `codeHash`, `purpose` (`admin`/`invite`), `expiresAt`, `forDid`, `spentAt`, `claimedByDid`, `createdAt` |
//! | nonce           | `vibe-nonce-<h(did|nonce)>`        | `cloud.vibeapp.dev/nonce`         | `expiresAt` |
//! | refresh family  | `vibe-refresh-<family id>`         | `cloud.vibeapp.dev/refresh-token` | `did`, `currentTokenHash`, `expiresAt` |
//! | signing key     | `vibe-control-plane-signing-key`   | `cloud.vibeapp.dev/signing-key`   | `seed` (base64 Ed25519 seed) |
//!
//! `h(x)` is the first 40 hex digits of SHA-256(x): names are deterministic, so a lookup is one
//! GET and "create if absent" is one POST that the API server answers with 409 for the loser.
//! Plain claim codes, nonces' owners' tokens and refresh tokens are never stored, only hashes.

use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Label naming the record kind.
pub const RECORD_LABEL: &str = "cloud.vibeapp.dev/record";
/// Label carrying `h(did)` on records that belong to one identity.
pub const IDENTITY_LABEL: &str = "cloud.vibeapp.dev/identity";
/// Name of the Secret holding the control plane's token signing key.
pub const SIGNING_KEY_SECRET: &str = "vibe-control-plane-signing-key";

/// The kinds of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// An identity (DID → profile, admin flag, instance).
    Identity,
    /// An admin or invite claim code.
    ClaimCode,
    /// A spent nonce of a signed request.
    Nonce,
    /// A refresh token rotation family.
    RefreshFamily,
    /// The token signing key.
    SigningKey,
}

impl RecordKind {
    /// Value of [`RECORD_LABEL`].
    pub fn label(self) -> &'static str {
        match self {
            RecordKind::Identity => "identity",
            RecordKind::ClaimCode => "claim-code",
            RecordKind::Nonce => "nonce",
            RecordKind::RefreshFamily => "refresh-token",
            RecordKind::SigningKey => "signing-key",
        }
    }

    /// The Secret `type`.
    pub fn secret_type(self) -> String {
        format!("cloud.vibeapp.dev/{}", self.label())
    }

    /// Label selector listing every record of this kind.
    pub fn selector(self) -> String {
        format!("{RECORD_LABEL}={}", self.label())
    }
}

/// First 40 hex digits of SHA-256: a DNS-label-safe, fixed-length digest for names and labels.
pub fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..20])
}

/// Name of the identity record of `did`.
pub fn identity_name(did: &str) -> String {
    format!("vibe-identity-{}", short_hash(did))
}

/// Name of the claim code record of `code`.
pub fn claim_code_name(code: &str) -> String {
    format!("vibe-claim-{}", short_hash(code.trim()))
}

/// Name of the nonce record of a signed request.
pub fn nonce_name(did: &str, nonce: &str) -> String {
    format!("vibe-nonce-{}", short_hash(&format!("{did}|{nonce}")))
}

/// Name of a refresh token family record.
pub fn refresh_family_name(family: &str) -> String {
    format!("vibe-refresh-{family}")
}

/// A new record Secret.
pub fn new_secret(
    kind: RecordKind,
    name: &str,
    identity: Option<&str>,
    data: BTreeMap<String, String>,
) -> Secret {
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "vibe-operator".to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "vibe-cloud".to_string(),
        ),
        (RECORD_LABEL.to_string(), kind.label().to_string()),
    ]);
    if let Some(did) = identity {
        labels.insert(IDENTITY_LABEL.to_string(), short_hash(did));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        type_: Some(kind.secret_type()),
        data: Some(encode(data)),
        ..Secret::default()
    }
}

/// String map → Secret data (empty values are dropped).
pub fn encode(data: BTreeMap<String, String>) -> BTreeMap<String, ByteString> {
    data.into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect()
}

/// Secret data → string map (non-UTF-8 values are dropped).
pub fn decode(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| String::from_utf8(v.0.clone()).ok().map(|v| (k.clone(), v)))
        .collect()
}

fn time(data: &BTreeMap<String, String>, key: &str) -> Option<DateTime<Utc>> {
    data.get(key)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn text(value: Option<&String>) -> Option<String> {
    value.filter(|v| !v.is_empty()).cloned()
}

/// Where an identity's instance lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRef {
    /// Namespace of the VibeInstance.
    pub namespace: String,
    /// Name of the VibeInstance.
    pub name: String,
}

/// An identity as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    /// The DID.
    pub did: String,
    /// Platform admin.
    pub is_admin: bool,
    /// Display name.
    pub profile_name: Option<String>,
    /// Picture URL.
    pub profile_picture_url: Option<String>,
    /// First registration or claim.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The identity's instance, once provisioned or claimed.
    pub instance: Option<InstanceRef>,
    /// When deletion was requested (the instance is being deprovisioned).
    pub deletion_requested_at: Option<DateTime<Utc>>,
    /// The Secret's resourceVersion when read (for conditional writes).
    pub resource_version: Option<String>,
}

impl IdentityRecord {
    /// A fresh record.
    pub fn new(did: &str, now: DateTime<Utc>) -> Self {
        Self {
            did: did.to_string(),
            is_admin: false,
            profile_name: None,
            profile_picture_url: None,
            created_at: now,
            updated_at: now,
            instance: None,
            deletion_requested_at: None,
            resource_version: None,
        }
    }

    /// Reads a record; `None` if it is not one.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = decode(secret);
        let instance = match (
            text(data.get("instanceNamespace")),
            text(data.get("instanceName")),
        ) {
            (Some(namespace), Some(name)) => Some(InstanceRef { namespace, name }),
            _ => None,
        };
        Some(Self {
            did: data.get("did")?.clone(),
            is_admin: data.get("isAdmin").is_some_and(|v| v == "true"),
            profile_name: text(data.get("profileName")),
            profile_picture_url: text(data.get("profilePictureUrl")),
            created_at: time(&data, "createdAt").unwrap_or_default(),
            updated_at: time(&data, "updatedAt").unwrap_or_default(),
            instance,
            deletion_requested_at: time(&data, "deletionRequestedAt"),
            resource_version: secret.metadata.resource_version.clone(),
        })
    }

    /// The record as a Secret (carrying the resourceVersion it was read with).
    pub fn to_secret(&self) -> Secret {
        let mut data = BTreeMap::from([
            ("did".to_string(), self.did.clone()),
            ("isAdmin".to_string(), self.is_admin.to_string()),
            ("createdAt".to_string(), self.created_at.to_rfc3339()),
            ("updatedAt".to_string(), self.updated_at.to_rfc3339()),
        ]);
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                data.insert(k.to_string(), v);
            }
        };
        put("profileName", self.profile_name.clone());
        put("profilePictureUrl", self.profile_picture_url.clone());
        put(
            "instanceNamespace",
            self.instance.as_ref().map(|i| i.namespace.clone()),
        );
        put(
            "instanceName",
            self.instance.as_ref().map(|i| i.name.clone()),
        );
        put(
            "deletionRequestedAt",
            self.deletion_requested_at.map(|t| t.to_rfc3339()),
        );
        let mut secret = new_secret(
            RecordKind::Identity,
            &identity_name(&self.did),
            Some(&self.did),
            data,
        );
        secret.metadata.resource_version = self.resource_version.clone();
        secret
    }
}

/// What a claim code grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClaimPurpose {
    /// Platform admin rights (also admits registration when invite-only).
    #[default]
    Admin,
    /// Admission to register when registration is invite-only.
    Invite,
}

impl ClaimPurpose {
    fn as_str(self) -> &'static str {
        match self {
            ClaimPurpose::Admin => "admin",
            ClaimPurpose::Invite => "invite",
        }
    }
}

/// A one-time claim code as stored (hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCodeRecord {
    /// `vibe_identity::secret::hash` of the code.
    pub code_hash: String,
    /// What it grants.
    pub purpose: ClaimPurpose,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// The only DID allowed to use it, if bound.
    pub for_did: Option<String>,
    /// When it was used.
    pub spent_at: Option<DateTime<Utc>>,
    /// Who used it.
    pub claimed_by_did: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The Secret's resourceVersion when read.
    pub resource_version: Option<String>,
}

impl ClaimCodeRecord {
    /// Reads a record; `None` if it is not one.
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = decode(secret);
        Some(Self {
            code_hash: data.get("codeHash")?.clone(),
            purpose: match data.get("purpose").map(String::as_str) {
                Some("invite") => ClaimPurpose::Invite,
                _ => ClaimPurpose::Admin,
            },
            expires_at: time(&data, "expiresAt"),
            for_did: text(data.get("forDid")),
            spent_at: time(&data, "spentAt"),
            claimed_by_did: text(data.get("claimedByDid")),
            created_at: time(&data, "createdAt").unwrap_or_default(),
            resource_version: secret.metadata.resource_version.clone(),
        })
    }

    /// The record as a Secret named after `code`.
    pub fn to_secret(&self, name: &str) -> Secret {
        let mut data = BTreeMap::from([
            ("codeHash".to_string(), self.code_hash.clone()),
            ("purpose".to_string(), self.purpose.as_str().to_string()),
            ("createdAt".to_string(), self.created_at.to_rfc3339()),
        ]);
        for (k, v) in [
            ("expiresAt", self.expires_at.map(|t| t.to_rfc3339())),
            ("forDid", self.for_did.clone()),
            ("spentAt", self.spent_at.map(|t| t.to_rfc3339())),
            ("claimedByDid", self.claimed_by_did.clone()),
        ] {
            if let Some(v) = v {
                data.insert(k.to_string(), v);
            }
        }
        let mut secret = new_secret(RecordKind::ClaimCode, name, None, data);
        secret.metadata.resource_version = self.resource_version.clone();
        secret
    }
}

/// A refresh token family: only its newest token may be exchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFamily {
    /// Family id (also the `family` claim).
    pub id: String,
    /// The DID it belongs to.
    pub did: String,
    /// `secret::hash` of the `jti` of the one token that may be used next.
    pub current_token_hash: String,
    /// When the current token expires.
    pub expires_at: DateTime<Utc>,
    /// The Secret's resourceVersion when read.
    pub resource_version: Option<String>,
}

impl RefreshFamily {
    /// Reads a record.
    pub fn from_secret(id: &str, secret: &Secret) -> Option<Self> {
        let data = decode(secret);
        Some(Self {
            id: id.to_string(),
            did: data.get("did")?.clone(),
            current_token_hash: data.get("currentTokenHash")?.clone(),
            expires_at: time(&data, "expiresAt")?,
            resource_version: secret.metadata.resource_version.clone(),
        })
    }

    /// The record as a Secret.
    pub fn to_secret(&self) -> Secret {
        let data = BTreeMap::from([
            ("did".to_string(), self.did.clone()),
            (
                "currentTokenHash".to_string(),
                self.current_token_hash.clone(),
            ),
            ("expiresAt".to_string(), self.expires_at.to_rfc3339()),
        ]);
        let mut secret = new_secret(
            RecordKind::RefreshFamily,
            &refresh_family_name(&self.id),
            Some(&self.did),
            data,
        );
        secret.metadata.resource_version = self.resource_version.clone();
        secret
    }
}

/// Expiry of a nonce record.
pub fn nonce_expiry(secret: &Secret) -> Option<DateTime<Utc>> {
    time(&decode(secret), "expiresAt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_records_round_trip() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut record = IdentityRecord::new("did:vibe:z6MkTest", now);
        record.is_admin = true;
        record.profile_name = Some("Alice".into());
        record.instance = Some(InstanceRef {
            namespace: "tenants".into(),
            name: "v-abc".into(),
        });
        let secret = record.to_secret();
        assert_eq!(secret.type_.as_deref(), Some("cloud.vibeapp.dev/identity"));
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some(identity_name("did:vibe:z6MkTest").as_str())
        );
        assert_eq!(IdentityRecord::from_secret(&secret), Some(record));
    }

    #[test]
    fn names_are_dns_labels() {
        for name in [
            identity_name("did:vibe:z6Mk"),
            claim_code_name(" CODE "),
            nonce_name("d", "n"),
        ] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
        }
        assert_eq!(claim_code_name(" CODE\n"), claim_code_name("CODE"));
    }
}
