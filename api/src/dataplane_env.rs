//! The data plane's environment contract: every environment variable `vibe-dataplane`
//! reads, and which of them hold secrets.
//!
//! The data plane's `clap` flags take their `env = …` names from these constants, the
//! operator's Deployment builder sets them by these constants, and the local stack and the
//! test harnesses start the data plane with them. Renaming one is therefore a change in one
//! place, seen by every side at compile time; removing one breaks every user at once.
//!
//! Values of [`SECRET`] variables never appear in `--help`, logs or a pod spec as literals:
//! the data plane hides them and the operator passes them with `secretKeyRef`.

// --- listener and identity ---------------------------------------------------------------

/// Address to listen on (default `0.0.0.0`).
pub const HOST: &str = "HOST";
/// TCP port to listen on (default 3000).
pub const PORT: &str = "PORT";
/// Public URL of the instance (`https://<host>`): token issuer and links.
pub const PUBLIC_INSTANCE_URL: &str = "PUBLIC_INSTANCE_URL";
/// DID of the owner; unset while the instance waits to be claimed.
pub const TARGET_USER_DID: &str = "TARGET_USER_DID";
/// Address (`host:port`) of the Prometheus metrics listener; unset: none.
pub const VIBE_METRICS_ADDR: &str = "VIBE_METRICS_ADDR";
/// Log format, `text` or `json`.
pub const VIBE_LOG_FORMAT: &str = "VIBE_LOG_FORMAT";
/// Log filter (read by the tracing subscriber, not by a flag).
pub const RUST_LOG: &str = "RUST_LOG";

// --- CouchDB -----------------------------------------------------------------------------

/// Base URL of CouchDB, without credentials.
pub const COUCHDB_URL: &str = "COUCHDB_URL";
/// CouchDB admin user name.
pub const COUCHDB_USER: &str = "COUCHDB_USER";
/// CouchDB admin password (secret).
pub const COUCHDB_PASSWORD: &str = "COUCHDB_PASSWORD";
/// Name of the system database.
pub const VIBE_SYSTEM_DB: &str = "VIBE_SYSTEM_DB";
/// Prefix of every database name.
pub const VIBE_DB_PREFIX: &str = "VIBE_DB_PREFIX";

// --- tokens and the owner claim ----------------------------------------------------------

/// Path of the PEM file with the Ed25519 token-signing key.
pub const VIBE_SIGNING_KEY_FILE: &str = "VIBE_SIGNING_KEY_FILE";
/// The token-signing key itself, when no file is given (secret).
pub const VIBE_SIGNING_KEY: &str = "VIBE_SIGNING_KEY";
/// One-time code with which the first DID claims an unowned instance (secret).
pub const VIBE_CLAIM_CODE: &str = "VIBE_CLAIM_CODE";
/// When the claim code expires (RFC 3339).
pub const VIBE_CLAIM_CODE_EXPIRES_AT: &str = "VIBE_CLAIM_CODE_EXPIRES_AT";
/// The only DID the claim code is valid for.
pub const VIBE_CLAIM_CODE_FOR_DID: &str = "VIBE_CLAIM_CODE_FOR_DID";
/// Lifetime of access and app tokens, in seconds.
pub const VIBE_ACCESS_TOKEN_TTL_SECONDS: &str = "VIBE_ACCESS_TOKEN_TTL_SECONDS";
/// Lifetime of refresh tokens, in seconds.
pub const VIBE_REFRESH_TOKEN_TTL_SECONDS: &str = "VIBE_REFRESH_TOKEN_TTL_SECONDS";
/// Accepted clock skew of signed logins, in seconds.
pub const VIBE_LOGIN_SKEW_SECONDS: &str = "VIBE_LOGIN_SKEW_SECONDS";
/// Lifetime of login nonces, in seconds.
pub const VIBE_NONCE_TTL_SECONDS: &str = "VIBE_NONCE_TTL_SECONDS";

