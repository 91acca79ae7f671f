//! A hostile app holding only `read:notes` tries to read other collections through
//! selectors (issue 15, item 1), black box: the data plane binary over a real
//! CouchDB-compatible server and S3-compatible server.

mod common;

use std::path::Path;

use common::{app_with, claim_and_login};
use reqwest::Method;
use serde_json::{Value, json};
use vibe_cli::client::Client;
use vibe_e2e::stack::Stack;

/// Status and JSON body of a raw request made by `client`.
async fn call(client: &Client, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
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
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_reads_only_the_collections_it_was_granted() {
    let stack = Stack::start(true).await.expect("stack with S3");
    let (_key, owner) = claim_and_login(&stack).await;

    let writer = app_with(
        &owner,
        "writer-app",
        &["write:notes", "write:secretz", "blob:write:photos"],
    )
    .await;
    writer
        .write("notes", &json!({"title": "mine"}))
        .await
        .unwrap();
    writer
        .write("secretz", &json!({"pin": "secret-pin-1234"}))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret-photo.png");
    std::fs::write(&file, b"not really a png").unwrap();
    writer
        .blob_put_file("photos", Path::new(&file), None, None)
        .await
        .expect("blob upload");

    app_with(&owner, "reader-app", &["read:notes"]).await;
    let reader = owner.app_client("reader-app").await.expect("app token");

    let (status, page) = call(
        &reader,
        Method::POST,
        "api/v1/data/read",
        Some(json!({"collection": "notes"})),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["docs"].as_array().unwrap().len(), 1, "{page}");

    for filter in [
        json!({"$and": [{"collection": "secretz"}]}),
        json!({"$and": [{"collection": {"$eq": "secretz"}}]}),
        json!({"$and": [{"collection": "blobs"}]}),
        json!({"$or": [{"collection": "secretz"}, {"collection": "blobs"}]}),
        json!({"collection": "secretz"}),
    ] {
        let (status, answer) = call(
            &reader,
            Method::POST,
            "api/v1/data/read",
            Some(json!({"collection": "notes", "filter": filter})),
        )
        .await;
        assert!(
            status == 200 || status == 400,
            "{filter}: {status} {answer}"
        );
        let text = answer.to_string();
        assert!(
            !text.contains("secret-pin-1234")
                && !text.contains("secret-photo")
                && !text.contains("secretz/"),
            "{filter} leaked: {answer}"
        );
        if let Some(docs) = answer["docs"].as_array() {
            for doc in docs {
                assert_eq!(doc["collection"], "notes", "{filter}: {answer}");
            }
        }
    }

    // The same app cannot name the other collections directly either.
    for body in [
        json!({"collection": "secretz"}),
        json!({"collection": "blobs"}),
    ] {
        let (status, answer) = call(&reader, Method::POST, "api/v1/data/read", Some(body)).await;
        assert_eq!(status, 403, "{answer}");
    }
    // Nor sync (no `sync` grant), which would hand out the whole database.
    let (status, answer) = call(&reader, Method::GET, "api/v1/sync/_changes", None).await;
    assert_eq!(status, 403, "{answer}");
}
