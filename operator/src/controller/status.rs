//! Status from observed children: pure functions from what the caches and the object store
//! report to conditions, phase and the transitions worth an Event.

use crate::bucket::{BucketError, BucketState, LifecycleState};
use crate::crd::{Phase, VibeInstance, VibeInstanceStatus};
use crate::desired::Inputs;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types.
pub mod types {
    /// Everything below (except Claimed) is true and the instance is not suspended.
    pub const READY: &str = "Ready";
    /// The CouchDB pod is ready.
    pub const COUCHDB_READY: &str = "CouchDBReady";
    /// The bucket exists and is reachable.
    pub const BUCKET_READY: &str = "BucketReady";
    /// The data plane Deployment is available.
    pub const DATAPLANE_READY: &str = "DataPlaneReady";
    /// The Ingress exists.
    pub const INGRESS_READY: &str = "IngressReady";
    /// The instance has an owner.
    pub const CLAIMED: &str = "Claimed";
    /// Reconciliation is paused by annotation.
    pub const RECONCILE_PAUSED: &str = "ReconcilePaused";
}

/// What the reconciler observed about an instance's children.
#[derive(Debug)]
pub struct Observed<'a> {
    /// The CouchDB StatefulSet, if it exists.
    pub stateful_set: Option<&'a StatefulSet>,
    /// The data plane Deployment, if it exists.
    pub deployment: Option<&'a Deployment>,
    /// The Ingress, if it exists.
    pub ingress: Option<&'a Ingress>,
    /// The bucket check.
    pub bucket: &'a Result<BucketState, BucketError>,
    /// The claim code while the instance is unowned.
    pub claim_code: Option<&'a str>,
}

struct Cond {
    type_: &'static str,
    ok: bool,
    reason: &'static str,
    message: String,
}

fn cond(type_: &'static str, ok: bool, reason: &'static str, message: impl Into<String>) -> Cond {
    Cond {
        type_,
        ok,
        reason,
        message: message.into(),
    }
}

fn couchdb_condition(inst: &VibeInstance, sts: Option<&StatefulSet>) -> Cond {
    let t = types::COUCHDB_READY;
    if inst.spec.suspend {
        return cond(t, false, "Suspended", "CouchDB is scaled to zero");
    }
    let Some(sts) = sts else {
        return cond(
            t,
            false,
            "Creating",
            "the CouchDB StatefulSet does not exist yet",
        );
    };
    let status = sts.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let current = status.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0);
    if ready >= 1 && current {
        cond(t, true, "Running", "CouchDB is up")
    } else {
        cond(
            t,
            false,
            "Starting",
            format!("{ready}/1 CouchDB pods ready"),
        )
    }
}

fn dataplane_condition(inst: &VibeInstance, deploy: Option<&Deployment>) -> Cond {
    let t = types::DATAPLANE_READY;
    if inst.spec.suspend {
        return cond(t, false, "Suspended", "the data plane is scaled to zero");
    }
    if inst.spec.dataplane.replicas == 0 {
        return cond(t, false, "ScaledToZero", "spec.dataplane.replicas is 0");
    }
    let Some(deploy) = deploy else {
        return cond(
            t,
            false,
            "Creating",
            "the data plane Deployment does not exist yet",
        );
    };
    let status = deploy.status.clone().unwrap_or_default();
    let want = deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let available = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True");
    let current =
        status.observed_generation.unwrap_or(0) >= deploy.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.available_replicas.unwrap_or(0);
    if available && current && updated >= want && ready >= want {
        cond(
            t,
            true,
            "Available",
            format!("{ready}/{want} data plane replicas available"),
        )
    } else {
        cond(
            t,
            false,
            "Progressing",
            format!("{ready}/{want} data plane replicas available"),
        )
    }
}

fn ingress_condition(ingress: Option<&Ingress>) -> Cond {
    let t = types::INGRESS_READY;
    let Some(ingress) = ingress else {
        return cond(t, false, "Creating", "the Ingress does not exist yet");
    };
    let address = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.first())
        .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()));
    match address {
        Some(a) => cond(
            t,
            true,
            "Admitted",
            format!("served by the ingress controller at {a}"),
        ),
        None => cond(
            t,
            true,
            "Configured",
            "the Ingress is configured; no load balancer address published yet",
        ),
    }
}

fn bucket_condition(bucket_name: &str, bucket: &Result<BucketState, BucketError>) -> Cond {
    let t = types::BUCKET_READY;
    match bucket {
        Ok(state) => {
            let lifecycle = match state.lifecycle {
                LifecycleState::Present | LifecycleState::Applied => {
                    "abandoned multipart uploads are aborted after 7 days"
                }
                LifecycleState::Unsupported => "the object store does not support lifecycle rules",
            };
            cond(
                t,
                true,
                "Available",
                format!("bucket {bucket_name} is available; {lifecycle}"),
            )
        }
        Err(e) => cond(t, false, e.reason(), e.to_string()),
    }
}

