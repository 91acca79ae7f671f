//! Owner-only app routes: register/update with grants, change one grant, status, list,
//! delete, and minting app-bound tokens.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde_json::{Value, json};
use vibe_api::apps::{
    AppGrantChange, AppInfo, AppList, AppTokenRequest, AppTokenResponse, AppUpsert, GrantSetting,
};
use vibe_api::documents::WriteResult;

use super::{APP_DOC_PREFIX, AppRecord, is_valid_permission};
use crate::auth::Caller;
use crate::couch::CouchError;
use crate::error::{ApiError, ApiResult};
use crate::json::StrictJson;
use crate::last_seen::Seen;
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/apps", get(list))
        .route("/api/v1/apps/upsert", post(upsert))
        .route("/api/v1/apps/grant", post(grant))
        .route("/api/v1/apps/status", get(status))
        .route("/api/v1/apps/token", post(app_token))
        .route("/api/v1/apps/{appId}", delete(remove))
}

/// Longest app name, in characters.
const MAX_NAME_CHARS: usize = 256;
/// Longest description or picture URL, in characters.
const MAX_TEXT_CHARS: usize = 2048;

fn doc_id(app_id: &str) -> String {
    format!("{APP_DOC_PREFIX}{app_id}")
}

fn validate_app_id(app_id: &str) -> bool {
    vibe_api::app_id::is_valid(app_id)
}

fn manifest_json(app: &AppRecord) -> Value {
    let mut manifest = json!({
        "appId": app.app_id,
        "name": app.name,
        "permissions": app.permissions,
    });
    if let Some(d) = &app.description {
        manifest["description"] = json!(d);
    }
    if let Some(p) = &app.picture_url {
        manifest["pictureUrl"] = json!(p);
    }
    manifest
}

/// The refusal of a permission that is not one of the known shapes.
fn invalid_permission(permission: &str) -> ApiError {
    ApiError::Validation(format!(
        "Invalid permission {}: expected read:<c>, write:<c>, blob:read:<c>, blob:write:<c>, blob:delete:<c> or sync.",
        json!(permission)
    ))
}

/// Validate an upsert body into a registration (its dates and registration id are filled
/// in by [`upsert`]).
fn parse_upsert(body: AppUpsert) -> ApiResult<AppRecord> {
    let AppUpsert {
        app_id,
        name,
        description,
        picture_url,
        permissions,
        grants,
    } = body;
    if !validate_app_id(&app_id) {
        return Err(ApiError::Validation(vibe_api::app_id::RULE.into()));
    }
    // Lengths in characters, as the OpenAPI document's `maxLength` counts them; a name has
    // to have one that is not white space (the document's pattern, with Rust's `trim`).
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::Validation(format!(
            "'name' is required and must be 1 to {MAX_NAME_CHARS} characters, not only spaces."
        )));
    }
    for (key, value) in [("description", &description), ("pictureUrl", &picture_url)] {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_TEXT_CHARS)
        {
            return Err(ApiError::Validation(format!(
                "'{key}' must be at most {MAX_TEXT_CHARS} characters."
            )));
        }
    }
    if picture_url
        .as_deref()
        .is_some_and(|url| url::Url::parse(url).is_err())
    {
        return Err(ApiError::Validation("'pictureUrl' must be a URI.".into()));
    }
    if let Some(p) = permissions.iter().find(|p| !is_valid_permission(p)) {
        return Err(invalid_permission(p));
    }
    let grants = grants.unwrap_or_default();
    if let Some(permission) = grants.keys().find(|p| !is_valid_permission(p)) {
        return Err(ApiError::Validation(format!(
            "Invalid permission '{permission}' in grants."
        )));
    }
    Ok(AppRecord {
        app_id,
        name,
        description,
        picture_url,
        permissions,
        grants,
        registered_at: String::new(),
        grants_updated_at: String::new(),
        registration: String::new(),
    })
}

