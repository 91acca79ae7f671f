//! Every error is the JSON error shape `{"error": "…"}` with its status, whatever refused
//! the request (a handler, the router, an extractor), and no error shows the store's
//! internals (issue 15).

mod common;

use common::TestInstance;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APP: &str = "https://errors.example";

/// Send a raw HTTP/1.1 request (bytes as given, so paths need not be valid UTF-8) and
/// return the status, the `Content-Type` and the body of the answer.
async fn raw(instance: &TestInstance, head: &[u8]) -> (u16, String, Vec<u8>) {
    let mut tcp = tokio::net::TcpStream::connect(instance.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    tcp.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer head")
        + 4;
    let head = String::from_utf8_lossy(&answer[..end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, answer[end..].to_vec())
}

fn assert_json_error(what: &str, status: u16, content_type: &str, body: &[u8]) {
    assert!(status >= 400, "{what}: {status}");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {status} answered as '{content_type}': {}",
        String::from_utf8_lossy(body)
    );
    let body: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("{what}: not JSON: {}", String::from_utf8_lossy(body)));
    assert!(body["error"].is_string(), "{what}: {body}");
}

#[tokio::test]
async fn rejections_before_any_handler_are_json_errors() {
    let instance = TestInstance::start().await;
    let token = instance.owner_token().await;
    instance
        .upsert_app(
            &token,
            APP,
            &[
                ("read:notes", "always"),
                ("write:notes", "always"),
                ("blob:read:notes", "always"),
                ("blob:write:notes", "always"),
            ],
        )
        .await;
    let auth = format!("Authorization: Bearer {token}\r\nX-Vibe-App-ID: {APP}\r\n");
    let requests: Vec<(&str, u16, String)> = vec![
        // Path segments that are not UTF-8 once percent-decoded.
        ("data id", 400, "GET /api/v1/data/notes/%FF%FE"),
        (
            "data collection",
            400,
            "DELETE /api/v1/data/%C3%28/x?rev=1-a",
        ),
        ("blob key", 400, "GET /api/v1/blob/download-url/%FF"),
        ("blob delete", 400, "DELETE /api/v1/blob/%FF"),
        ("app id", 400, "DELETE /api/v1/apps/%FF"),
        ("device id", 400, "DELETE /api/v1/devices/%FF"),
        ("unknown route", 404, "GET /api/v1/%FF"),
        // Query strings that do not fit.
        (
            "blob list limit",
            400,
            "GET /api/v1/blob?collection=notes&limit=many",
        ),
        ("blob list query", 400, "GET /api/v1/blob?collection=%FF"),
        (
            "upload query",
            400,
            "PUT /api/v1/blob/upload?collection=notes",
        ),
        ("ws query", 400, "GET /ws?appId=%FF"),
        // A WebSocket route asked without upgrading.
        ("ws plain GET", 400, "GET /ws?token=x&appId=y"),
        // Router answers.
        ("wrong method", 405, "PATCH /api/v1/data/write"),
        ("no route", 404, "GET /nothing/here"),
    ]
    .into_iter()
    .map(|(what, status, line)| {
        (
            what,
            status,
            format!(
                "{line} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
    })
    .collect();
    for (what, expected, request) in requests {
        let (status, content_type, body) = raw(&instance, request.as_bytes()).await;
        assert_json_error(what, status, &content_type, &body);
        assert!(
            status == expected || (what.starts_with("ws") && (400..500).contains(&status)),
            "{what}: {status}, expected {expected}: {}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// A query the store refuses as malformed is a 400 in our words: pouchdb-server's own
/// name its code (`selectors.forEach is not a function`, `Cannot convert undefined or null
/// to object` for `{"$and": [null]}`).
#[tokio::test]
async fn store_refusals_do_not_show_the_store_s_words() {
    let instance = TestInstance::start().await;
    let token = instance.owner_token().await;
    instance
        .upsert_app(&token, APP, &[("read:notes", "always")])
        .await;
    let mut refused = 0;
    let mut store_worded = 0;
    for filter in [
        json!({"$and": [null]}),
        json!({"$or": [null]}),
        json!({"$and": {"a": 1}}),
        json!({"$or": {"a": 1}}),
        json!({"$nor": "x"}),
        json!({"a": {"$in": 5}}),
        json!({"a": {"$nin": "x"}}),
        json!({"a": {"$all": 1}}),
        json!({"a": {"$size": "x"}}),
        json!({"a": {"$mod": 3}}),
        json!({"a": {"$regex": 5}}),
        json!({"a": {"$type": 5}}),
        json!({"a": {"$elemMatch": 5}}),
        json!({"a": {"$exists": "yes"}}),
    ] {
        let (status, body) = instance
            .call(
                Method::POST,
                "/api/v1/data/read",
                Some(&token),
                Some(APP),
                Some(json!({"collection": "notes", "filter": filter})),
            )
            .await;
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{filter}: {status} {body}"
        );
        if status == StatusCode::BAD_REQUEST {
            refused += 1;
            let text = body.to_string();
            for internal in [
                "function",
                "undefined",
                "null to object",
                "Cannot ",
                "TypeError",
                "Error:",
            ] {
                assert!(!text.contains(internal), "{filter}: {text}");
            }
            // Either the data plane's own filter check refused it (bounded queries run
            // before the store), or the store did and the client got our words for it.
            assert_eq!(body["error"], "Validation failed", "{filter}: {body}");
            let details = body["details"].as_str().unwrap_or_default();
            assert!(!details.is_empty(), "{filter}: {body}");
            if details.contains("Invalid query") {
                store_worded += 1;
            }
        }
    }
    assert!(refused > 0, "some of these are refused");
    assert!(
        store_worded > 0,
        "some reach the store and get our words for its refusal"
    );
}
