//! JSON shapes of the control plane API (field names as the original's).

use crate::control_plane::registry::records::IdentityRecord;
use crate::control_plane::registry::status::{self, InstanceStatus};
use crate::crd::VibeInstance;
use serde::Serialize;
use vibe_identity::IssuedToken;

/// `TokenResponse`: note `accessTokenExpiresIn` is an absolute UNIX time, as in the original.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TokenDetails {
    /// EdDSA JWT for the control plane.
    pub access_token: String,
    /// When the access token expires (UNIX seconds).
    pub access_token_expires_in: i64,
    /// Single-use refresh token.
    pub refresh_token: String,
    /// When the refresh token expires (UNIX seconds).
    pub refresh_token_expires_at: i64,
    /// Always `Bearer`.
    pub token_type: String,
}

impl TokenDetails {
    /// From a freshly issued pair.
    pub fn new(access: &IssuedToken, refresh: &IssuedToken) -> Self {
        Self {
            access_token: access.token.clone(),
            access_token_expires_in: access.claims.exp,
            refresh_token: refresh.token.clone(),
            refresh_token_expires_at: refresh.claims.exp,
            token_type: "Bearer".into(),
        }
    }
}

/// `Identity`: the registry record joined with its instance's status.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IdentityView {
    /// The DID.
    pub identity_did: String,
    /// Platform admin.
    pub is_admin: bool,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
    /// Picture URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_picture_url: Option<String>,
    /// Name of the VibeInstance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// `pending`, `provisioning`, `completed`, `suspended`, `failed`, `deprovisioning`, `deprovisioned`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_status: Option<&'static str>,
    /// Public URL of the instance once the operator reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_url: Option<String>,
    /// When the instance was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_created_at: Option<String>,
    /// When the instance's readiness last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_updated_at: Option<String>,
    /// Why the instance failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_error_details: Option<String>,
    /// When the identity registered.
    pub created_at: String,
    /// When the identity last changed.
    pub updated_at: String,
}

impl IdentityView {
    /// Joins a record with its instance (`instance` is what was found at the record's ref).
    pub fn new(record: &IdentityRecord, instance: Option<&VibeInstance>) -> Self {
        let has_ref = record.instance.is_some();
        Self {
            identity_did: record.did.clone(),
            is_admin: record.is_admin,
            profile_name: record.profile_name.clone(),
            profile_picture_url: record.profile_picture_url.clone(),
            instance_id: record.instance.as_ref().map(|i| i.name.clone()),
            instance_status: has_ref.then(|| InstanceStatus::of(instance).as_str()),
            instance_url: instance
                .and_then(|i| i.status.as_ref())
                .and_then(|s| s.url.clone()),
            instance_created_at: instance
                .and_then(|i| i.metadata.creation_timestamp.as_ref())
                .map(|t| t.0.to_string()),
            instance_updated_at: instance
                .and_then(|i| i.condition("Ready"))
                .map(|c| c.last_transition_time.0.to_string()),
            instance_error_details: instance.and_then(status::error_details),
            created_at: record.created_at.to_rfc3339(),
            updated_at: record.updated_at.to_rfc3339(),
        }
    }
}