// --- HTTP --------------------------------------------------------------------------------

/// Largest JSON request body, in bytes.
pub const VIBE_MAX_BODY_BYTES: &str = "VIBE_MAX_BODY_BYTES";
/// Browser origins allowed by CORS (comma-separated).
pub const VIBE_ALLOWED_ORIGINS: &str = "VIBE_ALLOWED_ORIGINS";
/// Seconds a connection may wait for its next request.
pub const VIBE_HTTP_IDLE_TIMEOUT_SECS: &str = "VIBE_HTTP_IDLE_TIMEOUT_SECS";
/// Seconds a request head may take from its first byte.
pub const VIBE_HTTP_HEADER_READ_TIMEOUT_SECS: &str = "VIBE_HTTP_HEADER_READ_TIMEOUT_SECS";

// --- realtime ----------------------------------------------------------------------------

/// Seconds a WebSocket has to authenticate.
pub const VIBE_WS_AUTH_TIMEOUT_SECS: &str = "VIBE_WS_AUTH_TIMEOUT_SECS";
/// Seconds between server pings.
pub const VIBE_WS_PING_INTERVAL_SECS: &str = "VIBE_WS_PING_INTERVAL_SECS";
/// Largest client frame or message, in bytes.
pub const VIBE_WS_MAX_FRAME_BYTES: &str = "VIBE_WS_MAX_FRAME_BYTES";
/// Sustained client messages per second per socket.
pub const VIBE_WS_MAX_MESSAGES_PER_SEC: &str = "VIBE_WS_MAX_MESSAGES_PER_SEC";
/// Subscriptions per socket.
pub const VIBE_WS_MAX_SUBSCRIPTIONS: &str = "VIBE_WS_MAX_SUBSCRIPTIONS";
/// Change events buffered per database.
pub const VIBE_WS_BUFFER_EVENTS: &str = "VIBE_WS_BUFFER_EVENTS";

// --- document reads ----------------------------------------------------------------------

/// Deepest nesting in a read filter.
pub const VIBE_QUERY_MAX_DEPTH: &str = "VIBE_QUERY_MAX_DEPTH";
/// Most field names, operators and array items in one read filter.
pub const VIBE_QUERY_MAX_CLAUSES: &str = "VIBE_QUERY_MAX_CLAUSES";
/// Most items of one `$in`, `$nin` or `$all` array.
pub const VIBE_QUERY_MAX_IN_ITEMS: &str = "VIBE_QUERY_MAX_IN_ITEMS";
/// Most clauses of one `$or`, `$and` or `$nor`.
pub const VIBE_QUERY_MAX_OR_ITEMS: &str = "VIBE_QUERY_MAX_OR_ITEMS";
/// Longest string in a read filter, in bytes.
pub const VIBE_QUERY_MAX_STRING_BYTES: &str = "VIBE_QUERY_MAX_STRING_BYTES";
/// Longest `$regex` pattern, in bytes.
pub const VIBE_QUERY_MAX_REGEX_BYTES: &str = "VIBE_QUERY_MAX_REGEX_BYTES";
/// Most `$regex` operators in one read filter.
pub const VIBE_QUERY_MAX_REGEXES: &str = "VIBE_QUERY_MAX_REGEXES";
/// Fields reads may sort on (comma-separated).
pub const VIBE_QUERY_SORT_FIELDS: &str = "VIBE_QUERY_SORT_FIELDS";
/// Most sort indexes created in the owner's database.
pub const VIBE_QUERY_MAX_SORT_INDEXES: &str = "VIBE_QUERY_MAX_SORT_INDEXES";
/// Deadline of a read's store work, in milliseconds.
pub const VIBE_QUERY_TIMEOUT_MS: &str = "VIBE_QUERY_TIMEOUT_MS";
/// Most ids one sync request may name (`_changes` doc_ids, `_all_docs` keys, `_bulk_get`
/// docs, `_revs_diff` revisions).
pub const VIBE_QUERY_MAX_SYNC_IDS: &str = "VIBE_QUERY_MAX_SYNC_IDS";
/// Document requests one app may have in flight.
pub const VIBE_QUERY_APP_CONCURRENCY: &str = "VIBE_QUERY_APP_CONCURRENCY";
/// Sustained document requests per second of one app.
pub const VIBE_QUERY_APP_RATE_PER_SEC: &str = "VIBE_QUERY_APP_RATE_PER_SEC";

