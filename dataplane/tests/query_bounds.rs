//! Bounded queries (issue 15, item 2), through the real router against a real
//! pouchdb-server: filters over a bound, unsafe `$regex` patterns, sorts on fields the
//! instance does not allow and sort indexes past the cap are refused with a 400 naming the
//! bound; an app over its request rate gets a 429 naming it, with `Retry-After`, while the
//! owner's other apps go on; a read past its deadline answers 503 and drops its store
//! connection, and a second read of the same app meanwhile is over its concurrency. Blob
//! and sync requests count against the same per-app rate; sync requests naming more ids
//! than `query.max_sync_ids` are refused.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestInstance;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vibe_dataplane::config::Config;

const APP: &str = "https://hostile.example";
const OTHER: &str = "https://other.example";

struct Setup {
    t: TestInstance,
    owner: String,
    app_token: String,
}

async fn app_token(t: &TestInstance, owner: &str, app: &str) -> String {
    token_with(
        t,
        owner,
        app,
        &[("read:notes", "always"), ("write:notes", "always")],
    )
    .await
}

/// An instance with a few notes and a token of an app that may read and write them.
async fn setup(configure: impl FnOnce(&mut Config)) -> Setup {
    let t = TestInstance::start_with(configure).await;
    let owner = t.owner_token().await;
    let app_token = app_token(&t, &owner, APP).await;
    let notes: Vec<Value> = (0..5)
        .map(|i| json!({"n": i, "title": format!("hello {i}"), "createdAt": i, "order": 5 - i}))
        .collect();
    let (status, body) = t
        .post(
            "/api/v1/data/write",
            Some(&app_token),
            None,
            json!({"collection": "notes", "data": notes}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Setup {
        t,
        owner,
        app_token,
    }
}

impl Setup {
    async fn read(&self, body: Value) -> (StatusCode, Value) {
        self.t
            .post("/api/v1/data/read", Some(&self.app_token), None, body)
            .await
    }

    /// A read that must be refused with 400 naming `bound`.
    async fn refused(&self, body: Value, bound: &str) {
        let (status, answer) = self.read(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(bound),
            "{body}: the refusal should name {bound}: {answer}"
        );
    }
}

fn notes(filter: Value) -> Value {
    json!({"collection": "notes", "filter": filter})
}

#[tokio::test]
async fn filters_over_a_bound_are_refused_naming_it() {
    let s = setup(|_| {}).await;
    let ints = |n: i64| (0..n).collect::<Vec<_>>();
    let clauses = |n: i64| (0..n).map(|i| json!({"n": i})).collect::<Vec<_>>();
    // The attacks, and each bound just past its default.
    for (filter, bound) in [
        (
            json!({"n": {"$in": ints(100_000)}}),
            "query.max_in_items = 100",
        ),
        (json!({"$or": clauses(50_000)}), "query.max_or_items = 16"),
        (json!({"n": {"$in": ints(101)}}), "query.max_in_items = 100"),
        (
            json!({"n": {"$nin": ints(101)}}),
            "query.max_in_items = 100",
        ),
        (json!({"$or": clauses(17)}), "query.max_or_items = 16"),
        (json!({"$and": clauses(17)}), "query.max_or_items = 16"),
        (
            Value::Object((0..257).map(|i| (format!("f{i}"), json!(i))).collect()),
            "query.max_clauses = 256",
        ),
        (
            json!({"$or": (0..3).map(|j| json!({"n": {"$in": (0..100).map(|i| j * 100 + i).collect::<Vec<_>>()}})).collect::<Vec<_>>()}),
            "query.max_clauses = 256",
        ),
        (
            json!({"a": {"$not": {"$not": {"$not": {"$not": {"$not": {"$not": {"$not": {"$eq": 1}}}}}}}}}),
            "query.max_depth = 8",
        ),
        (
            json!({"title": "x".repeat(1025)}),
            "query.max_string_bytes = 1024",
        ),
        (
            json!({"title": {"$regex": format!("^{}", "a".repeat(128))}}),
            "query.max_regex_bytes = 128",
        ),
        (
            json!({"title": {"$regex": "^h"}, "n": {"$regex": "^1"}, "x": {"$regex": "^x"}}),
            "query.max_regexes = 2",
        ),
    ] {
        s.refused(notes(filter), bound).await;
    }
    // The largest allowed ones pass.
    let (status, answer) = s
        .read(notes(json!({"n": {"$in": ints(100)}, "$or": clauses(16)})))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["docs"].as_array().map(Vec::len), Some(5), "{answer}");
}

#[tokio::test]
async fn regexes_that_can_backtrack_are_refused() {
    let s = setup(|_| {}).await;
    for pattern in [
        "^(a+)+$",
        "^(a|aa)*$",
        "(x+x+)+y",
        ".*a.*b",
        "(a)\\1",
        "(?=a)a",
    ] {
        s.refused(
            notes(json!({"title": {"$regex": pattern}})),
            "query.safe_regex",
        )
        .await;
    }
    let (status, answer) = s
        .read(notes(json!({"title": {"$regex": "^hello [0-2]$"}})))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["docs"].as_array().map(Vec::len), Some(3), "{answer}");
}

