//! Names and labels of the objects the operator creates for an instance.
//!
//! Every child lives in the instance's namespace and is named `<instance>-<suffix>`.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "vibe-operator";
/// Value of `app.kubernetes.io/managed-by` on every child (the caches select on it).
pub const MANAGED_BY: &str = "vibe-operator";
/// Label selector matching every child the operator manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=vibe-operator";
/// Label naming the instance a child belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// The part of the system a child belongs to (`app.kubernetes.io/component`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// CouchDB and its config, Service and Secret.
    Database,
    /// The data plane Deployment and Service.
    DataPlane,
    /// Ingress and its TLS Secret.
    Ingress,
    /// Credentials and keys shared by several components.
    Credentials,
    /// The scheduled backup CronJob and its pods.
    Backup,
}

impl Component {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Database => "database",
            Component::DataPlane => "dataplane",
            Component::Ingress => "ingress",
            Component::Credentials => "credentials",
            Component::Backup => "backup",
        }
    }
}

/// Names of every child of one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildNames {
    /// The instance name.
    pub instance: String,
    /// Secret with the CouchDB admin credentials, Erlang cookie and `COUCHDB_SECRET`.
    pub couchdb_secret: String,
    /// ConfigMap with CouchDB's `local.ini` additions.
    pub couchdb_config: String,
    /// CouchDB StatefulSet and its headless Service.
    pub couchdb: String,
    /// Data plane token signing key Secret.
    pub token_key_secret: String,
    /// Owner claim code Secret (only while unowned).
    pub claim_secret: String,
    /// Tenant S3 credentials Secret.
    pub s3_secret: String,
    /// Data plane Deployment and Service.
    pub dataplane: String,
    /// Ingress.
    pub ingress: String,
    /// TLS Secret of the Ingress (written by cert-manager or the provider).
    pub tls_secret: String,
    /// NetworkPolicy guarding CouchDB.
    pub couchdb_policy: String,
    /// NetworkPolicy guarding the data plane.
    pub dataplane_policy: String,
    /// CronJob of the scheduled backups.
    pub backup: String,
}

impl ChildNames {
    /// Names for the instance called `instance`.
    pub fn new(instance: &str) -> Self {
        let n = |suffix: &str| format!("{instance}-{suffix}");
        Self {
            instance: instance.to_string(),
            couchdb_secret: n("couchdb-auth"),
            couchdb_config: n("couchdb-config"),
            couchdb: n("couchdb"),
            token_key_secret: n("token-key"),
            claim_secret: n("claim"),
            s3_secret: n("s3"),
            dataplane: n("dataplane"),
            ingress: instance.to_string(),
            tls_secret: n("tls"),
            couchdb_policy: n("couchdb"),
            dataplane_policy: n("dataplane"),
            backup: n("backup"),
        }
    }

    /// Name of the CouchDB data PVC of pod 0 (StatefulSet naming: `<template>-<set>-<ordinal>`).
    pub fn couchdb_pvc(&self) -> String {
        format!("data-{}-0", self.couchdb)
    }
}

/// Labels selecting the pods of one component of one instance (immutable once applied).
pub fn selector_labels(instance: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE_LABEL.to_string(), instance.to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            component.as_str().to_string(),
        ),
    ])
}

/// The full `app.kubernetes.io/*` label set of a child.
pub fn labels(instance: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(instance, component);
    let name = match component {
        Component::Database => "couchdb",
        _ => "vibe-cloud",
    };
    labels.insert("app.kubernetes.io/name".into(), name.into());
    labels.insert("app.kubernetes.io/part-of".into(), "vibe-cloud".into());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels
}

/// Generated bucket name: `<prefix><namespace>-<name>`, lower-cased, limited to S3's 63
/// characters (a hash suffix keeps long names unique).
pub fn bucket_name(prefix: &str, namespace: &str, name: &str) -> String {
    let raw = format!("{prefix}{namespace}-{name}").to_ascii_lowercase();
    let mut cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.len() > 63 {
        let hash = hex::encode(&Sha256::digest(raw.as_bytes())[..4]);
        cleaned.truncate(63 - 9);
        cleaned = format!("{}-{hash}", cleaned.trim_end_matches('-'));
    }
    let trimmed = cleaned.trim_matches('-').to_string();
    if trimmed.len() < 3 {
        format!("{trimmed}-vibe")
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_prefixed_with_instance_name() {
        let n = ChildNames::new("alice");
        assert_eq!(n.couchdb, "alice-couchdb");
        assert_eq!(n.couchdb_pvc(), "data-alice-couchdb-0");
        assert_eq!(n.ingress, "alice");
        assert_eq!(n.claim_secret, "alice-claim");
    }

    #[test]
    fn labels_are_recommended_set() {
        let l = labels("alice", Component::DataPlane);
        assert_eq!(l["app.kubernetes.io/managed-by"], "vibe-operator");
        assert_eq!(l["app.kubernetes.io/instance"], "alice");
        assert_eq!(l["app.kubernetes.io/component"], "dataplane");
        assert_eq!(l["app.kubernetes.io/part-of"], "vibe-cloud");
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert_eq!(
            bucket_name("vibe-", "tenants", "alice"),
            "vibe-tenants-alice"
        );
        assert_eq!(
            bucket_name("vibe-", "Ten.ants", "Al_ice"),
            "vibe-ten-ants-al-ice"
        );
        let long = bucket_name("vibe-", &"n".repeat(60), &"x".repeat(60));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(long, bucket_name("vibe-", &"n".repeat(60), &"y".repeat(60)));
    }
}
