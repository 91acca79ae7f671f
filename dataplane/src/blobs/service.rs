//! The blob feature's state: the S3 client, the settings, the quota ledger, and the
//! operations the routes share (first-use loading of the ledger, the periodic sweep).

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use super::metadata;
use super::store::BlobStore;
use super::sweep::{SweepReport, sweep};
use super::{BlobError, BlobSettings, KeyScheme, QuotaLedger};
use crate::config::S3Config;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, ReadinessProbe};

/// The message of every blob route while no object store is configured.
pub const BLOBS_DISABLED: &str = "Blob storage is not configured for this instance.";
/// The message of a 503 while the object store cannot be reached.
pub const STORAGE_UNAVAILABLE: &str = "Object storage is not available.";

/// Blob storage of one instance.
#[derive(Debug)]
pub struct Blobs {
    /// The bucket.
    pub store: BlobStore,
    /// Limits and lifetimes.
    pub settings: BlobSettings,
    /// Bytes used against the quota.
    pub ledger: QuotaLedger,
    loaded: OnceCell<()>,
}

impl Blobs {
    /// Blob storage over `s3` (no I/O until first use).
    pub fn new(s3: &S3Config, settings: BlobSettings) -> Self {
        Self::with_store(BlobStore::new(s3), settings)
    }

    /// Blob storage over an existing client.
    pub fn with_store(store: BlobStore, settings: BlobSettings) -> Self {
        Self {
            store,
            ledger: QuotaLedger::new(settings.quota_bytes),
            settings,
            loaded: OnceCell::new(),
        }
    }

    /// A readiness probe (`s3`) for `/ready`.
    pub fn probe(self: &Arc<Self>) -> Arc<dyn ReadinessProbe> {
        Arc::new(S3Probe(Arc::clone(self)))
    }

    /// The key scheme of this instance: the configured prefix, else the owner's DID.
    pub fn scheme(&self, state: &AppState) -> ApiResult<KeyScheme> {
        let instance = match &self.settings.key_prefix {
            Some(prefix) => prefix.clone(),
            None => state
                .owner()
                .ok_or_else(|| ApiError::Unavailable("This instance has no owner yet.".into()))?
                .to_string(),
        };
        KeyScheme::new(&instance).map_err(ApiError::from)
    }

    /// Loads the quota ledger from a listing of the instance's objects on first use (and
    /// creates the bucket when configured to). Retried on the next call after a failure.
    pub async fn ready(&self, scheme: &KeyScheme) -> ApiResult<()> {
        self.loaded
            .get_or_try_init(|| async {
                if self.settings.create_bucket {
                    self.store.ensure_bucket().await?;
                }
                let since = std::time::Instant::now();
                let listing = self
                    .store
                    .list(&scheme.instance_prefix())
                    .await?
                    .into_iter()
                    .map(|o| (o.key, o.size))
                    .collect();
                self.ledger
                    .reconcile(&listing, since, std::time::SystemTime::now());
                tracing::info!(usage = ?self.ledger.usage(), "blob quota ledger loaded");
                Ok::<(), BlobError>(())
            })
            .await?;
        Ok(())
    }

    /// One sweep: reclaims abandoned uploads and reconciles the ledger.
    pub async fn sweep_once(&self, state: &AppState) -> ApiResult<SweepReport> {
        let scheme = self.scheme(state)?;
        self.ready(&scheme).await?;
        let db = state.data_db().await?;
        let finalized: HashSet<String> = metadata::all_object_keys(&db).await?;
        let report = sweep(
            &self.store,
            &self.ledger,
            &scheme.instance_prefix(),
            &finalized,
            self.settings.abandon_after(),
        )
        .await?;
        Ok(report)
    }
}

/// Runs the abandoned-upload sweep every `sweep_interval` for as long as the process
/// lives (spawned by `main`). Does nothing when blobs are not configured.
pub async fn sweep_forever(state: AppState) {
    let Some(blobs) = state.blobs.clone() else {
        return;
    };
    let mut ticker = tokio::time::interval(blobs.settings.sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if state.owner().is_none() {
            continue;
        }
        match blobs.sweep_once(&state).await {
            Ok(report) => tracing::info!(
                deleted = report.deleted.len(),
                aborted_multipart = report.aborted_multipart,
                stored_bytes = report.stored_bytes,
                "blob sweep done"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "blob sweep failed; retrying at the next interval")
            }
        }
    }
}

/// The blob feature of `state`, or 503 when no object store is configured.
pub fn blobs_of(state: &AppState) -> ApiResult<Arc<Blobs>> {
    state
        .blobs
        .clone()
        .ok_or_else(|| ApiError::Unavailable(BLOBS_DISABLED.into()))
}

struct S3Probe(Arc<Blobs>);

impl ReadinessProbe for S3Probe {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self.0.store.ping().await {
                Ok(()) => Ok(()),
                Err(BlobError::Unavailable(_)) => Err("not reachable".into()),
                Err(_) => Err("bucket not accessible".into()),
            }
        })
    }
}

impl From<BlobError> for ApiError {
    fn from(error: BlobError) -> Self {
        match error {
            BlobError::Unavailable(_) => ApiError::Unavailable(STORAGE_UNAVAILABLE.into()),
            BlobError::Storage(_) => ApiError::internal(error),
            e @ (BlobError::TooLarge { .. } | BlobError::QuotaExceeded { .. }) => {
                ApiError::PayloadTooLarge(e.to_string())
            }
            BlobError::InvalidKey(message) => ApiError::BadRequest(message),
            BlobError::Body(message) => ApiError::BadRequest(message),
        }
    }
}
