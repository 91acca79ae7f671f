//! Watch caches of the children the operator manages (label `app.kubernetes.io/managed-by`).
//!
//! The reconciler compares desired objects with these caches and applies only what drifted, so a
//! resync of a healthy instance makes no request to the API server. That holds only once each
//! cache holds its watch's initial list: before, a child that exists looks missing and would be
//! applied again (issue 14: every instance rewritten after an operator restart whose Secret
//! list took longer than its VibeInstance list). Each cache therefore has a sync flag
//! ([`super::readiness::WatchFlag`], set by its watch stream) and a reconcile waits for all of
//! them ([`ChildCaches::wait_until_synced`]).

use super::readiness::{self, WatchFlag};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Read handles of every child cache.
#[derive(Clone)]
pub struct ChildCaches {
    /// Secrets.
    pub secrets: Store<Secret>,
    /// ConfigMaps.
    pub config_maps: Store<ConfigMap>,
    /// Services.
    pub services: Store<Service>,
    /// StatefulSets.
    pub stateful_sets: Store<StatefulSet>,
    /// Deployments.
    pub deployments: Store<Deployment>,
    /// Ingresses.
    pub ingresses: Store<Ingress>,
    /// NetworkPolicies.
    pub network_policies: Store<NetworkPolicy>,
    /// One sync flag per cache above, named by resource (`secrets`, `deployments`, …).
    synced: Vec<WatchFlag>,
}

/// Write handles matching [`ChildCaches`] (fed by watchers, or by tests).
pub struct ChildWriters {
    /// Secrets.
    pub secrets: Writer<Secret>,
    /// ConfigMaps.
    pub config_maps: Writer<ConfigMap>,
    /// Services.
    pub services: Writer<Service>,
    /// StatefulSets.
    pub stateful_sets: Writer<StatefulSet>,
    /// Deployments.
    pub deployments: Writer<Deployment>,
    /// Ingresses.
    pub ingresses: Writer<Ingress>,
    /// NetworkPolicies.
    pub network_policies: Writer<NetworkPolicy>,
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
        let (secrets_tx, secrets_f) = flag::<Secret>();
        let (config_maps_tx, config_maps_f) = flag::<ConfigMap>();
        let (services_tx, services_f) = flag::<Service>();
        let (stateful_sets_tx, stateful_sets_f) = flag::<StatefulSet>();
        let (deployments_tx, deployments_f) = flag::<Deployment>();
        let (ingresses_tx, ingresses_f) = flag::<Ingress>();
        let (network_policies_tx, network_policies_f) = flag::<NetworkPolicy>();
        (
            Self {
                secrets,
                config_maps,
                services,
                stateful_sets,
                deployments,
                ingresses,
                network_policies,
                synced: vec![
                    secrets_f,
                    config_maps_f,
                    services_f,
                    stateful_sets_f,
                    deployments_f,
                    ingresses_f,
                    network_policies_f,
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
                synced: ChildSyncFlags {
                    secrets: secrets_tx,
                    config_maps: config_maps_tx,
                    services: services_tx,
                    stateful_sets: stateful_sets_tx,
                    deployments: deployments_tx,
                    ingresses: ingresses_tx,
                    network_policies: network_policies_tx,
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

/// Puts an object into a cache (tests and benchmarks seed the caches this way).
pub fn insert<K>(writer: &mut Writer<K>, obj: K)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    writer.apply_watcher_event(&watcher::Event::Apply(obj));
}

#[cfg(test)]
mod tests {
    use super::*;

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
                "networkpolicies"
            ]
        );
        let short = Duration::from_millis(50);
        assert_eq!(caches.wait_until_synced(short).await.unwrap_err().len(), 7);

        let flags = &writers.synced;
        for f in [
            &flags.secrets,
            &flags.config_maps,
            &flags.services,
            &flags.stateful_sets,
            &flags.ingresses,
            &flags.network_policies,
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
