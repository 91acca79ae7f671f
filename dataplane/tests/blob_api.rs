//! The blob routes end to end: a real data plane (in process) on a real CouchDB-compatible
//! server and a real S3-compatible server that checks signatures (s3s-fs).

mod common;

use std::time::Duration;

use common::TestInstance;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vibe_dataplane::blobs::BlobSettings;
use vibe_dataplane::config::S3Config;
use vibe_test_support::S3Server;

const APP: &str = "https://photos.example";
const BUCKET: &str = "vibe-blobs";

struct Env {
    inst: TestInstance,
    s3: S3Server,
    token: String,
}

async fn env_with(grants: &[(&str, &str)], configure: impl FnOnce(&mut BlobSettings)) -> Env {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    let s3_config = S3Config {
        endpoint: s3.endpoint.parse().unwrap(),
        region: s3.region.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        bucket: BUCKET.into(),
        force_path_style: true,
    };
    let inst = TestInstance::start_with(|c| {
        c.s3 = Some(s3_config);
        c.blobs.create_bucket = true;
        configure(&mut c.blobs);
    })
    .await;
    let token = inst.owner_token().await;
    inst.upsert_app(&token, APP, grants).await;
    Env { inst, s3, token }
}

const ALL_PHOTOS: &[(&str, &str)] = &[
    ("blob:write:photos", "always"),
    ("blob:read:photos", "always"),
    ("blob:delete:photos", "always"),
    ("read:blobs", "always"),
];

async fn env(configure: impl FnOnce(&mut BlobSettings)) -> Env {
    env_with(ALL_PHOTOS, configure).await
}

/// Percent-encodes everything but unreserved characters (what `encodeURIComponent` does).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Env {
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.inst
            .post(path, Some(&self.token), Some(APP), body)
            .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.inst.get(path, Some(&self.token), Some(APP)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.inst
            .call(Method::DELETE, path, Some(&self.token), Some(APP), None)
            .await
    }

    async fn upload_url(
        &self,
        collection: &str,
        name: &str,
        content_type: &str,
        size: usize,
    ) -> (StatusCode, Value) {
        self.post(
            "/api/v1/blob/upload-url",
            json!({ "collectionName": collection, "originalFilename": name, "contentType": content_type, "size": size }),
        )
        .await
    }

    async fn finalize(
        &self,
        key: &str,
        collection: &str,
        name: &str,
        content_type: &str,
        size: usize,
    ) -> (StatusCode, Value) {
        self.post(
            "/api/v1/blob/finalize-upload",
            json!({ "objectKey": key, "originalFilename": name, "contentType": content_type, "size": size, "collectionName": collection }),
        )
        .await
    }

    /// upload-url → PUT to S3 → finalize; returns the finalize answer.
    async fn upload(&self, name: &str, content_type: &str, body: &[u8]) -> Value {
        let (status, grant) = self
            .upload_url("photos", name, content_type, body.len())
            .await;
        assert_eq!(status, StatusCode::OK, "{grant}");
        let status = put_presigned(
            grant["presignedUrl"].as_str().unwrap(),
            content_type,
            body.to_vec(),
        )
        .await;
        assert!(status.is_success(), "PUT to S3: {status}");
        let key = grant["objectKey"].as_str().unwrap();
        let (status, meta) = self
            .finalize(key, "photos", name, content_type, body.len())
            .await;
        assert_eq!(status, StatusCode::CREATED, "{meta}");
        meta
    }

    async fn object_exists(&self, key: &str) -> bool {
        self.s3
            .client()
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .is_ok()
    }
}

