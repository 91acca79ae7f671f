//! The owner console (issue 19): a small web page every instance serves at `/console/`,
//! for the owner only, and the routes it needs beyond the existing owner API.
//!
//! # Signing in without giving the page a key
//! `vibe console` signs in with the owner's key like any `vibe` command, then asks
//! `POST /api/v1/console/code` for a one-time code ([`codes`]: single use, 2 minutes by
//! default, bound to this instance and owner) and opens
//! `https://<instance>/console/#code=<code>`. The fragment never reaches a server or its
//! logs. The page removes it from the address bar and exchanges it at
//! `POST /api/v1/console/session` for an owner session: a new refresh family marked
//! `console`, answered as tokens the page keeps **in memory only** (no cookie, no storage).
//! Every later request carries `Authorization: Bearer`, so the browser attaches nothing
//! by itself to a request another site makes: there is no ambient credential to forge a
//! request with (no CSRF), and a reload or a closed tab ends the page's session. Logout is
//! the ordinary `POST /api/v1/auth/logout`; "log out everywhere" revokes every family.
//!
//! # Routes
//! Owner itself only (no app tokens, no `X-Vibe-App-ID`): the code, overview, sessions,
//! collections and documents (read-only), blobs (list, download, delete). The page also
//! uses `/api/v1/apps*`, `/api/v1/devices*`, `/api/v1/auth/*` and `/api/v1/export`.
//! [`assets`]: the page's files, embedded in the binary, with a strict CSP.

mod assets;
pub mod codes;
mod routes;

pub use assets::CONTENT_SECURITY_POLICY;
pub(crate) use routes::owner_itself;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(assets::redirect))
        .route("/console/", get(assets::index))
        .route("/console/{file}", get(assets::file))
        .route("/api/v1/console/code", post(routes::mint_code))
        .route("/api/v1/console/session", post(routes::exchange))
        .route("/api/v1/console/overview", get(routes::overview))
        .route("/api/v1/console/sessions", get(routes::sessions))
        .route(
            "/api/v1/console/sessions/logout-all",
            post(routes::logout_all),
        )
        .route("/api/v1/console/collections", get(routes::collections))
        .route(
            "/api/v1/console/collections/{collection}/documents",
            get(routes::documents),
        )
        .route(
            "/api/v1/console/collections/{collection}/documents/{*rest}",
            get(routes::document),
        )
        .route("/api/v1/console/blobs", get(routes::blobs))
        .route(
            "/api/v1/console/blobs/content/{*objectKey}",
            get(routes::blob_content),
        )
        .route(
            "/api/v1/console/blobs/{*objectKey}",
            axum::routing::delete(routes::delete_blob),
        )
}
