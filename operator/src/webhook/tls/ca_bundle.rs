//! Writes the trusted CA bundle into the ValidatingWebhookConfiguration's `caBundle`.
//!
//! The chart creates the configuration without a `caBundle`; every replica keeps it equal to the
//! Secret's `ca-bundle.crt` (a `helm upgrade` that blanks it is repaired on the next check).
//! The write is a read-modify-replace conditioned on `resourceVersion`, and nothing is written
//! when every webhook already carries the bundle.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Api;
use kube::api::PostParams;

/// Outcome of [`ensure_ca_bundle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleOutcome {
    /// Every webhook already had the bundle.
    Unchanged,
    /// The configuration was updated.
    Updated,
    /// The configuration does not exist (yet).
    Missing,
}

/// Sets `caBundle` of every webhook in the configuration `name` to `bundle_pem`.
pub async fn ensure_ca_bundle(
    api: &Api<ValidatingWebhookConfiguration>,
    name: &str,
    bundle_pem: &str,
) -> Result<BundleOutcome, kube::Error> {
    for _ in 0..5 {
        let Some(mut config) = api.get_opt(name).await? else {
            tracing::warn!(
                webhook_configuration = name,
                "ValidatingWebhookConfiguration not found; caBundle not written"
            );
            return Ok(BundleOutcome::Missing);
        };
        if !set_bundle(&mut config, bundle_pem) {
            return Ok(BundleOutcome::Unchanged);
        }
        match api.replace(name, &PostParams::default(), &config).await {
            Ok(_) => {
                tracing::info!(webhook_configuration = name, "caBundle updated");
                return Ok(BundleOutcome::Updated);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => return Err(err),
        }
    }
    Err(kube::Error::Api(
        kube::core::Status::failure("the webhook configuration kept changing", "Conflict")
            .with_code(409)
            .boxed(),
    ))
}

/// Puts the bundle into every webhook's client config; whether anything changed.
pub fn set_bundle(config: &mut ValidatingWebhookConfiguration, bundle_pem: &str) -> bool {
    let wanted = ByteString(bundle_pem.as_bytes().to_vec());
    let mut changed = false;
    for webhook in config.webhooks.iter_mut().flatten() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&wanted) {
            webhook.client_config.ca_bundle = Some(wanted.clone());
            changed = true;
        }
    }
    changed
}
