//! `GET /ws` end to end: the real router, real sockets (tokio-tungstenite), real
//! pouchdb-server. Includes the original `realtime.test.ts` cases with their exact messages.

mod common;

use std::time::Duration;

use common::TestInstance;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use vibe_dataplane::realtime::{RealtimeSettings, routes_with};

const APP: &str = "https://rt-app.example";
const WAIT: Duration = Duration::from_secs(15);

struct Ws(WebSocketStream<MaybeTlsStream<TcpStream>>);

impl Ws {
    async fn connect(url: &str) -> Ws {
        let (ws, _) = connect_async(url).await.expect("websocket connects");
        Ws(ws)
    }

    async fn send(&mut self, frame: Value) {
        self.0
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }

    async fn send_raw(&mut self, message: Message) {
        self.0.send(message).await.expect("send");
    }

    /// Next text frame as JSON; panics on close or timeout.
    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("a frame within the wait")
                .expect("socket open")
                .expect("frame");
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Wait for the server's close frame; returns its code and reason.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            let message = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("close within the wait");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                    panic!("closed without a close frame")
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Assert no text frame arrives within `wait`.
    async fn silent_for(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.0.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(text)))) => panic!("unexpected message {text}"),
                Ok(Some(Ok(_))) => continue,
                Ok(other) => panic!("socket ended: {other:?}"),
            }
        }
    }
}

struct Setup {
    instance: TestInstance,
    token: String,
}

impl Setup {
    async fn new() -> Setup {
        Self::with(|_| {}).await
    }

    async fn with(configure: impl FnOnce(&mut vibe_dataplane::config::Config)) -> Setup {
        let instance = TestInstance::start_with(configure).await;
        let token = instance.owner_token().await;
        let setup = Setup { instance, token };
        setup
            .grant(&[("read:notes", "always"), ("write:notes", "always")])
            .await;
        setup
    }

    async fn grant(&self, grants: &[(&str, &str)]) {
        self.instance.upsert_app(&self.token, APP, grants).await;
    }

    fn ws_url(&self) -> String {
        format!("{}/ws", self.instance.base.replacen("http", "ws", 1))
    }

    fn query_url(&self) -> String {
        format!(
            "{}?token={}&appId={}",
            self.ws_url(),
            self.token,
            url_encode(APP)
        )
    }

    /// A socket authenticated by its first frame.
    async fn socket(&self) -> Ws {
        self.socket_with(&self.token).await
    }

    /// A socket authenticated by its first frame with `token`.
    async fn socket_with(&self, token: &str) -> Ws {
        let mut ws = Ws::connect(&self.ws_url()).await;
        ws.send(json!({"action": "auth", "token": token, "appId": APP}))
            .await;
        assert_eq!(ws.next().await, json!({"status": "authenticated"}));
        ws
    }

