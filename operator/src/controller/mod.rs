//! The VibeInstance controller: watches, reconcile, finalizer cleanup and error policy.
//!
//! One reconcile of a live instance: ensure the bucket (S3), build the desired children
//! ([`crate::desired`]), apply with server-side apply only the ones that differ from the watch
//! cache ([`drift`]), derive the status from what was observed ([`status`]) and patch it only
//! when it changed, publishing one Event per condition transition. A healthy instance therefore
//! causes no Kubernetes API request at all on a resync.

pub mod backup;
pub mod cache;
pub mod drift;
pub mod readiness;
pub mod status;
pub mod verified;
pub mod written;

use crate::bucket::BucketClient;
use crate::config::OperatorConfig;
use crate::crd::{DeletionPolicy, FINALIZER, VibeInstance, VibeInstanceStatus};
use crate::desired::{self, Child, ExistingSecrets, Inputs};
use crate::error::{Error, Result, backoff};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::naming::{FIELD_MANAGER, MANAGED_SELECTOR};
use crate::state::{ScopeCache, State};
use cache::{Cached, ChildCaches, ChildWriters};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use readiness::WatchFlag;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event publisher.
    pub recorder: Recorder,
    /// Operator configuration.
    pub config: Arc<OperatorConfig>,
    /// Watch caches of managed children.
    pub caches: ChildCaches,
    /// Object store client.
    pub buckets: BucketClient,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether this replica may write.
    pub leadership: Leadership,
    /// Buckets checked recently (skipped until the next resync).
    pub verified_buckets: verified::VerifiedBuckets,
    failures: Mutex<HashMap<String, u32>>,
    /// Children this replica wrote that the caches may not hold yet.
    written: written::Written,
}

impl Context {
    /// Builds a context.
    pub fn new(
        client: Client,
        reporter: Reporter,
        config: Arc<OperatorConfig>,
        caches: ChildCaches,
        buckets: BucketClient,
        metrics: Arc<Metrics>,
        leadership: Leadership,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            verified_buckets: verified::VerifiedBuckets::new(config.resync_period),
            config,
            caches,
            buckets,
            metrics,
            leadership,
            failures: Mutex::default(),
            written: written::Written::default(),
        }
    }

    fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().expect("failure map lock");
        let n = failures.entry(key.to_string()).or_default();
        *n += 1;
        *n
    }

    fn reset_failures(&self, key: &str) {
        self.failures.lock().expect("failure map lock").remove(key);
    }

    /// A Secret from the cache, or as this replica wrote it when the cache has not seen it
    /// yet ([`written`]).
    fn cached_secret(
        &self,
        namespace: &str,
        name: &str,
        recall: &written::Recall,
    ) -> Result<Option<Secret>> {
        let cached = cache::object(&self.caches.secrets, namespace, name)?;
        let recalled = self
            .written
            .recall("Secret", namespace, name, cached.is_some(), recall);
        match (cached, recalled) {
            (Some(cached), _) => Ok(Some(cached)),
            (None, Some(value)) => Ok(Some(serde_json::from_value(value)?)),
            (None, None) => Ok(None),
        }
    }

    /// Remembers a child the API server just answered a write of ([`written`]).
    fn remember_written<K: Resource<DynamicType = ()> + Serialize>(
        &self,
        namespace: &str,
        object: &K,
    ) -> Result<()> {
        self.written.remember(
            &K::kind(&()),
            namespace,
            &object.name_any(),
            serde_json::to_value(object)?,
        );
        Ok(())
    }

    /// [`BucketClient::ensure`], unless the bucket was found in order within the resync
    /// period ([`verified`]).
    async fn ensure_bucket(
        &self,
        bucket: &str,
    ) -> std::result::Result<crate::bucket::BucketState, crate::bucket::BucketError> {
        if let Some(state) = self.verified_buckets.get(bucket) {
            return Ok(state);
        }
        let result = self.buckets.ensure(bucket).await;
        if let Ok(state) = &result {
            self.verified_buckets.remember(bucket, *state);
        }
        result
    }

    async fn publish(&self, instance: &VibeInstance, reason: &str, note: String, warning: bool) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        match self
            .recorder
            .publish(&event, &instance.object_ref(&()))
            .await
        {
            Ok(()) => self.metrics.write("event"),
            Err(e) => warn!(error = %e, reason, "could not publish event"),
        }
    }
}

fn key(instance: &VibeInstance) -> String {
    format!(
        "{}/{}",
        instance.namespace().unwrap_or_default(),
        instance.name_any()
    )
}

