//! Documents and grants against a real CouchDB-compatible server, through the real router.
//! The first test replays every case of the original `tests/data.test.ts` with its status
//! codes and error strings (adapted to our token model: the owner token plus
//! `X-Vibe-App-ID`, as the original tests used).

mod common;

use common::TestInstance;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vibe_dataplane::startup::Outcome;

const APP: &str = "https://test-app.example";
const C: &str = "test_items";

async fn granted_instance() -> (TestInstance, String) {
    granted_instance_with(|_| {}).await
}

async fn granted_instance_with(
    configure: impl FnOnce(&mut vibe_dataplane::config::Config),
) -> (TestInstance, String) {
    let t = TestInstance::start_with(configure).await;
    let token = t.owner_token().await;
    t.upsert_app(
        &token,
        APP,
        &[
            (&format!("read:{C}"), "always"),
            (&format!("write:{C}"), "always"),
        ],
    )
    .await;
    (t, token)
}

async fn read_doc_direct(t: &TestInstance, id: &str) -> Value {
    let db = t.state.data_db().await.expect("data db");
    db.get(id).await.expect("get").expect("exists")
}

#[tokio::test]
async fn original_data_suite() {
    let (t, token) = granted_instance().await;
    let tok = Some(token.as_str());
    let read_perm = format!("read:{C}");
    let write_perm = format!("write:{C}");

    // 401 without token (read and write).
    let (s, b) = t
        .post(
            "/api/v1/data/read",
            None,
            Some(APP),
            json!({"collection": C}),
        )
        .await;
    assert_eq!(
        (s, &b),
        (
            StatusCode::UNAUTHORIZED,
            &json!({"error": "Unauthorized: Invalid or missing user token."})
        )
    );
    let (s, b) = t
        .post(
            "/api/v1/data/write",
            None,
            Some(APP),
            json!({"collection": C, "data": {"name": "test"}}),
        )
        .await;
    assert_eq!(
        (s, &b),
        (
            StatusCode::UNAUTHORIZED,
            &json!({"error": "Unauthorized: Invalid or missing user token."})
        )
    );

    // 400 without X-Vibe-App-ID (read and write).
    let (s, b) = t
        .post("/api/v1/data/read", tok, None, json!({"collection": C}))
        .await;
    assert_eq!(
        (s, &b),
        (
            StatusCode::BAD_REQUEST,
            &json!({"error": "Bad Request: Missing X-Vibe-App-ID header."})
        )
    );
    let (s, b) = t
        .post(
            "/api/v1/data/write",
            tok,
            None,
            json!({"collection": C, "data": {"name": "test"}}),
        )
        .await;
    assert_eq!(
        (s, &b),
        (
            StatusCode::BAD_REQUEST,
            &json!({"error": "Bad Request: Missing X-Vibe-App-ID header."})
        )
    );

    // 403 when the write grant is revoked (status shows only read), then restored.
    t.upsert_app(&token, APP, &[(&read_perm, "always")]).await;
    let (s, status) = t
        .get(
            &format!("/api/v1/apps/status?appId={}", urlencode(APP)),
            tok,
            Some(APP),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(status["grants"][&read_perm], "always");
    assert!(status["grants"].get(&write_perm).is_none());
    let (s, b) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"collection": C, "data": {"name": "forbidden write"}}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        b,
        json!({"error": format!("Forbidden: Application does not have permission '{write_perm}' for this user.")})
    );
    t.upsert_app(
        &token,
        APP,
        &[(&read_perm, "always"), (&write_perm, "always")],
    )
    .await;

    // 403 when the read grant is revoked, then restored.
    t.upsert_app(&token, APP, &[(&write_perm, "always")]).await;
    let (_, status) = t
        .get(
            &format!("/api/v1/apps/status?appId={}", urlencode(APP)),
            tok,
            Some(APP),
        )
        .await;
    assert!(status["grants"].get(&read_perm).is_none());
    assert_eq!(status["grants"][&write_perm], "always");
    let (s, b) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C, "filter": {}}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        b,
        json!({"error": format!("Forbidden: Application does not have permission '{read_perm}' for this user.")})
    );
    t.upsert_app(
        &token,
        APP,
        &[(&read_perm, "always"), (&write_perm, "always")],
    )
    .await;

    // 403 for a collection not granted.
    let (s, b) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"collection": "forbidden_collection", "data": {"name": "x"}}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        b,
        json!({"error": "Forbidden: Application does not have permission 'write:forbidden_collection' for this user."})
    );

    // Single create: 200 {ok,id,rev}; stored doc has collection.
    let (_, status) = t
        .get(
            &format!("/api/v1/apps/status?appId={}", urlencode(APP)),
            tok,
            Some(APP),
        )
        .await;
    assert_eq!(status["grants"][&write_perm], "always");
    let (s, b) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"collection": C, "data": {"name": "Single Write Test", "value": 123}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["ok"], true);
    let id = b["id"].as_str().unwrap().to_string();
    assert!(id.starts_with(&format!("{C}/")));
    assert!(b["rev"].is_string());
    let stored = read_doc_direct(&t, &id).await;
    assert_eq!(stored["collection"], C);
    assert_eq!(stored["name"], "Single Write Test");

    // Bulk create: 200 array of {ok,id,rev}.
    let (s, b) = t
        .post("/api/v1/data/write", tok, Some(APP), json!({"collection": C, "data": [{"name": "Bulk Write 1", "value": 1}, {"name": "Bulk Write 2", "value": 2}]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let items = b.as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item["ok"], true);
        assert!(item["id"].is_string() && item["rev"].is_string());
        assert!(item.get("error").is_none());
    }
    let stored = read_doc_direct(&t, items[0]["id"].as_str().unwrap()).await;
    assert_eq!(stored["collection"], C);
    assert_eq!(stored["name"], "Bulk Write 1");

    // Update with _id and _rev: new rev.
    let (_, created) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"collection": C, "data": {"name": "Doc to Update", "value": 1}}),
        )
        .await;
    let (s, b) = t
        .post("/api/v1/data/write", tok, Some(APP), json!({"collection": C, "data": {"_id": created["id"], "_rev": created["rev"], "name": "Doc Was Updated", "value": 2}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["ok"], true);
    assert_eq!(b["id"], created["id"]);
    assert_ne!(b["rev"], created["rev"]);
    let stored = read_doc_direct(&t, created["id"].as_str().unwrap()).await;
    assert_eq!(stored["name"], "Doc Was Updated");
    assert_eq!(stored["value"], 2);
    assert_eq!(stored["_rev"], b["rev"]);

    // Filtered read: only matching docs; doc == docs[0].
    t.post(
        "/api/v1/data/write",
        tok,
        Some(APP),
        json!({"collection": C, "data": [
            {"name": "Read Filter Test", "type": "A", "value": 10},
            {"name": "Read Filter Test", "type": "B", "value": 20},
            {"name": "Read Filter Test", "type": "A", "value": 30},
        ]}),
    )
    .await;
    let (s, b) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C, "filter": {"type": "A"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let docs = b["docs"].as_array().unwrap();
    assert!(docs.len() >= 2);
    for doc in docs {
        assert_eq!(doc["collection"], C);
        assert_eq!(doc["type"], "A");
    }
    assert_eq!(b["doc"], docs[0]);

    // No match: empty docs, no doc.
    let (s, b) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C, "filter": {"type": "NonExistentType"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["docs"], json!([]));
    assert!(b.get("doc").is_none());

    // Validation: missing collection (read, write), missing/invalid data.
    let (s, b) = t
        .post("/api/v1/data/read", tok, Some(APP), json!({"filter": {}}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "Validation failed");
    assert!(
        b["details"]
            .as_str()
            .unwrap()
            .contains("Collection name is required")
    );
    let (s, b) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"data": {"name": "test"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "Validation failed");
    assert!(
        b["details"]
            .as_str()
            .unwrap()
            .contains("Collection name is required")
    );
    for body in [
        json!({"collection": C}),
        json!({"collection": C, "data": "not an object"}),
    ] {
        let (s, b) = t.post("/api/v1/data/write", tok, Some(APP), body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(b["error"], "Validation failed");
        assert!(
            b["details"]
                .as_str()
                .unwrap()
                .contains("Data must be a single object or an array of objects")
        );
    }

    // Stale revision: 409 Revision conflict.
    let (_, created) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"collection": C, "data": {"name": "Conflict Write Test"}}),
        )
        .await;
    let (s, b) = t
        .post("/api/v1/data/write", tok, Some(APP), json!({"collection": C, "data": {"_id": created["id"], "_rev": "1-wrongrevision", "name": "Conflict Update"}}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(b["error"].as_str().unwrap().contains("Revision conflict"));
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn pagination_returns_every_document_exactly_once_while_writes_happen() {
    let (t, token) = granted_instance().await;
    let tok = Some(token.as_str());
    let batch: Vec<Value> = (0..25).map(|i| json!({"n": i})).collect();
    let (s, _) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"collection": C, "data": batch}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Another collection must never leak into the pages.
    t.upsert_app(
        &token,
        APP,
        &[
            (&format!("read:{C}"), "always"),
            (&format!("write:{C}"), "always"),
            ("write:other", "always"),
        ],
    )
    .await;
    t.post(
        "/api/v1/data/write",
        tok,
        Some(APP),
        json!({"collection": "other", "data": [{"n": 1}, {"n": 2}]}),
    )
    .await;

    let mut seen = Vec::new();
    let mut bookmark = Value::Null;
    let mut pages = 0;
    loop {
        let (s, b) = t
            .post(
                "/api/v1/data/read",
                tok,
                Some(APP),
                json!({"collection": C, "limit": 7, "bookmark": bookmark}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let docs = b["docs"].as_array().unwrap();
        assert!(docs.len() <= 7);
        for d in docs {
            assert_eq!(d["collection"], C);
            seen.push(d["_id"].as_str().unwrap().to_string());
        }
        pages += 1;
        if pages == 1 {
            // Writes during paging: new documents get later ids and must show up once.
            let more: Vec<Value> = (25..30).map(|i| json!({"n": i})).collect();
            t.post(
                "/api/v1/data/write",
                tok,
                Some(APP),
                json!({"collection": C, "data": more}),
            )
            .await;
        }
        bookmark = b["bookmark"].clone();
        if bookmark.is_null() {
            break;
        }
        assert!(pages < 20, "paging does not terminate");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a document was returned twice");
    assert_eq!(seen.len(), 30, "every document exactly once");

    // Limits: default 100, max 1000, more → 400.
    let (s, b) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C, "limit": 1001}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "Validation failed");
    let (s, b) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b["docs"].as_array().unwrap().len(),
        30,
        "default limit is 100, not 25"
    );
    // A bookmark of another collection is refused.
    let (_, b) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C, "limit": 2}),
        )
        .await;
    let (s, _) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": "other", "bookmark": b["bookmark"]}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no read:other grant");
    let (s, _) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C, "bookmark": "not-a-bookmark"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sorted_reads_page_in_order_with_projection() {
    let (t, token) = granted_instance_with(|c| c.query.sort_fields = vec!["score".into()]).await;
    let tok = Some(token.as_str());
    let docs: Vec<Value> = [5, 3, 9, 1, 7, 3, 8]
        .iter()
        .map(|v| json!({"score": v, "text": "x"}))
        .collect();
    t.post(
        "/api/v1/data/write",
        tok,
        Some(APP),
        json!({"collection": C, "data": docs}),
    )
    .await;
    for (dir, expected) in [
        ("asc", vec![1, 3, 3, 5, 7, 8, 9]),
        ("desc", vec![9, 8, 7, 5, 3, 3, 1]),
    ] {
        let mut scores = Vec::new();
        let mut bookmark = Value::Null;
        for _ in 0..10 {
            let (s, b) = t
                .post("/api/v1/data/read", tok, Some(APP), json!({
                    "collection": C, "limit": 2, "sort": [{"score": dir}], "fields": ["score"], "bookmark": bookmark
                }))
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            for d in b["docs"].as_array().unwrap() {
                assert!(d.get("text").is_none(), "projection applied: {d}");
                assert!(
                    d.get("_id").is_none(),
                    "fields added for paging are stripped: {d}"
                );
                scores.push(d["score"].as_i64().unwrap());
            }
            bookmark = b["bookmark"].clone();
            if bookmark.is_null() {
                break;
            }
        }
        assert_eq!(scores, expected, "{dir}");
    }
}

