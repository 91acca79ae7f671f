//! Keeps `dataplane/openapi.json` honest: every route declared in the source is documented,
//! and every documented operation is routed by the real router.

use std::collections::BTreeSet;
use std::path::Path;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;
use vibe_dataplane::config::Config;
use vibe_dataplane::couch::CouchSettings;
use vibe_dataplane::openapi::OPENAPI_JSON;
use vibe_dataplane::{AppState, router};

fn documented() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                ops.insert((method.to_uppercase(), openapi_path(path)));
            }
        }
    }
    ops
}

/// `.route("/path", get(a).post(b))` calls in the crate's source, as (METHOD, OpenAPI path).
fn routed_in_source() -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                for call in route_calls(&text) {
                    found.extend(call);
                }
            }
        }
    }
    found
}

fn route_calls(text: &str) -> Vec<Vec<(String, String)>> {
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(".route(") {
        let after = &rest[start + ".route(".len()..];
        // The argument list, up to the matching parenthesis.
        let mut depth = 1;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let args = &after[..end];
        if let Some(path) = args.split('"').nth(1) {
            let path = openapi_path(path);
            let mut ops = Vec::new();
            for method in ["get", "post", "put", "delete", "patch"] {
                let bare = format!("{method}(");
                let chained = format!(".{method}(");
                let used = args.match_indices(&bare).any(|(i, _)| {
                    i == 0 || !args[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                }) || args.contains(&chained);
                if used {
                    ops.push((method.to_uppercase(), path.clone()));
                }
            }
            assert!(
                !ops.is_empty(),
                "cannot tell the methods of route {path}: {args}"
            );
            calls.push(ops);
        }
        rest = &after[end..];
    }
    calls
}

/// A path with its parameter names erased (`/a/{x}/{*y}` → `/a/{}/{}`): Rust and OpenAPI
/// may name parameters differently (`object_key` / `objectKey`).
fn openapi_path(path: &str) -> String {
    vibe_dataplane::openapi::route_shape(path)
}

#[test]
fn every_routed_operation_is_documented() {
    let documented = documented();
    let routed = routed_in_source();
    assert!(
        routed.len() >= 15,
        "the source scan found too little: {routed:?}"
    );
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from openapi.json: {missing:?}"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_served() {
    let couch = CouchSettings {
        // Nothing listens there: handlers that need CouchDB answer 503, never 404/405.
        url: "http://127.0.0.1:9".parse().unwrap(),
        user: None,
        password: None,
    };
    let config = Config::new(
        "http://dataplane.test",
        couch,
        vibe_identity::Keypair::generate(),
    );
    let state = AppState::new(config).unwrap();
    vibe_dataplane::startup::spawn(&state);
    let app = router(state);
    for (method, path) in documented() {
        // Every parameter becomes a plausible value (a collection name fits all of them).
        let concrete = path.replace("{}", "notes");
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(&concrete)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is not routed"
        );
        assert!(
            !(status == StatusCode::NOT_FOUND && body["error"] == "Not found."),
            "{method} {path} is not routed"
        );
    }
    // The document itself is served.
    let response = app
        .oneshot(
            Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Names of the functions in the crate's source that call the auth throttle
/// (`….throttle()?`), i.e. the handlers that can answer 429.
fn throttled_handlers() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                for (at, _) in text.match_indices(".throttle()?") {
                    let before = &text[..at];
                    let name_start = before.rfind("fn ").expect("inside a function") + 3;
                    let name: String = before[name_start..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    found.insert(name);
                }
            }
        }
    }
    found
}

