//! `vibe-operator`: runs the VibeInstance controller and the HTTP server side by side
//! (linkerd2 policy-controller style), or renders an instance's objects offline.

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use vibe_operator::bucket::BucketClient;
use vibe_operator::cli::{Cli, Command};
use vibe_operator::control_plane::{self, ControlPlaneContext};
use vibe_operator::controller::{self, Scope};
use vibe_operator::leader::{self, Leadership, LeaseConfig};
use vibe_operator::metrics::{InstancePhases, Metrics};
use vibe_operator::state::{InstanceIndex, State};
use vibe_operator::webhook::server::{self as webhook, WebhookContext};
use vibe_operator::{http, kube_client, render, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.clone() {
        Some(Command::Render { file }) => {
            let manifest = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            print!("{}", render::render(&manifest, &cli.operator)?);
            Ok(())
        }
        Some(Command::ClaimCode(args)) => {
            let client = Client::try_default()
                .await
                .context("no Kubernetes configuration found")?;
            let namespace = cli
                .control_plane
                .registry_namespace
                .clone()
                .unwrap_or_else(|| cli.run.lease_namespace.clone());
            println!(
                "{}",
                control_plane::create_claim_code(client, &namespace, &args).await?
            );
            Ok(())
        }
        Some(Command::Run) | None => run(cli).await,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(&cli.run.log_format);
    let mut registry = Registry::with_prefix("vibe_operator");
    let metrics = Arc::new(Metrics::register(&mut registry));
    let client = kube_client::counted(metrics.kube_requests.clone())
        .await
        .context("no Kubernetes configuration found")?;
    let namespaces = cli.run.namespaces();
    vibe_operator::preflight::check_access(&client, &namespaces).await?;

    let config = Arc::new(cli.operator.clone());
    let scopes = Scope::for_namespaces(namespaces);
    let index = InstanceIndex::new(scopes.iter().map(Scope::cache).collect());
    let watches = scopes.iter().flat_map(Scope::watch_flags).collect();

    InstancePhases::register(&mut registry, index.clone());

    let identity = cli
        .run
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("vibe-operator-{}", std::process::id()));
    let shutdown = CancellationToken::new();
    let (leadership, election) = if cli.run.leader_election_disabled {
        (Leadership::always(), None)
    } else {
        let (tx, leadership) = Leadership::channel(false);
        let api: Api<Lease> = Api::namespaced(client.clone(), &cli.run.lease_namespace);
        let lease = LeaseConfig::new(cli.run.lease_name.clone(), identity.clone());
        (
            leadership,
            Some(tokio::spawn(leader::run(api, lease, tx, shutdown.clone()))),
        )
    };
    let state = State::new(
        config.clone(),
        index,
        watches,
        metrics,
        registry,
        leadership,
    );

    tokio::spawn(controller::readiness::log_when_synced(
        state.watches.clone(),
    ));
    tokio::spawn(shutdown_on_signal(shutdown.clone()));

    let listener = tokio::net::TcpListener::bind(cli.run.http_addr)
        .await
        .with_context(|| format!("binding {}", cli.run.http_addr))?;
    tracing::info!(addr = %cli.run.http_addr, identity = %identity, "serving /metrics, /healthz, /readyz");
    let admin = axum::serve(listener, http::router(state.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // Both servers run on every replica, leader or not. One that fails stops the whole
    // process rather than leaving the controller running without its webhook.
    let webhook = stop_all_on_failure(
        "admission webhook",
        webhook::serve(
            cli.webhook.clone(),
            WebhookContext::over_caches(
                client.clone(),
                &state,
                cli.run.lease_namespace.clone(),
                shutdown.clone(),
            ),
        ),
        shutdown.clone(),
    );
    let control_plane = stop_all_on_failure(
        "control plane",
        control_plane::serve(
            cli.control_plane.clone(),
            ControlPlaneContext {
                client: client.clone(),
                operator_namespace: cli.run.lease_namespace.clone(),
                watched_namespaces: cli.run.namespaces(),
                shutdown: shutdown.clone(),
            },
        ),
        shutdown.clone(),
    );

    let reporter = Reporter {
        controller: "vibe-operator".into(),
        instance: Some(identity),
    };
    let controller = controller::run(
        client,
        state,
        scopes,
        BucketClient::new(&config.s3),
        reporter,
        shutdown.clone(),
    );
    let (admin_result, (), webhook_result, control_plane_result) =
        tokio::join!(admin, controller, webhook, control_plane);
    shutdown.cancel();
    if let Some(election) = election {
        let _ = election.await;
    }
    admin_result.context("admin server failed")?;
    webhook_result.context("admission webhook failed")?;
    control_plane_result.context("control plane failed")?;
    tracing::info!("shut down");
    Ok(())
}

/// Runs `server`; when it fails, logs it and cancels `shutdown`, so the whole operator stops.
async fn stop_all_on_failure(
    name: &str,
    server: impl std::future::Future<Output = anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let result = server.await;
    if let Err(err) = &result {
        tracing::error!(error = %err, server = name, "server failed; shutting down");
        shutdown.cancel();
    }
    result
}

async fn shutdown_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