fn claimed_condition(inst: &VibeInstance, claim_secret: &str) -> Cond {
    match inst.owner_did() {
        Some(did) => cond(types::CLAIMED, true, "Owned", format!("owned by {did}")),
        None => cond(
            types::CLAIMED,
            false,
            "AwaitingClaim",
            format!("unowned; the claim code is in Secret {claim_secret}"),
        ),
    }
}

fn to_condition(
    c: Cond,
    generation: Option<i64>,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let status = if c.ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|p| p.type_ == c.type_ && p.status == status)
        .map(|p| p.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: c.type_.into(),
        status: status.into(),
        reason: c.reason.into(),
        message: c.message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn previous_conditions(inst: &VibeInstance) -> &[Condition] {
    inst.status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[])
}

/// The status of a reconciled (not paused, not deleting) instance.
pub fn compute(inputs: &Inputs<'_>, observed: &Observed<'_>, now: Timestamp) -> VibeInstanceStatus {
    let inst = inputs.instance;
    let names = inputs.names();
    let bucket_name = inputs.bucket();
    let parts = [
        couchdb_condition(inst, observed.stateful_set),
        bucket_condition(&bucket_name, observed.bucket),
        dataplane_condition(inst, observed.deployment),
        ingress_condition(observed.ingress),
    ];
    let not_ready: Vec<&str> = parts.iter().filter(|c| !c.ok).map(|c| c.type_).collect();
    let ready = if inst.spec.suspend {
        cond(
            types::READY,
            false,
            "Suspended",
            "the instance is suspended (spec.suspend)",
        )
    } else if not_ready.is_empty() {
        cond(
            types::READY,
            true,
            "Ready",
            "every part of the instance is ready",
        )
    } else {
        cond(
            types::READY,
            false,
            "NotReady",
            format!("waiting for {}", not_ready.join(", ")),
        )
    };
    let phase = if inst.spec.suspend {
        Phase::Suspended
    } else if observed.bucket.is_err() {
        Phase::Failed
    } else if ready.ok {
        Phase::Ready
    } else {
        Phase::Provisioning
    };
    let generation = inst.metadata.generation;
    let previous = previous_conditions(inst);
    let mut conditions = vec![to_condition(ready, generation, previous, now)];
    conditions.extend(
        parts
            .into_iter()
            .map(|c| to_condition(c, generation, previous, now)),
    );
    conditions.push(to_condition(
        claimed_condition(inst, &names.claim_secret),
        generation,
        previous,
        now,
    ));
    VibeInstanceStatus {
        phase: Some(phase),
        conditions,
        observed_generation: generation,
        url: Some(inputs.url()),
        bucket: Some(bucket_name),
        owner: inst.owner_did().map(str::to_string),
        claim_code_hash: match inst.owner_did() {
            Some(_) => None,
            None => observed.claim_code.map(crate::desired::claim_code_hash),
        },
        // Kept as last written; the backup and restore steps of a reconcile update them.
        last_backup: inst.status.as_ref().and_then(|s| s.last_backup.clone()),
        restore: inst.status.as_ref().and_then(|s| s.restore.clone()),
    }
}

/// The status of a paused instance: what was last observed, plus a visible ReconcilePaused
/// condition and phase Paused.
pub fn paused(inst: &VibeInstance, now: Timestamp) -> VibeInstanceStatus {
    let mut status = inst.status.clone().unwrap_or_default();
    let previous = status.conditions.clone();
    status
        .conditions
        .retain(|c| c.type_ != types::RECONCILE_PAUSED);
    status.conditions.push(to_condition(
        cond(
            types::RECONCILE_PAUSED,
            true,
            "ReconciliationDisabled",
            format!(
                "annotation {}={} is set; children are not reconciled",
                crate::crd::RECONCILE_ANNOTATION,
                crate::crd::RECONCILE_DISABLED
            ),
        ),
        inst.metadata.generation,
        &previous,
        now,
    ));
    status.phase = Some(Phase::Paused);
    status
}

/// The status of an instance being deleted; `bucket_error` is set while bucket removal fails.
pub fn deleting(
    inst: &VibeInstance,
    bucket_error: Option<&BucketError>,
    now: Timestamp,
) -> VibeInstanceStatus {
    let mut status = inst.status.clone().unwrap_or_default();
    status.phase = Some(Phase::Deleting);
    if let Some(e) = bucket_error {
        let previous = status.conditions.clone();
        status.conditions.retain(|c| c.type_ != types::BUCKET_READY);
        status.conditions.push(to_condition(
            cond(
                types::BUCKET_READY,
                false,
                e.reason(),
                format!("deleting the bucket failed: {e}"),
            ),
            inst.metadata.generation,
            &previous,
            now,
        ));
    }
    status
}

/// A condition change worth an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Event reason (the condition reason, or `ReconciliationResumed`).
    pub reason: String,
    /// Event note.
    pub note: String,
    /// Whether it is a Warning event.
    pub warning: bool,
}

