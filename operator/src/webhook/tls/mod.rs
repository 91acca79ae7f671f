//! TLS for the webhook without cert-manager: a self-made CA and serving certificate kept in a
//! Secret ([`secret`]), renewed well before expiry ([`certs::plan`]), written into the webhook
//! configuration's `caBundle` ([`ca_bundle`]) and swapped into the running server without a
//! restart ([`resolver`]). [`CertDirSource`] is the cert-manager alternative: it serves a
//! mounted `tls.crt`/`tls.key` and reloads them when they change.

pub mod ca_bundle;
pub mod certs;
pub mod resolver;
pub mod secret;

use ca_bundle::{BundleOutcome, ensure_ca_bundle};
use certs::{CertPolicy, Plan, TlsMaterial};
use chrono::Utc;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use resolver::ReloadingResolver;
use secret::TlsError;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Keeps the webhook certificate valid, published and served.
pub struct CertManager {
    secrets: Api<Secret>,
    webhook_configs: Api<ValidatingWebhookConfiguration>,
    secret_name: String,
    webhook_config_name: String,
    dns_names: Vec<String>,
    policy: CertPolicy,
    resolver: Arc<ReloadingResolver>,
    served: Mutex<TlsMaterial>,
}

/// What one [`CertManager::check`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Whether this replica renewed (or created) the material.
    pub action: Plan,
    /// Whether the webhook configuration was written.
    pub bundle: BundleOutcome,
    /// Whether the served certificate was swapped.
    pub reloaded: bool,
}

/// Where the certificate lives and who it is for.
#[derive(Debug, Clone)]
pub struct CertSettings {
    /// Secret holding the material (in the operator's namespace).
    pub secret_name: String,
    /// ValidatingWebhookConfiguration whose `caBundle` is kept up to date.
    pub webhook_config_name: String,
    /// Service name of the webhook.
    pub service: String,
    /// Namespace of the operator (Secret and Service).
    pub namespace: String,
    /// Lifetimes.
    pub policy: CertPolicy,
}

impl CertManager {
    /// Ensures the Secret and the `caBundle`, and returns a manager serving the certificate.
    pub async fn start(client: kube::Client, settings: CertSettings) -> Result<Self, TlsError> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
        let webhook_configs: Api<ValidatingWebhookConfiguration> = Api::all(client);
        let dns_names = certs::service_dns_names(&settings.service, &settings.namespace);
        let ensured = secret::ensure(
            &secrets,
            &settings.secret_name,
            &dns_names,
            &settings.policy,
            Utc::now(),
        )
        .await?;
        ensure_ca_bundle(
            &webhook_configs,
            &settings.webhook_config_name,
            &ensured.material.ca_bundle,
        )
        .await?;
        let resolver = Arc::new(ReloadingResolver::new(certs::certified_key(
            &ensured.material,
        )?));
        Ok(Self {
            secrets,
            webhook_configs,
            secret_name: settings.secret_name,
            webhook_config_name: settings.webhook_config_name,
            dns_names,
            policy: settings.policy,
            resolver,
            served: Mutex::new(ensured.material),
        })
    }

    /// The resolver to build the TLS server with.
    pub fn resolver(&self) -> Arc<ReloadingResolver> {
        self.resolver.clone()
    }

    /// The material served now.
    pub fn served(&self) -> TlsMaterial {
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One round: renew if due (or adopt what another replica renewed), publish the bundle
    /// first, then serve the new certificate.
    pub async fn check(&self, now: chrono::DateTime<Utc>) -> Result<CheckOutcome, TlsError> {
        let ensured = secret::ensure(
            &self.secrets,
            &self.secret_name,
            &self.dns_names,
            &self.policy,
            now,
        )
        .await?;
        let bundle = ensure_ca_bundle(
            &self.webhook_configs,
            &self.webhook_config_name,
            &ensured.material.ca_bundle,
        )
        .await?;
        let reloaded = if ensured.material != self.served() {
            self.resolver.swap(certs::certified_key(&ensured.material)?);
            *self.served.lock().unwrap_or_else(|p| p.into_inner()) = ensured.material;
            tracing::info!(secret = %self.secret_name, "serving a new webhook certificate");
            true
        } else {
            false
        };
        Ok(CheckOutcome {
            action: ensured.action,
            bundle,
            reloaded,
        })
    }

    /// Checks every `interval` until cancelled. Failures are logged and retried next round
    /// (the certificate has weeks of margin).
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(err) = self.check(Utc::now()).await {
                tracing::warn!(error = %err, "webhook certificate check failed");
            }
        }
    }
}

/// Serves a certificate mounted from a Secret that something else (cert-manager) renews:
/// `tls.crt` and `tls.key` in a directory, re-read when they change.
pub struct CertDirSource {
    dir: PathBuf,
    resolver: Arc<ReloadingResolver>,
    served: Mutex<(String, String)>,
}

impl CertDirSource {
    /// Loads the directory's certificate.
    pub fn load(dir: PathBuf) -> Result<Self, TlsError> {
        let (cert, key) = read_dir_pair(&dir)?;
        let resolver = Arc::new(ReloadingResolver::new(key_of(&cert, &key)?));
        Ok(Self {
            dir,
            resolver,
            served: Mutex::new((cert, key)),
        })
    }

    /// The resolver to build the TLS server with.
    pub fn resolver(&self) -> Arc<ReloadingResolver> {
        self.resolver.clone()
    }

    /// Re-reads the files; whether the served certificate changed.
    pub fn check(&self) -> Result<bool, TlsError> {
        let pair = read_dir_pair(&self.dir)?;
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        if *served == pair {
            return Ok(false);
        }
        self.resolver.swap(key_of(&pair.0, &pair.1)?);
        *served = pair;
        tracing::info!(dir = %self.dir.display(), "serving a new webhook certificate from disk");
        Ok(true)
    }

    /// Re-reads every `interval` until cancelled.
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(err) = self.check() {
                tracing::warn!(error = %err, "reloading the mounted webhook certificate failed");
            }
        }
    }
}

fn read_dir_pair(dir: &std::path::Path) -> Result<(String, String), TlsError> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .map_err(|_| TlsError::Cert(certs::CertError::Pem("mounted certificate or key")))
    };
    Ok((
        read(secret::SERVING_CERT_KEY)?,
        read(secret::SERVING_KEY_KEY)?,
    ))
}

fn key_of(cert: &str, key: &str) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let material = TlsMaterial {
        ca_cert: String::new(),
        ca_key: String::new(),
        ca_bundle: String::new(),
        serving_cert: cert.to_string(),
        serving_key: key.to_string(),
    };
    Ok(certs::certified_key(&material)?)
}
