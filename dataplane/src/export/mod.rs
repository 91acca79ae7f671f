//! Export and import of a whole instance (issue 18): `GET /api/v1/export` streams one
//! archive (format: `vibe_api::export`, docs/export-format.md), `POST /api/v1/import` reads
//! one into a new instance of the same owner.
//!
//! - [`archive`]: tar entries with their SHA-256 sums;
//! - [`leaves`]: every leaf revision of a database with its history, and storing them as is;
//! - [`exporter`]: the export route (streamed, optionally encrypted);
//! - [`import`]: the import route (stage, verify, commit);
//! - [`crypto`]: age encryption to the owner's DID key;
//! - [`backup`]: `vibe-dataplane backup`, the operator's scheduled backups to S3;
//! - [`restore`]: the backup a new instance is restored from, served to its owner.

pub mod archive;
pub mod backup;
pub mod crypto;
pub mod exporter;
pub mod import;
pub mod last_backup;
pub mod leaves;
pub mod restore;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::auth::{Caller, CallerKind};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/export", get(exporter::export))
        .route("/api/v1/restore/archive", get(restore::archive))
        .route("/api/v1/restore/abandon", post(restore::abandon))
        .route(
            "/api/v1/import",
            post(import::import).layer(DefaultBodyLimit::disable()),
        )
}

/// 403 unless the owner itself calls: app tokens and an owner token acting as an app
/// (`X-Vibe-App-ID`) may not take or replace the whole instance.
pub fn require_owner_itself(caller: &Caller) -> ApiResult<()> {
    caller.require_owner()?;
    if caller.kind != CallerKind::Owner || caller.app_id.is_some() {
        return Err(ApiError::Forbidden(
            "Forbidden: export and import are for the owner itself, not an app.".into(),
        ));
    }
    Ok(())
}
