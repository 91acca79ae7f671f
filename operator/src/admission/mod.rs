//! The operator's admission endpoint (issue 8): two servers in the operator binary.
//!
//! - **Webhook** (HTTPS, `--webhook-addr`, default `:9443`): the validating admission webhook of
//!   `VibeInstance` ([`webhook`]), with its own CA and serving certificate ([`tls`]) — or a
//!   cert-manager certificate mounted at `--webhook-cert-dir`.
//! - **Control plane** (HTTP behind the provider's ingress, `--control-plane-addr`, default
//!   `:3001`): registration, login, the identity registry and claims ([`api`]), with all state
//!   in the Kubernetes API ([`registry`]).
//!
//! Both run on every replica (leader or not): the webhook reads the controller's watch cache,
//! the control plane reads and writes the API server with conditional writes.
//!
//! `failurePolicy: Fail` (see docs/admission.md): the webhook enforces host uniqueness and the
//! image allow-list, which are security rules — `Ignore` would let a tenant capture another
//! tenant's host while the webhook is down. The blast radius is small: the configuration
//! matches only `vibeinstances` CREATE/UPDATE, never blocks an object being deleted, and the
//! certificate renews itself a month before it expires.

pub mod api;
pub mod registry;
pub mod tls;
pub mod webhook;

use crate::crd::DeletionPolicy;
use api::ratelimit::RateLimiter;
use api::tokens::Tokens;
use api::{ControlPlane, RegistrationPolicy};
use chrono::Utc;
use registry::records::ClaimPurpose;
use registry::{Registry, RegistrySettings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use webhook::WebhookState;
use webhook::hosts::HostIndex;
use webhook::rules::ImageAllowList;

/// Flags and environment of the admission endpoint.
#[derive(clap::Args, Debug, Clone)]
pub struct AdmissionArgs {
    /// Address of the HTTPS webhook server.
    #[arg(
        long,
        env = "VIBE_WEBHOOK_ADDR",
        default_value = "0.0.0.0:9443",
        global = true
    )]
    pub webhook_addr: SocketAddr,
    /// Do not serve the webhook.
    #[arg(long, env = "VIBE_WEBHOOK_DISABLED", global = true)]
    pub webhook_disabled: bool,
    /// Service through which the API server reaches the webhook (certificate SANs).
    #[arg(
        long,
        env = "VIBE_WEBHOOK_SERVICE",
        default_value = "vibe-operator-webhook",
        global = true
    )]
    pub webhook_service: String,
    /// Secret (in the operator's namespace) holding the webhook CA and certificate.
    #[arg(
        long,
        env = "VIBE_WEBHOOK_SECRET",
        default_value = "vibe-operator-webhook-tls",
        global = true
    )]
    pub webhook_secret: String,
    /// ValidatingWebhookConfiguration whose caBundle the operator keeps current.
    #[arg(
        long,
        env = "VIBE_WEBHOOK_CONFIGURATION",
        default_value = "vibe-operator",
        global = true
    )]
    pub webhook_configuration: String,
    /// Serve `tls.crt`/`tls.key` from this directory instead (cert-manager); reloaded on change.
    #[arg(long, env = "VIBE_WEBHOOK_CERT_DIR", global = true)]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Images instances may use, comma separated, `*` as wildcard; empty allows all.
    #[arg(
        long,
        env = "VIBE_ALLOWED_IMAGES",
        value_delimiter = ',',
        global = true
    )]
    pub allowed_images: Vec<String>,
    /// Address of the control plane HTTP server.
    #[arg(
        long,
        env = "VIBE_CONTROL_PLANE_ADDR",
        default_value = "0.0.0.0:3001",
        global = true
    )]
    pub control_plane_addr: SocketAddr,
    /// Do not serve the control plane API.
    #[arg(long, env = "VIBE_CONTROL_PLANE_DISABLED", global = true)]
    pub control_plane_disabled: bool,
    /// Public URL of the control plane: issuer and audience of its tokens.
    #[arg(
        long,
        env = "VIBE_CONTROL_PLANE_URL",
        default_value = "http://localhost:3001",
        global = true
    )]
    pub control_plane_url: String,
    /// Namespace of the registry's Secrets; the operator's namespace when unset.
    #[arg(long, env = "VIBE_REGISTRY_NAMESPACE", global = true)]
    pub registry_namespace: Option<String>,
    /// Namespace self-service instances are created in.
    #[arg(
        long,
        env = "VIBE_TENANT_NAMESPACE",
        default_value = "vibe-tenants",
        global = true
    )]
    pub tenant_namespace: String,
    /// `deletionPolicy` of self-service instances (what deleting an identity does to its data).
    #[arg(long, env = "VIBE_TENANT_DELETION_POLICY", default_value = "retain", value_parser = parse_deletion_policy, global = true)]
    pub tenant_deletion_policy: DeletionPolicy,
    /// Who may register: open, invite-only (a claim code is required) or closed.
    #[arg(
        long,
        env = "VIBE_REGISTRATION",
        value_enum,
        default_value = "invite-only",
        global = true
    )]
    pub registration: RegistrationPolicy,
    /// A bootstrap admin claim code (e.g. from a Secret); stored hashed, usable once.
    #[arg(
        long,
        env = "VIBE_ADMIN_CLAIM_CODE",
        hide_env_values = true,
        global = true
    )]
    pub admin_claim_code: Option<String>,
    /// Count rate limits against the last X-Forwarded-For address (behind an ingress).
    #[arg(long, env = "VIBE_TRUST_FORWARDED_FOR", global = true)]
    pub trust_forwarded_for: bool,
    /// Sustained requests per minute per client address on register/login/refresh/claims.
    #[arg(
        long,
        env = "VIBE_RATE_LIMIT_PER_MINUTE",
        default_value_t = 30,
        global = true
    )]
    pub rate_limit_per_minute: u32,
    /// Burst of requests per client address.
    #[arg(
        long,
        env = "VIBE_RATE_LIMIT_BURST",
        default_value_t = 10,
        global = true
    )]
    pub rate_limit_burst: u32,
}

