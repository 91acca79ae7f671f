//! The CouchDB-compatible test server: starts, needs credentials, keeps data across restarts,
//! and goes away when stopped or dropped.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vibe_test_support::CouchServer;

async fn put_doc(couch: &CouchServer, db: &str, id: &str, body: Value) -> Value {
    let response = couch
        .request(Method::PUT, &format!("/{db}/{id}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

async fn get_doc(couch: &CouchServer, db: &str, id: &str) -> (StatusCode, Value) {
    let response = couch
        .request(Method::GET, &format!("/{db}/{id}"))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .contains("State:\tZ")
}

#[tokio::test]
async fn starts_with_a_server_admin_and_refuses_anonymous_admin_work() {
    let couch = CouchServer::start().await.unwrap();
    assert!(couch.url.starts_with("http://127.0.0.1:"));

    let session: Value = couch
        .request(Method::GET, "/_session")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["userCtx"]["name"], couch.user.as_str());
    assert!(
        session["userCtx"]["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("_admin"))
    );

    let http = reqwest::Client::new();
    // No admin party: an anonymous client cannot make itself an admin …
    let anonymous = http
        .put(format!("{}/_config/admins/intruder", couch.url))
        .json(&"secret")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // … and a wrong password is refused.
    let wrong = http
        .get(format!("{}/_session", couch.url))
        .basic_auth(&couch.user, Some("not-the-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn restart_keeps_port_and_data() {
    if vibe_test_support::skip_with_external_couchdb("restarts the server") {
        return;
    }
    let mut couch = CouchServer::start().await.unwrap();
    let url = couch.url.clone();
    couch.create_db("notes").await.unwrap();
    put_doc(
        &couch,
        "notes",
        "first",
        json!({"text": "kept across restarts"}),
    )
    .await;

    couch.restart().await.unwrap();

    assert_eq!(couch.url, url);
    let (status, doc) = get_doc(&couch, "notes", "first").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["text"], "kept across restarts");
}

#[tokio::test]
async fn a_killed_server_restarts_with_its_data() {
    if vibe_test_support::skip_with_external_couchdb("kills and restarts the server") {
        return;
    }
    let mut couch = CouchServer::start().await.unwrap();
    couch.create_db("crash").await.unwrap();
    put_doc(&couch, "crash", "doc", json!({"n": 1})).await;

    couch.kill();
    assert!(!couch.is_running());
    couch.restart().await.unwrap();

    let (status, doc) = get_doc(&couch, "crash", "doc").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["n"], 1);
}

#[tokio::test]
async fn stop_closes_the_port_until_restart() {
    if vibe_test_support::skip_with_external_couchdb("stops and restarts the server") {
        return;
    }
    let mut couch = CouchServer::start().await.unwrap();
    let pid = couch.pid().unwrap();

    couch.stop().await;

    assert!(!couch.is_running());
    assert!(!process_exists(pid));
    let refused = reqwest::Client::new().get(&couch.url).send().await;
    assert!(refused.is_err(), "nothing listens after stop");

    couch.restart().await.unwrap();
    let welcome: Value = reqwest::get(&couch.url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(welcome.get("version").is_some());
}

#[tokio::test]
async fn dropping_the_server_kills_the_process_and_removes_its_folder() {
    if vibe_test_support::skip_with_external_couchdb("checks the pouchdb-server process and folder")
    {
        return;
    }
    let couch = CouchServer::start().await.unwrap();
    let pid = couch.pid().unwrap();
    let dir = couch.dir().unwrap().to_path_buf();
    assert!(process_exists(pid));

    drop(couch);

    let deadline = Instant::now() + Duration::from_secs(5);
    while process_exists(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !process_exists(pid),
        "pouchdb-server {pid} still runs after drop"
    );
    assert!(!dir.exists());
}

#[tokio::test]
async fn two_servers_are_independent() {
    if vibe_test_support::skip_with_external_couchdb("needs two separate servers") {
        return;
    }
    let (a, b) = tokio::join!(CouchServer::start(), CouchServer::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.url, b.url);
    assert_ne!(a.password, b.password);

    a.create_db("only_in_a").await.unwrap();
    let in_b = b.request(Method::GET, "/only_in_a").send().await.unwrap();
    assert_eq!(in_b.status(), StatusCode::NOT_FOUND);
    // One server's admin is a stranger to the other.
    let cross = reqwest::Client::new()
        .get(format!("{}/_session", b.url))
        .basic_auth(&a.user, Some(&a.password))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn url_with_credentials_authenticates() {
    let couch = CouchServer::start().await.unwrap();
    let url = reqwest::Url::parse(&couch.url_with_credentials()).unwrap();
    assert_eq!(url.username(), couch.user);
    let response = reqwest::Client::new()
        .get(format!("{}/_session", couch.url))
        .basic_auth(url.username(), url.password())
        .send()
        .await
        .unwrap();
    let session: Value = response.json().await.unwrap();
    assert_eq!(session["userCtx"]["name"], couch.user.as_str());
}

#[tokio::test]
async fn databases_carry_the_prefix_and_go_with_the_value() {
    let couch = CouchServer::start().await.unwrap();
    let prefix = couch.db_prefix().to_string();
    assert!(
        prefix.starts_with("vt") && prefix.ends_with('_'),
        "{prefix}"
    );
    let other = CouchServer::start().await.unwrap();
    assert_ne!(other.db_prefix(), prefix, "each value has its own prefix");

    let notes = couch.db_name("notes");
    assert_eq!(notes, format!("{prefix}notes"));
    couch.create_db(&notes).await.unwrap();
    couch.create_db(&couch.db_name("more")).await.unwrap();
    put_doc(&couch, &notes, "a", json!({"n": 1})).await;
    let mut ours = couch.own_databases().await.unwrap();
    ours.sort();
    assert_eq!(
        ours,
        vec![format!("{prefix}more"), format!("{prefix}notes")]
    );
    assert!(other.own_databases().await.unwrap().is_empty());

    let external = couch.is_external();
    drop(couch);
    if external {
        // The existing CouchDB stays; this test's databases are gone from it.
        let (status, _) = get_doc(&other, &notes, "a").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let all: Vec<String> = other
            .request(Method::GET, "/_all_dbs")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(!all.iter().any(|name| name.starts_with(&prefix)), "{all:?}");
    }
}

#[tokio::test]
async fn a_panicking_test_leaves_no_databases_behind() {
    let (tx, rx) = std::sync::mpsc::channel();
    // A test of its own that panics while it holds the server (on a thread with its own
    // runtime, as the test harness runs each test).
    let test = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let couch = CouchServer::start().await.unwrap();
            let db = couch.db_name("doomed");
            couch.create_db(&db).await.unwrap();
            tx.send((db, couch.is_external())).unwrap();
            panic!("the test fails while it holds the server");
        })
    });
    assert!(test.join().is_err());
    let (db, external) = rx.recv().unwrap();
    if external {
        let observer = CouchServer::start().await.unwrap();
        let response = observer
            .request(Method::GET, &format!("/{db}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{db} left behind");
    }
}

#[tokio::test]
async fn describe_names_the_server() {
    let couch = CouchServer::start().await.unwrap();
    let what = couch.describe().await.unwrap();
    if couch.is_external() {
        assert!(what.starts_with("Apache CouchDB "), "{what}");
    } else {
        assert!(what.starts_with("pouchdb-server"), "{what}");
    }
}
