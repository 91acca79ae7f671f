//! Scheduled backups and restore in a reconcile (issue 18).
//!
//! - The backup CronJob is a child like the others ([`crate::desired::backup::cron_job`]);
//!   when `spec.backup` goes away (or the instance loses its destination) it is deleted
//!   here ([`remove_stale_cron_job`]).
//! - The Jobs the CronJob creates carry the instance's labels; their watch
//!   ([`super::cache::ChildCaches::jobs`]) triggers a reconcile when one finishes. The newest
//!   finished Job not yet in `status.lastBackup` is read once: the report the backup container
//!   left as its termination message (`vibe_api::export::BackupReport`) becomes
//!   `status.lastBackup` ([`observe_last_backup`]), and a failure is a Warning Event
//!   ([`transitions`]). That costs one Pod list per finished backup, nothing on a resync.
//! - With `spec.restoreFrom`, the backup is looked up (HEAD, never read: the operator cannot
//!   decrypt it) until it is found, into `status.restore` ([`observe_restore`]). The end of
//!   the restore is read from the outcome the data plane leaves in the instance's own bucket
//!   (`vibe_api::export::RESTORE_OUTCOME_KEY`, a small JSON object written after a completed
//!   import or an abandon): `Restored` or `Abandoned`, after which nothing is checked. While
//!   the restore has not ended, the instance is reconciled at least every `--restore-poll`.

use super::Context;
use super::cache::Cached;
use super::status::Transition;
use crate::crd::{LastBackup, RestoreStatus, VibeInstance, VibeInstanceStatus};
use crate::desired::Inputs;
use crate::desired::backup::{CONTAINER, cron_job, restore_source};
use crate::error::Result;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{info, warn};
use vibe_api::export::{
    BackupOutcome, BackupReport, RESTORE_OUTCOME_KEY, RestoreEnd, RestoreOutcome,
};

/// `status.lastBackup.outcome` values.
pub mod outcome {
    /// The archive was written and retention applied.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Nothing was written.
    pub const FAILED: &str = "Failed";
    /// The instance had no owner: nothing written.
    pub const SKIPPED: &str = "Skipped";
}

/// `status.restore.phase` values.
pub mod phase {
    /// The backup is in the bucket; the owner fetches, decrypts and imports it.
    pub const AVAILABLE: &str = "Available";
    /// There is no such object (yet): checked again on every reconcile.
    pub const NOT_FOUND: &str = "BackupNotFound";
    /// The object store could not be asked: checked again on every reconcile.
    pub const UNKNOWN: &str = "Unknown";
    /// An import into the instance completed (final).
    pub const RESTORED: &str = "Restored";
    /// The owner gave the restore up; the instance started empty (final).
    pub const ABANDONED: &str = "Abandoned";

    /// Whether `phase` is final: the restore ended and nothing is checked any more.
    pub fn is_final(phase: &str) -> bool {
        phase == RESTORED || phase == ABANDONED
    }
}

/// Largest restore outcome object read (it is a few hundred bytes).
const MAX_OUTCOME_BYTES: u64 = 64 * 1024;