    async fn write(&self, collection: &str, data: Value) -> Value {
        let (status, body) = self
            .instance
            .post(
                "/api/v1/data/write",
                Some(&self.token),
                Some(APP),
                json!({"collection": collection, "data": data}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn delete(&self, id: &str, rev: &str) -> Value {
        let (collection, rest) = id.split_once('/').unwrap();
        let (status, body) = self
            .instance
            .call(
                Method::DELETE,
                &format!("/api/v1/data/{collection}/{rest}?rev={rev}"),
                Some(&self.token),
                Some(APP),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// A second server on the same state, with custom realtime settings.
    async fn custom(&self, settings: RealtimeSettings) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = routes_with(settings).with_state(self.instance.state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        format!("ws://{addr}/ws")
    }
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---- the original realtime.test.ts ----

#[tokio::test]
async fn original_subscribe_then_rest_write_is_pushed() {
    let s = Setup::new().await;
    let mut ws = Ws::connect(&s.query_url()).await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"status": "subscribed", "collection": "notes"})
    );
    let created = s
        .write("notes", json!({"name": "Realtime Test Doc", "value": 42}))
        .await;
    let update = ws.next().await;
    assert_eq!(update["type"], "update");
    assert_eq!(update["collection"], "notes");
    assert_eq!(update["data"]["_id"], created["id"]);
    assert_eq!(update["data"]["name"], "Realtime Test Doc");
    assert_eq!(update["data"]["value"], 42);
    assert_eq!(update["data"]["collection"], "notes");
    assert!(update.get("seq").is_some_and(|s| !s.is_null()));
}

#[tokio::test]
async fn original_revoked_read_denies_subscribe_and_stops_pushes() {
    let s = Setup::new().await;
    let mut ws = Ws::connect(&s.query_url()).await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");
    s.write("notes", json!({"n": 1})).await;
    assert_eq!(ws.next().await["type"], "update");

    // Revoke read, keep write (as the original test does, via upsert).
    s.grant(&[("write:notes", "always")]).await;
    // Beyond the original: the live subscription ends at once, then the socket (issue 19:
    // a revoked grant closes the app's WebSockets with 4003).
    assert_eq!(
        ws.next().await,
        json!({"status": "revoked", "collection": "notes",
               "reason": "App does not have 'read:notes' permission."})
    );
    assert_eq!(
        ws.closed().await,
        (4003, "Grants revoked; reconnect.".to_string())
    );
    // The same token opens a new socket, which is refused what the grant covered.
    let mut ws = Ws::connect(&s.query_url()).await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"status": "denied", "collection": "notes",
               "reason": "App does not have 'read:notes' permission."})
    );
    ws.send(json!({"action": "unsubscribe", "collection": "notes"}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"status": "not_subscribed", "collection": "notes"})
    );
    s.write(
        "notes",
        json!({"name": "Write While Read Denied", "value": 1}),
    )
    .await;
    ws.silent_for(Duration::from_millis(1000)).await;
}

/// Issue 19: granting the app more keeps its socket and subscriptions; revoking a grant
/// closes the socket (4003) even when no subscription used it — a grant added while the
/// socket was open counts too.
#[tokio::test]
async fn a_new_grant_keeps_the_socket_and_a_revoked_one_closes_it() {
    let s = Setup::new().await;
    let mut ws = s.socket().await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");
    s.grant(&[
        ("read:notes", "always"),
        ("write:notes", "always"),
        ("read:tasks", "always"),
    ])
    .await;
    s.write("notes", json!({"n": 1})).await;
    assert_eq!(ws.next().await["type"], "update", "still subscribed");
    s.grant(&[("read:notes", "always"), ("write:notes", "always")])
        .await;
    assert_eq!(
        ws.closed().await,
        (4003, "Grants revoked; reconnect.".to_string())
    );
}

// ---- protocol ----

#[tokio::test]
async fn unsubscribe_answers_and_stops_pushes() {
    let s = Setup::new().await;
    let mut ws = s.socket().await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");
    ws.send(json!({"action": "unsubscribe", "collection": "notes"}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"status": "unsubscribed", "collection": "notes"})
    );
    s.write("notes", json!({"n": 1})).await;
    ws.silent_for(Duration::from_millis(800)).await;
}

#[tokio::test]
async fn deletes_are_pushed_with_the_deletions_rev() {
    let s = Setup::new().await;
    let mut ws = s.socket().await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");
    let created = s.write("notes", json!({"n": 1})).await;
    assert_eq!(ws.next().await["type"], "update");
    let id = created["id"].as_str().unwrap();
    let deleted = s.delete(id, created["rev"].as_str().unwrap()).await;
    let event = ws.next().await;
    assert_eq!(event["type"], "delete");
    assert_eq!(event["collection"], "notes");
    assert_eq!(event["id"], id);
    assert_eq!(event["rev"], deleted["rev"]);
    assert_ne!(event["rev"], created["rev"]);
    assert!(event.get("seq").is_some());
}

#[tokio::test]
async fn only_subscribed_collections_are_pushed() {
    let s = Setup::new().await;
    s.grant(&[
        ("read:notes", "always"),
        ("write:notes", "always"),
        ("write:other", "always"),
    ])
    .await;
    let mut ws = s.socket().await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");
    s.write("other", json!({"n": 1})).await;
    s.write("notes", json!({"n": 2})).await;
    let event = ws.next().await;
    assert_eq!(event["collection"], "notes");
    assert_eq!(event["data"]["n"], 2);
}

