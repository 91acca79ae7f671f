//! The identity registry, claim codes and replay protection, kept in the Kubernetes API.
//!
//! Nothing lives only in memory: a restarted or second replica sees the same registry.
//! Identities, claim codes, nonces and refresh token families are Secrets in the registry
//! namespace ([`records`] documents the layout); instances are `VibeInstance`s in the tenant
//! namespace, and an identity's status is read from its instance ([`status`]).
//!
//! One-time things are spent with conditional writes, so they hold across replicas:
//! a nonce is a create-if-absent (the API server answers 409 AlreadyExists to the second
//! writer); a claim code or refresh token is spent by replacing its record with the
//! `resourceVersion` that was read (409 Conflict for every concurrent writer but one).

pub mod records;
pub mod status;

use crate::crd::{DeletionPolicy, OwnerSpec, VibeInstance, VibeInstanceSpec};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use records::{
    ClaimCodeRecord, ClaimPurpose, IdentityRecord, InstanceRef, RecordKind, RefreshFamily,
    SIGNING_KEY_SECRET,
};
use std::collections::BTreeMap;
use vibe_identity::{Keypair, secret};

/// Why a registry operation failed (never shown to clients verbatim).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The Kubernetes API failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// A stored record is unreadable.
    #[error("corrupt registry record {0}")]
    Corrupt(String),
    /// Concurrent writers kept winning.
    #[error("registry record {0} kept changing")]
    Contended(String),
    /// The instance name is taken by an instance of someone else.
    #[error("instance {0} belongs to another owner")]
    InstanceTaken(String),
}

/// Result of the registry.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// Why a claim code cannot be used (each has the original control plane's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimProblem {
    /// No such code.
    Unknown,
    /// Already used.
    Spent,
    /// Past its expiry.
    Expired,
    /// Bound to another DID.
    WrongDid,
}

impl ClaimProblem {
    /// The client-facing message.
    pub fn message(self) -> &'static str {
        match self {
            ClaimProblem::Unknown => "Invalid or unknown claim code.",
            ClaimProblem::Spent => "Claim code has already been used.",
            ClaimProblem::Expired => "Claim code has expired.",
            ClaimProblem::WrongDid => "Claim code is not valid for the provided DID.",
        }
    }
}

/// Checks a claim code record for `did` at `now` (no writes).
pub fn check_claim(
    record: &ClaimCodeRecord,
    did: &str,
    now: DateTime<Utc>,
) -> Result<(), ClaimProblem> {
    if record.spent_at.is_some() {
        return Err(ClaimProblem::Spent);
    }
    if record.expires_at.is_some_and(|at| at <= now) {
        return Err(ClaimProblem::Expired);
    }
    if record.for_did.as_deref().is_some_and(|bound| bound != did) {
        return Err(ClaimProblem::WrongDid);
    }
    Ok(())
}

/// Why a refresh token cannot be exchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshProblem {
    /// Already exchanged (or its family was revoked, e.g. after reuse was detected).
    Revoked,
    /// Past its expiry.
    Expired,
}

/// Where registry state and tenant instances live.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// Namespace of the registry's Secrets.
    pub namespace: String,
    /// Namespace self-service instances are created in.
    pub tenant_namespace: String,
    /// Deletion policy of self-service instances.
    pub deletion_policy: DeletionPolicy,
    /// Namespaces searched for unowned instances to claim (empty: all).
    pub claim_namespaces: Vec<String>,
}

/// The registry: typed access to the records and instances.
#[derive(Clone)]
pub struct Registry {
    client: Client,
    secrets: Api<Secret>,
    settings: RegistrySettings,
}

impl Registry {
    /// A registry over `client`.
    pub fn new(client: Client, settings: RegistrySettings) -> Self {
        let secrets = Api::namespaced(client.clone(), &settings.namespace);
        Self {
            client,
            secrets,
            settings,
        }
    }

    /// Settings in use.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    // ---- identities -------------------------------------------------------------------

