//! `vibe watch` (the realtime WebSocket) through the built `vibe` binary, against the
//! built data plane and a real CouchDB-compatible server:
//! - owner-session and app-token watchers see create → update → delete in order, with
//!   the right ids and revisions, and nothing of other collections; an app without
//!   `read:` is refused, and a revoked grant ends the watch;
//! - a watcher survives a crash (SIGKILL) and a graceful stop of the data plane, and a
//!   stop and a crash of CouchDB: every change made meanwhile is printed exactly once, in order,
//!   and the reconnections are reported; `--since` replays from a printed sequence;
//! - `--count` exits 0 after N events; a watch started while CouchDB is down subscribes
//!   once it is back; an unreachable instance ends it with a clear error after
//!   `--reconnect-for`.
//!
//! Synchronisation uses what the CLI prints (`subscribed to …`, `disconnected from …`,
//! `resubscribed to …` on stderr, events on stdout) and `vibe status`, never sleeps.
//! "Nothing else was delivered" is checked by ordering: the change feed is ordered, so
//! an unwanted or repeated event would show up before the next expected one.

mod common;

use std::time::{Duration, Instant};

use common::{VibeChild, VibeCli, eventually};
use serde_json::{Value, json};
use vibe_e2e::stack::{DataPlane, DataPlaneConfig, Stack};

/// Longest wait for one event or status line.
const WAIT: Duration = Duration::from_secs(20);

/// Keygen, claim and login through the CLI; returns the owner's DID.
async fn owner_cli(stack: &Stack) -> (VibeCli, String) {
    let vibe = VibeCli::new(&stack.dataplane.url);
    let did = vibe.ok(&["keygen"]).await["did"]
        .as_str()
        .unwrap()
        .to_string();
    vibe.ok(&["claim", "--code", stack.claim_code()]).await;
    vibe.ok(&["login"]).await;
    (vibe, did)
}

/// `vibe --app <app> put <collection> <doc>` → (id, rev).
async fn put(vibe: &VibeCli, extra: &[&str], collection: &str, doc: Value) -> (String, String) {
    let doc = doc.to_string();
    let mut args = extra.to_vec();
    args.extend(["put", collection, &doc]);
    let written = vibe.ok(&args).await;
    (
        written["id"].as_str().unwrap().to_string(),
        written["rev"].as_str().unwrap().to_string(),
    )
}

/// `vibe … delete <collection> <id>` → the deletion's rev.
async fn delete(vibe: &VibeCli, extra: &[&str], collection: &str, id: &str) -> String {
    let mut args = extra.to_vec();
    args.extend(["delete", collection, id]);
    let deleted = vibe.ok(&args).await;
    assert_eq!(deleted["deleted"], true, "{deleted}");
    deleted["response"]["rev"]
        .as_str()
        .unwrap_or_else(|| panic!("the delete answer carries the deletion's rev: {deleted}"))
        .to_string()
}

/// An event reduced to (type, id, rev).
fn summary(event: &Value) -> (String, String, String) {
    match event["type"].as_str() {
        Some("update") => (
            "update".into(),
            event["data"]["_id"].as_str().unwrap_or("?").into(),
            event["data"]["_rev"].as_str().unwrap_or("?").into(),
        ),
        Some("delete") => (
            "delete".into(),
            event["id"].as_str().unwrap_or("?").into(),
            event["rev"].as_str().unwrap_or("?").into(),
        ),
        _ => panic!("not an event: {event}"),
    }
}

fn update(id: &str, rev: &str) -> (String, String, String) {
    ("update".into(), id.into(), rev.into())
}

fn deletion(id: &str, rev: &str) -> (String, String, String) {
    ("delete".into(), id.into(), rev.into())
}

