//! Revocation against a hostile app or a lost device, black-box (issue 15, items 3, 4
//! and 8): the built `vibe-dataplane` over HTTP and WebSocket, on pouchdb-server or (with
//! `VIBE_TEST_COUCHDB_URL`) an existing Apache CouchDB.
//!
//! For each revocation — logout, refresh-token reuse, app deletion, grant revocation,
//! device revocation — the revoked credential holds open at once a realtime WebSocket, a
//! continuous sync `_changes` feed and a waiting longpoll; each must end within one second
//! of the revoking request: the WebSocket with close code 4001 (a revoked `read:` grant
//! first ends its subscription, with `"status":"revoked"`, then the socket with 4003), the
//! continuous feed cleanly, the longpoll answered (401). Devices sync only, so they hold
//! the two feeds.
//!
//! Streams are known to be open before revoking from what the instance says (the
//! WebSocket's subscribe answer, the feed's response head, and the data plane's
//! `sync_feeds_open` gauge for the longpoll), never from a pause.

mod common;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use vibe_cli::client::{Client, Instance, TokenSource, Tokens};
use vibe_e2e::stack::{DataPlane, DataPlaneConfig};
use vibe_identity::Keypair;
use vibe_test_support::CouchServer;

const APP: &str = "https://hostile-app.example";
/// The promise.
const WITHIN: Duration = Duration::from_secs(1);
/// How long anything may take before the test gives up (well above [`WITHIN`]).
const WAIT: Duration = Duration::from_secs(20);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A claimed instance serving metrics, and its owner.
struct Claimed {
    _couch: CouchServer,
    plane: DataPlane,
    metrics: String,
    key: Keypair,
    owner: Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Claimed {
    async fn start() -> Self {
        let couch = CouchServer::start().await.expect("CouchDB");
        let mut config = DataPlaneConfig::claimable(&couch);
        let metrics = format!("127.0.0.1:{}", free_port());
        config
            .extra_env
            .push(("VIBE_METRICS_ADDR".into(), metrics.clone()));
        let plane = DataPlane::start(config).await.expect("data plane");
        let key = Keypair::generate();
        let instance = plane.instance();
        instance
            .claim(&key, plane.config.claim_code.as_deref().unwrap())
            .await
            .expect("claim");
        let owner = Client::new(
            instance.clone(),
            TokenSource::session(instance.login(&key).await.expect("login")),
        );
        Self {
            _couch: couch,
            plane,
            metrics: format!("http://{metrics}/metrics"),
            key,
            owner,
        }
    }

    fn instance(&self) -> Instance {
        self.plane.instance()
    }

    /// A new owner session (its own refresh family).
    async fn login(&self) -> Tokens {
        self.instance().login(&self.key).await.expect("login")
    }

    /// Register [`APP`] with `sync` and `read:notes` (again, after a deletion).
    async fn grant_app(&self) {
        self.owner
            .set_grants(
                APP,
                Some("Hostile"),
                &["sync".to_string(), "read:notes".to_string()],
                "always",
            )
            .await
            .expect("grant");
    }

    /// An app token for [`APP`] minted from `session`.
    async fn app_token(&self, session: &Tokens) -> String {
        let client = Client::new(self.instance(), TokenSource::fixed(&session.access_token));
        client.app_token(APP).await.expect("app token").access_token
    }

    /// The data plane's `sync_feeds_open` gauge.
    async fn feeds_open(&self) -> u64 {
        let text = reqwest::get(&self.metrics)
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix("vibe_dataplane_sync_feeds_open "))
            .and_then(|v| v.trim().parse().ok())
            .expect("sync_feeds_open gauge")
    }

    async fn wait_feeds_open(&self, n: u64) {
        common::eventually(WAIT, &format!("{n} sync feeds open"), || async {
            (self.feeds_open().await == n).then_some(())
        })
        .await
    }

    fn sync_url(&self, query: &str) -> String {
        format!("{}/api/v1/sync/_changes?{query}", self.plane.url)
    }

    /// A request with the plain status of `GET /api/v1/data` style calls as `credential`.
    async fn sync_status(&self, authorization: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{}/api/v1/sync/", self.plane.url))
            .header("Authorization", authorization)
            .send()
            .await
            .expect("answer")
            .status()
            .as_u16()
    }

    async fn read_status(&self, token: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("{}/api/v1/data/read", self.plane.url))
            .bearer_auth(token)
            .json(&json!({ "collection": "notes" }))
            .send()
            .await
            .expect("answer")
            .status()
            .as_u16()
    }
}

/// The streams one credential holds open.
struct Streams {
    socket: Option<Socket>,
    continuous: tokio::task::JoinHandle<Result<Instant, String>>,
    longpoll: tokio::task::JoinHandle<Result<(u16, Instant), String>>,
}

