//! Tenant buckets in the operator's S3-compatible object store (MinIO, Scaleway Object Storage…).
//!
//! `ensure` is idempotent: an existing bucket we can access is fine, a missing one is created,
//! and the lifecycle rule that aborts abandoned multipart uploads is put only when absent, so a
//! resync of a healthy instance makes read requests only. `delete` empties and removes a bucket.

use crate::config::S3Config;
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, Delete, ExpirationStatus,
    LifecycleRule, LifecycleRuleFilter, ObjectIdentifier,
};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use std::time::Duration;

/// Id of the lifecycle rule the operator manages.
pub const ABORT_MULTIPART_RULE_ID: &str = "vibe-abort-incomplete-multipart-uploads";
/// Days after which an unfinished multipart upload is aborted.
pub const ABORT_MULTIPART_AFTER_DAYS: i32 = 7;

/// Object store failures, without credentials or raw responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    /// The endpoint could not be reached or timed out.
    #[error("object store unreachable: {0}")]
    Unreachable(String),
    /// The store refused our credentials or the operation.
    #[error("object store denied access to bucket {bucket}: {code}")]
    Denied {
        /// Bucket.
        bucket: String,
        /// S3 error code.
        code: String,
    },
    /// The bucket name is taken by another account.
    #[error("bucket {0} already exists and belongs to someone else")]
    Taken(String),
    /// Any other S3 error.
    #[error("object store error on bucket {bucket}: {code}")]
    Service {
        /// Bucket.
        bucket: String,
        /// S3 error code (or HTTP status).
        code: String,
    },
}

impl BucketError {
    /// A short machine-readable reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            BucketError::Unreachable(_) => "ObjectStoreUnreachable",
            BucketError::Denied { .. } => "ObjectStoreDenied",
            BucketError::Taken(_) => "BucketNameTaken",
            BucketError::Service { .. } => "ObjectStoreError",
        }
    }
}

/// Outcome of [`BucketClient::ensure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    /// Whether this call created the bucket.
    pub created: bool,
    /// Whether the abort-multipart lifecycle rule is in place.
    pub lifecycle: LifecycleState,
}

/// State of the lifecycle rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleState {
    /// The rule was already there.
    Present,
    /// This call put the rule.
    Applied,
    /// The store does not implement bucket lifecycle configuration.
    Unsupported,
}

/// S3 client for bucket provisioning.
#[derive(Clone, Debug)]
pub struct BucketClient {
    client: Client,
}

impl BucketClient {
    /// A client for the configured endpoint. Short timeouts and two attempts: the controller's
    /// backoff does the long-term retrying.
    pub fn new(config: &S3Config) -> Self {
        let credentials = Credentials::new(
            config.access_key_id.clone(),
            config.secret_access_key.clone(),
            None,
            None,
            "vibe-operator",
        );
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .endpoint_url(config.endpoint.clone())
            .credentials_provider(credentials)
            .force_path_style(config.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_timeout(Duration::from_secs(20))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .build();
        Self {
            client: Client::from_conf(conf),
        }
    }

    /// Makes sure the bucket exists with the lifecycle rule.
    pub async fn ensure(&self, bucket: &str) -> Result<BucketState, BucketError> {
        let created = match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => false,
            Err(e) if status_of(&e) == Some(404) => self.create(bucket).await?,
            Err(e) => return Err(classify(bucket, e)),
        };
        let lifecycle = self.ensure_lifecycle(bucket).await?;
        Ok(BucketState { created, lifecycle })
    }

