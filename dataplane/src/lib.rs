//! `vibe-dataplane`: the per-tenant Vibe Cloud service (one instance serves one owner DID).
//!
//! # Layout
//! - [`config`]: `clap`/env configuration ([`config::Cli`] → [`config::Config`]).
//! - [`state`]: [`AppState`], the `Arc`-backed state every handler receives.
//! - [`error`]: [`ApiError`], the one error enum mapped to HTTP (`{error, details?}`);
//!   [`json_errors`] puts the answers no handler wrote (extractor rejections) in that shape.
//! - [`couch`]: the pooled CouchDB client ([`couch::CouchClient`], [`couch::Database`],
//!   `_changes` helpers).
//! - [`auth`]: owner login (challenge/login/refresh/logout), the owner claim, and the
//!   [`auth::Caller`] extractor with [`auth::Caller::require`] for grants.
//! - [`apps`]: app registrations and the in-memory grants cache.
//! - [`devices`]: device credentials for long-running sync.
//! - [`revocations`]: revoked refresh families, stored for restarts and other replicas.
//! - [`system_feed`]: follows the system database so the caches of apps, devices and
//!   revocations match what any replica stored.
//! - [`documents`]: document CRUD and reads with our own paging cursor.
//! - [`export`]: export of the whole instance as one archive, and import of one.
//! - [`console`]: the owner console page at `/console/` and the routes it needs.
//! - [`health`], [`openapi`].
//! - [`metrics`]: Prometheus metrics (own port) and the request-id, tracing and HTTP-metrics
//!   layers added once to the router ([`metrics::layer::instrument`]).
//! - [`server`]: the HTTP/1.1 server (connection timeouts, lingering close) and the
//!   middleware that keeps connections usable after answers that left a body unread.
//!
//! # Where features plug in
//! A feature (blobs, realtime, sync) lives in its own module `src/<feature>/` and exposes
//! `pub fn routes() -> axum::Router<AppState>`, merged in [`router`] with one line. Its
//! handlers take `State(state): State<AppState>` and a [`auth::Caller`] (or call
//! [`auth::authenticate`] for tokens that do not arrive in a header), check grants with
//! `caller.require("blob:write:<c>")?`, reach CouchDB through `state.data_db().await?`
//! (owner data) or `state.couch` (raw), and return `Result<_, ApiError>`. Feature state
//! (an S3 client, a realtime hub) is one field in [`state::StateInner`] initialised in
//! [`AppState::new`]; a backing service adds a [`state::ReadinessProbe`]; work the data
//! plane must do once before it serves belongs in [`startup`] as a step with its own error
//! (an embedder calls `AppState::new`, then [`startup::spawn`], then [`router`]). Routes must
//! also be described in `dataplane/openapi.json` (a test enforces it). Request bodies
//! are capped by `DefaultBodyLimit` (`VIBE_MAX_BODY_BYTES`); a streaming route overrides
//! it with its own `DefaultBodyLimit` layer.

pub mod access;
pub mod admission;
pub mod apps;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod console;
pub mod couch;
pub mod dbnames;
pub mod devices;
pub mod documents;
pub mod error;
pub mod export;
pub mod health;
pub mod json;
pub mod json_errors;
pub mod last_seen;
pub mod metrics;
pub mod openapi;
pub mod realtime;
pub mod revocations;
pub mod server;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod sync;
pub mod system_feed;

pub use error::{ApiError, ApiResult};
pub use state::AppState;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The complete HTTP application of one instance.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(health::routes())
        .merge(auth::routes())
        .merge(apps::routes())
        .merge(devices::routes())
        .merge(documents::routes())
        .merge(openapi::routes())
        .merge(blobs::routes())
        .merge(sync::routes())
        .merge(export::routes())
        .merge(console::routes())
        .merge(realtime::routes_with(state.config.realtime.clone()));

    let mut app = api
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.limits.max_body_bytes))
        .layer(axum::middleware::from_fn(json_errors::json_error_bodies));
    if let Some(cors) = cors_layer(&state.config.allowed_origins) {
        app = app.layer(cors);
    }
    let drain_limit = server::unread::DrainLimit(state.config.limits.max_body_bytes as u64);
    let app = app.layer(axum::middleware::from_fn_with_state(
        drain_limit,
        server::unread::settle_unread_body,
    ));
    metrics::layer::instrument(app, &state).with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not found.".into())
}

async fn method_not_allowed() -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(serde_json::json!({ "error": "Method not allowed." })),
    )
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static(auth::APP_ID_HEADER),
        ])
        .expose_headers([metrics::layer::REQUEST_ID_HEADER.clone()]);
    if origins.iter().any(|o| o == "*") {
        return Some(layer.allow_origin(AllowOrigin::any()));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(layer.allow_origin(AllowOrigin::list(list)))
}
