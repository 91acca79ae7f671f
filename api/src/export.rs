//! The export archive: what `GET /api/v1/export` writes and `POST /api/v1/import` reads.
//!
//! An archive is a POSIX tar (ustar headers) of these entries, in this order
//! (docs/export-format.md explains each):
//!
//! 1. [`HEADER_PATH`] — an [`ArchiveHeader`]: format, version, export id, owner;
//! 2. `documents/NNNNNN.ndjson` — chunks of [`DocumentRecord`] lines (every leaf revision of
//!    every document, with its revision history);
//! 3. [`APPS_PATH`] — [`AppRecord`] lines (registrations and their grants);
//! 4. [`BLOB_INDEX_PATH`] — [`BlobRecord`] lines, one per blob whose bytes follow;
//! 5. `blobs/<uuid>` — the bytes of each blob, as listed in the index;
//! 6. [`MANIFEST_PATH`] — the [`Manifest`], last: counts and the SHA-256 of every entry
//!    before it, so an exporter can stream without knowing sums in advance and an importer
//!    can verify everything before it commits.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The value of `format` in the header and the manifest.
pub const FORMAT: &str = "vibe-export";
/// The version of the format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Path of the header entry (always the first entry).
pub const HEADER_PATH: &str = "vibe-export.json";
/// Directory of the document chunks.
pub const DOCUMENTS_DIR: &str = "documents/";
/// Path of the apps entry.
pub const APPS_PATH: &str = "apps.ndjson";
/// Path of the blob index entry.
pub const BLOB_INDEX_PATH: &str = "blobs/index.ndjson";
/// Directory of the blob byte entries.
pub const BLOBS_DIR: &str = "blobs/";
/// Path of the manifest entry (always the last entry).
pub const MANIFEST_PATH: &str = "manifest.json";
/// Media type of a plain archive.
pub const MEDIA_TYPE: &str = "application/x-tar";
/// Media type of an archive encrypted with age (`?encrypt=owner`).
pub const ENCRYPTED_MEDIA_TYPE: &str = "application/octet-stream";
/// The first bytes of an age-encrypted file (its header line).
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";

/// The path of document chunk `n` (counting from 1).
pub fn document_chunk_path(n: u32) -> String {
    format!("{DOCUMENTS_DIR}{n:06}.ndjson")
}

/// The path of the bytes of the blob whose metadata document is `blobs/<uuid>`.
pub fn blob_path(uuid: &str) -> String {
    format!("{BLOBS_DIR}{uuid}")
}

/// The first entry: who exported what, and how to read the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchiveHeader {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version ([`FORMAT_VERSION`] for archives written by this crate).
    pub version: u32,
    /// A fresh UUID per export; the manifest repeats it, and an import is resumed or
    /// repeated by it.
    pub export_id: String,
    /// The owner's DID (`did:vibe:z6Mk…`); an import goes only into an instance of this owner.
    pub owner_did: String,
    /// Public URL of the exporting instance.
    pub source_instance: String,
    /// When the export started (RFC 3339).
    pub created_at: String,
    /// Whether blob bytes are in the archive (`?blobs=false` leaves them out).
    pub includes_blobs: bool,
}

/// One line of a document chunk: one leaf revision of a document exactly as CouchDB returns
/// it with `revs=true` (`_id`, `_rev`, `_revisions`, `_deleted` for tombstones, and the
/// document's fields). A document with conflicts has one line per leaf; a deleted document
/// keeps its tombstone so that devices learn of the deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DocumentRecord(pub Value);

/// One line of [`APPS_PATH`]: an app registration and its grants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppRecord {
    /// The app id (typically its origin URL).
    pub app_id: String,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Picture URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture_url: Option<String>,
    /// Permissions the app's manifest requests.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Permission → `always` | `ask` | `never`.
    #[serde(default)]
    pub grants: BTreeMap<String, String>,
    /// First registration (RFC 3339).
    #[serde(default)]
    pub registered_at: String,
    /// Last change of grants (RFC 3339).
    #[serde(default)]
    pub grants_updated_at: String,
    /// The registration id app tokens are bound to (kept, so the app keeps its identity).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub registration: String,
}

/// One line of [`BLOB_INDEX_PATH`]: a blob whose bytes follow as entry `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlobRecord {
    /// Entry holding the bytes (`blobs/<uuid>`).
    pub path: String,
    /// Id of the metadata document (`blobs/<uuid>`), which is among the documents.
    pub metadata_id: String,
    /// The object key the bytes are stored under.
    pub object_key: String,
    /// Stored content type.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
}

