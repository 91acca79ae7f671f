//! `vibe-dataplane` binary: parse configuration, serve the router, shut down gracefully.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vibe_dataplane::config::Cli;
use vibe_dataplane::{AppState, auth, router};

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(vibe_dataplane::config::Command::Backup(args)) = cli.command.take() {
        return vibe_dataplane::export::backup::main(cli, args).await;
    }
    let json_logs = cli.log_format == "json";
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("vibe-dataplane: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if json_logs {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    raise_open_file_limit();
    let listen = config.listen;
    let http_settings = config.http.clone();
    let state = match AppState::new(config) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("vibe-dataplane: cannot build the CouchDB client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("vibe-dataplane: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };

    if let Some(addr) = state.config.metrics_listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "serving /metrics");
                tokio::spawn(vibe_dataplane::metrics::serve(listener, state.clone()));
            }
            Err(e) => {
                eprintln!("vibe-dataplane: cannot listen on {addr} for metrics: {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    // Start-up: create and load the system database as soon as CouchDB answers, in the
    // background, so the process serves /health (and /ready's 503) meanwhile.
    vibe_dataplane::startup::spawn(&state);
    tokio::spawn(auth::sweep_nonces_forever(state.clone()));
    tokio::spawn(vibe_dataplane::blobs::sweep_forever(state.clone()));

    tracing::info!(%listen, version = env!("CARGO_PKG_VERSION"), "vibe-dataplane listening");
    let shutdown = state.shutdown.clone();
    let on_signal = state.shutdown.clone();
    let served =
        vibe_dataplane::server::serve(listener, router(state), http_settings, async move {
            shutdown_signal().await;
            // Tell WebSockets and streamed feeds to wind down while HTTP requests finish.
            on_signal.begin();
        })
        .await;
    // Also after a server error, which ends `serve` without the signal.
    shutdown.begin();
    if !shutdown.drained(std::time::Duration::from_secs(5)).await {
        tracing::warn!("some connections were still open after the shutdown grace period");
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vibe-dataplane: server error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every WebSocket and every live sync feed holds a file descriptor. Distributions start
/// services with a soft limit of 1024 but a much higher hard limit; raise the soft limit
/// to the hard one, as servers that hold many connections do.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