/// Label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Annotation the CronJob controller puts on the Jobs it creates: the scheduled time.
pub const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Deletes the backup CronJob when the instance should not have one (any longer) and the
/// cache holds it. Its Jobs and pods go with it (garbage collection).
pub async fn remove_stale_cron_job(ctx: &Context, inputs: &Inputs<'_>) -> Result<()> {
    if cron_job(inputs).is_some() {
        return Ok(());
    }
    let ns = inputs.namespace();
    let name = inputs.names().backup;
    if super::cache::get(&ctx.caches.cron_jobs, &ns, &name).is_none() {
        return Ok(());
    }
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {
            ctx.metrics.write("delete");
            info!(cron_job = %name, "backup schedule removed");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The instance a backup Job belongs to: its owner is the CronJob `<instance>-backup`. Maps a
/// Job's change to that instance's reconcile.
pub fn instance_of_job(job: Cached<Job>) -> Option<ObjectRef<VibeInstance>> {
    let cron_job = job
        .owner_references()
        .iter()
        .find(|o| o.kind == "CronJob" && o.controller == Some(true))?;
    let instance = cron_job.name.strip_suffix(BACKUP_SUFFIX)?;
    Some(ObjectRef::new(instance).within(&job.namespace()?))
}

/// Suffix of the backup CronJob's name ([`crate::naming::ChildNames::backup`]).
const BACKUP_SUFFIX: &str = "-backup";

/// Whether a Job has finished: `Some(true)` complete, `Some(false)` failed, `None` running.
pub fn finished(job: &Job) -> Option<bool> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let holds = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if holds("Complete") {
        Some(true)
    } else if holds("Failed") {
        Some(false)
    } else {
        None
    }
}

/// The newest finished backup Job of `instance` in the Job cache (by creation time, then
/// name: the CronJob names its Jobs `<cronjob>-<scheduled minute>`). Only the Jobs of the
/// instance's CronJob (by owner, kept in the cache's metadata) are rebuilt from the cache.
pub fn newest_finished_job(
    jobs: &Store<Cached<Job>>,
    namespace: &str,
    instance: &str,
) -> Option<Job> {
    let cron_job = crate::naming::ChildNames::new(instance).backup;
    jobs.state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(namespace))
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| o.kind == "CronJob" && o.name == cron_job)
        })
        .filter_map(|j| j.object().ok())
        .filter(|j| finished(j).is_some())
        .max_by(|a, b| {
            (a.creation_timestamp(), a.name_any()).cmp(&(b.creation_timestamp(), b.name_any()))
        })
}

/// The report of the newest backup container that terminated with a message among `pods`
/// (a failed Job may have run several pods: the last attempt counts).
pub fn report_of(pods: &[Pod]) -> Option<BackupReport> {
    pods.iter()
        .filter_map(|p| {
            let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
            let terminated = statuses
                .iter()
                .find(|s| s.name == CONTAINER)?
                .state
                .as_ref()?
                .terminated
                .as_ref()?;
            let report: BackupReport =
                serde_json::from_str(terminated.message.as_deref()?.trim()).ok()?;
            Some((terminated.finished_at.clone().map(|t| t.0), report))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, report)| report)
}

/// `status.lastBackup` from a finished Job and the report its pod left (if any). Without a
/// report (the pod was killed, never started, or ran out of time) the Job's own condition
/// says why.
pub fn last_backup(job: &Job, succeeded: bool, report: Option<BackupReport>) -> LastBackup {
    let scheduled_at = job.annotations().get(SCHEDULED_ANNOTATION).cloned();
    let job_name = job.name_any();
    let Some(report) = report else {
        let why = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == "Failed" && c.status == "True")
                    .map(|c| {
                        format!(
                            "{}: {}",
                            c.reason.as_deref().unwrap_or("Failed"),
                            c.message.as_deref().unwrap_or_default()
                        )
                    })
            });
        let time = job
            .status
            .as_ref()
            .and_then(|s| s.completion_time.clone())
            .map(|t| t.0.to_string());
        return LastBackup {
            outcome: outcome::FAILED.into(),
            time,
            scheduled_at,
            job: job_name,
            message: Some(match (succeeded, why) {
                (_, Some(why)) => format!("the backup Job failed without a report ({why})"),
                (true, None) => "the backup Job completed without a report".into(),
                (false, None) => "the backup Job failed without a report".into(),
            }),
            ..LastBackup::default()
        };
    };
    let outcome = match report.outcome {
        BackupOutcome::Succeeded => outcome::SUCCEEDED,
        BackupOutcome::Failed => outcome::FAILED,
        BackupOutcome::Skipped => outcome::SKIPPED,
    };
    LastBackup {
        outcome: outcome.into(),
        time: Some(report.finished_at),
        scheduled_at,
        job: job_name,
        bucket: report.bucket,
        object_key: report.object_key,
        name: report.name,
        size: report.size,
        sha256: report.sha256,
        deleted: Some(report.deleted),
        message: report.message,
    }
}

