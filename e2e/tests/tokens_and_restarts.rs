//! Tokens across instances and sessions, and restarts of the data plane and of the
//! CouchDB-compatible server mid-run: nothing is lost, the service recovers by itself.

mod common;

use std::time::Duration;

use common::{app_with, claim_and_login, eventually};
use serde_json::json;
use vibe_cli::client::{Client, ReadQuery, TokenSource};
use vibe_e2e::stack::{DataPlane, DataPlaneConfig, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_instance_is_refused() {
    let stack = Stack::start(false).await.expect("stack");
    let (key, owner_a) = claim_and_login(&stack).await;
    let app_a = app_with(&owner_a, "notes-app", &["read:notes"]).await;
    let app_token_a = owner_a.app_token("notes-app").await.unwrap();

    // Instance B: same owner, same CouchDB, even the SAME signing key, another URL.
    let mut config = DataPlaneConfig::claimable(&stack.couch);
    config.claim_code = None;
    config.owner = Some(key.did().to_string());
    config.signing_key = stack.dataplane.config.signing_key.clone();
    let b = DataPlane::start(config).await.expect("instance B");
    let instance_b = b.instance();

    let token_a = owner_a.access_token().await.unwrap();
    let foreign = Client::new(instance_b.clone(), TokenSource::fixed(token_a));
    let refused = foreign.list_apps().await.unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");
    let refused = foreign
        .as_app("notes-app")
        .read(&ReadQuery::collection("notes"))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");
    let foreign_app = Client::new(
        instance_b.clone(),
        TokenSource::fixed(app_token_a.access_token),
    );
    let refused = foreign_app
        .read(&ReadQuery::collection("notes"))
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");
    let a_refresh = owner_a.tokens().current().await.unwrap().refresh_token;
    let refused = instance_b.refresh(&a_refresh).await.unwrap_err();
    assert_eq!(refused.status(), Some(401), "{refused}");

    // B's own login works, so the refusals above were about the audience.
    let tokens_b = instance_b.login(&key).await.expect("login on B");
    let owner_b = Client::new(instance_b, TokenSource::session(tokens_b));
    owner_b.list_apps().await.expect("B accepts its own token");
    // And A still accepts its own.
    app_a
        .read(&ReadQuery::collection("notes"))
        .await
        .expect("A accepts its own token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_refresh_themselves_and_a_replayed_refresh_token_revokes_the_family() {
    let stack = Stack::start(false).await.expect("stack");
    let (_key, owner) = claim_and_login(&stack).await;
    let mut tokens = owner.tokens().current().await.unwrap();
    let first_refresh = tokens.refresh_token.clone();
    // Pretend the access token expires now: the client must refresh before using it.
    tokens.access_token_expires_in = chrono::Utc::now().timestamp();
    let client = Client::new(stack.instance(), TokenSource::session(tokens));
    client.list_apps().await.expect("refreshed transparently");
    let rotated = client.tokens().current().await.unwrap();
    assert_ne!(rotated.refresh_token, first_refresh, "refresh rotates");

    // Replaying the spent refresh token fails and revokes the whole family.
    let replay = stack.instance().refresh(&first_refresh).await.unwrap_err();
    assert_eq!(replay.status(), Some(401), "{replay}");
    let family = stack
        .instance()
        .refresh(&rotated.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(family.status(), Some(401), "{family}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_data_plane_and_couchdb_loses_nothing() {
    if vibe_test_support::skip_with_external_couchdb("stops and restarts CouchDB") {
        return;
    }
    let mut stack = Stack::start(false).await.expect("stack");
    let (_key, owner) = claim_and_login(&stack).await;
    let app = app_with(&owner, "notes-app", &["read:notes", "write:notes"]).await;

    let docs: Vec<_> = (0..50).map(|n| json!({ "n": n })).collect();
    let (status, _) = app.write_bulk("notes", &docs).await.unwrap();
    assert_eq!(status, 200);
    let single = app.write("notes", &json!({ "n": 50 })).await.unwrap();
    let count = |app: Client| async move {
        app.read_all(&ReadQuery {
            limit: Some(20),
            ..ReadQuery::collection("notes")
        })
        .await
        .map(|docs| docs.len())
    };
    assert_eq!(count(app.clone()).await.unwrap(), 51);

    // Data plane restart: tokens, grants, documents and the refresh family survive.
    stack
        .dataplane
        .restart()
        .await
        .expect("data plane restarts");
    assert_eq!(count(app.clone()).await.unwrap(), 51);
    let got = app.get("notes", &single.id).await.unwrap();
    assert_eq!(got["n"], 50);
    let mut tokens = owner.tokens().current().await.unwrap();
    tokens.access_token_expires_in = 0;
    let refreshed = Client::new(stack.instance(), TokenSource::session(tokens)).as_app("notes-app");
    assert_eq!(
        count(refreshed.clone()).await.unwrap(),
        51,
        "refresh after restart"
    );

    // CouchDB down: a clear 503, never a 500 or a hang.
    stack.couch.stop().await;
    let down = app.read(&ReadQuery::collection("notes")).await.unwrap_err();
    assert_eq!(down.status(), Some(503), "{down}");
    assert_eq!(
        down.api_message(),
        Some("Database service is not available.")
    );
    let ready = stack.instance().ready().await.unwrap_err();
    assert_eq!(ready.status(), Some(503), "{ready}");

    // CouchDB back: the data plane recovers by itself; nothing was lost.
    stack.couch.restart().await.expect("couch restarts");
    let total = eventually(
        Duration::from_secs(30),
        "recovery after CouchDB restart",
        || {
            let app = app.clone();
            async move { count(app).await.ok() }
        },
    )
    .await;
    assert_eq!(total, 51);
    app.write("notes", &json!({ "n": 51 }))
        .await
        .expect("writes again");
    assert_eq!(count(app.clone()).await.unwrap(), 52);
    stack.instance().ready().await.expect("ready again");
}
