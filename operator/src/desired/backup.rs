//! Scheduled backups and restore (issue 18): the backup CronJob of an instance, where its
//! backups go, and where a restored instance's backup is.
//!
//! The CronJob runs the data plane image's `vibe-dataplane backup` in the instance's namespace
//! with the data plane's CouchDB and S3 settings (not its token key, nor the claim code). It
//! writes an archive encrypted to the owner's DID key to the backup bucket, applies
//! retention, and leaves a JSON report as the pod's termination message, which the controller
//! reads into `status.lastBackup` ([`crate::controller::backup`]).

use super::Inputs;
use super::common::{container_security, env, meta, pod_security};
use super::dataplane::{DATAPLANE_UID, env_vars};
use crate::dataplane_env as envs;
use crate::naming::{Component, labels};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSpec, PodTemplateSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// Where the report of a backup pod is written: the container's termination message.
pub const REPORT_PATH: &str = "/dev/termination-log";
/// Name of the backup container.
pub const CONTAINER: &str = "backup";
/// Suffix of backup object keys (as `vibe-dataplane backup` writes them).
pub const SUFFIX: &str = vibe_api::export::BACKUP_SUFFIX;

/// Bucket and key prefix of an instance's backups; `None` without `spec.backup`, or when
/// neither `spec.backup.bucket` nor the operator's `--backup-bucket` names a bucket.
pub fn destination(inputs: &Inputs<'_>) -> Option<(String, String)> {
    let spec = inputs.instance.spec.backup.as_ref()?;
    let bucket = spec
        .bucket
        .clone()
        .or_else(|| inputs.config.backup_bucket.clone())?;
    let prefix = spec
        .prefix
        .clone()
        .unwrap_or_else(|| default_prefix(inputs, &inputs.name()));
    Some((bucket, prefix))
}

/// `<operator --backup-prefix><namespace>/<instance>/`: where the backups of `instance` (in
/// the namespace of `inputs`) are by default.
pub fn default_prefix(inputs: &Inputs<'_>, instance: &str) -> String {
    format!(
        "{}{}/{instance}/",
        inputs.config.backup_prefix,
        inputs.namespace()
    )
}

/// Bucket and object key of the backup `spec.restoreFrom` names; `None` without it, or when
/// no bucket is known.
pub fn restore_source(inputs: &Inputs<'_>) -> Option<(String, String)> {
    let from = inputs.instance.spec.restore_from.as_ref()?;
    let bucket = from
        .bucket
        .clone()
        .or_else(|| inputs.config.backup_bucket.clone())?;
    let key = match (&from.object_key, &from.instance, &from.backup) {
        (Some(key), _, _) => key.clone(),
        (None, Some(instance), Some(backup)) => {
            format!("{}{backup}{SUFFIX}", default_prefix(inputs, instance))
        }
        _ => return None,
    };
    Some((bucket, key))
}

/// The env of the backup container: the data plane's CouchDB, S3 and owner settings (not the
/// listener, metrics, token key or claim code) and the backup's destination.
fn backup_env(inputs: &Inputs<'_>, bucket: &str, prefix: &str, retention: u32) -> Vec<EnvVar> {
    const NOT_NEEDED: [&str; 5] = [
        envs::PORT,
        envs::VIBE_METRICS_ADDR,
        envs::VIBE_SIGNING_KEY_FILE,
        envs::VIBE_CLAIM_CODE,
        envs::VIBE_RESTORE_BUCKET,
    ];
    let mut vars: Vec<EnvVar> = env_vars(inputs)
        .into_iter()
        .filter(|v| {
            !NOT_NEEDED.contains(&v.name.as_str()) && v.name != envs::VIBE_RESTORE_OBJECT_KEY
        })
        .collect();
    vars.extend([
        env(envs::VIBE_LOG_FORMAT, "json"),
        env(envs::VIBE_BACKUP_BUCKET, bucket),
        env(envs::VIBE_BACKUP_PREFIX, prefix),
        env(envs::VIBE_BACKUP_RETENTION, retention.to_string()),
        env(envs::VIBE_BACKUP_REPORT_FILE, REPORT_PATH),
    ]);
    vars
}

