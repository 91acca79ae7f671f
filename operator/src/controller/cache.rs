//! Watch caches of the children the operator manages (label `app.kubernetes.io/managed-by`).
//!
//! The reconciler compares desired objects with these caches and applies only what drifted, so a
//! resync of a healthy instance makes no request to the API server.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher;
use std::sync::Arc;

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
}

impl ChildCaches {
    /// Empty caches with their writers.
    pub fn new() -> (Self, ChildWriters) {
        let (secrets, secrets_w) = reflector::store();
        let (config_maps, config_maps_w) = reflector::store();
        let (services, services_w) = reflector::store();
        let (stateful_sets, stateful_sets_w) = reflector::store();
        let (deployments, deployments_w) = reflector::store();
        let (ingresses, ingresses_w) = reflector::store();
        let (network_policies, network_policies_w) = reflector::store();
        (
            Self {
                secrets,
                config_maps,
                services,
                stateful_sets,
                deployments,
                ingresses,
                network_policies,
            },
            ChildWriters {
                secrets: secrets_w,
                config_maps: config_maps_w,
                services: services_w,
                stateful_sets: stateful_sets_w,
                deployments: deployments_w,
                ingresses: ingresses_w,
                network_policies: network_policies_w,
            },
        )
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
