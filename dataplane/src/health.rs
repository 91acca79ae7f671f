//! `GET /health` (liveness, no I/O) and `GET /ready` (CouchDB and every registered probe).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::state::AppState;

/// The service name `/health` reports (kept from the original).
pub const SERVICE_NAME: &str = "vibe-cloud-api";

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

async fn health() -> Json<Value> {
    Json(json!({
        "status": "ok",
        "service": SERVICE_NAME,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let down = state.readiness_failures().await;
    if down.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        let names: Vec<&str> = down.iter().map(|(n, _)| n.as_str()).collect();
        let details: serde_json::Map<String, Value> = down
            .iter()
            .map(|(n, reason)| (n.clone(), json!(reason)))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "error": format!("Not ready: {} unavailable.", names.join(", ")),
                "details": details,
            })),
        )
    }
}
