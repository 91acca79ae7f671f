//! A hostile app holding only `read:notes` (and one holding `sync`) tries to keep the
//! instance's store busy (issue 15, item 2), black box: the data plane binary over a real
//! CouchDB-compatible server. Every attack of the issue is refused with a 400 or 429
//! naming its bound, and the owner's other apps go on being served.

mod common;

use common::{app_with, claim_and_login};
use reqwest::Method;
use serde_json::{Value, json};
use vibe_cli::client::Client;
use vibe_e2e::stack::Stack;

/// Status, `Retry-After` and JSON body of a raw request made by `client`.
async fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let path = path.to_string();
    let response = client
        .send_raw(|i| {
            let request = i.request(method.clone(), &path);
            match &body {
                Some(body) => request.json(body),
                None => request,
            }
        })
        .await
        .expect("request");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body");
    (
        status,
        retry_after,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// The refusal of `body` sent to `path`: a 400 whose message names `bound`.
async fn refused(client: &Client, path: &str, body: Value, bound: &str) {
    let (status, _, answer) = call(client, Method::POST, path, Some(body)).await;
    assert_eq!(status, 400, "{bound}: {answer}");
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(bound),
        "the refusal should name {bound}: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issue_s_query_attacks_are_refused_naming_their_bound() {
    let stack = Stack::start(false).await.expect("stack");
    let (_key, owner) = claim_and_login(&stack).await;
    let writer = app_with(&owner, "writer-app", &["write:notes"]).await;
    for i in 0..5 {
        writer
            .write("notes", &json!({"title": format!("note {i}"), "n": i}))
            .await
            .expect("write");
    }
    app_with(&owner, "hostile-app", &["read:notes", "sync"]).await;
    let hostile = owner.app_client("hostile-app").await.expect("app token");
    app_with(&owner, "other-app", &["read:notes"]).await;
    let other = owner.app_client("other-app").await.expect("app token");

    let read = "api/v1/data/read";
    let in_100k: Vec<u32> = (0..100_000).collect();
    refused(
        &hostile,
        read,
        json!({"collection": "notes", "filter": {"n": {"$in": in_100k}}}),
        "query.max_in_items",
    )
    .await;
    let or_50k: Vec<Value> = (0..50_000).map(|i| json!({"n": i})).collect();
    refused(
        &hostile,
        read,
        json!({"collection": "notes", "filter": {"$or": or_50k}}),
        "query.max_or_items",
    )
    .await;
    refused(
        &hostile,
        read,
        json!({"collection": "notes", "filter": {"title": {"$regex": "^(a+)+$"}}}),
        "query.safe_regex",
    )
    .await;
    refused(
        &hostile,
        read,
        json!({"collection": "notes", "sort": [{"anyNewField": "asc"}]}),
        "query.sort_fields",
    )
    .await;
    let doc_ids: Vec<String> = (0..5_000).map(|i| format!("notes/{i}")).collect();
    refused(
        &hostile,
        "api/v1/sync/_changes?filter=_doc_ids",
        json!({"doc_ids": doc_ids}),
        "query.max_sync_ids",
    )
    .await;

    // A flood of reads from one app: some are refused 429 naming the bound, with
    // Retry-After.
    let floods = (0..300).map(|_| {
        call(
            &hostile,
            Method::POST,
            read,
            Some(json!({"collection": "notes"})),
        )
    });
    let answers = futures::future::join_all(floods).await;
    let limited = answers
        .iter()
        .find(|(status, _, _)| *status == 429)
        .expect("300 reads at once were never limited");
    assert!(limited.1.is_some(), "429 without Retry-After: {limited:?}");
    let message = limited.2["error"].as_str().unwrap_or_default();
    assert!(message.contains("query.app_"), "{limited:?}");
    assert!(
        answers
            .iter()
            .all(|(status, _, _)| matches!(status, 200 | 429)),
        "only 200 and 429 expected"
    );

    // The owner's other app is served meanwhile, with the documents.
    let (status, _, page) = call(
        &other,
        Method::POST,
        read,
        Some(json!({"collection": "notes"})),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["docs"].as_array().map(Vec::len), Some(5), "{page}");
}
