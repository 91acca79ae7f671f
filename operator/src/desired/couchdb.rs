//! The tenant's CouchDB: `local.ini` ConfigMap, single-node StatefulSet and headless Service.
//!
//! With `[couchdb] single_node = true` CouchDB 3 creates `_users`, `_replicator` and
//! `_global_changes` itself on start-up, so no setup Job is needed (the chart-based install's
//! most common complaint, apache/couchdb-helm#92).

use super::Inputs;
use super::common::{
    container_security, env, env_from_secret, http_probe, meta, pod_security, short_hash,
};
use super::secrets::{
    COUCHDB_PASSWORD_KEY, COUCHDB_SECRET_KEY, COUCHDB_USERNAME_KEY, ERLANG_COOKIE_KEY,
};
use crate::crd::DeletionPolicy;
use crate::naming::{Component, labels, selector_labels};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, ResourceRequirements, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// CouchDB's HTTP port.
pub const PORT: i32 = 5984;
/// UID and GID of the `couchdb` user in the official image.
pub const COUCHDB_UID: i64 = 5984;
/// Largest document CouchDB accepts (bytes); attachments belong in S3.
pub const MAX_DOCUMENT_SIZE: u64 = 8_000_000;
/// Where the ConfigMap's `local.ini` is mounted (read after `default.ini`).
pub const CONFIG_MOUNT_PATH: &str = "/opt/couchdb/etc/local.d/10-vibe.ini";
/// How often CouchDB checks whether the client of a streaming request went away (ms).
pub const DISCONNECT_CHECK_MSEC: u32 = 500;
/// Random extra added to each check, so checks of many requests do not align (ms).
pub const DISCONNECT_CHECK_JITTER_MSEC: u32 = 250;
/// Data directory of the official image.
pub const DATA_PATH: &str = "/opt/couchdb/data";
/// Name of the volume claim template (PVC `data-<name>-couchdb-0`).
pub const DATA_VOLUME: &str = "data";

/// `local.ini` additions: single node (creates the system databases), no anonymous access except
/// `/_up` for the probes, a document size limit, logs to stderr, and a prompt stop of
/// abandoned work: when the data plane's query deadline closes the connection, CouchDB
/// notices within [`DISCONNECT_CHECK_MSEC`] (plus up to [`DISCONNECT_CHECK_JITTER_MSEC`])
/// and stops the `_find`/`_all_docs`/`_changes` it was running, instead of after its
/// default 30–45 s.
pub fn local_ini() -> String {
    format!(
        "[couchdb]\n\
         single_node = true\n\
         max_document_size = {MAX_DOCUMENT_SIZE}\n\
         \n\
         [chttpd]\n\
         bind_address = 0.0.0.0\n\
         port = {PORT}\n\
         require_valid_user = true\n\
         require_valid_user_except_for_up = true\n\
         disconnect_check_msec = {DISCONNECT_CHECK_MSEC}\n\
         disconnect_check_jitter_msec = {DISCONNECT_CHECK_JITTER_MSEC}\n\
         \n\
         [log]\n\
         writer = stderr\n\
         level = info\n"
    )
}

/// The ConfigMap holding `local.ini`.
pub fn config_map(inputs: &Inputs<'_>) -> ConfigMap {
    ConfigMap {
        metadata: meta(inputs, &inputs.names().couchdb_config, Component::Database),
        data: Some(BTreeMap::from([("local.ini".to_string(), local_ini())])),
        ..ConfigMap::default()
    }
}

/// Headless Service giving the StatefulSet pod a stable DNS name.
pub fn headless_service(inputs: &Inputs<'_>) -> Service {
    let names = inputs.names();
    Service {
        metadata: meta(inputs, &names.couchdb, Component::Database),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(&names.instance, Component::Database)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            publish_not_ready_addresses: Some(false),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("256Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("1Gi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// The volume claim template for a new StatefulSet.
pub fn volume_claim_template(inputs: &Inputs<'_>) -> PersistentVolumeClaim {
    let spec = &inputs.instance.spec.couchdb;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(labels(&inputs.name(), Component::Database)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    spec.storage.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The single-node CouchDB StatefulSet. `existing_templates` are the volume claim templates of
/// the StatefulSet already in the cluster: they are immutable, so they are carried over rather
/// than re-derived (a bigger `spec.couchdb.storage` needs a PVC expansion, see docs/operator.md).
pub fn stateful_set(
    inputs: &Inputs<'_>,
    existing_templates: Option<&[PersistentVolumeClaim]>,
) -> StatefulSet {
    let names = inputs.names();
    let spec = &inputs.instance.spec;
    let secret = names.couchdb_secret.as_str();
    let image = spec
        .couchdb
        .image
        .clone()
        .unwrap_or_else(|| inputs.config.couchdb_image.clone());
    let templates = existing_templates
        .map(<[PersistentVolumeClaim]>::to_vec)
        .unwrap_or_else(|| vec![volume_claim_template(inputs)]);
    let when_deleted = match spec.deletion_policy {
        DeletionPolicy::Delete => "Delete",
        DeletionPolicy::Retain => "Retain",
    };
    let container = Container {
        name: "couchdb".into(),
        image: Some(image),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![
            env_from_secret("COUCHDB_USER", secret, COUCHDB_USERNAME_KEY),
            env_from_secret("COUCHDB_PASSWORD", secret, COUCHDB_PASSWORD_KEY),
            env_from_secret("COUCHDB_SECRET", secret, COUCHDB_SECRET_KEY),
            env_from_secret("COUCHDB_ERLANG_COOKIE", secret, ERLANG_COOKIE_KEY),
            // epmd only on loopback: nothing outside the pod reaches 4369 even without policies.
            env("ERL_EPMD_ADDRESS", "127.0.0.1"),
        ]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: DATA_PATH.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_MOUNT_PATH.into(),
                sub_path: Some("local.ini".into()),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        readiness_probe: Some(http_probe("/_up", "http", 5, 10, 3)),
        liveness_probe: Some(http_probe("/_up", "http", 30, 20, 6)),
        startup_probe: Some(http_probe("/_up", "http", 5, 5, 60)),
        resources: Some(
            spec.couchdb
                .resources
                .clone()
                .unwrap_or_else(default_resources),
        ),
        // The image's entrypoint writes the admin and cookie into etc/ at start-up.
        security_context: Some(container_security(false)),
        ..Container::default()
    };
    let pod_labels = labels(&names.instance, Component::Database);
    let annotations = BTreeMap::from([(
        "cloud.vibeapp.dev/config-hash".to_string(),
        short_hash(&local_ini()),
    )]);
    StatefulSet {
        metadata: meta(inputs, &names.couchdb, Component::Database),
        spec: Some(StatefulSetSpec {
            replicas: Some(if spec.suspend { 0 } else { 1 }),
            service_name: Some(names.couchdb.clone()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&names.instance, Component::Database)),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(when_deleted.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security(COUCHDB_UID)),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: names.couchdb_config.clone(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(templates),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}