/// Open a WebSocket authenticated with `token`, subscribed to `notes`.
async fn open_socket(claimed: &Claimed, token: &str) -> Socket {
    let (mut ws, _) = tokio_tungstenite::connect_async(claimed.instance().websocket_url().as_str())
        .await
        .expect("WebSocket opens");
    for frame in [
        json!({ "action": "auth", "token": token, "appId": APP }),
        json!({ "action": "subscribe", "collection": "notes" }),
    ] {
        ws.send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
        let answer = loop {
            match tokio::time::timeout(WAIT, ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => break text.to_string(),
                Ok(Some(Ok(_))) => continue,
                other => panic!("no answer to {frame}: {other:?}"),
            }
        };
        assert!(!answer.contains("error"), "{frame} → {answer}");
    }
    ws
}

/// Open the streams of `authorization` (`Bearer …` or a device's `Basic …`); with
/// `socket_token` also a WebSocket. Returns once all are open at the data plane.
async fn open_streams(
    claimed: &Claimed,
    authorization: &str,
    socket_token: Option<&str>,
) -> Streams {
    // A heartbeat makes pouchdb-server send the feed's head within a second.
    let response = reqwest::Client::new()
        .get(claimed.sync_url("feed=continuous&since=now&include_docs=true&heartbeat=1000"))
        .header("Authorization", authorization)
        .send()
        .await
        .expect("feed answers");
    assert_eq!(response.status().as_u16(), 200, "continuous feed opens");
    let mut body = response.bytes_stream();
    let continuous = tokio::spawn(async move {
        while let Some(chunk) = body.next().await {
            chunk.map_err(|e| format!("the feed broke instead of ending: {e}"))?;
        }
        Ok(Instant::now())
    });
    let longpoll = tokio::spawn({
        let request = reqwest::Client::new()
            .get(claimed.sync_url("feed=longpoll&since=now"))
            .header("Authorization", authorization)
            .timeout(WAIT);
        async move {
            let response = request.send().await.map_err(|e| e.to_string())?;
            Ok((response.status().as_u16(), Instant::now()))
        }
    });
    claimed.wait_feeds_open(2).await;
    let socket = match socket_token {
        Some(token) => Some(open_socket(claimed, token).await),
        None => None,
    };
    Streams {
        socket,
        continuous,
        longpoll,
    }
}

/// How the WebSocket ended.
#[derive(Debug, PartialEq)]
enum SocketEnd {
    Closed(u16),
    SubscriptionRevoked,
}

async fn socket_end(mut ws: Socket) -> (SocketEnd, Instant) {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the WebSocket ends");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (SocketEnd::Closed(frame.code.into()), Instant::now());
            }
            Some(Ok(Message::Text(text))) if text.contains("\"revoked\"") => {
                return (SocketEnd::SubscriptionRevoked, Instant::now());
            }
            Some(Ok(_)) => continue,
            other => panic!("the WebSocket ended without a close frame: {other:?}"),
        }
    }
}