#[tokio::test]
async fn get_and_delete_single_documents() {
    let (t, token) = granted_instance().await;
    let tok = Some(token.as_str());
    let (_, created) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"collection": C, "data": {"_id": format!("{C}/note-1"), "title": "hello"}}),
        )
        .await;
    assert_eq!(created["id"], format!("{C}/note-1"));
    let (s, doc) = t
        .get(&format!("/api/v1/data/{C}/note-1"), tok, Some(APP))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["title"], "hello");

    // Delete needs write:<c>, a current rev; stale → 409; then 404.
    t.upsert_app(&token, APP, &[(&format!("read:{C}"), "always")])
        .await;
    let path = format!(
        "/api/v1/data/{C}/note-1?rev={}",
        created["rev"].as_str().unwrap()
    );
    let (s, _) = t.call(Method::DELETE, &path, tok, Some(APP), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    t.upsert_app(
        &token,
        APP,
        &[
            (&format!("read:{C}"), "always"),
            (&format!("write:{C}"), "always"),
        ],
    )
    .await;
    let (s, b) = t
        .call(
            Method::DELETE,
            &format!("/api/v1/data/{C}/note-1?rev=1-00000000000000000000000000000000"),
            tok,
            Some(APP),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"], "Revision conflict");
    let (s, b) = t
        .call(
            Method::DELETE,
            &format!("/api/v1/data/{C}/note-1"),
            tok,
            Some(APP),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "rev is required: {b}");
    let (s, b) = t.call(Method::DELETE, &path, tok, Some(APP), None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["ok"], true);
    assert!(b["rev"].as_str().unwrap().starts_with("2-"));
    let (s, b) = t
        .get(&format!("/api/v1/data/{C}/note-1"), tok, Some(APP))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        b["error"],
        format!("Document with id \"{C}/note-1\" not found.")
    );
    // Deleted documents are not read any more.
    let (_, b) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C}),
        )
        .await;
    assert_eq!(b["docs"], json!([]));
}

