//! Blob limits and lifetimes.
//!
//! The object-store connection (`S3_ENDPOINT`, `S3_REGION`, `S3_ACCESS_KEY`, `S3_SECRET_KEY`,
//! `S3_BUCKET_NAME`, `S3_FORCE_PATH_STYLE`) is read by [`crate::config`] into
//! [`crate::config::S3Config`]. This module adds the blob-specific flags as a `clap` argument
//! group, [`BlobArgs`], validated into [`BlobSettings`].

use std::time::Duration;

use vibe_api::SettingError;
use vibe_api::dataplane_env as env;

/// Blob limits and lifetimes (flags with environment fallbacks).
#[derive(Clone, Debug, clap::Args)]
pub struct BlobArgs {
    /// Largest single blob, in bytes.
    #[arg(long = "blob-max-file-size", env = env::BLOB_MAX_FILE_SIZE, default_value_t = BlobSettings::default().max_file_size)]
    pub blob_max_file_size: u64,
    /// Storage quota of the instance, in bytes (finalised blobs plus uploads in progress).
    #[arg(long = "blob-quota-bytes", env = env::BLOB_QUOTA_BYTES, default_value_t = BlobSettings::default().quota_bytes)]
    pub blob_quota_bytes: u64,
    /// Lifetime of presigned upload URLs, in seconds.
    #[arg(
        long = "blob-upload-url-ttl",
        env = env::BLOB_UPLOAD_URL_TTL,
        default_value_t = 300
    )]
    pub blob_upload_url_ttl: u64,
    /// Lifetime of presigned download URLs, in seconds.
    #[arg(
        long = "blob-download-url-ttl",
        env = env::BLOB_DOWNLOAD_URL_TTL,
        default_value_t = 3600
    )]
    pub blob_download_url_ttl: u64,
    /// How long after an object was written it may still be finalised, in seconds. Objects
    /// never finalised are reclaimed by the sweep after this window plus a safety margin.
    #[arg(
        long = "blob-finalize-window",
        env = env::BLOB_FINALIZE_WINDOW,
        default_value_t = 3600
    )]
    pub blob_finalize_window: u64,
    /// Interval of the sweep that reclaims abandoned uploads, in seconds.
    #[arg(
        long = "blob-sweep-interval",
        env = env::BLOB_SWEEP_INTERVAL,
        default_value_t = 900
    )]
    pub blob_sweep_interval: u64,
    /// First segment of every object key, naming this instance inside the bucket. Defaults
    /// to the owner's DID.
    #[arg(long = "s3-key-prefix", env = env::S3_KEY_PREFIX)]
    pub s3_key_prefix: Option<String>,
    /// Create the bucket at start when it does not exist (self-hosting; under the operator
    /// the bucket is provisioned for the instance).
    #[arg(long = "s3-create-bucket", env = env::S3_CREATE_BUCKET, default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_create_bucket: bool,
}

/// Validated blob limits and lifetimes.
#[derive(Clone, Debug)]
pub struct BlobSettings {
    /// Largest single blob in bytes.
    pub max_file_size: u64,
    /// Instance quota in bytes.
    pub quota_bytes: u64,
    /// Lifetime of presigned upload URLs.
    pub upload_url_ttl: Duration,
    /// Lifetime of presigned download URLs.
    pub download_url_ttl: Duration,
    /// How long after being written an object may be finalised.
    pub finalize_window: Duration,
    /// Interval of the abandoned-upload sweep.
    pub sweep_interval: Duration,
    /// Instance segment of object keys; `None` means "the owner's DID".
    pub key_prefix: Option<String>,
    /// Create the bucket at start when missing.
    pub create_bucket: bool,
}

impl Default for BlobSettings {
    fn default() -> Self {
        Self {
            max_file_size: 5 * 1024 * 1024 * 1024,
            quota_bytes: 10 * 1024 * 1024 * 1024,
            upload_url_ttl: Duration::from_secs(300),
            download_url_ttl: Duration::from_secs(3600),
            finalize_window: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(900),
            key_prefix: None,
            create_bucket: false,
        }
    }
}

