//! The reconcile flows against a real cluster: `KUBECONFIG=… cargo test -p vibe-operator --test
//! cluster -- --ignored --test-threads=1`. Needs the CRD installable (cluster-admin) and the
//! s3s-fs test server (deploy/local/install-servers). Each test uses its own namespace and deletes
//! it at the end. Pods need not become ready: these tests check the API conversation.

mod cluster_support;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use vibe_operator::bucket::BucketClient;
use vibe_operator::config::{OperatorConfig, S3Config};
use vibe_operator::controller::cache::{ChildCaches, insert};
use vibe_operator::controller::{Context, reconcile};
use vibe_operator::crd::{DeletionPolicy, VibeInstance, VibeInstanceSpec};
use vibe_operator::leader::Leadership;
use vibe_operator::metrics::Metrics;

async fn setup(ns: &str) -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "set KUBECONFIG to run the cluster suite"
    );
    let client = Client::try_default().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "vibeinstances.cloud.vibeapp.dev",
        &PatchParams::apply("vibe-operator-tests").force(),
        &Patch::Apply(VibeInstance::crd()),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some(ns.into());
    let _ = namespaces.create(&PostParams::default(), &n).await;
    client
}

async fn teardown(client: &Client, ns: &str) {
    let left = cluster_support::delete_namespaces(client, &[ns], Duration::from_secs(120)).await;
    assert!(left.is_empty(), "namespace left behind: {left:?}");
}

/// A context whose caches are filled from the cluster before each reconcile (what the watches do).
async fn context(client: &Client, ns: &str, s3: &S3Config) -> Arc<Context> {
    let (caches, mut w) = ChildCaches::new();
    let lp = kube::api::ListParams::default().labels(vibe_operator::naming::MANAGED_SELECTOR);
    for s in Api::<Secret>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
    {
        insert(&mut w.secrets, s);
    }
    for s in Api::<StatefulSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
    {
        insert(&mut w.stateful_sets, s);
    }
    for d in Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
    {
        insert(&mut w.deployments, d);
    }
    for o in Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
    {
        insert(&mut w.config_maps, o);
    }
    for o in Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
    {
        insert(&mut w.services, o);
    }
    for o in Api::<k8s_openapi::api::networking::v1::Ingress>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
    {
        insert(&mut w.ingresses, o);
    }
    for o in Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
    {
        insert(&mut w.network_policies, o);
    }
    w.synced.mark_all();
    drop(w);
    let config = OperatorConfig {
        base_domain: "vibe.test".into(),
        s3: s3.clone(),
        ..OperatorConfig::default()
    };
    Arc::new(Context::new(
        client.clone(),
        "vibe-operator-tests".into(),
        Arc::new(config),
        caches,
        BucketClient::new(s3),
        Arc::new(Metrics::default()),
        Leadership::always(),
    ))
}

fn s3_config(s3: &vibe_test_support::S3Server) -> S3Config {
    S3Config {
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        path_style: true,
        access_key_id: s3.access_key.clone(),
        secret_access_key: s3.secret_key.clone(),
        tenant_endpoint: None,
    }
}

async fn reconcile_now(
    client: &Client,
    ns: &str,
    s3: &S3Config,
) -> Result<Action, vibe_operator::Error> {
    let api: Api<VibeInstance> = Api::namespaced(client.clone(), ns);
    let instance = api.get("alice").await.unwrap();
    reconcile(Arc::new(instance), context(client, ns, s3).await).await
}

#[tokio::test]
#[ignore = "needs a cluster (KUBECONFIG)"]
async fn provision_resync_without_writes_and_delete() {
    let ns = "vibe-operator-test-flow";
    let client = setup(ns).await;
    let s3 = vibe_test_support::S3Server::start().await.unwrap();
    let s3c = s3_config(&s3);
    let api: Api<VibeInstance> = Api::namespaced(client.clone(), ns);
    let mut instance = VibeInstance::new("alice", VibeInstanceSpec::default());
    instance.spec.deletion_policy = DeletionPolicy::Delete;
    api.create(&PostParams::default(), &instance).await.unwrap();

    // Finalizer, then children.
    reconcile_now(&client, ns, &s3c).await.unwrap();
    reconcile_now(&client, ns, &s3c).await.unwrap();
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    assert!(sts.get_opt("alice-couchdb").await.unwrap().is_some());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    assert!(secrets.get_opt("alice-claim").await.unwrap().is_some());
    let stored = api.get("alice").await.unwrap();
    assert!(stored.status.is_some(), "status written");

    // Resync: no child changes resourceVersion.
    reconcile_now(&client, ns, &s3c).await.unwrap();
    let versions = |list: Vec<Secret>| {
        list.into_iter()
            .map(|s| (s.name_any(), s.resource_version()))
            .collect::<Vec<_>>()
    };
    let lp = kube::api::ListParams::default().labels(vibe_operator::naming::MANAGED_SELECTOR);
    let before = versions(secrets.list(&lp).await.unwrap().items);
    let sts_before = sts.get("alice-couchdb").await.unwrap().resource_version();
    reconcile_now(&client, ns, &s3c).await.unwrap();
    assert_eq!(versions(secrets.list(&lp).await.unwrap().items), before);
    assert_eq!(
        sts.get("alice-couchdb").await.unwrap().resource_version(),
        sts_before
    );

    // Delete: the bucket goes and the finalizer is released.
    api.delete("alice", &DeleteParams::default()).await.unwrap();
    reconcile_now(&client, ns, &s3c).await.unwrap();
    assert!(
        !BucketClient::new(&s3c)
            .exists(&format!("vibe-{ns}-alice"))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        api.get_opt("alice").await.unwrap().is_none(),
        "finalizer released"
    );
    teardown(&client, ns).await;
}