/// Reconciles one instance (entry point of the controller, and of the tests).
pub async fn reconcile(instance: Arc<VibeInstance>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.leadership.is_leader() {
        // Standby replicas keep their caches warm and serve HTTP; they never write.
        return Ok(Action::await_change());
    }
    let span = info_span!(
        "reconcile",
        instance = %instance.name_any(),
        namespace = %instance.namespace().unwrap_or_default()
    );
    async move {
        let _timer = ctx.metrics.start_reconcile();
        let ns = instance
            .namespace()
            .ok_or(Error::InvalidInstance("the instance has no namespace"))?;
        let api: Api<VibeInstance> = Api::namespaced(ctx.client.clone(), &ns);
        let key = key(&instance);
        let action = finalizer(&api, FINALIZER, instance, |event| async {
            match event {
                FinalizerEvent::Apply(i) => apply(&i, &ctx).await,
                FinalizerEvent::Cleanup(i) => cleanup(&i, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))?;
        ctx.reset_failures(&key);
        Ok(action)
    }
    .instrument(span)
    .await
}

/// Requeues a failed reconcile with per-instance exponential backoff and counts the failure.
pub fn error_policy(instance: Arc<VibeInstance>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.record_failure(&key(&instance));
    let retry_in = backoff(failures);
    ctx.metrics.failure(error.metric_label());
    warn!(
        instance = %instance.name_any(),
        namespace = %instance.namespace().unwrap_or_default(),
        error = %error,
        failures,
        retry_in_secs = retry_in.as_secs(),
        "reconcile failed"
    );
    Action::requeue(retry_in)
}

/// How long a reconcile waits for the child caches to list before it fails (and is retried
/// with the error policy's backoff) instead of holding its slot.
const CACHE_SYNC_WAIT: Duration = Duration::from_secs(30);

/// Children observed after applying (the apply response, else the cache).
#[derive(Default)]
struct Seen {
    stateful_set: Option<StatefulSet>,
    deployment: Option<Deployment>,
    ingress: Option<Ingress>,
    claim_code: Option<String>,
}

async fn apply(instance: &VibeInstance, ctx: &Context) -> Result<Action> {
    let now = Timestamp::now();
    if instance.is_paused() {
        write_status(instance, status::paused(instance, now), ctx).await?;
        return Ok(Action::await_change());
    }
    // Until every child cache holds its initial list, a child missing from it may exist.
    if let Err(pending) = ctx.caches.wait_until_synced(CACHE_SYNC_WAIT).await {
        return Err(Error::CachesNotSynced(pending.join(", ")));
    }
    let inputs = Inputs::new(instance, &ctx.config);
    let ns = inputs.namespace();
    let names = inputs.names();

    let bucket = ctx.ensure_bucket(&inputs.bucket()).await;
    match &bucket {
        Ok(state) if state.created => info!(bucket = %inputs.bucket(), "bucket created"),
        Ok(_) => {}
        Err(e) => warn!(bucket = %inputs.bucket(), error = %e, "bucket check failed"),
    }

    let caches = &ctx.caches;
    let recall = written::Recall::default();
    let existing = ExistingSecrets {
        couchdb_auth: ctx.cached_secret(&ns, &names.couchdb_secret, &recall)?,
        token_key: ctx.cached_secret(&ns, &names.token_key_secret, &recall)?,
        claim: match instance.owner_did() {
            None => ctx.cached_secret(&ns, &names.claim_secret, &recall)?,
            Some(_) => None,
        },
        couchdb_volume_templates: None,
    };
    let stateful_set = cache::object(&caches.stateful_sets, &ns, &names.couchdb)?;
    let mut existing = existing.with_stateful_set(stateful_set.as_ref());
    let from_api = create_missing_secrets(ctx, &inputs, &mut existing).await?;

    let mut seen = Seen {
        stateful_set,
        deployment: cache::object(&caches.deployments, &ns, &names.dataplane)?,
        ingress: cache::object(&caches.ingresses, &ns, &names.ingress)?,
        claim_code: None,
    };
    for child in desired::children(&inputs, &existing) {
        match child {
            Child::Secret(s) => {
                if s.name_any() == names.claim_secret {
                    seen.claim_code =
                        desired::secrets::secret_value(&s, desired::secrets::CLAIM_CODE_KEY);
                }
                // One the API server answered (just now, or in an earlier reconcile the
                // cache has not caught up with) is compared with that answer, not applied
                // again for want of a cached copy.
                match from_api.get(&s.name_any()) {
                    Some(live) if drift::is_subset(&serde_json::to_value(&s)?, live) => {}
                    _ => drop(apply_child(ctx, &ns, &caches.secrets, s, &recall).await?),
                }
            }
            Child::ConfigMap(o) => {
                drop(apply_child(ctx, &ns, &caches.config_maps, o, &recall).await?)
            }
            Child::Service(o) => drop(apply_child(ctx, &ns, &caches.services, o, &recall).await?),
            Child::StatefulSet(o) => {
                if let Some(fresher) =
                    apply_child(ctx, &ns, &caches.stateful_sets, o, &recall).await?
                {
                    seen.stateful_set = Some(fresher);
                }
            }
            Child::Deployment(o) => {
                if let Some(fresher) =
                    apply_child(ctx, &ns, &caches.deployments, o, &recall).await?
                {
                    seen.deployment = Some(fresher);
                }
            }
            Child::Ingress(o) => {
                if let Some(fresher) = apply_child(ctx, &ns, &caches.ingresses, o, &recall).await? {
                    seen.ingress = Some(fresher);
                }
            }
            Child::NetworkPolicy(o) => {
                drop(apply_child(ctx, &ns, &caches.network_policies, o, &recall).await?)
            }
            Child::CronJob(o) => drop(apply_child(ctx, &ns, &caches.cron_jobs, *o, &recall).await?),
        }
    }
    backup::remove_stale_cron_job(ctx, &inputs).await?;
    if instance.owner_did().is_some()
        && cache::get(&caches.secrets, &ns, &names.claim_secret).is_some()
    {
        // Claimed: the one-time code is spent.
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .delete(&names.claim_secret, &DeleteParams::default())
            .await
        {
            Ok(_) => ctx.metrics.write("delete"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    let observed = status::Observed {
        stateful_set: seen.stateful_set.as_ref(),
        deployment: seen.deployment.as_ref(),
        ingress: seen.ingress.as_ref(),
        bucket: &bucket,
        claim_code: seen.claim_code.as_deref(),
    };
    let mut new_status = status::compute(&inputs, &observed, now);
    new_status.last_backup = backup::observe_last_backup(ctx, instance, &ns).await?;
    new_status.restore = backup::observe_restore(ctx, &inputs).await;
    let ready = new_status.phase == Some(crate::crd::Phase::Ready);
    write_status(instance, new_status, ctx).await?;
    bucket?;
    let mut requeue = if ready || instance.spec.suspend {
        ctx.config.resync_period
    } else {
        // Children report progress through the watches; this is only a safety net.
        ctx.config.resync_period.min(Duration::from_secs(60))
    };
    if recall.used() {
        // Leaned on what this replica wrote instead of the cache: look again once that
        // memory has lapsed, in case a child was deleted before the cache saw it.
        requeue = requeue.min(written::MEMORY);
    }
    Ok(Action::requeue(requeue))
}

/// Creates the generated Secrets (CouchDB credentials, token key, claim code) that the child
/// cache does not hold, and puts what the API server stored into `existing`; returns each of
/// them as the API server answered it (JSON, for the drift check), by name. One created here is
/// built from `existing` again by the caller and so needs no apply in this reconcile.
///
/// A create (POST), not an apply: the caches have listed (the reconcile waited for them), so a
/// Secret missing from them is missing, unless the cache lags behind a write of our own. A create
/// can never overwrite such a Secret — it answers 409 Conflict, and then the live one is read and
/// its values kept (and applied only if it lacks our labels or owner). Before, every miss was a
/// GET (404) and then an apply: six requests for the three Secrets of each new instance where
/// three do (issue 14).
async fn create_missing_secrets(
    ctx: &Context,
    inputs: &Inputs<'_>,
    existing: &mut ExistingSecrets,
) -> Result<HashMap<String, serde_json::Value>> {
    let names = inputs.names();
    let mut missing = Vec::new();
    if existing.couchdb_auth.is_none() {
        missing.push(names.couchdb_secret.clone());
    }
    if existing.token_key.is_none() {
        missing.push(names.token_key_secret.clone());
    }
    if existing.claim.is_none() && inputs.instance.owner_did().is_none() {
        missing.push(names.claim_secret.clone());
    }
    let mut from_api = HashMap::new();
    if missing.is_empty() {
        return Ok(from_api);
    }
    // The builders generate fresh values for what `existing` lacks.
    let fresh: Vec<Secret> = desired::children(inputs, existing)
        .into_iter()
        .filter_map(|child| match child {
            Child::Secret(s) if missing.contains(&s.name_any()) => Some(s),
            _ => None,
        })
        .collect();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &inputs.namespace());
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    for secret in fresh {
        let name = secret.name_any();
        let live = match api.create(&params, &secret).await {
            Ok(stored) => {
                ctx.metrics.write("create");
                info!(kind = "Secret", child = %name, "created");
                stored
            }
            Err(kube::Error::Api(s)) if s.code == 409 => api.get(&name).await?,
            Err(e) => return Err(e.into()),
        };
        ctx.remember_written(&inputs.namespace(), &live)?;
        let slot = if name == names.couchdb_secret {
            &mut existing.couchdb_auth
        } else if name == names.token_key_secret {
            &mut existing.token_key
        } else {
            &mut existing.claim
        };
        from_api.insert(name, serde_json::to_value(&live)?);
        *slot = Some(live);
    }
    Ok(from_api)
}

/// Server-side applies `obj` unless the live object — from the cache, or as this replica last
/// wrote it while the cache has not caught up ([`written`]) — already matches it. Returns the
/// freshest copy the cache does not have: the applied object when a request was made, or the
/// recalled one.
async fn apply_child<K>(
    ctx: &Context,
    namespace: &str,
    store: &Store<Cached<K>>,
    obj: K,
    recall: &written::Recall,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + 'static,
{
    let name = obj.name_any();
    let desired = serde_json::to_value(&obj)?;
    let cached = cache::get(store, namespace, &name);
    let recalled = ctx
        .written
        .recall(&K::kind(&()), namespace, &name, cached.is_some(), recall);
    match (cached, recalled) {
        (Some(live), _) if drift::is_subset(&desired, &live.value()?) => return Ok(None),
        (None, Some(written)) if drift::is_subset(&desired, &written) => {
            return Ok(Some(serde_json::from_value(written)?));
        }
        _ => {}
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await?;
    ctx.metrics.write("apply");
    info!(kind = %K::kind(&()), child = %name, "applied");
    ctx.remember_written(namespace, &applied)?;
    Ok(Some(applied))
}

/// Patches the status (server-side apply) when it differs from the current one and publishes
/// an Event for each condition transition.
async fn write_status(
    instance: &VibeInstance,
    new: VibeInstanceStatus,
    ctx: &Context,
) -> Result<()> {
    let old = instance.status.as_ref();
    if old == Some(&new) {
        return Ok(());
    }
    let mut transitions = status::transitions(old, &new);
    transitions.extend(backup::transitions(old, &new));
    let ns = instance.namespace().unwrap_or_default();
    let api: Api<VibeInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": VibeInstance::api_version(&()),
        "kind": VibeInstance::kind(&()),
        "status": new,
    });
    api.patch_status(
        &instance.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics.write("status");
    for t in transitions {
        ctx.publish(instance, &t.reason, t.note, t.warning).await;
    }
    Ok(())
}

/// Finalizer cleanup: with `Delete` the bucket is emptied and removed and the CouchDB PVC
/// deleted; with `Retain` both stay. An unreachable object store is retried with backoff until
/// the cleanup deadline, after which the bucket is left behind with a Warning Event.
async fn cleanup(instance: &VibeInstance, ctx: &Context) -> Result<Action> {
    let now = Timestamp::now();
    let inputs = Inputs::new(instance, &ctx.config);
    let names = inputs.names();
    let bucket = inputs.bucket();
    let pvc = names.couchdb_pvc();
    write_status(instance, status::deleting(instance, None, now), ctx).await?;
    match instance.spec.deletion_policy {
        DeletionPolicy::Retain => {
            ctx.publish(
                instance,
                "DataRetained",
                format!("deletionPolicy Retain: bucket {bucket} and PersistentVolumeClaim {pvc} are kept"),
                false,
            )
            .await;
        }
        DeletionPolicy::Delete => {
            ctx.verified_buckets.forget(&bucket);
            match ctx.buckets.delete(&bucket).await {
                Ok(()) => {
                    ctx.publish(
                        instance,
                        "BucketDeleted",
                        format!("bucket {bucket} emptied and deleted"),
                        false,
                    )
                    .await
                }
                Err(e) => {
                    let started = instance
                        .metadata
                        .deletion_timestamp
                        .as_ref()
                        .map(|t| t.0)
                        .unwrap_or(now);
                    let deadline = SignedDuration::try_from(ctx.config.cleanup_deadline)
                        .unwrap_or(SignedDuration::MAX);
                    if started + deadline < now {
                        ctx.publish(
                            instance,
                            "BucketOrphaned",
                            format!("gave up deleting bucket {bucket} after {:?}: {e}; delete it by hand", ctx.config.cleanup_deadline),
                            true,
                        )
                        .await;
                    } else {
                        write_status(instance, status::deleting(instance, Some(&e), now), ctx)
                            .await?;
                        ctx.publish(
                            instance,
                            "BucketDeletionFailed",
                            format!("deleting bucket {bucket} failed, retrying: {e}"),
                            true,
                        )
                        .await;
                        return Err(e.into());
                    }
                }
            }
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &inputs.namespace());
            match api.delete(&pvc, &DeleteParams::default()).await {
                Ok(_) => ctx.metrics.write("delete"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            ctx.publish(
                instance,
                "VolumeDeleted",
                format!("PersistentVolumeClaim {pvc} deleted"),
                false,
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

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

#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod fake_cluster;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod loop_tests;
#[cfg(test)]
mod tests;