/// Wait for every stream to end and check each did within [`WITHIN`] of `revoked`.
/// Returns the slowest end.
async fn ended_within(
    what: &str,
    streams: Streams,
    revoked: Instant,
    socket: SocketEnd,
) -> Duration {
    let mut times = Vec::new();
    if let Some(ws) = streams.socket {
        let (end, at) = socket_end(ws).await;
        assert_eq!(end, socket, "{what}: WebSocket");
        times.push(("WebSocket", at - revoked));
    }
    let ended = tokio::time::timeout(WAIT, streams.continuous)
        .await
        .unwrap_or_else(|_| panic!("{what}: the continuous feed still runs after {WAIT:?}"))
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    times.push(("continuous feed", ended - revoked));
    let (status, answered) = tokio::time::timeout(WAIT, streams.longpoll)
        .await
        .unwrap_or_else(|_| panic!("{what}: the longpoll is unanswered after {WAIT:?}"))
        .unwrap()
        .unwrap_or_else(|e| panic!("{what}: longpoll: {e}"));
    assert_eq!(status, 401, "{what}: longpoll answer");
    times.push(("longpoll", answered - revoked));
    eprintln!("{what}: ended after {times:?}");
    for (stream, took) in &times {
        assert!(
            took < &WITHIN,
            "{what}: {stream} ended {took:?} after the revocation"
        );
    }
    times.iter().map(|(_, t)| *t).max().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_ends_websockets_feeds_and_longpolls_within_a_second() {
    let claimed = Claimed::start().await;
    claimed.grant_app().await;
    let mut slowest = Vec::new();

    // Logout of the session the app token was minted from.
    let session = claimed.login().await;
    let token = claimed.app_token(&session).await;
    let streams = open_streams(&claimed, &format!("Bearer {token}"), Some(&token)).await;
    let revoked = Instant::now();
    claimed.instance().logout(&session).await.expect("logout");
    slowest.push((
        "logout",
        ended_within("logout", streams, revoked, SocketEnd::Closed(4001)).await,
    ));
    assert_eq!(
        claimed.read_status(&token).await,
        401,
        "app token after logout"
    );
    assert_eq!(
        claimed.read_status(&session.access_token).await,
        401,
        "the session's access token after logout"
    );

    // Refresh-token reuse: the spent token presented again revokes the family.
    let session = claimed.login().await;
    let token = claimed.app_token(&session).await;
    let streams = open_streams(&claimed, &format!("Bearer {token}"), Some(&token)).await;
    let instance = claimed.instance();
    let rotated = instance
        .refresh(&session.refresh_token)
        .await
        .expect("refresh");
    let revoked = Instant::now();
    assert!(
        instance.refresh(&session.refresh_token).await.is_err(),
        "reuse refused"
    );
    slowest.push((
        "refresh-token reuse",
        ended_within(
            "refresh-token reuse",
            streams,
            revoked,
            SocketEnd::Closed(4001),
        )
        .await,
    ));
    assert_eq!(claimed.read_status(&token).await, 401);
    assert_eq!(
        claimed.read_status(&rotated.access_token).await,
        401,
        "the rotated session too"
    );

    // App deleted.
    let session = claimed.login().await;
    let token = claimed.app_token(&session).await;
    let streams = open_streams(&claimed, &format!("Bearer {token}"), Some(&token)).await;
    let revoked = Instant::now();
    claimed.owner.remove_app(APP).await.expect("app deleted");
    slowest.push((
        "app deleted",
        ended_within("app deleted", streams, revoked, SocketEnd::Closed(4001)).await,
    ));

    // Grants revoked: `sync` ends the feeds, `read:notes` the WebSocket's subscription.
    claimed.grant_app().await;
    let token = claimed.app_token(&session).await;
    let streams = open_streams(&claimed, &format!("Bearer {token}"), Some(&token)).await;
    let revoked = Instant::now();
    claimed
        .owner
        .set_grants(
            APP,
            None,
            &["sync".to_string(), "read:notes".to_string()],
            "never",
        )
        .await
        .expect("grants revoked");
    slowest.push((
        "grants revoked",
        ended_within(
            "grants revoked",
            streams,
            revoked,
            SocketEnd::SubscriptionRevoked,
        )
        .await,
    ));

    // Device revoked (owner device, and a device of the app).
    claimed.grant_app().await;
    for app in [None, Some(APP)] {
        let device = claimed
            .owner
            .register_device("phone", app, &[])
            .await
            .expect("device registered");
        let authorization = device.credentials.authorization();
        let streams = open_streams(&claimed, &authorization, None).await;
        let revoked = Instant::now();
        claimed
            .owner
            .revoke_device(&device.device_id)
            .await
            .expect("device revoked");
        slowest.push((
            "device revoked",
            ended_within("device revoked", streams, revoked, SocketEnd::Closed(4001)).await,
        ));
        assert_eq!(claimed.sync_status(&authorization).await, 401);
    }
    let listed = claimed.owner.list_devices().await.expect("devices");
    assert_eq!(listed["devices"], json!([]));
    eprintln!("slowest stream end per revocation: {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_do_not_outlive_their_family_or_their_registration() {
    let claimed = Claimed::start().await;
    claimed.grant_app().await;

    // Minted from a family that is revoked afterwards, or already revoked: refused.
    let session = claimed.login().await;
    let token = claimed.app_token(&session).await;
    assert_eq!(claimed.read_status(&token).await, 200);
    let instance = claimed.instance();
    instance.logout(&session).await.expect("logout");
    assert_eq!(claimed.read_status(&token).await, 401);
    let minted = Client::new(instance.clone(), TokenSource::fixed(&session.access_token))
        .app_token(APP)
        .await;
    assert!(
        minted.is_err(),
        "a revoked session mints nothing: {minted:?}"
    );

    // Deleted and registered again with more grants: old tokens stay dead.
    let session = claimed.login().await;
    let old = claimed.app_token(&session).await;
    let device = claimed
        .owner
        .register_device("tablet", Some(APP), &[])
        .await
        .expect("device");
    let device_auth = device.credentials.authorization();
    assert_eq!(claimed.sync_status(&device_auth).await, 200);
    claimed.owner.remove_app(APP).await.expect("deleted");
    claimed
        .owner
        .set_grants(
            APP,
            Some("Hostile"),
            &[
                "sync".to_string(),
                "read:notes".to_string(),
                "read:secretz".to_string(),
            ],
            "always",
        )
        .await
        .expect("registered again");
    assert_eq!(claimed.read_status(&old).await, 401, "old app token");
    assert_eq!(claimed.sync_status(&format!("Bearer {old}")).await, 401);
    assert_eq!(
        claimed.sync_status(&device_auth).await,
        401,
        "old app device"
    );
    let fresh = claimed.app_token(&session).await;
    assert_eq!(claimed.read_status(&fresh).await, 200, "a new token works");
}

/// Open a continuous feed on `base` as `authorization`; resolves when it ended cleanly.
async fn continuous_on(base: &str, authorization: &str) -> tokio::task::JoinHandle<Instant> {
    let response = reqwest::Client::new()
        .get(format!(
            "{base}/api/v1/sync/_changes?feed=continuous&since=now&heartbeat=1000"
        ))
        .header("Authorization", authorization)
        .send()
        .await
        .expect("feed answers");
    assert_eq!(response.status().as_u16(), 200, "continuous feed opens");
    let mut body = response.bytes_stream();
    tokio::spawn(async move {
        while let Some(chunk) = body.next().await {
            chunk.expect("the feed ends cleanly, not broken");
        }
        Instant::now()
    })
}

async fn status_on(base: &str, authorization: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/api/v1/sync/"))
        .header("Authorization", authorization)
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

/// Revocations are stored in the instance's system database: a second replica of the
/// instance (same database, key and public URL) refuses what the first revoked, and ends
/// its own streams of it within a second; a restarted data plane still refuses tokens of
/// a family revoked before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_replica_and_survive_a_restart() {
    let mut claimed = Claimed::start().await;
    claimed.grant_app().await;
    let mut config = claimed.plane.config.clone();
    config.public_url = Some(claimed.plane.url.clone());
    config
        .extra_env
        .retain(|(name, _)| name != "VIBE_METRICS_ADDR");
    let replica = DataPlane::start(config).await.expect("second replica");
    let b = replica.url.clone();

    // Logout on the first replica.
    let session = claimed.login().await;
    let token = claimed.app_token(&session).await;
    let bearer = format!("Bearer {token}");
    let owner_bearer = format!("Bearer {}", session.access_token);
    assert_eq!(status_on(&b, &bearer).await, 200);
    let feed = continuous_on(&b, &bearer).await;
    let revoked = Instant::now();
    claimed.instance().logout(&session).await.expect("logout");
    let ended = tokio::time::timeout(WAIT, feed)
        .await
        .expect("the replica's feed ends")
        .unwrap();
    eprintln!("logout: replica's feed ended after {:?}", ended - revoked);
    assert!(ended - revoked < WITHIN, "{:?}", ended - revoked);
    assert_eq!(
        status_on(&b, &bearer).await,
        401,
        "app token on the replica"
    );
    assert_eq!(
        status_on(&b, &owner_bearer).await,
        401,
        "access token on the replica"
    );

    // Device revoked on the first replica.
    let device = claimed
        .owner
        .register_device("laptop", None, &[])
        .await
        .expect("device");
    let device_auth = device.credentials.authorization();
    let feed = continuous_on(&b, &device_auth).await;
    let revoked = Instant::now();
    claimed
        .owner
        .revoke_device(&device.device_id)
        .await
        .expect("revoked");
    let ended = tokio::time::timeout(WAIT, feed)
        .await
        .expect("the replica's device feed ends")
        .unwrap();
    eprintln!(
        "device revoked: replica's feed ended after {:?}",
        ended - revoked
    );
    assert!(ended - revoked < WITHIN, "{:?}", ended - revoked);
    assert_eq!(
        status_on(&b, &device_auth).await,
        401,
        "device on the replica"
    );

    // App deleted on the first replica.
    let other = claimed.login().await;
    let app_token = format!("Bearer {}", claimed.app_token(&other).await);
    assert_eq!(status_on(&b, &app_token).await, 200);
    claimed.owner.remove_app(APP).await.expect("deleted");
    common::eventually(WAIT, "the replica refuses the deleted app", || async {
        (status_on(&b, &app_token).await == 401).then_some(())
    })
    .await;

    // A restart forgets nothing: the family revoked before it stays revoked.
    claimed.plane.restart().await.expect("restart");
    let a = claimed.plane.url.clone();
    assert_eq!(
        status_on(&a, &owner_bearer).await,
        401,
        "access token after restart"
    );
    assert_eq!(
        claimed.read_status(&token).await,
        401,
        "app token after restart"
    );
    assert_eq!(
        status_on(&a, &device_auth).await,
        401,
        "device after restart"
    );
    // … while the live session still works.
    let fresh = claimed.login().await;
    assert_eq!(
        status_on(&a, &format!("Bearer {}", fresh.access_token)).await,
        200
    );
}
