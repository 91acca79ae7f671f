//! Teardown shared by the real-cluster suites: namespaces that really go away.
//!
//! Deleting a namespace is not enough on every cluster. Two kinds of objects keep it
//! `Terminating` when nothing is left to release their finalizers:
//! - VibeInstances keep `cloud.vibeapp.dev/cleanup` once the operator that set it is stopped;
//! - PersistentVolumeClaims (the CouchDB StatefulSet's) keep `kubernetes.io/pvc-protection`
//!   when kube-controller-manager runs without its pvc-protection controller, or when a pod
//!   that uses the claim is never removed by a kubelet (an API server without nodes).
//!
//! [`delete_namespaces`] deletes the namespaces, then keeps clearing both finalizers on what is
//! left in them until the namespaces are gone, and reports what was still there when it gave up.

#![allow(dead_code)]

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;
use std::time::{Duration, Instant};
use vibe_operator::VibeInstance;

/// Removes every finalizer from the objects of kind `K` in `ns` that have one; returns how many
/// were patched.
async fn clear_finalizers<K>(client: &Client, ns: &str) -> usize
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let Ok(list) = api.list_metadata(&ListParams::default()).await else {
        return 0;
    };
    let held: Vec<String> = list
        .items
        .into_iter()
        .filter(|o| {
            o.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty())
        })
        .filter_map(|o| o.metadata.name)
        .collect();
    let patch = json!({"metadata": {"finalizers": null}});
    let cleared = held.len();
    futures::future::join_all(held.chunks(32).map(|chunk| {
        let api = api.clone();
        let patch = patch.clone();
        async move {
            for name in chunk {
                let _ = api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
        }
    }))
    .await;
    cleared
}

/// Deletes `namespaces` and waits up to `within` until they are gone, clearing the finalizers
/// of VibeInstances and PersistentVolumeClaims left in them (see the module docs). Returns the
/// namespaces still present at the end (printed too), empty when all are gone.
pub async fn delete_namespaces(
    client: &Client,
    namespaces: &[&str],
    within: Duration,
) -> Vec<String> {
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        let _ = api.delete(ns, &DeleteParams::default()).await;
    }
    let started = Instant::now();
    loop {
        let mut left = Vec::new();
        for ns in namespaces {
            if matches!(api.get_opt(ns).await, Ok(None)) {
                continue;
            }
            left.push(ns.to_string());
            clear_finalizers::<VibeInstance>(client, ns).await;
            clear_finalizers::<PersistentVolumeClaim>(client, ns).await;
        }
        if left.is_empty() {
            return left;
        }
        if started.elapsed() >= within {
            eprintln!(
                "namespaces still present {:.0?} after deletion: {left:?}",
                started.elapsed()
            );
            return left;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