    /// The identity of `did`, if registered.
    pub async fn identity(&self, did: &str) -> Result<Option<IdentityRecord>> {
        let Some(secret) = self.secrets.get_opt(&records::identity_name(did)).await? else {
            return Ok(None);
        };
        let record = IdentityRecord::from_secret(&secret)
            .ok_or_else(|| RegistryError::Corrupt(secret.name_any()))?;
        // A hash collision or a hand-made Secret must not hand one DID another's identity.
        Ok((record.did == did).then_some(record))
    }

    /// Creates `record` unless the DID is registered; returns the stored record and whether it
    /// was created by this call.
    pub async fn create_identity(&self, record: &IdentityRecord) -> Result<(IdentityRecord, bool)> {
        let mut fresh = record.clone();
        fresh.resource_version = None;
        match self
            .secrets
            .create(&PostParams::default(), &fresh.to_secret())
            .await
        {
            Ok(secret) => Ok((IdentityRecord::from_secret(&secret).unwrap_or(fresh), true)),
            Err(err) if is_status(&err, 409) => {
                let existing = self
                    .identity(&record.did)
                    .await?
                    .ok_or_else(|| RegistryError::Contended(records::identity_name(&record.did)))?;
                Ok((existing, false))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Replaces an identity read earlier; `Ok(None)` when it changed meanwhile (409).
    pub async fn replace_identity(
        &self,
        record: &IdentityRecord,
    ) -> Result<Option<IdentityRecord>> {
        let name = records::identity_name(&record.did);
        match self
            .secrets
            .replace(&name, &PostParams::default(), &record.to_secret())
            .await
        {
            Ok(secret) => Ok(IdentityRecord::from_secret(&secret)),
            Err(err) if is_status(&err, 409) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Applies `change` to the identity of `did`, re-reading and retrying on conflicts.
    /// `Ok(None)` when the identity does not exist.
    pub async fn update_identity(
        &self,
        did: &str,
        change: impl Fn(&mut IdentityRecord),
    ) -> Result<Option<IdentityRecord>> {
        for _ in 0..8 {
            let Some(mut record) = self.identity(did).await? else {
                return Ok(None);
            };
            change(&mut record);
            record.updated_at = Utc::now();
            if let Some(stored) = self.replace_identity(&record).await? {
                return Ok(Some(stored));
            }
        }
        Err(RegistryError::Contended(records::identity_name(did)))
    }

    /// Removes the identity of `did` and every refresh token family of it.
    pub async fn delete_identity(&self, did: &str) -> Result<()> {
        self.revoke_all_refresh_tokens(did).await?;
        match self
            .secrets
            .delete(&records::identity_name(did), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_status(&err, 404) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// One page of identities (Kubernetes list pagination: `limit` and a `continue` token).
    pub async fn list_identities(
        &self,
        limit: u32,
        continue_token: Option<&str>,
    ) -> Result<(Vec<IdentityRecord>, Option<String>)> {
        let mut params = ListParams::default()
            .labels(&RecordKind::Identity.selector())
            .limit(limit);
        if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
            params = params.continue_token(token);
        }
        let list = self.secrets.list(&params).await?;
        let next = list.metadata.continue_.clone().filter(|c| !c.is_empty());
        Ok((
            list.items
                .iter()
                .filter_map(IdentityRecord::from_secret)
                .collect(),
            next,
        ))
    }

    // ---- claim codes ------------------------------------------------------------------

    /// Stores a new claim code; returns the plain code (shown once, never stored).
    pub async fn create_claim_code(
        &self,
        purpose: ClaimPurpose,
        for_did: Option<String>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<String> {
        let code = crate::desired::secrets::generate_claim_code();
        self.store_claim_code(&code, purpose, for_did, expires_at)
            .await?;
        Ok(code)
    }

    /// Stores a given claim code unless it exists (spent or not): the bootstrap admin code
    /// from configuration is seeded this way, so a restart never revives a spent code.
    pub async fn store_claim_code(
        &self,
        code: &str,
        purpose: ClaimPurpose,
        for_did: Option<String>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let record = ClaimCodeRecord {
            code_hash: secret::hash(code.trim()),
            purpose,
            expires_at,
            for_did,
            spent_at: None,
            claimed_by_did: None,
            created_at: Utc::now(),
            resource_version: None,
        };
        let name = records::claim_code_name(code);
        match self
            .secrets
            .create(&PostParams::default(), &record.to_secret(&name))
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if is_status(&err, 409) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// The record of a claim code, if it exists and its hash matches.
    pub async fn claim_code(&self, code: &str) -> Result<Option<ClaimCodeRecord>> {
        let Some(secret) = self
            .secrets
            .get_opt(&records::claim_code_name(code))
            .await?
        else {
            return Ok(None);
        };
        let record = ClaimCodeRecord::from_secret(&secret)
            .ok_or_else(|| RegistryError::Corrupt(secret.name_any()))?;
        Ok(secret::matches(code.trim(), &record.code_hash).then_some(record))
    }

    /// Spends a claim code for `did`: exactly one of any number of concurrent callers
    /// succeeds; the others get [`ClaimProblem::Spent`].
    pub async fn spend_claim_code(
        &self,
        code: &str,
        did: &str,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<ClaimCodeRecord, ClaimProblem>> {
        let name = records::claim_code_name(code);
        for _ in 0..8 {
            let Some(mut record) = self.claim_code(code).await? else {
                return Ok(Err(ClaimProblem::Unknown));
            };
            if let Err(problem) = check_claim(&record, did, now) {
                return Ok(Err(problem));
            }
            record.spent_at = Some(now);
            record.claimed_by_did = Some(did.to_string());
            match self
                .secrets
                .replace(&name, &PostParams::default(), &record.to_secret(&name))
                .await
            {
                Ok(_) => return Ok(Ok(record)),
                // Someone wrote it since we read it: read again (it is most likely spent now).
                Err(err) if is_status(&err, 409) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(RegistryError::Contended(name))
    }

    // ---- nonces -----------------------------------------------------------------------

    /// Records that `did` used `nonce`; `false` if it was used before (a replay), on any replica.
    pub async fn consume_nonce(
        &self,
        did: &str,
        nonce: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool> {
        let name = records::nonce_name(did, nonce);
        let data = BTreeMap::from([("expiresAt".to_string(), expires_at.to_rfc3339())]);
        let secret = records::new_secret(RecordKind::Nonce, &name, None, data);
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(true),
            Err(err) if is_status(&err, 409) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes nonce records past their expiry (a replay that old fails the timestamp check
    /// anyway). Returns how many were deleted.
    pub async fn sweep_nonces(&self, now: DateTime<Utc>) -> Result<usize> {
        let list = self
            .secrets
            .list(&ListParams::default().labels(&RecordKind::Nonce.selector()))
            .await?;
        let mut deleted = 0;
        for secret in list.items {
            if records::nonce_expiry(&secret).is_none_or(|at| at < now) {
                match self
                    .secrets
                    .delete(&secret.name_any(), &DeleteParams::default())
                    .await
                {
                    Ok(_) => deleted += 1,
                    Err(err) if is_status(&err, 404) => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
        Ok(deleted)
    }

    // ---- refresh tokens ---------------------------------------------------------------

    /// Starts a refresh token family whose current token has id `jti`.
    pub async fn start_refresh_family(
        &self,
        family: &str,
        did: &str,
        jti: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        let record = RefreshFamily {
            id: family.to_string(),
            did: did.to_string(),
            current_token_hash: secret::hash(jti),
            expires_at,
            resource_version: None,
        };
        self.secrets
            .create(&PostParams::default(), &record.to_secret())
            .await?;
        Ok(())
    }

    /// Exchanges token `jti` of `family` for a new token `next_jti`. Exactly one exchange of a
    /// token succeeds; presenting an already exchanged token revokes the whole family (it was
    /// stolen or replayed).
    pub async fn rotate_refresh_token(
        &self,
        family: &str,
        did: &str,
        jti: &str,
        next_jti: &str,
        next_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<std::result::Result<(), RefreshProblem>> {
        let name = records::refresh_family_name(family);
        let Some(secret) = self.secrets.get_opt(&name).await? else {
            return Ok(Err(RefreshProblem::Revoked));
        };
        let Some(mut record) = RefreshFamily::from_secret(family, &secret) else {
            return Err(RegistryError::Corrupt(name));
        };
        if record.did != did {
            return Ok(Err(RefreshProblem::Revoked));
        }
        if !secret::matches(jti, &record.current_token_hash) {
            tracing::warn!(family, "refresh token reuse detected; revoking its family");
            self.delete_secret(&name).await?;
            return Ok(Err(RefreshProblem::Revoked));
        }
        if record.expires_at <= now {
            self.delete_secret(&name).await?;
            return Ok(Err(RefreshProblem::Expired));
        }
        record.current_token_hash = secret::hash(next_jti);
        record.expires_at = next_expires_at;
        match self
            .secrets
            .replace(&name, &PostParams::default(), &record.to_secret())
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(err) if is_status(&err, 409) || is_status(&err, 404) => {
                Ok(Err(RefreshProblem::Revoked))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Revokes every refresh token of `did`.
    pub async fn revoke_all_refresh_tokens(&self, did: &str) -> Result<()> {
        let selector = format!(
            "{},{}={}",
            RecordKind::RefreshFamily.selector(),
            records::IDENTITY_LABEL,
            records::short_hash(did)
        );
        let list = self
            .secrets
            .list(&ListParams::default().labels(&selector))
            .await?;
        for secret in list.items {
            self.delete_secret(&secret.name_any()).await?;
        }
        Ok(())
    }

    async fn delete_secret(&self, name: &str) -> Result<()> {
        match self.secrets.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(err) if is_status(&err, 404) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    // ---- signing key ------------------------------------------------------------------

    /// The control plane's token signing key, shared by every replica (created once).
    pub async fn signing_key(&self) -> Result<Keypair> {
        for _ in 0..3 {
            if let Some(secret) = self.secrets.get_opt(SIGNING_KEY_SECRET).await? {
                let seed = records::decode(&secret)
                    .get("seed")
                    .cloned()
                    .unwrap_or_default();
                return Keypair::from_text(&seed)
                    .map_err(|_| RegistryError::Corrupt(SIGNING_KEY_SECRET.into()));
            }
            let key = Keypair::generate();
            let data = BTreeMap::from([("seed".to_string(), key.seed_base64())]);
            let secret =
                records::new_secret(RecordKind::SigningKey, SIGNING_KEY_SECRET, None, data);
            match self.secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => return Ok(key),
                Err(err) if is_status(&err, 409) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(RegistryError::Contended(SIGNING_KEY_SECRET.into()))
    }

    // ---- instances --------------------------------------------------------------------

    /// The instance at `at`, if it exists.
    pub async fn instance(&self, at: &InstanceRef) -> Result<Option<VibeInstance>> {
        let api: Api<VibeInstance> = Api::namespaced(self.client.clone(), &at.namespace);
        Ok(api.get_opt(&at.name).await?)
    }

    /// A fresh instance name for a self-service registration: random, so host names (which
    /// end up in public certificate logs) reveal nothing about the owner's DID.
    pub fn new_instance_ref(&self) -> InstanceRef {
        let suffix: String = secret::generate(12)
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        InstanceRef {
            namespace: self.settings.tenant_namespace.clone(),
            name: format!("v-{suffix}"),
        }
    }

    /// Creates the VibeInstance of `did` at `at` unless it exists. An existing instance of the
    /// same owner is returned untouched (never reset); one of another owner is an error.
    pub async fn provision_instance(&self, at: &InstanceRef, did: &str) -> Result<VibeInstance> {
        let api: Api<VibeInstance> = Api::namespaced(self.client.clone(), &at.namespace);
        let instance = desired_instance(at, did, self.settings.deletion_policy);
        match api.create(&PostParams::default(), &instance).await {
            Ok(created) => {
                tracing::info!(namespace = %at.namespace, instance = %at.name, "provisioned a VibeInstance");
                Ok(created)
            }
            Err(err) if is_status(&err, 409) => {
                let existing = api.get(&at.name).await?;
                if existing.owner_did() == Some(did) {
                    Ok(existing)
                } else {
                    Err(RegistryError::InstanceTaken(format!(
                        "{}/{}",
                        at.namespace, at.name
                    )))
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes the instance at `at`; its `deletionPolicy` decides what happens to the data.
    /// `false` if it was already gone.
    pub async fn deprovision_instance(&self, at: &InstanceRef) -> Result<bool> {
        let api: Api<VibeInstance> = Api::namespaced(self.client.clone(), &at.namespace);
        match api.delete(&at.name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(err) if is_status(&err, 404) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// The instance whose owner claim code is `code`, if any (owned or not).
    pub async fn find_claimable_instance(&self, code: &str) -> Result<Option<VibeInstance>> {
        let apis: Vec<Api<VibeInstance>> = if self.settings.claim_namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.settings
                .claim_namespaces
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect()
        };
        for api in apis {
            let list = api.list(&ListParams::default()).await?;
            if let Some(found) = list.items.into_iter().find(|i| claim_hash_matches(i, code)) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Sets `spec.owner.did` of an unowned instance, conditioned on the resourceVersion read:
    /// of concurrent claims exactly one succeeds, the others get [`ClaimProblem::Spent`].
    pub async fn claim_instance(
        &self,
        instance: &VibeInstance,
        code: &str,
        did: &str,
    ) -> Result<std::result::Result<VibeInstance, ClaimProblem>> {
        let namespace = instance.namespace().unwrap_or_default();
        let api: Api<VibeInstance> = Api::namespaced(self.client.clone(), &namespace);
        let name = instance.name_any();
        for _ in 0..8 {
            let Some(mut current) = api.get_opt(&name).await? else {
                return Ok(Err(ClaimProblem::Unknown));
            };
            if current.owner_did().is_some() {
                return Ok(Err(ClaimProblem::Spent));
            }
            if !claim_hash_matches(&current, code) {
                return Ok(Err(ClaimProblem::Unknown));
            }
            current.spec.owner = Some(OwnerSpec {
                did: did.to_string(),
            });
            match api.replace(&name, &PostParams::default(), &current).await {
                Ok(updated) => return Ok(Ok(updated)),
                Err(err) if is_status(&err, 409) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(RegistryError::Contended(format!("{namespace}/{name}")))
    }
}

/// Whether `code` is the owner claim code of `instance` (its hash is published in
/// `status.claimCodeHash`, as hex SHA-256 with or without the `sha256:` prefix).
pub fn claim_hash_matches(instance: &VibeInstance, code: &str) -> bool {
    let Some(stored) = instance
        .status
        .as_ref()
        .and_then(|s| s.claim_code_hash.as_deref())
    else {
        return false;
    };
    let stored = if stored.starts_with("sha256:") {
        stored.to_string()
    } else {
        format!("sha256:{stored}")
    };
    secret::matches(code.trim(), &stored)
}

/// The VibeInstance a self-service registration creates.
pub fn desired_instance(
    at: &InstanceRef,
    did: &str,
    deletion_policy: DeletionPolicy,
) -> VibeInstance {
    let mut instance = VibeInstance::new(
        &at.name,
        VibeInstanceSpec {
            owner: Some(OwnerSpec {
                did: did.to_string(),
            }),
            deletion_policy,
            ..VibeInstanceSpec::default()
        },
    );
    instance.metadata = ObjectMeta {
        name: Some(at.name.clone()),
        namespace: Some(at.namespace.clone()),
        labels: Some(BTreeMap::from([
            (
                "app.kubernetes.io/part-of".to_string(),
                "vibe-cloud".to_string(),
            ),
            (
                "app.kubernetes.io/created-by".to_string(),
                "vibe-control-plane".to_string(),
            ),
            (
                records::IDENTITY_LABEL.to_string(),
                records::short_hash(did),
            ),
        ])),
        ..ObjectMeta::default()
    };
    instance
}
