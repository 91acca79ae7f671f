//! `GET /api/v1/openapi.json`: the hand-maintained OpenAPI 3.1 document in
//! `dataplane/openapi.json`. A test checks that every route in the source appears there
//! and that every documented operation is routed — add your routes to both.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

/// The OpenAPI document, as served.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(openapi))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
