//! The crate's error type, mapped once to a metric label and a requeue policy.

use std::time::Duration;

/// Everything that can make a reconcile fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),
    /// The finalizer helper failed (adding/removing the finalizer, or apply/cleanup inside it).
    #[error("finalizer error: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The object store failed.
    #[error("object store error: {0}")]
    Bucket(#[from] crate::bucket::BucketError),
    /// An object could not be (de)serialized.
    #[error("serialization error: {0}")]
    Serialization(#[from] serde_json::Error),
    /// The instance is missing something the API server always sets.
    #[error("invalid instance: {0}")]
    InvalidInstance(&'static str),
    /// Child watch caches (their resources listed) still lacked their initial list when the
    /// reconcile had waited its time for them.
    #[error("the watch caches of {0} have not listed yet")]
    CachesNotSynced(String),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl Error {
    /// Short, bounded label for the `reconcile_failures_total{reason}` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 422 => "invalid",
            Error::Kube(kube::Error::Api(_)) => "kube_api",
            Error::Kube(_) => "kube_transport",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Error::Bucket(_) => "object_store",
            Error::Serialization(_) => "serialization",
            Error::InvalidInstance(_) => "invalid_instance",
            Error::CachesNotSynced(_) => "caches_not_synced",
        }
    }
}

/// Exponential backoff for consecutive failures of one instance: 5 s, 10 s, 20 s … capped at
/// 5 minutes. Never a tight loop.
pub fn backoff(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(6);
    Duration::from_secs(5u64 << exp).min(Duration::from_secs(300))
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(7), Duration::from_secs(300));
        assert_eq!(backoff(100), Duration::from_secs(300));
    }
}
