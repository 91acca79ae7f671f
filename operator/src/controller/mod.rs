//! The VibeInstance controller: [`reconcile`] (the finalizer in front of `apply.rs` for a live
//! instance and `cleanup.rs` for a deleted one), the error policy, status writes, and the loop
//! ([`run`], `run.rs`).
//!
//! One reconcile of a live instance: ensure the bucket (S3), build the desired children
//! ([`crate::desired`]), apply with server-side apply only the ones that differ from the watch
//! cache ([`drift`]), derive the status from what was observed ([`status`]) and patch it only
//! when it changed, publishing one Event per condition transition. A healthy instance therefore
//! causes no Kubernetes API request at all on a resync.

mod apply;
pub mod backup;
pub mod cache;
mod cleanup;
pub mod drift;
pub mod readiness;
mod run;
pub mod status;
pub mod verified;
pub mod written;

pub use run::{Scope, run};

use crate::bucket::BucketClient;
use crate::config::OperatorConfig;
use crate::crd::{FINALIZER, VibeInstance, VibeInstanceStatus};
use crate::error::{Error, Result, backoff};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::naming::FIELD_MANAGER;
use cache::ChildCaches;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::{Instrument, info_span, warn};

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
                FinalizerEvent::Apply(i) => apply::apply(&i, &ctx).await,
                FinalizerEvent::Cleanup(i) => cleanup::cleanup(&i, &ctx).await,
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

#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod fake_cluster;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod loop_harness;
#[cfg(test)]
mod loop_tests;
#[cfg(test)]
mod tests;
