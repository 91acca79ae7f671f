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
use tokio::sync::watch;
use vibe_api::host::{instance_host, same_host};

/// The VibeInstance cache of one watch scope (a namespace, or the whole cluster) and whether
/// its initial list has been applied to it.
///
/// `synced` is flipped by the controller's watch stream itself when the reflector has applied
/// the initial list (`watcher::Event::InitDone`, see
/// [`crate::controller::readiness::mark_synced`]). It deliberately does not use
/// `Store::wait_until_ready`: in kube-runtime 5 that future keeps a single waker, so when two
/// tasks wait on the same store (the controller's runner does) only the last one to poll is
/// ever woken — the operator's readiness never flipped on a real API server (issue 14).
#[derive(Clone)]
pub struct ScopeCache {
    /// The instances of the scope.
    pub store: Store<VibeInstance>,
    /// `true` once the initial list is in `store`; never goes back to `false`.
    pub synced: watch::Receiver<bool>,
}

/// Read access to the VibeInstance watch caches of every watched namespace.
#[derive(Clone, Default)]
pub struct InstanceIndex {
    scopes: Vec<ScopeCache>,
}

impl InstanceIndex {
    /// An index over the given scopes (one per watched namespace, or one for all).
    pub fn new(scopes: Vec<ScopeCache>) -> Self {
        Self { scopes }
    }

    fn stores(&self) -> impl Iterator<Item = &Store<VibeInstance>> {
        self.scopes.iter().map(|s| &s.store)
    }

    /// Every cached instance.
    pub fn all(&self) -> Vec<Arc<VibeInstance>> {
        self.stores().flat_map(|s| s.state()).collect()
    }

    /// One instance by namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<VibeInstance>> {
        let key = ObjectRef::new(name).within(namespace);
        self.stores().find_map(|s| s.get(&key))
    }

    /// The instance serving `host` (explicit `spec.host`, or the default
    /// `<name>.<base domain>`), if any. Case-insensitive.
    pub fn find_by_host(&self, host: &str, config: &OperatorConfig) -> Option<Arc<VibeInstance>> {
        self.stores()
            .find_map(|s| s.find(|i| same_host(&effective_host(i, config), host)))
    }

    /// Instances owned by `did`.
    pub fn find_by_owner(&self, did: &str) -> Vec<Arc<VibeInstance>> {
        self.stores()
            .flat_map(|s| s.state_filter(|i| i.owner_did() == Some(did)))
            .collect()
    }

    /// Whether every scope's initial list is in its cache (an index of no scope is synced).
    pub fn is_synced(&self) -> bool {
        self.scopes.iter().all(|s| *s.synced.borrow())
    }

    /// Waits until [`Self::is_synced`]; any number of tasks may wait at once. Returns `false`
    /// when a scope's watch stopped (shutdown) before its initial list completed.
    pub async fn wait_until_synced(&self) -> bool {
        for scope in &self.scopes {
            let mut synced = scope.synced.clone();
            if synced.wait_for(|s| *s).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Count of instances by phase (instances without a status count as Provisioning).
    pub fn count_by_phase(&self) -> HashMap<Phase, i64> {
        let mut counts: HashMap<Phase, i64> = Phase::ALL.iter().map(|p| (*p, 0)).collect();
        for i in self.all() {
            *counts.entry(phase_of(&i)).or_default() += 1;
        }
        counts
    }
}

/// The phase an instance is counted in: `Deleting` once it has a deletion timestamp, else its
/// status phase, `Provisioning` while it has none.
pub fn phase_of(instance: &VibeInstance) -> Phase {
    if instance.metadata.deletion_timestamp.is_some() {
        Phase::Deleting
    } else {
        instance
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(Phase::Provisioning)
    }
}

/// The host an instance is served at (the rule: [`vibe_api::host::instance_host`]).
pub fn effective_host(instance: &VibeInstance, config: &OperatorConfig) -> String {
    instance_host(
        &instance.name_any(),
        instance.spec.host.as_deref(),
        &config.base_domain,
    )
}

/// Process-wide state: configuration, caches, metrics, leadership and readiness (the caches'
/// sync flags).
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
        }
    }

    /// Whether the VibeInstance caches of every scope are synced (`/readyz` and the admission
    /// webhook answer from this).
    pub fn is_ready(&self) -> bool {
        self.instances.is_synced()
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