/// (METHOD, OpenAPI path) of every route whose handler is one of `handlers`.
fn routes_of(handlers: &BTreeSet<String>) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                for line in text.lines().filter(|l| l.contains(".route(\"")) {
                    let Some(route_path) = line.split('"').nth(1) else {
                        continue;
                    };
                    for method in ["get", "post", "put", "delete", "patch"] {
                        for (at, _) in line.match_indices(&format!("{method}(")) {
                            let handler: String = line[at + method.len() + 1..]
                                .chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                                .collect();
                            let handler = handler.rsplit("::").next().unwrap_or_default();
                            if handlers.contains(handler) {
                                found.insert((method.to_uppercase(), openapi_path(route_path)));
                            }
                        }
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_throttled_operation_documents_429() {
    let handlers = throttled_handlers();
    let throttled = routes_of(&handlers);
    assert!(
        throttled.len() >= 3,
        "the source scan found too few throttled routes: {handlers:?} → {throttled:?}"
    );
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let key = (method.to_uppercase(), openapi_path(path));
            if throttled.contains(&key) {
                let answer = &operation["responses"]["429"];
                if answer["content"]["application/json"].is_null()
                    || answer["headers"]["Retry-After"].is_null()
                {
                    missing.push(key);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "throttled operations without a documented 429 (JSON body and Retry-After): {missing:?}"
    );
}

#[tokio::test]
async fn the_documented_429_is_what_a_flood_gets() {
    let couch = CouchSettings {
        // Nothing listens there: each call is answered at once (503) after the throttle.
        url: "http://127.0.0.1:9".parse().unwrap(),
        user: None,
        password: None,
    };
    let config = Config::new(
        "http://dataplane.test",
        couch,
        vibe_identity::Keypair::generate(),
    );
    let state = AppState::new(config).unwrap();
    vibe_dataplane::startup::spawn(&state);
    let app = router(state);
    for _ in 0..100_000 {
        let response = app
            .clone()
            .oneshot(
                Request::post("/api/v1/auth/challenge")
                    .header("content-type", "application/json")
                    .body(Body::from("{}"))
                    .unwrap(),
            )
            .await
            .unwrap();
        if response.status() != StatusCode::TOO_MANY_REQUESTS {
            continue;
        }
        assert_eq!(
            response.headers()["retry-after"],
            vibe_dataplane::error::RETRY_AFTER_SECONDS.to_string()
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("Too many"),
            "{body}"
        );
        return;
    }
    panic!("no 429 after 100,000 challenges");
}

/// The schemas generated from `vibe-api`'s types are the ones in the committed document.
#[test]
fn the_generated_schemas_are_up_to_date() {
    let spliced = vibe_dataplane::openapi::components::splice(OPENAPI_JSON).expect("splice");
    assert!(
        spliced == OPENAPI_JSON,
        "dataplane/openapi.json is stale: run `cargo run -p vibe-dataplane --bin openapigen`"
    );
}

/// Every `$ref` of the document names a schema it has (a renamed type would leave paths
/// pointing at nothing).
#[test]
fn every_reference_resolves() {
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(target)) => out.push(target),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let doc: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 40, "{} references", found.len());
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{target} is not a component schema"));
        assert!(schemas.contains_key(name), "{target} does not resolve");
    }
}

/// Every request body and every JSON answer of a success names a generated schema or is
/// written inline on purpose (the few below).
#[test]
fn json_bodies_use_the_generated_schemas() {
    let generated = vibe_dataplane::openapi::components::generated();
    let doc: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
    // Inline on purpose: no type describes them (health, the document itself, raw documents,
    // CouchDB's bulk answers, the device registration's one-time secret, …).
    let inline: BTreeSet<(&str, &str, &str)> = [
        ("get", "/health", "200"),
        ("get", "/ready", "200"),
        ("get", "/api/v1/openapi.json", "200"),
        ("post", "/api/v1/devices", "201"),
        ("post", "/api/v1/data/write", "200"),
        ("post", "/api/v1/data/write", "207"),
        ("get", "/api/v1/data/{collection}/{id}", "200"),
        ("get", "/api/v1/blob/download-url/{objectKey}", "200"),
        ("get", "/api/v1/blob", "200"),
        (
            "get",
            "/api/v1/console/collections/{collection}/documents/{rest}",
            "200",
        ),
    ]
    .into_iter()
    .collect();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let mut bodies = Vec::new();
            if let Some(body) =
                operation["requestBody"]["content"]["application/json"].get("schema")
            {
                bodies.push(("request", body));
            }
            for (code, answer) in operation["responses"].as_object().into_iter().flatten() {
                if !code.starts_with('2') {
                    continue;
                }
                if let Some(body) = answer["content"]["application/json"].get("schema")
                    && !inline.contains(&(method.as_str(), path.as_str(), code.as_str()))
                {
                    bodies.push((code.as_str(), body));
                }
            }
            for (which, body) in bodies {
                let name = body["$ref"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    .unwrap_or_else(|| panic!("{method} {path} {which}: an inline schema"));
                assert!(
                    generated.contains_key(name),
                    "{method} {path} {which}: {name} is not generated"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "{checked} bodies checked");
}
