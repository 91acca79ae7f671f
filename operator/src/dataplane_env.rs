//! The data plane's configuration contract: the environment variables `vibe-dataplane` reads
//! (aligned with `dataplane/src/config.rs`).
//!
//! This is the only place the operator names them, so aligning with `dataplane/` is a one-file
//! change. Values that are secret are never put here as literals: they reach the pod through
//! `secretKeyRef` or a mounted Secret file.

/// TCP port the data plane listens on.
pub const PORT: &str = "PORT";
/// The port the operator configures (the data plane's default).
pub const PORT_VALUE: i32 = 3000;
/// Address of the data plane's Prometheus metrics listener (`/metrics`).
pub const METRICS_ADDR: &str = "VIBE_METRICS_ADDR";
/// The metrics port the operator configures (container port named `metrics`).
pub const METRICS_PORT_VALUE: i32 = 9464;
/// DID of the instance owner; absent while the instance waits to be claimed.
pub const TARGET_USER_DID: &str = "TARGET_USER_DID";
/// Base URL of the tenant's CouchDB.
pub const COUCHDB_URL: &str = "COUCHDB_URL";
/// CouchDB admin user name.
pub const COUCHDB_USER: &str = "COUCHDB_USER";
/// CouchDB admin password.
pub const COUCHDB_PASSWORD: &str = "COUCHDB_PASSWORD";
/// Public URL of the instance (`https://<host>`), used as token issuer and in links.
pub const PUBLIC_URL: &str = "PUBLIC_INSTANCE_URL";
/// Path of the PEM file holding the Ed25519 token signing key.
pub const TOKEN_SIGNING_KEY_FILE: &str = "VIBE_SIGNING_KEY_FILE";
/// One-time code that lets the first DID claim an unowned instance.
pub const CLAIM_CODE: &str = "VIBE_CLAIM_CODE";
/// S3 endpoint URL.
pub const S3_ENDPOINT: &str = "S3_ENDPOINT";
/// S3 region.
pub const S3_REGION: &str = "S3_REGION";
/// The tenant's bucket.
pub const S3_BUCKET: &str = "S3_BUCKET_NAME";
/// S3 access key id.
pub const S3_ACCESS_KEY_ID: &str = "S3_ACCESS_KEY";
/// S3 secret access key.
pub const S3_SECRET_ACCESS_KEY: &str = "S3_SECRET_KEY";
/// `true` for path-style S3 URLs.
pub const S3_FORCE_PATH_STYLE: &str = "S3_FORCE_PATH_STYLE";
/// Maximum total blob size in bytes (only when `spec.blobs.quota` is set).
pub const BLOB_QUOTA_BYTES: &str = "BLOB_QUOTA_BYTES";
/// Log filter.
pub const RUST_LOG: &str = "RUST_LOG";

/// Liveness probe path of the data plane.
pub const HEALTH_PATH: &str = "/health";
/// Readiness probe path of the data plane.
pub const READY_PATH: &str = "/ready";
/// Directory the token signing key Secret is mounted at.
pub const TOKEN_KEY_DIR: &str = "/var/run/vibe/token-key";
/// File name of the key inside the token key Secret and the mounted directory.
pub const TOKEN_KEY_FILE_NAME: &str = "signing-key.pem";
