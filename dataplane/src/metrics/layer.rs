//! The router's observability layers, added in one place ([`instrument`]): a request id for
//! every request (kept from `x-request-id` when the caller sent a sane one, else a new
//! UUID), returned in `x-request-id`, recorded on the request's tracing span (so on every
//! log line of the request) and made available to the CouchDB and S3 clients
//! ([`current_request_id`]); and the HTTP request histogram by route template.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use super::{HttpLabels, method_label};
use crate::state::AppState;

/// The request id header, on requests, responses and calls to CouchDB and S3.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id accepted from a caller.
const MAX_REQUEST_ID_LEN: usize = 128;

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
}

/// The id of the request being served by the current task, if any.
pub fn current_request_id() -> Option<HeaderValue> {
    REQUEST_ID.try_with(HeaderValue::clone).ok()
}

/// Route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Add the request id, tracing and metrics layers to the finished router.
pub fn instrument(app: Router<AppState>, state: &AppState) -> Router<AppState> {
    app.layer(
        ServiceBuilder::new()
            .layer(middleware::map_request(drop_unusable_request_id))
            .layer(SetRequestIdLayer::new(
                REQUEST_ID_HEADER.clone(),
                MakeRequestUuid,
            ))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER.clone()))
            .layer(
                // Log the path only: query strings can carry tokens (WebSocket `?token=`).
                TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let id = request
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id = %id,
                    )
                }),
            )
            .layer(middleware::from_fn_with_state(state.clone(), track)),
    )
}

/// A caller's id is kept only when it is short and made of safe characters, so that it can
/// go into logs and upstream headers as it is.
async fn drop_unusable_request_id(mut request: Request) -> Request {
    let usable = request.headers().get(&REQUEST_ID_HEADER).is_some_and(|v| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    if !usable {
        request.headers_mut().remove(&REQUEST_ID_HEADER);
    }
    request
}

async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method().as_str()).to_owned();
    let id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.header_value().clone());
    let start = Instant::now();
    let response = match id {
        Some(id) => REQUEST_ID.scope(id, next.run(request)).await,
        None => next.run(request).await,
    };
    state
        .metrics
        .http
        .get_or_create(&HttpLabels {
            method,
            route,
            status: response.status().as_u16().to_string(),
        })
        .observe(start.elapsed().as_secs_f64());
    response
}