impl BlobSettings {
    /// Age after which an unfinalised object is reclaimed: the upload-URL lifetime plus
    /// twice the finalise window, so an accepted finalise can never race the sweep.
    pub fn abandon_after(&self) -> Duration {
        self.upload_url_ttl + self.finalize_window * 2
    }
}

const WEEK: u64 = 7 * 24 * 3600;

impl BlobArgs {
    /// Validates the flags.
    pub fn resolve(&self) -> Result<BlobSettings, SettingError> {
        let bad = |setting: &'static str, problem: &str| SettingError::new(setting, problem);
        if let Some(prefix) = &self.s3_key_prefix {
            crate::blobs::key::validate_instance_segment(prefix)
                .map_err(|e| bad(env::S3_KEY_PREFIX, &e.to_string()))?;
        }
        if !(1..=WEEK).contains(&self.blob_upload_url_ttl) {
            return Err(bad(
                env::BLOB_UPLOAD_URL_TTL,
                "must be between 1 and 604800 seconds",
            ));
        }
        if !(1..=WEEK).contains(&self.blob_download_url_ttl) {
            return Err(bad(
                env::BLOB_DOWNLOAD_URL_TTL,
                "must be between 1 and 604800 seconds",
            ));
        }
        if self.blob_sweep_interval == 0 {
            return Err(bad(env::BLOB_SWEEP_INTERVAL, "must be at least 1 second"));
        }
        if self.blob_max_file_size == 0 {
            return Err(bad(env::BLOB_MAX_FILE_SIZE, "must be at least 1 byte"));
        }
        Ok(BlobSettings {
            max_file_size: self.blob_max_file_size,
            quota_bytes: self.blob_quota_bytes,
            upload_url_ttl: Duration::from_secs(self.blob_upload_url_ttl),
            download_url_ttl: Duration::from_secs(self.blob_download_url_ttl),
            finalize_window: Duration::from_secs(self.blob_finalize_window),
            sweep_interval: Duration::from_secs(self.blob_sweep_interval),
            key_prefix: self.s3_key_prefix.clone(),
            create_bucket: self.s3_create_bucket,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        blobs: BlobArgs,
    }

    fn resolve(args: &[&str]) -> Result<BlobSettings, SettingError> {
        let mut all = vec!["test"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().blobs.resolve()
    }

    #[test]
    fn defaults_are_valid() {
        let s = resolve(&[]).unwrap();
        assert_eq!(s.quota_bytes, BlobSettings::default().quota_bytes);
        assert_eq!(s.upload_url_ttl, Duration::from_secs(300));
        assert!(s.abandon_after() > s.finalize_window);
    }

    #[test]
    fn malformed_settings_are_named() {
        assert_eq!(
            resolve(&["--s3-key-prefix", "a/b"]).unwrap_err().setting,
            "S3_KEY_PREFIX"
        );
        assert_eq!(
            resolve(&["--blob-upload-url-ttl", "0"])
                .unwrap_err()
                .setting,
            "BLOB_UPLOAD_URL_TTL"
        );
        assert_eq!(
            resolve(&["--blob-download-url-ttl", "999999999"])
                .unwrap_err()
                .setting,
            "BLOB_DOWNLOAD_URL_TTL"
        );
        assert_eq!(
            resolve(&["--blob-sweep-interval", "0"])
                .unwrap_err()
                .setting,
            "BLOB_SWEEP_INTERVAL"
        );
        let ok = resolve(&["--s3-key-prefix", "tenant-42", "--blob-quota-bytes", "1000"]).unwrap();
        assert_eq!(ok.key_prefix.as_deref(), Some("tenant-42"));
        assert_eq!(ok.quota_bytes, 1000);
    }
}