/// The instance's `status.lastBackup`: unchanged unless a finished backup Job newer than the
/// one recorded is in the cache, whose pods are then listed once for the report.
pub async fn observe_last_backup(
    ctx: &Context,
    instance: &VibeInstance,
    namespace: &str,
) -> Result<Option<LastBackup>> {
    let recorded = instance.status.as_ref().and_then(|s| s.last_backup.clone());
    let Some(job) = newest_finished_job(&ctx.caches.jobs, namespace, &instance.name_any()) else {
        return Ok(recorded);
    };
    if recorded.as_ref().is_some_and(|r| r.job == job.name_any()) {
        return Ok(recorded);
    }
    let succeeded = finished(&job).unwrap_or(false);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={}", job.name_any())))
        .await?;
    let report = report_of(&list.items);
    if report.is_none() {
        warn!(job = %job.name_any(), "backup Job finished without a report");
    }
    Ok(Some(last_backup(&job, succeeded, report)))
}

/// The instance's `status.restore`: `None` without `spec.restoreFrom`; kept as it is once
/// the restore ended (`Restored`, `Abandoned`). Otherwise the outcome the data plane leaves
/// in the instance's bucket is looked for (one GET); without one, the backup is kept as
/// `Available` once found, else the object store is asked whether it is there (one HEAD).
pub async fn observe_restore(ctx: &Context, inputs: &Inputs<'_>) -> Option<RestoreStatus> {
    let (bucket, key) = restore_source(inputs)?;
    let recorded = inputs
        .instance
        .status
        .as_ref()
        .and_then(|s| s.restore.clone());
    let same_source = |r: &RestoreStatus| r.bucket == bucket && r.object_key == key;
    if let Some(r) = &recorded
        && same_source(r)
        && phase::is_final(&r.phase)
    {
        return recorded;
    }
    if let Some(ended) = restore_outcome(ctx, inputs).await {
        let size = recorded
            .as_ref()
            .filter(|r| same_source(r))
            .and_then(|r| r.size);
        return Some(RestoreStatus {
            bucket,
            object_key: key,
            phase: match ended.outcome {
                RestoreEnd::Restored => phase::RESTORED,
                RestoreEnd::Abandoned => phase::ABANDONED,
            }
            .into(),
            size,
            message: None,
            finished_at: Some(ended.time),
            export_id: ended.export_id,
        });
    }
    if let Some(r) = &recorded
        && same_source(r)
        && r.phase == phase::AVAILABLE
    {
        return recorded;
    }
    let (phase, size, message) = match ctx.buckets.object_size(&bucket, &key).await {
        Ok(Some(size)) => (phase::AVAILABLE, Some(size), None),
        Ok(None) => (
            phase::NOT_FOUND,
            None,
            Some(format!("there is no object {key} in bucket {bucket}")),
        ),
        Err(e) => (phase::UNKNOWN, None, Some(e.to_string())),
    };
    Some(RestoreStatus {
        bucket,
        object_key: key,
        phase: phase.into(),
        size,
        message,
        ..RestoreStatus::default()
    })
}

