//! NetworkPolicies: only the tenant's data plane reaches its CouchDB, and only on 5984 (so
//! nothing reaches epmd on 4369 or the Erlang distribution ports); only the ingress controller
//! reaches the data plane's HTTP port, and only the configured monitoring namespace its metrics
//! port.

use super::Inputs;
use super::common::meta;
use crate::dataplane_env::{METRICS_PORT_VALUE, PORT_VALUE};
use crate::naming::{Component, selector_labels};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("TCP".into()),
        port: Some(IntOrString::Int(port)),
        ..NetworkPolicyPort::default()
    }
}

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

/// The pods that may reach CouchDB: the data plane's, and with `spec.backup` the backup
/// Job's.
fn couchdb_clients(inputs: &Inputs<'_>) -> Vec<NetworkPolicyPeer> {
    let names = inputs.names();
    let mut components = vec![Component::DataPlane];
    if inputs.instance.spec.backup.is_some() {
        components.push(Component::Backup);
    }
    components
        .into_iter()
        .map(|c| NetworkPolicyPeer {
            pod_selector: Some(selector(selector_labels(&names.instance, c))),
            ..NetworkPolicyPeer::default()
        })
        .collect()
}

/// CouchDB accepts connections only from this instance's data plane pods (and backup pods),
/// on 5984.
pub fn couchdb_policy(inputs: &Inputs<'_>) -> NetworkPolicy {
    let names = inputs.names();
    NetworkPolicy {
        metadata: meta(inputs, &names.couchdb_policy, Component::Database),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(selector_labels(
                &names.instance,
                Component::Database,
            ))),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(couchdb_clients(inputs)),
                ports: Some(vec![tcp(super::couchdb::PORT)]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Pods of the namespace `ns`, or of every namespace for `*`.
fn from_namespace(ns: &str, port: i32) -> NetworkPolicyIngressRule {
    let namespace_selector = if ns == "*" {
        LabelSelector::default()
    } else {
        selector(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            ns.to_string(),
        )]))
    };
    NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(namespace_selector),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![tcp(port)]),
    }
}

/// The data plane accepts connections only from the ingress controller's namespace (every
/// namespace when the operator is configured with `*`), on its HTTP port; and, when a
/// monitoring namespace is configured, from that namespace on its metrics port.
pub fn dataplane_policy(inputs: &Inputs<'_>) -> NetworkPolicy {
    let names = inputs.names();
    let mut rules = vec![from_namespace(&inputs.config.ingress_namespace, PORT_VALUE)];
    let monitoring = inputs.config.tenant_metrics_namespace.trim();
    if !monitoring.is_empty() {
        rules.push(from_namespace(monitoring, METRICS_PORT_VALUE));
    }
    NetworkPolicy {
        metadata: meta(inputs, &names.dataplane_policy, Component::DataPlane),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(selector_labels(
                &names.instance,
                Component::DataPlane,
            ))),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    }
}
