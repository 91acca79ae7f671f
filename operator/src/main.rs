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
use vibe_operator::config::{Cli, Command};
use vibe_operator::controller::{self, Scope};
use vibe_operator::leader::{self, Leadership, LeaseConfig};
use vibe_operator::metrics::{InstancePhases, Metrics};
use vibe_operator::state::{InstanceIndex, State};
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
                .admission
                .registry_namespace
                .clone()
                .unwrap_or_else(|| cli.run.lease_namespace.clone());
            println!(
                "{}",
                vibe_operator::admission::create_claim_code(client, &namespace, &args).await?
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
    // Issue 8: register the admission endpoint's metrics in `registry` here.
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
    let admission = vibe_operator::admission::serve(
        cli.admission.clone(),
        client.clone(),
        state.clone(),
        cli.run.lease_namespace.clone(),
        cli.run.namespaces(),
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
    let (admin_result, (), admission_result) = tokio::join!(admin, controller, admission);
    shutdown.cancel();
    if let Some(election) = election {
        let _ = election.await;
    }
    admin_result.context("admin server failed")?;
    admission_result.context("admission endpoint failed")?;
    tracing::info!("shut down");
    Ok(())
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
