//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document in `dataplane/openapi.json`.
//!
//! Its paths are written by hand; the schemas of request and answer bodies are generated
//! from `vibe-api`'s types ([`components`]; `cargo run -p vibe-dataplane --bin openapigen`
//! rewrites them, and a test fails while the file is stale). Tests check that every route
//! in the source appears there, that every documented operation is routed, that every
//! `$ref` resolves, and that every status the test suites see a route answer is documented
//! for it ([`documents_status`]) — add your routes and statuses to it.

pub mod components;

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use axum::Router;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::Value;

use crate::state::AppState;

/// The OpenAPI document, as served.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(openapi))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

/// The documented answers of one operation.
#[derive(Debug, Default)]
struct Answers {
    /// Exact status codes (`"404"`).
    exact: BTreeSet<u16>,
    /// Status ranges by first digit (`"4XX"`).
    ranges: BTreeSet<u16>,
    /// A `default` answer covers every status.
    default: bool,
}

/// (METHOD, route with parameter names erased) → documented answers.
static DOCUMENTED: LazyLock<HashMap<(String, String), Answers>> = LazyLock::new(|| {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
    let mut operations = HashMap::new();
    let Some(paths) = doc["paths"].as_object() else {
        return operations;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, operation) in item {
            let Some(responses) = operation["responses"].as_object() else {
                continue;
            };
            let mut answers = Answers::default();
            for code in responses.keys() {
                if code == "default" {
                    answers.default = true;
                } else if let Some(range) = code.strip_suffix("XX") {
                    answers.ranges.extend(range.parse::<u16>().ok());
                } else {
                    answers.exact.extend(code.parse::<u16>().ok());
                }
            }
            operations.insert((method.to_uppercase(), route_shape(path)), answers);
        }
    }
    operations
});

/// Whether the document lists `status` among the answers of `method` on `route`, a route
/// template as axum matched it (`/api/v1/data/{collection}/{id}`, `/api/v1/sync/{*rest}`);
/// parameter names don't matter. `HEAD` is answered by the `GET` operation. `None` when the
/// document has no such operation.
pub fn documents_status(method: &Method, route: &str, status: StatusCode) -> Option<bool> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let answers = DOCUMENTED.get(&(method.to_string(), route_shape(route)))?;
    let code = status.as_u16();
    Some(answers.default || answers.exact.contains(&code) || answers.ranges.contains(&(code / 100)))
}

/// A route with its parameter names erased (`/a/{x}/{*y}` → `/a/{}/{}`): Rust and OpenAPI
/// name parameters differently (`object_key` / `objectKey`).
pub fn route_shape(route: &str) -> String {
    let mut out = String::with_capacity(route.len());
    let mut in_param = false;
    for c in route.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_looked_up_by_route_shape() {
        let get = Method::GET;
        assert_eq!(
            documents_status(&get, "/api/v1/data/{c}/{id}", StatusCode::OK),
            Some(true)
        );
        assert_eq!(
            documents_status(
                &Method::HEAD,
                "/api/v1/data/{collection}/{id}",
                StatusCode::OK
            ),
            Some(true)
        );
        assert_eq!(
            documents_status(&get, "/api/v1/data/{c}/{id}", StatusCode::IM_A_TEAPOT),
            Some(false)
        );
        assert_eq!(
            documents_status(&get, "/api/v1/nowhere", StatusCode::OK),
            None
        );
        assert_eq!(
            documents_status(&Method::PATCH, "/api/v1/data/{c}/{id}", StatusCode::OK),
            None
        );
    }
}
