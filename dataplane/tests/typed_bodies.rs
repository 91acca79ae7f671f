//! Request bodies are read as the `vibe-api` types (`StrictJson<T>`): a field the type does
//! not know is refused with 400 naming it, on every route, before anything else happens —
//! also on the routes that used to pick their fields out of the body and ignore the rest
//! (login, refresh, logout, claim, app token) — and a body must be a JSON object.

mod common;

use common::TestInstance;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn unknown_fields_are_refused_on_every_typed_body() {
    let t = TestInstance::start().await;
    let owner = t.owner_token().await;
    let cases = [
        (
            "/api/v1/auth/login",
            None,
            json!({"did": "d", "nonce": "n", "timestamp": "t", "signature": "s", "extra": 1}),
        ),
        (
            "/api/v1/auth/refresh",
            None,
            json!({"refreshToken": "r", "extra": 1}),
        ),
        (
            "/api/v1/auth/logout",
            Some(owner.as_str()),
            json!({"refreshToken": "r", "extra": 1}),
        ),
        (
            "/api/v1/admin/claim",
            None,
            json!({"did": "d", "claimCode": "c", "signature": "s", "extra": 1}),
        ),
        (
            "/api/v1/apps/token",
            Some(owner.as_str()),
            json!({"appId": "https://app.example", "extra": 1}),
        ),
        (
            "/api/v1/apps/upsert",
            Some(owner.as_str()),
            json!({"appId": "https://app.example", "name": "App", "permissions": [], "extra": 1}),
        ),
        (
            "/api/v1/apps/grant",
            Some(owner.as_str()),
            json!({"appId": "https://app.example", "permission": "sync", "setting": "always", "extra": 1}),
        ),
    ];
    for (path, token, body) in cases {
        let (status, answer) = t.post(path, token, None, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert_eq!(answer["error"], "Validation failed", "{path}: {answer}");
        assert_eq!(
            answer["details"], "Unknown field 'extra'.",
            "{path}: {answer}"
        );
    }
    // The app was not registered by the refused upsert.
    let (status, answer) = t
        .get(
            "/api/v1/apps/status?appId=https%3A%2F%2Fapp.example",
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["isRegistered"], false, "{answer}");
}

#[tokio::test]
async fn bodies_are_objects_and_name_the_missing_field() {
    let t = TestInstance::start().await;
    // A typed body would read an array positionally; the API takes objects only.
    let (status, answer) = t
        .post("/api/v1/auth/refresh", None, None, json!(["r"]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["details"], "Body must be a JSON object.", "{answer}");
    let (status, answer) = t.post("/api/v1/auth/refresh", None, None, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"], "Validation failed", "{answer}");
    assert_eq!(answer["details"], "'refreshToken' is required.", "{answer}");
    // A field of the wrong type is named with its path.
    let (status, answer) = t
        .post(
            "/api/v1/auth/refresh",
            None,
            None,
            json!({"refreshToken": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let details = answer["details"].as_str().unwrap_or_default();
    assert!(
        details.starts_with("'refreshToken': invalid type"),
        "{answer}"
    );
}
