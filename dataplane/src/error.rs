//! The one error type of the data plane's HTTP boundary.
//!
//! Every handler returns `Result<_, ApiError>`. Each variant maps to exactly one status
//! code and a JSON body `{"error": "...", "details"?: ...}`. Messages in variants are shown
//! to clients, so they must never contain internals, secrets or tokens; internal causes
//! are logged where the error is created (see [`ApiError::internal`]).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::couch::CouchError;

/// The message clients see when CouchDB cannot be reached (kept from the original API).
pub const DATABASE_UNAVAILABLE: &str = "Database service is not available.";
/// The message clients see for any unexpected failure (kept from the original API).
pub const INTERNAL_ERROR: &str = "An internal server error occurred.";
/// The original's 401 for a missing, malformed, expired or foreign bearer token.
pub const UNAUTHORIZED_TOKEN: &str = "Unauthorized: Invalid or missing user token.";

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with a plain message, e.g. `Bad Request: Missing X-Vibe-App-ID header.`
    #[error("{0}")]
    BadRequest(String),
    /// 400 `{"error":"Validation failed","details":…}` for a body that does not fit the schema.
    #[error("Validation failed: {0}")]
    Validation(String),
    /// 401: no, bad, expired or foreign credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed (missing grant, wrong identity, app mismatch).
    #[error("{0}")]
    Forbidden(String),
    /// 404 with a message naming what was not found.
    #[error("{0}")]
    NotFound(String),
    /// 409 with a message, e.g. `Revision conflict`.
    #[error("{0}")]
    Conflict(String),
    /// 409 `{"error": …, "code": "restore_pending"}`: a write before the instance's restore
    /// from a backup has ended ([`crate::export::restore`]).
    #[error("{0}")]
    RestorePending(String),
    /// 413: body or declared size over a configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: a body in a media type the route does not take (e.g. JSON sent as
    /// `text/plain` or a form).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: too many requests of a kind (e.g. unauthenticated login attempts).
    #[error("{0}")]
    TooManyRequests(String),
    /// 503: a backing service (CouchDB, S3) is down; the message names which, e.g.
    /// [`DATABASE_UNAVAILABLE`].
    #[error("{0}")]
    Unavailable(String),
    /// 500 [`INTERNAL_ERROR`]; the cause was already logged and is not shown.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// Log `cause` (never shown to the client) and return [`ApiError::Internal`].
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::Internal
    }

    /// The 403 the original API answers when an app lacks a grant.
    pub fn missing_permission(permission: &str) -> Self {
        ApiError::Forbidden(format!(
            "Forbidden: Application does not have permission '{permission}' for this user."
        ))
    }

    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::RestorePending(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Value {
        match self {
            ApiError::Validation(details) => {
                json!({ "error": "Validation failed", "details": details })
            }
            // The original answered a stale revision with the message twice.
            ApiError::Conflict(message) if message == "Revision conflict" => {
                json!({ "error": message, "details": message })
            }
            ApiError::Internal => json!({ "error": INTERNAL_ERROR }),
            ApiError::RestorePending(message) => json!({
                "error": message,
                "code": crate::export::restore::PENDING_CODE,
            }),
            other => json!({ "error": other.to_string() }),
        }
    }
}

/// `Retry-After` of a 429, in seconds: the auth throttle refills many tokens per second,
/// so one second is always enough for the next attempt.
pub const RETRY_AFTER_SECONDS: u64 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::TooManyRequests(_)) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

impl From<CouchError> for ApiError {
    fn from(error: CouchError) -> Self {
        match error {
            CouchError::Unavailable(cause) => {
                tracing::warn!(%cause, "CouchDB unavailable");
                ApiError::Unavailable(DATABASE_UNAVAILABLE.to_string())
            }
            CouchError::Conflict => ApiError::Conflict("Revision conflict".to_string()),
            CouchError::NotFound { .. } => ApiError::NotFound("Resource not found.".to_string()),
            other => ApiError::internal(other),
        }
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;
