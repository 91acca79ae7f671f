//! The controller loop started as `main` starts it, on the list-and-watch fake API server and
//! a real s3s-fs: shared by the loop and backup tests.

use super::fake_cluster::FakeCluster;
use super::fixtures::s3_config;
use super::{Scope, readiness, run};
use crate::bucket::BucketClient;
use crate::config::OperatorConfig;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::state::{InstanceIndex, State};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use vibe_test_support::S3Server;

/// The namespace the test operator watches.
pub const NS: &str = "tenants";

/// The operator's controller and readiness, started as `main` starts them.
pub struct Operator {
    pub state: State,
    /// `readiness::log_when_synced`, spawned (and polled) before the controller, as in `main`.
    pub readiness: JoinHandle<()>,
    shutdown: CancellationToken,
    controller: JoinHandle<()>,
    /// Its object store.
    pub s3: S3Server,
}

impl Operator {
    pub async fn start(cluster: &FakeCluster, resync_period: Duration) -> Self {
        let s3 = S3Server::start().await.expect("s3s-fs starts");
        Self::start_on(cluster, resync_period, s3).await
    }

    /// Starts on a given object store (a restart keeps the store: the S3 settings are part of
    /// the children).
    pub async fn start_on(cluster: &FakeCluster, resync_period: Duration, s3: S3Server) -> Self {
        Self::start_with(cluster, s3, |c| c.resync_period = resync_period).await
    }

    /// Starts on `s3` with the test configuration changed by `configure`.
    pub async fn start_with(
        cluster: &FakeCluster,
        s3: S3Server,
        configure: impl FnOnce(&mut OperatorConfig),
    ) -> Self {
        let mut config = OperatorConfig {
            base_domain: "vibe.example".into(),
            s3: s3_config(&s3),
            resync_period: Duration::from_secs(3600),
            ..OperatorConfig::default()
        };
        configure(&mut config);
        let config = Arc::new(config);
        let scopes = Scope::for_namespaces(vec![NS.into()]);
        let index = InstanceIndex::new(scopes.iter().map(Scope::cache).collect());
        let watches = scopes.iter().flat_map(Scope::watch_flags).collect();
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let state = State::new(
            config.clone(),
            index,
            watches,
            metrics,
            registry,
            Leadership::always(),
        );
        let readiness = tokio::spawn(readiness::log_when_synced(state.watches.clone()));
        tokio::task::yield_now().await;
        let shutdown = CancellationToken::new();
        let controller = tokio::spawn(run(
            cluster.client(),
            state.clone(),
            scopes,
            BucketClient::new(&config.s3),
            "vibe-operator-test".into(),
            shutdown.clone(),
        ));
        Self {
            state,
            readiness,
            shutdown,
            controller,
            s3,
        }
    }

    /// The status code of `/readyz` on the admin router.
    pub async fn readyz(&self) -> u16 {
        self.readyz_answer().await.0
    }

    /// The status code and body of `/readyz`.
    pub async fn readyz_answer(&self) -> (u16, String) {
        let request = http::Request::get("/readyz")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = crate::http::router(self.state.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn stop(self) {
        self.stop_keeping_s3().await;
    }

    /// Stops the operator; returns its object store.
    pub async fn stop_keeping_s3(self) -> S3Server {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.controller).await;
        self.s3
    }
}

/// Polls `check` every 50 ms until it holds, for at most `seconds`.
pub async fn eventually<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {seconds} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
