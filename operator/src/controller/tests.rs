//! API conversation scenarios against the tower-test mock API server, with a real
//! S3-compatible server (s3s-fs through `vibe-test-support`) for the buckets.

use super::fixtures::*;
use super::status::types;
use super::{Context, error_policy, reconcile};
use crate::bucket::BucketClient;
use crate::crd::{DeletionPolicy, Phase, VibeInstance, VibeInstanceStatus};
use crate::desired::secrets::{CLAIM_CODE_KEY, secret_value};
use crate::error::Error;
use aws_sdk_s3::primitives::ByteStream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use std::sync::Arc;
use std::time::Duration;
use vibe_test_support::S3Server;

async fn run(instance: &VibeInstance, ctx: &Arc<Context>) -> Result<Action, Error> {
    tokio::time::timeout(
        Duration::from_secs(30),
        reconcile(Arc::new(instance.clone()), ctx.clone()),
    )
    .await
    .expect("reconcile finished in time")
}

fn condition<'a>(
    status: &'a VibeInstanceStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

/// The generated Secrets, created (POST) when the caches do not hold them.
const SECRET_CREATES: [&str; 3] = ["alice-couchdb-auth", "alice-token-key", "alice-claim"];

const CHILD_APPLIES: [&str; 9] = [
    "PATCH /api/v1/namespaces/tenants/secrets/alice-s3",
    "PATCH /api/v1/namespaces/tenants/configmaps/alice-couchdb-config",
    "PATCH /api/v1/namespaces/tenants/services/alice-couchdb",
    "PATCH /apis/apps/v1/namespaces/tenants/statefulsets/alice-couchdb",
    "PATCH /api/v1/namespaces/tenants/services/alice-dataplane",
    "PATCH /apis/apps/v1/namespaces/tenants/deployments/alice-dataplane",
    "PATCH /apis/networking.k8s.io/v1/namespaces/tenants/ingresses/alice",
    "PATCH /apis/networking.k8s.io/v1/namespaces/tenants/networkpolicies/alice-couchdb",
    "PATCH /apis/networking.k8s.io/v1/namespaces/tenants/networkpolicies/alice-dataplane",
];

/// First reconcile, then the watches catch up, then a resync: returns the context, the
/// writers, the log (cleared) and the instance as stored, in steady state.
async fn steady_state(
    instance: VibeInstance,
    s3: &S3Server,
) -> (Arc<Context>, super::cache::ChildWriters, Log, VibeInstance) {
    let (ctx, mut writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        s3_config(s3),
    );
    run(&instance, &ctx).await.expect("first reconcile");
    seed_caches_from_applies(&mut writers, &log);
    let mut instance = instance;
    instance.status = last_status(&log);
    log.clear();
    run(&instance, &ctx).await.expect("second reconcile");
    if let Some(s) = last_status(&log) {
        instance.status = Some(s);
    }
    log.clear();
    (ctx, writers, log, instance)
}

