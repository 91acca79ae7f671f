//! Errors of the blob layer (object store, keys, limits).

/// Everything that can go wrong below the blob routes.
///
/// The HTTP mapping lives with the routes; messages here are safe to show to clients except
/// for [`BlobError::Storage`], whose detail goes to the logs only.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The object store could not be reached or answered with a server error.
    #[error("Object storage is not available.")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The object store refused a request for a reason that is not the client's fault
    /// (credentials, missing bucket, unexpected answer).
    #[error("object storage rejected the request: {0}")]
    Storage(String),
    /// The declared or streamed size is over the per-file limit.
    #[error("File size {size} bytes exceeds the per-file limit of {limit} bytes.")]
    TooLarge {
        /// Size that was declared or reached.
        size: u64,
        /// The configured per-file limit.
        limit: u64,
    },
    /// Accepting the upload would exceed the instance's storage quota.
    #[error("Storage quota exceeded: {used} of {quota} bytes used, {requested} more requested.")]
    QuotaExceeded {
        /// Bytes currently counted against the quota.
        used: u64,
        /// Bytes the upload needs.
        requested: u64,
        /// The instance's quota.
        quota: u64,
    },
    /// An object key, collection name or filename that does not fit the key scheme.
    #[error("{0}")]
    InvalidKey(String),
    /// The body of a streaming upload failed while being read.
    #[error("The upload body could not be read: {0}")]
    Body(String),
}

impl BlobError {
    /// Wraps any transport-level failure as [`BlobError::Unavailable`].
    pub fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        BlobError::Unavailable(Box::new(err))
    }
}
