//! The `VibeInstance` custom resource (`cloud.vibeapp.dev/v1alpha1`).
//!
//! Every `///` comment on a field becomes its description in the generated CRD, which is what
//! `kubectl explain vibeinstance.spec…` prints. Regenerate `crds/vibeinstance.yaml` with
//! `cargo run -p vibe-operator --bin crdgen` after changing anything here.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API group of every Vibe Cloud custom resource.
pub const GROUP: &str = "cloud.vibeapp.dev";
/// Finalizer that guards bucket and volume cleanup.
pub const FINALIZER: &str = "cloud.vibeapp.dev/cleanup";
/// Annotation that pauses reconciliation when set to `disabled` (CloudNativePG style).
pub const RECONCILE_ANNOTATION: &str = "cloud.vibeapp.dev/reconcile";
/// Value of [`RECONCILE_ANNOTATION`] that pauses reconciliation.
pub const RECONCILE_DISABLED: &str = "disabled";

/// Desired state of one tenant's personal cloud.
// Several `printcolumn(type_ = …)` entries are not duplicates, whatever the lint thinks.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cloud.vibeapp.dev",
    version = "v1alpha1",
    kind = "VibeInstance",
    plural = "vibeinstances",
    shortname = "vibe",
    namespaced,
    status = "VibeInstanceStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "A Vibe Cloud instance: one person's document store (CouchDB), blob bucket (S3) and data plane, reachable at one host.",
    printcolumn(
        name = "Owner",
        type_ = "string",
        json_path = ".status.owner",
        description = "DID of the instance owner"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        description = "Public URL of the data plane"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether every part of the instance is ready"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(oldSelf.owner) || (has(self.owner) && self.owner.did == oldSelf.owner.did)").message("spec.owner cannot be changed or removed once set"))]
#[x_kube(validation = Rule::new("(has(oldSelf.blobs) && has(oldSelf.blobs.bucket)) == (has(self.blobs) && has(self.blobs.bucket)) && (!(has(self.blobs) && has(self.blobs.bucket)) || self.blobs.bucket == oldSelf.blobs.bucket)").message("spec.blobs.bucket is immutable: it can only be set when the instance is created"))]
#[x_kube(validation = Rule::new("has(self.restoreFrom) == has(oldSelf.restoreFrom) && (!has(self.restoreFrom) || self.restoreFrom == oldSelf.restoreFrom)").message("spec.restoreFrom can only be set when the instance is created"))]
#[x_kube(validation = Rule::new("!has(self.restoreFrom) || has(self.owner)").message("spec.restoreFrom needs spec.owner: a backup is encrypted to its owner, and only that owner can restore it"))]
#[serde(rename_all = "camelCase")]
pub struct VibeInstanceSpec {
    /// The person who owns this instance. Without it the instance runs unowned and waits to be
    /// claimed with the claim code the operator stores in the Secret `<name>-claim`. Once set it
    /// cannot be changed or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerSpec>,

    /// Public host name of the instance (no scheme, no port). Defaults to
    /// `<name>.<operator base domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub host: Option<String>,

    /// Scale CouchDB and the data plane to zero while keeping every piece of data. The instance
    /// reports phase `Suspended`.
    #[serde(default)]
    pub suspend: bool,

    /// What happens to the bucket and the CouchDB volume when the instance is deleted: `Retain`
    /// (default) keeps both so the instance can be re-adopted, `Delete` removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// The tenant's CouchDB (single node StatefulSet).
    #[serde(default)]
    pub couchdb: CouchDbSpec,

    /// The tenant's data plane (the Vibe API server).
    #[serde(default)]
    pub dataplane: DataPlaneSpec,

    /// Blob storage in the operator's S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobs: Option<BlobsSpec>,

    /// How the instance is exposed through the cluster's ingress controller.
    #[serde(default)]
    pub ingress: IngressSpec,

