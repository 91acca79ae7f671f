//! Graceful shutdown of long-lived connections.
//!
//! axum's graceful shutdown waits for in-flight HTTP requests, but upgraded WebSockets are
//! no longer requests, and a continuous `_changes` feed (live sync) never finishes by
//! itself. On SIGTERM the binary calls [`Shutdown::begin`]: realtime sockets close with
//! 1001 "going away" (so clients reconnect to the next replica at once instead of waiting
//! for a TCP error), streamed sync feeds end cleanly (replicators resume from their
//! checkpoint), and the process waits for them with [`Shutdown::drained`] before exiting.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// The process's shutdown signal, shared through [`crate::AppState`].
#[derive(Clone, Default)]
pub struct Shutdown {
    signal: CancellationToken,
    connections: TaskTracker,
}

impl Shutdown {
    /// Start shutting down: every [`Shutdown::started`] future completes.
    pub fn begin(&self) {
        self.signal.cancel();
        self.connections.close();
    }

    /// Whether [`Shutdown::begin`] was called.
    pub fn is_started(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Completes once shutdown has begun.
    pub async fn started(&self) {
        self.signal.cancelled().await
    }

    /// A clone of the signal, for streams that must own it (`'static` bodies).
    pub fn signal(&self) -> CancellationToken {
        self.signal.clone()
    }

    /// Register a long-lived connection; keep the token for its whole life.
    pub fn hold(&self) -> TaskTrackerToken {
        self.connections.token()
    }

    /// After [`Shutdown::begin`]: wait, at most `within`, until every held connection has
    /// finished; `false` if some were still open when the time ran out.
    pub async fn drained(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.connections.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_held_connections_only_as_long_as_allowed() {
        let shutdown = Shutdown::default();
        shutdown.begin();
        assert!(
            shutdown.drained(Duration::from_millis(10)).await,
            "nothing held"
        );

        let shutdown = Shutdown::default();
        let held = shutdown.hold();
        let watcher = shutdown.clone();
        let connection = tokio::spawn(async move {
            watcher.started().await;
            drop(held);
        });
        assert!(!shutdown.is_started());
        assert!(
            !shutdown.drained(Duration::from_millis(50)).await,
            "a held connection keeps it open"
        );
        shutdown.begin();
        assert!(shutdown.is_started());
        assert!(shutdown.drained(Duration::from_secs(5)).await);
        connection.await.unwrap();
    }
}