/// The backup CronJob, when the instance has `spec.backup`, an owner and a destination.
/// Suspended with `spec.backup.suspend` or `spec.suspend` (CouchDB is scaled to zero then).
pub fn cron_job(inputs: &Inputs<'_>) -> Option<CronJob> {
    let spec = inputs.instance.spec.backup.as_ref()?;
    inputs.instance.owner_did()?;
    let (bucket, prefix) = destination(inputs)?;
    let names = inputs.names();
    let image = inputs
        .instance
        .spec
        .dataplane
        .image
        .clone()
        .unwrap_or_else(|| inputs.config.dataplane_image.clone());
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        args: Some(vec!["backup".into()]),
        env: Some(backup_env(inputs, &bucket, &prefix, spec.retention)),
        termination_message_path: Some(REPORT_PATH.into()),
        termination_message_policy: Some("File".into()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("50m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("256Mi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(container_security(true)),
        ..Container::default()
    };
    let pod_labels = labels(&names.instance, Component::Backup);
    Some(CronJob {
        metadata: meta(inputs, &names.backup, Component::Backup),
        spec: CronJobSpec {
            schedule: spec.schedule.trim().to_string(),
            time_zone: Some("Etc/UTC".into()),
            concurrency_policy: Some("Forbid".into()),
            // A run missed by more than an hour (operator or cluster down) is skipped.
            starting_deadline_seconds: Some(3600),
            suspend: Some(spec.suspend || inputs.instance.spec.suspend),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    active_deadline_seconds: Some(6 * 3600),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(PodSpec {
                            restart_policy: Some("Never".into()),
                            automount_service_account_token: Some(false),
                            enable_service_links: Some(false),
                            security_context: Some(pod_security(DATAPLANE_UID)),
                            containers: vec![container],
                            ..PodSpec::default()
                        }),
                    },
                    ..JobSpec::default()
                }),
            },
        },
        ..CronJob::default()
    })
}

/// Why `schedule` is not a cron schedule Kubernetes accepts, or `None` when it is: five
/// fields (minute, hour, day of month, month, day of week) of `*`, `?` (days only), numbers,
/// names (`JAN`, `MON`), ranges, lists and `/steps`; or one of the `@` macros. Time zones
/// belong in the CronJob's `timeZone`, so `TZ=`/`CRON_TZ=` are refused.
pub fn schedule_problem(schedule: &str) -> Option<String> {
    let schedule = schedule.trim();
    if schedule.starts_with("TZ=") || schedule.starts_with("CRON_TZ=") {
        return Some("a time zone cannot be given in the schedule; schedules are in UTC".into());
    }
    if schedule.starts_with('@') {
        const MACROS: [&str; 7] = [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
        ];
        return (!MACROS.contains(&schedule.to_ascii_lowercase().as_str())).then(|| {
            format!(
                "unknown macro {schedule:?} (use one of {})",
                MACROS.join(", ")
            )
        });
    }
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Some(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    /// One field: its name, range, names (`JAN`…, numbered from `first`), whether `?` is allowed.
    struct Field {
        what: &'static str,
        min: u32,
        max: u32,
        names: &'static [&'static str],
        first: u32,
        question: bool,
    }
    let field = |what, min, max, names, first, question| Field {
        what,
        min,
        max,
        names,
        first,
        question,
    };
    let specs = [
        field("minute", 0, 59, &[], 0, false),
        field("hour", 0, 23, &[], 0, false),
        field("day of month", 1, 31, &[], 0, true),
        field("month", 1, 12, &MONTHS, 1, false),
        field("day of week", 0, 7, &DAYS, 0, true),
    ];
    for (field, spec) in fields.iter().zip(specs) {
        let Field {
            what,
            min,
            max,
            names,
            first,
            question,
        } = spec;
        let value = |text: &str| -> Option<u32> {
            if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
                return Some(i as u32 + first);
            }
            text.parse::<u32>().ok().filter(|n| (min..=max).contains(n))
        };
        for item in field.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (item, None),
            };
            if let Some(step) = step
                && step.parse::<u32>().ok().filter(|s| *s >= 1).is_none()
            {
                return Some(format!("{what}: {step:?} is not a step (1 or more)"));
            }
            let ok = match range {
                "*" => true,
                "?" => question,
                _ => match range.split_once('-') {
                    Some((a, b)) => matches!((value(a), value(b)), (Some(a), Some(b)) if a <= b),
                    None => value(range).is_some(),
                },
            };
            if !ok {
                return Some(format!(
                    "{what}: {item:?} is not valid (allowed: {min}-{max}{}, *, lists, ranges and steps)",
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(" or {}-{}", names[0], names[names.len() - 1])
                    }
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_kubernetes_accepts_pass_and_others_are_explained() {
        for ok in [
            "30 2 * * *",
            "*/15 * * * *",
            "0 0 1,15 * MON-FRI",
            "0 3 ? JAN-MAR sun",
            "5-10/2 0-23/6 1-31 1-12 0-7",
            "@daily",
            "@Hourly",
            "  0 4 * * 0  ",
        ] {
            assert_eq!(schedule_problem(ok), None, "{ok}");
        }
        for (bad, says) in [
            ("", "expected 5 fields"),
            ("* * * *", "found 4"),
            ("* * * * * *", "found 6"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day of week"),
            ("? * * * *", "minute"),
            ("*/0 * * * *", "step"),
            ("10-5 * * * *", "minute"),
            ("@every 1h", "unknown macro"),
            ("CRON_TZ=Europe/Paris 0 3 * * *", "time zone"),
            ("0 3 * * FUNDAY", "day of week"),
        ] {
            let problem = schedule_problem(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(problem.contains(says), "{bad:?}: {problem}");
        }
    }
}
