//! App ids follow one rule on every route that takes one (`vibe_api::app_id`): 1 to 512
//! characters — counted as the OpenAPI document's `maxLength` counts them, not in bytes —
//! not only white space, no control character. Before, the server counted bytes (a
//! 300-character id of two-byte letters was refused although documented as valid), and a
//! device registration let control characters through to a 404 instead of a 400.

mod common;

use common::TestInstance;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn encoded(app_id: &str) -> String {
    url::form_urlencoded::byte_serialize(app_id.as_bytes()).collect()
}

async fn upsert(t: &TestInstance, owner: &str, app_id: &str) -> (StatusCode, Value) {
    t.post(
        "/api/v1/apps/upsert",
        Some(owner),
        None,
        json!({"appId": app_id, "name": "App", "permissions": ["sync"], "grants": {"sync": "always"}}),
    )
    .await
}

async fn token(t: &TestInstance, owner: &str, app_id: &str) -> (StatusCode, Value) {
    t.post(
        "/api/v1/apps/token",
        Some(owner),
        None,
        json!({"appId": app_id}),
    )
    .await
}

async fn status(t: &TestInstance, owner: &str, app_id: &str) -> (StatusCode, Value) {
    let path = format!("/api/v1/apps/status?appId={}", encoded(app_id));
    t.get(&path, Some(owner), None).await
}

async fn device(t: &TestInstance, owner: &str, app_id: &str) -> (StatusCode, Value) {
    t.post(
        "/api/v1/devices",
        Some(owner),
        None,
        json!({"name": "Phone", "appId": app_id}),
    )
    .await
}

#[tokio::test]
async fn the_longest_app_id_is_counted_in_characters() {
    let t = TestInstance::start().await;
    let owner = t.owner_token().await;
    // 512 characters of two bytes each (1,024 bytes) and of four bytes each.
    for longest in ["é".repeat(512), "🦀".repeat(512)] {
        let (code, body) = upsert(&t, &owner, &longest).await;
        assert!(code.is_success(), "{code} {body}");
        let (code, body) = token(&t, &owner, &longest).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let (code, body) = status(&t, &owner, &longest).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["isRegistered"], true);
        let (code, body) = device(&t, &owner, &longest).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
        assert_eq!(body["appId"].as_str(), Some(longest.as_str()));
    }
}

#[tokio::test]
async fn a_bad_app_id_is_a_400_on_every_route() {
    let t = TestInstance::start().await;
    let owner = t.owner_token().await;
    let too_long = "é".repeat(513);
    for bad in [
        too_long.as_str(),
        "a\u{1}b",
        "app\u{7f}",
        "x\u{85}",
        " \u{3000}",
    ] {
        for (route, (code, body)) in [
            ("upsert", upsert(&t, &owner, bad).await),
            ("token", token(&t, &owner, bad).await),
            ("status", status(&t, &owner, bad).await),
            ("device", device(&t, &owner, bad).await),
        ] {
            assert_eq!(code, StatusCode::BAD_REQUEST, "{route} {bad:?}: {body}");
            assert!(body["error"].is_string(), "{route}: {body}");
        }
    }
    let (code, body) = t.get("/api/v1/devices", Some(&owner), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["devices"], json!([]), "nothing was registered");
}
