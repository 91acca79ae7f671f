//! Token lifecycle and revocation of open streams (issue 15, items 3 and 4), against the
//! real router and pouchdb-server.
//!
//! - App tokens die with the owner session (refresh family) they were minted from and
//!   with the app registration they were minted for.
//! - Logout, refresh-token reuse, app deletion and grant revocation end every open
//!   WebSocket (4001), continuous sync feed (clean end) and longpoll (401) of the
//!   affected tokens within one second; the measured times are printed.
//! - A longpoll honours `timeout` although pouchdb-server ignores it.

mod common;

use std::time::{Duration, Instant};

use common::TestInstance;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

const APP: &str = "https://hostile.example";
/// The promise: a revoked credential's streams end within this.
const WITHIN: Duration = Duration::from_secs(1);
/// How long a test waits for anything before failing (well above [`WITHIN`]).
const WAIT: Duration = Duration::from_secs(10);

/// One owner login.
struct Session {
    access: String,
    refresh: String,
}

async fn login(instance: &TestInstance) -> Session {
    let tokens = instance.login().await;
    Session {
        access: tokens["accessToken"].as_str().unwrap().to_string(),
        refresh: tokens["refreshToken"].as_str().unwrap().to_string(),
    }
}

async fn app_token(instance: &TestInstance, owner: &str, app: &str) -> (StatusCode, Value) {
    instance
        .post(
            "/api/v1/apps/token",
            Some(owner),
            None,
            json!({ "appId": app }),
        )
        .await
}

async fn mint(instance: &TestInstance, owner: &str) -> String {
    let (status, body) = app_token(instance, owner, APP).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["accessToken"].as_str().unwrap().to_string()
}

async fn read(instance: &TestInstance, token: &str, collection: &str) -> StatusCode {
    instance
        .post(
            "/api/v1/data/read",
            Some(token),
            None,
            json!({ "collection": collection }),
        )
        .await
        .0
}