fn parse_deletion_policy(text: &str) -> Result<DeletionPolicy, String> {
    match text.to_ascii_lowercase().as_str() {
        "retain" => Ok(DeletionPolicy::Retain),
        "delete" => Ok(DeletionPolicy::Delete),
        _ => Err("expected Retain or Delete".into()),
    }
}

/// Subcommand: manage claim codes without the HTTP API.
#[derive(clap::Args, Debug, Clone)]
pub struct ClaimCodeArgs {
    /// What the code grants.
    #[arg(long, value_enum, default_value = "admin")]
    pub purpose: ClaimPurpose,
    /// Only this DID may use the code.
    #[arg(long)]
    pub for_did: Option<String>,
    /// Validity, e.g. `24h` or `30m`; no expiry when unset.
    #[arg(long, value_parser = crate::config::parse_duration)]
    pub expires_in: Option<Duration>,
}

/// Creates a claim code and returns it (printed once by the caller; only its hash is stored).
pub async fn create_claim_code(
    client: kube::Client,
    registry_namespace: &str,
    args: &ClaimCodeArgs,
) -> anyhow::Result<String> {
    if let Some(did) = &args.for_did {
        vibe_identity::Did::parse(did)?;
    }
    let registry = Registry::new(
        client,
        registry_settings_for(registry_namespace, "", DeletionPolicy::Retain),
    );
    let expires_at = args
        .expires_in
        .map(|d| Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(1)));
    Ok(registry
        .create_claim_code(args.purpose, args.for_did.clone(), expires_at)
        .await?)
}

fn registry_settings_for(
    namespace: &str,
    tenant: &str,
    deletion_policy: DeletionPolicy,
) -> RegistrySettings {
    RegistrySettings {
        namespace: namespace.to_string(),
        tenant_namespace: tenant.to_string(),
        deletion_policy,
        claim_namespaces: Vec::new(),
    }
}