#[tokio::test]
async fn sorts_only_on_allowed_fields() {
    let s = setup(|_| {}).await;
    s.refused(
        json!({"collection": "notes", "sort": ["n"]}),
        "query.sort_fields = createdAt,updatedAt,name,title,date,order",
    )
    .await;
    let (status, _) = s
        .read(json!({"collection": "notes", "sort": ["createdAt", "secret"]}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, answer) = s
        .read(json!({"collection": "notes", "sort": [{"createdAt": "desc"}]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let order: Vec<i64> = answer["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["createdAt"].as_i64().unwrap())
        .collect();
    assert_eq!(order, vec![4, 3, 2, 1, 0]);
}

#[tokio::test]
async fn sort_indexes_are_capped_across_restarts() {
    let mut s = setup(|c| {
        c.query.sort_fields = vec!["createdAt".into(), "order".into(), "n".into()];
        c.query.max_sort_indexes = 2;
    })
    .await;
    for sort in [json!(["createdAt"]), json!(["order"]), json!(["createdAt"])] {
        let (status, answer) = s.read(json!({"collection": "notes", "sort": sort})).await;
        assert_eq!(status, StatusCode::OK, "{sort}: {answer}");
    }
    s.refused(
        json!({"collection": "notes", "sort": ["n"]}),
        "query.max_sort_indexes = 2",
    )
    .await;
    s.refused(
        json!({"collection": "notes", "sort": ["order", "createdAt"]}),
        "query.max_sort_indexes = 2",
    )
    .await;
    // A new process counts the indexes in the store, not in its memory.
    s.t.restart(|c| {
        c.query.sort_fields = vec!["createdAt".into(), "order".into(), "n".into()];
        c.query.max_sort_indexes = 2;
    })
    .await;
    s.owner = s.t.owner_token().await;
    s.app_token = app_token(&s.t, &s.owner, APP).await;
    let (status, answer) = s
        .read(json!({"collection": "notes", "sort": ["order"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    s.refused(
        json!({"collection": "notes", "sort": ["n"]}),
        "query.max_sort_indexes = 2",
    )
    .await;
}

#[tokio::test]
async fn an_app_over_its_rate_gets_429_and_other_apps_go_on() {
    let s = setup(|c| c.query.app_rate_per_sec = 1).await;
    let other = app_token(&s.t, &s.owner, OTHER).await;
    // A burst of 2 is allowed (the setup's write used one); ten at once cannot all pass.
    let http = reqwest::Client::new();
    let responses = futures::future::join_all((0..10).map(|_| {
        http.post(s.t.url("/api/v1/data/read"))
            .bearer_auth(&s.app_token)
            .json(&json!({"collection": "notes"}))
            .send()
    }))
    .await;
    let mut refused = None;
    let mut passed = 0;
    for response in responses {
        let response = response.expect("request");
        match response.status() {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => refused = Some(response),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(passed <= 3, "{passed} of 10 passed at 1 per second");
    let refused = refused.expect("the app was never limited");
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = refused.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("query.app_rate_per_sec = 1"),
        "{body}"
    );
    // Another app of the same owner, and the owner acting as it, are not affected.
    let (status, answer) =
        s.t.post(
            "/api/v1/data/read",
            Some(&other),
            None,
            json!({"collection": "notes"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) =
        s.t.get("/api/v1/data/notes/none", Some(&s.owner), Some(OTHER))
            .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

/// A token of `app` with `grants`, registered by the owner.
async fn token_with(t: &TestInstance, owner: &str, app: &str, grants: &[(&str, &str)]) -> String {
    t.upsert_app(owner, app, grants).await;
    let (status, body) = t
        .post(
            "/api/v1/apps/token",
            Some(owner),
            None,
            json!({ "appId": app }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["accessToken"].as_str().expect("token").to_string()
}

/// Send `requests` at once; the number answered 200 and one 429 answer, if any.
async fn flood(requests: Vec<reqwest::RequestBuilder>) -> (usize, Option<Value>) {
    let responses = futures::future::join_all(requests.into_iter().map(|r| r.send())).await;
    let mut passed = 0;
    let mut refused = None;
    for response in responses {
        let response = response.expect("request");
        match response.status() {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => refused = Some(response.json().await.expect("json")),
            other => panic!(
                "unexpected {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    (passed, refused)
}

#[tokio::test]
async fn blob_and_sync_requests_count_against_the_app_s_rate() {
    let t = TestInstance::start_with(|c| c.query.app_rate_per_sec = 1).await;
    let owner = t.owner_token().await;
    let syncing = token_with(
        &t,
        &owner,
        APP,
        &[("sync", "always"), ("blob:read:photos", "always")],
    )
    .await;
    let other = token_with(
        &t,
        &owner,
        OTHER,
        &[("sync", "always"), ("blob:read:photos", "always")],
    )
    .await;
    let http = reqwest::Client::new();

    let (passed, refused) = flood(
        (0..10)
            .map(|_| {
                http.get(t.url("/api/v1/blob?collection=photos"))
                    .bearer_auth(&syncing)
            })
            .collect(),
    )
    .await;
    assert!(
        passed <= 3,
        "{passed} of 10 blob listings passed at 1 per second"
    );
    let refused = refused.expect("blob listings were never limited");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("query.app_rate_per_sec = 1"),
        "{refused}"
    );

    // Sync requests of the same app are limited too (its budget is spent), feeds included.
    let (passed, refused) = flood(
        (0..5)
            .map(|_| http.get(t.url("/api/v1/sync/")).bearer_auth(&syncing))
            .chain((0..5).map(|_| {
                http.get(t.url("/api/v1/sync/_changes?feed=longpoll&timeout=100"))
                    .bearer_auth(&syncing)
            }))
            .collect(),
    )
    .await;
    assert!(
        passed <= 3,
        "{passed} of 10 sync requests passed at 1 per second"
    );
    assert!(refused.is_some(), "sync requests were never limited");

    // Another app of the same owner goes on.
    let (status, answer) = t
        .get("/api/v1/blob?collection=photos", Some(&other), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = t.get("/api/v1/sync/", Some(&other), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn sync_requests_naming_too_many_ids_are_refused_naming_the_bound() {
    let t = TestInstance::start_with(|c| c.query.max_sync_ids = 50).await;
    let owner = t.owner_token().await;
    let ids = |n: usize| (0..n).map(|i| format!("notes/{i}")).collect::<Vec<_>>();
    let asks = [
        (
            "/api/v1/sync/_changes?filter=_doc_ids",
            "doc_ids",
            json!({ "doc_ids": ids(51) }),
            json!({ "doc_ids": ids(50) }),
        ),
        (
            "/api/v1/sync/_all_docs",
            "keys",
            json!({ "keys": ids(51) }),
            json!({ "keys": ids(50) }),
        ),
        (
            "/api/v1/sync/_bulk_get",
            "docs",
            json!({ "docs": ids(51).iter().map(|id| json!({"id": id})).collect::<Vec<_>>() }),
            json!({ "docs": ids(50).iter().map(|id| json!({"id": id})).collect::<Vec<_>>() }),
        ),
        (
            "/api/v1/sync/_revs_diff",
            "revisions",
            json!({ "notes/1": (0..51).map(|i| format!("{}-a", i + 1)).collect::<Vec<_>>() }),
            json!(
                ids(50)
                    .iter()
                    .map(|id| (id.clone(), json!(["1-a"])))
                    .collect::<serde_json::Map<_, _>>()
            ),
        ),
    ];
    for (path, what, over, at) in asks {
        let (status, answer) = t.post(path, Some(&owner), None, over).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("51 {what}")) && message.contains("query.max_sync_ids = 50"),
            "{path}: {answer}"
        );
        let (status, answer) = t.post(path, Some(&owner), None, at).await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    }
    // In the query string too.
    let doc_ids = serde_json::to_string(&ids(51)).unwrap();
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("filter", "_doc_ids")
        .append_pair("doc_ids", &doc_ids)
        .finish();
    let (status, answer) = t
        .get(
            &format!("/api/v1/sync/_changes?{query}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

/// A TCP forwarder in front of the real store that can hold back the store's answers
/// (as a store busy with a long query would) and notes when the data plane closes a
/// connection.
struct SlowStore {
    addr: std::net::SocketAddr,
    hold: Arc<AtomicBool>,
    closed: Arc<Mutex<Vec<Instant>>>,
}

impl SlowStore {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hold = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(Mutex::new(Vec::new()));
        let (held, noted) = (hold.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (held, noted) = (held.clone(), noted.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upstream = async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                        noted.lock().unwrap().push(Instant::now());
                        let _ = server_write.shutdown().await;
                    };
                    let downstream = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match server_read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            while held.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            if client_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        Self { addr, hold, closed }
    }
}

#[tokio::test]
async fn a_read_past_the_deadline_answers_503_and_drops_the_store_connection() {
    let couch = vibe_test_support::CouchServer::start()
        .await
        .expect("start CouchDB");
    let target = couch
        .url
        .parse::<url::Url>()
        .expect("url")
        .socket_addrs(|| None)
        .expect("addr")[0];
    let store = SlowStore::start(target).await;
    let slow_url = format!("http://{}", store.addr);
    let t = TestInstance::start_on(
        couch,
        vibe_identity::Keypair::generate(),
        vibe_identity::Keypair::generate(),
        |c| {
            c.couch.url = slow_url.parse().expect("url");
            c.query.timeout_ms = 1000;
            c.query.app_concurrency = 1;
        },
    )
    .await;
    let owner = t.owner_token().await;
    let token = app_token(&t, &owner, APP).await;
    let read = || {
        t.post(
            "/api/v1/data/read",
            Some(&token),
            None,
            json!({"collection": "notes"}),
        )
    };
    let mut warm = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..5 {
        warm = read().await.0;
        if warm == StatusCode::OK {
            break;
        }
    }
    assert_eq!(warm, StatusCode::OK);

    store.hold.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let (slow, second) = tokio::join!(read(), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        read().await
    });
    let answered = Instant::now();
    // The first read hits the deadline; the second, sent while it ran, is over the app's
    // concurrency.
    assert_eq!(slow.0, StatusCode::SERVICE_UNAVAILABLE, "{}", slow.1);
    assert!(
        slow.1["error"]
            .as_str()
            .unwrap_or_default()
            .contains("query.timeout_ms = 1000"),
        "{}",
        slow.1
    );
    assert!(
        answered - started < Duration::from_secs(3),
        "{:?}",
        answered - started
    );
    assert_eq!(second.0, StatusCode::TOO_MANY_REQUESTS, "{}", second.1);
    assert!(
        second.1["error"]
            .as_str()
            .unwrap_or_default()
            .contains("query.app_concurrency = 1"),
        "{}",
        second.1
    );
    // The data plane gave the query up: its connection to the store is closed (CouchDB
    // stops a `_find` whose client is gone).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed = store.closed.lock().unwrap().clone();
    assert!(
        closed
            .iter()
            .any(|at| *at >= started && *at <= answered + Duration::from_millis(500)),
        "no store connection was closed at the deadline"
    );
    store.hold.store(false, Ordering::SeqCst);
    // Reads work again (a loaded test machine may need a second try within the deadline).
    let mut last = None;
    for _ in 0..5 {
        let (status, answer) = read().await;
        if status == StatusCode::OK {
            return;
        }
        last = Some((status, answer));
    }
    panic!("reads did not recover: {last:?}");
}
