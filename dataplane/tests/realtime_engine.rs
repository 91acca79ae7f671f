//! The realtime engine against a real pouchdb-server: one `_changes` reader per database,
//! fan-out, classification, resume after a CouchDB restart, replay, idle stop, lag.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use vibe_dataplane::couch::{CouchClient, CouchSettings, Database};
use vibe_dataplane::realtime::{
    ChangesHub, Event, EventKind, FeedReceiver, HubSettings, Lagged, ReplayFence, Seq, replay_page,
};
use vibe_test_support::CouchServer;

const WAIT: Duration = Duration::from_secs(20);

fn settings() -> HubSettings {
    HubSettings {
        heartbeat: Duration::from_millis(1000),
        backoff_max: Duration::from_millis(800),
        ..HubSettings::default()
    }
}

async fn database(couch: &CouchServer, name: &str) -> Database {
    let client = CouchClient::new(CouchSettings {
        url: couch.url.parse().unwrap(),
        user: Some(couch.user.clone()),
        password: Some(couch.password.clone()),
    })
    .unwrap();
    let db = client.db(&couch.db_name(name));
    db.ensure_exists().await.unwrap();
    db
}

async fn next(rx: &mut FeedReceiver) -> Arc<Event> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an event within the wait")
        .expect("not lagged")
}

async fn nothing_within(rx: &mut FeedReceiver, wait: Duration) {
    if let Ok(event) = tokio::time::timeout(wait, rx.recv()).await {
        panic!("unexpected event {event:?}");
    }
}

fn frame(event: &Event) -> Value {
    serde_json::from_str(&event.frame).unwrap()
}

#[tokio::test]
async fn pushes_updates_and_deletes_but_never_design_or_collectionless_docs() {
    let couch = CouchServer::start().await.unwrap();
    let db = database(&couch, "rt_classify").await;
    let hub = ChangesHub::new(settings());
    let mut rx = hub.subscribe(&db).await.unwrap();

    let created = db
        .put("notes/1", &json!({"collection": "notes", "text": "hi"}))
        .await
        .unwrap();
    db.put(
        "_design/views",
        &json!({"collection": "notes", "views": {}}),
    )
    .await
    .unwrap();
    db.put("loose", &json!({"text": "no collection"}))
        .await
        .unwrap();
    let updated = db
        .put(
            "notes/1",
            &json!({"_rev": created.rev, "collection": "notes", "text": "edited"}),
        )
        .await
        .unwrap();
    let deleted = db.delete("notes/1", &updated.rev).await.unwrap();

    let first = next(&mut rx).await;
    assert_eq!(first.kind, EventKind::Update);
    let f = frame(&first);
    assert_eq!(f["type"], "update");
    assert_eq!(f["collection"], "notes");
    assert_eq!(f["data"]["_id"], "notes/1");
    assert_eq!(f["data"]["text"], "hi");
    assert_eq!(f["data"]["_rev"], created.rev.as_str());
    assert!(f.get("seq").is_some());

    let second = next(&mut rx).await;
    assert_eq!(frame(&second)["data"]["text"], "edited");

    let third = next(&mut rx).await;
    assert_eq!(third.kind, EventKind::Delete);
    let f = frame(&third);
    assert_eq!(f["type"], "delete");
    assert_eq!(f["collection"], "notes");
    assert_eq!(f["id"], "notes/1");
    assert_eq!(f["rev"], deleted.rev.as_str(), "the deletion's own rev");
    assert_eq!(f["seq"], *third.seq.as_json());

    nothing_within(&mut rx, Duration::from_millis(700)).await;
}

