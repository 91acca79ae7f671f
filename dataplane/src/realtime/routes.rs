//! `GET /ws`: Origin check, optional `?token=&appId=` authentication, upgrade.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

use super::session::{self, Realtime, auth_failure, check_token};
use super::settings::RealtimeSettings;
use crate::error::ApiError;
use crate::state::AppState;

/// The realtime routes with `settings` (from [`crate::config::Config::realtime`]; one
/// engine per call).
pub fn routes_with(settings: RealtimeSettings) -> Router<AppState> {
    let realtime = Arc::new(Realtime::new(settings));
    Router::new()
        .route("/ws", get(upgrade))
        .layer(Extension(realtime))
}

/// Initial read buffer of a socket, see [`upgrade`].
const READ_BUFFER_BYTES: usize = 1024;

#[derive(Debug, Deserialize)]
struct WsQuery {
    token: Option<String>,
    #[serde(rename = "appId")]
    app_id: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    Extension(realtime): Extension<Arc<Realtime>>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !origin_allowed(&headers, &state) {
        return ApiError::Forbidden("Origin not allowed.".into()).into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return ApiError::BadRequest("Expected a WebSocket upgrade.".into()).into_response();
        }
    };
    let pre = match query.token.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(token) => match check_token(&state, token, query.app_id.as_deref()).await {
            Ok(authed) => Some(authed),
            Err(error) => return query_auth_error(error).into_response(),
        },
    };
    let limit = realtime.settings.max_frame_bytes;
    // Small per-socket buffers: tungstenite's 128 KiB read buffer dominated idle memory.
    // Clients send small control frames (auth, subscribe); a larger one grows the buffer for
    // as long as it takes. Every read attempt zero-fills the buffer's free room, so its size
    // is also what each wake-up of an idle socket writes (1 KiB, not 4).
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| session::serve(socket, state, realtime, pre))
}

fn query_auth_error(error: ApiError) -> ApiError {
    match error {
        ApiError::BadRequest(_) => ApiError::BadRequest(auth_failure(&error).into()),
        other => other,
    }
}

/// Browsers always send `Origin`; other clients need not. Allowed: no Origin, the
/// instance's own origin, or one of the configured allowed origins (`*` allows any).
fn origin_allowed(headers: &HeaderMap, state: &AppState) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    let own = url::Url::parse(&state.config.public_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    origin == own
        || state
            .config
            .allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.trim_end_matches('/') == origin)
}
