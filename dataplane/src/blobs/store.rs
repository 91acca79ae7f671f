//! The S3 client: presigned URLs, HEAD, delete with retry, listing, bucket checks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::BlobError;
use super::presign::PutPresigner;
use super::telemetry::Telemetry;
use crate::config::S3Config;
use crate::metrics::Metrics;
use crate::metrics::layer::REQUEST_ID_HEADER;

/// Attempts of a delete before the failure is reported.
const DELETE_ATTEMPTS: u32 = 4;

/// An object store bucket reached through `aws-sdk-s3`.
#[derive(Clone, Debug)]
pub struct BlobStore {
    pub(crate) client: Client,
    pub(crate) bucket: String,
    /// Signs upload URLs without the SDK's orchestrator (path-style buckets).
    put_presigner: Option<PutPresigner>,
    /// How long the store may take to answer once a request is sent ([`READ_TIMEOUT`]).
    pub(crate) read_timeout: Duration,
}

/// How long the store may take to answer a request once it is sent. A streamed upload's
/// body is sent at the client's pace, so there it counts from the body's last byte
/// ([`super::stream::upload_sized`]), not from the start of the request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting to the store may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A presigned request handed to a client.
#[derive(Clone, Debug)]
pub struct PresignedRequest {
    /// The URL, valid until `expires_at`.
    pub url: String,
    /// Headers the client must send exactly as given (they are part of the signature),
    /// sorted by name.
    pub headers: Vec<(String, String)>,
    /// When the URL stops working.
    pub expires_at: SystemTime,
}

/// What HEAD says about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
    /// Stored `Content-Type`, when any.
    pub content_type: Option<String>,
    /// Last modification time.
    pub last_modified: Option<SystemTime>,
    /// The entity tag: changes whenever the object is written again.
    pub etag: Option<String>,
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// Full object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub last_modified: Option<SystemTime>,
}

/// An incomplete multipart upload found in the bucket.
#[derive(Clone, Debug)]
pub struct PendingMultipart {
    /// Object key the upload targets.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// When the upload was started.
    pub initiated: Option<SystemTime>,
}

impl BlobStore {
    /// Builds a client from static settings (no ambient AWS configuration is consulted).
    pub fn new(cfg: &S3Config) -> Self {
        Self::with_metrics(cfg, None)
    }

    /// [`BlobStore::new`], recording every S3 call in `metrics`. Either way calls carry the
    /// id of the HTTP request being served (`x-request-id`).
    pub fn with_metrics(cfg: &S3Config, metrics: Option<Arc<Metrics>>) -> Self {
        Self::with_read_timeout(cfg, metrics, READ_TIMEOUT)
    }