#[tokio::test]
async fn first_reconcile_creates_every_child_with_ssa_and_reports_progress() {
    let s3 = S3Server::start().await.unwrap();
    let instance = VibeInstance::test();
    let (ctx, _writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        s3_config(&s3),
    );
    let action = run(&instance, &ctx).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(60)),
        "not ready yet: shorter safety-net requeue"
    );

    let lines = log.lines();
    // The generated Secrets the caches do not hold are created: one request each, and a create
    // cannot overwrite one that exists after all (see the 409 test below).
    for name in SECRET_CREATES {
        let r = log.created_secret(name);
        assert!(r.uri.contains("fieldManager=vibe-operator"), "{}", r.uri);
    }
    // Every other child is server-side applied once, in whatever order.
    let mut applies: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("PATCH") && !l.ends_with("/status"))
        .map(String::as_str)
        .collect();
    applies.sort_unstable();
    let mut expected = CHILD_APPLIES.to_vec();
    expected.sort_unstable();
    assert_eq!(applies, expected, "{lines:?}");
    for line in CHILD_APPLIES {
        let r = log.request(line);
        assert!(
            r.uri.contains("fieldManager=vibe-operator") && r.uri.contains("force=true"),
            "{}",
            r.uri
        );
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
    }
    for r in log.all().iter().filter(|r| !r.line().ends_with("/status")) {
        let owner = &r.body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "VibeInstance");
        assert_eq!(owner["uid"], "0f6b1c7e-alice");
        assert_eq!(owner["controller"], true);
        assert_eq!(
            r.body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "vibe-operator"
        );
    }
    // The orderings that matter: the Secrets exist before the workloads that mount them, and
    // the status reports what was written (it comes last). Nothing else is sent.
    const SECRET_POST: &str = "POST /api/v1/namespaces/tenants/secrets";
    const STATUS: &str =
        "PATCH /apis/cloud.vibeapp.dev/v1alpha1/namespaces/tenants/vibeinstances/alice/status";
    log.assert_before(SECRET_POST, CHILD_APPLIES[3]);
    log.assert_before(SECRET_POST, CHILD_APPLIES[5]);
    assert_eq!(lines.last().map(String::as_str), Some(STATUS), "{lines:?}");
    assert_eq!(lines.len(), 13, "{lines:?}");

    let status = last_status(&log).unwrap();
    assert_eq!(status.phase, Some(Phase::Provisioning));
    assert_eq!(status.url.as_deref(), Some("https://alice.vibe.example"));
    assert_eq!(status.bucket.as_deref(), Some("vibe-tenants-alice"));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(condition(&status, types::READY).status, "False");
    assert_eq!(condition(&status, types::BUCKET_READY).status, "True");
    assert_eq!(condition(&status, types::COUCHDB_READY).reason, "Starting");
    assert_eq!(condition(&status, types::CLAIMED).reason, "AwaitingClaim");
    // The claim code hash published for the admission endpoint matches the Secret.
    let claim_secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(log.created_secret("alice-claim").body).unwrap();
    let code = secret_value(&claim_secret, CLAIM_CODE_KEY).unwrap();
    assert_eq!(
        status.claim_code_hash,
        Some(crate::desired::claim_code_hash(&code))
    );
    assert!(
        BucketClient::new(&s3_config(&s3))
            .exists("vibe-tenants-alice")
            .await
            .unwrap(),
        "bucket created in S3"
    );
    // No Event: the first conditions (bucket available, CouchDB starting, claim awaited …) are
    // in the status, not an Event each (issue 14).
    assert!(event_reasons(&log).is_empty(), "{:?}", event_reasons(&log));
}

