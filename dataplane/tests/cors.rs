//! CORS: only the configured browser origins get CORS headers.

mod common;

use common::TestInstance;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn only_allowed_origins_get_cors_headers() {
    let t =
        TestInstance::start_with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    let preflight = |origin: &'static str| {
        t.http
            .request(Method::OPTIONS, t.url("/api/v1/data/read"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type,x-vibe-app-id",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert!(allowed.status().is_success());
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "https://app.example"
    );
    let allow_headers = allowed
        .headers()
        .get("access-control-allow-headers")
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allow_headers.contains("x-vibe-app-id") && allow_headers.contains("authorization"));

    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    // Without configured origins there are no CORS headers at all.
    let plain = TestInstance::start().await;
    let response = plain
        .http
        .get(plain.url("/health"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