async fn logout(instance: &TestInstance, session: &Session) {
    let (status, body) = instance
        .post(
            "/api/v1/auth/logout",
            Some(&session.access),
            None,
            json!({ "refreshToken": session.refresh }),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// Refresh once (fine), then present the spent refresh token again: the family is revoked.
async fn reuse_refresh_token(instance: &TestInstance, session: &Session) {
    let body = json!({ "refreshToken": session.refresh });
    let (status, _) = instance
        .post("/api/v1/auth/refresh", None, None, body.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = instance
        .post("/api/v1/auth/refresh", None, None, body)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The kinds of revocation the promise covers.
#[derive(Debug, Clone, Copy)]
enum Revocation {
    Logout,
    RefreshReuse,
    AppDeleted,
    /// The whole set of grants sent again with one of them `never` (`vibe apps`' upsert).
    GrantRevoked,
    /// One grant set to `never` with `POST /api/v1/apps/grant` (the console's button).
    OneGrantSetToNever,
}

const ALL: [Revocation; 5] = [
    Revocation::Logout,
    Revocation::RefreshReuse,
    Revocation::AppDeleted,
    Revocation::GrantRevoked,
    Revocation::OneGrantSetToNever,
];

/// A fresh registration of [`APP`] with `grants` and an app token minted from a fresh
/// session; `revoke` then revokes it the way `kind` says.
struct Victim {
    session: Session,
    owner: String,
    token: String,
}

impl Victim {
    async fn new(instance: &TestInstance, grants: &[(&str, &str)]) -> Victim {
        let admin = instance.owner_token().await;
        instance.upsert_app(&admin, APP, grants).await;
        let session = login(instance).await;
        let token = mint(instance, &session.access).await;
        Victim {
            session,
            owner: admin,
            token,
        }
    }

    /// Revoke; returns when the revoking request was sent.
    async fn revoke(&self, instance: &TestInstance, kind: Revocation, grant: &str) -> Instant {
        let started = Instant::now();
        match kind {
            Revocation::Logout => logout(instance, &self.session).await,
            Revocation::RefreshReuse => reuse_refresh_token(instance, &self.session).await,
            Revocation::AppDeleted => {
                let path = format!("/api/v1/apps/{}", urlencode(APP));
                let (status, _) = instance
                    .call(Method::DELETE, &path, Some(&self.owner), None, None)
                    .await;
                assert_eq!(status, StatusCode::NO_CONTENT);
            }
            Revocation::GrantRevoked => {
                let grants = [
                    ("read:notes", "always"),
                    ("sync", "always"),
                    (grant, "never"),
                ];
                instance.upsert_app(&self.owner, APP, &grants).await;
            }
            Revocation::OneGrantSetToNever => {
                let (status, answer) = set_one_grant(instance, &self.owner, grant, "never").await;
                assert_eq!(status, StatusCode::OK, "{answer}");
            }
        }
        started
    }
}

/// `POST /api/v1/apps/grant`: one permission of [`APP`] set to `setting`.
async fn set_one_grant(
    instance: &TestInstance,
    owner: &str,
    permission: &str,
    setting: &str,
) -> (StatusCode, Value) {
    instance
        .post(
            "/api/v1/apps/grant",
            Some(owner),
            None,
            json!({ "appId": APP, "permission": permission, "setting": setting }),
        )
        .await
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn app_tokens_die_with_the_session_they_were_minted_from() {
    let instance = TestInstance::start().await;
    let admin = instance.owner_token().await;
    instance
        .upsert_app(&admin, APP, &[("read:notes", "always")])
        .await;

    // Logout.
    let session = login(&instance).await;
    let token = mint(&instance, &session.access).await;
    assert_eq!(read(&instance, &token, "notes").await, StatusCode::OK);
    logout(&instance, &session).await;
    assert_eq!(
        read(&instance, &token, "notes").await,
        StatusCode::UNAUTHORIZED
    );

    // Refresh-token reuse.
    let session = login(&instance).await;
    let token = mint(&instance, &session.access).await;
    assert_eq!(read(&instance, &token, "notes").await, StatusCode::OK);
    reuse_refresh_token(&instance, &session).await;
    assert_eq!(
        read(&instance, &token, "notes").await,
        StatusCode::UNAUTHORIZED
    );

    // Other sessions and their app tokens are not affected.
    let other = mint(&instance, &admin).await;
    assert_eq!(read(&instance, &other, "notes").await, StatusCode::OK);
}

#[tokio::test]
async fn a_re_registration_is_a_new_registration() {
    let instance = TestInstance::start().await;
    let admin = instance.owner_token().await;
    instance
        .upsert_app(&admin, APP, &[("read:notes", "always")])
        .await;
    let old = mint(&instance, &admin).await;
    assert_eq!(read(&instance, &old, "notes").await, StatusCode::OK);

    // Updating grants keeps the registration: the token keeps working, with new grants.
    instance
        .upsert_app(
            &admin,
            APP,
            &[("read:notes", "always"), ("read:diary", "always")],
        )
        .await;
    assert_eq!(read(&instance, &old, "diary").await, StatusCode::OK);

    // Deleted: dead. Registered again with more grants: still dead.
    let path = format!("/api/v1/apps/{}", urlencode(APP));
    let (status, _) = instance
        .call(Method::DELETE, &path, Some(&admin), None, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        read(&instance, &old, "notes").await,
        StatusCode::UNAUTHORIZED
    );
    instance
        .upsert_app(
            &admin,
            APP,
            &[
                ("read:notes", "always"),
                ("read:diary", "always"),
                ("read:secretz", "always"),
            ],
        )
        .await;
    for collection in ["notes", "diary", "secretz"] {
        assert_eq!(
            read(&instance, &old, collection).await,
            StatusCode::UNAUTHORIZED,
            "{collection}"
        );
    }
    // A token of the new registration works.
    let new = mint(&instance, &admin).await;
    assert_eq!(read(&instance, &new, "secretz").await, StatusCode::OK);
}

/// Open a WebSocket as the victim's app token, subscribed to `notes`.
async fn open_socket(
    instance: &TestInstance,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/ws", instance.base.replacen("http", "ws", 1));
    let (mut ws, _) = connect_async(url).await.expect("websocket connects");
    for frame in [
        json!({"action": "auth", "token": token, "appId": APP}),
        json!({"action": "subscribe", "collection": "notes"}),
    ] {
        ws.send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("answer")
                .expect("open")
                .expect("frame");
            if let Message::Text(_) = message {
                break;
            }
        }
    }
    ws
}

#[tokio::test]
async fn revocation_closes_websockets_within_a_second() {
    let instance = TestInstance::start().await;
    let mut figures = Vec::new();
    for kind in ALL {
        let victim = Victim::new(&instance, &[("read:notes", "always"), ("sync", "always")]).await;
        let mut ws = open_socket(&instance, &victim.token).await;
        let started = victim.revoke(&instance, kind, "read:notes").await;
        // Grant revocation ends the subscription it fed ("revoked"); every other kind
        // ends the socket with 4001.
        let outcome = loop {
            let message = tokio::time::timeout(WAIT, ws.next())
                .await
                .unwrap_or_else(|_| panic!("{kind:?}: nothing within {WAIT:?}"));
            match message {
                Some(Ok(Message::Close(Some(frame)))) => break format!("close {}", frame.code),
                Some(Ok(Message::Text(text))) if text.contains("\"revoked\"") => {
                    break "revoked".to_string();
                }
                Some(Ok(_)) => continue,
                other => panic!("{kind:?}: socket ended without a close frame: {other:?}"),
            }
        };
        let elapsed = started.elapsed();
        match kind {
            Revocation::GrantRevoked | Revocation::OneGrantSetToNever => {
                assert_eq!(outcome, "revoked", "{kind:?}")
            }
            _ => assert_eq!(outcome, "close 4001", "{kind:?}"),
        }
        figures.push((kind, elapsed));
        assert!(
            elapsed < WITHIN,
            "{kind:?}: WebSocket ended after {elapsed:?}"
        );
    }
    eprintln!("websocket ended after revocation: {figures:?}");
}

#[tokio::test]
async fn revocation_ends_continuous_sync_feeds_within_a_second() {
    let instance = TestInstance::start().await;
    let mut figures = Vec::new();
    for kind in ALL {
        let victim = Victim::new(&instance, &[("read:notes", "always"), ("sync", "always")]).await;
        let feed = instance
            .http
            .get(instance.url("/api/v1/sync/_changes?feed=continuous&since=now&include_docs=true"))
            .bearer_auth(&victim.token)
            .send()
            .await
            .unwrap();
        assert_eq!(feed.status(), StatusCode::OK, "{kind:?}");
        let mut stream = feed.bytes_stream();
        // Let the feed reach CouchDB before revoking.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = victim.revoke(&instance, kind, "sync").await;
        loop {
            match tokio::time::timeout(WAIT, stream.next()).await {
                Err(_) => panic!("{kind:?}: the feed still runs after {WAIT:?}"),
                Ok(None) => break,
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("{kind:?}: the feed broke instead of ending: {e}"),
            }
        }
        let elapsed = started.elapsed();
        figures.push((kind, elapsed));
        assert!(elapsed < WITHIN, "{kind:?}: feed ended after {elapsed:?}");
        // And the token cannot open a new one.
        let (status, _) = instance
            .get("/api/v1/sync/_changes", Some(&victim.token), None)
            .await;
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
            "{kind:?}: {status}"
        );
    }
    eprintln!("continuous feed ended after revocation: {figures:?}");
}

#[tokio::test]
async fn revocation_answers_waiting_longpolls_within_a_second() {
    let instance = TestInstance::start().await;
    let mut figures = Vec::new();
    for kind in ALL {
        let victim = Victim::new(&instance, &[("read:notes", "always"), ("sync", "always")]).await;
        let waiting = tokio::spawn(
            instance
                .http
                .get(instance.url("/api/v1/sync/_changes?feed=longpoll&since=now"))
                .bearer_auth(&victim.token)
                .timeout(WAIT)
                .send(),
        );
        feeds_open(&instance, 1).await;
        let started = victim.revoke(&instance, kind, "sync").await;
        let response = waiting
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{kind:?}: no answer: {e}"));
        let elapsed = started.elapsed();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{kind:?}");
        figures.push((kind, elapsed));
        assert!(
            elapsed < WITHIN,
            "{kind:?}: longpoll answered after {elapsed:?}"
        );
    }
    eprintln!("longpoll answered after revocation: {figures:?}");
}

#[tokio::test]
async fn owner_tokens_streams_end_with_their_session() {
    let instance = TestInstance::start().await;
    let session = login(&instance).await;
    let feed = instance
        .http
        .get(instance.url("/api/v1/sync/_changes?feed=continuous&since=now"))
        .bearer_auth(&session.access)
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    let mut stream = feed.bytes_stream();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    logout(&instance, &session).await;
    while let Some(chunk) = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the feed ends")
    {
        chunk.expect("clean end");
    }
    assert!(started.elapsed() < WITHIN, "{:?}", started.elapsed());
}

#[tokio::test]
async fn longpoll_honours_timeout() {
    let instance = TestInstance::start().await;
    let token = instance.owner_token().await;
    let started = Instant::now();
    let (status, body) = instance
        .get(
            "/api/v1/sync/_changes?feed=longpoll&since=now&timeout=1500",
            Some(&token),
            None,
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"], json!([]), "{body}");
    assert!(!body["last_seq"].is_null(), "{body}");
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_millis(3000),
        "answered after {elapsed:?}"
    );
    eprintln!("longpoll timeout=1500 answered after {elapsed:?}");
}

/// Wait until the data plane holds `n` sync feeds open (its `sync_feeds_open` gauge), i.e.
/// the requests reached it and were passed on to CouchDB.
async fn feeds_open(instance: &TestInstance, n: u64) {
    let started = Instant::now();
    loop {
        let text = instance.state.metrics.encode(&instance.state);
        let open = text
            .lines()
            .find_map(|l| l.strip_prefix("vibe_dataplane_sync_feeds_open "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        if open == Some(n) {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "sync feeds open: {open:?}, want {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// pouchdb-server sends a continuous feed's head only with its first change or heartbeat
/// (here a minute away). A revocation while the data plane still waits for that head is
/// answered at once (401), not when the head comes. (Apache CouchDB sends the head at
/// once: the feed is then open and ends cleanly.)
#[tokio::test]
async fn revocation_answers_a_feed_still_waiting_for_couchdb_within_a_second() {
    let instance = TestInstance::start().await;
    let mut figures = Vec::new();
    for kind in ALL {
        let victim = Victim::new(&instance, &[("read:notes", "always"), ("sync", "always")]).await;
        let waiting = tokio::spawn(
            instance
                .http
                .get(
                    instance.url("/api/v1/sync/_changes?feed=continuous&since=now&heartbeat=60000"),
                )
                .bearer_auth(&victim.token)
                .timeout(WAIT)
                .send(),
        );
        feeds_open(&instance, 1).await;
        let started = victim.revoke(&instance, kind, "sync").await;
        let response = waiting
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{kind:?}: no answer: {e}"));
        match response.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::OK => {
                let mut body = response.bytes_stream();
                while let Some(chunk) = body.next().await {
                    chunk.unwrap_or_else(|e| panic!("{kind:?}: the feed broke: {e}"));
                }
            }
            other => panic!("{kind:?}: {other}"),
        }
        let elapsed = started.elapsed();
        figures.push((kind, elapsed));
        assert!(elapsed < WITHIN, "{kind:?}: answered after {elapsed:?}");
        feeds_open(&instance, 0).await;
    }
    eprintln!("feed waiting for CouchDB answered after revocation: {figures:?}");
}

/// Revocations are stored: a fresh process of the same instance (same database, key and
/// public URL) refuses tokens of a family revoked before it started, also on its very
/// first request, before anything else loaded the system database.
#[tokio::test]
async fn a_new_process_refuses_tokens_of_families_revoked_before_it_started() {
    let instance = TestInstance::start().await;
    let admin = instance.owner_token().await;
    instance
        .upsert_app(&admin, APP, &[("read:notes", "always")])
        .await;
    let session = login(&instance).await;
    let token = mint(&instance, &session.access).await;
    logout(&instance, &session).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = vibe_dataplane::config::Config::new(
        &instance.base,
        common::couch_settings(&instance.couch),
        instance.signing_key.clone(),
    );
    config.db_prefix = instance.couch.db_prefix().to_string();
    config.owner = Some(instance.owner.did());
    let (_state, server) = common::serve(listener, config).await;
    let status = |token: String| {
        let http = instance.http.clone();
        async move {
            http.post(format!("http://{addr}/api/v1/data/read"))
                .bearer_auth(token)
                .json(&json!({ "collection": "notes" }))
                .send()
                .await
                .expect("answer")
                .status()
        }
    };
    assert_eq!(status(token).await, StatusCode::UNAUTHORIZED, "app token");
    assert_eq!(
        status(session.access.clone()).await,
        StatusCode::UNAUTHORIZED,
        "access token"
    );
    let fresh = mint(&instance, &admin).await;
    assert_eq!(
        status(fresh).await,
        StatusCode::OK,
        "a live session's token"
    );
    server.abort();
}

#[tokio::test]
async fn revocation_records_past_the_horizon_are_deleted_at_start_up() {
    let mut t = TestInstance::start().await;
    let db = t.state.system_db().await.expect("system db");
    let now = vibe_dataplane::state::now_unix();
    let horizon = vibe_dataplane::auth::tokens::REVOKED_FAMILY_HORIZON.as_secs() as i64;
    for (family, revoked_at) in [
        ("expired-family", now - horizon - 10),
        ("recent-family", now - 10),
    ] {
        db.put(
            &format!("revoked/{family}"),
            &json!({"family": family, "revokedAt": revoked_at, "collection": "revoked"}),
        )
        .await
        .expect("store a revocation record");
    }
    t.restart(|_| {}).await;
    let db = t.state.system_db().await.expect("system db after restart");
    assert!(
        db.get("revoked/expired-family")
            .await
            .expect("get")
            .is_none(),
        "a record no token can outlive is deleted"
    );
    assert!(
        db.get("revoked/recent-family")
            .await
            .expect("get")
            .is_some()
    );
    assert!(t.state.tokens.is_family_revoked("recent-family"));
    assert!(!t.state.tokens.is_family_revoked("expired-family"));
}

/// A process that runs for months deletes the records as they pass the horizon, not only
/// at its next start-up.
#[tokio::test]
async fn a_running_process_sweeps_records_past_the_horizon() {
    let t = TestInstance::start_with(|config| {
        config.limits.revocation_sweep = Duration::from_millis(200);
    })
    .await;
    let db = t.state.system_db().await.expect("system db");
    let now = vibe_dataplane::state::now_unix();
    let horizon = vibe_dataplane::auth::tokens::REVOKED_FAMILY_HORIZON.as_secs() as i64;
    for (family, revoked_at) in [
        ("expired-family", now - horizon - 10),
        ("recent-family", now - 10),
    ] {
        db.put(
            &format!("revoked/{family}"),
            &json!({"family": family, "revokedAt": revoked_at, "collection": "revoked"}),
        )
        .await
        .expect("store a revocation record");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while db
        .get("revoked/expired-family")
        .await
        .expect("get")
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the expired record is still stored after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        db.get("revoked/recent-family")
            .await
            .expect("get")
            .is_some(),
        "a record a token can still outlive is kept"
    );
    assert!(t.state.tokens.is_family_revoked("recent-family"));
}

/// Issue 19: revoking any grant of an app (`write:notes` here, which none of its streams
/// uses) ends all of its open streams as the other revocations do — the WebSocket with
/// 4003, the continuous sync feed cleanly, the waiting longpoll with 401 — within a second.
/// The token itself stays good for what is still granted.
#[tokio::test]
async fn a_revoked_grant_ends_every_open_stream_of_the_app_within_a_second() {
    let instance = TestInstance::start().await;
    let granted = [
        ("read:notes", "always"),
        ("write:notes", "always"),
        ("sync", "always"),
    ];
    let victim = Victim::new(&instance, &granted).await;
    let mut ws = open_socket(&instance, &victim.token).await;
    let feed = instance
        .http
        .get(instance.url("/api/v1/sync/_changes?feed=continuous&since=now"))
        .bearer_auth(&victim.token)
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    let mut continuous = feed.bytes_stream();
    let waiting = tokio::spawn(
        instance
            .http
            .get(instance.url("/api/v1/sync/_changes?feed=longpoll&since=now"))
            .bearer_auth(&victim.token)
            .timeout(WAIT)
            .send(),
    );
    feeds_open(&instance, 2).await;

    let started = Instant::now();
    let kept = [("read:notes", "always"), ("sync", "always")];
    instance.upsert_app(&victim.owner, APP, &kept).await;

    let socket = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await.expect("closes") {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (
                        u16::from(frame.code),
                        frame.reason.to_string(),
                        Instant::now(),
                    );
                }
                Some(Ok(Message::Text(text))) => panic!("only a close was due: {text}"),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    });
    let feed_ended = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(WAIT, continuous.next()).await {
                Err(_) => panic!("the continuous feed still runs after {WAIT:?}"),
                Ok(None) => return Instant::now(),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("the feed broke instead of ending: {e}"),
            }
        }
    });
    let longpoll = waiting.await.unwrap().expect("the longpoll is answered");
    let answered = Instant::now();
    assert_eq!(longpoll.status(), StatusCode::UNAUTHORIZED);
    let (code, reason, closed) = socket.await.unwrap();
    assert_eq!(
        (code, reason.as_str()),
        (4003, "Grants revoked; reconnect.")
    );
    let ended = feed_ended.await.unwrap();
    let figures = [
        ("WebSocket", closed - started),
        ("continuous feed", ended - started),
        ("longpoll", answered - started),
    ];
    eprintln!("a revoked grant ended the app's streams after {figures:?}");
    for (stream, took) in figures {
        assert!(
            took < WITHIN,
            "{stream} ended {took:?} after the revocation"
        );
    }

    // The next request needing the revoked grant is refused; the rest still works, and
    // new streams open (the token was not revoked, only the grant).
    let (status, _) = instance
        .post(
            "/api/v1/data/write",
            Some(&victim.token),
            None,
            json!({ "collection": "notes", "data": { "n": 1 } }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        read(&instance, &victim.token, "notes").await,
        StatusCode::OK
    );
    let _reopened = open_socket(&instance, &victim.token).await;
}

/// Issue 19: only a change that takes access away ends an app's open streams. Only
/// `always` allows anything (`ask` is a grant the owner has not given yet), so setting a
/// permission from `ask` to `never` — as the console's "Grant"/"Revoke" never does, but the
/// API allows — takes nothing away: the WebSocket and the continuous sync feed stay open
/// and keep being served. Setting one from `always` to `ask` takes it away, exactly as
/// `never` or dropping it does: both end within a second (4003 for the socket).
#[tokio::test]
async fn ask_to_never_ends_nothing_and_always_to_ask_ends_the_streams() {
    let instance = TestInstance::start().await;
    let victim = Victim::new(
        &instance,
        &[
            ("read:notes", "always"),
            ("sync", "always"),
            ("write:notes", "ask"),
        ],
    )
    .await;
    let mut ws = open_socket(&instance, &victim.token).await;
    let feed = instance
        .http
        .get(instance.url("/api/v1/sync/_changes?feed=continuous&since=now"))
        .bearer_auth(&victim.token)
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    let mut continuous = feed.bytes_stream();
    feeds_open(&instance, 1).await;

    // ask → never: nothing was allowed, nothing is taken away.
    let refused = [
        ("read:notes", "always"),
        ("sync", "always"),
        ("write:notes", "never"),
    ];
    instance.upsert_app(&victim.owner, APP, &refused).await;
    let quiet = tokio::time::timeout(Duration::from_millis(1500), ws.next()).await;
    assert!(quiet.is_err(), "the socket heard something: {quiet:?}");
    match tokio::time::timeout(Duration::from_millis(200), continuous.next()).await {
        Err(_) | Ok(Some(Ok(_))) => {}
        Ok(other) => panic!("the continuous feed ended: {other:?}"),
    }
    feeds_open(&instance, 1).await;
    // The socket is still served: a new note reaches it.
    let (status, written) = instance
        .post(
            "/api/v1/data/write",
            Some(&victim.owner),
            Some(APP),
            json!({ "collection": "notes", "data": { "title": "after ask to never" } }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the app may not write: {written}"
    );
    let writer = "https://writer.example";
    instance
        .upsert_app(&victim.owner, writer, &[("write:notes", "always")])
        .await;
    let (status, written) = instance
        .post(
            "/api/v1/data/write",
            Some(&victim.owner),
            Some(writer),
            json!({ "collection": "notes", "data": { "title": "after ask to never" } }),
        )
        .await;
    assert!(status.is_success(), "{status} {written}");
    let pushed = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a push") {
            Some(Ok(Message::Text(text))) => break text.to_string(),
            Some(Ok(Message::Close(frame))) => panic!("the socket closed: {frame:?}"),
            Some(Ok(_)) => continue,
            other => panic!("the socket ended: {other:?}"),
        }
    };
    assert!(pushed.contains("after ask to never"), "{pushed}");

    // always → ask: `read:notes` is taken away; the socket closes, the feed ends.
    let started = Instant::now();
    let asked = [
        ("read:notes", "ask"),
        ("sync", "always"),
        ("write:notes", "never"),
    ];
    instance.upsert_app(&victim.owner, APP, &asked).await;
    let (code, reason) = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("closes") {
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(_)) => continue,
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    let closed = started.elapsed();
    assert_eq!(
        (code, reason.as_str()),
        (4003, "Grants revoked; reconnect.")
    );
    let ended = loop {
        match tokio::time::timeout(WAIT, continuous.next()).await {
            Err(_) => panic!("the continuous feed still runs after {WAIT:?}"),
            Ok(None) => break started.elapsed(),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("the feed broke instead of ending: {e}"),
        }
    };
    eprintln!("always → ask ended the socket after {closed:?}, the feed after {ended:?}");
    assert!(closed < WITHIN && ended < WITHIN, "{closed:?} {ended:?}");
    assert_eq!(
        read(&instance, &victim.token, "notes").await,
        StatusCode::FORBIDDEN
    );
}

/// Issue 19: the console's grant button (`POST /api/v1/apps/grant`) reaches open streams
/// exactly as an upsert does: setting one grant the app holds to `never` closes its
/// WebSocket with 4003 within a second, while granting one more ends nothing; the other
/// grants are kept, so the token still reads what it may.
#[tokio::test]
async fn one_grant_set_to_never_through_the_grant_route_closes_the_apps_websocket() {
    let instance = TestInstance::start().await;
    let victim = Victim::new(
        &instance,
        &[
            ("read:notes", "always"),
            ("write:notes", "always"),
            ("read:diary", "ask"),
        ],
    )
    .await;
    let mut ws = open_socket(&instance, &victim.token).await;

    // Granting more takes nothing away: the socket stays open.
    let (status, answer) = set_one_grant(&instance, &victim.owner, "read:diary", "always").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let quiet = tokio::time::timeout(Duration::from_millis(1500), ws.next()).await;
    assert!(quiet.is_err(), "the socket heard something: {quiet:?}");

    let started = Instant::now();
    let (status, answer) = set_one_grant(&instance, &victim.owner, "write:notes", "never").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (code, reason) = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("closes") {
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Text(text))) => panic!("only a close was due: {text}"),
            Some(Ok(_)) => continue,
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    let took = started.elapsed();
    eprintln!("one grant set to never closed the socket after {took:?}");
    assert_eq!(
        (code, reason.as_str()),
        (4003, "Grants revoked; reconnect.")
    );
    assert!(took < WITHIN, "closed {took:?} after the revocation");
    // Only `write:notes` went: the token still reads both collections.
    for collection in ["notes", "diary"] {
        assert_eq!(
            read(&instance, &victim.token, collection).await,
            StatusCode::OK,
            "{collection}"
        );
    }
    let (status, _) = instance
        .post(
            "/api/v1/data/write",
            Some(&victim.token),
            None,
            json!({ "collection": "notes", "data": { "n": 1 } }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