/// A generated Secret that exists although the cache does not hold it yet (the cache lags
/// behind an earlier write): the create answers 409, the live Secret is read, and its values
/// are kept — a credential is never regenerated.
#[tokio::test]
async fn a_generated_secret_the_cache_lags_behind_is_kept_not_regenerated() {
    let s3 = S3Server::start().await.unwrap();
    let instance = VibeInstance::test();
    let mut live: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "alice-couchdb-auth", "namespace": "tenants", "resourceVersion": "7"},
        "data": {"username": "YWRtaW4=", "password": "a2VwdA==", "erlangCookie": "Y29va2ll",
            "couchdbSecret": "c2VjcmV0"}
    }))
    .unwrap();
    live.metadata.uid = Some("uid-live".into());
    let (ctx, _writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            secrets: [("alice-couchdb-auth".to_string(), live)].into(),
        },
        s3_config(&s3),
    );
    run(&instance, &ctx).await.unwrap();
    let lines = log.lines();
    assert_eq!(
        lines[..2],
        [
            "POST /api/v1/namespaces/tenants/secrets",
            "GET /api/v1/namespaces/tenants/secrets/alice-couchdb-auth",
        ],
        "{lines:?}"
    );
    // Not created by us: applied (keeping its values), as any Secret the cache lacks.
    let applied = log
        .all()
        .into_iter()
        .find(|r| r.line() == "PATCH /api/v1/namespaces/tenants/secrets/alice-couchdb-auth")
        .expect("the live Secret applied with our labels and owner");
    assert_eq!(applied.body["data"]["password"], "a2VwdA==");
    assert_eq!(applied.body["data"]["erlangCookie"], "Y29va2ll");
    let created: Vec<String> = log
        .all()
        .iter()
        .filter(|r| r.method == "POST" && r.uri.contains("/secrets"))
        .map(|r| r.body["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(created, SECRET_CREATES, "each missing Secret tried once");
}

/// A reconcile whose cache still lacks the Secrets this replica created a moment ago (the watch
/// is behind): the Secrets the API server answered the creates with stand in for the cache's
/// copies, so they are neither created again (a 409 and a GET each), regenerated, nor applied.
/// A fleet reconciled faster than the Secret watch keeps up made hundreds of such round trips.
#[tokio::test]
async fn secrets_created_before_are_not_applied_again_while_the_cache_lags() {
    let s3 = S3Server::start().await.unwrap();
    let instance = VibeInstance::test();
    let (ctx, _writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        s3_config(&s3),
    );
    run(&instance, &ctx).await.unwrap();
    let created = log
        .lines()
        .iter()
        .filter(|l| *l == "POST /api/v1/namespaces/tenants/secrets")
        .count();
    assert_eq!(created, 3);
    log.clear();

    run(&instance, &ctx).await.unwrap();
    let lines = log.lines();
    let touched: Vec<&String> = lines.iter().filter(|l| l.contains("/secrets")).collect();
    assert!(
        touched.is_empty(),
        "Secrets created a moment ago were written or read again: {touched:?}"
    );
}

#[tokio::test]
async fn steady_state_makes_no_api_request() {
    let s3 = S3Server::start().await.unwrap();
    let (ctx, _writers, log, instance) = steady_state(VibeInstance::test(), &s3).await;
    let status = instance.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Ready), "{status:?}");
    assert_eq!(condition(&status, types::READY).status, "True");
    assert_eq!(condition(&status, types::INGRESS_READY).reason, "Admitted");

    let action = run(&instance, &ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert!(
        log.all().is_empty(),
        "a resync must not touch the API server: {:?}",
        log.lines()
    );
    // And again, to be sure nothing alternates between resyncs.
    run(&instance, &ctx).await.unwrap();
    assert!(log.all().is_empty(), "{:?}", log.lines());
}

#[tokio::test]
async fn drifted_and_deleted_children_are_restored_and_nothing_else_is_touched() {
    let s3 = S3Server::start().await.unwrap();
    let (ctx, mut writers, log, instance) = steady_state(VibeInstance::test(), &s3).await;

    // Someone edits the data plane image and deletes a NetworkPolicy.
    let mut deploy = super::cache::object(&ctx.caches.deployments, "tenants", "alice-dataplane")
        .unwrap()
        .unwrap();
    deploy
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("evil:latest".into());
    super::cache::insert(&mut writers.deployments, deploy);
    let policy = super::cache::object(&ctx.caches.network_policies, "tenants", "alice-couchdb")
        .unwrap()
        .unwrap();
    writers
        .network_policies
        .apply_watcher_event(&watcher::Event::Delete(
            super::cache::Cached::<NetworkPolicy>::new(&policy).unwrap(),
        ));

    run(&instance, &ctx).await.unwrap();
    let lines = log.lines();
    const DEPLOYMENT: &str = "PATCH /apis/apps/v1/namespaces/tenants/deployments/alice-dataplane";
    const POLICY: &str =
        "PATCH /apis/networking.k8s.io/v1/namespaces/tenants/networkpolicies/alice-couchdb";
    // The two children are restored; the re-applied Deployment rolls out again (the response
    // carries no ready status), which the status reports truthfully; no other child is touched.
    assert!(
        lines.iter().all(|l| l == DEPLOYMENT
            || l == POLICY
            || l.ends_with("/vibeinstances/alice/status")
            || l.contains("/events")),
        "{lines:?}"
    );
    log.request(POLICY);
    let restored: Deployment = serde_json::from_value(log.request(DEPLOYMENT).body).unwrap();
    let image = restored.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert!(
        image.starts_with("ghcr.io/vibe-cloud/vibe-dataplane:"),
        "{image}"
    );
}