/// One entry listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestEntry {
    /// Path inside the tar.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of the entry's bytes.
    pub sha256: String,
}

/// What an archive holds, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Counts {
    /// Distinct document ids (tombstones included).
    pub documents: u64,
    /// Leaf revisions (documents plus conflicts).
    pub revisions: u64,
    /// App registrations.
    pub apps: u64,
    /// Blobs whose bytes are in the archive.
    pub blobs: u64,
    /// Bytes of those blobs.
    pub blob_bytes: u64,
}

/// The last entry: counts and sums of every entry before it, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version.
    pub version: u32,
    /// The header's export id.
    pub export_id: String,
    /// What the archive holds.
    pub counts: Counts,
    /// Every entry before the manifest, in archive order.
    pub entries: Vec<ManifestEntry>,
}

/// The answer of a successful `POST /api/v1/import`. Read leniently, like every answer: a
/// newer instance may add fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    /// The archive's export id.
    pub export_id: String,
    /// What was imported (equal to the manifest's counts).
    pub counts: Counts,
    /// `true` when this export id had been imported before (the repeat changed nothing
    /// that was already there).
    pub repeated: bool,
}

/// File name suffix of a scheduled backup (an archive encrypted to the owner).
pub const BACKUP_SUFFIX: &str = ".vibe.age";

/// How a scheduled backup (`vibe-dataplane backup`) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupOutcome {
    /// The archive was written and retention applied.
    Succeeded,
    /// Nothing was written (or a partial upload was aborted); see the message.
    Failed,
    /// Nothing to back up: the instance has no owner yet (nobody could read a backup).
    Skipped,
}

/// The report of one scheduled backup, printed as one JSON line on standard output and
/// written to the pod's termination message, where the operator reads it into
/// `status.lastBackup`. Small by design (a termination message holds at most 4 KiB).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    /// How it ended.
    pub outcome: BackupOutcome,
    /// When the backup started (RFC 3339, UTC).
    pub started_at: String,
    /// When it ended (RFC 3339, UTC).
    pub finished_at: String,
    /// Bucket of the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Object key of the archive written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    /// The backup's name: the key's last segment without [`BACKUP_SUFFIX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size of the archive (encrypted bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Lower-case hex SHA-256 of the encrypted archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// What the archive holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// Older backups deleted by retention.
    #[serde(default)]
    pub deleted: u32,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Object key, in the instance's own bucket, of the restore outcome
/// ([`RestoreOutcome`]): written by the data plane when a restore (`spec.restoreFrom`) ends,
/// read by the operator into `status.restore`. It has no `/`, so it is never under an
/// instance's blob key prefix (`<instance>/…`): blob listings and the sweep never see it.
pub const RESTORE_OUTCOME_KEY: &str = "vibe-restore-outcome.json";

/// How a restore from a backup (`spec.restoreFrom`) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestoreEnd {
    /// An import into the instance completed (`vibe restore`, or any `vibe import`).
    Restored,
    /// The owner gave the restore up (`vibe restore --abandon`); the instance starts empty.
    Abandoned,
}

/// The end of a restore, as `POST /api/v1/restore/abandon` answers it and as the data plane
/// stores it for the operator (`vibe-restore-outcome.json` in the instance's bucket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOutcome {
    /// How it ended.
    pub outcome: RestoreEnd,
    /// When (RFC 3339, UTC).
    #[schemars(schema_with = "crate::schema::date_time")]
    pub time: String,
    /// Bucket of the backup the instance was to be restored from.
    pub bucket: String,
    /// Object key of that backup.
    pub object_key: String,
    /// The export id of the archive imported (`Restored` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_stable() {
        assert_eq!(document_chunk_path(1), "documents/000001.ndjson");
        assert_eq!(
            blob_path("0190aaaa-0000-7000-8000-000000000000"),
            "blobs/0190aaaa-0000-7000-8000-000000000000"
        );
    }

    #[test]
    fn manifest_round_trips_and_refuses_unknown_fields() {
        let manifest = Manifest {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            export_id: "e".into(),
            counts: Counts {
                documents: 1,
                revisions: 2,
                ..Counts::default()
            },
            entries: vec![ManifestEntry {
                path: HEADER_PATH.into(),
                size: 3,
                sha256: "ab".into(),
            }],
        };
        let text = serde_json::to_string(&manifest).unwrap();
        assert!(text.contains("\"exportId\""), "{text}");
        let back: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, manifest);
        let mut value: Value = serde_json::from_str(&text).unwrap();
        value["extra"] = Value::Bool(true);
        assert!(serde_json::from_value::<Manifest>(value).is_err());
    }
}