#[tokio::test]
async fn bad_input_is_refused_with_clear_4xx() {
    let (t, token) = granted_instance().await;
    let tok = Some(token.as_str());
    let cases = [
        (
            json!({"collection": C, "data": {"_id": "other/x"}}),
            "must start with",
        ),
        (
            json!({"collection": C, "data": {"_id": "_design/evil", "views": {}}}),
            "must start with",
        ),
        (
            json!({"collection": C, "data": {"_attachments": {}}}),
            "reserved",
        ),
        (
            json!({"collection": C, "data": {"_conflicts": []}}),
            "reserved",
        ),
        (
            json!({"collection": C, "data": {"collection": "other"}}),
            "does not match",
        ),
        (
            json!({"collection": "Bad Name", "data": {}}),
            "Invalid collection name",
        ),
        (
            json!({"collection": "_users", "data": {}}),
            "Invalid collection name",
        ),
        (
            json!({"collection": C, "data": [{"ok": 1}, {"_id": "x/y"}]}),
            "Item 1",
        ),
        (
            json!({"collection": C, "data": {}, "extra": 1}),
            "Unknown field",
        ),
    ];
    for (body, expected) in cases {
        let (s, b) = t
            .post("/api/v1/data/write", tok, Some(APP), body.clone())
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} → {b}");
        assert_eq!(b["error"], "Validation failed", "{body}");
        assert!(
            b["details"].as_str().unwrap().contains(expected),
            "{body} → {b}"
        );
    }
    // Nothing was written.
    let (_, b) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C}),
        )
        .await;
    assert_eq!(b["docs"], json!([]));

    // Duplicate JSON keys.
    let response = t
        .http
        .post(t.url("/api/v1/data/write"))
        .bearer_auth(&token)
        .header("X-Vibe-App-ID", APP)
        .header("content-type", "application/json")
        .body(format!(r#"{{"collection":"{C}","data":{{"a":1,"a":2}}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let b: Value = response.json().await.unwrap();
    assert!(
        b["details"].as_str().unwrap().contains("Duplicate key"),
        "{b}"
    );

    // Not JSON at all.
    let response = t
        .http
        .post(t.url("/api/v1/data/write"))
        .bearer_auth(&token)
        .header("X-Vibe-App-ID", APP)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let b: Value = response.json().await.unwrap();
    assert_eq!(b, json!({"error": "Failed to parse request body."}));

    // Too large → 413.
    let big = "x".repeat(2 * 1024 * 1024);
    let (s, b) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"collection": C, "data": {"big": big}}),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(b["error"].is_string());

    // Bad filter operator → 400, not 500.
    let (s, b) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C, "filter": {"a": {"$nope": 1}}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["details"].as_str().unwrap().contains("$nope"), "{b}");

    // Unknown route and wrong method are JSON.
    let (s, b) = t.get("/api/v1/nothing", tok, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(b["error"].is_string());
    let (s, b) = t.get("/api/v1/data/write", tok, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(b["error"].is_string());
}

/// A JSON body must be declared as JSON: `text/plain`, forms and no `Content-Type` at all
/// are what a web page can send cross-origin without a preflight (issue 15).
#[tokio::test]
async fn json_bodies_need_a_json_content_type() {
    let (t, token) = granted_instance().await;
    let write = format!(r#"{{"collection":"{C}","data":{{"n":1}}}}"#);
    let login = t.login_body(&t.owner).await.to_string();
    for content_type in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for (path, body, bearer) in [
            ("/api/v1/data/write", write.as_str(), true),
            ("/api/v1/auth/login", login.as_str(), false),
        ] {
            let mut request = t
                .http
                .post(t.url(path))
                .header("X-Vibe-App-ID", APP)
                .body(body.to_owned());
            if bearer {
                request = request.bearer_auth(&token);
            }
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} as {content_type:?}"
            );
            let b: Value = response.json().await.expect("a JSON error");
            assert!(
                b["error"].as_str().unwrap().contains("application/json"),
                "{b}"
            );
        }
    }
    // Nothing was written; JSON with a charset still is.
    let (_, b) = t
        .post(
            "/api/v1/data/read",
            Some(&token),
            Some(APP),
            json!({"collection": C}),
        )
        .await;
    assert_eq!(b["docs"], json!([]), "{b}");
    let response = t
        .http
        .post(t.url("/api/v1/data/write"))
        .bearer_auth(&token)
        .header("X-Vibe-App-ID", APP)
        .header("content-type", "application/json; charset=utf-8")
        .body(write)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn app_tokens_act_only_as_their_app() {
    let (t, token) = granted_instance().await;
    let tok = Some(token.as_str());
    t.upsert_app(
        &token,
        "https://other.example",
        &[("read:secrets", "always")],
    )
    .await;

    // Unregistered app → 404; registered → token.
    let (s, b) = t
        .post(
            "/api/v1/apps/token",
            tok,
            None,
            json!({"appId": "https://nope.example"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, b) = t
        .post("/api/v1/apps/token", tok, None, json!({"appId": APP}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["tokenType"], "Bearer");
    assert!(b["accessTokenExpiresIn"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    let app_token = b["accessToken"].as_str().unwrap().to_string();
    let at = Some(app_token.as_str());

    // Acts as its app without a header, and with a matching header.
    let (s, b) = t
        .post(
            "/api/v1/data/write",
            at,
            None,
            json!({"collection": C, "data": {"x": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = t
        .post("/api/v1/data/read", at, Some(APP), json!({"collection": C}))
        .await;
    assert_eq!(s, StatusCode::OK);
    // Naming another app is refused.
    let (s, b) = t
        .post(
            "/api/v1/data/read",
            at,
            Some("https://other.example"),
            json!({"collection": "secrets"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    // It has no grant for the other app's collection either.
    let (s, _) = t
        .post(
            "/api/v1/data/read",
            at,
            None,
            json!({"collection": "secrets"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // It cannot manage apps nor mint tokens.
    for (path, body) in [
        (
            "/api/v1/apps/upsert",
            json!({"appId": APP, "name": "x", "permissions": ["read:secrets"], "grants": {"read:secrets": "always"}}),
        ),
        (
            "/api/v1/apps/token",
            json!({"appId": "https://other.example"}),
        ),
    ] {
        let (s, _) = t.post(path, at, None, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    let (s, _) = t.get("/api/v1/apps", at, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Deleting the app ends its access at once: its tokens were bound to that registration,
    // so they are no longer valid credentials at all (401, not merely 403).
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/api/v1/apps/{}", urlencode(APP)),
            tok,
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = t
        .post("/api/v1/data/read", at, None, json!({"collection": C}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/api/v1/apps/{}", urlencode(APP)),
            tok,
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = t.get("/api/v1/apps", tok, None).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = b["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["appId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["https://other.example"]);
}

#[tokio::test]
async fn grant_revocation_is_effective_on_the_very_next_request() {
    let (t, token) = granted_instance().await;
    let (_, b) = t
        .post(
            "/api/v1/apps/token",
            Some(&token),
            None,
            json!({"appId": APP}),
        )
        .await;
    let app_token = b["accessToken"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let (s, _) = t
            .post(
                "/api/v1/data/read",
                Some(&app_token),
                None,
                json!({"collection": C}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        t.upsert_app(&token, APP, &[(&format!("read:{C}"), "never")])
            .await;
        let (s, _) = t
            .post(
                "/api/v1/data/read",
                Some(&app_token),
                None,
                json!({"collection": C}),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        t.upsert_app(&token, APP, &[(&format!("read:{C}"), "ask")])
            .await;
        let (s, _) = t
            .post(
                "/api/v1/data/read",
                Some(&app_token),
                None,
                json!({"collection": C}),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "ask does not allow");
        t.upsert_app(&token, APP, &[(&format!("read:{C}"), "always")])
            .await;
    }
    // Upsert answers 201 on create and 200 on update; bad grants are refused.
    let (s, _) = t
        .post(
            "/api/v1/apps/upsert",
            Some(&token),
            None,
            json!({"appId": "https://new.example", "name": "N", "permissions": []}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = t
        .post(
            "/api/v1/apps/upsert",
            Some(&token),
            None,
            json!({"appId": "https://new.example", "name": "N", "permissions": []}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = t
        .post("/api/v1/apps/upsert", Some(&token), None, json!({"appId": "https://new.example", "name": "N", "permissions": ["read:x"], "grants": {"read:x": "sometimes"}}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = t.get("/api/v1/apps/status", Some(&token), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b["error"],
        "Bad Request: Missing or invalid 'appId' query parameter."
    );
    let (_, b) = t
        .get(
            "/api/v1/apps/status?appId=https%3A%2F%2Funknown.example",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(b, json!({"isRegistered": false}));
    // Grants survive a restart (loaded from the system database).
    let mut t = t;
    t.restart(|_| {}).await;
    let token = t.owner_token().await;
    let (s, _) = t
        .post(
            "/api/v1/data/read",
            Some(&token),
            Some(APP),
            json!({"collection": C}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn couchdb_outage_gives_503_then_recovers_by_itself() {
    if vibe_test_support::skip_with_external_couchdb("stops and restarts CouchDB") {
        return;
    }
    let (mut t, token) = granted_instance().await;
    let tok = Some(token.as_str());
    let (s, _) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"collection": C, "data": {"before": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t.get("/ready", None, None).await;
    assert_eq!(s, StatusCode::OK);

    t.couch.stop().await;
    let (s, b) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C}),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b, json!({"error": "Database service is not available."}));
    let (s, b) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"collection": C, "data": {"during": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    let (s, b) = t.get("/ready", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b["error"].as_str().unwrap().contains("couchdb"), "{b}");
    let (s, _) = t.get("/health", None, None).await;
    assert_eq!(s, StatusCode::OK, "liveness does no I/O");

    t.couch.restart().await.expect("restart couch");
    let (s, b) = t
        .post(
            "/api/v1/data/read",
            tok,
            Some(APP),
            json!({"collection": C}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["docs"].as_array().unwrap().len(), 1, "data kept: {b}");
    let (s, _) = t
        .post(
            "/api/v1/data/write",
            tok,
            Some(APP),
            json!({"collection": C, "data": {"after": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t.get("/ready", None, None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn service_starts_while_couchdb_is_down() {
    if vibe_test_support::skip_with_external_couchdb("stops and restarts CouchDB") {
        return;
    }
    let mut couch = vibe_test_support::CouchServer::start()
        .await
        .expect("couch");
    couch.stop().await;
    let t = TestInstance::start_on(
        couch,
        vibe_identity::Keypair::generate(),
        vibe_identity::Keypair::generate(),
        |_| {},
    )
    .await;
    let (s, _) = t.get("/health", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = t
        .post("/api/v1/auth/challenge", None, None, json!({}))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    let mut t = t;
    t.couch.restart().await.expect("restart");
    let token = t.owner_token().await;
    assert!(!token.is_empty());
}

#[tokio::test]
async fn start_up_finishes_on_its_own_once_couchdb_answers() {
    // Start-up is a step of the process, not of the first request: with CouchDB down at
    // start, the system database is created and loaded as soon as CouchDB answers, before
    // any request asks for it.
    if vibe_test_support::skip_with_external_couchdb("stops and restarts CouchDB") {
        return;
    }
    let mut couch = vibe_test_support::CouchServer::start()
        .await
        .expect("couch");
    couch.stop().await;
    let mut t = TestInstance::start_on(
        couch,
        vibe_identity::Keypair::generate(),
        vibe_identity::Keypair::generate(),
        |_| {},
    )
    .await;
    let failing = wait_for_startup(&t, |s| s.attempts >= 1).await;
    assert!(
        matches!(
            failing.outcome,
            Outcome::Failed {
                step: "system database",
                store_unreachable: true
            }
        ),
        "{failing:?}"
    );

    t.couch.restart().await.expect("restart");
    // No request from here on: the task's own retry (≤ RETRY_MAX apart) must get there.
    let ready = wait_for_startup(&t, |s| matches!(s.outcome, Outcome::Ready(_))).await;
    assert!(ready.attempts >= 2, "{ready:?}");
    let system = t.couch.db_name("vibe_system");
    let found = t
        .couch
        .request(reqwest::Method::GET, &format!("/{system}"))
        .send()
        .await
        .expect("ask CouchDB");
    assert_eq!(
        found.status(),
        StatusCode::OK,
        "the system database was created before any request"
    );
}

/// Poll the instance's start-up status until `done` holds (at most twice the longest retry
/// pause); returns the status that satisfied it.
async fn wait_for_startup(
    t: &TestInstance,
    done: impl Fn(&vibe_dataplane::startup::Status) -> bool,
) -> vibe_dataplane::startup::Status {
    let deadline = tokio::time::Instant::now() + 2 * vibe_dataplane::startup::RETRY_MAX;
    loop {
        let status = t.state.startup.status();
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "start-up stuck at {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_database_carries_the_configured_prefix() {
    // The harness hands the test server's prefix to the data plane (VIBE_DB_PREFIX), so
    // instances sharing one CouchDB never meet and a test's databases can be deleted by prefix.
    let (t, token) = granted_instance().await;
    let (s, b) = t
        .post(
            "/api/v1/data/write",
            Some(&token),
            Some(APP),
            json!({"collection": C, "data": {"n": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let prefix = t.couch.db_prefix();
    assert!(!prefix.is_empty());
    let system = format!("{prefix}vibe_system");
    let data = format!(
        "{prefix}{}",
        vibe_dataplane::dbnames::user_db_name(&t.owner.did())
    );
    let mut ours = t.couch.own_databases().await.expect("list databases");
    ours.sort();
    let mut expected = vec![system, data];
    expected.sort();
    assert_eq!(ours, expected);
    // Nothing under the unprefixed name of this owner's data database.
    let unprefixed = vibe_dataplane::dbnames::user_db_name(&t.owner.did());
    let response = t
        .couch
        .request(Method::GET, &format!("/{unprefixed}"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// An app's name, description and picture URL are bounded as the OpenAPI document says: a
/// name is 1 to 256 characters (not bytes) with one that is not white space, the others at
/// most 2048 characters.
#[tokio::test]
async fn app_texts_are_bounded_as_documented() {
    let t = TestInstance::start().await;
    let token = t.owner_token().await;
    let doc: Value = serde_json::from_str(vibe_dataplane::openapi::OPENAPI_JSON).unwrap();
    let fields = &doc["components"]["schemas"]["AppUpsert"]["properties"];
    assert_eq!(fields["name"]["maxLength"], 256);
    assert_eq!(
        fields["name"]["pattern"],
        "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    );
    assert_eq!(fields["description"]["maxLength"], 2048);
    assert_eq!(fields["pictureUrl"]["maxLength"], 2048);
    let upsert = |body: Value| t.post("/api/v1/apps/upsert", Some(&token), None, body);

    let name = "é".repeat(256);
    let description = "é".repeat(2048);
    let picture = format!("https://x.example/{}", "é".repeat(2048 - 18));
    let (s, b) = upsert(
        json!({"appId": APP, "name": name, "description": description,
        "pictureUrl": picture, "permissions": []}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = upsert(json!({"appId": APP, "name": "\u{feff}", "permissions": []})).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let too_long = "a".repeat(257);
    for bad in ["\n", " ", "\t\u{3000}\u{85}\u{a0}", too_long.as_str()] {
        let (s, b) = upsert(json!({"appId": APP, "name": bad, "permissions": []})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?}: {b}");
        assert_eq!(
            b["details"], "'name' is required and must be 1 to 256 characters, not only spaces.",
            "{bad:?}"
        );
    }
    let long_text = "a".repeat(2049);
    let long_url = format!("https://x.example/{}", "a".repeat(2049 - 18));
    for (key, value) in [("description", long_text), ("pictureUrl", long_url)] {
        let mut body = json!({"appId": APP, "name": "N", "permissions": []});
        body[key] = json!(value);
        let (s, b) = upsert(body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{key}: {b}");
        assert_eq!(
            b["details"],
            format!("'{key}' must be at most 2048 characters."),
            "{key}"
        );
    }
}