#[tokio::test]
async fn suspend_scales_to_zero_and_reports_suspended() {
    let s3 = S3Server::start().await.unwrap();
    let (ctx, _writers, log, instance) = steady_state(VibeInstance::test(), &s3).await;
    let mut instance = instance.suspended();
    instance.metadata.generation = Some(2);
    run(&instance, &ctx).await.unwrap();
    const STATEFUL_SET: &str = "PATCH /apis/apps/v1/namespaces/tenants/statefulsets/alice-couchdb";
    const DEPLOYMENT: &str = "PATCH /apis/apps/v1/namespaces/tenants/deployments/alice-dataplane";
    const STATUS: &str =
        "PATCH /apis/cloud.vibeapp.dev/v1alpha1/namespaces/tenants/vibeinstances/alice/status";
    assert_eq!(log.request(STATEFUL_SET).body["spec"]["replicas"], 0);
    assert_eq!(log.request(DEPLOYMENT).body["spec"]["replicas"], 0);
    // Both scaled down before the status says Suspended.
    log.assert_before(STATEFUL_SET, STATUS);
    log.assert_before(DEPLOYMENT, STATUS);
    let status = last_status(&log).unwrap();
    assert_eq!(status.phase, Some(Phase::Suspended));
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(condition(&status, types::READY).reason, "Suspended");
    assert!(event_reasons(&log).contains(&"Suspended".to_string()));
}

#[tokio::test]
async fn pause_annotation_stops_child_writes_and_shows_a_condition() {
    // The object store is unreachable and the caches are empty: a paused instance touches neither.
    let instance = VibeInstance::test().paused();
    let (ctx, _writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        unreachable_s3(),
    );
    let action = run(&instance, &ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(
        log.lines(),
        [
            "PATCH /apis/cloud.vibeapp.dev/v1alpha1/namespaces/tenants/vibeinstances/alice/status",
            "POST /apis/events.k8s.io/v1/namespaces/tenants/events",
        ]
    );
    let status = last_status(&log).unwrap();
    assert_eq!(status.phase, Some(Phase::Paused));
    assert_eq!(condition(&status, types::RECONCILE_PAUSED).status, "True");
    assert_eq!(
        log.request("POST /apis/events.k8s.io/v1/namespaces/tenants/events")
            .body["type"],
        "Warning"
    );
    // Paused again: nothing changes, nothing is written.
    let mut instance = instance;
    instance.status = Some(status);
    log.clear();
    run(&instance, &ctx).await.unwrap();
    assert!(log.all().is_empty());
}

#[tokio::test]
async fn new_instances_get_the_finalizer_first() {
    let instance = VibeInstance::test().unfinalized();
    let (ctx, _writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        unreachable_s3(),
    );
    run(&instance, &ctx).await.unwrap();
    let all = log.all();
    assert_eq!(
        log.lines(),
        ["PATCH /apis/cloud.vibeapp.dev/v1alpha1/namespaces/tenants/vibeinstances/alice"]
    );
    assert_eq!(
        all[0].content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert!(all[0].body.to_string().contains(crate::crd::FINALIZER));
}

async fn bucket_with_object(s3: &S3Server) -> BucketClient {
    let buckets = BucketClient::new(&s3_config(s3));
    buckets.ensure("vibe-tenants-alice").await.unwrap();
    let raw = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(s3.region.clone()))
            .endpoint_url(&s3.endpoint)
            .force_path_style(true)
            .credentials_provider(aws_credential_types::Credentials::new(
                &s3.access_key,
                &s3.secret_key,
                None,
                None,
                "t",
            ))
            .build(),
    );
    raw.put_object()
        .bucket("vibe-tenants-alice")
        .key("blobs/photo.jpg")
        .body(ByteStream::from_static(b"jpeg"))
        .send()
        .await
        .unwrap();
    buckets
}