async fn put_presigned(url: &str, content_type: &str, body: Vec<u8>) -> StatusCode {
    reqwest::Client::new()
        .put(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("PUT reaches S3")
        .status()
}

#[tokio::test]
async fn full_flow_upload_finalize_download_list_delete() {
    let env = env(|_| {}).await;
    let body = b"\x89PNG pretend image bytes".to_vec();
    let (status, grant) = env
        .upload_url("photos", "My Cat (1).png", "image/png", body.len())
        .await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let key = grant["objectKey"].as_str().unwrap().to_string();
    let owner = env.inst.owner.did().to_string();
    assert!(key.starts_with(&format!("{owner}/photos/")), "{key}");
    assert!(key.ends_with("-My_Cat_1_.png"), "{key}");
    assert!(grant["expiresAt"].as_u64().unwrap() > chrono::Utc::now().timestamp() as u64);
    assert_eq!(grant["method"], "PUT");

    assert!(
        put_presigned(
            grant["presignedUrl"].as_str().unwrap(),
            "image/png",
            body.clone()
        )
        .await
        .is_success()
    );
    let (status, meta) = env
        .finalize(&key, "photos", "My Cat (1).png", "image/png", body.len())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{meta}");
    for field in [
        "originalFilename",
        "contentType",
        "size",
        "ownerDid",
        "uploadTimestamp",
        "bucket",
        "collection",
    ] {
        assert!(meta.get(field).is_some(), "metadata lacks {field}: {meta}");
    }
    assert_eq!(meta["collection"], "blobs");
    assert_eq!(meta["collectionName"], "photos");
    assert_eq!(meta["objectKey"], key.as_str());
    assert_eq!(meta["size"], body.len());
    assert_eq!(meta["ownerDid"], owner.as_str());
    assert_eq!(meta["bucket"], BUCKET);
    assert!(meta["_id"].as_str().unwrap().starts_with("blobs/"));
    assert!(meta["_rev"].is_string());

    // Finalising twice is a conflict, not a second document.
    let (status, _) = env
        .finalize(&key, "photos", "My Cat (1).png", "image/png", body.len())
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // The metadata is an ordinary document of the `blobs` collection.
    let (status, read) = env
        .post("/api/v1/data/read", json!({ "collection": "blobs" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["docs"].as_array().unwrap().len(), 1);
    assert_eq!(read["docs"][0]["objectKey"], key.as_str());

    // Download through the URL-encoded key, and through the raw key (clients that do not encode).
    for path in [
        format!("/api/v1/blob/download-url/{}", encode(&key)),
        format!("/api/v1/blob/download-url/{key}"),
    ] {
        let (status, dl) = env.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {dl}");
        assert!(dl["expiresAt"].as_u64().is_some());
        let resp = reqwest::get(dl["url"].as_str().unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "image/png");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
    }

    let (status, list) = env.get("/api/v1/blob?collection=photos").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["docs"].as_array().unwrap().len(), 1);
    assert_eq!(list["docs"][0]["objectKey"], key.as_str());
    assert!(list["bookmark"].is_null());

    let (status, _) = env.delete(&format!("/api/v1/blob/{}", encode(&key))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!env.object_exists(&key).await);
    let (status, err) = env
        .get(&format!("/api/v1/blob/download-url/{}", encode(&key)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"], "Blob not found.");
    let (status, _) = env.delete(&format!("/api/v1/blob/{}", encode(&key))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = env.get("/api/v1/blob?collection=photos").await;
    assert!(list["docs"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn presigned_upload_refuses_other_type_other_length_and_expiry() {
    let env = env(|s| s.upload_url_ttl = Duration::from_secs(1)).await;
    let (_, grant) = env.upload_url("photos", "a.txt", "text/plain", 5).await;
    let url = grant["presignedUrl"].as_str().unwrap();
    let key = grant["objectKey"].as_str().unwrap();
    assert_eq!(
        put_presigned(url, "text/html", b"hello".to_vec()).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put_presigned(url, "text/plain", b"hello, world".to_vec()).await,
        StatusCode::FORBIDDEN
    );
    assert!(!env.object_exists(key).await);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        put_presigned(url, "text/plain", b"hello".to_vec()).await,
        StatusCode::FORBIDDEN,
        "expired"
    );
    assert!(!env.object_exists(key).await);
}

#[tokio::test]
async fn finalize_refuses_missing_wrong_size_wrong_type_and_foreign_keys() {
    let env = env(|_| {}).await;
    let (_, grant) = env.upload_url("photos", "a.txt", "text/plain", 5).await;
    let key = grant["objectKey"].as_str().unwrap().to_string();

    let (status, err) = env.finalize(&key, "photos", "a.txt", "text/plain", 5).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not uploaded yet: {err}");

    assert!(
        put_presigned(
            grant["presignedUrl"].as_str().unwrap(),
            "text/plain",
            b"hello".to_vec()
        )
        .await
        .is_success()
    );
    let (status, err) = env.finalize(&key, "photos", "a.txt", "text/plain", 6).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "wrong size: {err}");
    let (status, err) = env.finalize(&key, "photos", "a.txt", "image/png", 5).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "wrong type: {err}");

    // Keys outside this instance's prefix for that collection.
    let uuid_tail = key.rsplit('/').next().unwrap();
    let other_owner = vibe_identity::Keypair::generate().did().to_string();
    for (bad, collection) in [
        (format!("{other_owner}/photos/{uuid_tail}"), "photos"),
        (key.clone(), "docs"),
        (format!("{}/../x", key), "photos"),
        ("photos/a.txt".to_string(), "photos"),
    ] {
        let grants_docs = collection == "docs";
        if grants_docs {
            // The app needs the grant for the claimed collection to get past 403.
            env.inst
                .upsert_app(
                    &env.token,
                    APP,
                    &[ALL_PHOTOS, &[("blob:write:docs", "always")]].concat(),
                )
                .await;
        }
        let (status, err) = env
            .finalize(&bad, collection, "a.txt", "text/plain", 5)
            .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{bad} in {collection}: {err}"
        );
    }

    // A well-formed key of this instance that was never uploaded is simply missing.
    let (status, _) = env
        .finalize(
            &key.replace("/photos/", "/docs/"),
            "docs",
            "a.txt",
            "text/plain",
            5,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Nothing was written by the refused attempts.
    let (_, read) = env
        .post("/api/v1/data/read", json!({ "collection": "blobs" }))
        .await;
    assert!(read["docs"].as_array().unwrap().is_empty(), "{read}");
    let (status, _) = env
        .get(&format!("/api/v1/blob/download-url/{}", encode(&key)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The right declaration succeeds.
    let (status, meta) = env.finalize(&key, "photos", "a.txt", "text/plain", 5).await;
    assert_eq!(status, StatusCode::CREATED, "{meta}");
}

#[tokio::test]
async fn finalize_of_an_old_upload_is_refused() {
    let env = env(|s| s.finalize_window = Duration::from_secs(1)).await;
    let (_, grant) = env.upload_url("photos", "a.txt", "text/plain", 5).await;
    let key = grant["objectKey"].as_str().unwrap();
    assert!(
        put_presigned(
            grant["presignedUrl"].as_str().unwrap(),
            "text/plain",
            b"hello".to_vec()
        )
        .await
        .is_success()
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, err) = env.finalize(key, "photos", "a.txt", "text/plain", 5).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
}

#[tokio::test]
async fn size_limits_and_quota_answer_413_before_any_url_is_issued() {
    let env = env(|s| {
        s.max_file_size = 80;
        s.quota_bytes = 100;
    })
    .await;
    let (status, err) = env
        .upload_url("photos", "big.bin", "application/octet-stream", 81)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert!(err.get("presignedUrl").is_none());

    // Outstanding upload URLs count: 60 reserved, 60 more does not fit.
    let (status, first) = env
        .upload_url("photos", "a.bin", "application/octet-stream", 60)
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, err) = env
        .upload_url("photos", "b.bin", "application/octet-stream", 60)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert!(err["error"].as_str().unwrap().contains("quota"), "{err}");

    // Finalised bytes count too.
    let body = vec![7u8; 60];
    assert!(
        put_presigned(
            first["presignedUrl"].as_str().unwrap(),
            "application/octet-stream",
            body
        )
        .await
        .is_success()
    );
    let (status, _) = env
        .finalize(
            first["objectKey"].as_str().unwrap(),
            "photos",
            "a.bin",
            "application/octet-stream",
            60,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = env
        .upload_url("photos", "c.bin", "application/octet-stream", 41)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Streaming uploads are held to the same quota, with or without a declared length.
    let resp = env
        .inst
        .http
        .put(
            env.inst
                .url("/api/v1/blob/upload?collection=photos&filename=s.bin"),
        )
        .bearer_auth(&env.token)
        .header("x-vibe-app-id", APP)
        .body(vec![1u8; 41])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![1u8; 30]), Ok(vec![2u8; 30])];
    let resp = env
        .inst
        .http
        .put(
            env.inst
                .url("/api/v1/blob/upload?collection=photos&filename=s.bin"),
        )
        .bearer_auth(&env.token)
        .header("x-vibe-app-id", APP)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Deleting frees the space.
    let (status, _) = env
        .delete(&format!(
            "/api/v1/blob/{}",
            encode(first["objectKey"].as_str().unwrap())
        ))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = env
        .upload_url("photos", "c.bin", "application/octet-stream", 80)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn abandoned_uploads_count_until_the_sweep_reclaims_them() {
    // The URL must outlive a PUT on a loaded machine (1 s did not, in CI); the sweep may
    // reclaim the object once the URL and the finalize window have both passed.
    const URL_TTL: Duration = Duration::from_secs(4);
    const FINALIZE_WINDOW: Duration = Duration::from_secs(1);
    let env = env(|s| {
        s.quota_bytes = 100;
        s.upload_url_ttl = URL_TTL;
        s.finalize_window = FINALIZE_WINDOW;
    })
    .await;
    let (_, grant) = env
        .upload_url("photos", "a.bin", "application/octet-stream", 60)
        .await;
    let key = grant["objectKey"].as_str().unwrap();
    assert!(
        put_presigned(
            grant["presignedUrl"].as_str().unwrap(),
            "application/octet-stream",
            vec![0; 60]
        )
        .await
        .is_success()
    );
    // Never finalised: still counts.
    let (status, _) = env
        .upload_url("photos", "b.bin", "application/octet-stream", 60)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    tokio::time::sleep(URL_TTL + FINALIZE_WINDOW + Duration::from_millis(1500)).await;
    let blobs = env.inst.state.blobs.clone().unwrap();
    let report = blobs.sweep_once(&env.inst.state).await.unwrap();
    assert_eq!(report.deleted, vec![key.to_string()]);
    assert!(!env.object_exists(key).await);
    let (status, body) = env
        .upload_url("photos", "b.bin", "application/octet-stream", 60)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn every_route_needs_its_grant() {
    // The app may write and read `photos` and nothing else.
    let env = env_with(
        &[
            ("blob:write:photos", "always"),
            ("blob:read:photos", "always"),
            ("blob:delete:docs", "never"),
        ],
        |_| {},
    )
    .await;
    let meta = env.upload("a.txt", "text/plain", b"hello").await;
    let key = meta["objectKey"].as_str().unwrap().to_string();

    let (status, err) = env.upload_url("docs", "a.txt", "text/plain", 5).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert_eq!(
        err["error"],
        "Forbidden: Application does not have permission 'blob:write:docs' for this user."
    );
    let (status, _) = env
        .finalize(
            &key.replace("/photos/", "/docs/"),
            "docs",
            "a.txt",
            "text/plain",
            5,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env.get("/api/v1/blob?collection=docs").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env.delete(&format!("/api/v1/blob/{}", encode(&key))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no blob:delete:photos");
    let resp = env
        .inst
        .http
        .put(
            env.inst
                .url("/api/v1/blob/upload?collection=docs&filename=x.txt"),
        )
        .bearer_auth(&env.token)
        .header("x-vibe-app-id", APP)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Revoking the read grant takes effect on the next request.
    let (status, _) = env
        .get(&format!("/api/v1/blob/download-url/{}", encode(&key)))
        .await;
    assert_eq!(status, StatusCode::OK);
    env.inst
        .upsert_app(
            &env.token,
            APP,
            &[
                ("blob:write:photos", "always"),
                ("blob:read:photos", "never"),
            ],
        )
        .await;
    let (status, _) = env
        .get(&format!("/api/v1/blob/download-url/{}", encode(&key)))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env.get("/api/v1/blob?collection=photos").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Without a token: 401; with an owner token but no app: 400.
    let (status, _) = env
        .inst
        .get("/api/v1/blob?collection=photos", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = env
        .inst
        .get("/api/v1/blob?collection=photos", Some(&env.token), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_input_is_a_clear_400() {
    let env = env(|_| {}).await;
    for body in [
        json!({ "collectionName": "photos", "originalFilename": "a", "contentType": "text/plain" }),
        json!({ "collectionName": "photos", "originalFilename": "a", "contentType": "text/plain", "size": -1 }),
        json!({ "collectionName": "photos", "originalFilename": "a", "contentType": "not a type", "size": 1 }),
        json!({ "collectionName": "Photos!", "originalFilename": "a", "contentType": "text/plain", "size": 1 }),
        json!({ "collectionName": "photos", "originalFilename": "", "contentType": "text/plain", "size": 1 }),
    ] {
        let (status, err) = env.post("/api/v1/blob/upload-url", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert!(err["error"].is_string());
    }
    let (status, _) = env.get("/api/v1/blob?collection=photos&limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env.get("/api/v1/blob?collection=photos&bookmark=zzz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env.get("/api/v1/blob").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env.get("/api/v1/blob/download-url/not-a-key").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_pages_through_every_blob_once() {
    let env = env(|_| {}).await;
    let mut keys = Vec::new();
    for i in 0..5 {
        let meta = env
            .upload(
                &format!("f{i}.txt"),
                "text/plain",
                format!("file {i}").as_bytes(),
            )
            .await;
        keys.push(meta["objectKey"].as_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut bookmark: Option<String> = None;
    loop {
        let path = match &bookmark {
            Some(b) => format!("/api/v1/blob?collection=photos&limit=2&bookmark={b}"),
            None => "/api/v1/blob?collection=photos&limit=2".to_string(),
        };
        let (status, page) = env.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let docs = page["docs"].as_array().unwrap();
        assert!(docs.len() <= 2);
        seen.extend(
            docs.iter()
                .map(|d| d["objectKey"].as_str().unwrap().to_string()),
        );
        match page["bookmark"].as_str() {
            Some(b) => bookmark = Some(b.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, keys, "every blob once, in upload order");
}

/// The list bookmark takes exactly what the OpenAPI document's pattern allows: empty (the
/// first page) or a hyphenated UUID in either letter case; the other forms a UUID parser
/// takes (simple, braced, URN) are refused like any other text.
#[tokio::test]
async fn list_bookmarks_are_what_the_document_allows() {
    let env = env(|_| {}).await;
    let doc: Value = serde_json::from_str(vibe_dataplane::openapi::OPENAPI_JSON).unwrap();
    let param = doc["paths"]["/api/v1/blob"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bookmark")
        .unwrap()
        .clone();
    assert_eq!(
        param["schema"]["pattern"],
        "^([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})?$"
    );
    for ok in [
        "",
        "0190a3c2-7b1e-7c3d-9e8f-0123456789ab",
        "0190A3C2-7B1E-7C3D-9E8F-0123456789AB",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    ] {
        let (status, page) = env
            .get(&format!("/api/v1/blob?collection=photos&bookmark={ok}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{ok:?}: {page}");
        assert!(page["docs"].is_array());
    }
    for bad in [
        "zzz",
        "0190a3c27b1e7c3d9e8f0123456789ab",
        "%7B0190a3c2-7b1e-7c3d-9e8f-0123456789ab%7D",
        "urn:uuid:0190a3c2-7b1e-7c3d-9e8f-0123456789ab",
        "0190a3c2-7b1e-7c3d-9e8f-0123456789ab%20",
        "%C3%8A%C3%BD%11%C3%AC%C3%81",
    ] {
        let (status, err) = env
            .get(&format!("/api/v1/blob?collection=photos&bookmark={bad}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
        assert_eq!(err["details"], "Invalid bookmark.", "{bad}");
    }
}

#[tokio::test]
async fn streaming_upload_stores_the_body_and_its_metadata() {
    let env = env(|_| {}).await;
    let body: Vec<u8> = (0..(9 * 1024 * 1024 + 123))
        .map(|i| (i % 251) as u8)
        .collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(300_000).map(|c| Ok(c.to_vec())).collect();
    let resp = env
        .inst
        .http
        .put(
            env.inst
                .url("/api/v1/blob/upload?collection=photos&filename=..%2F..%2Fbig%20file.bin"),
        )
        .bearer_auth(&env.token)
        .header("x-vibe-app-id", APP)
        .header("content-type", "application/x-test")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let meta: Value = resp.json().await.unwrap();
    assert_eq!(meta["size"], body.len());
    assert_eq!(meta["contentType"], "application/x-test");
    assert_eq!(meta["originalFilename"], "../../big file.bin");
    let key = meta["objectKey"].as_str().unwrap();
    assert!(key.ends_with("-big_file.bin"), "{key}");
    let (status, dl) = env
        .get(&format!("/api/v1/blob/download-url/{}", encode(key)))
        .await;
    assert_eq!(status, StatusCode::OK);
    let bytes = reqwest::get(dl["url"].as_str().unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bytes.as_ref() == body.as_slice(), "streamed bytes differ");
}

#[tokio::test]
async fn s3_down_is_503_and_the_service_recovers() {
    let mut env = env(|_| {}).await;
    let meta = env.upload("a.txt", "text/plain", b"hello").await;
    let key = meta["objectKey"].as_str().unwrap().to_string();
    let (_, grant) = env.upload_url("photos", "b.txt", "text/plain", 5).await;
    assert!(
        put_presigned(
            grant["presignedUrl"].as_str().unwrap(),
            "text/plain",
            b"world".to_vec()
        )
        .await
        .is_success()
    );

    env.s3.stop().await;
    let (status, err) = env
        .finalize(
            grant["objectKey"].as_str().unwrap(),
            "photos",
            "b.txt",
            "text/plain",
            5,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"], "Object storage is not available.");
    let (status, _) = env.delete(&format!("/api/v1/blob/{}", encode(&key))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let resp = env
        .inst
        .http
        .put(
            env.inst
                .url("/api/v1/blob/upload?collection=photos&filename=c.txt"),
        )
        .bearer_auth(&env.token)
        .header("x-vibe-app-id", APP)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, ready) = env.inst.get("/ready", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.to_string().contains("s3"), "{ready}");
    // The failed delete left the metadata in place: the blob is still listed.
    let (_, list) = env.get("/api/v1/blob?collection=photos").await;
    assert_eq!(list["docs"].as_array().unwrap().len(), 1);

    env.s3.restart().await.unwrap();
    let (status, _) = env.inst.get("/ready", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, meta_b) = env
        .finalize(
            grant["objectKey"].as_str().unwrap(),
            "photos",
            "b.txt",
            "text/plain",
            5,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{meta_b}");
    let (status, _) = env.delete(&format!("/api/v1/blob/{}", encode(&key))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!env.object_exists(&key).await);
}

#[tokio::test]
async fn without_an_object_store_blob_routes_answer_503() {
    let inst = TestInstance::start().await;
    let token = inst.owner_token().await;
    inst.upsert_app(&token, APP, ALL_PHOTOS).await;
    let (status, err) = inst
        .post(
            "/api/v1/blob/upload-url",
            Some(&token),
            Some(APP),
            json!({ "collectionName": "photos", "originalFilename": "a", "contentType": "text/plain", "size": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(
        err["error"],
        "Blob storage is not configured for this instance."
    );
}

/// JSON has one number type: a size written `5.0` (what Python's `json.dumps` writes for a
/// float) is the whole number 5, as the document's `integer` says; `5.5` and `-5.0` are not.
#[tokio::test]
async fn sizes_and_limits_written_as_whole_floats_are_whole_numbers() {
    let env = env(|_| {}).await;
    let body = b"hello".to_vec();
    let (status, grant) = env
        .post(
            "/api/v1/blob/upload-url",
            json!({ "collectionName": "photos", "originalFilename": "a.txt", "contentType": "text/plain", "size": 5.0 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let status = put_presigned(grant["presignedUrl"].as_str().unwrap(), "text/plain", body).await;
    assert!(status.is_success(), "PUT to S3: {status}");
    let (status, meta) = env
        .post(
            "/api/v1/blob/finalize-upload",
            json!({ "objectKey": grant["objectKey"], "originalFilename": "a.txt", "contentType": "text/plain", "size": 5.0, "collectionName": "photos" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{meta}");
    assert_eq!(meta["size"], 5, "{meta}");
    for size in [json!(5.5), json!(-5.0), json!(1e300)] {
        let (status, err) = env
            .post(
                "/api/v1/blob/upload-url",
                json!({ "collectionName": "photos", "originalFilename": "a.txt", "contentType": "text/plain", "size": size }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{size}: {err}");
    }
    let (status, page) = env
        .post(
            "/api/v1/data/read",
            json!({ "collection": "blobs", "limit": 1.0 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let (status, err) = env
        .post(
            "/api/v1/data/read",
            json!({ "collection": "blobs", "limit": 1.5 }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
}

/// Sizes and file names are bounded as the OpenAPI document says: sizes up to 2^53 (the
/// document's `maximum`) are whole numbers the server reads (beyond the instance's limit they
/// are 413, never 400), larger ones are malformed (400); file names are 1 to 1024 characters
/// (not bytes) and not only white space, in the body and in the streaming upload's query.
#[tokio::test]
async fn sizes_and_file_names_are_bounded_as_documented() {
    let env = env(|_| {}).await;
    let doc: Value = serde_json::from_str(vibe_dataplane::openapi::OPENAPI_JSON).unwrap();
    let schemas = &doc["components"]["schemas"];
    for schema in ["UploadUrlRequest", "FinalizeRequest"] {
        assert_eq!(
            schemas[schema]["properties"]["size"]["maximum"],
            json!(9_007_199_254_740_992_u64),
            "{schema}"
        );
        assert_eq!(
            schemas[schema]["properties"]["originalFilename"]["maxLength"], 1024,
            "{schema}"
        );
    }
    let upload_url = |size: Value, name: &str| json!({ "collectionName": "photos", "originalFilename": name, "contentType": "text/plain", "size": size });
    let (status, err) = env
        .post(
            "/api/v1/blob/upload-url",
            upload_url(json!(9_007_199_254_740_992_u64), "a.txt"),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    for size in [
        json!(9_007_199_254_740_993_u64),
        json!(u64::MAX),
        json!(5.2e34),
    ] {
        let (status, err) = env
            .post("/api/v1/blob/upload-url", upload_url(size.clone(), "a.txt"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{size}: {err}");
    }

    // 1024 two-byte characters: a name the document allows.
    let long = "é".repeat(1024);
    let (status, grant) = env
        .post("/api/v1/blob/upload-url", upload_url(json!(5), &long))
        .await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    let too_long = "a".repeat(1025);
    for name in [" ", "\t\u{3000}\u{85}", too_long.as_str()] {
        let (status, err) = env
            .post("/api/v1/blob/upload-url", upload_url(json!(5), name))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {err}");
    }
    // Not white space to Unicode (nor to Rust's `trim`), so a name.
    let (status, grant) = env
        .post("/api/v1/blob/upload-url", upload_url(json!(5), "\u{feff}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{grant}");

    let put = |query: String| {
        env.inst
            .http
            .put(
                env.inst
                    .url(&format!("/api/v1/blob/upload?collection=photos&{query}")),
            )
            .bearer_auth(&env.token)
            .header("x-vibe-app-id", APP)
            .header("content-type", "text/plain")
            .body("hello")
            .send()
    };
    let response = put(format!("filename={}", "%C3%A9".repeat(1024)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    for query in [
        "filename=+",
        "filename=%09",
        &format!("filename={too_long}"),
    ] {
        let response = put(query.to_string()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
}
