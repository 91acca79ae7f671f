//! Owner-only device routes: register a device (its secret is shown once), list trusted
//! devices, revoke one.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde_json::{Value, json};
use vibe_api::devices::{DeviceInfo, DeviceList, DeviceRegistration};

use super::{DEVICE_DOC_PREFIX, DeviceRecord};
use crate::apps::is_valid_permission;
use crate::auth::Caller;
use crate::couch::CouchError;
use crate::error::{ApiError, ApiResult};
use crate::json::StrictJson;
use crate::last_seen::Seen;
use crate::state::AppState;

/// Most scopes one device may hold.
const MAX_SCOPES: usize = 64;
/// Longest device name, in characters (as the OpenAPI document's `maxLength` counts).
const MAX_NAME_CHARS: usize = 256;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/devices", get(list).post(register))
        .route("/api/v1/devices/{deviceId}", delete(revoke))
}

fn doc_id(device_id: &str) -> String {
    format!("{DEVICE_DOC_PREFIX}{device_id}")
}

/// Device ids are 32 lowercase hex digits (a UUIDv7 without dashes).
pub(crate) fn is_device_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn describe(state: &AppState, device: &DeviceRecord) -> DeviceInfo {
    DeviceInfo {
        device_id: device.device_id.clone(),
        name: device.name.clone(),
        app_id: device.app_id.clone(),
        scopes: device.scopes.clone(),
        created_at: device.created_at.clone(),
        last_seen_at: state.last_seen.get_rfc3339(Seen::Device, &device.device_id),
    }
}

struct Registration {
    name: String,
    app_id: Option<String>,
    scopes: Vec<String>,
}

fn parse_registration(body: DeviceRegistration) -> ApiResult<Registration> {
    let DeviceRegistration {
        name,
        app_id,
        scopes,
    } = body;
    // Not only white space (as the document's pattern says, with Rust's `trim`).
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::Validation(format!(
            "'name' is required and must be 1 to {MAX_NAME_CHARS} characters, not only spaces."
        )));
    }
    if app_id
        .as_deref()
        .is_some_and(|id| !vibe_api::app_id::is_valid(id))
    {
        return Err(ApiError::Validation(vibe_api::app_id::RULE.into()));
    }
    let mut scopes: Vec<String> = match scopes {
        None => vec![crate::sync::SYNC_PERMISSION.to_string()],
        Some(items) if !items.is_empty() && items.len() <= MAX_SCOPES => {
            if let Some(bad) = items.iter().find(|p| !is_valid_permission(p)) {
                return Err(ApiError::Validation(format!(
                    "Invalid scope {}: expected a permission such as sync or read:<c>.",
                    Value::String(bad.clone())
                )));
            }
            items
        }
        Some(_) => {
            return Err(ApiError::Validation(format!(
                "'scopes' must be an array of 1 to {MAX_SCOPES} permissions."
            )));
        }
    };
    scopes.sort();
    scopes.dedup();
    Ok(Registration {
        name,
        app_id,
        scopes,
    })
}

/// `POST /api/v1/devices` `{name, appId?, scopes?}` → 201 with the device and its
/// credentials (the secret is never shown again).
async fn register(
    State(state): State<AppState>,
    caller: Caller,
    StrictJson(body): StrictJson<DeviceRegistration>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_owner()?;
    let registration = parse_registration(body)?;
    crate::export::restore::refuse_before_restore(&state).await?;
    let db = state.system_db().await?;
    let app_registration = match &registration.app_id {
        None => None,
        Some(app_id) => match state.grants.get(app_id) {
            Some(app) => Some(app.registration_id()),
            None => return Err(ApiError::NotFound("App not registered.".into())),
        },
    };
    let secret = vibe_identity::secret::generate(32);
    let device = DeviceRecord {
        device_id: uuid::Uuid::now_v7().simple().to_string(),
        name: registration.name,
        app_id: registration.app_id,
        app_registration,
        scopes: registration.scopes,
        secret_hash: vibe_identity::secret::hash(&secret),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let mut doc = serde_json::to_value(&device).map_err(ApiError::internal)?;
    doc["collection"] = json!("devices");
    db.put(&doc_id(&device.device_id), &doc).await?;
    let mut answer = serde_json::to_value(describe(&state, &device)).map_err(ApiError::internal)?;
    answer["credentials"] = json!({ "username": device.device_id, "password": secret });
    answer["syncUrl"] = json!(format!(
        "{}{}/",
        state.config.public_url.trim_end_matches('/'),
        crate::sync::SYNC_ROOT
    ));
    state.devices.put(device);
    tracing::info!("device registered");
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `GET /api/v1/devices` → `{devices: [...]}` (never the secrets).
async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<DeviceList>> {
    caller.require_owner()?;
    state.system_db().await?;
    let devices = state
        .devices
        .all()
        .iter()
        .map(|d| describe(&state, d))
        .collect();
    Ok(Json(DeviceList { devices }))
}

/// `DELETE /api/v1/devices/{deviceId}` → 204; 404 when not trusted. Ends the device's
/// open feeds within a second.
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(device_id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_owner()?;
    let db = state.system_db().await?;
    if !is_device_id(&device_id) {
        return Err(ApiError::NotFound("Device not registered.".into()));
    }
    let id = doc_id(&device_id);
    let Some(doc) = db.get(&id).await? else {
        return Err(ApiError::NotFound("Device not registered.".into()));
    };
    let rev = doc.get("_rev").and_then(Value::as_str).unwrap_or_default();
    match db.delete(&id, rev).await {
        Ok(_) | Err(CouchError::NotFound { .. }) => {}
        Err(CouchError::Conflict) => {
            return Err(ApiError::Conflict(
                "Device registration changed concurrently; retry.".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    state.devices.remove(&device_id);
    state.last_seen.forget(Seen::Device, &device_id);
    state.tokens.announce_revocation();
    tracing::info!("device revoked");
    Ok(StatusCode::NO_CONTENT)
}