#[tokio::test]
async fn resume_with_since_after_a_disconnect_misses_nothing_and_repeats_nothing() {
    let s = Setup::new().await;
    let mut ws = s.socket().await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");
    s.write("notes", json!({"n": 1})).await;
    let first = ws.next().await;
    let seen = first["seq"].clone();
    drop(ws);

    // While disconnected: two writes and a deletion.
    let second = s.write("notes", json!({"n": 2})).await;
    s.write("notes", json!({"n": 3})).await;
    let gone = s
        .delete(
            second["id"].as_str().unwrap(),
            second["rev"].as_str().unwrap(),
        )
        .await;

    let mut ws = s.socket().await;
    ws.send(json!({"action": "subscribe", "collection": "notes", "since": seen}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"status": "subscribed", "collection": "notes"})
    );
    // Replay (CouchDB collapses a document's changes: doc 2 appears once, as deleted).
    let mut replayed = Vec::new();
    for _ in 0..2 {
        replayed.push(ws.next().await);
    }
    assert!(replayed.iter().any(|e| e["data"]["n"] == 3), "{replayed:?}");
    assert!(
        replayed
            .iter()
            .any(|e| e["type"] == "delete" && e["rev"] == gone["rev"]),
        "{replayed:?}"
    );
    // Then live, and nothing twice.
    s.write("notes", json!({"n": 4})).await;
    assert_eq!(ws.next().await["data"]["n"], 4);
    ws.silent_for(Duration::from_millis(700)).await;
}

#[tokio::test]
async fn couch_restart_with_sockets_open_loses_no_event() {
    if vibe_test_support::skip_with_external_couchdb("restarts CouchDB") {
        return;
    }
    let mut s = Setup::new().await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = s.socket().await;
        ws.send(json!({"action": "subscribe", "collection": "notes"}))
            .await;
        assert_eq!(ws.next().await["status"], "subscribed");
        sockets.push(ws);
    }
    s.write("notes", json!({"n": 1})).await;
    for ws in &mut sockets {
        assert_eq!(ws.next().await["data"]["n"], 1);
    }
    s.instance.couch.restart().await.unwrap();
    // Writes right after the restart, while the change reader is reconnecting.
    for n in 2..5 {
        let mut attempts = 0;
        loop {
            let (status, body) = s
                .instance
                .post(
                    "/api/v1/data/write",
                    Some(&s.token),
                    Some(APP),
                    json!({"collection": "notes", "data": {"n": n}}),
                )
                .await;
            if status == StatusCode::OK {
                break;
            }
            attempts += 1;
            assert!(attempts < 50, "{status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for ws in &mut sockets {
        for n in 2..5 {
            assert_eq!(ws.next().await["data"]["n"], n);
        }
    }
}

// ---- authentication ----

#[tokio::test]
async fn auth_by_first_frame_and_failures_close_with_4001() {
    let s = Setup::new().await;
    // Good first frame.
    let mut ws = s.socket().await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");

    // Bad token.
    let mut ws = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "auth", "token": "not.a.token", "appId": APP}))
        .await;
    assert_eq!(ws.closed().await.0, 4001);

    // Anything before auth.
    let mut ws = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.closed().await.0, 4001);

    // Owner token without an app.
    let mut ws = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "auth", "token": s.token})).await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4001);
    assert_eq!(reason, "Missing application identifier.");

    // Silence.
    let url = s
        .custom(RealtimeSettings {
            auth_timeout: Duration::from_millis(500),
            ..RealtimeSettings::default()
        })
        .await;
    let mut ws = Ws::connect(&url).await;
    let (code, reason) = ws.closed().await;
    assert_eq!((code, reason.as_str()), (4001, "Authentication required."));
}

#[tokio::test]
async fn auth_by_query_and_its_refusals() {
    let s = Setup::new().await;
    let mut ws = Ws::connect(&s.query_url()).await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");

    let refused = |url: String| async move {
        match connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status(),
            other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
        }
    };
    assert_eq!(
        refused(format!("{}?token=bad&appId=x", s.ws_url())).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refused(format!("{}?token={}", s.ws_url(), s.token)).await,
        StatusCode::BAD_REQUEST
    );
}

