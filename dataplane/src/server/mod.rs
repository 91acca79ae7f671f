//! The HTTP/1.1 server of the data plane: accept loop, per-connection timeouts and
//! graceful shutdown ([`serve`]), and the handling of request bodies an answer left
//! unread ([`unread`]). Connections end with a lingering close ([`linger`]).
//!
//! Production runs behind an ingress that speaks HTTP/1.1 to its backends, so only
//! HTTP/1.1 (with upgrades, for WebSockets) is served.

mod linger;
mod settings;
mod socket;
mod timer;
pub mod unread;

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use settings::{HttpArgs, HttpSettings};
use socket::ServerSocket;
use timer::{HeadTimer, LastRead};

/// Serve `app` on `listener` until `signal` completes, then stop accepting, let every
/// connection finish its request under way, and return once all have closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: HttpSettings,
    signal: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let (tcp, _peer) = tokio::select! {
            _ = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(
            tcp,
            app.clone(),
            settings.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of one accepted connection that say nothing about the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    tcp: TcpStream,
    app: Router,
    settings: HttpSettings,
    stop: CancellationToken,
) {
    let last_read = LastRead::default();
    let io = TokioIo::new(ServerSocket::new(tcp, last_read.clone()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(HeadTimer::new(
            last_read,
            settings.idle_timeout,
            settings.header_read_timeout,
        ))
        // Only switches the timer on; `HeadTimer` picks the actual deadlines.
        .header_read_timeout(settings.header_read_timeout);
    let connection = builder
        .serve_connection(io, TowerToHyperService::new(app))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