#[tokio::test]
async fn many_subscribers_share_one_reader_and_each_gets_every_event() {
    let couch = CouchServer::start().await.unwrap();
    let db = database(&couch, "rt_fanout").await;
    let hub = ChangesHub::new(settings());
    let mut receivers = Vec::new();
    for _ in 0..20 {
        receivers.push(hub.subscribe(&db).await.unwrap());
    }
    assert_eq!(hub.active_feeds().await, 1);
    for i in 0..5 {
        db.put(&format!("c/{i}"), &json!({"collection": "c", "i": i}))
            .await
            .unwrap();
    }
    for rx in &mut receivers {
        for i in 0..5 {
            assert_eq!(frame(&*next(rx).await)["data"]["i"], i);
        }
    }
    // The same Arc is shared: one classification, one serialisation.
    let a = next_after_write(&db, &mut receivers).await;
    assert!(a.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
}

async fn next_after_write(db: &Database, receivers: &mut [FeedReceiver]) -> Vec<Arc<Event>> {
    db.put("c/shared", &json!({"collection": "c"}))
        .await
        .unwrap();
    let mut out = Vec::new();
    for rx in receivers {
        out.push(next(rx).await);
    }
    out
}

#[tokio::test]
async fn reader_stops_when_idle_and_restarts_on_next_subscriber() {
    let couch = CouchServer::start().await.unwrap();
    let db = database(&couch, "rt_idle").await;
    let hub = ChangesHub::new(settings());
    let a = hub.subscribe(&db).await.unwrap();
    let b = hub.subscribe(&db).await.unwrap();
    assert_eq!(hub.active_feeds().await, 1);
    drop(a);
    assert_eq!(hub.active_feeds().await, 1);
    drop(b);
    assert_eq!(hub.active_feeds().await, 0);

    // Written while nobody listens: a new subscriber starts at the current end.
    db.put("c/old", &json!({"collection": "c"})).await.unwrap();
    let mut c = hub.subscribe(&db).await.unwrap();
    assert_eq!(hub.active_feeds().await, 1);
    db.put("c/new", &json!({"collection": "c"})).await.unwrap();
    assert_eq!(next(&mut c).await.id, "c/new");
}

#[tokio::test]
async fn couch_restart_loses_no_event_and_repeats_none() {
    if vibe_test_support::skip_with_external_couchdb("restarts CouchDB") {
        return;
    }
    let mut couch = CouchServer::start().await.unwrap();
    let db = database(&couch, "rt_restart").await;
    let hub = ChangesHub::new(settings());
    let mut rx = hub.subscribe(&db).await.unwrap();

    db.put("c/before", &json!({"collection": "c"}))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.id, "c/before");

    for round in 0..2 {
        couch.restart().await.unwrap();
        // Written at once, while the reader is still backing off: it must resume from the
        // sequence it saw, not from "now".
        let id = format!("c/after-{round}");
        db.put(&id, &json!({"collection": "c"})).await.unwrap();
        assert_eq!(next(&mut rx).await.id, id);
    }
    db.put("c/last", &json!({"collection": "c"})).await.unwrap();
    assert_eq!(next(&mut rx).await.id, "c/last");
    nothing_within(&mut rx, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn subscribe_fails_cleanly_while_couch_is_down_and_works_after() {
    if vibe_test_support::skip_with_external_couchdb("stops and restarts CouchDB") {
        return;
    }
    let mut couch = CouchServer::start().await.unwrap();
    let db = database(&couch, "rt_down").await;
    // (pouchdb-server forgets a database that never held a document across a restart.)
    db.put("c/0", &json!({"collection": "c"})).await.unwrap();
    let hub = ChangesHub::new(settings());
    couch.stop().await;
    assert!(hub.subscribe(&db).await.is_err());
    assert_eq!(hub.active_feeds().await, 0);
    couch.restart().await.unwrap();
    let mut rx = hub.subscribe(&db).await.unwrap();
    db.put("c/1", &json!({"collection": "c"})).await.unwrap();
    assert_eq!(next(&mut rx).await.id, "c/1");
}

#[tokio::test]
async fn replay_returns_changes_after_since_exclusive() {
    let couch = CouchServer::start().await.unwrap();
    let db = database(&couch, "rt_replay").await;
    let hub = ChangesHub::new(settings());
    let mut rx = hub.subscribe(&db).await.unwrap();

    let a = db.put("c/a", &json!({"collection": "c"})).await.unwrap();
    let seen = next(&mut rx).await;
    let since = seen.seq.clone();
    db.put("c/b", &json!({"collection": "c"})).await.unwrap();
    db.put("d/x", &json!({"collection": "d"})).await.unwrap();
    db.delete("c/a", &a.rev).await.unwrap();

    let page = replay_page(&db, &since, 500).await.unwrap();
    assert!(page.complete);
    let got: Vec<(String, EventKind)> =
        page.events.iter().map(|e| (e.id.clone(), e.kind)).collect();
    assert_eq!(
        got,
        vec![
            ("c/b".to_string(), EventKind::Update),
            ("d/x".to_string(), EventKind::Update),
            ("c/a".to_string(), EventKind::Delete),
        ]
    );

    // Paging: one row per page walks the same changes.
    let mut since = since;
    let mut ids = Vec::new();
    loop {
        let page = replay_page(&db, &since, 1).await.unwrap();
        ids.extend(page.events.iter().map(|e| e.id.clone()));
        since = page.next;
        if page.complete {
            break;
        }
    }
    assert_eq!(ids, vec!["c/b", "d/x", "c/a"]);

    // The fence drops live events the replay already covered.
    let mut fence = ReplayFence::default();
    for e in &replay_page(&db, &seen.seq, 500).await.unwrap().events {
        fence.record(e);
    }
    let mut delivered = Vec::new();
    for _ in 0..3 {
        let e = next(&mut rx).await;
        if fence.admits(&e) {
            delivered.push(e.id.clone());
        }
    }
    assert!(delivered.is_empty(), "{delivered:?}");
}

#[tokio::test]
async fn replay_with_a_sequence_couch_rejects_is_an_error() {
    let couch = CouchServer::start().await.unwrap();
    let db = database(&couch, "rt_badseq").await;
    let since = Seq::from_client(&json!("not-a-sequence")).unwrap();
    // pouchdb-server treats unknown sequences leniently; CouchDB answers 400. Either way no
    // panic and no invented events.
    match replay_page(&db, &since, 10).await {
        Ok(page) => assert!(page.events.is_empty()),
        Err(e) => assert!(e.to_string().contains("bad request"), "{e}"),
    }
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_the_buffer_is_told_it_lagged() {
    let couch = CouchServer::start().await.unwrap();
    let db = database(&couch, "rt_lag").await;
    let hub = ChangesHub::new(HubSettings {
        capacity: 4,
        ..settings()
    });
    let mut slow = hub.subscribe(&db).await.unwrap();
    let mut fast = hub.subscribe(&db).await.unwrap();
    for i in 0..12 {
        db.put(&format!("c/{i}"), &json!({"collection": "c"}))
            .await
            .unwrap();
        assert_eq!(next(&mut fast).await.id, format!("c/{i}"));
    }
    let outcome = tokio::time::timeout(WAIT, slow.recv()).await.unwrap();
    assert!(matches!(outcome, Err(Lagged(n)) if n > 0), "{outcome:?}");
}

#[tokio::test]
async fn writes_arriving_by_replication_are_pushed() {
    let couch = CouchServer::start().await.unwrap();
    let target = database(&couch, "rt_repl_target").await;
    let source = database(&couch, "rt_repl_source").await;
    let hub = ChangesHub::new(settings());
    let mut rx = hub.subscribe(&target).await.unwrap();

    source
        .put(
            "notes/r1",
            &json!({"collection": "notes", "from": "device-b"}),
        )
        .await
        .unwrap();
    let response = couch
        .request(reqwest::Method::POST, "/_replicate")
        // CouchDB 3 replicates between URLs only (no local database names).
        .json(&json!({
            "source": format!("{}/{}", couch.url_with_credentials(), source.name()),
            "target": format!("{}/{}", couch.url_with_credentials(), target.name()),
        }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let event = next(&mut rx).await;
    assert_eq!(event.id, "notes/r1");
    assert_eq!(frame(&event)["data"]["from"], "device-b");
}

#[tokio::test]
async fn published_ordinals_separate_events_before_and_after_a_point() {
    let couch = CouchServer::start().await.unwrap();
    let db = database(&couch, "rt_ordinal").await;
    let hub = ChangesHub::new(settings());
    let mut rx = hub.subscribe(&db).await.unwrap();
    db.put("c/1", &json!({"collection": "c"})).await.unwrap();
    let first = next(&mut rx).await;
    let mark = rx.published();
    assert!(first.ordinal <= mark);
    db.put("c/2", &json!({"collection": "c"})).await.unwrap();
    let second = next(&mut rx).await;
    assert!(second.ordinal > mark);
}