/// The OpenAPI document lists the RFC 6455 handshake headers as required parameters of
/// `GET /ws`: with all of them (in any letter case where the document allows it) the server
/// switches protocols; without any one of them, or with another version, it answers 400
/// in the JSON error shape.
#[tokio::test]
async fn the_documented_handshake_headers_are_what_an_upgrade_needs() {
    let s = Setup::new().await;
    let doc: Value = serde_json::from_str(vibe_dataplane::openapi::OPENAPI_JSON).unwrap();
    let required: Vec<String> = doc["paths"]["/ws"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "header" && p["required"] == true)
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        required,
        [
            "Upgrade",
            "Connection",
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Key"
        ]
    );
    let handshake = [
        ("Upgrade", "WebSocket"),
        ("Connection", "keep-alive, UPGRADE"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let get = |skip: Option<&'static str>, version: &'static str| {
        let mut request = s.instance.http.get(s.instance.url("/ws"));
        for (name, value) in handshake {
            if Some(name) == skip {
                continue;
            }
            let value = if name == "Sec-WebSocket-Version" {
                version
            } else {
                value
            };
            request = request.header(name, value);
        }
        request.send()
    };
    let response = get(None, "13").await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    drop(response);
    for (name, _) in handshake {
        let response = get(Some(name), "13").await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "without {name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"error": "Expected a WebSocket upgrade."}));
    }
    let response = get(None, "8").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "version 8");
}

#[tokio::test]
async fn app_bound_token_acts_only_as_its_app() {
    let s = Setup::new().await;
    let (status, body) = s
        .instance
        .post(
            "/api/v1/apps/token",
            Some(&s.token),
            None,
            json!({"appId": APP}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let app_token = body["accessToken"].as_str().unwrap().to_string();

    let mut ws = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "auth", "token": app_token})).await;
    assert_eq!(ws.next().await, json!({"status": "authenticated"}));
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");

    let mut ws = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "auth", "token": app_token, "appId": "https://other.example"}))
        .await;
    assert_eq!(ws.closed().await.0, 4001);
}

