//! Finalizer cleanup of a deleted instance: the bucket and the CouchDB volume go or stay
//! according to `deletionPolicy`, with backoff while the object store is unreachable.

use super::{Context, status, write_status};
use crate::crd::{DeletionPolicy, VibeInstance};
use crate::desired::Inputs;
use crate::error::Result;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;

/// Finalizer cleanup: with `Delete` the bucket is emptied and removed and the CouchDB PVC
/// deleted; with `Retain` both stay. An unreachable object store is retried with backoff until
/// the cleanup deadline, after which the bucket is left behind with a Warning Event.
pub(super) async fn cleanup(instance: &VibeInstance, ctx: &Context) -> Result<Action> {
    let now = Timestamp::now();
    let inputs = Inputs::new(instance, &ctx.config);
    let names = inputs.names();
    let bucket = inputs.bucket();
    let pvc = names.couchdb_pvc();
    write_status(instance, status::deleting(instance, None, now), ctx).await?;
    match instance.spec.deletion_policy {
        DeletionPolicy::Retain => {
            ctx.publish(
                instance,
                "DataRetained",
                format!("deletionPolicy Retain: bucket {bucket} and PersistentVolumeClaim {pvc} are kept"),
                false,
            )
            .await;
        }
        DeletionPolicy::Delete => {
            ctx.verified_buckets.forget(&bucket);
            match ctx.buckets.delete(&bucket).await {
                Ok(()) => {
                    ctx.publish(
                        instance,
                        "BucketDeleted",
                        format!("bucket {bucket} emptied and deleted"),
                        false,
                    )
                    .await
                }
                Err(e) => {
                    let started = instance
                        .metadata
                        .deletion_timestamp
                        .as_ref()
                        .map(|t| t.0)
                        .unwrap_or(now);
                    let deadline = SignedDuration::try_from(ctx.config.cleanup_deadline)
                        .unwrap_or(SignedDuration::MAX);
                    if started + deadline < now {
                        ctx.publish(
                            instance,
                            "BucketOrphaned",
                            format!("gave up deleting bucket {bucket} after {:?}: {e}; delete it by hand", ctx.config.cleanup_deadline),
                            true,
                        )
                        .await;
                    } else {
                        write_status(instance, status::deleting(instance, Some(&e), now), ctx)
                            .await?;
                        ctx.publish(
                            instance,
                            "BucketDeletionFailed",
                            format!("deleting bucket {bucket} failed, retrying: {e}"),
                            true,
                        )
                        .await;
                        return Err(e.into());
                    }
                }
            }
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(ctx.client.clone(), &inputs.namespace());
            match api.delete(&pvc, &DeleteParams::default()).await {
                Ok(_) => ctx.metrics.write("delete"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            ctx.publish(
                instance,
                "VolumeDeleted",
                format!("PersistentVolumeClaim {pvc} deleted"),
                false,
            )
            .await;
        }
    }
    Ok(Action::await_change())
}
