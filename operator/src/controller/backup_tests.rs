//! Scheduled backups and restore through the whole controller loop ([`super::run`]) against
//! the list-and-watch fake API server ([`super::fake_cluster`], every request checked against
//! the chart's RBAC) and a real s3s-fs: the CronJob applied and removed, a finished backup Job
//! read back into `status.lastBackup` with its Event, and a restored instance pointed at its
//! backup.

use super::fake_cluster::FakeCluster;
use super::fixtures::OWNER_DID;
use super::loop_harness::{NS, Operator, eventually};
use crate::crd::{LastBackup, RestoreStatus};
use serde_json::{Value, json};
use std::time::Duration;
use vibe_api::export::{RESTORE_OUTCOME_KEY, RestoreEnd, RestoreOutcome};
use vibe_test_support::S3Server;

const INSTANCES: &str = "cloud.vibeapp.dev/v1alpha1/vibeinstances";
const CRON_JOBS: &str = "batch/v1/cronjobs";
const BACKUPS: &str = "vibe-backups";

/// The operator with the platform's backup bucket `vibe-backups` and prefix `cluster-a/`,
/// looking for the end of a restore every second.
async fn start_operator(cluster: &FakeCluster) -> Operator {
    let s3 = S3Server::start().await.expect("s3s-fs starts");
    s3.create_bucket(BACKUPS).await.unwrap();
    Operator::start_with(cluster, s3, |c| {
        c.backup_bucket = Some(BACKUPS.into());
        c.backup_prefix = "cluster-a/".into();
        c.restore_poll = Duration::from_secs(1);
    })
    .await
}

fn backed_up(name: &str) -> Value {
    json!({
        "apiVersion": "cloud.vibeapp.dev/v1alpha1",
        "kind": "VibeInstance",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "deletionPolicy": "Retain",
            "owner": {"did": OWNER_DID},
            "backup": {"schedule": "30 2 * * *", "retention": 3}
        }
    })
}

fn labels(instance: &str) -> Value {
    json!({
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": "backup",
        "app.kubernetes.io/managed-by": "vibe-operator",
    })
}

/// A Job as the CronJob controller creates it and the Job controller finishes it.
fn job(instance: &str, name: &str, created: &str, succeeded: bool) -> Value {
    let condition = if succeeded {
        json!({"type": "Complete", "status": "True"})
    } else {
        json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
               "message": "Job has reached the specified backoff limit"})
    };
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": NS,
            "creationTimestamp": created,
            "labels": labels(instance),
            "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp": created},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                "name": format!("{instance}-backup"), "uid": "cronjob-uid", "controller": true}],
        },
        "spec": {"template": {"spec": {"containers": [], "restartPolicy": "Never"}}},
        "status": {"conditions": [condition], "completionTime": created},
    })
}

/// A finished backup pod of `job` whose termination message is `report`.
fn pod(job: &str, n: u32, finished: &str, report: Option<Value>) -> Value {
    let mut labels = labels("ignored");
    labels["batch.kubernetes.io/job-name"] = json!(job);
    let mut terminated = json!({"exitCode": 0, "finishedAt": finished});
    if let Some(r) = report {
        terminated["message"] = json!(r.to_string());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("{job}-{n}"), "namespace": NS, "labels": labels},
        "spec": {"containers": [{"name": "backup", "image": "dataplane"}]},
        "status": {"containerStatuses": [{
            "name": "backup", "ready": false, "restartCount": 0, "image": "dataplane",
            "imageID": "", "state": {"terminated": terminated}
        }]},
    })
}

fn last_backup(cluster: &FakeCluster, name: &str) -> Option<LastBackup> {
    let status = cluster.get(INSTANCES, NS, name)?["status"]["lastBackup"].clone();
    serde_json::from_value(status).ok()
}

fn restore(cluster: &FakeCluster, name: &str) -> Option<RestoreStatus> {
    let status = cluster.get(INSTANCES, NS, name)?["status"]["restore"].clone();
    serde_json::from_value(status).ok()
}

/// Events posted for the instance: (reason, type, note).
fn events(cluster: &FakeCluster) -> Vec<(String, String, String)> {
    cluster
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.uri.contains("/events"))
        .map(|r| {
            let s = |k: &str| r.body[k].as_str().unwrap_or_default().to_string();
            (s("reason"), s("type"), s("note"))
        })
        .collect()
}

