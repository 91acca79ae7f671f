//! Owner console bodies (issue 19): the one-time console code, the session it is exchanged
//! for, and the owner-only views the console page shows (overview, sessions, collections,
//! documents, blobs).
//!
//! The page itself also uses the existing owner routes (`/api/v1/apps`, `/api/v1/devices`,
//! `/api/v1/auth/logout`, `/api/v1/export`); only what they lack is here.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema;

/// Shortest and longest lifetime of a console code (seconds), and the default.
pub const CODE_TTL_SECONDS: std::ops::RangeInclusive<u64> = 1..=600;
/// Lifetime of a console code when the request names none (seconds).
pub const DEFAULT_CODE_TTL_SECONDS: u64 = 120;
/// Where the console is served on an instance.
pub const CONSOLE_PATH: &str = "/console/";

/// Body of `POST /api/v1/console/code` (owner token, no app).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsoleCodeRequest {
    /// How long the code lives, in seconds (1 to 600; default 120).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::optional_whole_number"
    )]
    #[schemars(with = "u64", range(min = 1, max = 600))]
    pub ttl_seconds: Option<u64>,
}

/// `POST /api/v1/console/code` answer: a one-time code for this instance's console.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "ConsoleCode")]
pub struct ConsoleCodeResponse {
    /// The code (single use).
    pub code: String,
    /// When it expires (UNIX seconds).
    pub expires_at: i64,
    /// The console link: `<instance>/console/#code=<code>` (the code is in the fragment,
    /// which browsers never send to a server).
    pub url: String,
}

impl std::fmt::Debug for ConsoleCodeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleCodeResponse")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Body of `POST /api/v1/console/session`: exchange a console code for an owner session
/// (answered with a `TokenResponse`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsoleSessionRequest {
    /// The code from `POST /api/v1/console/code`.
    pub code: String,
}

impl std::fmt::Debug for ConsoleSessionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSessionRequest")
            .finish_non_exhaustive()
    }
}

/// The state of one backing service in the overview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceHealth {
    /// `couchdb` or `s3`.
    pub name: String,
    /// Whether it answered.
    pub ok: bool,
    /// Why not, in words (absent when ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Storage used, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageUsage {
    /// Bytes of the owner's document database (CouchDB's active size; absent when
    /// CouchDB did not say).
    #[serde(default)]
    pub documents_bytes: Option<u64>,
    /// Bytes of stored blobs, uploads in progress included (absent without blob storage).
    #[serde(default)]
    pub blobs_bytes: Option<u64>,
    /// The blob quota (absent without blob storage).
    #[serde(default)]
    pub blob_quota_bytes: Option<u64>,
}

/// `GET /api/v1/console/overview` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleOverview {
    /// The owner's DID.
    pub owner_did: String,
    /// The instance's public URL.
    pub instance_url: String,
    /// The data plane's version.
    pub version: String,
    /// CouchDB and, when configured, S3.
    #[serde(default)]
    pub services: Vec<ServiceHealth>,
    /// Storage used.
    #[serde(default)]
    pub storage: StorageUsage,
    /// The last scheduled backup, as `vibe-dataplane backup` recorded it; `null`: none
    /// recorded on this instance.
    #[serde(default)]
    pub last_backup: Option<BackupRecord>,
    /// The last scheduled backup that succeeded (the same as `lastBackup` when that one
    /// did); `null`: none recorded.
    #[serde(default)]
    pub last_successful_backup: Option<BackupRecord>,
}

