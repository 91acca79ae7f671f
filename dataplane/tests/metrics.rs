//! `/metrics` and request ids, end to end: a real data plane (in process) on a real
//! CouchDB-compatible server and a real S3-compatible server, each reached through a TCP
//! forwarder that records the bytes the data plane sends (so the test sees the headers of
//! the calls without replacing either server).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::TestInstance;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vibe_dataplane::config::S3Config;
use vibe_test_support::S3Server;

const APP: &str = "https://photos.example";

/// Forwards every connection to `target` and keeps a copy of what clients sent.
struct Recorder {
    addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = sent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upstream = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match client_read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            record.lock().unwrap().extend_from_slice(&buf[..n]);
                            if server_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = server_write.shutdown().await;
                    };
                    let downstream = async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                        let _ = client_write.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        Self { addr, sent }
    }

    /// Whether some request carried `x-request-id: id`.
    fn saw_request_id(&self, id: &str) -> bool {
        let sent = String::from_utf8_lossy(&self.sent.lock().unwrap()).to_ascii_lowercase();
        sent.contains(&format!("x-request-id: {}\r\n", id.to_ascii_lowercase()))
    }
}

/// The log lines the data plane writes during the test.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Env {
    inst: TestInstance,
    _s3: S3Server,
    couch_calls: Recorder,
    s3_calls: Recorder,
    metrics_url: String,
}

async fn env() -> Env {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    let s3_target: SocketAddr = format!("127.0.0.1:{}", s3.port()).parse().unwrap();
    let s3_calls = Recorder::start(s3_target).await;
    let couch = vibe_test_support::CouchServer::start()
        .await
        .expect("start pouchdb-server");
    let couch_calls = Recorder::start(format!("127.0.0.1:{}", couch.port()).parse().unwrap()).await;
    let s3_config = S3Config {
        endpoint: format!("http://{}", s3_calls.addr).parse().unwrap(),
        region: s3.region.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        bucket: "vibe-metrics".into(),
        force_path_style: true,
    };
    let couch_url = format!("http://{}", couch_calls.addr);
    let inst = TestInstance::start_on(
        couch,
        vibe_identity::Keypair::generate(),
        vibe_identity::Keypair::generate(),
        |c| {
            c.couch.url = couch_url.parse().unwrap();
            c.s3 = Some(s3_config);
            c.blobs.create_bucket = true;
        },
    )
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(vibe_dataplane::metrics::serve(listener, inst.state.clone()));
    Env {
        inst,
        _s3: s3,
        couch_calls,
        s3_calls,
        metrics_url,
    }
}

impl Env {
    async fn scrape(&self) -> String {
        let response = reqwest::get(&self.metrics_url).await.expect("scrape");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text"),
        );
        let text = response.text().await.expect("body");
        let other = self.metrics_url.replace("/metrics", "/other");
        let response = reqwest::get(&other).await.expect("other path");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        text
    }
}

