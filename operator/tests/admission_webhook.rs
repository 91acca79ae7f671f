//! AdmissionReview v1 request/response fixtures for every VibeInstance rule, through the
//! webhook's HTTP router.

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use tower::ServiceExt;
use vibe_operator::webhook::hosts::StaticHosts;
use vibe_operator::webhook::rules::ImageAllowList;
use vibe_operator::webhook::{VALIDATE_PATH, WebhookState, router};

const DID: &str = "did:vibe:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
const OTHER_DID: &str = "did:vibe:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG";

fn state(allowed: &[&str]) -> WebhookState {
    let hosts = BTreeMap::from([
        ("taken.example.org".to_string(), "shop/bob".to_string()),
        (
            "carol.vibe.example.org".to_string(),
            "shop/carol".to_string(),
        ),
    ]);
    WebhookState::new(
        Arc::new(StaticHosts(hosts)),
        "vibe.example.org",
        ImageAllowList::new(allowed.iter().copied()),
    )
}

fn instance(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "cloud.vibeapp.dev/v1alpha1", "kind": "VibeInstance",
           "metadata": {"name": name, "namespace": "shop"}, "spec": spec})
}

fn review(operation: &str, object: Option<Value>, old: Option<Value>) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "cloud.vibeapp.dev", "version": "v1alpha1", "kind": "VibeInstance"},
            "resource": {"group": "cloud.vibeapp.dev", "version": "v1alpha1", "resource": "vibeinstances"},
            "name": "alice",
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters"]},
            "object": object,
            "oldObject": old,
            "dryRun": false
        }
    })
}

