//! The reserved `blobs` collection: blob metadata documents are written only by the blob
//! routes. The document API refuses writes and deletes there for every caller (reads stay),
//! and sync accepts `blobs/*` documents only as revisions the server already has, so
//! devices can replicate them back unchanged but cannot create or edit them.
//! Against a real pouchdb-server, through the real router.

mod common;

use common::TestInstance;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP: &str = "https://files.example";
const META_ID: &str = "blobs/01900000-0000-7000-8000-000000000001";

/// An instance whose app holds every grant on `blobs`, and a metadata document written
/// directly, as the blob routes write it.
async fn instance_with_metadata() -> (TestInstance, String, Value) {
    let t = TestInstance::start().await;
    let token = t.owner_token().await;
    t.upsert_app(
        &token,
        APP,
        &[
            ("read:blobs", "always"),
            ("write:blobs", "always"),
            ("read:notes", "always"),
            ("write:notes", "always"),
        ],
    )
    .await;
    let db = t.state.data_db().await.expect("data db");
    let meta = json!({
        "_id": META_ID,
        "collection": "blobs",
        "collectionName": "photos",
        "objectKey": "owner/photos/01900000-0000-7000-8000-000000000001-a.jpg",
        "originalFilename": "a.jpg",
        "contentType": "image/jpeg",
        "size": 3,
        "ownerDid": t.owner.did().to_string(),
        "uploadTimestamp": "2026-11-25T00:00:00Z",
        "bucket": "b"
    });
    db.put(META_ID, &meta).await.expect("put metadata");
    let stored = db.get(META_ID).await.expect("get").expect("stored");
    (t, token, stored)
}

async fn stored(t: &TestInstance, id: &str) -> Option<Value> {
    t.state
        .data_db()
        .await
        .expect("data db")
        .get(id)
        .await
        .expect("get")
}

fn assert_reserved_refusal(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("'blobs' collection") && error.contains("/api/v1/blob"),
        "{body}"
    );
}

