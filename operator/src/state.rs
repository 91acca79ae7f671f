//! State shared by the controller and the HTTP servers of one operator process.
//!
//! The admission endpoint (src/admission/, issue 8) gets a [`State`] too: it looks instances up
//! in [`State::instances`] (the controller's own watch cache, on every replica, leader or not)
//! and registers its metrics in the same Prometheus registry before the registry is frozen.

use crate::config::OperatorConfig;
use crate::crd::{Phase, VibeInstance};
use crate::leader::Leadership;
use crate::metrics::{Metrics, PhaseLabels};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Read access to the VibeInstance watch caches of every watched namespace.
#[derive(Clone, Default)]
pub struct InstanceIndex {
    stores: Vec<Store<VibeInstance>>,
}

impl InstanceIndex {
    /// An index over the given stores (one per watched namespace, or one for all).
    pub fn new(stores: Vec<Store<VibeInstance>>) -> Self {
        Self { stores }
    }

    /// Every cached instance.
    pub fn all(&self) -> Vec<Arc<VibeInstance>> {
        self.stores.iter().flat_map(|s| s.state()).collect()
    }

    /// One instance by namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<VibeInstance>> {
        let key = ObjectRef::new(name).within(namespace);
        self.stores.iter().find_map(|s| s.get(&key))
    }

    /// The instance serving `host` (explicit `spec.host`, or the default
    /// `<name>.<base domain>`), if any. Case-insensitive.
    pub fn find_by_host(&self, host: &str, config: &OperatorConfig) -> Option<Arc<VibeInstance>> {
        let host = host.to_ascii_lowercase();
        self.stores
            .iter()
            .find_map(|s| s.find(|i| effective_host(i, config).eq_ignore_ascii_case(&host)))
    }

    /// Instances owned by `did`.
    pub fn find_by_owner(&self, did: &str) -> Vec<Arc<VibeInstance>> {
        self.stores
            .iter()
            .flat_map(|s| s.state_filter(|i| i.owner_did() == Some(did)))
            .collect()
    }

    /// Whether every store has completed its initial list.
    pub async fn wait_until_ready(&self) {
        for store in &self.stores {
            // An error only means the writer was dropped (shutdown).
            let _ = store.wait_until_ready().await;
        }
    }

    /// Count of instances by phase (instances without a status count as Provisioning).
    pub fn count_by_phase(&self) -> HashMap<Phase, i64> {
        let mut counts: HashMap<Phase, i64> = Phase::ALL.iter().map(|p| (*p, 0)).collect();
        for i in self.all() {
            let phase = if i.metadata.deletion_timestamp.is_some() {
                Phase::Deleting
            } else {
                i.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .unwrap_or(Phase::Provisioning)
            };
            *counts.entry(phase).or_default() += 1;
        }
        counts
    }
}

/// The host an instance is served at.
pub fn effective_host(instance: &VibeInstance, config: &OperatorConfig) -> String {
    instance
        .spec
        .host
        .clone()
        .unwrap_or_else(|| format!("{}.{}", instance.name_any(), config.base_domain))
}

/// Process-wide state: configuration, caches, metrics, leadership and readiness.
#[derive(Clone)]
pub struct State {
    /// Operator configuration.
    pub config: Arc<OperatorConfig>,
    /// VibeInstance watch caches.
    pub instances: InstanceIndex,
    /// Controller metrics.
    pub metrics: Arc<Metrics>,
    /// Leadership flag.
    pub leadership: Leadership,
    registry: Arc<Registry>,
    ready: Arc<AtomicBool>,
}

impl State {
    /// Bundles the state. Register every metric in `registry` before calling this.
    pub fn new(
        config: Arc<OperatorConfig>,
        instances: InstanceIndex,
        metrics: Arc<Metrics>,
        registry: Registry,
        leadership: Leadership,
    ) -> Self {
        Self {
            config,
            instances,
            metrics,
            leadership,
            registry: Arc::new(registry),
            ready: Arc::default(),
        }
    }

    /// Marks the process ready (caches synced).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the caches are synced.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// OpenMetrics text of every registered metric.
    pub fn encode_metrics(&self) -> String {
        for (phase, count) in self.instances.count_by_phase() {
            self.metrics
                .instances
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().into(),
                })
                .set(count);
        }
        self.metrics
            .leader
            .set(i64::from(self.leadership.is_leader()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