/// The restore outcome the data plane published in the instance's own bucket, if any. An
/// object store that cannot be asked, or an object that is not an outcome, counts as none
/// (logged): the restore is looked at again on the next reconcile.
async fn restore_outcome(ctx: &Context, inputs: &Inputs<'_>) -> Option<RestoreOutcome> {
    let bucket = inputs.bucket();
    match ctx
        .buckets
        .small_object(&bucket, RESTORE_OUTCOME_KEY, MAX_OUTCOME_BYTES)
        .await
    {
        Ok(Some(bytes)) => match serde_json::from_slice::<RestoreOutcome>(&bytes) {
            Ok(outcome) => Some(outcome),
            Err(e) => {
                warn!(%bucket, error = %e, "the restore outcome object is not one; ignored");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            warn!(%bucket, error = %e, "restore outcome not read");
            None
        }
    }
}

/// Events for what changed in `status.lastBackup` and `status.restore`: a Warning for a
/// failed backup and for a backup to restore that is not there; Normal otherwise.
pub fn transitions(old: Option<&VibeInstanceStatus>, new: &VibeInstanceStatus) -> Vec<Transition> {
    let mut out = Vec::new();
    let old_backup = old.and_then(|s| s.last_backup.as_ref());
    if let Some(b) = &new.last_backup
        && old_backup.is_none_or(|o| o.job != b.job)
    {
        let (reason, warning) = match b.outcome.as_str() {
            outcome::SUCCEEDED => ("BackupSucceeded", false),
            outcome::SKIPPED => ("BackupSkipped", false),
            _ => ("BackupFailed", true),
        };
        let note = match (b.outcome.as_str(), &b.object_key, &b.message) {
            (outcome::SUCCEEDED, Some(key), _) => format!(
                "Job {}: wrote {key} ({} bytes), deleted {} older",
                b.job,
                b.size.unwrap_or(0),
                b.deleted.unwrap_or(0)
            ),
            (_, _, Some(message)) => format!("Job {}: {message}", b.job),
            _ => format!("Job {}: {}", b.job, b.outcome),
        };
        out.push(Transition {
            reason: reason.into(),
            note,
            warning,
        });
    }
    let old_restore = old.and_then(|s| s.restore.as_ref());
    if let Some(r) = &new.restore
        && old_restore.is_none_or(|o| o.phase != r.phase || o.object_key != r.object_key)
    {
        let (reason, warning) = match r.phase.as_str() {
            phase::AVAILABLE => ("RestoreBackupFound", false),
            phase::NOT_FOUND => ("RestoreBackupNotFound", true),
            phase::RESTORED => ("RestoreFinished", false),
            phase::ABANDONED => ("RestoreAbandoned", false),
            _ => ("RestoreBackupUnchecked", true),
        };
        out.push(Transition {
            reason: reason.into(),
            note: match (r.phase.as_str(), &r.message) {
                (phase::RESTORED, _) => format!(
                    "the owner imported backup {} (export {}) at {}",
                    r.object_key,
                    r.export_id.as_deref().unwrap_or("unknown"),
                    r.finished_at.as_deref().unwrap_or("an unknown time")
                ),
                (phase::ABANDONED, _) => format!(
                    "the owner abandoned the restore of backup {} at {}; the instance started empty",
                    r.object_key,
                    r.finished_at.as_deref().unwrap_or("an unknown time")
                ),
                (_, Some(m)) => m.clone(),
                (_, None) => format!(
                    "backup {} in bucket {} ({} bytes): the owner restores it with `vibe restore`",
                    r.object_key,
                    r.bucket,
                    r.size.unwrap_or(0)
                ),
            },
            warning,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cache::insert;
    use serde_json::json;

    fn job(name: &str, cron_job: &str, created: &str, done: Option<&str>) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "tenants", "creationTimestamp": created,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                    "name": cron_job, "uid": "u", "controller": true}]},
            "status": {"conditions": done.map(|t| vec![json!({"type": t, "status": "True"})])}
        }))
        .unwrap()
    }

    #[test]
    fn the_newest_finished_job_of_the_instances_own_cron_job_counts() {
        let (store, mut writer) = kube::runtime::reflector::store::<Cached<Job>>();
        for j in [
            job(
                "a-backup-100",
                "a-backup",
                "2026-12-01T00:00:00Z",
                Some("Complete"),
            ),
            job(
                "a-backup-200",
                "a-backup",
                "2026-12-02T00:00:00Z",
                Some("Failed"),
            ),
            job("a-backup-300", "a-backup", "2026-12-03T00:00:00Z", None),
            // Instance `a-backup-1` has the CronJob `a-backup-1-backup`: not a's.
            job(
                "a-backup-1-backup-400",
                "a-backup-1-backup",
                "2026-12-04T00:00:00Z",
                Some("Complete"),
            ),
        ] {
            insert(&mut writer, j);
        }
        let newest = newest_finished_job(&store, "tenants", "a").unwrap();
        assert_eq!(
            newest.name_any(),
            "a-backup-200",
            "the running one is not finished"
        );
        assert_eq!(finished(&newest), Some(false));
        assert!(newest_finished_job(&store, "other", "a").is_none());
        assert_eq!(
            newest_finished_job(&store, "tenants", "a-backup-1")
                .unwrap()
                .name_any(),
            "a-backup-1-backup-400"
        );
        let cached = Cached::new(&job(
            "a-backup-1-backup-400",
            "a-backup-1-backup",
            "2026-12-04T00:00:00Z",
            None,
        ))
        .unwrap();
        assert_eq!(
            instance_of_job(cached),
            Some(ObjectRef::new("a-backup-1").within("tenants"))
        );
    }
}
