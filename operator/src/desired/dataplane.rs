//! The tenant's data plane: Deployment and Service, wired to CouchDB, S3 and the Secrets
//! through the data plane's env contract ([`crate::dataplane_env`]).

use super::Inputs;
use super::common::{container_security, env, env_from_secret, http_probe, meta, pod_security};
use super::secrets::{
    CLAIM_CODE_KEY, COUCHDB_PASSWORD_KEY, COUCHDB_USERNAME_KEY, S3_ACCESS_KEY_ID_KEY,
    S3_SECRET_ACCESS_KEY_KEY,
};
use crate::dataplane_env as envs;
use crate::naming::{Component, labels, selector_labels};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// UID the data plane runs as (distroless `nonroot`).
pub const DATAPLANE_UID: i64 = 65532;
/// Port of the data plane Service.
pub const SERVICE_PORT: i32 = 80;

/// The env vars of the data plane container, in a stable order.
pub fn env_vars(inputs: &Inputs<'_>) -> Vec<EnvVar> {
    let names = inputs.names();
    let s3 = &inputs.config.s3;
    let mut vars = vec![
        env(envs::PORT, envs::PORT_VALUE.to_string()),
        env(
            envs::VIBE_METRICS_ADDR,
            format!("0.0.0.0:{}", envs::METRICS_PORT_VALUE),
        ),
        env(envs::PUBLIC_INSTANCE_URL, inputs.url()),
        env(envs::COUCHDB_URL, inputs.couchdb_url()),
        env_from_secret(
            envs::COUCHDB_USER,
            &names.couchdb_secret,
            COUCHDB_USERNAME_KEY,
        ),
        env_from_secret(
            envs::COUCHDB_PASSWORD,
            &names.couchdb_secret,
            COUCHDB_PASSWORD_KEY,
        ),
        env(
            envs::VIBE_SIGNING_KEY_FILE,
            format!("{}/{}", envs::TOKEN_KEY_DIR, envs::TOKEN_KEY_FILE_NAME),
        ),
        env(envs::S3_ENDPOINT, s3.tenant_endpoint()),
        env(envs::S3_REGION, s3.region.clone()),
        env(envs::S3_BUCKET_NAME, inputs.bucket()),
        env(envs::S3_FORCE_PATH_STYLE, s3.path_style.to_string()),
        env_from_secret(envs::S3_ACCESS_KEY, &names.s3_secret, S3_ACCESS_KEY_ID_KEY),
        env_from_secret(
            envs::S3_SECRET_KEY,
            &names.s3_secret,
            S3_SECRET_ACCESS_KEY_KEY,
        ),
    ];
    match inputs.instance.owner_did() {
        Some(did) => vars.push(env(envs::TARGET_USER_DID, did)),
        None => vars.push(env_from_secret(
            envs::VIBE_CLAIM_CODE,
            &names.claim_secret,
            CLAIM_CODE_KEY,
        )),
    }
    if let Some((bucket, key)) = super::backup::restore_source(inputs) {
        vars.push(env(envs::VIBE_RESTORE_BUCKET, bucket));
        vars.push(env(envs::VIBE_RESTORE_OBJECT_KEY, key));
    }
    if let Some(bytes) = inputs
        .instance
        .spec
        .blobs
        .as_ref()
        .and_then(|b| b.quota.as_ref())
        .and_then(|q| quantity_bytes(&q.0))
    {
        vars.push(env(envs::BLOB_QUOTA_BYTES, bytes.to_string()));
    }
    vars
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("50m".into())),
            ("memory".to_string(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("256Mi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// The data plane Deployment.
pub fn deployment(inputs: &Inputs<'_>) -> Deployment {
    let names = inputs.names();
    let spec = &inputs.instance.spec;
    let image = spec
        .dataplane
        .image
        .clone()
        .unwrap_or_else(|| inputs.config.dataplane_image.clone());
    let container = Container {
        name: "dataplane".into(),
        image: Some(image),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: envs::PORT_VALUE,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: envs::METRICS_PORT_VALUE,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        env: Some(env_vars(inputs)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "token-key".into(),
                mount_path: envs::TOKEN_KEY_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        readiness_probe: Some(http_probe(envs::READY_PATH, "http", 2, 10, 3)),
        liveness_probe: Some(http_probe(envs::HEALTH_PATH, "http", 10, 20, 3)),
        resources: Some(
            spec.dataplane
                .resources
                .clone()
                .unwrap_or_else(default_resources),
        ),
        security_context: Some(container_security(true)),
        ..Container::default()
    };
    Deployment {
        metadata: meta(inputs, &names.dataplane, Component::DataPlane),
        spec: Some(DeploymentSpec {
            replicas: Some(if spec.suspend {
                0
            } else {
                spec.dataplane.replicas
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&names.instance, Component::DataPlane)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&names.instance, Component::DataPlane)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security(DATAPLANE_UID)),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "token-key".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(names.token_key_secret.clone()),
                                default_mode: Some(0o440),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The data plane Service (port 80 → container port `http`).
pub fn service(inputs: &Inputs<'_>) -> Service {
    let names = inputs.names();
    Service {
        metadata: meta(inputs, &names.dataplane, Component::DataPlane),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(&names.instance, Component::DataPlane)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Bytes of a Kubernetes quantity with a binary or decimal suffix (`10Gi`, `500M`, `1024`).
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let num: u64 = num.parse().ok()?;
    let factor: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    num.checked_mul(factor)
}
