//! The outcome of the instance's scheduled backups, recorded where the instance itself can
//! read it: `vibe-dataplane backup` ([`super::backup::run`]) writes every outcome but
//! `Skipped` to the system database (`backup/last`), and the owner console's overview
//! shows it. The operator keeps its own copy (`status.lastBackup`, from the report).
//!
//! The document holds the last attempt and, when that one failed, the last one that
//! succeeded before it, so a failure does not hide when the data was last saved.

use serde::{Deserialize, Serialize};
use serde_json::json;
use vibe_api::console::BackupRecord;
use vibe_api::export::{BackupOutcome, BackupReport};

use crate::couch::{CouchError, Database};
use crate::state::AppState;

/// The document's id in the system database.
pub const DOC_ID: &str = "backup/last";

/// What `backup/last` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastBackups {
    /// The last backup that ran.
    #[serde(default)]
    pub last: Option<BackupRecord>,
    /// The last one that succeeded (the same as `last` when that one did).
    #[serde(default)]
    pub last_succeeded: Option<BackupRecord>,
}

fn record_of(report: &BackupReport) -> BackupRecord {
    BackupRecord {
        outcome: report.outcome,
        started_at: report.started_at.clone(),
        finished_at: report.finished_at.clone(),
        object_key: report.object_key.clone(),
        size: report.size,
        message: report.message.clone(),
    }
}

/// Record `report` (a `Skipped` one changes nothing: there is no owner to show it to).
/// A failure to record is logged and otherwise ignored: the report on standard output
/// and in the termination message stays the authority.
pub async fn record(state: &AppState, report: &BackupReport) {
    if report.outcome == BackupOutcome::Skipped {
        return;
    }
    let result = match state.system_db().await {
        Ok(db) => store(&db, record_of(report)).await,
        Err(e) => Err(CouchError::Unavailable(e.to_string())),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "the backup's outcome was not recorded in the system database");
    }
}

async fn store(db: &Database, record: BackupRecord) -> Result<(), CouchError> {
    for _ in 0..3 {
        let existing = db.get(DOC_ID).await?;
        let mut last: LastBackups = existing
            .as_ref()
            .and_then(|doc| serde_json::from_value(doc.clone()).ok())
            .unwrap_or_default();
        if record.outcome == BackupOutcome::Succeeded {
            last.last_succeeded = Some(record.clone());
        }
        last.last = Some(record.clone());
        let mut doc = serde_json::to_value(&last).map_err(|e| CouchError::Decode(e.to_string()))?;
        doc["collection"] = json!("backup");
        if let Some(rev) = existing.as_ref().and_then(|d| d.get("_rev")) {
            doc["_rev"] = rev.clone();
        }
        match db.put(DOC_ID, &doc).await {
            Ok(_) => return Ok(()),
            Err(CouchError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(CouchError::Conflict)
}

/// What is recorded (nothing before the first backup).
pub async fn load(db: &Database) -> Result<LastBackups, CouchError> {
    Ok(db
        .get(DOC_ID)
        .await?
        .and_then(|doc| serde_json::from_value(doc).ok())
        .unwrap_or_default())
}
