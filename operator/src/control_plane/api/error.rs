//! The control plane's one error type, mapped once to HTTP: `{"error": "<message>"}` with the
//! original control plane's messages. Internal failures are logged with their cause and
//! answered with a fixed message — their details never reach the client.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::borrow::Cow;

/// Everything a control plane handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A client error with its status and message.
    #[error("{message}")]
    Client {
        /// HTTP status.
        status: StatusCode,
        /// Message for the client.
        message: Cow<'static, str>,
    },
    /// The body is not the expected JSON.
    #[error("Validation failed")]
    Validation(String),
    /// Too many requests from this address.
    #[error("Too many requests. Please try again later.")]
    RateLimited {
        /// Seconds until a request will be accepted.
        retry_after_seconds: u64,
    },
    /// Something broke inside; `public` is all the client sees.
    #[error("{public}")]
    Internal {
        /// The client-facing message (e.g. `Registration failed.`).
        public: &'static str,
        /// The cause, for the log only.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApiError {
    /// A client error.
    pub fn client(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::Client {
            status,
            message: message.into(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::client(StatusCode::UNAUTHORIZED, message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::client(StatusCode::FORBIDDEN, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::client(StatusCode::NOT_FOUND, message)
    }

    /// A 500 answered with `public`, logging `source`.
    pub fn internal(
        public: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ApiError::Internal {
            public,
            source: Box::new(source),
        }
    }

    /// Wraps a fallible registry call: its error becomes a 500 with `public`.
    pub fn or_internal<E: std::error::Error + Send + Sync + 'static>(
        public: &'static str,
    ) -> impl FnOnce(E) -> ApiError {
        move |err| ApiError::internal(public, err)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(err) => ApiError::Validation(err.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::Validation(
                "Expected a request with Content-Type: application/json".into(),
            ),
            JsonRejection::BytesRejection(rejection)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::client(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large.")
            }
            _ => ApiError::bad_request("Failed to parse request body."),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            ApiError::Client { message, .. } => {
                (status, Json(json!({ "error": message }))).into_response()
            }
            ApiError::Validation(details) => (
                status,
                Json(json!({ "error": "Validation failed", "details": details })),
            )
                .into_response(),
            ApiError::RateLimited {
                retry_after_seconds,
            } => {
                let mut response = (
                    status,
                    Json(json!({ "error": "Too many requests. Please try again later." })),
                )
                    .into_response();
                if let Ok(value) = HeaderValue::from_str(&retry_after_seconds.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                response
            }
            ApiError::Internal { public, source } => {
                tracing::error!(error = %source, "{public}");
                (status, Json(json!({ "error": public }))).into_response()
            }
        }
    }
}
