//! Applying a live instance: the bucket, the generated Secrets (created, never regenerated),
//! every other child server-side applied only when it differs from the cache (or from what
//! this replica last wrote, [`super::written`]), and the status derived from what was seen.

use super::cache::Cached;
use super::{Context, backup, cache, drift, status, write_status, written};
use crate::crd::VibeInstance;
use crate::desired::{self, Child, ExistingSecrets, Inputs};
use crate::error::{Error, Result};
use crate::naming::FIELD_MANAGER;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;
use tracing::{info, warn};

/// How long a reconcile waits for the child caches to list before it fails (and is retried
/// with the error policy's backoff) instead of holding its slot.
const CACHE_SYNC_WAIT: Duration = Duration::from_secs(30);

/// Children observed after applying (the apply response, else the cache).
#[derive(Default)]
struct Seen {
    stateful_set: Option<StatefulSet>,
    deployment: Option<Deployment>,
    ingress: Option<Ingress>,
    claim_code: Option<String>,
}

pub(super) async fn apply(instance: &VibeInstance, ctx: &Context) -> Result<Action> {
    let now = Timestamp::now();
    if instance.is_paused() {
        write_status(instance, status::paused(instance, now), ctx).await?;
        return Ok(Action::await_change());
    }
    // Until every child cache holds its initial list, a child missing from it may exist.
    if let Err(pending) = ctx.caches.wait_until_synced(CACHE_SYNC_WAIT).await {
        return Err(Error::CachesNotSynced(pending.join(", ")));
    }
    let inputs = Inputs::new(instance, &ctx.config);
    let ns = inputs.namespace();
    let names = inputs.names();

    let bucket = ctx.ensure_bucket(&inputs.bucket()).await;
    match &bucket {
        Ok(state) if state.created => info!(bucket = %inputs.bucket(), "bucket created"),
        Ok(_) => {}
        Err(e) => warn!(bucket = %inputs.bucket(), error = %e, "bucket check failed"),
    }

    let caches = &ctx.caches;
    let recall = written::Recall::default();
    let existing = ExistingSecrets {
        couchdb_auth: ctx.cached_secret(&ns, &names.couchdb_secret, &recall)?,
        token_key: ctx.cached_secret(&ns, &names.token_key_secret, &recall)?,
        claim: match instance.owner_did() {
            None => ctx.cached_secret(&ns, &names.claim_secret, &recall)?,
            Some(_) => None,
        },
        couchdb_volume_templates: None,
    };
    let stateful_set = cache::object(&caches.stateful_sets, &ns, &names.couchdb)?;
    let mut existing = existing.with_stateful_set(stateful_set.as_ref());
    let from_api = create_missing_secrets(ctx, &inputs, &mut existing).await?;

    let mut seen = Seen {
        stateful_set,
        deployment: cache::object(&caches.deployments, &ns, &names.dataplane)?,
        ingress: cache::object(&caches.ingresses, &ns, &names.ingress)?,
        claim_code: None,
    };
    for child in desired::children(&inputs, &existing) {
        match child {
            Child::Secret(s) => {
                if s.name_any() == names.claim_secret {
                    seen.claim_code =
                        desired::secrets::secret_value(&s, desired::secrets::CLAIM_CODE_KEY);
                }
                // One the API server answered (just now, or in an earlier reconcile the
                // cache has not caught up with) is compared with that answer, not applied
                // again for want of a cached copy.
                match from_api.get(&s.name_any()) {
                    Some(live) if drift::is_subset(&serde_json::to_value(&s)?, live) => {}
                    _ => drop(apply_child(ctx, &ns, &caches.secrets, s, &recall).await?),
                }
            }
            Child::ConfigMap(o) => {
                drop(apply_child(ctx, &ns, &caches.config_maps, o, &recall).await?)
            }
            Child::Service(o) => drop(apply_child(ctx, &ns, &caches.services, o, &recall).await?),
            Child::StatefulSet(o) => {
                if let Some(fresher) =
                    apply_child(ctx, &ns, &caches.stateful_sets, o, &recall).await?
                {
                    seen.stateful_set = Some(fresher);
                }
            }
            Child::Deployment(o) => {
                if let Some(fresher) =
                    apply_child(ctx, &ns, &caches.deployments, o, &recall).await?
                {
                    seen.deployment = Some(fresher);
                }
            }
            Child::Ingress(o) => {
                if let Some(fresher) = apply_child(ctx, &ns, &caches.ingresses, o, &recall).await? {
                    seen.ingress = Some(fresher);
                }
            }
            Child::NetworkPolicy(o) => {
                drop(apply_child(ctx, &ns, &caches.network_policies, o, &recall).await?)
            }
            Child::CronJob(o) => drop(apply_child(ctx, &ns, &caches.cron_jobs, *o, &recall).await?),
        }
    }
    backup::remove_stale_cron_job(ctx, &inputs).await?;
    if instance.owner_did().is_some()
        && cache::get(&caches.secrets, &ns, &names.claim_secret).is_some()
    {
        // Claimed: the one-time code is spent.
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .delete(&names.claim_secret, &DeleteParams::default())
            .await
        {
            Ok(_) => ctx.metrics.write("delete"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    let observed = status::Observed {
        stateful_set: seen.stateful_set.as_ref(),
        deployment: seen.deployment.as_ref(),
        ingress: seen.ingress.as_ref(),
        bucket: &bucket,
        claim_code: seen.claim_code.as_deref(),
    };
    let mut new_status = status::compute(&inputs, &observed, now);
    new_status.last_backup = backup::observe_last_backup(ctx, instance, &ns).await?;
    new_status.restore = backup::observe_restore(ctx, &inputs).await;
    let restoring = new_status
        .restore
        .as_ref()
        .is_some_and(|r| !backup::phase::is_final(&r.phase));
    let ready = new_status.phase == Some(crate::crd::Phase::Ready);
    write_status(instance, new_status, ctx).await?;
    bucket?;
    let mut requeue = if ready || instance.spec.suspend {
        ctx.config.resync_period
    } else {
        // Children report progress through the watches; this is only a safety net.
        ctx.config.resync_period.min(Duration::from_secs(60))
    };
    if restoring {
        // The data plane cannot wake the operator: look for the end of the restore.
        requeue = requeue.min(ctx.config.restore_poll);
    }
    if recall.used() {
        // Leaned on what this replica wrote instead of the cache: look again once that
        // memory has lapsed, in case a child was deleted before the cache saw it.
        requeue = requeue.min(written::MEMORY);
    }
    Ok(Action::requeue(requeue))
}

/// Creates the generated Secrets (CouchDB credentials, token key, claim code) that the child
/// cache does not hold, and puts what the API server stored into `existing`; returns each of
/// them as the API server answered it (JSON, for the drift check), by name. One created here is
/// built from `existing` again by the caller and so needs no apply in this reconcile.
///
/// A create (POST), not an apply: the caches have listed (the reconcile waited for them), so a
/// Secret missing from them is missing, unless the cache lags behind a write of our own. A create
/// can never overwrite such a Secret — it answers 409 Conflict, and then the live one is read and
/// its values kept (and applied only if it lacks our labels or owner). Before, every miss was a
/// GET (404) and then an apply: six requests for the three Secrets of each new instance where
/// three do (issue 14).
async fn create_missing_secrets(
    ctx: &Context,
    inputs: &Inputs<'_>,
    existing: &mut ExistingSecrets,
) -> Result<HashMap<String, serde_json::Value>> {
    let names = inputs.names();
    let mut missing = Vec::new();
    if existing.couchdb_auth.is_none() {
        missing.push(names.couchdb_secret.clone());
    }
    if existing.token_key.is_none() {
        missing.push(names.token_key_secret.clone());
    }
    if existing.claim.is_none() && inputs.instance.owner_did().is_none() {
        missing.push(names.claim_secret.clone());
    }
    let mut from_api = HashMap::new();
    if missing.is_empty() {
        return Ok(from_api);
    }
    // The builders generate fresh values for what `existing` lacks.
    let fresh: Vec<Secret> = desired::children(inputs, existing)
        .into_iter()
        .filter_map(|child| match child {
            Child::Secret(s) if missing.contains(&s.name_any()) => Some(s),
            _ => None,
        })
        .collect();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &inputs.namespace());
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    for secret in fresh {
        let name = secret.name_any();
        let live = match api.create(&params, &secret).await {
            Ok(stored) => {
                ctx.metrics.write("create");
                info!(kind = "Secret", child = %name, "created");
                stored
            }
            Err(kube::Error::Api(s)) if s.code == 409 => api.get(&name).await?,
            Err(e) => return Err(e.into()),
        };
        ctx.remember_written(&inputs.namespace(), &live)?;
        let slot = if name == names.couchdb_secret {
            &mut existing.couchdb_auth
        } else if name == names.token_key_secret {
            &mut existing.token_key
        } else {
            &mut existing.claim
        };
        from_api.insert(name, serde_json::to_value(&live)?);
        *slot = Some(live);
    }
    Ok(from_api)
}

/// Server-side applies `obj` unless the live object — from the cache, or as this replica last
/// wrote it while the cache has not caught up ([`written`]) — already matches it. Returns the
/// freshest copy the cache does not have: the applied object when a request was made, or the
/// recalled one.
async fn apply_child<K>(
    ctx: &Context,
    namespace: &str,
    store: &Store<Cached<K>>,
    obj: K,
    recall: &written::Recall,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + 'static,
{
    let name = obj.name_any();
    let desired = serde_json::to_value(&obj)?;
    let cached = cache::get(store, namespace, &name);
    let recalled = ctx
        .written
        .recall(&K::kind(&()), namespace, &name, cached.is_some(), recall);
    match (cached, recalled) {
        (Some(live), _) if drift::is_subset(&desired, &live.value()?) => return Ok(None),
        (None, Some(written)) if drift::is_subset(&desired, &written) => {
            return Ok(Some(serde_json::from_value(written)?));
        }
        _ => {}
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await?;
    ctx.metrics.write("apply");
    info!(kind = %K::kind(&()), child = %name, "applied");
    ctx.remember_written(namespace, &applied)?;
    Ok(Some(applied))
}