/// The condition transitions between two statuses (new or changed status/reason; the pause
/// condition disappearing).
///
/// A condition's first appearance is no transition unless it is a failure (or the pause): the
/// first status is where an instance starts from, shown in its status and printer columns, and
/// an Event for each of its conditions (`BucketReady`, `IngressReady`, `Starting`,
/// `AwaitingClaim` …) would only say what every new instance goes through. Each later change is
/// an Event. A healthy new instance's first reconcile therefore publishes none instead of one per
/// condition (six): six writes fewer per instance when 1,000 arrive at once (issue 14).
pub fn transitions(old: Option<&VibeInstanceStatus>, new: &VibeInstanceStatus) -> Vec<Transition> {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let mut out = Vec::new();
    for c in &new.conditions {
        let before = old_conditions.iter().find(|o| o.type_ == c.type_);
        let ok = c.status == "True";
        let warning = match c.type_.as_str() {
            types::RECONCILE_PAUSED => true,
            _ => !ok && is_failure_reason(&c.reason),
        };
        let changed = match before {
            None => warning,
            Some(b) => b.status != c.status || b.reason != c.reason,
        };
        if changed {
            out.push(Transition {
                reason: if ok {
                    c.type_.clone()
                } else {
                    c.reason.clone()
                },
                note: format!("{}: {}", c.type_, c.message),
                warning,
            });
        }
    }
    if old_conditions
        .iter()
        .any(|c| c.type_ == types::RECONCILE_PAUSED)
        && !new
            .conditions
            .iter()
            .any(|c| c.type_ == types::RECONCILE_PAUSED)
    {
        out.push(Transition {
            reason: "ReconciliationResumed".into(),
            note: "the reconcile annotation was removed".into(),
            warning: false,
        });
    }
    out
}

/// Reasons that mean something is wrong (rather than not ready yet).
fn is_failure_reason(reason: &str) -> bool {
    matches!(
        reason,
        "ObjectStoreUnreachable" | "ObjectStoreDenied" | "BucketNameTaken" | "ObjectStoreError"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(conditions: &[(&str, bool, &str)]) -> VibeInstanceStatus {
        VibeInstanceStatus {
            conditions: conditions
                .iter()
                .map(|(type_, ok, reason)| Condition {
                    type_: (*type_).into(),
                    status: if *ok { "True" } else { "False" }.into(),
                    reason: (*reason).into(),
                    message: format!("{type_} {reason}"),
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                    observed_generation: Some(1),
                })
                .collect(),
            ..VibeInstanceStatus::default()
        }
    }

    fn reasons(old: Option<&VibeInstanceStatus>, new: &VibeInstanceStatus) -> Vec<String> {
        transitions(old, new)
            .into_iter()
            .map(|t| t.reason)
            .collect()
    }

    /// Issue 14: a new instance's first conditions are no Event (six writes per instance at
    /// 1,000 instances), be they true already or not yet; only a failure, or the pause, is.
    #[test]
    fn a_first_status_publishes_only_what_is_failing() {
        let first = status(&[
            (types::READY, false, "NotReady"),
            (types::COUCHDB_READY, false, "Creating"),
            (types::BUCKET_READY, true, "Available"),
            (types::DATAPLANE_READY, false, "Creating"),
            (types::INGRESS_READY, true, "Configured"),
            (types::CLAIMED, true, "Owned"),
        ]);
        assert!(reasons(None, &first).is_empty());

        let failing = status(&[
            (types::READY, false, "Provisioning"),
            (types::BUCKET_READY, false, "ObjectStoreUnreachable"),
        ]);
        let t = transitions(None, &failing);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].reason, "ObjectStoreUnreachable");
        assert!(t[0].warning);

        let paused = status(&[(types::RECONCILE_PAUSED, true, "ReconciliationDisabled")]);
        assert_eq!(
            transitions(None, &paused).len(),
            1,
            "pausing is always told"
        );
    }

    /// Once a condition is there, every change of its status or reason is an Event, as before.
    #[test]
    fn later_changes_of_a_condition_are_each_an_event() {
        let first = status(&[
            (types::COUCHDB_READY, false, "Starting"),
            (types::BUCKET_READY, true, "Ready"),
        ]);
        let up = status(&[
            (types::COUCHDB_READY, true, "Ready"),
            (types::BUCKET_READY, true, "Ready"),
        ]);
        assert_eq!(reasons(Some(&first), &up), ["CouchDBReady"]);
        assert!(reasons(Some(&up), &up).is_empty());
        let down = status(&[
            (types::COUCHDB_READY, false, "Starting"),
            (types::BUCKET_READY, true, "Ready"),
        ]);
        assert_eq!(reasons(Some(&up), &down), ["Starting"]);
        // A condition added later, after the first status: no Event either, unless failing.
        let more = status(&[
            (types::COUCHDB_READY, false, "Starting"),
            (types::BUCKET_READY, true, "Ready"),
            (types::CLAIMED, false, "AwaitingClaim"),
        ]);
        assert!(reasons(Some(&down), &more).is_empty());
    }
}
