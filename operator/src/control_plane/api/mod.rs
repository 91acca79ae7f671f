//! The control plane HTTP API the Vibe Agent talks to: registration and login, the identity
//! registry, admin and instance-owner claims. Routes, JSON shapes and error strings follow the
//! original TypeScript control plane (`/api/v1/auth`, `/api/v1/identities`,
//! `/api/v1/admin/claim`); what changed is documented on each handler.

pub mod auth;
pub mod claims;
pub mod error;
pub mod identities;
pub mod model;
pub mod ratelimit;
pub mod signed;
pub mod tokens;

use super::registry::Registry;
use axum::extract::{DefaultBodyLimit, FromRequest};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use error::ApiError;
use ratelimit::RateLimiter;
use serde_json::json;
use std::sync::Arc;
use tokens::Tokens;

/// Largest request body the control plane reads.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Who may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RegistrationPolicy {
    /// Anyone with a DID.
    Open,
    /// Only with a valid claim code (invite or admin).
    #[default]
    InviteOnly,
    /// Nobody new (existing identities may still sign in).
    Closed,
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct ControlPlane {
    /// The registry in the Kubernetes API.
    pub registry: Registry,
    /// Token minting and checking.
    pub tokens: Arc<Tokens>,
    /// Who may register.
    pub policy: RegistrationPolicy,
    /// Accepted distance between a signed timestamp and our clock.
    pub clock_skew: chrono::Duration,
}

/// JSON body extractor whose rejections are [`ApiError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// The control plane's routes. Serve with `into_make_service_with_connect_info::<SocketAddr>()`
/// so rate limits see client addresses.
pub fn router(state: ControlPlane, limiter: Arc<RateLimiter>) -> Router {
    let limited = Router::new()
        .route("/api/v1/auth/register", post(auth::register))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/refresh", post(auth::refresh))
        .route("/api/v1/admin/claim", post(claims::admin_claim))
        .route("/api/v1/instances/claim", post(claims::instance_claim))
        .route("/api/v1/identities/{did}/status", get(identities::status))
        .route_layer(middleware::from_fn_with_state(limiter, ratelimit::limit));
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/identities", get(identities::list))
        .route("/api/v1/identities/", get(identities::list))
        .route(
            "/api/v1/identities/{did}",
            get(identities::get_one)
                .put(identities::update)
                .delete(identities::delete),
        )
        .merge(limited)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(
        json!({ "status": "ok", "service": "control-plane", "version": env!("CARGO_PKG_VERSION") }),
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("NOT_FOUND")
}
