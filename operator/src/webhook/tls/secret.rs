//! The webhook's TLS material in a Kubernetes Secret, shared by every operator replica.
//!
//! Layout of the Secret (type `kubernetes.io/tls`, default name `vibe-operator-webhook-tls` in
//! the operator's namespace):
//!
//! | key             | content                                                          |
//! |-----------------|------------------------------------------------------------------|
//! | `tls.crt`       | serving certificate (PEM), SANs = the webhook Service DNS names   |
//! | `tls.key`       | its private key (PKCS#8 PEM)                                     |
//! | `ca.crt`        | the CA that signed `tls.crt` (PEM)                               |
//! | `ca.key`        | the CA's private key (PKCS#8 PEM) — lets any replica renew        |
//! | `ca-bundle.crt` | what the API server trusts: `ca.crt`, then a previous CA still valid |
//!
//! Annotations `cloud.vibeapp.dev/serving-cert-not-after` and `cloud.vibeapp.dev/ca-not-after`
//! show the expiries to `kubectl describe`; the renewal decision reads the certificates.
//!
//! Concurrency: the first replica creates the Secret (create-if-absent); renewals replace it
//! with the `resourceVersion` they read, so of two replicas renewing at once one wins and the
//! other re-reads and adopts the winner's certificate.

use super::certs::{self, CertError, CertPolicy, Plan, TlsMaterial};
use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;

/// Key of the serving certificate.
pub const SERVING_CERT_KEY: &str = "tls.crt";
/// Key of the serving key.
pub const SERVING_KEY_KEY: &str = "tls.key";
/// Key of the current CA certificate.
pub const CA_CERT_KEY: &str = "ca.crt";
/// Key of the current CA key.
pub const CA_KEY_KEY: &str = "ca.key";
/// Key of the trusted CA bundle written to the webhook configuration.
pub const CA_BUNDLE_KEY: &str = "ca-bundle.crt";
/// Annotation showing the serving certificate's expiry.
pub const SERVING_NOT_AFTER_ANNOTATION: &str = "cloud.vibeapp.dev/serving-cert-not-after";
/// Annotation showing the CA's expiry.
pub const CA_NOT_AFTER_ANNOTATION: &str = "cloud.vibeapp.dev/ca-not-after";

/// Why the TLS Secret could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The Kubernetes API failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// Generating or reading certificates failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// Other writers kept winning.
    #[error("the TLS Secret kept changing under us; will retry")]
    Contended,
}

/// Reads TLS material from a Secret; `None` when a key is missing or not UTF-8.
pub fn from_secret(secret: &Secret) -> Option<TlsMaterial> {
    let data = secret.data.as_ref()?;
    let get = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let ca_cert = get(CA_CERT_KEY)?;
    Some(TlsMaterial {
        ca_bundle: get(CA_BUNDLE_KEY).unwrap_or_else(|| ca_cert.clone()),
        ca_cert,
        ca_key: get(CA_KEY_KEY)?,
        serving_cert: get(SERVING_CERT_KEY)?,
        serving_key: get(SERVING_KEY_KEY)?,
    })
}

/// Writes TLS material into `secret` (keeping its metadata, labels and resourceVersion).
pub fn fill_secret(mut secret: Secret, material: &TlsMaterial) -> Secret {
    let data = BTreeMap::from([
        (
            SERVING_CERT_KEY.to_string(),
            ByteString(material.serving_cert.clone().into_bytes()),
        ),
        (
            SERVING_KEY_KEY.to_string(),
            ByteString(material.serving_key.clone().into_bytes()),
        ),
        (
            CA_CERT_KEY.to_string(),
            ByteString(material.ca_cert.clone().into_bytes()),
        ),
        (
            CA_KEY_KEY.to_string(),
            ByteString(material.ca_key.clone().into_bytes()),
        ),
        (
            CA_BUNDLE_KEY.to_string(),
            ByteString(material.ca_bundle.clone().into_bytes()),
        ),
    ]);
    secret.data = Some(data);
    secret.string_data = None;
    secret.type_ = Some("kubernetes.io/tls".into());
    let annotations = secret.annotations_mut();
    for (key, pem) in [
        (SERVING_NOT_AFTER_ANNOTATION, &material.serving_cert),
        (CA_NOT_AFTER_ANNOTATION, &material.ca_cert),
    ] {
        if let Ok(at) = certs::not_after(pem) {
            annotations.insert(key.into(), at.to_rfc3339());
        }
    }
    let labels = secret.labels_mut();
    labels.insert("app.kubernetes.io/name".into(), "vibe-operator".into());
    labels.insert("app.kubernetes.io/component".into(), "webhook".into());
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "vibe-operator".into(),
    );
    secret
}

/// What [`ensure`] found or did.
#[derive(Debug, Clone)]
pub struct Ensured {
    /// The material now in the Secret.
    pub material: TlsMaterial,
    /// What this call changed (`Plan::Keep` when nothing, including when another replica did).
    pub action: Plan,
}

/// Makes sure the Secret `name` holds valid, not-soon-expiring material for `dns_names`,
/// creating or renewing it as needed. Safe to run from several replicas at once.
pub async fn ensure(
    api: &Api<Secret>,
    name: &str,
    dns_names: &[String],
    policy: &CertPolicy,
    now: DateTime<Utc>,
) -> Result<Ensured, TlsError> {
    for _ in 0..5 {
        let existing = api.get_opt(name).await?;
        let material = existing.as_ref().and_then(from_secret);
        let action = certs::plan(material.as_ref(), dns_names, now, policy);
        if action == Plan::Keep {
            let material = material.expect("Keep implies material");
            return Ok(Ensured { material, action });
        }
        let fresh = certs::execute(&action, material.as_ref(), dns_names, now, policy)?;
        let result = match existing {
            Some(secret) => {
                api.replace(name, &PostParams::default(), &fill_secret(secret, &fresh))
                    .await
            }
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        ..ObjectMeta::default()
                    },
                    ..Secret::default()
                };
                api.create(&PostParams::default(), &fill_secret(secret, &fresh))
                    .await
            }
        };
        match result {
            Ok(_) => {
                tracing::info!(secret = name, reason = ?action, "webhook certificate written");
                return Ok(Ensured {
                    material: fresh,
                    action,
                });
            }
            // Another replica created or renewed it first: read theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(TlsError::Contended)
}