    /// Whether the bucket exists and is accessible.
    pub async fn exists(&self, bucket: &str) -> Result<bool, BucketError> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(classify(bucket, e)),
        }
    }

    /// Size of an object, or `None` when there is no such object (or no such bucket): how the
    /// operator checks that the backup a restored instance names exists, without reading it.
    pub async fn object_size(&self, bucket: &str, key: &str) -> Result<Option<u64>, BucketError> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.content_length()
                    .and_then(|l| u64::try_from(l).ok())
                    .unwrap_or(0),
            )),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify(bucket, e)),
        }
    }

    /// The bytes of a small object (at most `max` bytes), `None` when there is no such
    /// object or bucket; an object larger than `max` is an error (it is not what was asked
    /// for).
    pub async fn small_object(
        &self,
        bucket: &str,
        key: &str,
        max: u64,
    ) -> Result<Option<Vec<u8>>, BucketError> {
        let out = match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if status_of(&e) == Some(404)
                    || matches!(e.code(), Some("NoSuchKey" | "NoSuchBucket")) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(classify(bucket, e)),
        };
        let too_large = || BucketError::Service {
            bucket: bucket.into(),
            code: format!("object {key} is larger than {max} bytes"),
        };
        if out
            .content_length()
            .is_some_and(|l| u64::try_from(l).map_or(true, |l| l > max))
        {
            return Err(too_large());
        }
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|_| BucketError::Unreachable("object body cut off".into()))?
            .into_bytes();
        if bytes.len() as u64 > max {
            return Err(too_large());
        }
        Ok(Some(bytes.to_vec()))
    }

    async fn create(&self, bucket: &str) -> Result<bool, BucketError> {
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) => match e.code() {
                Some("BucketAlreadyOwnedByYou") => Ok(false),
                Some("BucketAlreadyExists") => Err(BucketError::Taken(bucket.into())),
                _ => Err(classify(bucket, e)),
            },
        }
    }

    async fn ensure_lifecycle(&self, bucket: &str) -> Result<LifecycleState, BucketError> {
        let existing = match self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => out.rules().to_vec(),
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Vec::new(),
            Err(e) if is_not_implemented(&e) => return Ok(LifecycleState::Unsupported),
            Err(e) => return Err(classify(bucket, e)),
        };
        if existing.iter().any(is_our_rule) {
            return Ok(LifecycleState::Present);
        }
        // Keep rules someone else configured; replace only ours.
        let mut rules: Vec<LifecycleRule> = existing
            .into_iter()
            .filter(|r| r.id() != Some(ABORT_MULTIPART_RULE_ID))
            .collect();
        rules.push(abort_multipart_rule());
        let config = BucketLifecycleConfiguration::builder()
            .set_rules(Some(rules))
            .build()
            .map_err(|e| BucketError::Service {
                bucket: bucket.into(),
                code: e.to_string(),
            })?;
        match self
            .client
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(config)
            .send()
            .await
        {
            Ok(_) => Ok(LifecycleState::Applied),
            Err(e) if is_not_implemented(&e) => Ok(LifecycleState::Unsupported),
            Err(e) => Err(classify(bucket, e)),
        }
    }

    /// Aborts unfinished multipart uploads, deletes every object and then the bucket. A bucket
    /// that does not exist counts as deleted.
    pub async fn delete(&self, bucket: &str) -> Result<(), BucketError> {
        self.abort_uploads(bucket).await?;
        loop {
            let page = match self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .max_keys(1000)
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) if e.code() == Some("NoSuchBucket") || status_of(&e) == Some(404) => {
                    return Ok(());
                }
                Err(e) => return Err(classify(bucket, e)),
            };
            let ids: Vec<ObjectIdentifier> = page
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            if ids.is_empty() {
                break;
            }
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| BucketError::Service {
                    bucket: bucket.into(),
                    code: e.to_string(),
                })?;
            self.client
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| classify(bucket, e))?;
        }
        match self.client.delete_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchBucket") || status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(classify(bucket, e)),
        }
    }

    async fn abort_uploads(&self, bucket: &str) -> Result<(), BucketError> {
        let uploads = match self
            .client
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => out.uploads().to_vec(),
            Err(e) if is_not_implemented(&e) => return Ok(()),
            Err(e) if e.code() == Some("NoSuchBucket") || status_of(&e) == Some(404) => {
                return Ok(());
            }
            Err(e) => return Err(classify(bucket, e)),
        };
        for upload in uploads {
            if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                self.client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| classify(bucket, e))?;
            }
        }
        Ok(())
    }
}

/// The lifecycle rule aborting multipart uploads left unfinished for a week.
pub fn abort_multipart_rule() -> LifecycleRule {
    LifecycleRule::builder()
        .id(ABORT_MULTIPART_RULE_ID)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(ABORT_MULTIPART_AFTER_DAYS)
                .build(),
        )
        .build()
        .expect("status is set")
}

fn is_our_rule(rule: &LifecycleRule) -> bool {
    rule.id() == Some(ABORT_MULTIPART_RULE_ID)
        && rule.status() == &ExpirationStatus::Enabled
        && rule
            .abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation())
            == Some(ABORT_MULTIPART_AFTER_DAYS)
}

fn status_of<E, R>(e: &SdkError<E, R>) -> Option<u16>
where
    R: HttpStatus,
{
    match e {
        SdkError::ServiceError(s) => Some(s.raw().status_code()),
        _ => None,
    }
}

/// Access to the HTTP status of a raw response (keeps `status_of` generic over operations).
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn is_not_implemented<E: ProvideErrorMetadata, R: HttpStatus>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("NotImplemented") || status_of(e) == Some(501)
}

fn classify<E: ProvideErrorMetadata, R: HttpStatus>(
    bucket: &str,
    e: SdkError<E, R>,
) -> BucketError {
    match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            BucketError::Unreachable(match &e {
                SdkError::TimeoutError(_) => "request timed out".into(),
                _ => "connection failed".into(),
            })
        }
        SdkError::ServiceError(_) => {
            let status = status_of(&e);
            let code = e
                .code()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {}", status.unwrap_or(0)));
            if status == Some(403)
                || matches!(
                    code.as_str(),
                    "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch"
                )
            {
                BucketError::Denied {
                    bucket: bucket.into(),
                    code,
                }
            } else {
                BucketError::Service {
                    bucket: bucket.into(),
                    code,
                }
            }
        }
        _ => BucketError::Service {
            bucket: bucket.into(),
            code: "invalid response".into(),
        },
    }
}