// --- S3 and blobs ------------------------------------------------------------------------

/// S3 endpoint URL; unset: no blob storage.
pub const S3_ENDPOINT: &str = "S3_ENDPOINT";
/// S3 region.
pub const S3_REGION: &str = "S3_REGION";
/// S3 access key id.
pub const S3_ACCESS_KEY: &str = "S3_ACCESS_KEY";
/// S3 secret access key (secret).
pub const S3_SECRET_KEY: &str = "S3_SECRET_KEY";
/// The instance's bucket.
pub const S3_BUCKET_NAME: &str = "S3_BUCKET_NAME";
/// `true` for path-style S3 URLs.
pub const S3_FORCE_PATH_STYLE: &str = "S3_FORCE_PATH_STYLE";
/// First segment of every object key.
pub const S3_KEY_PREFIX: &str = "S3_KEY_PREFIX";
/// Create the bucket at start when missing.
pub const S3_CREATE_BUCKET: &str = "S3_CREATE_BUCKET";
/// Largest single blob, in bytes.
pub const BLOB_MAX_FILE_SIZE: &str = "BLOB_MAX_FILE_SIZE";
/// Storage quota of the instance, in bytes.
pub const BLOB_QUOTA_BYTES: &str = "BLOB_QUOTA_BYTES";
/// Lifetime of presigned upload URLs, in seconds.
pub const BLOB_UPLOAD_URL_TTL: &str = "BLOB_UPLOAD_URL_TTL";
/// Lifetime of presigned download URLs, in seconds.
pub const BLOB_DOWNLOAD_URL_TTL: &str = "BLOB_DOWNLOAD_URL_TTL";
/// How long after an upload a blob may be finalised, in seconds.
pub const BLOB_FINALIZE_WINDOW: &str = "BLOB_FINALIZE_WINDOW";
/// Interval of the abandoned-upload sweep, in seconds.
pub const BLOB_SWEEP_INTERVAL: &str = "BLOB_SWEEP_INTERVAL";

// --- backups (`vibe-dataplane backup`, run by the operator's CronJob) ---------------------

/// Bucket scheduled backups are written to.
pub const VIBE_BACKUP_BUCKET: &str = "VIBE_BACKUP_BUCKET";
/// Key prefix of this instance's backups (`<prefix><time>-<id>.vibe.age`).
pub const VIBE_BACKUP_PREFIX: &str = "VIBE_BACKUP_PREFIX";
/// How many backups are kept; older ones are deleted after a successful backup.
pub const VIBE_BACKUP_RETENTION: &str = "VIBE_BACKUP_RETENTION";
/// File the backup's JSON report is also written to (`/dev/termination-log` in a pod).
pub const VIBE_BACKUP_REPORT_FILE: &str = "VIBE_BACKUP_REPORT_FILE";

/// Bucket of the backup this instance is restored from (`spec.restoreFrom`).
pub const VIBE_RESTORE_BUCKET: &str = "VIBE_RESTORE_BUCKET";
/// Object key of that backup: the owner fetches it from `GET /api/v1/restore/archive`.
pub const VIBE_RESTORE_OBJECT_KEY: &str = "VIBE_RESTORE_OBJECT_KEY";

/// The variables whose values are secrets: hidden by the data plane's `--help`, redacted in
/// its `Debug` output, and passed by the operator only through `secretKeyRef`.
pub const SECRET: &[&str] = &[
    COUCHDB_PASSWORD,
    VIBE_SIGNING_KEY,
    VIBE_CLAIM_CODE,
    S3_SECRET_KEY,
];