    /// Scheduled backups: a CronJob runs `vibe-dataplane backup`, which writes the whole
    /// instance, always encrypted to the owner's DID key (the provider cannot read it), to the
    /// backup bucket and deletes the oldest beyond `retention`. Only an owned instance is
    /// backed up. The last run is reported in `status.lastBackup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// Create this instance from a backup. Only when the instance is created, and only with
    /// `spec.owner` (the backup's owner). The operator points the data plane at the backup;
    /// the owner then runs `vibe restore`, which fetches it, decrypts it with their key and
    /// imports it (the operator and the data plane cannot decrypt it). Progress is in
    /// `status.restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFromSpec>,
}

/// Scheduled backup settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to back up, in cron syntax (five fields: minute hour day-of-month month
    /// day-of-week, in UTC; or `@daily`, `@hourly`, `@weekly`, `@monthly`, `@yearly`), e.g.
    /// `30 2 * * *`. Checked by the admission webhook.
    #[schemars(length(min = 1, max = 100))]
    pub schedule: String,
    /// How many backups to keep; after each successful backup the oldest ones beyond this
    /// count are deleted.
    #[serde(default = "default_retention")]
    #[schemars(range(min = 1, max = 1000))]
    pub retention: u32,
    /// Bucket to write to. Defaults to the platform's backup bucket (operator flag
    /// `--backup-bucket`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: Option<String>,
    /// Key prefix of this instance's backups (ending in `/`). Defaults to
    /// `<operator --backup-prefix><namespace>/<name>/`. Retention only deletes backups under
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[^/].*/$"))]
    pub prefix: Option<String>,
    /// Pause the schedule without removing it (the CronJob is suspended). A suspended
    /// instance (`spec.suspend`) is not backed up either.
    #[serde(default)]
    pub suspend: bool,
}

fn default_retention() -> u32 {
    7
}

/// Where a restored instance's backup is. Either `instance` and `backup` (a backup written
/// by this operator for an instance of this namespace, in the platform's backup bucket), or
/// `objectKey` (and optionally `bucket`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.instance) && has(self.backup) && !has(self.objectKey)) || (!has(self.instance) && !has(self.backup) && has(self.objectKey))",
    "message": "set either instance and backup, or objectKey"
}]))]
pub struct RestoreFromSpec {
    /// Name of the instance (in this namespace) the backup was taken of; it may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Name of the backup: `status.lastBackup.name` of that instance, e.g.
    /// `20261204T023000.123Z-1a2b3c4d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{8}$"))]
    pub backup: Option<String>,
    /// Full object key of the backup (`status.lastBackup.objectKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub object_key: Option<String>,
    /// Bucket of `objectKey`; defaults to the platform's backup bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

/// Identity of an instance owner.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OwnerSpec {
    /// The owner's decentralized identifier, `did:vibe:z…` (base58btc multibase of an Ed25519
    /// public key).
    #[schemars(regex(pattern = r"^did:vibe:z[1-9A-HJ-NP-Za-km-z]{40,60}$"))]
    pub did: String,
}

/// Deletion policy for the data that outlives Kubernetes objects.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the bucket and the CouchDB PersistentVolumeClaim.
    #[default]
    Retain,
    /// Empty and delete the bucket, delete the CouchDB PersistentVolumeClaim.
    Delete,
}

/// CouchDB settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CouchDbSpec {
    /// Container image. Defaults to the operator's pinned CouchDB 3.x image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Size of the data volume.
    #[serde(default = "default_storage")]
    pub storage: Quantity,
    /// StorageClass of the data volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// CPU and memory requests and limits of the CouchDB container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for CouchDbSpec {
    fn default() -> Self {
        Self {
            image: None,
            storage: default_storage(),
            storage_class_name: None,
            resources: None,
        }
    }
}

fn default_storage() -> Quantity {
    Quantity("5Gi".into())
}

/// Data plane settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneSpec {
    /// Container image. Defaults to the operator's data plane image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Number of data plane pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 10))]
    pub replicas: i32,
    /// CPU and memory requests and limits of the data plane container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for DataPlaneSpec {
    fn default() -> Self {
        Self {
            image: None,
            replicas: default_replicas(),
            resources: None,
        }
    }
}

