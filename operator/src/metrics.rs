//! Prometheus metrics (OpenMetrics text at `/metrics`).
//!
//! Every name is prefixed `vibe_operator_` (the registry's prefix, see `main`). The chart's
//! alert rules and dashboard use these names; `deploy/check-manifests` reads them from this
//! file and fails when a rule names one that is not registered here.

use crate::state::{InstanceIndex, phase_of};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Instant;

/// Label of failure counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Bounded error label ([`crate::Error::metric_label`]).
    pub reason: String,
}

/// Label of the per-phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Phase name.
    pub phase: String,
}

/// Labels of the per-instance phase series. Not `namespace` and `instance`: Prometheus sets
/// those on every scraped series (the operator pod's namespace, its address) and would rename
/// ours to `exported_*`. The data plane PodMonitor of the chart gives tenant series the same
/// two labels, so alerts join on them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    /// Namespace of the VibeInstance.
    pub instance_namespace: String,
    /// Name of the VibeInstance.
    pub instance_name: String,
    /// Its current phase.
    pub phase: String,
}

/// Label of API request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// `apply`, `delete`, `status` or `event`.
    pub verb: String,
}

/// Labels of the Kubernetes request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …
    pub verb: String,
    /// Resource, with its subresource (`deployments`, `vibeinstances/status`).
    pub resource: String,
}

/// The controller's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Reconciles started.
    pub reconciles: Counter,
    /// Reconciles that failed, by reason.
    pub failures: Family<ReasonLabels, Counter>,
    /// Reconcile duration in seconds.
    pub duration: Histogram,
    /// Instances in the watch cache, by phase (refreshed on scrape).
    pub instances: Family<PhaseLabels, Gauge>,
    /// Mutating API requests made by the reconciler, by verb.
    pub writes: Family<VerbLabels, Counter>,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Every Kubernetes API request of the process, by verb and resource (counted in the
    /// client, [`crate::kube_client`]).
    pub kube_requests: Family<RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            instances: Family::default(),
            writes: Family::default(),
            leader: Gauge::default(),
            kube_requests: Family::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them (prefix them by creating `registry` with
    /// `Registry::with_prefix("vibe_operator")`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("reconciles", "Reconciles started", m.reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            m.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            m.duration.clone(),
        );
        registry.register("instances", "VibeInstances by phase", m.instances.clone());
        registry.register(
            "api_writes",
            "Mutating Kubernetes API requests by verb",
            m.writes.clone(),
        );
        registry.register(
            "kube_requests",
            "Kubernetes API requests by verb and resource (reads, watches and writes)",
            m.kube_requests.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader",
            m.leader.clone(),
        );
        m
    }

    /// Counts a reconcile and returns a guard that observes its duration when dropped.
    pub fn start_reconcile(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            histogram: &self.duration,
            start: Instant::now(),
        }
    }

    /// Counts a failure.
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a mutating request.
    pub fn write(&self, verb: &str) {
        self.writes
            .get_or_create(&VerbLabels { verb: verb.into() })
            .inc();
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// `instance_phase{instance_namespace, instance_name, phase} 1`: one series per VibeInstance in the watch
/// cache, read on each scrape, labelled with its current phase (an instance with no status yet
/// is `Provisioning`, one being deleted `Deleting`). A deleted instance's series disappears
/// with it. Alerts aggregate `by (instance_namespace, instance_name)`, so a phase change (Provisioning →
/// Failed) does not restart their `for` clock.
pub struct InstancePhases {
    index: InstanceIndex,
}

impl InstancePhases {
    /// Registers the per-instance series of `index` in `registry`.
    pub fn register(registry: &mut Registry, index: InstanceIndex) {
        registry.register_collector(Box::new(Self { index }));
    }
}

impl std::fmt::Debug for InstancePhases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstancePhases").finish_non_exhaustive()
    }
}

impl Collector for InstancePhases {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut series: Vec<InstanceLabels> = self
            .index
            .all()
            .iter()
            .map(|i| InstanceLabels {
                instance_namespace: i.metadata.namespace.clone().unwrap_or_default(),
                instance_name: i.metadata.name.clone().unwrap_or_default(),
                phase: phase_of(i).as_str().into(),
            })
            .collect();
        series.sort_by(|a, b| {
            (&a.instance_namespace, &a.instance_name)
                .cmp(&(&b.instance_namespace, &b.instance_name))
        });
        let mut family = encoder.encode_descriptor(
            "instance_phase",
            "1 for each VibeInstance, labelled with its current phase",
            None,
            MetricType::Gauge,
        )?;
        for labels in &series {
            ConstGauge::new(1i64).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Phase, VibeInstance, VibeInstanceStatus};
    use crate::state::ScopeCache;
    use kube::runtime::reflector;
    use kube::runtime::watcher;

    fn instance(name: &str, phase: Option<Phase>, deleting: bool) -> VibeInstance {
        let mut i: VibeInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "cloud.vibeapp.dev/v1alpha1",
            "kind": "VibeInstance",
            "metadata": {"name": name, "namespace": "tenants"},
            "spec": {}
        }))
        .expect("a minimal instance");
        i.status = phase.map(|phase| VibeInstanceStatus {
            phase: Some(phase),
            ..VibeInstanceStatus::default()
        });
        if deleting {
            i.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        i
    }

    /// Issue 14 item 4: the operator's metrics name each instance and its phase (the "not
    /// Ready for 10 minutes" alert needs to know which instance), and a deleted instance's
    /// series goes away.
    #[test]
    fn each_instance_is_a_series_with_its_phase() {
        let (store, mut writer) = reflector::store::<VibeInstance>();
        let (_tx, synced) = tokio::sync::watch::channel(true);
        let index = InstanceIndex::new(vec![ScopeCache { store, synced }]);
        let mut registry = Registry::with_prefix("vibe_operator");
        InstancePhases::register(&mut registry, index);
        for i in [
            instance("alice", Some(Phase::Ready), false),
            instance("bob", None, false),
            instance("carol", Some(Phase::Failed), false),
            instance("dave", Some(Phase::Ready), true),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(i));
        }
        let text = encode(&registry);
        for line in [
            "# TYPE vibe_operator_instance_phase gauge",
            r#"vibe_operator_instance_phase{instance_namespace="tenants",instance_name="alice",phase="Ready"} 1"#,
            r#"vibe_operator_instance_phase{instance_namespace="tenants",instance_name="bob",phase="Provisioning"} 1"#,
            r#"vibe_operator_instance_phase{instance_namespace="tenants",instance_name="carol",phase="Failed"} 1"#,
            r#"vibe_operator_instance_phase{instance_namespace="tenants",instance_name="dave",phase="Deleting"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        writer.apply_watcher_event(&watcher::Event::Delete(instance("carol", None, false)));
        let text = encode(&registry);
        assert!(
            !text.contains("carol"),
            "a deleted instance keeps its series:\n{text}"
        );
        assert_eq!(text.matches("vibe_operator_instance_phase{").count(), 3);
    }

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }
}
