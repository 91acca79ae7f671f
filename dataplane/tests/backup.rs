//! Scheduled backups (`vibe-dataplane backup`, issue 18 item 5) and the restore source
//! (`GET /api/v1/restore/archive`) against real servers: pouchdb-server and s3s-fs.
//!
//! A backup is an archive encrypted to the owner, uploaded to the backup bucket under the
//! instance's prefix; retention keeps the newest N; an unowned instance writes nothing; and a
//! new instance pointed at a backup serves it to its owner, who decrypts and imports it — the
//! restored instance then serves the same documents.

mod common;

use std::io::Read;

use common::TestInstance;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vibe_api::export::{
    BackupOutcome, BackupReport, RESTORE_OUTCOME_KEY, RestoreEnd, RestoreOutcome,
};
use vibe_dataplane::config::{RestoreSource, S3Config};
use vibe_dataplane::export::backup::{self, BackupArgs};
use vibe_identity::Keypair;
use vibe_test_support::{CouchServer, S3Server};

const APP: &str = "https://notes.example";
const BACKUPS: &str = "vibe-backups";
const PREFIX: &str = "tenants/alice/";

fn s3_config(s3: &S3Server, bucket: &str) -> S3Config {
    S3Config {
        endpoint: s3.endpoint.parse().unwrap(),
        region: s3.region.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        bucket: bucket.into(),
        force_path_style: true,
    }
}

async fn instance(
    s3: &S3Server,
    owner: &Keypair,
    bucket: &str,
    restore: Option<RestoreSource>,
) -> TestInstance {
    let couch = CouchServer::start().await.expect("start CouchDB");
    let config = s3_config(s3, bucket);
    TestInstance::start_on(couch, owner.clone(), Keypair::generate(), |c| {
        c.s3 = Some(config);
        c.blobs.create_bucket = true;
        c.restore = restore;
    })
    .await
}

fn args(retention: u32) -> BackupArgs {
    BackupArgs {
        bucket: BACKUPS.into(),
        prefix: PREFIX.into(),
        retention,
        report_file: None,
    }
}

