//! The reconcile flows against a real cluster: `KUBECONFIG=… cargo test -p vibe-operator --test
//! cluster -- --ignored --test-threads=1`. Needs the CRD installable (cluster-admin) and the
//! s3s-fs test server (deploy/local/install-servers). Each test uses its own namespace and deletes
//! it at the end. Pods need not become ready: these tests check the API conversation.
//! `backup_schedule_and_restore` checks the backup CronJob and the restore status against the
//! server's own validation.

mod cluster_support;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::store::Writer;
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use vibe_operator::bucket::BucketClient;
use vibe_operator::config::{OperatorConfig, S3Config};
use vibe_operator::controller::cache::{Cached, ChildCaches, insert};
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

/// Lists the operator's children of one kind in `ns` into their cache, as the watch's first
/// list does.
async fn fill<K>(client: &Client, ns: &str, writer: &mut Writer<Cached<K>>)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + 'static,
{
    let lp = kube::api::ListParams::default().labels(vibe_operator::naming::MANAGED_SELECTOR);
    for object in Api::<K>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
    {
        insert(writer, object);
    }
}

/// A context whose caches are filled from the cluster before each reconcile (what the watches do).
async fn context(client: &Client, ns: &str, s3: &S3Config) -> Arc<Context> {
    context_with(client, ns, s3, |_| {}).await
}

