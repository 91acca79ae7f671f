//! A hostile app trying to read what it holds no grant for (issue 15, item 1), against a
//! real pouchdb-server through the real router.
//!
//! Two kinds of attack: selectors that pouchdb-server lets override the collection clause
//! (`$and` naming another collection), and documents whose id and `collection` field
//! disagree (planted directly in the store, as a buggy or hostile writer could), which a
//! store happily returns for a selector on `collection`. Every path that hands out
//! documents must drop them: reads, gets, realtime pushes and replays, and every sync
//! answer.

mod common;

use std::time::Duration;

use common::TestInstance;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

const APP: &str = "https://notes-only.example";
const SYNCER: &str = "https://syncer.example";

/// A document claiming `notes` while its id says `secretz`, and the reverse.
const PLANTED_IN_NOTES: &str = "secretz/planted";
const PLANTED_WITH_ID: &str = "notes/planted";

struct Setup {
    t: TestInstance,
    owner: String,
    app_token: String,
}

/// An instance with notes, secrets and blob metadata, and an app token holding only
/// `read:notes`.
async fn setup() -> Setup {
    let t = TestInstance::start_with(|c| c.query.sort_fields.push("pin".into())).await;
    let owner = t.owner_token().await;
    t.upsert_app(
        &owner,
        "https://writer.example",
        &[("write:notes", "always"), ("write:secretz", "always")],
    )
    .await;
    for (collection, data) in [
        ("notes", json!({"title": "mine"})),
        ("secretz", json!({"pin": "secret-pin-1234"})),
        ("secretz", json!({"pin": "secret-pin-5678"})),
    ] {
        let (status, body) = t
            .post(
                "/api/v1/data/write",
                Some(&owner),
                Some("https://writer.example"),
                json!({"collection": collection, "data": data}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let db = t.state.data_db().await.expect("data db");
    db.put(
        "blobs/01900000-0000-7000-8000-000000000001",
        &json!({"collection": "blobs", "collectionName": "photos", "objectKey": "o/photos/x"}),
    )
    .await
    .expect("blob metadata");
    t.upsert_app(&owner, APP, &[("read:notes", "always")]).await;
    let (status, body) = t
        .post(
            "/api/v1/apps/token",
            Some(&owner),
            None,
            json!({"appId": APP}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let app_token = body["accessToken"].as_str().expect("token").to_string();
    Setup {
        t,
        owner,
        app_token,
    }
}

/// Plant the two mismatched documents directly in the store.
async fn plant(t: &TestInstance) {
    let db = t.state.data_db().await.expect("data db");
    db.put(
        PLANTED_IN_NOTES,
        &json!({"collection": "notes", "pin": "planted-1"}),
    )
    .await
    .expect("plant");
    db.put(
        PLANTED_WITH_ID,
        &json!({"collection": "secretz", "pin": "planted-2"}),
    )
    .await
    .expect("plant");
}

/// Every `_id` found anywhere in `value`.
fn ids(value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    fn walk(v: &Value, found: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(id)) = map.get("_id") {
                    found.push(id.clone());
                }
                map.values().for_each(|v| walk(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    walk(value, &mut found);
    found
}

/// No secret in the answer: no document of another collection, nothing planted.
fn assert_no_leak(what: &str, answer: &Value) {
    let text = answer.to_string();
    assert!(
        !text.contains("secret-pin-1234")
            && !text.contains("secret-pin-5678")
            && !text.contains("planted-"),
        "{what} leaked: {answer}"
    );
    assert!(!text.contains("objectKey"), "{what} leaked blobs: {answer}");
}

#[tokio::test]
async fn read_filters_cannot_reach_other_collections() {
    let s = setup().await;
    let read = |filter: Value| {
        let t = &s.t;
        let token = s.app_token.clone();
        async move {
            t.post(
                "/api/v1/data/read",
                Some(&token),
                None,
                json!({"collection": "notes", "filter": filter}),
            )
            .await
        }
    };
    let (status, plain) = read(json!({})).await;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert_eq!(plain["docs"].as_array().unwrap().len(), 1, "{plain}");

    for filter in [
        json!({"$and": [{"collection": "secretz"}]}),
        json!({"$and": [{"collection": {"$eq": "secretz"}}]}),
        json!({"$and": [{"collection": "blobs"}]}),
        json!({"$or": [{"collection": "secretz"}, {"collection": "notes"}]}),
        json!({"$and": [{"$or": [{"collection": "secretz"}]}]}),
        json!({"$not": {"collection": "notes"}}),
        json!({"$nor": [{"collection": "notes"}]}),
        json!({"collection": "secretz"}),
        json!({"collection": {"$ne": "notes"}}),
    ] {
        let (status, answer) = read(filter.clone()).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "{filter}: {status} {answer}"
        );
        assert_no_leak(&filter.to_string(), &answer);
        for id in ids(&answer) {
            assert!(id.starts_with("notes/"), "{filter}: {answer}");
        }
    }
    // Sub-fields named `collection` are ordinary data and stay filterable.
    let (status, answer) = read(json!({"album": {"collection": "x"}})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn planted_documents_never_leave_through_the_document_api() {
    let s = setup().await;
    plant(&s.t).await;
    // The store returns `secretz/planted` for `collection == notes`: the result check drops it.
    for body in [
        json!({"collection": "notes"}),
        json!({"collection": "notes", "fields": ["title"]}),
        json!({"collection": "notes", "sort": ["pin"]}),
        json!({"collection": "notes", "limit": 1}),
    ] {
        let mut bookmark = Value::Null;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let mut request = body.clone();
            request["bookmark"] = bookmark.clone();
            let (status, answer) =
                s.t.post("/api/v1/data/read", Some(&s.app_token), None, request)
                    .await;
            assert_eq!(status, StatusCode::OK, "{body}: {answer}");
            assert_no_leak(&body.to_string(), &answer);
            seen.extend(answer["docs"].as_array().unwrap().iter().cloned());
            bookmark = answer["bookmark"].clone();
            if bookmark.is_null() {
                break;
            }
        }
        assert!(bookmark.is_null(), "{body}: paging did not end");
        if body.get("sort").is_none() {
            assert_eq!(seen.len(), 1, "{body}: {seen:?}");
        }
    }
    for path in [
        "/api/v1/data/notes/planted",
        "/api/v1/data/secretz/planted",
        "/api/v1/data/blobs/01900000-0000-7000-8000-000000000001",
    ] {
        let (status, answer) = s.t.get(path, Some(&s.app_token), None).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN,
            "{path}: {status} {answer}"
        );
        assert_no_leak(path, &answer);
    }
}

/// A sync caller (an app holding `sync`) reads every collection, but never a document
/// whose id and collection disagree, nor a design document, on any sync path.
#[tokio::test]
async fn planted_documents_never_leave_through_sync() {
    let s = setup().await;
    s.t.upsert_app(&s.owner, SYNCER, &[("sync", "always")])
        .await;
    plant(&s.t).await;
    let token = s.owner.clone();
    let sync = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let t = &s.t;
        let token = token.clone();
        let path = format!("/api/v1/sync/{path}");
        async move {
            t.call(method, &path, Some(&token), Some(SYNCER), body)
                .await
        }
    };
    use reqwest::Method;
    for path in [
        "_changes?include_docs=true",
        "_changes?include_docs=true&feed=longpoll&since=0",
        "_all_docs?include_docs=true",
        "_all_docs?include_docs=true&keys=%5B%22notes%2Fplanted%22%2C%22secretz%2Fplanted%22%5D",
        "notes%2Fplanted",
        "notes%2Fplanted?open_revs=all",
        "secretz%2Fplanted?revs=true",
    ] {
        let (status, answer) = sync(Method::GET, path, None).await;
        assert!(
            status.is_success() || status == StatusCode::NOT_FOUND,
            "{path}: {status}"
        );
        let text = answer.to_string();
        assert!(!text.contains("planted-"), "{path} leaked: {answer}");
        assert!(!text.contains("_design/"), "{path} leaked: {answer}");
        if path.starts_with("_changes") || path == "_all_docs?include_docs=true" {
            assert!(
                text.contains("secret-pin-1234"),
                "{path}: sync sees every collection: {answer}"
            );
        }
    }
    // _bulk_get of the planted documents.
    let db = s.t.state.data_db().await.unwrap();
    let mut asked = Vec::new();
    for id in [PLANTED_IN_NOTES, PLANTED_WITH_ID] {
        let doc = db.get(id).await.unwrap().unwrap();
        asked.push(json!({"id": id, "rev": doc["_rev"]}));
    }
    let (status, answer) = sync(
        Method::POST,
        "_bulk_get?revs=true",
        Some(json!({ "docs": asked })),
    )
    .await;
    assert!(status.is_success(), "{status} {answer}");
    assert!(!answer.to_string().contains("planted-"), "{answer}");
    // The continuous feed: the planted documents' lines never pass.
    let response =
        s.t.http
            .get(s.t.url("/api/v1/sync/_changes?feed=continuous&include_docs=true&since=0"))
            .bearer_auth(&token)
            .header("X-Vibe-App-ID", SYNCER)
            .send()
            .await
            .unwrap();
    assert!(response.status().is_success());
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if text.contains("secret-pin-5678") && text.contains("mine") {
            break;
        }
    }
    assert!(text.contains("secret-pin-5678"), "continuous feed: {text}");
    assert!(!text.contains("planted-"), "continuous feed leaked: {text}");
    assert!(!text.contains("_design/"), "continuous feed leaked: {text}");
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The next text frame, as JSON.
async fn recv(ws: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("JSON frame");
        }
    }
}

/// A socket authenticated as the `read:notes` app.
async fn authed_socket(url: &str, token: &str) -> Socket {
    let (mut ws, _) = connect_async(url).await.expect("connect");
    ws.send(Message::Text(
        json!({"action": "auth", "token": token, "appId": APP})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    assert_eq!(recv(&mut ws).await["status"], "authenticated");
    ws
}

/// Realtime: a change whose id says `secretz` but whose body claims `notes` is neither
/// pushed to nor replayed for a `notes` subscriber.
#[tokio::test]
async fn planted_documents_are_never_pushed() {
    let s = setup().await;
    let ws_url = format!("{}/ws", s.t.base.replacen("http", "ws", 1));
    let mut ws = authed_socket(&ws_url, &s.app_token).await;
    ws.send(Message::Text(
        json!({"action": "subscribe", "collection": "notes", "since": "now"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let subscribed = recv(&mut ws).await;
    assert_eq!(subscribed["status"], "subscribed", "{subscribed}");
    plant(&s.t).await;
    let (status, body) =
        s.t.post(
            "/api/v1/data/write",
            Some(&s.owner),
            Some("https://writer.example"),
            json!({"collection": "notes", "data": {"title": "after"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pushed = recv(&mut ws).await;
    assert_eq!(pushed["data"]["title"], "after", "first push: {pushed}");

    // Replay from the beginning: the planted change is skipped too.
    let mut replay = authed_socket(&ws_url, &s.app_token).await;
    replay
        .send(Message::Text(
            json!({"action": "subscribe", "collection": "notes", "since": "0"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let mut titles = Vec::new();
    loop {
        let frame = recv(&mut replay).await;
        assert!(
            !frame.to_string().contains("planted-"),
            "replay leaked {frame}"
        );
        if frame.get("status").is_some() {
            continue;
        }
        titles.push(frame["data"]["title"].clone());
        if frame["data"]["title"] == "after" {
            break;
        }
    }
    assert_eq!(titles, vec![json!("mine"), json!("after")]);
}