#[tokio::test]
async fn delete_policy_empties_and_removes_the_bucket_and_the_volume() {
    let s3 = S3Server::start().await.unwrap();
    let buckets = bucket_with_object(&s3).await;
    let mut instance = VibeInstance::test().owned().deleting(5);
    instance.spec.deletion_policy = DeletionPolicy::Delete;
    let (ctx, _writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        s3_config(&s3),
    );
    run(&instance, &ctx).await.unwrap();
    assert_eq!(
        log.lines(),
        [
            "PATCH /apis/cloud.vibeapp.dev/v1alpha1/namespaces/tenants/vibeinstances/alice/status",
            "POST /apis/events.k8s.io/v1/namespaces/tenants/events",
            "DELETE /api/v1/namespaces/tenants/persistentvolumeclaims/data-alice-couchdb-0",
            "POST /apis/events.k8s.io/v1/namespaces/tenants/events",
            "PATCH /apis/cloud.vibeapp.dev/v1alpha1/namespaces/tenants/vibeinstances/alice",
        ]
    );
    assert_eq!(event_reasons(&log), ["BucketDeleted", "VolumeDeleted"]);
    assert_eq!(last_status(&log).unwrap().phase, Some(Phase::Deleting));
    assert!(
        !buckets.exists("vibe-tenants-alice").await.unwrap(),
        "bucket removed"
    );
}

#[tokio::test]
async fn retain_policy_keeps_bucket_and_volume() {
    let s3 = S3Server::start().await.unwrap();
    let buckets = bucket_with_object(&s3).await;
    let instance = VibeInstance::test().owned().deleting(5);
    let (ctx, _writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        s3_config(&s3),
    );
    run(&instance, &ctx).await.unwrap();
    assert_eq!(
        log.lines(),
        [
            "PATCH /apis/cloud.vibeapp.dev/v1alpha1/namespaces/tenants/vibeinstances/alice/status",
            "POST /apis/events.k8s.io/v1/namespaces/tenants/events",
            "PATCH /apis/cloud.vibeapp.dev/v1alpha1/namespaces/tenants/vibeinstances/alice",
        ]
    );
    assert_eq!(event_reasons(&log), ["DataRetained"]);
    assert!(
        buckets.exists("vibe-tenants-alice").await.unwrap(),
        "bucket kept"
    );
}

#[tokio::test]
async fn deletion_with_unreachable_object_store_retries_with_backoff_and_reports_it() {
    let mut instance = VibeInstance::test().owned().deleting(5);
    instance.spec.deletion_policy = DeletionPolicy::Delete;
    let (ctx, _writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        unreachable_s3(),
    );
    let err = run(&instance, &ctx).await.unwrap_err();
    assert_eq!(err.metric_label(), "object_store");
    assert!(
        !log.lines().iter().any(|l| l
            == "PATCH /apis/cloud.vibeapp.dev/v1alpha1/namespaces/tenants/vibeinstances/alice"),
        "the finalizer stays while the bucket cannot be deleted: {:?}",
        log.lines()
    );
    let status = last_status(&log).unwrap();
    assert_eq!(
        condition(&status, types::BUCKET_READY).reason,
        "ObjectStoreUnreachable"
    );
    assert_eq!(
        event_reasons(&log),
        ["ObjectStoreUnreachable", "BucketDeletionFailed"]
    );
    let first = error_policy(Arc::new(instance.clone()), &err, ctx.clone());
    let second = error_policy(Arc::new(instance.clone()), &err, ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));
}

#[tokio::test]
async fn deletion_gives_up_on_the_bucket_after_the_deadline() {
    let mut instance = VibeInstance::test().owned().deleting(2 * 3600);
    instance.spec.deletion_policy = DeletionPolicy::Delete;
    let (ctx, _writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        unreachable_s3(),
    );
    run(&instance, &ctx).await.unwrap();
    assert_eq!(event_reasons(&log), ["BucketOrphaned", "VolumeDeleted"]);
    assert_eq!(
        log.lines().last().unwrap(),
        "PATCH /apis/cloud.vibeapp.dev/v1alpha1/namespaces/tenants/vibeinstances/alice",
        "finalizer removed"
    );
}