/// The watcher's next events must be exactly `expected`, in order; returns them.
async fn expect_events(
    watcher: &mut VibeChild,
    expected: &[(String, String, String)],
) -> Vec<Value> {
    let mut events = Vec::new();
    for want in expected {
        let event = watcher.stdout_json(WAIT).await;
        assert_eq!(
            &summary(&event),
            want,
            "unexpected event {event}\n{}",
            watcher.transcript()
        );
        assert_eq!(event["collection"], "notes", "{event}");
        assert!(!event["seq"].is_null(), "events carry their seq: {event}");
        events.push(event);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_creates_updates_and_deletes_of_their_collection_only() {
    let stack = Stack::start(false).await.expect("stack");
    let (vibe, _did) = owner_cli(&stack).await;
    vibe.ok(&[
        "apps",
        "grant",
        "notes-app",
        "read:notes",
        "write:notes",
        "write:tasks",
    ])
    .await;
    vibe.ok(&["apps", "grant", "reader-app", "read:notes"])
        .await;
    vibe.ok(&["apps", "grant", "tasks-app", "read:tasks"]).await;
    let token = vibe.ok(&["apps", "token", "reader-app"]).await["accessToken"]
        .as_str()
        .unwrap()
        .to_string();

    // The owner's session acting as notes-app (VIBE_APP), and reader-app's own token.
    let mut owner_watch = vibe.spawn(&["watch", "notes"], &[("VIBE_APP", "notes-app")]);
    let mut app_watch = vibe.spawn(&["watch", "notes"], &[("VIBE_APP_TOKEN", &token)]);
    owner_watch.stderr_until("subscribed to notes", WAIT).await;
    app_watch.stderr_until("subscribed to notes", WAIT).await;

    let app = ["--app", "notes-app"];
    let (id, rev1) = put(&vibe, &app, "notes", json!({"title": "first"})).await;
    // Another collection, written between the create and the update: a watcher of
    // `notes` that received it would print it before the update.
    put(&vibe, &app, "tasks", json!({"title": "not for notes"})).await;
    let update_doc = json!({"_id": id, "_rev": rev1, "title": "second"});
    let (same_id, rev2) = put(&vibe, &app, "notes", update_doc).await;
    assert_eq!(same_id, id);
    let local = id.strip_prefix("notes/").unwrap();
    let rev3 = delete(&vibe, &app, "notes", local).await;
    assert!(
        rev3.starts_with("3-"),
        "the deletion is generation 3: {rev3}"
    );

    let expected = [update(&id, &rev1), update(&id, &rev2), deletion(&id, &rev3)];
    for watcher in [&mut owner_watch, &mut app_watch] {
        let events = expect_events(watcher, &expected).await;
        assert_eq!(events[0]["data"]["title"], "first");
        assert_eq!(events[0]["data"]["collection"], "notes");
        assert_eq!(events[1]["data"]["title"], "second");
        assert_ne!(events[0]["seq"], events[1]["seq"]);
        assert_ne!(events[1]["seq"], events[2]["seq"]);
    }

    // An app without read:notes is refused at once, with the instance's reason.
    let started = Instant::now();
    let refused = vibe
        .run(&[
            "--app",
            "tasks-app",
            "watch",
            "notes",
            "--reconnect-for",
            "30",
        ])
        .await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("App does not have 'read:notes' permission."),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a refusal is not retried"
    );
    // So is an app nobody registered, and a token that is not one.
    let unknown = vibe.run(&["--app", "stranger", "watch", "notes"]).await;
    assert_eq!(unknown.code, 1, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("read:notes"), "{}", unknown.stderr);
    let forged = vibe
        .run(&["--app-token", "not-a-token", "watch", "notes"])
        .await;
    assert_eq!(forged.code, 1, "{}", forged.stderr);
    assert!(
        forged.stderr.contains("authentication refused"),
        "{}",
        forged.stderr
    );

    // Revoking read:notes ends reader-app's running watch with an error; the owner's
    // notes-app watch goes on.
    vibe.ok(&["apps", "revoke", "reader-app", "read:notes"])
        .await;
    let ended = app_watch.exit(WAIT).await;
    assert_eq!(ended.code, 1, "{}", ended.stderr);
    assert!(
        ended.stderr.contains("subscription revoked") && ended.stderr.contains("read:notes"),
        "{}",
        ended.stderr
    );
    assert!(
        ended.stdout.is_empty(),
        "no event after revocation: {}",
        ended.stdout
    );
    let (id2, rev) = put(&vibe, &app, "notes", json!({"title": "still watched"})).await;
    expect_events(&mut owner_watch, &[update(&id2, &rev)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resumes_after_data_plane_and_couchdb_restarts_without_loss_or_duplicates() {
    if vibe_test_support::skip_with_external_couchdb("stops, kills and restarts CouchDB") {
        return;
    }
    let mut stack = Stack::start(false).await.expect("stack");
    let (vibe, did) = owner_cli(&stack).await;
    vibe.ok(&["apps", "grant", "notes-app", "read:notes", "write:notes"])
        .await;
    let app = ["--app", "notes-app"];
    let mut watcher = vibe.spawn(
        &[
            "--app",
            "notes-app",
            "watch",
            "notes",
            "--reconnect-for",
            "60",
        ],
        &[],
    );
    watcher.stderr_until("subscribed to notes", WAIT).await;

    // 1. The data plane crashes (SIGKILL) before the watcher saw any event. While no data
    //    plane runs, documents change in the owner's database: written straight into
    //    CouchDB as the server admin, as another writer of the store would (a replica,
    //    replication). This is the only way to be sure the watcher is disconnected while
    //    they are written. The name is the data plane's documented `userdata-<hex(DID)>`
    //    after the instance's `VIBE_DB_PREFIX`.
    stack.dataplane.kill().await;
    watcher.stderr_until("disconnected from notes", WAIT).await;
    let db = format!(
        "{}userdata-{}",
        stack.dataplane.config.db_prefix,
        hex::encode(did.as_bytes())
    );
    let mut direct = Vec::new();
    for name in ["a1", "a2"] {
        let written: Value = stack
            .couch
            .request(reqwest::Method::PUT, &format!("/{db}/notes%2F{name}"))
            .json(&json!({"collection": "notes", "title": name}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        direct.push((
            format!("notes/{name}"),
            written["rev"].as_str().unwrap().to_string(),
        ));
    }
    stack.dataplane.restart().await.expect("data plane back");
    watcher
        .stderr_until("resubscribed to notes (reconnect 1", WAIT)
        .await;
    let mut printed = expect_events(
        &mut watcher,
        &[
            update(&direct[0].0, &direct[0].1),
            update(&direct[1].0, &direct[1].1),
        ],
    )
    .await;

    // 2. A live event, then a graceful stop (SIGTERM). Meanwhile a second data plane on
    //    the same CouchDB (a replica: same system database, signing key and public URL)
    //    takes writes through the CLI with an app token.
    // The app token for the replica is minted now: the owner's session names the
    // primary's URL, which will be down.
    let app_token = vibe.ok(&["apps", "token", "notes-app"]).await["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (b1, b1_rev1) = put(&vibe, &app, "notes", json!({"_id": "notes/b1", "v": 1})).await;
    printed.extend(expect_events(&mut watcher, &[update(&b1, &b1_rev1)]).await);
    let b1_seq = printed.last().unwrap()["seq"].clone();
    stack.dataplane.stop().await;
    watcher.stderr_until("disconnected from notes", WAIT).await;

    let mut replica_config = DataPlaneConfig::claimable(&stack.couch);
    replica_config.claim_code = None;
    replica_config.owner = Some(did.clone());
    replica_config.signing_key = stack.dataplane.config.signing_key.clone();
    replica_config.system_db = stack.dataplane.config.system_db.clone();
    replica_config.public_url = Some(stack.dataplane.public_url());
    let replica = DataPlane::start(replica_config).await.expect("replica");
    let via_replica = [
        "--instance",
        replica.url.as_str(),
        "--app-token",
        app_token.as_str(),
    ];
    let (b2, b2_rev) = put(&vibe, &via_replica, "notes", json!({"_id": "notes/b2"})).await;
    let (_, b1_rev2) = put(
        &vibe,
        &via_replica,
        "notes",
        json!({"_id": b1, "_rev": b1_rev1, "v": 2}),
    )
    .await;
    let a2_gone = delete(&vibe, &via_replica, "notes", "a2").await;
    drop(replica);

    stack.dataplane.restart().await.expect("data plane back");
    watcher
        .stderr_until("resubscribed to notes (reconnect 2", WAIT)
        .await;
    printed.extend(
        expect_events(
            &mut watcher,
            &[
                update(&b2, &b2_rev),
                update(&b1, &b1_rev2),
                deletion(&direct[1].0, &a2_gone),
            ],
        )
        .await,
    );

    // 3. CouchDB stops and comes back (same port and data), then crashes and comes back:
    //    the watcher's socket stays open, the data plane resumes its change feed, and
    //    later writes arrive.
    stack.couch.stop().await;
    let down = vibe.run(&["status"]).await;
    assert_eq!(
        down.code, 1,
        "not ready while CouchDB is down: {}",
        down.stdout
    );
    stack.couch.restart().await.expect("CouchDB back");
    eventually(WAIT, "the instance ready again", || async {
        (vibe.run(&["status"]).await.code == 0).then_some(())
    })
    .await;
    let (c1, c1_rev) = put(&vibe, &app, "notes", json!({"_id": "notes/c1"})).await;
    printed.extend(expect_events(&mut watcher, &[update(&c1, &c1_rev)]).await);
    // And once more after CouchDB crashes (SIGKILL).
    stack.couch.kill();
    stack
        .couch
        .restart()
        .await
        .expect("CouchDB back after a crash");
    eventually(WAIT, "the instance ready after the crash", || async {
        (vibe.run(&["status"]).await.code == 0).then_some(())
    })
    .await;
    let (c2, c2_rev) = put(&vibe, &app, "notes", json!({"_id": "notes/c2"})).await;
    printed.extend(expect_events(&mut watcher, &[update(&c2, &c2_rev)]).await);
    // A last write: any repeated or stray event would come before it.
    let (z, z_rev) = put(&vibe, &app, "notes", json!({"_id": "notes/z"})).await;
    printed.extend(expect_events(&mut watcher, &[update(&z, &z_rev)]).await);

    // `--since` with a sequence printed earlier replays exactly what followed it.
    let after_b1: Vec<_> = printed
        .iter()
        .skip_while(|e| e["seq"] != b1_seq)
        .skip(1)
        .map(summary)
        .collect();
    assert_eq!(after_b1.len(), 6);
    let since = b1_seq.to_string();
    let count = after_b1.len().to_string();
    let replay = vibe
        .run(&[
            "--app",
            "notes-app",
            "watch",
            "notes",
            "--since",
            &since,
            "--count",
            &count,
        ])
        .await;
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    let replayed: Vec<_> = replay
        .stdout
        .lines()
        .map(|l| summary(&serde_json::from_str(l).unwrap()))
        .collect();
    assert_eq!(replayed, after_b1);

    // The watcher still runs; on stderr it reported the two outages and reconnections,
    // nothing else.
    let transcript = watcher.transcript();
    let news: Vec<&str> = transcript
        .lines()
        .filter_map(|l| l.strip_prefix("stderr: "))
        .collect();
    assert_eq!(news.len(), 5, "{transcript}");
    assert!(news[0].starts_with("subscribed to notes"), "{transcript}");
    for n in [1, 2] {
        assert!(
            news[2 * n - 1].starts_with("disconnected from notes: "),
            "{transcript}"
        );
        assert!(
            news[2 * n].starts_with(&format!("resubscribed to notes (reconnect {n}, ")),
            "{transcript}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_exits_after_n_events_and_an_unreachable_instance_ends_the_watch() {
    if vibe_test_support::skip_with_external_couchdb("stops and restarts CouchDB") {
        return;
    }
    let mut stack = Stack::start(false).await.expect("stack");
    let (vibe, _did) = owner_cli(&stack).await;
    vibe.ok(&["apps", "grant", "notes-app", "read:notes", "write:notes"])
        .await;
    let app = ["--app", "notes-app"];

    // --count 2: exits 0 after two events, printing exactly those.
    let mut counted = vibe.spawn(
        &["--app", "notes-app", "watch", "notes", "--count", "2"],
        &[],
    );
    counted.stderr_until("subscribed to notes", WAIT).await;
    let mut written = Vec::new();
    for n in 0..3 {
        written.push(put(&vibe, &app, "notes", json!({ "n": n })).await);
    }
    let run = counted.exit(WAIT).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.iter().map(summary).collect::<Vec<_>>(),
        vec![
            update(&written[0].0, &written[0].1),
            update(&written[1].0, &written[1].1)
        ]
    );

    // Started while CouchDB is down: the instance says its database is unavailable; the
    // watch reports it, keeps trying, and subscribes once CouchDB is back.
    stack.couch.stop().await;
    let mut early = vibe.spawn(&["--app", "notes-app", "watch", "notes"], &[]);
    early
        .stderr_until("Database service is not available.", WAIT)
        .await;
    stack.couch.restart().await.expect("CouchDB back");
    early.stderr_until("subscribed to notes", WAIT).await;
    let (id, rev) = put(&vibe, &app, "notes", json!({"n": "after CouchDB"})).await;
    let event = early.stdout_json(WAIT).await;
    assert_eq!(summary(&event), update(&id, &rev), "{}", early.transcript());
    drop(early);

    // A running watch whose instance goes away for good gives up after --reconnect-for.
    let mut orphan = vibe.spawn(
        &[
            "--app",
            "notes-app",
            "watch",
            "notes",
            "--reconnect-for",
            "3",
        ],
        &[],
    );
    orphan.stderr_until("subscribed to notes", WAIT).await;
    stack.dataplane.kill().await;
    orphan.stderr_until("disconnected from notes", WAIT).await;
    let lost_at = Instant::now();
    let run = orphan.exit(WAIT).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        lost_at.elapsed() >= Duration::from_secs(2),
        "kept trying for --reconnect-for"
    );
    assert!(
        run.stderr.contains("gave up after 3s") && run.stderr.contains("cannot connect to ws://"),
        "{}",
        run.stderr
    );

    // An instance unreachable from the start: the same, with the connection error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = VibeCli::new(&format!("http://127.0.0.1:{port}"));
    let started = Instant::now();
    let run = nowhere
        .run(&["--app-token", "t", "watch", "notes", "--reconnect-for", "2"])
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        run.stderr.contains(&format!(
            "disconnected from notes: realtime: cannot connect to ws://127.0.0.1:{port}/ws"
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("gave up after 2s"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}