fn default_replicas() -> i32 {
    1
}

/// Blob storage settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlobsSpec {
    /// Maximum total size of the tenant's blobs, enforced by the data plane (e.g. `10Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quantity>,
    /// Name of the bucket to use instead of the generated one (for re-adopting a retained bucket).
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: Option<String>,
}

/// Ingress settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// IngressClass to use. Defaults to the operator's ingress class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// cert-manager ClusterIssuer that issues the TLS certificate. Defaults to the operator's
    /// cluster issuer; without one the TLS Secret `<name>-tls` must be provided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_issuer: Option<String>,
    /// Extra annotations for the Ingress (for controller-specific settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Observed state of a VibeInstance, written by the operator only.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VibeInstanceStatus {
    /// Lifecycle phase: Provisioning, Ready, Suspended, Paused, Failed or Deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Ready, CouchDBReady, BucketReady, DataPlaneReady, IngressReady, Claimed and, while the
    /// reconcile annotation is `disabled`, ReconcilePaused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Public URL of the instance's data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Name of the instance's bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// DID of the owner, once the instance is owned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// SHA-256 (hex) of the owner claim code while the instance is unowned. The plain code is in
    /// the Secret `<name>-claim`; the admission endpoint compares against this hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_code_hash: Option<String>,
    /// The last scheduled backup that finished (succeeded, failed or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    /// The backup this instance is restored from (with `spec.restoreFrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// Outcome of one scheduled backup.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// `Succeeded`, `Failed` or `Skipped` (the instance had no owner: nothing written).
    pub outcome: String,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// When the CronJob scheduled it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// The Job that ran it.
    pub job: String,
    /// Bucket of the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Object key of the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    /// The backup's name, for `spec.restoreFrom.backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size of the encrypted archive in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 (hex) of the encrypted archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Older backups deleted by retention in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u32>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The backup a restored instance is created from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// Bucket of the backup.
    pub bucket: String,
    /// Object key of the backup.
    pub object_key: String,
    /// `Available` (the backup is there; the owner fetches, decrypts and imports it with
    /// `vibe restore`), `BackupNotFound` or `Unknown` (the object store could not be asked),
    /// until the data plane reports the end of the restore: `Restored` (an import completed)
    /// or `Abandoned` (the owner gave the restore up). Those two are final: nothing is
    /// checked any more.
    pub phase: String,
    /// Size of the backup in bytes, once found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Why the backup was not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the restore ended (`Restored` or `Abandoned`; RFC 3339), as the data plane
    /// recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The export id of the archive imported (`Restored`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_id: Option<String>,
}

/// Lifecycle phase of an instance.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Children are being created or are not ready yet.
    Provisioning,
    /// Every part is ready.
    Ready,
    /// `spec.suspend` is true; pods are scaled to zero.
    Suspended,
    /// Reconciliation is disabled by annotation.
    Paused,
    /// Something needs attention (see the conditions).
    Failed,
    /// The instance is being deleted.
    Deleting,
}

impl Phase {
    /// Every phase, for metrics.
    pub const ALL: [Phase; 6] = [
        Phase::Provisioning,
        Phase::Ready,
        Phase::Suspended,
        Phase::Paused,
        Phase::Failed,
        Phase::Deleting,
    ];

    /// The name as written to the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Provisioning => "Provisioning",
            Phase::Ready => "Ready",
            Phase::Suspended => "Suspended",
            Phase::Paused => "Paused",
            Phase::Failed => "Failed",
            Phase::Deleting => "Deleting",
        }
    }
}

impl VibeInstance {
    /// Whether the pause annotation is set.
    pub fn is_paused(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RECONCILE_ANNOTATION))
            .is_some_and(|v| v == RECONCILE_DISABLED)
    }

    /// The owner's DID, if the instance is owned.
    pub fn owner_did(&self) -> Option<&str> {
        self.spec.owner.as_ref().map(|o| o.did.as_str())
    }

    /// A condition of the current status, by type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
    }
}
