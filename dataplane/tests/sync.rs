//! Multi-device sync through `/api/v1/sync`, against the real pouchdb-server and the
//! real PouchDB client (npm), plus the refusals of the endpoint.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::TestInstance;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vibe_dataplane::realtime::hub::{ChangesHub, HubSettings};
use vibe_identity::{Keypair, TokenIssuer, TokenKind, TokenSpec};

/// Run the two-device PouchDB scenario against `sync_url` and return what it observed.
async fn run_devices(sync_url: &str, token: &str) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sync/devices.js");
    let output = tokio::process::Command::new("node")
        .arg(script)
        .env(
            "NODE_PATH",
            vibe_test_support::pouchdb_client_modules().expect("PouchDB client"),
        )
        .env("SYNC_URL", sync_url)
        .env("TOKEN", token)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("PouchDB driver finished in time")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| {
        panic!(
            "driver output is not JSON: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(output.status.success(), "driver failed: {report}");
    report
}

/// GET a document straight from CouchDB (as the server admin), bypassing the data plane.
async fn couch_doc(instance: &TestInstance, id: &str) -> (StatusCode, Value) {
    let db = instance.state.data_db().await.expect("data db");
    let (id, query) = id.split_once('?').unwrap_or((id, ""));
    let mut url = db.url(&[id]);
    if !query.is_empty() {
        url.set_query(Some(query));
    }
    let response = db
        .client()
        .send(db.client().request(Method::GET, url))
        .await
        .expect("couch answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn two_pouchdb_devices_sync_through_the_data_plane() {
    let instance = TestInstance::start().await;
    let token = instance.owner_token().await;

    // A realtime subscriber on the owner's database sees replicated writes.
    let hub = ChangesHub::new(HubSettings::default());
    let mut feed = hub
        .subscribe(&instance.state.data_db().await.expect("data db"))
        .await
        .expect("subscribe");

    let report = run_devices(&instance.url("/api/v1/sync"), &token).await;

    assert_eq!(report["aSeesB"], "written on B", "{report}");
    assert_eq!(report["bSeesA"], "written on A", "{report}");
    assert_eq!(report["bSeesEdit"], "edited on A", "{report}");
    for step in ["firstA", "firstB", "secondA"] {
        assert_eq!(report[step]["errors"], 0, "{step}: {report}");
    }

    // The conflict exists on both devices, with the same deterministic winner.
    assert_eq!(
        report["conflictsA"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(
        report["conflictsB"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(report["winnerA"], report["winnerB"], "{report}");
    assert_eq!(report["conflictsA"], report["conflictsB"], "{report}");
    let (_, on_server) = couch_doc(&instance, "notes/from-b?conflicts=true").await;
    assert_eq!(on_server["_rev"], report["winnerA"], "{on_server}");

    // Refused documents: counted as write failures, never stored; the valid one is.
    // The design document is pushed at all because `_revs_diff` calls it missing.
    let refused = &report["refusedPush"];
    assert_eq!(refused["failures"], 3, "{report}");
    let denied: Vec<&str> = refused["denied"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        denied.contains(&"_design/evil")
            && denied.contains(&"notes/no-collection-field")
            && denied.contains(&"notes/with-file"),
        "{report}"
    );
    assert_eq!(
        couch_doc(&instance, "notes/with-file").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        couch_doc(&instance, "_design/evil").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        couch_doc(&instance, "notes/no-collection-field").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(couch_doc(&instance, "notes/fine").await.0, StatusCode::OK);

    // The interrupted replication stopped early and the second run resumed from its
    // checkpoint instead of starting over.
    let first = report["interrupted"]["written"].as_u64().unwrap();
    let resumed = report["resumed"]["read"].as_u64().unwrap();
    assert!(first > 0 && first < 120, "{report}");
    assert!(resumed < 120, "resumed from the checkpoint: {report}");
    assert_eq!(
        first + report["resumed"]["written"].as_u64().unwrap(),
        120,
        "{report}"
    );
    assert_eq!(report["bBulkCount"], 120, "{report}");
    // The data plane's own index design document never reaches a device.
    assert_eq!(report["bDesignDocs"], 0, "{report}");
    assert_eq!(
        couch_doc(&instance, "_design/vibe-indexes").await.0,
        StatusCode::OK
    );

    // Realtime saw the documents that arrived by replication.
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(seen.contains("notes/from-a")
        && seen.contains("notes/from-b")
        && seen.contains("bulk/0119"))
    {
        let event = tokio::time::timeout_at(deadline, feed.recv())
            .await
            .expect("replicated writes reach realtime")
            .expect("not lagged");
        seen.insert(event.id.clone());
    }
    assert!(!seen.contains("_design/evil"));
}

#[tokio::test]
async fn couchdb_replicator_pulls_from_the_endpoint() {
    let instance = TestInstance::start().await;
    let token = instance.owner_token().await;
    let (status, body) = instance
        .post(
            "/api/v1/data/write",
            Some(&token),
            Some("agent"),
            json!({"collection": "notes", "data": [{"text": "one"}, {"text": "two"}]}),
        )
        .await;
    // The owner token acts as an app here; register it with write access first if needed.
    if status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST {
        instance
            .upsert_app(
                &token,
                "agent",
                &[("write:notes", "always"), ("read:notes", "always")],
            )
            .await;
        let (status, body) = instance
            .post(
                "/api/v1/data/write",
                Some(&token),
                Some("agent"),
                json!({"collection": "notes", "data": [{"text": "one"}, {"text": "two"}]}),
            )
            .await;
        assert!(status.is_success(), "{status} {body}");
    } else {
        assert!(status.is_success(), "{status} {body}");
    }

    // The CouchDB-compatible server's own replicator, with the token as the password of
    // the source URL (CouchDB also accepts {"url", "headers"}; pouchdb-server only URLs).
    let couch = &instance.couch;
    let http = reqwest::Client::new();
    let source =
        instance
            .url("/api/v1/sync")
            .replacen("http://", &format!("http://sync:{token}@"), 1);
    // CouchDB 3 replicates between URLs only (no local database names).
    let pulled_copy = couch.db_name("pulled_copy");
    let replicate = json!({
        "source": source,
        "target": format!("{}/{pulled_copy}", couch.url_with_credentials()),
        "create_target": true
    });
    let response = http
        .post(format!("{}/_replicate", couch.url))
        .basic_auth(&couch.user, Some(&couch.password))
        .json(&replicate)
        .send()
        .await
        .expect("replicate");
    let status = response.status();
    let result: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status} {result}");
    let all: Value = http
        .get(format!("{}/{pulled_copy}/_all_docs", couch.url))
        .basic_auth(&couch.user, Some(&couch.password))
        .send()
        .await
        .expect("all docs")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(
        ids.iter().filter(|id| id.starts_with("notes/")).count(),
        2,
        "{all}"
    );
    assert!(!ids.iter().any(|id| id.starts_with("_design/")), "{all}");
}

#[tokio::test]
async fn the_endpoint_refuses_what_sync_must_not_reach() {
    let instance = TestInstance::start().await;
    let token = instance.owner_token().await;

    // No token.
    assert_eq!(
        instance.get("/api/v1/sync/", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Basic auth carries the token as its password; anything else there is refused.
    let basic = instance
        .http
        .get(instance.url("/api/v1/sync/"))
        .basic_auth("sync", Some("not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    let basic = instance
        .http
        .get(instance.url("/api/v1/sync/"))
        .basic_auth("sync", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    // The owner token works.
    let (status, info) = instance.get("/api/v1/sync/", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert!(info.get("update_seq").is_some(), "{info}");

    // A token minted for another instance with a key this instance does not trust,
    // and one signed by this instance's key but for another audience.
    let stranger = TokenIssuer::new(
        &Keypair::generate(),
        "https://other.example",
        "https://other.example",
    )
    .issue(TokenSpec::new(
        instance.owner.did().to_string(),
        TokenKind::Access,
        chrono::Duration::minutes(5),
    ))
    .unwrap()
    .token;
    let other_audience = TokenIssuer::new(
        &instance.signing_key,
        "https://other.example",
        "https://other.example",
    )
    .issue(TokenSpec::new(
        instance.owner.did().to_string(),
        TokenKind::Access,
        chrono::Duration::minutes(5),
    ))
    .unwrap()
    .token;
    for foreign in [&stranger, &other_audience] {
        let (status, body) = instance
            .get("/api/v1/sync/_changes", Some(foreign), None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }

    // An app without the `sync` grant (even with read grants), then with it.
    instance
        .upsert_app(
            &token,
            "reader",
            &[("read:notes", "always"), ("sync", "never")],
        )
        .await;
    let (status, body) = instance
        .get("/api/v1/sync/_changes", Some(&token), Some("reader"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("'sync'"), "{body}");
    instance
        .upsert_app(&token, "syncer", &[("sync", "always")])
        .await;
    let (status, body) = instance
        .get("/api/v1/sync/_changes", Some(&token), Some("syncer"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A `_design` document in a batch is refused per item; the rest is written.
    let (status, results) = instance
        .post(
            "/api/v1/sync/_bulk_docs",
            Some(&token),
            None,
            json!({"docs": [
                {"_id": "notes/ok", "collection": "notes", "text": "fine"},
                {"_id": "_design/x", "validate_doc_update": "function(){}"},
                {"_id": "notes/bad", "collection": "notes", "_security": {}}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{results}");
    assert_eq!(results[0]["ok"], true, "{results}");
    assert_eq!(results[1]["error"], "forbidden", "{results}");
    assert_eq!(results[1]["id"], "_design/x", "{results}");
    assert_eq!(results[2]["error"], "forbidden", "{results}");
    assert_eq!(
        couch_doc(&instance, "_design/x").await.0,
        StatusCode::NOT_FOUND
    );

    // Paths outside the replication protocol, other databases, the system database.
    let system_db = instance.state.system_db().await.unwrap().name().to_string();
    for path in [
        "/api/v1/sync/_security".to_string(),
        "/api/v1/sync/_design/x".to_string(),
        "/api/v1/sync/_design%2Fx".to_string(),
        "/api/v1/sync/_find".to_string(),
        "/api/v1/sync/_all_dbs".to_string(),
        "/api/v1/sync/_users".to_string(),
        format!("/api/v1/sync/..%2F{system_db}"),
        format!("/api/v1/sync/%2E%2E/{system_db}/_all_docs"),
        "/api/v1/sync/notes%2Fok/attachment".to_string(),
    ] {
        let (status, body) = instance.get(&path, Some(&token), None).await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{path}: {status} {body}"
        );
        assert!(
            body.get("rows").is_none() && body.get("admins").is_none(),
            "{path}: {body}"
        );
    }
    let (status, _) = instance
        .call(
            Method::PUT,
            "/api/v1/sync/_security",
            Some(&token),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = instance
        .call(
            Method::POST,
            "/api/v1/sync/_find",
            Some(&token),
            None,
            Some(json!({"selector": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A continuous feed streams rows line by line, without the data plane's design docs.
    // (pouchdb-server ignores `timeout` on feeds, so read until the row arrives.)
    let feed = instance
        .http
        .get(instance.url("/api/v1/sync/_changes?feed=continuous&heartbeat=500&since=0"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    let mut stream = feed.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("notes/ok") {
        use futures::StreamExt;
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the row arrives on the continuous feed")
            .expect("feed open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    assert!(!text.contains("_design/"), "{text}");
    // Selector filters, event-source feeds and unknown parameters.
    let (status, _) = instance
        .get("/api/v1/sync/_changes?feed=eventsource", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = instance
        .get("/api/v1/sync/_changes?filter=_selector", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// CouchDB going away while a replicator's longpoll waits in it is CouchDB being
/// unavailable (503, the replicator retries), never an internal error (it was a 500).
#[tokio::test]
async fn a_longpoll_cut_by_couchdb_stopping_is_a_503() {
    if vibe_test_support::skip_with_external_couchdb("stops CouchDB") {
        return;
    }
    let mut instance = TestInstance::start().await;
    let token = instance.owner_token().await;
    let (status, changes) = instance
        .get("/api/v1/sync/_changes", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{changes}");
    let since = match &changes["last_seq"] {
        Value::String(seq) => seq.clone(),
        other => other.to_string(),
    };
    let url = instance.url(&format!(
        "/api/v1/sync/_changes?feed=longpoll&heartbeat=50&since={since}"
    ));
    let waiting = tokio::spawn(
        instance
            .http
            .get(url)
            .bearer_auth(&token)
            .timeout(Duration::from_secs(30))
            .send(),
    );
    // The answer must be 503 whenever CouchDB stops; this pause only makes it stop while
    // the longpoll is under way (its heartbeats flowing), the case that answered 500.
    tokio::time::sleep(Duration::from_millis(500)).await;
    instance.couch.stop().await;
    let response = waiting.await.unwrap().expect("the data plane answers");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["error"], "Database service is not available.",
        "{body}"
    );
}

/// Sync bodies must be declared JSON, as CouchDB requires: a web page can send a form or
/// text body cross-origin, and the browser adds Basic credentials it has saved for the
/// instance, so a text `_bulk_docs` must not write (issue 15).
#[tokio::test]
async fn sync_bodies_need_a_json_content_type() {
    let instance = TestInstance::start().await;
    let token = instance.owner_token().await;
    let docs = json!({"docs": [{"_id": "notes/csrf", "collection": "notes"}]}).to_string();
    for (path, content_type) in [
        ("/api/v1/sync/_bulk_docs", Some("text/plain")),
        (
            "/api/v1/sync/_bulk_docs",
            Some("application/x-www-form-urlencoded"),
        ),
        ("/api/v1/sync/_bulk_docs", None),
        ("/api/v1/sync/_revs_diff", Some("text/plain")),
        (
            "/api/v1/sync/_bulk_get",
            Some("multipart/form-data; boundary=x"),
        ),
        ("/api/v1/sync/_all_docs", Some("text/plain")),
        ("/api/v1/sync/_changes", Some("text/plain")),
    ] {
        let mut request = instance
            .http
            .post(instance.url(path))
            .basic_auth("sync", Some(&token))
            .body(docs.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{path} as {content_type:?}"
        );
        let body: Value = response.json().await.expect("a JSON error");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(
        couch_doc(&instance, "notes/csrf").await.0,
        StatusCode::NOT_FOUND
    );
    // The same body as JSON is written.
    let response = instance
        .http
        .post(instance.url("/api/v1/sync/_bulk_docs"))
        .basic_auth("sync", Some(&token))
        .header("content-type", "application/json")
        .body(docs)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(couch_doc(&instance, "notes/csrf").await.0, StatusCode::OK);
}

/// `_bulk_docs` refuses inline attachments per item, as the document API refuses the
/// field, and writes the rest of the batch (issue 15).
#[tokio::test]
async fn sync_bulk_docs_refuses_inline_attachments() {
    let instance = TestInstance::start().await;
    let token = instance.owner_token().await;
    let file = json!({"f.txt": {"content_type": "text/plain", "data": "aGk="}});
    for replicating in [false, true] {
        let mut with_file = json!({"_id": format!("notes/file-{replicating}"), "collection": "notes",
                                   "_attachments": file});
        let mut plain = json!({"_id": format!("notes/plain-{replicating}"), "collection": "notes"});
        if replicating {
            with_file["_rev"] = json!("1-abc");
            plain["_rev"] = json!("1-def");
        }
        let (status, results) = instance
            .post(
                "/api/v1/sync/_bulk_docs",
                Some(&token),
                None,
                json!({"new_edits": !replicating, "docs": [with_file, plain]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{results}");
        let refusal = results
            .as_array()
            .unwrap()
            .iter()
            .find(|item| item["id"] == format!("notes/file-{replicating}"))
            .unwrap_or_else(|| panic!("a refusal: {results}"));
        assert_eq!(refusal["error"], "forbidden", "{results}");
        assert!(
            refusal["reason"]
                .as_str()
                .unwrap()
                .contains("'_attachments'"),
            "{results}"
        );
        assert_eq!(
            couch_doc(&instance, &format!("notes/file-{replicating}"))
                .await
                .0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            couch_doc(&instance, &format!("notes/plain-{replicating}"))
                .await
                .0,
            StatusCode::OK
        );
    }
}

/// `_revs_diff` does not tell whether revisions of ids outside the caller's reach exist:
/// the store is not asked, and every asked revision is answered missing (issue 15).
#[tokio::test]
async fn revs_diff_answers_nothing_about_design_documents() {
    let instance = TestInstance::start().await;
    let token = instance.owner_token().await;
    let (status, design) = couch_doc(&instance, "_design/vibe-indexes").await;
    assert_eq!(status, StatusCode::OK, "{design}");
    let design_rev = design["_rev"].as_str().unwrap().to_string();
    let (status, results) = instance
        .post(
            "/api/v1/sync/_bulk_docs",
            Some(&token),
            None,
            json!({"docs": [{"_id": "notes/known", "collection": "notes"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{results}");
    let note_rev = results[0]["rev"].as_str().unwrap().to_string();

    let (status, answer) = instance
        .post(
            "/api/v1/sync/_revs_diff",
            Some(&token),
            None,
            json!({
                "_design/vibe-indexes": [design_rev, "9-zzz"],
                "notes/known": [note_rev, "9-zzz"],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["_design/vibe-indexes"]["missing"],
        json!([design_rev, "9-zzz"]),
        "the design document's real revision is not revealed: {answer}"
    );
    assert!(
        answer["_design/vibe-indexes"]
            .get("possible_ancestors")
            .is_none(),
        "{answer}"
    );
    assert_eq!(
        answer["notes/known"]["missing"],
        json!(["9-zzz"]),
        "{answer}"
    );
    // Not a revs_diff body.
    let (status, answer) = instance
        .post(
            "/api/v1/sync/_revs_diff",
            Some(&token),
            None,
            json!({"notes/known": "1-a"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}
