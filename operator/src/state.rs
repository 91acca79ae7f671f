//! State shared by the controller and the HTTP servers of one operator process.
//!
//! The webhook ([`crate::webhook`]) gets a [`State`] too: it looks instances up
//! in [`State::instances`] (the controller's own watch cache, on every replica, leader or not)
//! and registers its metrics in the same Prometheus registry before the registry is frozen.

use crate::config::OperatorConfig;
use crate::controller::readiness::{self, WatchFlag};
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
    /// The sync flag of every watch of every scope (VibeInstances and each child kind).
    pub watches: Vec<WatchFlag>,
    /// Controller metrics.
    pub metrics: Arc<Metrics>,
    /// Leadership flag.
    pub leadership: Leadership,
    registry: Arc<Registry>,
}

impl State {
    /// Bundles the state. Register every metric in `registry` before calling this. `watches`
    /// are the sync flags `/readyz` waits for (`Scope::watch_flags` of every scope).
    pub fn new(
        config: Arc<OperatorConfig>,
        instances: InstanceIndex,
        watches: Vec<WatchFlag>,
        metrics: Arc<Metrics>,
        registry: Registry,
        leadership: Leadership,
    ) -> Self {
        Self {
            config,
            instances,
            watches,
            metrics,
            leadership,
            registry: Arc::new(registry),
        }
    }

    /// The watches whose initial list is not in their cache yet (`tenants/deployments`, …).
    pub fn unsynced_watches(&self) -> Vec<String> {
        readiness::unsynced(&self.watches)
    }

    /// Whether every watch cache — the VibeInstances and every kind of child, in every scope —
    /// holds its initial list (`/readyz`). The admission webhook, which reads only the
    /// VibeInstance caches, waits for those alone ([`InstanceIndex::is_synced`]).
    pub fn is_ready(&self) -> bool {
        self.instances.is_synced() && self.watches.iter().all(WatchFlag::is_synced)
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
