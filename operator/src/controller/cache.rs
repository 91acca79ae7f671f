//! Watch caches of the children the operator manages (label `app.kubernetes.io/managed-by`).
//!
//! The reconciler compares desired objects with these caches and applies only what drifted, so a
//! resync of a healthy instance makes no request to the API server. That holds only once each
//! cache holds its watch's initial list: before, a child that exists looks missing and would be
//! applied again (issue 14: every instance rewritten after an operator restart whose Secret
//! list took longer than its VibeInstance list). Each cache therefore has a sync flag
//! ([`super::readiness::WatchFlag`], set by its watch stream) and a reconcile waits for all of
//! them ([`ChildCaches::wait_until_synced`]).
//!
//! Each cached child is kept as compact JSON ([`Cached`]) beside the few metadata fields the
//! reflector and the Controller route by, not as its typed k8s-openapi struct: a typed
//! StatefulSet or Deployment holds every optional field of every container and volume inline,
//! and 12,000 children (1,000 instances) took about 80 MiB that way, several times their JSON
//! (issue 14: the operator's RSS was 125 MiB at 1,000 instances, the budget 100 MiB). The drift
//! check compares JSON anyway; a typed object is rebuilt only where one is read (the workloads
//! and Ingress for the status, the generated Secrets).

use super::readiness::{self, WatchFlag};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A cached child of kind `K`: its identity and owner references (what the store keys by and
/// the Controller maps to the owning VibeInstance) and the whole object as compact JSON.
pub struct Cached<K> {
    meta: ObjectMeta,
    json: Box<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Cached<K> {
    fn clone(&self) -> Self {
        Self {
            meta: self.meta.clone(),
            json: self.json.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Cached<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("name", &self.meta.name)
            .field("namespace", &self.meta.namespace)
            .field("bytes", &self.json.len())
            .finish()
    }
}

impl<K: Resource<DynamicType = ()> + Serialize> Cached<K> {
    /// Keeps `obj` (its managedFields already dropped by the watch).
    pub fn new(obj: &K) -> Result<Self, serde_json::Error> {
        let m = obj.meta();
        Ok(Self {
            meta: ObjectMeta {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                owner_references: m.owner_references.clone(),
                ..ObjectMeta::default()
            },
            json: serde_json::to_vec(obj)?.into_boxed_slice(),
            kind: PhantomData,
        })
    }

    /// The watch event with its object kept this way. An object that cannot be serialized
    /// (never seen: it was just deserialized) is kept without JSON, so a reconcile that reads
    /// it fails and is retried rather than taking it for missing.
    pub fn event(event: watcher::Event<K>) -> watcher::Event<Self> {
        let keep = |obj: K| {
            Self::new(&obj).unwrap_or_else(|e| {
                tracing::warn!(error = %e, name = %obj.meta().name.as_deref().unwrap_or_default(), "cannot cache a child");
                Self {
                    meta: obj.meta().clone(),
                    json: Box::default(),
                    kind: PhantomData,
                }
            })
        };
        match event {
            watcher::Event::Apply(o) => watcher::Event::Apply(keep(o)),
            watcher::Event::Delete(o) => watcher::Event::Delete(keep(o)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitApply(o) => watcher::Event::InitApply(keep(o)),
            watcher::Event::InitDone => watcher::Event::InitDone,
        }
    }
}

/// Read straight from JSON (what kube's `watches_stream` asks of the objects it maps).
impl<'de, K> serde::Deserialize<'de> for Cached<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let obj = K::deserialize(deserializer)?;
        Self::new(&obj).map_err(serde::de::Error::custom)
    }
}

impl<K: DeserializeOwned> Cached<K> {
    /// The object, typed.
    pub fn object(&self) -> Result<K, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }

    /// The object as JSON, for the drift check.
    pub fn value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Cached<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// Read handles of every child cache.
#[derive(Clone)]
pub struct ChildCaches {
    /// Secrets.
    pub secrets: Store<Cached<Secret>>,
    /// ConfigMaps.
    pub config_maps: Store<Cached<ConfigMap>>,
    /// Services.
    pub services: Store<Cached<Service>>,
    /// StatefulSets.
    pub stateful_sets: Store<Cached<StatefulSet>>,
    /// Deployments.
    pub deployments: Store<Cached<Deployment>>,
    /// Ingresses.
    pub ingresses: Store<Cached<Ingress>>,
    /// NetworkPolicies.
    pub network_policies: Store<Cached<NetworkPolicy>>,
    /// Backup CronJobs.
    pub cron_jobs: Store<Cached<CronJob>>,
    /// Backup Jobs (created by the CronJobs, labelled like them).
    pub jobs: Store<Cached<Job>>,
    /// One sync flag per cache above, named by resource (`secrets`, `deployments`, …).
    synced: Vec<WatchFlag>,
}

/// Write handles matching [`ChildCaches`] (fed by watchers, or by tests).
pub struct ChildWriters {
    /// Secrets.
    pub secrets: Writer<Cached<Secret>>,
    /// ConfigMaps.
    pub config_maps: Writer<Cached<ConfigMap>>,
    /// Services.
    pub services: Writer<Cached<Service>>,
    /// StatefulSets.
    pub stateful_sets: Writer<Cached<StatefulSet>>,
    /// Deployments.
    pub deployments: Writer<Cached<Deployment>>,
    /// Ingresses.
    pub ingresses: Writer<Cached<Ingress>>,
    /// NetworkPolicies.
    pub network_policies: Writer<Cached<NetworkPolicy>>,
    /// Backup CronJobs.
    pub cron_jobs: Writer<Cached<CronJob>>,
    /// Backup Jobs.
    pub jobs: Writer<Cached<Job>>,
    /// The sync flags of the caches, set by the watches.
    pub synced: ChildSyncFlags,
}

/// The sending side of each child cache's sync flag: the watch of that kind sets it once the
/// reflector has applied the initial list ([`readiness::mark_synced`]).
pub struct ChildSyncFlags {
    /// Secrets.
    pub secrets: watch::Sender<bool>,
    /// ConfigMaps.
    pub config_maps: watch::Sender<bool>,
    /// Services.
    pub services: watch::Sender<bool>,
    /// StatefulSets.
    pub stateful_sets: watch::Sender<bool>,
    /// Deployments.
    pub deployments: watch::Sender<bool>,
    /// Ingresses.
    pub ingresses: watch::Sender<bool>,
    /// NetworkPolicies.
    pub network_policies: watch::Sender<bool>,
    /// Backup CronJobs.
    pub cron_jobs: watch::Sender<bool>,
    /// Backup Jobs.
    pub jobs: watch::Sender<bool>,
}

impl ChildSyncFlags {
    /// Marks every cache synced: for caches filled by hand (tests, benchmarks), which hold
    /// everything there is from the start.
    pub fn mark_all(&self) {
        for flag in [
            &self.secrets,
            &self.config_maps,
            &self.services,
            &self.stateful_sets,
            &self.deployments,
            &self.ingresses,
            &self.network_policies,
            &self.cron_jobs,
            &self.jobs,
        ] {
            flag.send_replace(true);
        }
    }
}

/// A new, unset flag named by the resource of `K`.
fn flag<K: Resource<DynamicType = ()>>() -> (watch::Sender<bool>, WatchFlag) {
    let (tx, rx) = readiness::flag();
    let name = K::plural(&()).into_owned();
    (tx, WatchFlag { name, synced: rx })
}

impl ChildCaches {
    /// Empty caches, not synced, with their writers and flags.
    pub fn new() -> (Self, ChildWriters) {
        let (secrets, secrets_w) = reflector::store();
        let (config_maps, config_maps_w) = reflector::store();
        let (services, services_w) = reflector::store();
        let (stateful_sets, stateful_sets_w) = reflector::store();
        let (deployments, deployments_w) = reflector::store();
        let (ingresses, ingresses_w) = reflector::store();
        let (network_policies, network_policies_w) = reflector::store();
        let (cron_jobs, cron_jobs_w) = reflector::store();
        let (jobs, jobs_w) = reflector::store();
        let (secrets_tx, secrets_f) = flag::<Secret>();
        let (config_maps_tx, config_maps_f) = flag::<ConfigMap>();
        let (services_tx, services_f) = flag::<Service>();
        let (stateful_sets_tx, stateful_sets_f) = flag::<StatefulSet>();
        let (deployments_tx, deployments_f) = flag::<Deployment>();
        let (ingresses_tx, ingresses_f) = flag::<Ingress>();
        let (network_policies_tx, network_policies_f) = flag::<NetworkPolicy>();
        let (cron_jobs_tx, cron_jobs_f) = flag::<CronJob>();
        let (jobs_tx, jobs_f) = flag::<Job>();
        (
            Self {
                secrets,
                config_maps,
                services,
                stateful_sets,
                deployments,
                ingresses,
                network_policies,
                cron_jobs,
                jobs,
                synced: vec![
                    secrets_f,
                    config_maps_f,
                    services_f,
                    stateful_sets_f,
                    deployments_f,
                    ingresses_f,
                    network_policies_f,
                    cron_jobs_f,
                    jobs_f,
                ],
            },
            ChildWriters {
                secrets: secrets_w,
                config_maps: config_maps_w,
                services: services_w,
                stateful_sets: stateful_sets_w,
                deployments: deployments_w,
                ingresses: ingresses_w,
                network_policies: network_policies_w,
                cron_jobs: cron_jobs_w,
                jobs: jobs_w,
                synced: ChildSyncFlags {
                    secrets: secrets_tx,
                    config_maps: config_maps_tx,
                    services: services_tx,
                    stateful_sets: stateful_sets_tx,
                    deployments: deployments_tx,
                    ingresses: ingresses_tx,
                    network_policies: network_policies_tx,
                    cron_jobs: cron_jobs_tx,
                    jobs: jobs_tx,
                },
            },
        )
    }

    /// The sync flag of each cache, named by resource.
    pub fn sync_flags(&self) -> &[WatchFlag] {
        &self.synced
    }

    /// Waits, for at most `within`, until every cache holds its watch's initial list. On
    /// time-out, or when a watch stopped before listing, returns the resources still missing.
    pub async fn wait_until_synced(&self, within: Duration) -> Result<(), Vec<String>> {
        if self.synced.iter().all(WatchFlag::is_synced) {
            return Ok(());
        }
        match tokio::time::timeout(within, readiness::wait_all(&self.synced)).await {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(readiness::unsynced(&self.synced)),
        }
    }
}

/// Looks an object up in a store by namespace and name.
pub fn get<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// Looks a child up in its cache and rebuilds it, typed.
pub fn object<K>(
    store: &Store<Cached<K>>,
    namespace: &str,
    name: &str,
) -> Result<Option<K>, serde_json::Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + 'static,
{
    get(store, namespace, name).map(|c| c.object()).transpose()
}

/// Puts an object into a cache (tests and benchmarks seed the caches this way).
pub fn insert<K>(writer: &mut Writer<Cached<K>>, obj: K)
where
    K: Resource<DynamicType = ()> + Serialize + 'static,
{
    let cached = Cached::new(&obj).expect("a serializable object");
    writer.apply_watcher_event(&watcher::Event::Apply(cached));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached child is the same object again, typed or as JSON, and keeps what the store
    /// keys by and the Controller routes by (name, namespace, owner).
    #[test]
    fn a_cached_child_is_the_object_it_was() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "alice-dataplane", "namespace": "tenants", "uid": "u1",
                "resourceVersion": "7", "labels": {"app.kubernetes.io/managed-by": "vibe-operator"},
                "ownerReferences": [{"apiVersion": "cloud.vibeapp.dev/v1alpha1",
                    "kind": "VibeInstance", "name": "alice", "uid": "0f6b", "controller": true}]
            },
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                "template": {"spec": {"containers": [{"name": "dataplane", "image": "x:1"}]}}},
            "status": {"availableReplicas": 1}
        }))
        .unwrap();
        let cached = Cached::new(&deployment).unwrap();
        assert_eq!(cached.object().unwrap(), deployment);
        assert_eq!(
            cached.value().unwrap(),
            serde_json::to_value(&deployment).unwrap()
        );
        assert_eq!(
            ObjectRef::from_obj(&cached),
            ObjectRef::new("alice-dataplane").within("tenants")
        );
        assert_eq!(
            kube::ResourceExt::owner_references(&cached)[0].name,
            "alice"
        );
        assert!(cached.meta().labels.is_none(), "kept once, in the JSON");

        let (store, mut writer) = reflector::store::<Cached<Deployment>>();
        insert(&mut writer, deployment.clone());
        assert_eq!(
            object(&store, "tenants", "alice-dataplane").unwrap(),
            Some(deployment)
        );
        assert_eq!(object(&store, "tenants", "bob-dataplane").unwrap(), None);
    }

    /// A reconcile waiting for the caches goes on as soon as the last one has listed, and
    /// gives up after its time naming the ones still listing.
    #[tokio::test]
    async fn waiting_for_the_child_caches_names_the_ones_still_listing() {
        let (caches, writers) = ChildCaches::new();
        let names: Vec<&str> = caches
            .sync_flags()
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "secrets",
                "configmaps",
                "services",
                "statefulsets",
                "deployments",
                "ingresses",
                "networkpolicies",
                "cronjobs",
                "jobs"
            ]
        );
        let short = Duration::from_millis(50);
        assert_eq!(caches.wait_until_synced(short).await.unwrap_err().len(), 9);

        let flags = &writers.synced;
        for f in [
            &flags.secrets,
            &flags.config_maps,
            &flags.services,
            &flags.stateful_sets,
            &flags.ingresses,
            &flags.network_policies,
            &flags.cron_jobs,
            &flags.jobs,
        ] {
            f.send_replace(true);
        }
        assert_eq!(
            caches.wait_until_synced(short).await,
            Err(vec!["deployments".to_string()])
        );
        let waiter = tokio::spawn({
            let caches = caches.clone();
            async move { caches.wait_until_synced(Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        flags.deployments.send_replace(true);
        assert_eq!(waiter.await.unwrap(), Ok(()));

        let (caches, writers) = ChildCaches::new();
        writers.synced.mark_all();
        drop(writers);
        assert_eq!(
            caches.wait_until_synced(short).await,
            Ok(()),
            "filled by hand"
        );
    }
}