/// The value of the sample `series` (name and labels exactly as encoded), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_show_routes_backends_and_state_with_bounded_labels() {
    let env = env().await;
    let token = env.inst.owner_token().await;
    env.inst
        .upsert_app(
            &token,
            APP,
            &[
                ("read:notes", "always"),
                ("write:notes", "always"),
                ("blob:write:photos", "always"),
            ],
        )
        .await;
    let (status, written) = env
        .inst
        .post(
            "/api/v1/data/write",
            Some(&token),
            Some(APP),
            json!({ "collection": "notes", "data": { "text": "hi" } }),
        )
        .await;
    assert!(status.is_success(), "{status} {written}");
    // An error: a document that does not exist (CouchDB answers 404 too).
    let missing_id = "no-such-document-4711";
    let (status, _) = env
        .inst
        .get(
            &format!("/api/v1/data/notes/{missing_id}"),
            Some(&token),
            Some(APP),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A path no route knows.
    let (status, _) = env.inst.get("/nowhere/at/all", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // S3: the ledger's first use lists the bucket.
    let (status, grant) = env
        .inst
        .post(
            "/api/v1/blob/upload-url",
            Some(&token),
            Some(APP),
            json!({ "collectionName": "photos", "originalFilename": "a.jpg", "contentType": "image/jpeg", "size": 1000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{grant}");

    let text = env.scrape().await;
    let http = |method: &str, route: &str, status: u16| {
        sample(
            &text,
            &format!(
                "vibe_dataplane_http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(
        http("GET", "/api/v1/data/{collection}/{*id}", 404),
        Some(1.0),
        "{text}"
    );
    assert_eq!(http("GET", "unmatched", 404), Some(1.0), "{text}");
    assert!(
        http("POST", "/api/v1/data/write", 200).is_some()
            || http("POST", "/api/v1/data/write", 201).is_some(),
        "{text}"
    );
    assert_eq!(
        http("POST", "/api/v1/blob/upload-url", 200),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("vibe_dataplane_http_request_duration_seconds_bucket{le=\"0.005\",method=\"GET\",route=\"/api/v1/data/{collection}/{*id}\",status=\"404\"}"),
        "histogram buckets: {text}"
    );
    // Bounded labels: never a raw path, a document id or a database name.
    assert!(!text.contains(missing_id), "{text}");
    assert!(!text.contains("/nowhere"), "{text}");
    assert!(!text.contains("userdb"), "{text}");

    let couch_404 = sample(
        &text,
        "vibe_dataplane_couchdb_request_duration_seconds_count{method=\"GET\",endpoint=\"document\",status=\"404\"}",
    );
    assert!(couch_404.is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        text.contains("vibe_dataplane_couchdb_request_duration_seconds_count{method=\"POST\","),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            "vibe_dataplane_s3_request_duration_seconds_count{operation=\"ListObjectsV2\",status=\"200\"}"
        )),
        "{text}"
    );
    assert_eq!(
        sample(&text, "vibe_dataplane_grants_cached_apps"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "vibe_dataplane_blob_used_bytes"),
        Some(1000.0),
        "the reservation counts: {text}"
    );
    assert!(
        sample(&text, "vibe_dataplane_blob_quota_bytes").is_some_and(|q| q >= 1000.0),
        "{text}"
    );
    for gauge in [
        "vibe_dataplane_websockets_open",
        "vibe_dataplane_sync_feeds_open",
        "vibe_dataplane_change_readers",
    ] {
        assert_eq!(sample(&text, gauge), Some(0.0), "{gauge}: {text}");
    }
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
}

#[tokio::test(flavor = "current_thread")]
async fn the_request_id_is_returned_logged_and_sent_to_couchdb_and_s3() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("vibe_dataplane=debug,tower_http=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The runtime has one thread, so the server's tasks log through this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let env = env().await;
    let token = env.inst.owner_token().await;
    env.inst
        .upsert_app(
            &token,
            APP,
            &[("read:notes", "always"), ("blob:write:photos", "always")],
        )
        .await;

    // A caller's id is kept.
    let id = "trace-7f3a-0001";
    let response = env
        .inst
        .http
        .get(env.inst.url("/api/v1/data/notes/missing-doc"))
        .bearer_auth(&token)
        .header("X-Vibe-App-ID", APP)
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["x-request-id"], id);
    assert!(env.couch_calls.saw_request_id(id), "CouchDB got the id");

    // Without one (or with an unusable one), a fresh id is made, returned and sent on.
    let response = env
        .inst
        .http
        .post(env.inst.url("/api/v1/blob/upload-url"))
        .bearer_auth(&token)
        .header("X-Vibe-App-ID", APP)
        .header("x-request-id", "bad id with spaces")
        .json(&json!({ "collectionName": "photos", "originalFilename": "a.jpg", "contentType": "image/jpeg", "size": 10 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let fresh = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(fresh, "bad id with spaces");
    assert_eq!(fresh.len(), 36, "a UUID: {fresh}");
    assert!(env.s3_calls.saw_request_id(&fresh), "S3 got the id");
    let grant: serde_json::Value = response.json().await.unwrap();
    let headers = grant.to_string().to_ascii_lowercase();
    assert!(
        !headers.contains("x-request-id"),
        "presigned headers stay as signed: {grant}"
    );

    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    for id in [id, fresh.as_str()] {
        assert!(
            logs.lines().any(|l| l.contains(&format!("request_id={id}"))
                && l.contains("finished processing request")),
            "a log line of the request carries its id {id}:\n{logs}"
        );
    }
}

/// Issue 14 item 4: the change readers' lag in sequences — how many committed changes the
/// furthest-behind reader has not read yet — besides the lag in seconds. A clock standing
/// still shows exactly the changes written since; a running reader (the realtime hub) moves
/// its clock with every row, so its lag returns to 0 once it has read them.
#[tokio::test]
async fn change_reader_lag_counts_the_changes_a_reader_has_not_read() {
    use vibe_dataplane::realtime::hub::{ChangesHub, HubSettings};
    use vibe_dataplane::realtime::seq::Seq;

    let env = env().await;
    let lag = |text: &str| sample(text, "vibe_dataplane_change_reader_lag_sequences");
    assert_eq!(lag(&env.scrape().await), Some(0.0), "no reader, no lag");

    let db = env.inst.state.couch.db(&env.inst.couch.db_name("lag"));
    db.ensure_exists().await.expect("create database");
    let head = |info: serde_json::Value| Seq::from(info["update_seq"].clone());
    let clock = env.inst.state.metrics.change_reader(db.clone());
    clock.read_up_to(&head(db.info().await.unwrap()));
    for n in 0..3 {
        db.put(&format!("doc-{n}"), &json!({ "n": n }))
            .await
            .unwrap();
    }
    let text = env.scrape().await;
    assert_eq!(lag(&text), Some(3.0), "{text}");
    assert_eq!(sample(&text, "vibe_dataplane_change_readers"), Some(1.0));
    clock.read_up_to(&head(db.info().await.unwrap()));
    assert_eq!(lag(&env.scrape().await), Some(0.0), "caught up");
    drop(clock);

    // A real reader: it starts at the database's sequence and reads the rows as they come.
    let hub = ChangesHub::new(HubSettings::default());
    let mut feed = hub.subscribe(&db).await.expect("subscribe");
    for n in 3..8 {
        // A data document (collection prefix and field), which the reader publishes.
        let doc = json!({ "collection": "notes", "n": n });
        db.put(&format!("notes/doc-{n}"), &doc).await.unwrap();
    }
    for _ in 3..8 {
        tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv())
            .await
            .expect("the reader delivers each change")
            .expect("no lag");
    }
    let text = env.scrape().await;
    assert_eq!(
        sample(&text, "vibe_dataplane_change_readers"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        lag(&text),
        Some(0.0),
        "the reader moved its position: {text}"
    );
    drop(feed);
}
