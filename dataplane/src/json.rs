//! The strict JSON body extractor.
//!
//! [`StrictJson<T>`] requires a JSON `Content-Type` (else 415, see [`require_json`]), reads
//! the body (bounded by the router's `DefaultBodyLimit`, over → 413), refuses JSON objects
//! with duplicate keys (which CouchDB and other parsers resolve differently) and bodies
//! that are not a JSON object, then reads the object as a `T` through
//! [`vibe_api::json::from_value`]: request types in `vibe-api` refuse unknown fields, and a
//! body of the wrong shape answers `400 {"error":"Validation failed","details":…}` naming
//! the field at fault. `T` defaults to `serde_json::Value` for handlers that still read
//! fields by hand.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;
use vibe_api::json::BodyError;

use crate::error::ApiError;
use crate::state::AppState;

/// The 400 message of a body that is not JSON (kept from the original API).
pub const PARSE_ERROR: &str = "Failed to parse request body.";

/// The 400 details of a JSON body that is not an object.
pub const NOT_AN_OBJECT: &str = "Body must be a JSON object.";

/// A JSON request body: an object without duplicate keys, read as a `T`.
#[derive(Debug, Clone)]
pub struct StrictJson<T = Value>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        require_json(req.headers())?;
        refuse_declared_oversize(req.headers(), state.config.limits.max_body_bytes)?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::BadRequest(PARSE_ERROR.into())
            }
        })?;
        parse_body(&bytes).map(StrictJson)
    }
}

/// Parse a request body as a `T`: strict JSON (see [`parse_strict`]), an object, of
/// `T`'s shape.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = parse_strict(bytes)?;
    if !value.is_object() {
        return Err(ApiError::Validation(NOT_AN_OBJECT.into()));
    }
    vibe_api::json::from_value(value).map_err(body_error)
}

fn body_error(error: BodyError) -> ApiError {
    match error {
        BodyError::DuplicateKey(message) | BodyError::Invalid(message) => {
            ApiError::Validation(message)
        }
        BodyError::NotJson => ApiError::BadRequest(PARSE_ERROR.into()),
    }
}

/// The 415 message of a body that is not declared as JSON.
pub const NOT_JSON_MEDIA_TYPE: &str =
    "Unsupported Media Type: the request body must be sent as 'Content-Type: application/json'.";

/// 415 unless the request declares a JSON body: `application/json` or a structured
/// `application/…+json` type, parameters (`charset`) allowed. `text/plain`, forms and a
/// missing `Content-Type` are refused: they are what a browser may send cross-origin
/// without a CORS preflight, so accepting them would let any web page post JSON with
/// credentials the browser attaches by itself (HTTP Basic on sync). PouchDB, CouchDB's
/// replicator, reqwest's `.json()` and the `vibe` CLI all send `application/json`.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if is_json_media_type(declared) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(NOT_JSON_MEDIA_TYPE.into()))
    }
}

/// Whether a `Content-Type` value names JSON.
pub fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge("Request body is too large.".into())
}

/// 413 for a body whose declared `Content-Length` is over `limit`, before any of it is
/// read: a client that sent `Expect: 100-continue` then gets its answer at once instead
/// of an invitation to upload.
pub fn refuse_declared_oversize(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => Err(too_large()),
        _ => Ok(()),
    }
}

/// Parse JSON, refusing duplicate object keys.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, ApiError> {
    vibe_api::json::parse_value(bytes).map_err(body_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_normal_json() {
        let v = parse_strict(br#"{"a":[1,2.5,"x",null,true,{"b":{}}]}"#).unwrap();
        assert_eq!(v["a"][1], 2.5);
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        for body in [&br#"{"a":1,"a":2}"#[..], br#"{"x":[{"b":1,"b":1}]}"#] {
            match parse_strict(body) {
                Err(ApiError::Validation(details)) => assert!(details.contains("Duplicate key")),
                other => panic!("expected validation error, got {other:?}"),
            }
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
    }

    fn details(result: Result<Body, ApiError>) -> String {
        match result {
            Err(ApiError::Validation(details)) => details,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn typed_bodies_are_objects_of_their_shape() {
        assert_eq!(parse_body::<Body>(br#"{"name":"x"}"#).unwrap().name, "x");
        // A struct would read an array positionally; the API's bodies are objects.
        assert_eq!(details(parse_body(br#"["x"]"#)), NOT_AN_OBJECT);
        assert_eq!(details(parse_body(br#""x""#)), NOT_AN_OBJECT);
        assert_eq!(
            details(parse_body(br#"{"name":"x","admin":true}"#)),
            "Unknown field 'admin'."
        );
        assert_eq!(details(parse_body(br#"{}"#)), "'name' is required.");
        assert!(details(parse_body(br#"{"name":"x","name":"y"}"#)).contains("Duplicate key"));
        assert!(matches!(
            parse_body::<Body>(b"{"),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn only_json_media_types_pass() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for refused in [
            "",
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "json",
            "text/json+json",
        ] {
            assert!(!is_json_media_type(refused), "{refused}");
        }
        let mut headers = HeaderMap::new();
        assert!(matches!(
            require_json(&headers),
            Err(ApiError::UnsupportedMediaType(_))
        ));
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(require_json(&headers).is_ok());
    }

    #[test]
    fn refuses_garbage_and_trailing_data() {
        assert!(matches!(parse_strict(b"{"), Err(ApiError::BadRequest(_))));
        assert!(matches!(
            parse_strict(b"{} {}"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(parse_strict(b""), Err(ApiError::BadRequest(_))));
    }
}
