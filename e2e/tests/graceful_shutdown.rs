//! SIGTERM (what Kubernetes sends before stopping a pod) with long-lived connections open:
//! a realtime socket is closed with 1001 "going away", a live sync feed (`_changes`
//! continuous) ends cleanly, and the process exits by itself with status 0 instead of
//! hanging on those connections until it is killed.

mod common;

use common::{app_with, claim_and_login};
use futures::StreamExt;
use reqwest::header::AUTHORIZATION;
use vibe_cli::watch::Socket;
use vibe_e2e::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_goodbye_to_sockets_and_feeds_and_exits_cleanly() {
    let mut stack = Stack::start(false).await.expect("stack");
    let (_key, owner) = claim_and_login(&stack).await;
    let app = app_with(&owner, "notes-app", &["read:notes"]).await;

    let mut socket = Socket::connect(&app).await.expect("socket");
    socket.subscribe("notes", None).await.expect("subscribe");

    // A live sync feed, as PouchDB or a CouchDB replicator holds it open.
    let token = owner.access_token().await.unwrap();
    let feed_url = owner
        .instance()
        .endpoint("api/v1/sync/_changes?feed=continuous&heartbeat=500&since=now");
    let feed = owner
        .instance()
        .http()
        .get(feed_url)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .expect("continuous feed");
    assert_eq!(feed.status(), 200);
    let mut feed = feed.bytes_stream();
    // The first heartbeat proves the feed is flowing through the data plane.
    let first = feed.next().await.expect("a heartbeat").expect("feed bytes");
    assert!(
        first.iter().all(|b| *b == b'\n'),
        "{first:?}: only heartbeats on an idle feed"
    );

    let stopping = tokio::spawn(async move {
        let status = stack.dataplane.stop().await;
        (stack, status)
    });

    let closed = loop {
        match socket.next_frame().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("socket closed without a close frame"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        closed.contains("closed by server (1001"),
        "expected a 1001 going-away close, got: {closed}"
    );

    // The feed ends (cleanly: no error) instead of holding the process open.
    while let Some(chunk) = feed.next().await {
        let chunk = chunk.expect("the feed ends without a transport error");
        assert!(chunk.iter().all(|b| *b == b'\n'), "{chunk:?}");
    }

    let (_stack, status) = stopping.await.unwrap();
    let status = status.expect("the data plane exited by itself after SIGTERM (not killed)");
    assert!(status.success(), "exit status {status}");
}