/// What [`run`] needs from the operator.
pub struct AdmissionContext {
    /// Kubernetes client.
    pub client: kube::Client,
    /// The operator's own namespace (webhook Secret, default registry namespace).
    pub operator_namespace: String,
    /// Namespaces the controller watches (searched for claimable instances; empty: all).
    pub watched_namespaces: Vec<String>,
    /// Host lookup over the controller's cache.
    pub hosts: Arc<dyn HostIndex>,
    /// Base domain of default hosts.
    pub base_domain: String,
    /// The platform's backup bucket (`--backup-bucket`), the default of `spec.backup` and
    /// `spec.restoreFrom`.
    pub backup_bucket: Option<String>,
    /// Stops the servers (graceful) and background loops.
    pub shutdown: CancellationToken,
    /// Whether the controller's caches have synced.
    pub cache_ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// How often the webhook certificate is checked (renewal has a 30-day margin).
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(300);
/// How often expired nonce records are removed.
pub const NONCE_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Runs the webhook and control plane servers until `ctx.shutdown` is cancelled.
pub async fn run(args: AdmissionArgs, ctx: AdmissionContext) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    if !args.webhook_disabled {
        let resolver = match &args.webhook_cert_dir {
            Some(dir) => {
                let source = Arc::new(tls::CertDirSource::load(dir.clone())?);
                tokio::spawn(
                    source
                        .clone()
                        .run(Duration::from_secs(30), ctx.shutdown.clone()),
                );
                source.resolver()
            }
            None => {
                let settings = tls::CertSettings {
                    secret_name: args.webhook_secret.clone(),
                    webhook_config_name: args.webhook_configuration.clone(),
                    service: args.webhook_service.clone(),
                    namespace: ctx.operator_namespace.clone(),
                    policy: tls::certs::CertPolicy::default(),
                };
                let manager =
                    Arc::new(tls::CertManager::start(ctx.client.clone(), settings).await?);
                tokio::spawn(
                    manager
                        .clone()
                        .run(CERT_CHECK_INTERVAL, ctx.shutdown.clone()),
                );
                manager.resolver()
            }
        };
        let mut state = WebhookState::new(
            ctx.hosts.clone(),
            ctx.base_domain.clone(),
            ImageAllowList::new(args.allowed_images.clone()),
        );
        state.cache_ready = ctx.cache_ready.clone();
        state.backup_bucket = ctx.backup_bucket.clone();
        let app = webhook::router(state);
        let config = axum_server::tls_rustls::RustlsConfig::from_config(
            tls::resolver::server_config(resolver),
        );
        let handle = axum_server::Handle::new();
        let addr = args.webhook_addr;
        shutdown_on_cancel(handle.clone(), ctx.shutdown.clone());
        tracing::info!(%addr, "serving the admission webhook (HTTPS)");
        tasks.spawn(async move {
            axum_server::bind_rustls(addr, config)
                .handle(handle)
                .serve(app.into_make_service())
                .await
                .map_err(anyhow::Error::from)
        });
    }
    if !args.control_plane_disabled {
        let namespace = args
            .registry_namespace
            .clone()
            .unwrap_or_else(|| ctx.operator_namespace.clone());
        let mut settings = registry_settings_for(
            &namespace,
            &args.tenant_namespace,
            args.tenant_deletion_policy,
        );
        settings.claim_namespaces = ctx.watched_namespaces.clone();
        let registry = Registry::new(ctx.client.clone(), settings);
        if let Some(code) = args
            .admin_claim_code
            .as_deref()
            .filter(|c| !c.trim().is_empty())
            && registry
                .store_claim_code(code, ClaimPurpose::Admin, None, None)
                .await?
        {
            tracing::info!("bootstrap admin claim code stored (hashed)");
        }
        let key = registry.signing_key().await?;
        let state = ControlPlane {
            registry: registry.clone(),
            tokens: Arc::new(Tokens::new(&key, &args.control_plane_url)),
            policy: args.registration,
            clock_skew: vibe_identity::signed::DEFAULT_CLOCK_SKEW,
        };
        let limiter = Arc::new(RateLimiter::new(
            args.rate_limit_per_minute,
            args.rate_limit_burst,
            args.trust_forwarded_for,
        ));
        tokio::spawn(sweep_nonces(registry, ctx.shutdown.clone()));
        let app = api::router(state, limiter);
        let listener = tokio::net::TcpListener::bind(args.control_plane_addr).await?;
        tracing::info!(addr = %args.control_plane_addr, policy = ?args.registration, "serving the control plane API");
        let shutdown = ctx.shutdown.clone();
        tasks.spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(anyhow::Error::from)
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

fn shutdown_on_cancel(handle: axum_server::Handle<SocketAddr>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        shutdown.cancelled().await;
        handle.graceful_shutdown(Some(Duration::from_secs(10)));
    });
}

async fn sweep_nonces(registry: Registry, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(NONCE_SWEEP_INTERVAL) => {}
        }
        match registry.sweep_nonces(Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "expired nonces removed"),
            Err(err) => tracing::warn!(error = %err, "sweeping expired nonces failed"),
        }
    }
}

/// [`run`] as the operator's main joins it: the webhook and control plane over the
/// controller's caches, on every replica. A failure is logged and stops the whole process
/// (cancels `shutdown`) rather than leaving the controller running without its webhook.
pub async fn serve(
    args: AdmissionArgs,
    client: kube::Client,
    state: crate::state::State,
    operator_namespace: String,
    watched_namespaces: Vec<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let ctx = AdmissionContext {
        client,
        operator_namespace,
        watched_namespaces,
        hosts: Arc::new(webhook::hosts::CachedHosts {
            instances: state.instances.clone(),
            config: state.config.clone(),
        }),
        base_domain: state.config.base_domain.clone(),
        backup_bucket: state.config.backup_bucket.clone(),
        shutdown: shutdown.clone(),
        cache_ready: {
            // The webhook reads only the VibeInstance caches; it need not wait for the
            // children's (`/readyz` does).
            let instances = state.instances.clone();
            Arc::new(move || instances.is_synced())
        },
    };
    let result = run(args, ctx).await;
    if let Err(err) = &result {
        tracing::error!(error = %err, "admission endpoint failed; shutting down");
        shutdown.cancel();
    }
    result
}
