//! Reclaiming uploads that were never finalised.
//!
//! An object under the instance prefix that has no metadata document, no outstanding upload
//! URL and is older than [`BlobSettings::abandon_after`](super::BlobSettings::abandon_after) is
//! deleted; incomplete multipart uploads older than that are aborted. The listing then
//! reconciles the quota ledger. Finalise refuses objects older than the finalise window, which
//! is shorter than the abandonment age, so a finalised object is never swept.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use super::store::BlobStore;
use super::{BlobError, QuotaLedger};

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Keys of the abandoned objects that were deleted.
    pub deleted: Vec<String>,
    /// Incomplete multipart uploads that were aborted.
    pub aborted_multipart: usize,
    /// Bytes of the objects left under the prefix.
    pub stored_bytes: u64,
}

/// Sweeps `prefix`. `finalized` holds the object keys that have metadata documents; read it
/// before calling, so that uploads finalised meanwhile are protected by their age.
pub async fn sweep(
    store: &BlobStore,
    ledger: &QuotaLedger,
    prefix: &str,
    finalized: &HashSet<String>,
    abandon_after: Duration,
) -> Result<SweepReport, BlobError> {
    let listed_since = Instant::now();
    let now = SystemTime::now();
    let cutoff = now
        .checked_sub(abandon_after)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = SweepReport::default();
    let mut kept: HashMap<String, u64> = HashMap::new();

    for object in store.list(prefix).await? {
        let abandoned = !finalized.contains(&object.key)
            && !ledger.has_active_reservation(&object.key, now)
            && object.last_modified.is_some_and(|t| t < cutoff);
        if abandoned {
            match store.delete(&object.key).await {
                Ok(()) => {
                    tracing::info!(key = %object.key, size = object.size, "reclaimed an abandoned upload");
                    report.deleted.push(object.key);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(key = %object.key, error = %e, "could not reclaim an abandoned upload")
                }
            }
        }
        report.stored_bytes += object.size;
        kept.insert(object.key, object.size);
    }

    match store.list_multipart(prefix).await {
        Ok(uploads) => {
            for upload in uploads
                .into_iter()
                .filter(|u| u.initiated.is_some_and(|t| t < cutoff))
            {
                if store
                    .abort_multipart(&upload.key, &upload.upload_id)
                    .await
                    .is_ok()
                {
                    report.aborted_multipart += 1;
                }
            }
        }
        // Some S3-compatible stores do not list multipart uploads; objects are still swept.
        Err(BlobError::Storage(e)) => tracing::debug!(error = %e, "multipart uploads not listed"),
        Err(e) => return Err(e),
    }

    ledger.reconcile(&kept, listed_since, now);
    Ok(report)
}