/// Issue 14 (1,000 instances): the reconciles that the children's watch events trigger right
/// after the first one do not ask the object store again; the bucket is checked once per resync
/// period. Here the store is stopped after the first reconcile: the second still reports the
/// bucket available instead of failing with "unreachable".
#[tokio::test]
async fn the_bucket_is_not_checked_again_before_the_resync() {
    let mut s3 = S3Server::start().await.unwrap();
    let instance = VibeInstance::test();
    let (ctx, mut writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        s3_config(&s3),
    );
    run(&instance, &ctx).await.expect("first reconcile");
    seed_caches_from_applies(&mut writers, &log);
    let mut instance = instance;
    instance.status = last_status(&log);
    s3.stop().await;
    log.clear();
    run(&instance, &ctx)
        .await
        .expect("no object store request, so no failure");
    let status = last_status(&log).expect("the children are ready now");
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(condition(&status, types::BUCKET_READY).reason, "Available");
}

#[tokio::test]
async fn unreachable_object_store_still_reconciles_children_and_fails_with_backoff() {
    let instance = VibeInstance::test().owned();
    let (ctx, _writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        unreachable_s3(),
    );
    let err = run(&instance, &ctx).await.unwrap_err();
    assert!(matches!(&err, Error::Finalizer(_)), "{err}");
    assert_eq!(err.metric_label(), "object_store");
    let applies = log
        .lines()
        .iter()
        .filter(|l| l.starts_with("PATCH") && !l.contains("vibeinstances"))
        .count();
    let creates = log
        .lines()
        .iter()
        .filter(|l| *l == "POST /api/v1/namespaces/tenants/secrets")
        .count();
    assert_eq!(
        (creates, applies),
        (2, 9),
        "every child but the claim Secret is still created or applied"
    );
    let status = last_status(&log).unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(
        condition(&status, types::BUCKET_READY).reason,
        "ObjectStoreUnreachable"
    );
    let warning = log
        .all()
        .into_iter()
        .find(|r| r.body["reason"] == "ObjectStoreUnreachable")
        .expect("a Warning event");
    assert_eq!(warning.body["type"], "Warning");
    assert_eq!(
        error_policy(Arc::new(instance), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    let encoded = {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("failures", "f", ctx.metrics.failures.clone());
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &registry).unwrap();
        s
    };
    assert!(
        encoded.contains("failures_total{reason=\"object_store\"} 1"),
        "{encoded}"
    );
}

#[tokio::test]
async fn claiming_rolls_the_data_plane_and_spends_the_claim_code() {
    let s3 = S3Server::start().await.unwrap();
    let (ctx, _writers, log, instance) = steady_state(VibeInstance::test(), &s3).await;
    let mut instance = instance.owned();
    instance.metadata.generation = Some(2);
    run(&instance, &ctx).await.unwrap();
    const DEPLOYMENT: &str = "PATCH /apis/apps/v1/namespaces/tenants/deployments/alice-dataplane";
    const SPEND_CODE: &str = "DELETE /api/v1/namespaces/tenants/secrets/alice-claim";
    let env = log.request(DEPLOYMENT).body["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        env.iter()
            .any(|e| e["name"] == "TARGET_USER_DID" && e["value"] == OWNER_DID)
    );
    assert!(!env.iter().any(|e| e["name"] == "VIBE_CLAIM_CODE"));
    // The code is spent only once the data plane no longer reads it.
    log.assert_before(DEPLOYMENT, SPEND_CODE);
    let status = last_status(&log).unwrap();
    assert_eq!(condition(&status, types::CLAIMED).status, "True");
    assert_eq!(status.owner.as_deref(), Some(OWNER_DID));
    assert_eq!(status.claim_code_hash, None);
    assert!(event_reasons(&log).contains(&"Claimed".to_string()));
}

#[tokio::test]
async fn standby_replicas_never_write() {
    let instance = VibeInstance::test().unfinalized();
    let (ctx, _writers, log) = context(
        FakeApi {
            instance: Some(instance.clone()),
            ..FakeApi::default()
        },
        unreachable_s3(),
    );
    let (_tx, standby) = crate::leader::Leadership::channel(false);
    let ctx = Arc::new(Context::new(
        ctx.client.clone(),
        "test".into(),
        ctx.config.clone(),
        ctx.caches.clone(),
        ctx.buckets.clone(),
        ctx.metrics.clone(),
        standby,
    ));
    assert_eq!(run(&instance, &ctx).await.unwrap(), Action::await_change());
    assert!(log.all().is_empty());
}
