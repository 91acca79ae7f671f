//! The webhook's HTTPS server: its flags, its certificate (self-managed or cert-manager's)
//! and serving [`super::router`] over TLS until shutdown.
//!
//! `failurePolicy: Fail` (see docs/admission.md): the webhook enforces host uniqueness and the
//! image allow-list, which are security rules — `Ignore` would let a tenant capture another
//! tenant's host while the webhook is down. The blast radius is small: the configuration
//! matches only `vibeinstances` CREATE/UPDATE, never blocks an object being deleted, and the
//! certificate renews itself a month before it expires.

use super::hosts::{CachedHosts, HostIndex};
use super::rules::ImageAllowList;
use super::{WebhookState, router, tls};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Flags and environment of the webhook server.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
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
}

/// How often the webhook certificate is checked (renewal has a 30-day margin).
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// What the webhook server needs from the operator.
pub struct WebhookContext {
    /// Kubernetes client (the certificate Secret and the webhook configuration).
    pub client: kube::Client,
    /// The operator's own namespace (where the certificate Secret lives).
    pub operator_namespace: String,
    /// Host lookup over the controller's cache.
    pub hosts: Arc<dyn HostIndex>,
    /// Base domain of default hosts.
    pub base_domain: String,
    /// The platform's backup bucket (`--backup-bucket`), the default of `spec.backup` and
    /// `spec.restoreFrom`.
    pub backup_bucket: Option<String>,
    /// Whether the VibeInstance caches have synced (until then the webhook answers 503).
    pub cache_ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Stops the server (graceful) and the certificate loop.
    pub shutdown: CancellationToken,
}

impl WebhookContext {
    /// The context over the controller's caches, as the operator's main builds it.
    pub fn over_caches(
        client: kube::Client,
        state: &crate::state::State,
        operator_namespace: String,
        shutdown: CancellationToken,
    ) -> Self {
        // The webhook reads only the VibeInstance caches; it need not wait for the
        // children's (`/readyz` does).
        let instances = state.instances.clone();
        Self {
            client,
            operator_namespace,
            hosts: Arc::new(CachedHosts {
                instances: state.instances.clone(),
                config: state.config.clone(),
            }),
            base_domain: state.config.base_domain.clone(),
            backup_bucket: state.config.backup_bucket.clone(),
            cache_ready: Arc::new(move || instances.is_synced()),
            shutdown,
        }
    }
}

/// Serves the webhook over HTTPS until `ctx.shutdown` is cancelled; returns at once when
/// `--webhook-disabled`.
pub async fn serve(args: WebhookArgs, ctx: WebhookContext) -> anyhow::Result<()> {
    if args.webhook_disabled {
        return Ok(());
    }
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
            let manager = Arc::new(tls::CertManager::start(ctx.client.clone(), settings).await?);
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
    let app = router(state);
    let config =
        axum_server::tls_rustls::RustlsConfig::from_config(tls::resolver::server_config(resolver));
    let handle = axum_server::Handle::new();
    let addr = args.webhook_addr;
    let shutdown = ctx.shutdown.clone();
    let graceful = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        graceful.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    tracing::info!(%addr, "serving the admission webhook (HTTPS)");
    axum_server::bind_rustls(addr, config)
        .handle(handle)
        .serve(app.into_make_service())
        .await?;
    Ok(())
}
