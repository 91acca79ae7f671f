//! Device credentials (issue 15, item 8): registration, Basic auth on the sync endpoint,
//! listing, revocation ending open feeds within a second, and app-bound devices dying
//! with their app registration.

mod common;

use std::time::{Duration, Instant};

use common::TestInstance;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP: &str = "https://notes.example";

async fn register(instance: &TestInstance, owner: &str, body: Value) -> (StatusCode, Value) {
    instance
        .post("/api/v1/devices", Some(owner), None, body)
        .await
}

fn basic(device: &Value) -> (String, String) {
    (
        device["credentials"]["username"]
            .as_str()
            .unwrap()
            .to_string(),
        device["credentials"]["password"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

async fn sync_get(
    instance: &TestInstance,
    (user, password): &(String, String),
    path: &str,
) -> StatusCode {
    instance
        .http
        .get(instance.url(&format!("/api/v1/sync/{path}")))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_registered_device_syncs_with_its_secret_until_revoked() {
    let instance = TestInstance::start().await;
    let owner = instance.owner_token().await;
    let (status, device) = register(&instance, &owner, json!({"name": "Phone"})).await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    assert_eq!(device["scopes"], json!(["sync"]));
    assert!(
        device["syncUrl"]
            .as_str()
            .unwrap()
            .ends_with("/api/v1/sync/")
    );
    let credentials = basic(&device);
    assert_eq!(sync_get(&instance, &credentials, "").await, StatusCode::OK);
    assert_eq!(
        sync_get(&instance, &credentials, "_changes").await,
        StatusCode::OK
    );

    // A wrong secret, another device id, or the credentials elsewhere: refused.
    let wrong = (credentials.0.clone(), "not-the-secret".to_string());
    assert_eq!(
        sync_get(&instance, &wrong, "").await,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = instance
        .post(
            "/api/v1/data/read",
            Some(&credentials.1),
            Some(APP),
            json!({"collection": "notes"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Listed without its secret.
    let (status, list) = instance.get("/api/v1/devices", Some(&owner), None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["devices"][0]["deviceId"], device["deviceId"]);
    assert_eq!(list["devices"][0]["name"], "Phone");
    assert!(!list.to_string().contains(&credentials.1));

    // Revocation ends an open continuous feed within a second.
    let feed = instance
        .http
        .get(instance.url("/api/v1/sync/_changes?feed=continuous&since=now"))
        .basic_auth(&credentials.0, Some(&credentials.1))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    let mut stream = feed.bytes_stream();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let path = format!("/api/v1/devices/{}", credentials.0);
    let (status, _) = instance
        .call(Method::DELETE, &path, Some(&owner), None, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the feed ends")
    {
        chunk.expect("clean end");
    }
    let elapsed = started.elapsed();
    eprintln!("device feed ended {elapsed:?} after revocation");
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(
        sync_get(&instance, &credentials, "").await,
        StatusCode::UNAUTHORIZED
    );
    let (status, list) = instance.get("/api/v1/devices", Some(&owner), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["devices"], json!([]));
    let (status, _) = instance
        .call(Method::DELETE, &path, Some(&owner), None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Registered devices survive a restart (stored, hashed).
    let (_, device) = register(&instance, &owner, json!({"name": "Laptop"})).await;
    let credentials = basic(&device);
    let mut instance = instance;
    instance.restart(|_| {}).await;
    assert_eq!(sync_get(&instance, &credentials, "").await, StatusCode::OK);
}

#[tokio::test]
async fn app_devices_need_the_grant_and_die_with_the_registration() {
    let instance = TestInstance::start().await;
    let owner = instance.owner_token().await;
    let (status, _) = register(&instance, &owner, json!({"name": "x", "appId": APP})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unregistered app");
    instance
        .upsert_app(&owner, APP, &[("sync", "always")])
        .await;
    let (status, device) =
        register(&instance, &owner, json!({"name": "Tablet", "appId": APP})).await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    let credentials = basic(&device);
    assert_eq!(sync_get(&instance, &credentials, "").await, StatusCode::OK);

    // Without the app's sync grant: 403; with it again: fine.
    instance.upsert_app(&owner, APP, &[("sync", "never")]).await;
    assert_eq!(
        sync_get(&instance, &credentials, "").await,
        StatusCode::FORBIDDEN
    );
    instance
        .upsert_app(&owner, APP, &[("sync", "always")])
        .await;
    assert_eq!(sync_get(&instance, &credentials, "").await, StatusCode::OK);

    // A device without the sync scope cannot sync.
    let (_, narrow) = register(
        &instance,
        &owner,
        json!({"name": "Reader", "appId": APP, "scopes": ["read:notes"]}),
    )
    .await;
    assert_eq!(
        sync_get(&instance, &basic(&narrow), "").await,
        StatusCode::FORBIDDEN
    );

    // The app deleted and registered again: the device is dead.
    let path = format!(
        "/api/v1/apps/{}",
        url::form_urlencoded::byte_serialize(APP.as_bytes()).collect::<String>()
    );
    let (status, _) = instance
        .call(Method::DELETE, &path, Some(&owner), None, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    instance
        .upsert_app(&owner, APP, &[("sync", "always")])
        .await;
    assert_eq!(
        sync_get(&instance, &credentials, "").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn only_the_owner_manages_devices() {
    let instance = TestInstance::start().await;
    let owner = instance.owner_token().await;
    instance
        .upsert_app(&owner, APP, &[("sync", "always")])
        .await;
    let (_, token) = instance
        .post(
            "/api/v1/apps/token",
            Some(&owner),
            None,
            json!({"appId": APP}),
        )
        .await;
    let app_token = token["accessToken"].as_str().unwrap();
    let (status, _) = register(&instance, app_token, json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = instance.get("/api/v1/devices", Some(app_token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = instance.get("/api/v1/devices", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["delete:everything"]}),
        json!({"name": "x", "extra": 1}),
    ] {
        let (status, body) = register(&instance, &owner, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} {body}");
    }
}

/// A device name is what the OpenAPI document says: 1 to 256 characters (not bytes) with
/// at least one that is not white space. Schemathesis' stateful run sent `"\n"`, which the
/// document allowed and the server refused.
#[tokio::test]
async fn device_names_are_bounded_as_documented() {
    let instance = TestInstance::start().await;
    let owner = instance.owner_token().await;
    let doc: Value = serde_json::from_str(vibe_dataplane::openapi::OPENAPI_JSON).unwrap();
    let name = &doc["components"]["schemas"]["DeviceRegistration"]["properties"]["name"];
    assert_eq!(name["minLength"], 1);
    assert_eq!(name["maxLength"], 256);
    // Some character outside Rust's `char::is_whitespace` (Unicode White_Space).
    assert_eq!(
        name["pattern"],
        "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    );

    // 256 two-byte characters; a name around white space; U+FEFF is not white space.
    let long = "é".repeat(256);
    for ok in [long.as_str(), " a\n", "\u{feff}", "\u{1}"] {
        let (status, device) = register(&instance, &owner, json!({ "name": ok })).await;
        assert_eq!(status, StatusCode::CREATED, "{ok:?}: {device}");
        assert_eq!(device["name"], ok);
    }
    let too_long = "a".repeat(257);
    for bad in ["\n", " ", "\t\u{3000}\u{85}\u{a0}", too_long.as_str()] {
        let (status, err) = register(&instance, &owner, json!({ "name": bad })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {err}");
        assert_eq!(
            err["details"], "'name' is required and must be 1 to 256 characters, not only spaces.",
            "{bad:?}"
        );
    }
}
