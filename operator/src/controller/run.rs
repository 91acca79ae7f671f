//! The controller loop: one [`Scope`] per watched namespace (or the cluster), its
//! VibeInstance and child watches feeding the caches, and [`run`] driving reconciles until
//! shutdown.

use super::cache::{Cached, ChildCaches, ChildWriters};
use super::readiness::WatchFlag;
use super::{Context, backup, error_policy, readiness, reconcile};
use crate::bucket::BucketClient;
use crate::crd::VibeInstance;
use crate::error::Result;
use crate::leader::Leadership;
use crate::naming::MANAGED_SELECTOR;
use crate::state::{ScopeCache, State};
use futures::{StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The caches and controller of one watch scope (a namespace, or the whole cluster).
pub struct Scope {
    /// Namespace, or `None` for all namespaces.
    pub namespace: Option<String>,
    /// VibeInstance cache (also read by the admission endpoint through [`State`]).
    pub instances: Store<VibeInstance>,
    instance_writer: Writer<VibeInstance>,
    synced_tx: tokio::sync::watch::Sender<bool>,
    synced: tokio::sync::watch::Receiver<bool>,
    /// Child caches.
    pub caches: ChildCaches,
    writers: ChildWriters,
}

impl Scope {
    /// Empty caches for a scope.
    pub fn new(namespace: Option<String>) -> Self {
        let (instances, instance_writer) = reflector::store();
        let (synced_tx, synced) = readiness::flag();
        let (caches, writers) = ChildCaches::new();
        Self {
            namespace,
            instances,
            instance_writer,
            synced_tx,
            synced,
            caches,
            writers,
        }
    }

    /// One scope per watched namespace, or one for the whole cluster when `namespaces` is empty.
    pub fn for_namespaces(namespaces: Vec<String>) -> Vec<Self> {
        if namespaces.is_empty() {
            vec![Self::new(None)]
        } else {
            namespaces
                .into_iter()
                .map(|ns| Self::new(Some(ns)))
                .collect()
        }
    }

    /// The instance cache and its sync flag, for [`crate::state::InstanceIndex`].
    pub fn cache(&self) -> ScopeCache {
        ScopeCache {
            store: self.instances.clone(),
            synced: self.synced.clone(),
        }
    }

    /// The sync flag of every watch of the scope (its VibeInstances, then each child kind),
    /// named `<namespace>/<resource>` (`*/<resource>` for all namespaces), for `/readyz`.
    pub fn watch_flags(&self) -> Vec<WatchFlag> {
        let scope = self.namespace.as_deref().unwrap_or("*");
        let instances = WatchFlag {
            name: VibeInstance::plural(&()).into_owned(),
            synced: self.synced.clone(),
        };
        std::iter::once(&instances)
            .chain(self.caches.sync_flags())
            .map(|f| f.within(scope))
            .collect()
    }
}

fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Watches managed children of one kind into `writer`, yielding the touched objects as
/// controller triggers and setting `synced` once the initial list is in the cache.
/// managedFields are dropped and each object is kept as compact JSON ([`Cached`]) to keep the
/// caches small.
fn child_stream<K>(
    client: &Client,
    namespace: Option<&str>,
    writer: Writer<Cached<K>>,
    synced: tokio::sync::watch::Sender<bool>,
) -> impl futures::Stream<Item = Result<Cached<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let config = watcher::Config::default()
        .labels(MANAGED_SELECTOR)
        .any_semantic();
    let events = watcher(scoped_api::<K>(client, namespace), config)
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .map_ok(Cached::event)
        .reflect(writer);
    readiness::mark_synced(events, synced).touched_objects()
}

/// Runs the controller of every scope until `shutdown`.
pub async fn run(
    client: Client,
    state: State,
    scopes: Vec<Scope>,
    buckets: BucketClient,
    reporter: Reporter,
    shutdown: CancellationToken,
) {
    let runs = scopes.into_iter().map(|scope| {
        let ctx = Arc::new(Context::new(
            client.clone(),
            reporter.clone(),
            state.config.clone(),
            scope.caches.clone(),
            buckets.clone(),
            state.metrics.clone(),
            state.leadership.clone(),
        ));
        run_scope(
            client.clone(),
            scope,
            ctx,
            state.leadership.clone(),
            shutdown.clone(),
        )
    });
    futures::future::join_all(runs).await;
}

/// The backoff of the Controller's merged trigger stream: none. Each watch above already backs
/// off on its own (`default_backoff`); kube's default would also pause the *merged* stream on
/// any one watch's error, so after an API server restart or a compaction (every watch answered
/// 410 Gone) the watches were resumed one after another with growing pauses (issue 14, seen in
/// `loop_tests::a_watch_past_compaction_gets_410_gone_and_relists`).
struct NoSharedBackoff;

impl Iterator for NoSharedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoSharedBackoff {
    fn reset(&mut self) {}
}

async fn run_scope(
    client: Client,
    scope: Scope,
    ctx: Arc<Context>,
    leadership: Leadership,
    shutdown: CancellationToken,
) {
    let ns = scope.namespace.as_deref();
    let instances = watcher(
        scoped_api::<VibeInstance>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .modify(|o: &mut VibeInstance| o.managed_fields_mut().clear())
    .reflect(scope.instance_writer);
    // Readiness comes from the stream (after the reflector applied the list), not from
    // `Store::wait_until_ready`, which the Controller below already waits on (see readiness).
    let instances = readiness::mark_synced(instances, scope.synced_tx).applied_objects();
    let w = scope.writers;
    let f = w.synced;
    Controller::for_stream(instances, scope.instances)
        .owns_stream(child_stream(&client, ns, w.secrets, f.secrets))
        .owns_stream(child_stream(&client, ns, w.config_maps, f.config_maps))
        .owns_stream(child_stream(&client, ns, w.services, f.services))
        .owns_stream(child_stream(&client, ns, w.stateful_sets, f.stateful_sets))
        .owns_stream(child_stream(&client, ns, w.deployments, f.deployments))
        .owns_stream(child_stream(&client, ns, w.ingresses, f.ingresses))
        .owns_stream(child_stream(
            &client,
            ns,
            w.network_policies,
            f.network_policies,
        ))
        .owns_stream(child_stream(&client, ns, w.cron_jobs, f.cron_jobs))
        // Backup Jobs are owned by the CronJob: mapped to their instance by label.
        .watches_stream(
            child_stream(&client, ns, w.jobs, f.jobs),
            backup::instance_of_job,
        )
        .trigger_backoff(NoSharedBackoff)
        .with_config(
            controller::Config::default()
                .debounce(Duration::from_millis(500))
                .concurrency(ctx.config.reconcile_concurrency),
        )
        .reconcile_all_on(leadership.acquired())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}
