//! Pure builders of the objects an instance should have. No I/O: given the instance, the operator
//! configuration and the Secrets that already exist, they return the desired objects. The
//! reconciler applies them; `vibe-operator render` prints them.

pub mod backup;
mod common;
pub mod couchdb;
pub mod dataplane;
pub mod ingress;
pub mod network;
pub mod secrets;

use crate::config::OperatorConfig;
use crate::crd::VibeInstance;
use crate::naming::{self, ChildNames};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::ResourceExt;

pub use secrets::{ExistingSecrets, claim_code_hash};

/// Everything a builder needs to know about one instance.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The instance.
    pub instance: &'a VibeInstance,
    /// Operator-wide defaults and endpoints.
    pub config: &'a OperatorConfig,
}

impl<'a> Inputs<'a> {
    /// Bundles the inputs.
    pub fn new(instance: &'a VibeInstance, config: &'a OperatorConfig) -> Self {
        Self { instance, config }
    }

    /// The instance name.
    pub fn name(&self) -> String {
        self.instance.name_any()
    }

    /// The instance namespace (`default` for objects read without one, e.g. by `render`).
    pub fn namespace(&self) -> String {
        self.instance
            .namespace()
            .unwrap_or_else(|| "default".into())
    }

    /// Child names.
    pub fn names(&self) -> ChildNames {
        ChildNames::new(&self.name())
    }

    /// The public host.
    pub fn host(&self) -> String {
        crate::state::effective_host(self.instance, self.config)
    }

    /// The public URL.
    pub fn url(&self) -> String {
        vibe_api::host::instance_url(&self.host())
    }

    /// The bucket name: the override, else the generated name.
    pub fn bucket(&self) -> String {
        self.instance
            .spec
            .blobs
            .as_ref()
            .and_then(|b| b.bucket.clone())
            .unwrap_or_else(|| {
                naming::bucket_name(&self.config.bucket_prefix, &self.namespace(), &self.name())
            })
    }

    /// In-cluster URL of the tenant's CouchDB.
    pub fn couchdb_url(&self) -> String {
        format!(
            "http://{}.{}.svc:{}",
            self.names().couchdb,
            self.namespace(),
            couchdb::PORT
        )
    }
}

/// One desired child object.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    /// A Secret.
    Secret(Secret),
    /// A ConfigMap.
    ConfigMap(ConfigMap),
    /// A Service.
    Service(Service),
    /// A StatefulSet.
    StatefulSet(StatefulSet),
    /// A Deployment.
    Deployment(Deployment),
    /// An Ingress.
    Ingress(Ingress),
    /// A NetworkPolicy.
    NetworkPolicy(NetworkPolicy),
    /// The backup CronJob (with `spec.backup`); boxed, the largest of the kinds.
    CronJob(Box<CronJob>),
}

impl Child {
    /// Kind and name, for logs and events.
    pub fn describe(&self) -> String {
        let (kind, name) = match self {
            Child::Secret(o) => ("Secret", o.name_any()),
            Child::ConfigMap(o) => ("ConfigMap", o.name_any()),
            Child::Service(o) => ("Service", o.name_any()),
            Child::StatefulSet(o) => ("StatefulSet", o.name_any()),
            Child::Deployment(o) => ("Deployment", o.name_any()),
            Child::Ingress(o) => ("Ingress", o.name_any()),
            Child::NetworkPolicy(o) => ("NetworkPolicy", o.name_any()),
            Child::CronJob(o) => ("CronJob", o.name_any()),
        };
        format!("{kind}/{name}")
    }

    /// The object as JSON (for `render` and comparisons).
    pub fn to_value(&self) -> serde_json::Value {
        let v = match self {
            Child::Secret(o) => serde_json::to_value(o),
            Child::ConfigMap(o) => serde_json::to_value(o),
            Child::Service(o) => serde_json::to_value(o),
            Child::StatefulSet(o) => serde_json::to_value(o),
            Child::Deployment(o) => serde_json::to_value(o),
            Child::Ingress(o) => serde_json::to_value(o),
            Child::NetworkPolicy(o) => serde_json::to_value(o),
            Child::CronJob(o) => serde_json::to_value(o),
        };
        v.expect("Kubernetes objects serialize to JSON")
    }
}

/// Every child the instance should have, in apply order (Secrets and config before the
/// workloads that mount them). `existing` holds the Secrets already in the cluster so generated
/// credentials are kept, never rotated by a reconcile.
pub fn children(inputs: &Inputs<'_>, existing: &ExistingSecrets) -> Vec<Child> {
    let mut out = Vec::with_capacity(12);
    out.push(Child::Secret(secrets::couchdb_auth(
        inputs,
        existing.couchdb_auth.as_ref(),
    )));
    out.push(Child::Secret(secrets::token_key_keeping(
        inputs,
        existing.token_key.as_ref(),
    )));
    if inputs.instance.spec.owner.is_none() {
        out.push(Child::Secret(secrets::claim(
            inputs,
            existing.claim.as_ref(),
        )));
    }
    out.push(Child::Secret(secrets::s3_credentials(inputs)));
    out.push(Child::ConfigMap(couchdb::config_map(inputs)));
    out.push(Child::Service(couchdb::headless_service(inputs)));
    out.push(Child::StatefulSet(couchdb::stateful_set(
        inputs,
        existing.couchdb_volume_templates.as_deref(),
    )));
    out.push(Child::Service(dataplane::service(inputs)));
    out.push(Child::Deployment(dataplane::deployment(inputs)));
    out.push(Child::Ingress(ingress::ingress(inputs)));
    out.push(Child::NetworkPolicy(network::couchdb_policy(inputs)));
    out.push(Child::NetworkPolicy(network::dataplane_policy(inputs)));
    if let Some(cron_job) = backup::cron_job(inputs) {
        out.push(Child::CronJob(Box::new(cron_job)));
    }
    out
}

#[cfg(test)]
mod tests;