/// `POST /api/v1/apps/upsert` → 201 on create, 200 on update, `{ok, id, rev}`.
async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<AppUpsert>,
) -> ApiResult<(StatusCode, Json<WriteResult>)> {
    caller.require_owner()?;
    let mut app = parse_upsert(body)?;
    crate::export::restore::refuse_before_restore(&state).await?;
    let db = state.system_db().await?;
    let id = doc_id(&app.app_id);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let existing = db.get(&id).await?;
    app.registered_at = existing
        .as_ref()
        .and_then(|d| d.get("registeredAt"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| now.clone());
    // An update keeps the registration (and so the app's tokens); a first registration,
    // also after a delete, starts a new one.
    app.registration = match &existing {
        Some(doc) => serde_json::from_value::<AppRecord>(doc.clone())
            .map(|stored| stored.registration_id())
            .unwrap_or_else(|_| uuid::Uuid::now_v7().to_string()),
        None => uuid::Uuid::now_v7().to_string(),
    };
    app.grants_updated_at = now;
    let mut doc = serde_json::to_value(&app).map_err(ApiError::internal)?;
    doc["collection"] = json!("apps");
    doc["userDid"] = json!(caller.did.to_string());
    if let Some(rev) = existing.as_ref().and_then(|d| d.get("_rev")) {
        doc["_rev"] = rev.clone();
    }
    let result = match db.put(&id, &doc).await {
        Ok(result) => result,
        Err(CouchError::Conflict) => {
            return Err(ApiError::Conflict(
                "App registration changed concurrently; retry.".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    state.grants.put(app);
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(WriteResult {
            ok: true,
            id: result.id,
            rev: result.rev,
        }),
    ))
}

/// Attempts at a grant change before giving up on a registration that keeps changing.
const GRANT_ATTEMPTS: usize = 20;

/// `POST /api/v1/apps/grant` `{appId, permission, setting, expected?}` → 200 with the app
/// as listed by `GET /api/v1/apps`.
///
/// Changes exactly one permission: the stored registration is read and written back at
/// the revision read with only that grant (and `grantsUpdatedAt`) changed, again on a
/// revision conflict, so a change made meanwhile elsewhere (CLI, another page, another
/// replica) is never undone. The owner itself only, like the console's routes: no app
/// token, device or owner token acting as an app.
async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<AppGrantChange>,
) -> ApiResult<Json<AppInfo>> {
    crate::console::owner_itself(&caller)?;
    let AppGrantChange {
        app_id,
        permission,
        setting,
        expected,
    } = body;
    if !validate_app_id(&app_id) {
        return Err(ApiError::Validation(vibe_api::app_id::RULE.into()));
    }
    if !is_valid_permission(&permission) {
        return Err(invalid_permission(&permission));
    }
    crate::export::restore::refuse_before_restore(&state).await?;
    let db = state.system_db().await?;
    let id = doc_id(&app_id);
    for _ in 0..GRANT_ATTEMPTS {
        let Some(mut doc) = db.get(&id).await? else {
            return Err(ApiError::NotFound("App not registered.".into()));
        };
        let stored: AppRecord = serde_json::from_value(doc.clone()).map_err(ApiError::internal)?;
        let current = stored.grants.get(&permission).copied();
        if let Some(expected) = expected
            && current.unwrap_or(GrantSetting::Ask) != expected
        {
            return Err(ApiError::Conflict(format!(
                "{permission} of {app_id} is no longer {}: it is {} now. Nothing was changed.",
                expected.as_str(),
                current.unwrap_or(GrantSetting::Ask).as_str()
            )));
        }
        if current == Some(setting) {
            // Already so: nothing to write, nothing to tell the streams.
            return Ok(Json(app_info(&state, &stored)));
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        if !doc["grants"].is_object() {
            doc["grants"] = json!({});
        }
        doc["grants"][permission.as_str()] = json!(setting.as_str());
        doc["grantsUpdatedAt"] = json!(now);
        let mut app = stored;
        app.grants.insert(permission.clone(), setting);
        app.grants_updated_at = now;
        match db.put(&id, &doc).await {
            Ok(_) => {
                // Like an upsert: the cache's change reaches every open stream of the app,
                // which ends when this took a grant away.
                state.grants.put(app.clone());
                tracing::info!(setting = setting.as_str(), "one grant of an app changed");
                return Ok(Json(app_info(&state, &app)));
            }
            Err(CouchError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Conflict(
        "App registration changed concurrently; retry.".into(),
    ))
}

fn app_info(state: &AppState, app: &AppRecord) -> AppInfo {
    AppInfo {
        app_id: app.app_id.clone(),
        name: app.name.clone(),
        description: app.description.clone(),
        picture_url: app.picture_url.clone(),
        permissions: app.permissions.clone(),
        grants: app.grants.clone(),
        registered_at: app.registered_at.clone(),
        grants_updated_at: app.grants_updated_at.clone(),
        last_seen_at: state.last_seen.get_rfc3339(Seen::App, &app.app_id),
    }
}

#[derive(serde::Deserialize)]
struct StatusQuery {
    #[serde(rename = "appId")]
    app_id: Option<String>,
}

/// `GET /api/v1/apps/status?appId=` → `{isRegistered, manifest?, grants?}`.
async fn status(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    caller.require_owner()?;
    let app_id = query
        .ok()
        .and_then(|Query(q)| q.app_id)
        .filter(|a| validate_app_id(a))
        .ok_or_else(|| {
            ApiError::BadRequest("Bad Request: Missing or invalid 'appId' query parameter.".into())
        })?;
    state.system_db().await?;
    Ok(Json(match state.grants.get(&app_id) {
        Some(app) => json!({
            "isRegistered": true,
            "manifest": manifest_json(&app),
            "grants": app.grants,
            "registeredAt": app.registered_at,
            "grantsUpdatedAt": app.grants_updated_at,
            "lastSeenAt": state.last_seen.get_rfc3339(Seen::App, &app.app_id),
        }),
        None => json!({ "isRegistered": false }),
    }))
}

/// `GET /api/v1/apps` → `{apps: [...]}`.
async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<AppList>> {
    caller.require_owner()?;
    state.system_db().await?;
    let apps = state
        .grants
        .all()
        .iter()
        .map(|app| app_info(&state, app))
        .collect();
    Ok(Json(AppList { apps }))
}

/// `DELETE /api/v1/apps/{appId}` → 204; 404 when not registered.
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_owner()?;
    let db = state.system_db().await?;
    let id = doc_id(&app_id);
    let Some(doc) = db.get(&id).await? else {
        return Err(ApiError::NotFound("App not registered.".into()));
    };
    let rev = doc.get("_rev").and_then(Value::as_str).unwrap_or_default();
    match db.delete(&id, rev).await {
        Ok(_) | Err(CouchError::NotFound { .. }) => {}
        Err(CouchError::Conflict) => {
            return Err(ApiError::Conflict(
                "App registration changed concurrently; retry.".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    state.grants.remove(&app_id);
    state.last_seen.forget(Seen::App, &app_id);
    tracing::info!("app registration deleted; its tokens and devices are revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/apps/token` `{appId}` → `{accessToken, accessTokenExpiresIn, tokenType}`.
async fn app_token(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<AppTokenRequest>,
) -> ApiResult<Json<AppTokenResponse>> {
    caller.require_owner()?;
    let app_id = body.app_id;
    if !validate_app_id(&app_id) {
        return Err(ApiError::Validation(vibe_api::app_id::RULE.into()));
    }
    state.system_db().await?;
    let Some(app) = state.grants.get(&app_id) else {
        return Err(ApiError::NotFound("App not registered.".into()));
    };
    // The token lives no longer than the session minting it and the registration it is for.
    let family = caller.family().ok_or_else(|| {
        ApiError::Forbidden("Forbidden: App tokens are minted from an owner session.".into())
    })?;
    let issued = state
        .tokens
        .issue_app(&caller.did, &app_id, &app.registration_id(), family)?;
    Ok(Json(AppTokenResponse {
        access_token: issued.token,
        access_token_expires_in: issued.claims.exp,
        token_type: vibe_api::auth::BEARER.into(),
    }))
}