#[tokio::test]
async fn the_document_api_never_writes_or_deletes_blob_metadata() {
    let (t, owner_token, meta) = instance_with_metadata().await;
    let rev = meta["_rev"].as_str().unwrap().to_string();
    let (status, body) = t
        .post(
            "/api/v1/apps/token",
            Some(&owner_token),
            None,
            json!({"appId": APP}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let app_token = body["accessToken"].as_str().unwrap().to_string();

    // The owner acting as the app (agent mode) and the app's own token: both hold
    // write:blobs, both are refused.
    for (token, app) in [
        (owner_token.as_str(), Some(APP)),
        (app_token.as_str(), None),
    ] {
        let tok = Some(token);
        // Overwrite the existing document (pointing it at a foreign object).
        let forged = json!({"_id": META_ID, "_rev": rev, "collection": "blobs",
                            "objectKey": "someone-else/secret.pdf", "size": 1});
        let (status, body) = t
            .post(
                "/api/v1/data/write",
                tok,
                app,
                json!({"collection": "blobs", "data": forged}),
            )
            .await;
        assert_reserved_refusal(status, &body);
        // Create a new one, singly and in an array.
        for data in [
            json!({"objectKey": "x"}),
            json!([{"objectKey": "x"}, {"objectKey": "y"}]),
        ] {
            let (status, body) = t
                .post(
                    "/api/v1/data/write",
                    tok,
                    app,
                    json!({"collection": "blobs", "data": data}),
                )
                .await;
            assert_reserved_refusal(status, &body);
        }
        // Delete it (metadata would vanish while the object stays).
        let (status, body) = t
            .call(
                Method::DELETE,
                &format!("/api/v1/data/{META_ID}?rev={rev}"),
                tok,
                app,
                None,
            )
            .await;
        assert_reserved_refusal(status, &body);

        // Reads are as before.
        let (status, body) = t.get(&format!("/api/v1/data/{META_ID}"), tok, app).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, meta);
        let (status, body) = t
            .post(
                "/api/v1/data/read",
                tok,
                app,
                json!({"collection": "blobs"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["docs"], json!([meta]));

        // Other collections are untouched by the rule.
        let (status, body) = t
            .post(
                "/api/v1/data/write",
                tok,
                app,
                json!({"collection": "notes", "data": {"text": "hi"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    assert_eq!(stored(&t, META_ID).await, Some(meta));
    let (status, body) = t
        .post(
            "/api/v1/data/read",
            Some(&owner_token),
            Some(APP),
            json!({"collection": "blobs"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["docs"].as_array().unwrap().len(), 1, "nothing created");
}

/// The sync view of a document with its revision history, as a device holds it.
async fn device_copy(t: &TestInstance, token: &str, id: &str) -> Value {
    let path = format!("/api/v1/sync/{}?revs=true", id.replace('/', "%2F"));
    let (status, doc) = t.get(&path, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc
}

async fn bulk_docs(t: &TestInstance, token: &str, body: Value) -> Vec<Value> {
    let (status, results) = t
        .post("/api/v1/sync/_bulk_docs", Some(token), None, body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{results}");
    results.as_array().expect("array").clone()
}

fn errors_for<'a>(results: &'a [Value], id: &str) -> Vec<&'a Value> {
    results
        .iter()
        .filter(|r| r["id"] == id && r.get("error").is_some())
        .collect()
}

#[tokio::test]
async fn sync_takes_blob_metadata_back_only_as_known_revisions() {
    let (t, token, meta) = instance_with_metadata().await;
    let copy = device_copy(&t, &token, META_ID).await;
    assert_eq!(copy["_revisions"]["start"], 1, "{copy}");

    // Replicating back the revision the server has: accepted, nothing changes.
    let results = bulk_docs(
        &t,
        &token,
        json!({"new_edits": false, "docs": [copy.clone(),
            {"_id": "notes/n1", "_rev": "1-0123456789abcdef0123456789abcdef",
             "collection": "notes", "text": "device note"}]}),
    )
    .await;
    assert!(
        results.iter().all(|r| r.get("error").is_none()),
        "{results:?}"
    );
    assert_eq!(stored(&t, META_ID).await, Some(meta.clone()));
    assert!(
        stored(&t, "notes/n1").await.is_some(),
        "the rest is written"
    );

    // A new revision made on a device (edited, or deleted): refused per item.
    let old = copy["_rev"].as_str().unwrap().split_once('-').unwrap().1;
    let new_hash = "fedcba9876543210fedcba9876543210";
    let mut edited = copy.clone();
    edited["_rev"] = json!(format!("2-{new_hash}"));
    edited["_revisions"] = json!({"start": 2, "ids": [new_hash, old]});
    edited["objectKey"] = json!("someone-else/secret.pdf");
    let mut deleted = json!({"_id": META_ID, "_deleted": true});
    deleted["_rev"] = json!(format!("2-{new_hash}"));
    deleted["_revisions"] = edited["_revisions"].clone();
    for doc in [edited, deleted] {
        let results = bulk_docs(&t, &token, json!({"new_edits": false, "docs": [doc]})).await;
        let errors = errors_for(&results, META_ID);
        assert_eq!(errors.len(), 1, "{results:?}");
        assert_eq!(errors[0]["error"], "forbidden");
        assert!(
            errors[0]["reason"]
                .as_str()
                .unwrap()
                .contains("already has"),
            "{results:?}"
        );
        assert_eq!(stored(&t, META_ID).await, Some(meta.clone()));
    }

    // A metadata document the server never had: refused, not stored.
    let foreign = "blobs/01900000-0000-7000-8000-0000000000ff";
    let results = bulk_docs(
        &t,
        &token,
        json!({"new_edits": false, "docs": [{"_id": foreign,
            "_rev": "1-00112233445566778899aabbccddeeff",
            "_revisions": {"start": 1, "ids": ["00112233445566778899aabbccddeeff"]},
            "collection": "blobs", "objectKey": "someone-else/secret.pdf"}]}),
    )
    .await;
    assert_eq!(errors_for(&results, foreign).len(), 1, "{results:?}");
    assert_eq!(stored(&t, foreign).await, None);

    // Without new_edits:false every write would be a new revision: refused.
    let results = bulk_docs(
        &t,
        &token,
        json!({"docs": [
            {"_id": META_ID, "_rev": copy["_rev"], "collection": "blobs", "size": 9},
            {"_id": foreign, "collection": "blobs"},
            {"_id": "notes/n2", "collection": "notes"}
        ]}),
    )
    .await;
    assert_eq!(results[0]["error"], "forbidden", "{results:?}");
    assert_eq!(results[1]["error"], "forbidden", "{results:?}");
    assert_eq!(results[2]["ok"], true, "{results:?}");
    assert_eq!(stored(&t, META_ID).await, Some(meta));
    assert_eq!(stored(&t, foreign).await, None);
}
