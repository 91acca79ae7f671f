//! Every error answer in the JSON error shape.
//!
//! Handlers answer errors through [`ApiError`](crate::error::ApiError), but some answers
//! never reach a handler: axum's extractor rejections (a path segment that is not UTF-8
//! after percent-decoding, a query string that does not fit, a WebSocket request without
//! upgrade headers) are plain text. [`json_error_bodies`] rewrites any 4xx/5xx answer
//! that is not JSON into `{"error": "…"}` with the same status and headers.
//!
//! The message is the status's own (`Bad Request`, …); for a 4xx whose body is short plain
//! text (what axum's rejections say, naming the offending parameter) that text follows it.
//! A 5xx never shows its original body, and neither does anything that is not plain text
//! (an HTML page from some upstream, say), so no internals leak through this path.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use crate::error::INTERNAL_ERROR;

/// Longest plain-text body read to be shown (axum's rejections are far shorter).
const MAX_SHOWN_BYTES: usize = 512;

/// Middleware: rewrite non-JSON error answers into the JSON error shape (see the module
/// documentation).
pub async fn json_error_bodies(request: Request, next: Next) -> Response {
    let head = request.method() == Method::HEAD;
    let response = next.run(request).await;
    let status = response.status();
    if head || !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let plain_text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/plain")
        });
    let (mut parts, body) = response.into_parts();
    let detail = if status.is_client_error() && plain_text {
        axum::body::to_bytes(body, MAX_SHOWN_BYTES)
            .await
            .ok()
            .and_then(|bytes| shown(&bytes))
    } else {
        None
    };
    let message = if status.is_server_error() {
        INTERNAL_ERROR.to_string()
    } else {
        let reason = status.canonical_reason().unwrap_or("Error");
        match detail {
            Some(detail) => format!("{reason}: {detail}"),
            None => format!("{reason}."),
        }
    };
    let body = json!({ "error": message }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::json::is_json_media_type)
}

/// A plain-text body worth showing: UTF-8, one line of printable characters, not empty.
fn shown(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let printable = !text.is_empty() && !text.chars().any(char::is_control);
    printable.then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_printable_one_line_text_is_shown() {
        assert_eq!(
            shown(b"Invalid URL: bad value\n"),
            Some("Invalid URL: bad value".into())
        );
        assert_eq!(shown(b""), None);
        assert_eq!(shown(b"two\nlines"), None);
        assert_eq!(shown(&[0xff, 0xfe]), None);
    }
}
