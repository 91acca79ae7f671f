//! The identity control plane (issue 8): registration, login, the identity registry
//! (DID → instance) and claims over HTTP ([`api`]), with all state in the Kubernetes API
//! ([`registry`]). Served by every replica (leader or not) behind the provider's ingress,
//! at `--control-plane-addr` (default `:3001`); it reads and writes the API server with
//! conditional writes, so replicas need no coordination.

pub mod api;
pub mod registry;

use crate::crd::DeletionPolicy;
use api::ratelimit::RateLimiter;
use api::tokens::Tokens;
use api::{ControlPlane, RegistrationPolicy};
use chrono::Utc;
use registry::records::ClaimPurpose;
use registry::{Registry, RegistrySettings};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Flags and environment of the control plane server.
#[derive(clap::Args, Debug, Clone)]
pub struct ControlPlaneArgs {
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

/// What [`serve`] needs from the operator.
pub struct ControlPlaneContext {
    /// Kubernetes client.
    pub client: kube::Client,
    /// The operator's own namespace (the default registry namespace).
    pub operator_namespace: String,
    /// Namespaces the controller watches (searched for claimable instances; empty: all).
    pub watched_namespaces: Vec<String>,
    /// Stops the server (graceful) and the nonce sweep.
    pub shutdown: CancellationToken,
}

/// How often expired nonce records are removed.
pub const NONCE_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// Serves the control plane API until `ctx.shutdown` is cancelled; returns at once when
/// `--control-plane-disabled`.
pub async fn serve(args: ControlPlaneArgs, ctx: ControlPlaneContext) -> anyhow::Result<()> {
    if args.control_plane_disabled {
        return Ok(());
    }
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
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await?;
    Ok(())
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