#[tokio::test]
async fn expired_token_closes_4001_unless_the_client_reauthenticates() {
    let s = Setup::with(|config| config.limits.access_token_ttl = Duration::from_secs(5)).await;

    // No re-auth: closed with 4001 once the token expires.
    let mut ws = s.socket_with(&s.instance.owner_token().await).await;
    let (code, reason) = ws.closed().await;
    assert_eq!((code, reason.as_str()), (4001, "Token expired."));

    // Re-auth with a fresh token before expiry keeps the socket and its subscriptions.
    let first = s.instance.owner_token().await;
    let mut ws = s.socket_with(&first).await;
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");
    // Expiry is in whole seconds: 2 s between the two tokens leaves the fresh one at least
    // 1 s of life after the first one's `exp` (a loaded machine or a store with a slower
    // change feed still delivers the push in time).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let fresh = s.instance.owner_token().await;
    ws.send(json!({"action": "auth", "token": fresh, "appId": APP}))
        .await;
    assert_eq!(ws.next().await, json!({"status": "authenticated"}));
    // Past the first token's expiry, by the server's own figure.
    let exp = s
        .instance
        .state
        .tokens
        .verify(&first)
        .expect("still valid")
        .exp;
    let first_expires = std::time::UNIX_EPOCH + Duration::from_secs(exp as u64);
    if let Ok(left) = first_expires.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(300)).await;
    }
    let (status, body) = s
        .instance
        .post(
            "/api/v1/data/write",
            Some(&fresh),
            Some(APP),
            json!({"collection": "notes", "data": {"n": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ws.next().await["data"]["n"], 1);
    assert_eq!(ws.closed().await.0, 4001, "the fresh token expires too");
}

// ---- bad input and limits ----

#[tokio::test]
async fn bad_frames_get_the_original_error() {
    let s = Setup::new().await;
    let mut ws = s.socket().await;
    let invalid = json!({"error": "Invalid message format."});
    for frame in [
        Message::Text("not json".into()),
        Message::Text(r#"{"action":"dance"}"#.into()),
        Message::Text(r#"{"action":"subscribe"}"#.into()),
        Message::Text(r#"{"action":"subscribe","collection":7}"#.into()),
        Message::Text(r#"{"action":"subscribe","collection":"notes","since":{"x":1}}"#.into()),
        Message::Binary(Bytes::from_static(b"\x00\x01")),
    ] {
        ws.send_raw(frame).await;
        assert_eq!(ws.next().await, invalid);
    }
    // Still usable afterwards.
    ws.send(json!({"action": "ping"})).await;
    assert_eq!(ws.next().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn frames_larger_than_the_socket_read_buffer_are_read_whole() {
    // Each socket starts with a 1 KiB read buffer: larger frames (a long token, any
    // padded message) must still arrive whole, in several reads, and the socket must stay
    // usable afterwards.
    let s = Setup::new().await;
    let mut ws = Ws::connect(&s.ws_url()).await;
    ws.send(json!({"action": "auth", "token": s.token, "appId": APP, "pad": "x".repeat(3000)}))
        .await;
    assert_eq!(ws.next().await, json!({"status": "authenticated"}));
    for size in [1_000, 5_000, 15_000] {
        ws.send(json!({"action": "ping", "pad": "y".repeat(size)}))
            .await;
        assert_eq!(ws.next().await, json!({"type": "pong"}), "{size}");
    }
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");
    s.write("notes", json!({"n": 1})).await;
    assert_eq!(ws.next().await["type"], "update");
}

#[tokio::test]
async fn an_unknown_since_is_refused_or_replays_nothing() {
    let s = Setup::new().await;
    let mut ws = s.socket().await;
    ws.send(json!({"action": "subscribe", "collection": "notes", "since": "garbage-seq"}))
        .await;
    let answer = ws.next().await;
    // CouchDB 3 answers 400 (→ error status); pouchdb-server accepts it leniently.
    assert!(
        answer == json!({"status": "subscribed", "collection": "notes"})
            || answer
                == json!({"status": "error", "collection": "notes",
                          "reason": "Invalid 'since' sequence."}),
        "{answer}"
    );
}

#[tokio::test]
async fn oversized_frame_closes_1009() {
    let s = Setup::new().await;
    let url = s
        .custom(RealtimeSettings {
            max_frame_bytes: 1024,
            ..RealtimeSettings::default()
        })
        .await;
    let mut ws = Ws::connect(&url).await;
    ws.send(json!({"action": "auth", "token": s.token, "appId": APP}))
        .await;
    assert_eq!(ws.next().await["status"], "authenticated");
    ws.send(json!({"action": "subscribe", "collection": "x".repeat(4096)}))
        .await;
    assert_eq!(ws.closed().await.0, 1009);

    // Before authentication too: the close says why instead of just dropping the socket.
    let mut ws = Ws::connect(&url).await;
    ws.send(json!({"action": "auth", "token": "x".repeat(4096), "appId": APP}))
        .await;
    assert_eq!(ws.closed().await.0, 1009);
}

#[tokio::test]
async fn message_flood_closes_4029() {
    let s = Setup::new().await;
    let url = s
        .custom(RealtimeSettings {
            messages_per_sec: 2,
            message_burst: 3,
            ..RealtimeSettings::default()
        })
        .await;
    let mut ws = Ws::connect(&url).await;
    ws.send(json!({"action": "auth", "token": s.token, "appId": APP}))
        .await;
    assert_eq!(ws.next().await["status"], "authenticated");
    for _ in 0..10 {
        ws.send(json!({"action": "ping"})).await;
    }
    let (code, reason) = ws.closed().await;
    assert_eq!((code, reason.as_str()), (4029, "Rate limit exceeded."));
}

#[tokio::test]
async fn subscriptions_per_socket_are_limited() {
    let s = Setup::new().await;
    s.grant(&[("read:notes", "always"), ("read:todos", "always")])
        .await;
    let url = s
        .custom(RealtimeSettings {
            max_subscriptions: 1,
            ..RealtimeSettings::default()
        })
        .await;
    let mut ws = Ws::connect(&url).await;
    ws.send(json!({"action": "auth", "token": s.token, "appId": APP}))
        .await;
    assert_eq!(ws.next().await["status"], "authenticated");
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");
    ws.send(json!({"action": "subscribe", "collection": "todos"}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"status": "denied", "collection": "todos",
               "reason": "Too many subscriptions on this socket (at most 1)."})
    );
}

#[tokio::test]
async fn origin_must_be_allowed() {
    let s = Setup::with(|config| config.allowed_origins = vec!["https://app.example".into()]).await;
    let with_origin = |origin: &'static str| {
        let mut request = s.ws_url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        request
    };
    match connect_async(with_origin("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::FORBIDDEN)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(
        connect_async(with_origin("https://app.example"))
            .await
            .is_ok()
    );
    let own: &'static str = Box::leak(s.instance.base.clone().into_boxed_str());
    assert!(connect_async(with_origin(own)).await.is_ok());
}

#[tokio::test]
async fn slow_consumer_is_closed_with_4008() {
    let s = Setup::with(|config| config.limits.max_body_bytes = 8 * 1024 * 1024).await;
    let url = s
        .custom(RealtimeSettings {
            hub: vibe_dataplane::realtime::HubSettings {
                capacity: 2,
                ..Default::default()
            },
            send_timeout: Duration::from_secs(60),
            ..RealtimeSettings::default()
        })
        .await;
    let mut ws = Ws::connect(&url).await;
    ws.send(json!({"action": "auth", "token": s.token, "appId": APP}))
        .await;
    assert_eq!(ws.next().await["status"], "authenticated");
    ws.send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(ws.next().await["status"], "subscribed");
    // ~12 MB of changes while this client reads nothing: more than the socket buffers
    // hold, so the session blocks on its socket while the feed moves on without it.
    let total = 120;
    for batch in 0..3 {
        let docs: Vec<Value> = (0..40)
            .map(|n| json!({"n": batch * 40 + n, "pad": "x".repeat(100_000)}))
            .collect();
        let (status, body) = s
            .instance
            .post(
                "/api/v1/data/write",
                Some(&s.token),
                Some(APP),
                json!({"collection": "notes", "data": docs}),
            )
            .await;
        assert!(status.is_success(), "{status} {body}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut updates = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, ws.0.next())
            .await
            .expect("frame")
        {
            Some(Ok(Message::Text(_))) => updates += 1,
            Some(Ok(Message::Close(Some(frame)))) => break Some(frame.code),
            Some(Ok(_)) => continue,
            _ => break None,
        }
        if updates == total {
            break None;
        }
    };
    assert_eq!(code, Some(CloseCode::from(4008)), "after {updates} updates");
    assert!(updates < total);
}

#[tokio::test]
async fn since_now_tells_where_to_resume_before_the_first_event() {
    let s = Setup::new().await;
    // Another socket keeps the database's reader running, and has seen `n: 1` go by.
    let mut watcher = s.socket().await;
    watcher
        .send(json!({"action": "subscribe", "collection": "notes"}))
        .await;
    assert_eq!(watcher.next().await["status"], "subscribed");
    s.write("notes", json!({"n": 1})).await;
    assert_eq!(watcher.next().await["data"]["n"], 1);

    // A client subscribing from now learns the position the live events follow...
    let mut ws = s.socket().await;
    ws.send(json!({"action": "subscribe", "collection": "notes", "since": "now"}))
        .await;
    let answer = ws.next().await;
    assert_eq!(answer["status"], "subscribed", "{answer}");
    assert_eq!(answer["collection"], "notes", "{answer}");
    let position = answer["seq"].clone();
    assert!(position.is_string() || position.is_number(), "{answer}");
    // ...and, disconnected before its first event, resumes from it: the change made
    // meanwhile is replayed, the one before it is not.
    drop(ws);
    let missed = s.write("notes", json!({"n": 2})).await;
    let mut ws = s.socket().await;
    ws.send(json!({"action": "subscribe", "collection": "notes", "since": position}))
        .await;
    assert_eq!(
        ws.next().await,
        json!({"status": "subscribed", "collection": "notes"})
    );
    let replayed = ws.next().await;
    assert_eq!(replayed["data"]["_id"], missed["id"], "{replayed}");
    assert_eq!(replayed["data"]["n"], 2, "{replayed}");
}