#[tokio::test]
async fn a_backup_schedule_is_a_cron_job_whose_finished_jobs_become_last_backup() {
    let cluster = FakeCluster::new().with_ready_workloads();
    cluster.put(
        "cloud.vibeapp.dev/v1alpha1",
        "vibeinstances",
        backed_up("alice"),
    );
    let operator = start_operator(&cluster).await;

    eventually(20, "the backup CronJob is applied", || async {
        cluster.get(CRON_JOBS, NS, "alice-backup").is_some()
    })
    .await;
    let cron_job = cluster.get(CRON_JOBS, NS, "alice-backup").unwrap();
    assert_eq!(cron_job["spec"]["schedule"], "30 2 * * *");
    let container = &cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], json!(["backup"]));
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect();
    for expected in [
        ("VIBE_BACKUP_BUCKET", BACKUPS),
        ("VIBE_BACKUP_PREFIX", "cluster-a/tenants/alice/"),
        ("VIBE_BACKUP_RETENTION", "3"),
    ] {
        assert!(
            env.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {env:?}"
        );
    }
    assert!(
        last_backup(&cluster, "alice").is_none(),
        "no backup ran yet"
    );

    // A scheduled run succeeds: its report becomes status.lastBackup, with a Normal Event.
    let key = "cluster-a/tenants/alice/20261204T023000.123Z-1a2b3c4d.vibe.age";
    let report = json!({
        "outcome": "Succeeded", "startedAt": "2026-12-04T02:30:00Z",
        "finishedAt": "2026-12-04T02:30:07Z", "bucket": BACKUPS, "objectKey": key,
        "name": "20261204T023000.123Z-1a2b3c4d", "size": 4096, "sha256": "ab".repeat(32),
        "deleted": 1
    });
    cluster.put(
        "v1",
        "pods",
        pod("alice-backup-1", 0, "2026-12-04T02:30:07Z", Some(report)),
    );
    cluster.put(
        "batch/v1",
        "jobs",
        job("alice", "alice-backup-1", "2026-12-04T02:30:00Z", true),
    );
    eventually(
        10,
        "status.lastBackup is the finished Job's report",
        || async { last_backup(&cluster, "alice").is_some_and(|b| b.job == "alice-backup-1") },
    )
    .await;
    let recorded = last_backup(&cluster, "alice").unwrap();
    assert_eq!(recorded.outcome, "Succeeded");
    assert_eq!(recorded.object_key.as_deref(), Some(key));
    assert_eq!(recorded.size, Some(4096));
    assert_eq!(recorded.deleted, Some(1));
    assert_eq!(recorded.time.as_deref(), Some("2026-12-04T02:30:07Z"));
    assert_eq!(
        recorded.scheduled_at.as_deref(),
        Some("2026-12-04T02:30:00Z")
    );
    eventually(5, "a BackupSucceeded Event", || async {
        events(&cluster)
            .iter()
            .any(|e| e.0 == "BackupSucceeded" && e.1 == "Normal")
    })
    .await;
    let pod_lists = |c: &FakeCluster| {
        c.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.uri.contains("/pods?"))
            .count()
    };
    assert_eq!(
        pod_lists(&cluster),
        1,
        "the pods of a finished Job are listed once"
    );

    // The next run fails twice (backoffLimit): the last attempt's report counts, and a
    // Warning Event says why.
    let failed = |message: &str| {
        json!({"outcome": "Failed", "startedAt": "2026-12-05T02:30:00Z",
               "finishedAt": "2026-12-05T02:30:01Z", "bucket": BACKUPS, "deleted": 0,
               "message": message})
    };
    cluster.put(
        "v1",
        "pods",
        pod(
            "alice-backup-2",
            0,
            "2026-12-05T02:30:01Z",
            Some(failed("first attempt")),
        ),
    );
    cluster.put(
        "v1",
        "pods",
        pod(
            "alice-backup-2",
            1,
            "2026-12-05T02:31:01Z",
            Some(failed("CouchDB unreachable")),
        ),
    );
    cluster.put(
        "batch/v1",
        "jobs",
        job("alice", "alice-backup-2", "2026-12-05T02:30:00Z", false),
    );
    eventually(10, "the failure is in status.lastBackup", || async {
        last_backup(&cluster, "alice").is_some_and(|b| b.job == "alice-backup-2")
    })
    .await;
    let recorded = last_backup(&cluster, "alice").unwrap();
    assert_eq!(recorded.outcome, "Failed");
    assert_eq!(recorded.message.as_deref(), Some("CouchDB unreachable"));
    assert!(recorded.object_key.is_none());
    eventually(5, "a BackupFailed Warning", || async {
        events(&cluster).iter().any(|e| {
            e.0 == "BackupFailed" && e.1 == "Warning" && e.2.contains("CouchDB unreachable")
        })
    })
    .await;

    // A Job killed before it could report (deadline, OOM): failed, with the Job's reason.
    cluster.put(
        "batch/v1",
        "jobs",
        job("alice", "alice-backup-3", "2026-12-06T02:30:00Z", false),
    );
    eventually(10, "a Job without a report is a failure", || async {
        last_backup(&cluster, "alice").is_some_and(|b| b.job == "alice-backup-3")
    })
    .await;
    let recorded = last_backup(&cluster, "alice").unwrap();
    assert_eq!(recorded.outcome, "Failed");
    assert!(
        recorded
            .message
            .as_deref()
            .is_some_and(|m| m.contains("BackoffLimitExceeded")),
        "{recorded:?}"
    );

    // An older Job showing up again changes nothing; a resync reads no pods.
    let lists = pod_lists(&cluster);
    cluster.put(
        "batch/v1",
        "jobs",
        job("alice", "alice-backup-0", "2026-12-01T02:30:00Z", true),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        last_backup(&cluster, "alice").unwrap().job,
        "alice-backup-3"
    );
    assert_eq!(pod_lists(&cluster), lists);

    // spec.backup removed: the CronJob goes; status.lastBackup stays.
    let mut without = backed_up("alice");
    without["spec"].as_object_mut().unwrap().remove("backup");
    cluster.put("cloud.vibeapp.dev/v1alpha1", "vibeinstances", without);
    eventually(10, "the CronJob is deleted", || async {
        cluster.get(CRON_JOBS, NS, "alice-backup").is_none()
    })
    .await;
    assert!(
        cluster
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.uri.contains("/cronjobs/alice-backup"))
    );
    assert_eq!(
        last_backup(&cluster, "alice").unwrap().job,
        "alice-backup-3"
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_restored_instance_is_pointed_at_its_backup_once_it_is_in_the_bucket() {
    let cluster = FakeCluster::new().with_ready_workloads();
    let operator = start_operator(&cluster).await;
    let name = "20261204T023000.123Z-1a2b3c4d";
    let key = format!("cluster-a/tenants/old-alice/{name}.vibe.age");
    cluster.put(
        "cloud.vibeapp.dev/v1alpha1",
        "vibeinstances",
        json!({
            "apiVersion": "cloud.vibeapp.dev/v1alpha1",
            "kind": "VibeInstance",
            "metadata": {"name": "alice", "namespace": NS},
            "spec": {
                "deletionPolicy": "Retain",
                "owner": {"did": OWNER_DID},
                "restoreFrom": {"instance": "old-alice", "backup": name}
            }
        }),
    );
    eventually(20, "status.restore says the backup is missing", || async {
        restore(&cluster, "alice").is_some_and(|r| r.phase == "BackupNotFound")
    })
    .await;
    let r = restore(&cluster, "alice").unwrap();
    assert_eq!(
        (r.bucket.as_str(), r.object_key.as_str()),
        (BACKUPS, key.as_str())
    );
    assert!(
        events(&cluster)
            .iter()
            .any(|e| e.0 == "RestoreBackupNotFound" && e.1 == "Warning")
    );
    let deployment = cluster
        .get("apps/v1/deployments", NS, "alice-dataplane")
        .expect("the data plane runs (it serves only its owner until the import)");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let value = |n: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .map(|e| e["value"].clone())
    };
    assert_eq!(value("VIBE_RESTORE_BUCKET"), Some(json!(BACKUPS)));
    assert_eq!(value("VIBE_RESTORE_OBJECT_KEY"), Some(json!(key)));

    // The backup arrives (copied in by the provider, say): found on a later reconcile.
    operator
        .s3
        .client()
        .put_object()
        .bucket(BACKUPS)
        .key(&key)
        .body(vec![7u8; 1234].into())
        .send()
        .await
        .unwrap();
    let mut touched = cluster.get(INSTANCES, NS, "alice").unwrap();
    touched["metadata"]["labels"] = json!({"touched": "yes"});
    cluster.put("cloud.vibeapp.dev/v1alpha1", "vibeinstances", touched);
    eventually(10, "status.restore: Available", || async {
        restore(&cluster, "alice").is_some_and(|r| r.phase == "Available")
    })
    .await;
    assert_eq!(restore(&cluster, "alice").unwrap().size, Some(1234));
    assert!(
        events(&cluster)
            .iter()
            .any(|e| e.0 == "RestoreBackupFound" && e.1 == "Normal")
    );

    // The owner ran `vibe restore`: the data plane leaves the outcome in the instance's own
    // bucket; the operator finds it (within --restore-poll, no event needed) and reports it.
    let bucket = value("S3_BUCKET_NAME").and_then(|b| b.as_str().map(str::to_string));
    let bucket = bucket.expect("the data plane's bucket");
    let restored = RestoreOutcome {
        outcome: RestoreEnd::Restored,
        time: "2026-12-04T21:00:00.000Z".into(),
        bucket: BACKUPS.into(),
        object_key: key.clone(),
        export_id: Some("0190a0a0-0000-7000-8000-000000000001".into()),
    };
    put_outcome(&operator, &bucket, &restored).await;
    eventually(10, "status.restore: Restored", || async {
        restore(&cluster, "alice").is_some_and(|r| r.phase == "Restored")
    })
    .await;
    let r = restore(&cluster, "alice").unwrap();
    assert_eq!(r.finished_at.as_deref(), Some("2026-12-04T21:00:00.000Z"));
    assert_eq!(r.export_id, restored.export_id);
    assert_eq!(r.size, Some(1234), "what was found is kept");
    assert!(
        events(&cluster)
            .iter()
            .any(|e| e.0 == "RestoreFinished" && e.1 == "Normal")
    );

    // Final: neither the backup nor the outcome is looked at again (both gone, still Restored).
    for k in [key.as_str(), RESTORE_OUTCOME_KEY] {
        let b = if k == key { BACKUPS } else { bucket.as_str() };
        operator
            .s3
            .client()
            .delete_object()
            .bucket(b)
            .key(k)
            .send()
            .await
            .unwrap();
    }
    let mut touched = cluster.get(INSTANCES, NS, "alice").unwrap();
    touched["metadata"]["labels"] = json!({"touched": "again"});
    cluster.put("cloud.vibeapp.dev/v1alpha1", "vibeinstances", touched);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = restore(&cluster, "alice").unwrap();
    assert_eq!(after, r, "a finished restore is not checked again");
    operator.stop().await;
}