/// A scheduled backup's outcome as the instance recorded it (from the backup's report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// `Succeeded` or `Failed`.
    pub outcome: crate::export::BackupOutcome,
    /// When it started (RFC 3339, UTC).
    #[schemars(schema_with = "schema::date_time")]
    pub started_at: String,
    /// When it ended (RFC 3339, UTC).
    #[schemars(schema_with = "schema::date_time")]
    pub finished_at: String,
    /// The archive's object key in the backup bucket (a backup that succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    /// The archive's size in bytes (encrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One owner session (a refresh-token family) in `GET /api/v1/console/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The family's id.
    pub id: String,
    /// When it was started (UNIX seconds).
    pub created_at: i64,
    /// When its newest refresh token expires (UNIX seconds): the session ends then unless
    /// it is refreshed. Absent for sessions started by an older data plane and not
    /// refreshed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// `console` for a console session (a `vibe console` link, or the key file signed in
    /// with in the page), `login` for a signed login (the CLI, an agent).
    #[schemars(extend("enum" = ["console", "login"]))]
    pub kind: String,
    /// Whether this is the session making the request.
    pub current: bool,
}

/// `GET /api/v1/console/sessions` answer: sessions neither revoked nor expired, newest
/// first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "ConsoleSessions")]
pub struct SessionList {
    /// The sessions.
    #[serde(default)]
    pub sessions: Vec<SessionInfo>,
}

/// `POST /api/v1/console/sessions/logout-all` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogoutAllResponse {
    /// How many sessions were ended (the caller's own included).
    pub revoked: u64,
}

/// One collection in `GET /api/v1/console/collections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionCount {
    /// The collection's name.
    pub name: String,
    /// Documents in it (deleted ones not counted).
    pub count: u64,
}

/// `GET /api/v1/console/collections` answer, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "ConsoleCollections")]
pub struct CollectionList {
    /// The collections.
    #[serde(default)]
    pub collections: Vec<CollectionCount>,
    /// Whether counting stopped early (very large instances); the counts are then lower
    /// bounds.
    #[serde(default)]
    pub truncated: bool,
}

/// `GET /api/v1/console/collections/{c}/documents?after=&limit=` answer: documents in id
/// order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "ConsoleDocuments")]
pub struct DocumentList {
    /// The documents, whole.
    #[serde(default)]
    #[schemars(schema_with = "schema::documents")]
    pub docs: Vec<Value>,
    /// The `after` of the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One blob in `GET /api/v1/console/blobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlobInfo {
    /// The object key (what download and delete take).
    pub object_key: String,
    /// The collection it belongs to.
    pub collection: String,
    /// The filename it was uploaded with.
    pub filename: String,
    /// Its content type.
    pub content_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was uploaded (RFC 3339).
    #[schemars(schema_with = "schema::date_time")]
    pub uploaded_at: String,
    /// The app that uploaded it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}

/// `GET /api/v1/console/blobs?after=&limit=` answer, in upload order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "ConsoleBlobs")]
pub struct BlobList {
    /// The blobs.
    #[serde(default)]
    pub blobs: Vec<BlobInfo>,
    /// The `after` of the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{BodyError, from_slice};

    #[test]
    fn requests_refuse_unknown_fields_and_secrets_stay_out_of_debug() {
        let request: ConsoleCodeRequest = from_slice(br#"{"ttlSeconds":30}"#).unwrap();
        assert_eq!(request.ttl_seconds, Some(30));
        assert_eq!(
            from_slice::<ConsoleCodeRequest>(b"{}").unwrap(),
            Default::default()
        );
        assert_eq!(
            from_slice::<ConsoleSessionRequest>(br#"{"code":"c","x":1}"#),
            Err(BodyError::Invalid("Unknown field 'x'.".into()))
        );
        let session: ConsoleSessionRequest = from_slice(br#"{"code":"secret-code"}"#).unwrap();
        assert!(!format!("{session:?}").contains("secret-code"));
        let answer = ConsoleCodeResponse {
            code: "secret-code".into(),
            expires_at: 1,
            url: "https://a.example/console/#code=secret-code".into(),
        };
        assert!(!format!("{answer:?}").contains("secret-code"));
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            serde_json::json!({"code": "secret-code", "expiresAt": 1,
                "url": "https://a.example/console/#code=secret-code"})
        );
    }
}