/// [`context`] with the operator's configuration changed by `configure`.
async fn context_with(
    client: &Client,
    ns: &str,
    s3: &S3Config,
    configure: impl FnOnce(&mut OperatorConfig),
) -> Arc<Context> {
    let (caches, mut w) = ChildCaches::new();
    fill(client, ns, &mut w.secrets).await;
    fill(client, ns, &mut w.stateful_sets).await;
    fill(client, ns, &mut w.deployments).await;
    fill(client, ns, &mut w.config_maps).await;
    fill(client, ns, &mut w.services).await;
    fill(client, ns, &mut w.ingresses).await;
    fill(client, ns, &mut w.network_policies).await;
    fill(client, ns, &mut w.cron_jobs).await;
    fill(client, ns, &mut w.jobs).await;
    w.synced.mark_all();
    drop(w);
    let mut config = OperatorConfig {
        base_domain: "vibe.test".into(),
        s3: s3.clone(),
        ..OperatorConfig::default()
    };
    configure(&mut config);
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

/// A DID the webhook would accept (the fixtures' owner).
const OWNER_DID: &str = "did:vibe:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
/// The platform's backup bucket in the backup test.
const BACKUPS: &str = "vibe-backups";

fn env_value(deployment: &Deployment, name: &str) -> Option<String> {
    let containers = &deployment.spec.as_ref()?.template.spec.as_ref()?.containers;
    containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

/// What only a real API server can say about the backup children: the CronJob the operator
/// writes passes the server's own validation (schedule, job template, pod template, security
/// context) and goes when `spec.backup` goes; a restored instance's data plane is pointed at
/// its backup, and `status.restore` follows the bucket to `Restored`. (The Job controller and
/// a kubelet are not needed: a finished Job read into `status.lastBackup` is the fake-cluster
/// flow `controller::backup_tests`.)
#[tokio::test]
#[ignore = "needs a cluster (KUBECONFIG)"]
async fn backup_schedule_and_restore() {
    let ns = "vibe-operator-test-backup";
    let client = setup(ns).await;
    let s3 = vibe_test_support::S3Server::start().await.unwrap();
    s3.create_bucket(BACKUPS).await.unwrap();
    let s3c = s3_config(&s3);
    let configure = |c: &mut OperatorConfig| {
        c.backup_bucket = Some(BACKUPS.into());
        c.backup_prefix = "cluster-a/".into();
    };
    let reconcile_instance = |name: &'static str| {
        let (client, s3c) = (client.clone(), s3c.clone());
        async move {
            let api: Api<VibeInstance> = Api::namespaced(client.clone(), ns);
            let instance = api.get(name).await.unwrap();
            let ctx = context_with(&client, ns, &s3c, configure).await;
            reconcile(Arc::new(instance), ctx).await
        }
    };
    let api: Api<VibeInstance> = Api::namespaced(client.clone(), ns);
    let instance: VibeInstance = serde_json::from_value(serde_json::json!({
        "apiVersion": "cloud.vibeapp.dev/v1alpha1",
        "kind": "VibeInstance",
        "metadata": {"name": "alice", "namespace": ns},
        "spec": {
            "deletionPolicy": "Delete",
            "owner": {"did": OWNER_DID},
            "backup": {"schedule": "30 2 * * *", "retention": 3}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &instance).await.unwrap();

    // The CronJob is accepted by the server as the operator wrote it.
    reconcile_instance("alice").await.unwrap();
    reconcile_instance("alice").await.unwrap();
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), ns);
    let cron = cron_jobs
        .get_opt("alice-backup")
        .await
        .unwrap()
        .expect("the backup CronJob");
    let spec = &cron.spec;
    assert_eq!(spec.schedule, "30 2 * * *");
    let pod = spec
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref();
    let args = pod.unwrap().containers[0].args.clone().unwrap_or_default();
    assert!(
        args.iter().any(|a| a == "backup"),
        "runs the backup: {args:?}"
    );
    // A resync leaves it alone.
    let version = cron.resource_version();
    reconcile_instance("alice").await.unwrap();
    assert_eq!(
        cron_jobs
            .get("alice-backup")
            .await
            .unwrap()
            .resource_version(),
        version
    );

    // spec.backup removed: the CronJob goes.
    api.patch(
        "alice",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"backup": null}})),
    )
    .await
    .unwrap();
    reconcile_instance("alice").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(cron_jobs.get_opt("alice-backup").await.unwrap().is_none());

    // Restore: a new instance named after alice's backup.
    let backup = "20261204T023000.123Z-1a2b3c4d";
    let key = format!("cluster-a/{ns}/alice/{backup}.vibe.age");
    let restored: VibeInstance = serde_json::from_value(serde_json::json!({
        "apiVersion": "cloud.vibeapp.dev/v1alpha1",
        "kind": "VibeInstance",
        "metadata": {"name": "bob", "namespace": ns},
        "spec": {
            "deletionPolicy": "Delete",
            "owner": {"did": OWNER_DID},
            "restoreFrom": {"instance": "alice", "backup": backup}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &restored).await.unwrap();
    reconcile_instance("bob").await.unwrap();
    reconcile_instance("bob").await.unwrap();
    let phase = |name: &'static str| {
        let api = api.clone();
        async move {
            let status = api.get(name).await.unwrap().status.unwrap_or_default();
            status.restore.map(|r| r.phase).unwrap_or_default()
        }
    };
    assert_eq!(phase("bob").await, "BackupNotFound");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let dataplane = deployments.get("bob-dataplane").await.unwrap();
    assert_eq!(
        env_value(&dataplane, "VIBE_RESTORE_BUCKET").as_deref(),
        Some(BACKUPS)
    );
    assert_eq!(
        env_value(&dataplane, "VIBE_RESTORE_OBJECT_KEY").as_deref(),
        Some(key.as_str())
    );

    let client_s3 = s3.client();
    client_s3
        .put_object()
        .bucket(BACKUPS)
        .key(&key)
        .body(vec![7u8; 1234].into())
        .send()
        .await
        .unwrap();
    reconcile_instance("bob").await.unwrap();
    assert_eq!(phase("bob").await, "Available");

    // The owner's import finished: the data plane left the outcome in bob's bucket.
    let bucket = env_value(&dataplane, "S3_BUCKET_NAME").expect("bob's bucket");
    let outcome = vibe_api::export::RestoreOutcome {
        outcome: vibe_api::export::RestoreEnd::Restored,
        time: "2026-12-04T21:00:00.000Z".into(),
        bucket: BACKUPS.into(),
        object_key: key.clone(),
        export_id: None,
    };
    client_s3
        .put_object()
        .bucket(&bucket)
        .key(vibe_api::export::RESTORE_OUTCOME_KEY)
        .body(serde_json::to_vec(&outcome).unwrap().into())
        .send()
        .await
        .unwrap();
    reconcile_instance("bob").await.unwrap();
    assert_eq!(phase("bob").await, "Restored");

    for name in ["alice", "bob"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
        reconcile_instance(name).await.unwrap();
    }
    teardown(&client, ns).await;
}