    /// [`BlobStore::with_metrics`] with another [`READ_TIMEOUT`] (tests).
    pub fn with_read_timeout(
        cfg: &S3Config,
        metrics: Option<Arc<Metrics>>,
        read_timeout: Duration,
    ) -> Self {
        let credentials = Credentials::new(
            cfg.access_key.clone(),
            cfg.secret_key.clone(),
            None,
            None,
            "vibe-dataplane-settings",
        );
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(read_timeout)
            .build();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(cfg.endpoint.as_str().trim_end_matches('/'))
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(cfg.force_path_style)
            // Checksums only where S3 requires them: presigned PUTs must not carry a checksum
            // of an empty body, and SigV4 already covers payload integrity.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(timeouts)
            .interceptor(Telemetry { metrics })
            .build();
        Self {
            client: Client::from_conf(conf),
            bucket: cfg.bucket.clone(),
            put_presigner: PutPresigner::new(cfg),
            read_timeout,
        }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Checks that the bucket answers (readiness).
    pub async fn ping(&self) -> Result<(), BlobError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("HeadBucket", e))
    }

    /// Creates the bucket when it does not exist yet.
    pub async fn ensure_bucket(&self) -> Result<(), BlobError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => {}
            Err(e) => return Err(classify("HeadBucket", e)),
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err().code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(classify("CreateBucket", e)),
        }
    }

    /// A presigned `PUT` whose signature binds `Content-Type` and `Content-Length`: the store
    /// refuses a body of another type or length.
    pub async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        ttl: Duration,
    ) -> Result<PresignedRequest, BlobError> {
        let length = i64::try_from(content_length)
            .map_err(|_| BlobError::Storage("content length out of range".into()))?;
        if let Some(presigner) = &self.put_presigner {
            return presigner.presign_put(
                key,
                content_type,
                content_length,
                ttl,
                SystemTime::now(),
            );
        }
        let presigned = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(length)
            .presigned(presigning(ttl)?)
            .await
            .map_err(|e| classify("PresignPut", e))?;
        Ok(to_presigned(&presigned, ttl))
    }

    /// A presigned `GET`.
    pub async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<PresignedRequest, BlobError> {
        let presigned = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning(ttl)?)
            .await
            .map_err(|e| classify("PresignGet", e))?;
        Ok(to_presigned(&presigned, ttl))
    }

    /// HEAD of an object; `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, BlobError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectInfo {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                content_type: out.content_type().map(str::to_string),
                last_modified: out
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok()),
                etag: out.e_tag().map(str::to_string),
            })),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => Ok(None),
            Err(e) => Err(classify("HeadObject", e)),
        }
    }

    /// Stores a small body in one request.
    pub async fn put(&self, key: &str, content_type: &str, body: Bytes) -> Result<(), BlobError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(body.len() as i64)
            .body(ByteStream::from(body))
            // As a presigned PUT: SigV4 without hashing the body (see stream.rs).
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("PutObject", e))
    }

    /// Deletes an object, retrying transient failures with backoff. Deleting a missing object
    /// succeeds (S3 deletes are idempotent), so a retried delete is safe.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => return Ok(()),
                Err(e) => {
                    let err = classify("DeleteObject", e);
                    if attempt >= DELETE_ATTEMPTS || !matches!(err, BlobError::Unavailable(_)) {
                        return Err(err);
                    }
                    tracing::warn!(attempt, error = %err, "retrying object delete");
                    tokio::time::sleep(backoff).await;
                    backoff *= 3;
                    attempt += 1;
                }
            }
        }
    }

    /// Lists every object under `prefix` (all pages).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, BlobError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("ListObjectsV2", e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                out.push(ListedObject {
                    key: key.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    last_modified: obj
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok()),
                });
            }
        }
        Ok(out)
    }

    /// Incomplete multipart uploads under `prefix` (first 1000; the sweep runs repeatedly).
    pub async fn list_multipart(&self, prefix: &str) -> Result<Vec<PendingMultipart>, BlobError> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| classify("ListMultipartUploads", e))?;
        Ok(out
            .uploads()
            .iter()
            .filter_map(|u| {
                Some(PendingMultipart {
                    key: u.key()?.to_string(),
                    upload_id: u.upload_id()?.to_string(),
                    initiated: u.initiated().and_then(|t| SystemTime::try_from(*t).ok()),
                })
            })
            .collect())
    }

    /// Aborts a multipart upload, discarding its parts.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), BlobError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => Ok(()),
            Err(e) => Err(classify("AbortMultipartUpload", e)),
        }
    }
}

fn presigning(ttl: Duration) -> Result<PresigningConfig, BlobError> {
    PresigningConfig::expires_in(ttl).map_err(|e| BlobError::Storage(format!("presigning: {e}")))
}

fn to_presigned(req: &aws_sdk_s3::presigning::PresignedRequest, ttl: Duration) -> PresignedRequest {
    PresignedRequest {
        url: req.uri().to_string(),
        // The request id the interceptor adds is for our own calls, not part of the URL's
        // contract with the client.
        headers: {
            let mut headers: Vec<(String, String)> = req
                .headers()
                .filter(|(k, _)| !k.eq_ignore_ascii_case(REQUEST_ID_HEADER.as_str()))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            headers.sort();
            headers
        },
        expires_at: SystemTime::now() + ttl,
    }
}

/// Maps an SDK error: transport failures, timeouts and 5xx answers mean "unavailable" (503);
/// anything else is a storage error whose details go to the logs only.
pub(crate) fn classify<E>(op: &'static str, err: SdkError<E, HttpResponse>) -> BlobError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let unavailable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        // 501 Not Implemented is a missing feature of the store, not an outage.
        _ => status.is_some_and(|s| s >= 500 && s != 501),
    };
    if unavailable {
        tracing::warn!(operation = op, error = %DisplayErrorContext(&err), "object storage unavailable");
        return BlobError::Unavailable(format!("{op}: {}", DisplayErrorContext(&err)).into());
    }
    let code = err.code().unwrap_or("unknown").to_string();
    tracing::error!(operation = op, code = %code, status = ?status, error = %DisplayErrorContext(&err), "object storage refused a request");
    BlobError::Storage(format!("{op} failed with {code}"))
}