async fn send(state: WebhookState, body: Value) -> Value {
    let request = Request::post(VALIDATE_PATH)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let response = router(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let review: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(
        review["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    review["response"].clone()
}

async fn allowed(body: Value) {
    let response = send(state(&[]), body).await;
    assert_eq!(response["allowed"], true, "{response}");
}

async fn denied(state: WebhookState, body: Value, expected: &[&str]) -> String {
    let response = send(state, body).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 422);
    assert_eq!(response["status"]["reason"], "Invalid");
    let message = response["status"]["message"].as_str().unwrap().to_string();
    for part in expected {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    message
}

#[tokio::test]
async fn a_good_instance_is_admitted() {
    allowed(review(
        "CREATE",
        Some(instance(
            "alice",
            json!({"owner": {"did": DID}, "host": "alice.example.org"}),
        )),
        None,
    ))
    .await;
    allowed(review("CREATE", Some(instance("alice", json!({}))), None)).await;
    allowed(review("DELETE", None, Some(instance("alice", json!({}))))).await;
}

#[tokio::test]
async fn malformed_owner_dids_are_denied() {
    for (did, reason) in [
        (
            "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
            "expected a DID starting with 'did:vibe:'",
        ),
        (
            "did:vibe:6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
            "multibase base58btc",
        ),
        ("did:vibe:z0OIl", "not valid base58"),
    ] {
        let body = review(
            "CREATE",
            Some(instance("alice", json!({"owner": {"did": did}}))),
            None,
        );
        denied(
            state(&[]),
            body,
            &["spec.owner.did", did, reason, "copy the owner's did:vibe:"],
        )
        .await;
    }
}

#[tokio::test]
async fn invalid_hosts_are_denied() {
    for (host, reason) in [
        ("Alice.Example.org", "lower-case"),
        ("https://alice.example.org", "without scheme"),
        ("alice.example.org:8443", "without a port"),
        ("alice..example.org", "empty label"),
        ("-alice.example.org", "start and end with a letter or digit"),
        ("al_ice.example.org", "may only contain a-z, 0-9 and '-'"),
    ] {
        let body = review(
            "CREATE",
            Some(instance("alice", json!({"host": host}))),
            None,
        );
        denied(
            state(&[]),
            body,
            &["spec.host", "is not a valid host name", reason, "RFC 1123"],
        )
        .await;
    }
}

#[tokio::test]
async fn hosts_used_by_another_instance_are_denied() {
    let body = review(
        "CREATE",
        Some(instance("alice", json!({"host": "taken.example.org"}))),
        None,
    );
    denied(
        state(&[]),
        body,
        &[
            "spec.host",
            "already served by VibeInstance shop/bob",
            "choose another spec.host",
        ],
    )
    .await;
    // The default host <name>.<base domain> counts too.
    let mut carol = instance("carol", json!({}));
    carol["metadata"]["namespace"] = json!("elsewhere");
    let body = review("CREATE", Some(carol), None);
    denied(
        state(&[]),
        body,
        &[
            "metadata.name",
            "carol.vibe.example.org",
            "set spec.host or choose another name",
        ],
    )
    .await;
    // An instance keeps its own host on update.
    let mut bob = instance("bob", json!({"host": "taken.example.org", "suspend": true}));
    bob["metadata"]["namespace"] = json!("shop");
    let old = instance("bob", json!({"host": "taken.example.org"}));
    let response = send(state(&[]), review("UPDATE", Some(bob), Some(old))).await;
    assert_eq!(response["allowed"], true);
}

#[tokio::test]
async fn owners_cannot_change_or_go_once_set() {
    let old = instance("alice", json!({"owner": {"did": DID}}));
    let changed = instance("alice", json!({"owner": {"did": OTHER_DID}}));
    denied(
        state(&[]),
        review("UPDATE", Some(changed), Some(old.clone())),
        &["spec.owner.did", "cannot change the owner", OTHER_DID],
    )
    .await;
    let removed = instance("alice", json!({}));
    denied(
        state(&[]),
        review("UPDATE", Some(removed), Some(old.clone())),
        &["spec.owner", "cannot remove the owner"],
    )
    .await;
    // Setting an owner on an unowned instance (a claim) is fine.
    allowed(review(
        "UPDATE",
        Some(old),
        Some(instance("alice", json!({}))),
    ))
    .await;
}

#[tokio::test]
async fn storage_can_grow_but_not_shrink() {
    let old = instance("alice", json!({"couchdb": {"storage": "10Gi"}}));
    let smaller = instance("alice", json!({"couchdb": {"storage": "5Gi"}}));
    denied(
        state(&[]),
        review("UPDATE", Some(smaller), Some(old.clone())),
        &[
            "spec.couchdb.storage",
            "cannot shrink the CouchDB volume from 10Gi to 5Gi",
        ],
    )
    .await;
    let same_in_other_units = instance("alice", json!({"couchdb": {"storage": "10240Mi"}}));
    allowed(review(
        "UPDATE",
        Some(same_in_other_units),
        Some(old.clone()),
    ))
    .await;
    allowed(review(
        "UPDATE",
        Some(instance("alice", json!({"couchdb": {"storage": "20Gi"}}))),
        Some(old),
    ))
    .await;
}

#[tokio::test]
async fn images_must_be_on_the_allow_list_when_one_is_configured() {
    let allow = ["couchdb:3.*", "ghcr.io/vibe-cloud/*"];
    let body = review(
        "CREATE",
        Some(instance(
            "alice",
            json!({"dataplane": {"image": "evil.io/miner:1"}}),
        )),
        None,
    );
    denied(
        state(&allow),
        body,
        &[
            "spec.dataplane.image",
            "evil.io/miner:1",
            "not allowed",
            "couchdb:3.*, ghcr.io/vibe-cloud/*",
        ],
    )
    .await;
    let body = review(
        "CREATE",
        Some(instance(
            "alice",
            json!({"couchdb": {"image": "couchdb:2.3.1"}}),
        )),
        None,
    );
    denied(state(&allow), body, &["spec.couchdb.image"]).await;
    let good = review(
        "CREATE",
        Some(instance(
            "alice",
            json!({"couchdb": {"image": "couchdb:3.5.0"}, "dataplane": {"image": "ghcr.io/vibe-cloud/vibe-dataplane:0.1.0"}}),
        )),
        None,
    );
    assert_eq!(send(state(&allow), good.clone()).await["allowed"], true);
    // Without an allow-list every image is fine.
    let any = review(
        "CREATE",
        Some(instance(
            "alice",
            json!({"dataplane": {"image": "evil.io/miner:1"}}),
        )),
        None,
    );
    allowed(any).await;
}

#[tokio::test]
async fn every_violation_is_reported_at_once() {
    let body = review(
        "CREATE",
        Some(instance(
            "alice",
            json!({"owner": {"did": "nope"}, "host": "taken.example.org"}),
        )),
        None,
    );
    let message = denied(state(&[]), body, &["spec.owner.did", "spec.host"]).await;
    assert!(message.contains("; "));
}

#[tokio::test]
async fn updates_judge_only_changed_fields_and_deletions_pass() {
    // An instance admitted before the allow-list existed can still be edited (and its finalizer removed).
    let old = instance("alice", json!({"dataplane": {"image": "evil.io/miner:1"}}));
    let mut new = old.clone();
    new["metadata"]["finalizers"] = json!([]);
    new["spec"]["suspend"] = json!(true);
    assert_eq!(
        send(
            state(&["ghcr.io/*"]),
            review("UPDATE", Some(new), Some(old.clone()))
        )
        .await["allowed"],
        true
    );
    let mut deleting = instance(
        "alice",
        json!({"owner": {"did": OTHER_DID}, "dataplane": {"image": "x"}}),
    );
    deleting["metadata"]["deletionTimestamp"] = json!("2026-11-25T12:00:00Z");
    let old_owned = instance("alice", json!({"owner": {"did": DID}}));
    assert_eq!(
        send(
            state(&["ghcr.io/*"]),
            review("UPDATE", Some(deleting), Some(old_owned))
        )
        .await["allowed"],
        true
    );
}

#[tokio::test]
async fn malformed_reviews_are_denied_not_crashed() {
    let body = review(
        "CREATE",
        Some(
            json!({"apiVersion": "cloud.vibeapp.dev/v1alpha1", "kind": "VibeInstance",
        "metadata": {"name": "alice"}, "spec": {"suspend": "yes"}}),
        ),
        None,
    );
    denied(state(&[]), body, &["not a valid VibeInstance"]).await;
    let request = Request::post(VALIDATE_PATH)
        .header("content-type", "application/json")
        .body(Body::from(
            "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
        ))
        .unwrap();
    let response = router(state(&[])).oneshot(request).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let review: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(review["response"]["allowed"], false);
}

#[tokio::test]
async fn requests_are_refused_until_the_cache_is_loaded() {
    let mut cold = state(&[]);
    cold.cache_ready = Arc::new(|| false);
    let body = review("CREATE", Some(instance("alice", json!({}))), None);
    let response = send(cold, body).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 503);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("retry in a few seconds")
    );
}

fn with_backup_bucket() -> WebhookState {
    let mut s = state(&[]);
    s.backup_bucket = Some("vibe-backups".into());
    s
}

#[tokio::test]
async fn backup_schedules_must_be_cron_and_need_a_bucket() {
    let backed_up = |schedule: &str| {
        instance(
            "alice",
            json!({"owner": {"did": DID}, "backup": {"schedule": schedule, "retention": 7}}),
        )
    };
    for good in ["30 2 * * *", "@daily", "0 */6 * * MON-FRI"] {
        let response = send(
            with_backup_bucket(),
            review("CREATE", Some(backed_up(good)), None),
        )
        .await;
        assert_eq!(response["allowed"], true, "{good}: {response}");
    }
    for (bad, says) in [
        ("every day", "expected 5 fields"),
        ("61 2 * * *", "minute"),
        ("0 2 * * * *", "found 6"),
        ("@every 1h", "unknown macro"),
        ("CRON_TZ=Europe/Paris 0 2 * * *", "schedules are in UTC"),
    ] {
        denied(
            with_backup_bucket(),
            review("CREATE", Some(backed_up(bad)), None),
            &["spec.backup.schedule", "is not a cron schedule", says],
        )
        .await;
    }
    // No platform bucket and none named: nowhere to write.
    denied(
        state(&[]),
        review("CREATE", Some(backed_up("30 2 * * *")), None),
        &["spec.backup.bucket", "--backup-bucket"],
    )
    .await;
    let own = instance(
        "alice",
        json!({"owner": {"did": DID},
               "backup": {"schedule": "30 2 * * *", "bucket": "alice-backups"}}),
    );
    allowed(review("CREATE", Some(own.clone()), None)).await;
    // An update that leaves spec.backup alone is not judged by it.
    let mut relabelled = own.clone();
    relabelled["spec"]["backup"]["schedule"] = json!("bad");
    let mut changed = relabelled.clone();
    changed["spec"]["suspend"] = json!(true);
    allowed(review("UPDATE", Some(changed), Some(relabelled))).await;
}

#[tokio::test]
async fn restore_from_is_checked_at_creation_and_refused_later() {
    let restoring = |owner: bool, from: Value| {
        let mut spec = json!({"restoreFrom": from});
        if owner {
            spec["owner"] = json!({"did": DID});
        }
        instance("alice", spec)
    };
    let good = json!({"instance": "old-alice", "backup": "20261204T023000.123Z-1a2b3c4d"});
    let response = send(
        with_backup_bucket(),
        review("CREATE", Some(restoring(true, good.clone())), None),
    )
    .await;
    assert_eq!(response["allowed"], true, "{response}");
    let by_key = json!({"objectKey": "cluster-a/shop/old/x.vibe.age", "bucket": "old-provider"});
    allowed(review("CREATE", Some(restoring(true, by_key)), None)).await;

    for (from, owner, expected) in [
        (
            good.clone(),
            false,
            vec!["spec.restoreFrom", "needs spec.owner"],
        ),
        (
            json!({"instance": "old-alice", "backup": "yesterday"}),
            true,
            vec![
                "spec.restoreFrom.backup",
                "\"yesterday\" is not a backup name",
            ],
        ),
        (
            json!({"instance": "Old_Alice", "backup": "20261204T023000.123Z-1a2b3c4d"}),
            true,
            vec!["spec.restoreFrom.instance", "is not an instance name"],
        ),
        (
            json!({"instance": "old-alice"}),
            true,
            vec!["set either instance and backup, or objectKey"],
        ),
        (
            json!({"instance": "old-alice", "backup": "20261204T023000.123Z-1a2b3c4d",
                   "objectKey": "x.vibe.age"}),
            true,
            vec!["set either instance and backup, or objectKey"],
        ),
        (
            json!({"objectKey": "/abs/x.vibe.age"}),
            true,
            vec!["spec.restoreFrom.objectKey", "without a leading /"],
        ),
    ] {
        denied(
            with_backup_bucket(),
            review("CREATE", Some(restoring(owner, from)), None),
            &expected,
        )
        .await;
    }
    // Without a platform backup bucket the bucket must be named.
    denied(
        state(&[]),
        review("CREATE", Some(restoring(true, good.clone())), None),
        &["spec.restoreFrom.bucket", "--backup-bucket"],
    )
    .await;
    // Added, changed or removed on an existing instance: refused.
    let plain = instance("alice", json!({"owner": {"did": DID}}));
    denied(
        with_backup_bucket(),
        review(
            "UPDATE",
            Some(restoring(true, good.clone())),
            Some(plain.clone()),
        ),
        &[
            "spec.restoreFrom",
            "only be set when the instance is created",
        ],
    )
    .await;
    denied(
        with_backup_bucket(),
        review("UPDATE", Some(plain), Some(restoring(true, good.clone()))),
        &[
            "spec.restoreFrom",
            "only be set when the instance is created",
        ],
    )
    .await;
    // Unchanged on an update: fine.
    let same = restoring(true, good);
    let response = send(
        with_backup_bucket(),
        review("UPDATE", Some(same.clone()), Some(same)),
    )
    .await;
    assert_eq!(response["allowed"], true, "{response}");
}