async fn put_outcome(operator: &Operator, bucket: &str, outcome: &RestoreOutcome) {
    operator
        .s3
        .client()
        .put_object()
        .bucket(bucket)
        .key(RESTORE_OUTCOME_KEY)
        .body(serde_json::to_vec(outcome).unwrap().into())
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn an_abandoned_restore_is_seen_within_the_restore_poll_and_stays_abandoned() {
    let cluster = FakeCluster::new().with_ready_workloads();
    let s3 = S3Server::start().await.expect("s3s-fs starts");
    s3.create_bucket(BACKUPS).await.unwrap();
    let operator = Operator::start_with(&cluster, s3, |c| {
        c.backup_bucket = Some(BACKUPS.into());
        c.restore_poll = Duration::from_secs(1);
    })
    .await;
    let key = "tenants/lost/20261204T000000.000Z-00000000.vibe.age";
    cluster.put(
        "cloud.vibeapp.dev/v1alpha1",
        "vibeinstances",
        json!({
            "apiVersion": "cloud.vibeapp.dev/v1alpha1",
            "kind": "VibeInstance",
            "metadata": {"name": "bob", "namespace": NS},
            "spec": {
                "deletionPolicy": "Retain",
                "owner": {"did": OWNER_DID},
                "restoreFrom": {"objectKey": key}
            }
        }),
    );
    eventually(20, "status.restore: BackupNotFound", || async {
        restore(&cluster, "bob").is_some_and(|r| r.phase == "BackupNotFound")
    })
    .await;
    let deployment = cluster
        .get("apps/v1/deployments", NS, "bob-dataplane")
        .expect("the data plane");
    let bucket = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "S3_BUCKET_NAME")
        .and_then(|e| e["value"].as_str())
        .expect("the data plane's bucket")
        .to_string();
    // The owner abandons (`vibe restore --abandon`); nothing touches the instance: the
    // restore poll finds it.
    let abandoned = RestoreOutcome {
        outcome: RestoreEnd::Abandoned,
        time: "2026-12-04T21:30:00.000Z".into(),
        bucket: BACKUPS.into(),
        object_key: key.into(),
        export_id: None,
    };
    put_outcome(&operator, &bucket, &abandoned).await;
    eventually(10, "status.restore: Abandoned", || async {
        restore(&cluster, "bob").is_some_and(|r| r.phase == "Abandoned")
    })
    .await;
    let r = restore(&cluster, "bob").unwrap();
    assert_eq!(r.finished_at.as_deref(), Some("2026-12-04T21:30:00.000Z"));
    assert_eq!(r.message, None);
    assert!(
        events(&cluster)
            .iter()
            .any(|e| e.0 == "RestoreAbandoned" && e.1 == "Normal")
    );
    // The backup appearing later changes nothing: the restore is over.
    operator
        .s3
        .client()
        .put_object()
        .bucket(BACKUPS)
        .key(key)
        .body(vec![1u8; 10].into())
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(restore(&cluster, "bob").unwrap(), r);
    operator.stop().await;
}
