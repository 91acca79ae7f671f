//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`.
//!
//! `main` serves [`router`] next to the controller, the webhook's HTTPS server
//! ([`crate::webhook::server`]) and the control plane's ([`crate::control_plane`]), all built
//! from the same [`State`]'s caches and cancelled together.

use crate::state::State;
use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// Routes of the admin server.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(AxumState(state): AxumState<State>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.encode_metrics(),
    )
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok")
}

/// 200 once every watch cache holds its initial list; else 503 naming the watches still
/// listing (`caches not synced: tenants/deployments, tenants/secrets`).
async fn readyz(AxumState(state): AxumState<State>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready".to_string())
    } else {
        let pending = state.unsynced_watches();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("caches not synced: {}", pending.join(", ")),
        )
    }
}