/// Notes and one blob.
async fn populate(a: &TestInstance) -> Value {
    let token = a.owner_token().await;
    a.upsert_app(
        &token,
        APP,
        &[
            ("read:notes", "always"),
            ("write:notes", "always"),
            ("blob:write:photos", "always"),
        ],
    )
    .await;
    let docs: Vec<Value> = (0..12)
        .map(|i| json!({ "title": format!("note {i}"), "n": i }))
        .collect();
    let (status, body) = a
        .post(
            "/api/v1/data/write",
            Some(&token),
            Some(APP),
            json!({ "collection": "notes", "data": docs }),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let resp = a
        .http
        .put(a.url("/api/v1/blob/upload?collection=photos&filename=cat.bin"))
        .bearer_auth(&token)
        .header("x-vibe-app-id", APP)
        .header("content-type", "application/octet-stream")
        .body(vec![7u8; 300 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    read_notes(a).await
}

async fn read_notes(inst: &TestInstance) -> Value {
    let token = inst.owner_token().await;
    let (status, body) = inst
        .post(
            "/api/v1/data/read",
            Some(&token),
            Some(APP),
            json!({ "collection": "notes", "limit": 100 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["docs"].clone()
}

async fn keys_in(s3: &S3Server, bucket: &str, prefix: &str) -> Vec<String> {
    let listed = s3
        .client()
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    keys.sort();
    keys
}

async fn object(s3: &S3Server, bucket: &str, key: &str) -> Vec<u8> {
    let got = s3
        .client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    got.body.collect().await.unwrap().into_bytes().to_vec()
}

/// The OpenSSH private key of `key` (what the owner's tools hand to age).
fn ssh_identity(key: &Keypair) -> age::ssh::Identity {
    use ssh_key::private::{Ed25519Keypair, Ed25519PrivateKey, KeypairData};
    use ssh_key::public::Ed25519PublicKey;
    let pair = Ed25519Keypair {
        public: Ed25519PublicKey(key.public_key().to_bytes()),
        private: Ed25519PrivateKey::from_bytes(&key.seed()),
    };
    let private = ssh_key::PrivateKey::new(KeypairData::Ed25519(pair), "owner").unwrap();
    let pem = private.to_openssh(ssh_key::LineEnding::LF).unwrap();
    age::ssh::Identity::from_buffer(pem.as_bytes(), None).unwrap()
}

fn decrypt(bytes: &[u8], key: &Keypair) -> Result<Vec<u8>, String> {
    let identity = ssh_identity(key);
    let decryptor = age::Decryptor::new(bytes).map_err(|e| e.to_string())?;
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_land_encrypted_in_the_bucket_and_retention_deletes_the_oldest() {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    s3.create_bucket(BACKUPS).await.unwrap();
    let owner = Keypair::generate();
    let a = instance(&s3, &owner, "vibe-a", None).await;
    populate(&a).await;
    // Something else under another instance's prefix is never touched by retention.
    s3.client()
        .put_object()
        .bucket(BACKUPS)
        .key("tenants/bob/20200101T000000.000Z-00000000.vibe.age")
        .body(b"bob's".to_vec().into())
        .send()
        .await
        .unwrap();

    let mut reports: Vec<BackupReport> = Vec::new();
    for _ in 0..3 {
        let report = backup::run(&a.state, &args(2)).await;
        assert_eq!(report.outcome, BackupOutcome::Succeeded, "{report:?}");
        reports.push(report);
    }
    let first = &reports[0];
    let key = first.object_key.clone().unwrap();
    assert!(
        key.starts_with(PREFIX) && key.ends_with(".vibe.age"),
        "{key}"
    );
    assert_eq!(first.deleted, 0);
    assert_eq!(reports[1].deleted, 0);
    assert_eq!(reports[2].deleted, 1, "the third backup deletes the first");
    let counts = first.counts.clone().unwrap();
    assert_eq!((counts.documents, counts.apps, counts.blobs), (13, 1, 1));
    assert!(first.size.unwrap() > 300 * 1024);

    let kept = keys_in(&s3, BACKUPS, PREFIX).await;
    let newest: Vec<String> = reports[1..]
        .iter()
        .map(|r| r.object_key.clone().unwrap())
        .collect();
    assert_eq!(kept, newest, "retention 2 keeps the two newest");
    assert_eq!(keys_in(&s3, BACKUPS, "tenants/bob/").await.len(), 1);

    // Stored as reported, encrypted to the owner: unreadable with another key.
    let stored = object(&s3, BACKUPS, &newest[1]).await;
    assert_eq!(Some(stored.len() as u64), reports[2].size);
    assert_eq!(
        Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored))),
        reports[2].sha256
    );
    assert!(stored.starts_with(b"age-encryption.org/v1"));
    assert!(decrypt(&stored, &Keypair::generate()).is_err());
    let plain = decrypt(&stored, &owner).expect("the owner decrypts");
    let mut tar = tar_entries(&plain);
    assert_eq!(tar.first().map(String::as_str), Some("vibe-export.json"));
    assert_eq!(tar.pop().as_deref(), Some("manifest.json"));
}

fn tar_entries(plain: &[u8]) -> Vec<String> {
    // ustar: 512-byte headers, name in the first 100 bytes, octal size at 124.
    let mut names = Vec::new();
    let mut at = 0;
    while at + 512 <= plain.len() {
        let header = &plain[at..at + 512];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let name = String::from_utf8_lossy(&header[..100])
            .trim_end_matches('\0')
            .to_string();
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&header[124..136])
                .trim_matches(|c: char| c == '\0' || c == ' '),
            8,
        )
        .unwrap();
        names.push(name);
        at += 512 + size.div_ceil(512) * 512;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_an_owner_is_skipped_and_writes_nothing() {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    s3.create_bucket(BACKUPS).await.unwrap();
    let couch = CouchServer::start().await.expect("start CouchDB");
    let config = s3_config(&s3, "vibe-unowned");
    let a = TestInstance::start_on(couch, Keypair::generate(), Keypair::generate(), |c| {
        c.s3 = Some(config);
        c.blobs.create_bucket = true;
        c.owner = None;
    })
    .await;
    let report = backup::run(&a.state, &args(3)).await;
    assert_eq!(report.outcome, BackupOutcome::Skipped, "{report:?}");
    assert!(report.message.unwrap().contains("no owner"));
    assert!(keys_in(&s3, BACKUPS, "").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_fails_midway_leaves_no_archive_and_is_reported() {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    s3.create_bucket(BACKUPS).await.unwrap();
    let owner = Keypair::generate();
    let a = instance(&s3, &owner, "vibe-a", None).await;
    populate(&a).await;
    // The blob's bytes vanish from the instance's bucket: the export fails after the
    // documents were already streamed into the upload.
    for key in keys_in(&s3, "vibe-a", "").await {
        s3.client()
            .delete_object()
            .bucket("vibe-a")
            .key(&key)
            .send()
            .await
            .unwrap();
    }
    let report = backup::run(&a.state, &args(3)).await;
    assert_eq!(report.outcome, BackupOutcome::Failed, "{report:?}");
    assert!(report.object_key.is_none());
    assert!(report.message.unwrap().contains("export failed"));
    assert!(
        keys_in(&s3, BACKUPS, "").await.is_empty(),
        "the aborted upload left an object"
    );
    // (s3s-fs cannot list multipart uploads, so the abort itself is not observed here.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_instance_serves_the_backup_to_its_owner_and_then_the_same_documents() {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    s3.create_bucket(BACKUPS).await.unwrap();
    let owner = Keypair::generate();
    let a = instance(&s3, &owner, "vibe-a", None).await;
    let notes = populate(&a).await;
    let report = backup::run(&a.state, &args(3)).await;
    assert_eq!(report.outcome, BackupOutcome::Succeeded, "{report:?}");
    let key = report.object_key.unwrap();

    let b = instance(
        &s3,
        &owner,
        "vibe-b",
        Some(RestoreSource {
            bucket: BACKUPS.into(),
            key: key.clone(),
        }),
    )
    .await;
    // Only the owner itself may fetch it; A (not being restored) has nothing to serve.
    let (status, _) = b
        .call(Method::GET, "/api/v1/restore/archive", None, None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = a
        .get(
            "/api/v1/restore/archive",
            Some(&a.owner_token().await),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let token = b.owner_token().await;
    let resp = b
        .http
        .get(b.url("/api/v1/restore/archive"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["x-vibe-backup-key"].to_str().unwrap(),
        key.as_str()
    );
    let sealed = resp.bytes().await.unwrap();
    assert_eq!(sealed.to_vec(), object(&s3, BACKUPS, &key).await);

    // Before the import, the instance takes no writes.
    let (status, body) = b
        .post(
            "/api/v1/apps/upsert",
            Some(&token),
            None,
            json!({ "appId": APP, "name": "Notes", "permissions": ["read:notes"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], json!("restore_pending"), "{body}");

    // The owner decrypts on their side and imports.
    let plain = decrypt(&sealed, &owner).unwrap();
    let resp = b
        .http
        .post(b.url("/api/v1/import"))
        .bearer_auth(&token)
        .header("content-type", "application/x-tar")
        .body(plain)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(status, StatusCode::OK, "{}", resp.text().await.unwrap());
    assert_eq!(
        read_notes(&b).await,
        notes,
        "the restored instance serves the same notes"
    );
    // The restore has ended: writes pass, the operator finds the outcome in the bucket, and
    // it cannot be abandoned any more.
    let restored = published_outcome(&s3, "vibe-b").await;
    assert_eq!(restored.outcome, RestoreEnd::Restored, "{restored:?}");
    assert_eq!(restored.object_key, key);
    assert!(restored.export_id.is_some(), "{restored:?}");
    let (status, body) = b
        .post(
            "/api/v1/data/write",
            Some(&token),
            Some(APP),
            json!({ "collection": "notes", "data": { "title": "after the restore" } }),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = b
        .post("/api/v1/restore/abandon", Some(&token), None, json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // A backup that is not there is a clear 404.
    let c = instance(
        &s3,
        &owner,
        "vibe-c",
        Some(RestoreSource {
            bucket: BACKUPS.into(),
            key: format!("{PREFIX}20200101T000000.000Z-00000000.vibe.age"),
        }),
    )
    .await;
    let (status, body) = c
        .get(
            "/api/v1/restore/archive",
            Some(&c.owner_token().await),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// The restore outcome the data plane left in `bucket` for the operator (waits for it: it
/// is written in the background).
async fn published_outcome(s3: &S3Server, bucket: &str) -> RestoreOutcome {
    for _ in 0..100 {
        if let Ok(got) = s3
            .client()
            .get_object()
            .bucket(bucket)
            .key(RESTORE_OUTCOME_KEY)
            .send()
            .await
        {
            let bytes = got.body.collect().await.unwrap().into_bytes();
            return serde_json::from_slice(&bytes).expect("a restore outcome");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no {RESTORE_OUTCOME_KEY} in bucket {bucket}");
}

/// Every kind of write that would make an instance non-empty, as the owner (acting as
/// [`APP`] where a grant is needed): name, status, body.
async fn writes(inst: &TestInstance, token: &str) -> Vec<(&'static str, StatusCode, Value)> {
    let mut out = Vec::new();
    let (status, body) = inst
        .post(
            "/api/v1/apps/upsert",
            Some(token),
            None,
            json!({ "appId": "https://other.example", "name": "Other",
                    "permissions": ["read:notes"], "grants": { "read:notes": "always" } }),
        )
        .await;
    out.push(("app registration", status, body));
    let (status, body) = inst
        .post(
            "/api/v1/devices",
            Some(token),
            None,
            json!({ "name": "laptop" }),
        )
        .await;
    out.push(("device registration", status, body));
    let (status, body) = inst
        .post(
            "/api/v1/data/write",
            Some(token),
            Some(APP),
            json!({ "collection": "notes", "data": { "title": "too early" } }),
        )
        .await;
    out.push(("document write", status, body));
    let (status, body) = inst
        .call(
            Method::DELETE,
            "/api/v1/data/notes/one?rev=1-0123456789abcdef0123456789abcdef",
            Some(token),
            Some(APP),
            None,
        )
        .await;
    out.push(("document deletion", status, body));
    let (status, body) = inst
        .post(
            "/api/v1/blob/upload-url",
            Some(token),
            Some(APP),
            json!({ "collectionName": "photos", "originalFilename": "cat.jpg",
                    "contentType": "image/jpeg", "size": 10 }),
        )
        .await;
    out.push(("upload URL", status, body));
    let (status, body) = inst
        .post(
            "/api/v1/blob/finalize-upload",
            Some(token),
            Some(APP),
            json!({ "collectionName": "photos", "originalFilename": "cat.jpg",
                    "contentType": "image/jpeg", "size": 10,
                    "objectKey": format!("{}/photos/0190a0a0-0000-7000-8000-000000000000-cat.jpg", inst.owner.did()) }),
        )
        .await;
    out.push(("upload finalisation", status, body));
    let resp = inst
        .http
        .put(inst.url("/api/v1/blob/upload?collection=photos&filename=cat.bin"))
        .bearer_auth(token)
        .header("x-vibe-app-id", APP)
        .header("content-type", "application/octet-stream")
        .body(vec![1u8; 1024])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    out.push((
        "blob upload",
        status,
        resp.json().await.unwrap_or(Value::Null),
    ));
    let (status, body) = inst
        .post(
            "/api/v1/sync/_bulk_docs",
            Some(token),
            Some(APP),
            json!({ "docs": [{ "_id": "notes/synced", "collection": "notes", "title": "x" }] }),
        )
        .await;
    out.push(("sync write", status, body));
    out
}

/// An app registration written straight into the system database, as an import's commit
/// that stopped half-way leaves it; waits until the data plane has loaded it.
async fn register_directly(inst: &TestInstance) {
    let system = inst.state.system_db().await.unwrap();
    let grants: serde_json::Map<String, Value> =
        ["read:notes", "write:notes", "blob:write:photos", "sync"]
            .iter()
            .map(|p| (p.to_string(), json!("always")))
            .collect();
    let permissions: Vec<&String> = grants.keys().collect();
    system
        .put(
            &format!("apps/{APP}"),
            &json!({ "appId": APP, "name": "Notes", "permissions": permissions,
                     "grants": grants, "collection": "apps",
                     "userDid": inst.owner.did().to_string(),
                     "registeredAt": "2026-12-04T00:00:00Z", "registration": "r1" }),
        )
        .await
        .unwrap();
    for _ in 0..100 {
        if inst.state.grants.get(APP).is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the app was not loaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_for_the_restore_until_the_owner_abandons_it_and_a_restart_keeps_that() {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    s3.create_bucket(BACKUPS).await.unwrap();
    let owner = Keypair::generate();
    let source = RestoreSource {
        bucket: BACKUPS.into(),
        key: format!("{PREFIX}20261204T000000.000Z-00000000.vibe.age"),
    };
    let mut b = instance(&s3, &owner, "vibe-b", Some(source.clone())).await;
    let token = b.owner_token().await;
    register_directly(&b).await;

    for (what, status, body) in writes(&b, &token).await {
        assert_eq!(status, StatusCode::CONFLICT, "{what}: {body}");
        assert_eq!(body["code"], json!("restore_pending"), "{what}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("vibe restore") && error.contains("--abandon"),
            "{what}: {body}"
        );
    }
    // Reads, login, export and the restore's own routes stay open.
    let (status, body) = b
        .post(
            "/api/v1/data/read",
            Some(&token),
            Some(APP),
            json!({ "collection": "notes" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = b.get("/api/v1/apps", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = b.get("/api/v1/restore/archive", Some(&token), None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the backup is not there: {body}"
    );
    let resp = b
        .http
        .get(b.url("/api/v1/export"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap();

    // Abandoning is for the owner itself; an instance without a restore has none to abandon.
    let (status, body) = b
        .post(
            "/api/v1/restore/abandon",
            Some(&token),
            Some(APP),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let plain = instance(&s3, &owner, "vibe-plain", None).await;
    let (status, body) = plain
        .post(
            "/api/v1/restore/abandon",
            Some(&plain.owner_token().await),
            None,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, body) = b
        .post("/api/v1/restore/abandon", Some(&token), None, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let abandoned: RestoreOutcome = serde_json::from_value(body).unwrap();
    assert_eq!(abandoned.outcome, RestoreEnd::Abandoned);
    assert_eq!(
        (abandoned.bucket.as_str(), abandoned.object_key.as_str()),
        (BACKUPS, source.key.as_str())
    );
    let (status, again) = b
        .post("/api/v1/restore/abandon", Some(&token), None, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        again["time"],
        json!(abandoned.time),
        "repeating changes nothing"
    );
    assert_eq!(published_outcome(&s3, "vibe-b").await, abandoned);

    // Writes pass now, and still after a restart (the abandon is in the system database).
    let (status, body) = b
        .post(
            "/api/v1/data/write",
            Some(&token),
            Some(APP),
            json!({ "collection": "notes", "data": { "title": "first" } }),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let config = s3_config(&s3, "vibe-b");
    b.restart(|c| {
        c.s3 = Some(config);
        c.blobs.create_bucket = true;
        c.restore = Some(source);
    })
    .await;
    let token = b.owner_token().await;
    for (what, status, body) in writes(&b, &token).await {
        assert_ne!(status, StatusCode::CONFLICT, "{what}: {body}");
    }
    let (status, body) = b
        .post(
            "/api/v1/data/write",
            Some(&token),
            Some(APP),
            json!({ "collection": "notes", "data": { "title": "second" } }),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
}

/// The binary's subcommand, as the operator's CronJob runs it: settings from the
/// environment, the report on standard output and in the report file, exit status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_subcommand_runs_from_the_environment_and_reports() {
    use vibe_api::dataplane_env as env;
    let s3 = S3Server::start().await.expect("start s3s-fs");
    s3.create_bucket(BACKUPS).await.unwrap();
    let owner = Keypair::generate();
    let a = instance(&s3, &owner, "vibe-a", None).await;
    populate(&a).await;
    let dir = tempfile::tempdir().unwrap();
    let report_file = dir.path().join("termination-log");
    let run = |retention: &str, couch_url: &str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_vibe-dataplane"));
        command
            .arg("backup")
            .env_clear()
            .env(env::PUBLIC_INSTANCE_URL, &a.base)
            .env(env::COUCHDB_URL, couch_url)
            .env(env::COUCHDB_USER, &a.couch.user)
            .env(env::COUCHDB_PASSWORD, &a.couch.password)
            .env(env::VIBE_DB_PREFIX, a.couch.db_prefix())
            .env(env::TARGET_USER_DID, owner.did().to_string())
            .env(env::S3_ENDPOINT, &s3.endpoint)
            .env(env::S3_REGION, &s3.region)
            .env(env::S3_ACCESS_KEY, &s3.access_key)
            .env(env::S3_SECRET_KEY, &s3.secret_key)
            .env(env::S3_BUCKET_NAME, "vibe-a")
            .env(env::VIBE_BACKUP_BUCKET, BACKUPS)
            .env(env::VIBE_BACKUP_PREFIX, PREFIX)
            .env(env::VIBE_BACKUP_RETENTION, retention)
            .env(env::VIBE_BACKUP_REPORT_FILE, &report_file);
        command.output().unwrap()
    };
    let out = tokio::task::block_in_place(|| run("1", &a.couch.url));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report: BackupReport = serde_json::from_str(stdout.trim()).expect(&stdout);
    assert_eq!(report.outcome, BackupOutcome::Succeeded);
    let written: BackupReport =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(written, report);
    assert_eq!(
        keys_in(&s3, BACKUPS, PREFIX).await,
        vec![report.object_key.clone().unwrap()]
    );
    assert!(std::fs::read_to_string(&report_file).unwrap().len() < 4096);

    // A failure (CouchDB unreachable) exits 1 with a Failed report naming the cause.
    let out = tokio::task::block_in_place(|| run("1", "http://127.0.0.1:9"));
    assert_eq!(out.status.code(), Some(1));
    let report: BackupReport =
        serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(report.outcome, BackupOutcome::Failed);
    assert!(report.message.unwrap().contains("CouchDB"));
    assert_eq!(keys_in(&s3, BACKUPS, PREFIX).await.len(), 1);
}

/// Issue 19: every backup's outcome is recorded in the instance's system database, and the
/// owner console's overview shows the last one (time, size, object key, outcome) and,
/// after a failure, the last that succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_overview_shows_the_last_backup() {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    s3.create_bucket(BACKUPS).await.unwrap();
    let owner = Keypair::generate();
    let a = instance(&s3, &owner, "vibe-a", None).await;
    populate(&a).await;
    let token = a.owner_token().await;
    let overview = |a: &TestInstance, token: String| {
        let http = a.http.clone();
        let url = a.url("/api/v1/console/overview");
        async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        }
    };
    let before = overview(&a, token.clone()).await;
    assert_eq!(before["lastBackup"], Value::Null, "{before}");
    assert_eq!(before["lastSuccessfulBackup"], Value::Null, "{before}");

    let succeeded = backup::run(&a.state, &args(3)).await;
    assert_eq!(succeeded.outcome, BackupOutcome::Succeeded, "{succeeded:?}");
    let shown = overview(&a, token.clone()).await;
    let expected = json!({
        "outcome": "Succeeded",
        "startedAt": succeeded.started_at,
        "finishedAt": succeeded.finished_at,
        "objectKey": succeeded.object_key,
        "size": succeeded.size,
    });
    assert_eq!(shown["lastBackup"], expected, "{shown}");
    assert_eq!(shown["lastSuccessfulBackup"], expected, "{shown}");

    // A backup that fails (the blob's bytes vanished from the instance's bucket, as in
    // the test above); the last success stays shown.
    for key in keys_in(&s3, "vibe-a", "").await {
        s3.client()
            .delete_object()
            .bucket("vibe-a")
            .key(&key)
            .send()
            .await
            .unwrap();
    }
    let failed = backup::run(&a.state, &args(3)).await;
    assert_eq!(failed.outcome, BackupOutcome::Failed, "{failed:?}");
    let shown = overview(&a, token).await;
    assert_eq!(shown["lastBackup"]["outcome"], "Failed", "{shown}");
    assert_eq!(shown["lastBackup"]["finishedAt"], json!(failed.finished_at));
    assert_eq!(shown["lastBackup"]["message"], json!(failed.message));
    assert!(shown["lastBackup"].get("objectKey").is_none(), "{shown}");
    assert_eq!(shown["lastSuccessfulBackup"], expected, "{shown}");
}