/// Every variable the data plane reads.
pub const ALL: &[&str] = &[
    HOST,
    PORT,
    PUBLIC_INSTANCE_URL,
    TARGET_USER_DID,
    VIBE_METRICS_ADDR,
    VIBE_LOG_FORMAT,
    RUST_LOG,
    COUCHDB_URL,
    COUCHDB_USER,
    COUCHDB_PASSWORD,
    VIBE_SYSTEM_DB,
    VIBE_DB_PREFIX,
    VIBE_SIGNING_KEY_FILE,
    VIBE_SIGNING_KEY,
    VIBE_CLAIM_CODE,
    VIBE_CLAIM_CODE_EXPIRES_AT,
    VIBE_CLAIM_CODE_FOR_DID,
    VIBE_ACCESS_TOKEN_TTL_SECONDS,
    VIBE_REFRESH_TOKEN_TTL_SECONDS,
    VIBE_LOGIN_SKEW_SECONDS,
    VIBE_NONCE_TTL_SECONDS,
    VIBE_MAX_BODY_BYTES,
    VIBE_ALLOWED_ORIGINS,
    VIBE_HTTP_IDLE_TIMEOUT_SECS,
    VIBE_HTTP_HEADER_READ_TIMEOUT_SECS,
    VIBE_WS_AUTH_TIMEOUT_SECS,
    VIBE_WS_PING_INTERVAL_SECS,
    VIBE_WS_MAX_FRAME_BYTES,
    VIBE_WS_MAX_MESSAGES_PER_SEC,
    VIBE_WS_MAX_SUBSCRIPTIONS,
    VIBE_WS_BUFFER_EVENTS,
    VIBE_QUERY_MAX_DEPTH,
    VIBE_QUERY_MAX_CLAUSES,
    VIBE_QUERY_MAX_IN_ITEMS,
    VIBE_QUERY_MAX_OR_ITEMS,
    VIBE_QUERY_MAX_STRING_BYTES,
    VIBE_QUERY_MAX_REGEX_BYTES,
    VIBE_QUERY_MAX_REGEXES,
    VIBE_QUERY_SORT_FIELDS,
    VIBE_QUERY_MAX_SORT_INDEXES,
    VIBE_QUERY_TIMEOUT_MS,
    VIBE_QUERY_MAX_SYNC_IDS,
    VIBE_QUERY_APP_CONCURRENCY,
    VIBE_QUERY_APP_RATE_PER_SEC,
    S3_ENDPOINT,
    S3_REGION,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    S3_BUCKET_NAME,
    S3_FORCE_PATH_STYLE,
    S3_KEY_PREFIX,
    S3_CREATE_BUCKET,
    BLOB_MAX_FILE_SIZE,
    BLOB_QUOTA_BYTES,
    BLOB_UPLOAD_URL_TTL,
    BLOB_DOWNLOAD_URL_TTL,
    BLOB_FINALIZE_WINDOW,
    BLOB_SWEEP_INTERVAL,
    VIBE_BACKUP_BUCKET,
    VIBE_BACKUP_PREFIX,
    VIBE_BACKUP_RETENTION,
    VIBE_BACKUP_REPORT_FILE,
    VIBE_RESTORE_BUCKET,
    VIBE_RESTORE_OBJECT_KEY,
];

/// Whether the data plane reads `name`.
pub fn is_read(name: &str) -> bool {
    ALL.contains(&name)
}

/// Whether `name` holds a secret.
pub fn is_secret(name: &str) -> bool {
    SECRET.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_secrets_are_read() {
        let all: HashSet<_> = ALL.iter().collect();
        assert_eq!(all.len(), ALL.len(), "a name is listed twice");
        assert!(SECRET.iter().all(|s| is_read(s)));
        assert!(is_secret(COUCHDB_PASSWORD) && !is_secret(COUCHDB_USER));
    }
}
