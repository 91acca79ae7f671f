//! Export and import (issue 18) against real servers: a pouchdb-server per instance and one
//! s3s-fs with a bucket per instance. Two instances of the same owner: everything exported
//! from A and imported into B is identical; damaged archives are refused with nothing left
//! behind; an interrupted import is resumed; encrypted archives need the owner's key.

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use bytes::Bytes;
use common::TestInstance;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vibe_dataplane::config::S3Config;
use vibe_dataplane::export::import::{MARKER_ID, RESUME_ID, StoredBlob};
use vibe_dataplane::export::leaves;
use vibe_identity::Keypair;
use vibe_test_support::{CouchServer, S3Server};

const APP: &str = "https://notes.example";

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

/// Two instances of one owner, each with its own CouchDB and bucket.
struct Pair {
    _s3: S3Server,
    a: TestInstance,
    b: TestInstance,
}

async fn instance(s3: &S3Server, owner: &Keypair, bucket: &str) -> TestInstance {
    let couch = CouchServer::start().await.expect("start CouchDB");
    let config = s3_config(s3, bucket);
    TestInstance::start_on(couch, owner.clone(), Keypair::generate(), |c| {
        c.s3 = Some(config);
        c.blobs.create_bucket = true;
    })
    .await
}

async fn pair() -> Pair {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    let owner = Keypair::generate();
    let a = instance(&s3, &owner, "vibe-a").await;
    let b = instance(&s3, &owner, "vibe-b").await;
    Pair { _s3: s3, a, b }
}

/// Deterministic, incompressible bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Fill A: an app with grants, documents (one updated, one deleted, one in conflict) and
/// two blobs. Returns the blobs' object keys and bytes.
async fn populate(a: &TestInstance) -> Vec<(String, Vec<u8>)> {
    let token = a.owner_token().await;
    a.upsert_app(
        &token,
        APP,
        &[
            ("read:notes", "always"),
            ("write:notes", "always"),
            ("blob:write:photos", "always"),
            ("blob:read:photos", "always"),
            ("sync", "ask"),
        ],
    )
    .await;
    let docs: Vec<Value> = (0..30)
        .map(|i| json!({ "title": if i == 0 { "alpha".to_string() } else { format!("note {i}") }, "n": i }))
        .collect();
    let (status, written) = a
        .post(
            "/api/v1/data/write",
            Some(&token),
            Some(APP),
            json!({ "collection": "notes", "data": docs }),
        )
        .await;
    assert!(status.is_success(), "{status} {written}");
    let written = written
        .as_array()
        .cloned()
        .unwrap_or_else(|| written["results"].as_array().cloned().unwrap_or_default());
    assert_eq!(written.len(), 30, "{written:?}");
    let id = |i: usize| written[i]["id"].as_str().unwrap().to_string();
    let rev = |i: usize| written[i]["rev"].as_str().unwrap().to_string();
    // An update, a deletion.
    let (status, body) = a
        .post(
            "/api/v1/data/write",
            Some(&token),
            Some(APP),
            json!({ "collection": "notes", "data": { "_id": id(1), "_rev": rev(1), "title": "updated" } }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = a
        .call(
            Method::DELETE,
            &format!(
                "/api/v1/data/notes/{}?rev={}",
                id(2).trim_start_matches("notes/"),
                rev(2)
            ),
            Some(&token),
            Some(APP),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    // A conflict: a sibling of document 1's second revision, as a device would leave it.
    let db = a.state.data_db().await.unwrap();
    let first = rev(1);
    let first_hash = first.split_once('-').unwrap().1.to_string();
    leaves::store(
        &db,
        &[json!({
            "_id": id(1), "_rev": "2-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "_revisions": { "start": 2, "ids": ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", first_hash] },
            "collection": "notes", "title": "offline edit"
        })],
    )
    .await
    .unwrap();

    let mut blobs = Vec::new();
    for (i, len) in [(1u64, 200 * 1024usize), (2, 3 * 1024 * 1024 + 17)] {
        let bytes = pattern(len, i);
        let resp = a
            .http
            .put(a.url(&format!(
                "/api/v1/blob/upload?collection=photos&filename=pic{i}.bin"
            )))
            .bearer_auth(&token)
            .header("x-vibe-app-id", APP)
            .header("content-type", "application/octet-stream")
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let meta: Value = resp.json().await.unwrap();
        blobs.push((meta["objectKey"].as_str().unwrap().to_string(), bytes));
    }
    blobs
}

/// Every leaf revision by document id, sorted.
async fn leaves_of(inst: &TestInstance) -> BTreeMap<String, Vec<Value>> {
    let db = inst.state.data_db().await.unwrap();
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut since = None;
    loop {
        let page = leaves::page(&db, since.take()).await.unwrap();
        if page.done {
            break;
        }
        for doc in page.docs {
            out.entry(doc["_id"].as_str().unwrap().to_string())
                .or_default()
                .push(doc);
        }
        since = Some(page.next);
    }
    for revs in out.values_mut() {
        revs.sort_by(|x, y| x["_rev"].as_str().cmp(&y["_rev"].as_str()));
        revs.dedup();
    }
    out
}

async fn export(inst: &TestInstance, query: &str) -> (StatusCode, Bytes) {
    let token = inst.owner_token().await;
    let resp = inst
        .http
        .get(inst.url(&format!("/api/v1/export{query}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.bytes().await.unwrap())
}

async fn import(inst: &TestInstance, archive: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let token = inst.owner_token().await;
    let resp = inst
        .http
        .post(inst.url("/api/v1/import"))
        .bearer_auth(&token)
        .header("content-type", "application/x-tar")
        .body(archive)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The apps and grants an instance lists, without when it last saw each app (what the
/// instance observed, not data an archive carries).
async fn apps_of(inst: &TestInstance) -> Value {
    let token = inst.owner_token().await;
    let (status, mut apps) = inst.get("/api/v1/apps", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{apps}");
    for app in apps["apps"].as_array_mut().into_iter().flatten() {
        if let Some(app) = app.as_object_mut() {
            app.remove("lastSeenAt");
        }
    }
    apps
}

async fn blob_bytes(inst: &TestInstance, key: &str) -> Option<Vec<u8>> {
    let token = inst.owner_token().await;
    let (status, body) = inst
        .get(
            &format!("/api/v1/blob/download-url/{key}"),
            Some(&token),
            Some(APP),
        )
        .await;
    if status != StatusCode::OK {
        return None;
    }
    let resp = inst.http.get(body["url"].as_str()?).send().await.ok()?;
    Some(resp.bytes().await.ok()?.to_vec())
}

async fn objects_in_bucket(inst: &TestInstance) -> usize {
    let blobs = inst.state.blobs.as_ref().unwrap();
    blobs
        .ready(&blobs.scheme(&inst.state).unwrap())
        .await
        .unwrap();
    let prefix = format!("{}/", inst.owner.did());
    blobs.store.list(&prefix).await.unwrap().len()
}

async fn staging_databases(inst: &TestInstance) -> Vec<String> {
    let all: Vec<String> = reqwest::Client::new()
        .get(format!("{}/_all_dbs", inst.couch.url.trim_end_matches('/')))
        .basic_auth(&inst.couch.user, Some(&inst.couch.password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Only this instance's: on a shared CouchDB other tests stage their own imports.
    let staging = format!("{}vibe_import_", inst.state.config.db_prefix);
    all.into_iter()
        .filter(|n| n.starts_with(&staging))
        .collect()
}

/// B holds nothing: no documents, no apps, no objects, no staging database.
async fn assert_untouched(b: &TestInstance, what: &str) {
    assert!(
        leaves_of(b).await.is_empty(),
        "{what}: documents were imported"
    );
    assert_eq!(
        apps_of(b).await["apps"],
        json!([]),
        "{what}: apps were imported"
    );
    assert_eq!(
        objects_in_bucket(b).await,
        0,
        "{what}: objects were left in the bucket"
    );
    assert!(
        staging_databases(b).await.is_empty(),
        "{what}: a staging database was left"
    );
    let system = b.state.system_db().await.unwrap();
    assert!(
        system.get(MARKER_ID).await.unwrap().is_none(),
        "{what}: a marker was left"
    );
}

async fn assert_same(a: &TestInstance, b: &TestInstance, blobs: &[(String, Vec<u8>)]) {
    let (la, lb) = (leaves_of(a).await, leaves_of(b).await);
    assert_eq!(la.len(), lb.len(), "document ids differ");
    assert_eq!(la, lb, "leaf revisions (with histories) differ");
    assert_eq!(apps_of(a).await, apps_of(b).await, "apps or grants differ");
    for (key, bytes) in blobs {
        let sum = |b: &[u8]| hex::encode(Sha256::digest(b));
        let found = blob_bytes(b, key).await.map(|got| sum(&got));
        assert_eq!(found, Some(sum(bytes)), "blob {key} differs");
    }
    // What clients read is the same too (winners and conflicts).
    let (ta, tb) = (a.owner_token().await, b.owner_token().await);
    let read = json!({ "collection": "notes", "limit": 100 });
    let (_, ra) = a
        .post("/api/v1/data/read", Some(&ta), Some(APP), read.clone())
        .await;
    let (_, rb) = b
        .post("/api/v1/data/read", Some(&tb), Some(APP), read)
        .await;
    assert_eq!(ra["docs"], rb["docs"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_keeps_documents_revisions_conflicts_apps_grants_and_blobs() {
    let Pair { a, b, _s3 } = pair().await;
    let blobs = populate(&a).await;
    let (status, archive) = export(&a, "").await;
    assert_eq!(status, StatusCode::OK);

    let source = leaves_of(&a).await;
    let conflicted = source.values().filter(|revs| revs.len() > 1).count();
    let deleted = source
        .values()
        .flatten()
        .filter(|d| d["_deleted"] == json!(true))
        .count();
    assert_eq!(
        (conflicted, deleted),
        (1, 1),
        "the fixture has one conflict and one tombstone"
    );

    let (status, report) = import(&b, archive.clone()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["counts"]["documents"], json!(source.len()));
    assert_eq!(
        report["counts"]["revisions"],
        json!(source.values().flatten().count())
    );
    assert_eq!(report["counts"]["apps"], json!(1));
    assert_eq!(report["counts"]["blobs"], json!(2));
    assert_eq!(report["repeated"], json!(false));
    assert_same(&a, &b, &blobs).await;
    assert!(staging_databases(&b).await.is_empty());

    // Repeating it is accepted and changes nothing.
    let (status, again) = import(&b, archive.clone()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["repeated"], json!(true));
    assert_same(&a, &b, &blobs).await;

    // Another archive into an instance that holds data is refused.
    let (_, other) = export(&a, "").await;
    let (status, body) = import(&b, other).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already holds data"),
        "{body}"
    );
}

/// The objects under B's instance prefix, with their bytes.
async fn stored_objects(s3: &S3Server, inst: &TestInstance) -> BTreeMap<String, Vec<u8>> {
    let blobs = inst.state.blobs.as_ref().unwrap();
    let prefix = format!("{}/", inst.owner.did());
    let mut out = BTreeMap::new();
    for object in blobs.store.list(&prefix).await.unwrap() {
        let got = s3
            .client()
            .get_object()
            .bucket(blobs.store.bucket())
            .key(&object.key)
            .send()
            .await
            .unwrap();
        let bytes = got.body.collect().await.unwrap().into_bytes().to_vec();
        out.insert(object.key, bytes);
    }
    out
}

/// After an attempt that was cut off: nothing visible (no documents, apps, staging database
/// or marker), and every object left in the bucket is a complete blob of the archive,
/// recorded for the next attempt with its size and SHA-256. Returns their keys.
async fn assert_resumable(
    s3: &S3Server,
    b: &TestInstance,
    blobs: &[(String, Vec<u8>)],
    what: &str,
) -> Vec<String> {
    assert!(leaves_of(b).await.is_empty(), "{what}: documents imported");
    assert_eq!(apps_of(b).await["apps"], json!([]), "{what}: apps imported");
    assert!(
        staging_databases(b).await.is_empty(),
        "{what}: a staging database was left"
    );
    let system = b.state.system_db().await.unwrap();
    assert!(
        system.get(MARKER_ID).await.unwrap().is_none(),
        "{what}: a marker was left"
    );
    let objects = stored_objects(s3, b).await;
    let recorded: BTreeMap<String, StoredBlob> = match system.get(RESUME_ID).await.unwrap() {
        Some(doc) => serde_json::from_value(doc["blobs"].clone()).unwrap(),
        None => BTreeMap::new(),
    };
    for (key, bytes) in &objects {
        let source = blobs.iter().find(|(k, _)| k == key);
        assert_eq!(
            source.map(|(_, b)| b),
            Some(bytes),
            "{what}: {key} is not a complete blob of the archive"
        );
        let entry = recorded.get(key);
        assert_eq!(
            entry.map(|e| (e.size, e.sha256.clone())),
            Some((bytes.len() as u64, hex::encode(Sha256::digest(bytes)))),
            "{what}: {key} is not recorded for the next attempt"
        );
        assert_eq!(blob_bytes(b, key).await, None, "{what}: {key} is visible");
    }
    objects.into_keys().collect()
}

/// Replace `from` by `to` (same length) at its first occurrence.
fn replace_once(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern in archive");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_archives_are_refused_and_leave_nothing_behind() {
    let Pair { a, b, _s3: s3 } = pair().await;
    let blobs = populate(&a).await;
    let (_, archive) = export(&a, "").await;

    // 1. Truncated: cut inside the second (3 MiB) blob, after the first was uploaded.
    let big = &blobs[1].1;
    let at = archive
        .windows(64)
        .position(|w| w == &big[..64])
        .expect("blob bytes in archive");
    let truncated = archive.slice(..at + big.len() / 2);
    // 2. Corrupted: one bit flipped inside the blob's bytes (sizes unchanged).
    let mut corrupted = archive.to_vec();
    corrupted[at + 1000] ^= 0x01;
    // 3. Tampered: a document's content changed, lengths and tar headers intact.
    let tampered = replace_once(&archive, b"\"title\":\"alpha\"", b"\"title\":\"omega\"");
    // 4. Tampered differently: the manifest's counts rewritten (entries intact).
    let manifest_at = archive
        .windows(12)
        .rposition(|w| w == b"\"revisions\":")
        .expect("manifest counts");
    let mut recounted = archive.to_vec();
    let digit = &mut recounted[manifest_at + 12];
    *digit = if *digit == b'9' { b'1' } else { *digit + 1 };

    for (what, damaged, expected) in [
        ("truncated", truncated, "truncated"),
        (
            "corrupted",
            Bytes::from(corrupted),
            "does not match the manifest",
        ),
        (
            "tampered",
            Bytes::from(tampered),
            "does not match the manifest",
        ),
        (
            "recounted",
            Bytes::from(recounted),
            "counts in its manifest",
        ),
    ] {
        let (status, body) = import(&b, damaged).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("Archive refused"), "{what}: {body}");
        assert!(error.contains(expected), "{what}: {body}");
        if what == "truncated" {
            // Cut off: only the first blob, complete, stays (invisible) for a retry.
            let kept = assert_resumable(&s3, &b, &blobs, what).await;
            assert_eq!(kept, vec![blobs[0].0.clone()], "{what}");
        } else {
            // Refused for its content: nothing stays, not even the earlier attempt's blob.
            assert_untouched(&b, what).await;
            let system = b.state.system_db().await.unwrap();
            assert!(
                system.get(RESUME_ID).await.unwrap().is_none(),
                "{what}: the record of stored blobs was left"
            );
        }
    }

    // The intact archive still imports.
    let (status, report) = import(&b, archive).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_same(&a, &b, &blobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_is_resumed() {
    let Pair { a, b, _s3: s3 } = pair().await;
    let blobs = populate(&a).await;
    let (_, archive) = export(&a, "").await;

    // The upload breaks off halfway: nothing is committed.
    let half = archive.slice(..archive.len() / 2);
    // Half the archive, then (once the data plane has staged it) the connection breaks.
    let broken = futures::stream::iter([Ok::<_, std::io::Error>(half)]).chain(
        futures::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            Err(std::io::Error::other("connection lost"))
        }),
    );
    let token = b.owner_token().await;
    let sent = b
        .http
        .post(b.url("/api/v1/import"))
        .bearer_auth(&token)
        .header("content-type", "application/x-tar")
        .body(reqwest::Body::wrap_stream(broken))
        .send()
        .await;
    if let Ok(resp) = sent {
        assert!(!resp.status().is_success());
    }
    // The data plane cleans up once it sees the break, keeping the complete blobs.
    let system = b.state.system_db().await.unwrap();
    for _ in 0..100 {
        if staging_databases(&b).await.is_empty()
            && (objects_in_bucket(&b).await == 0 || system.get(RESUME_ID).await.unwrap().is_some())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_resumable(&s3, &b, &blobs, "broken upload").await;

    // A commit that stopped halfway: the marker names the export and some documents are
    // in. The same archive completes it; another archive is refused.
    let export_id = {
        let start = archive
            .windows(11)
            .position(|w| w == b"\"exportId\":")
            .unwrap()
            + 12;
        let end = start + archive[start..].iter().position(|c| *c == b'"').unwrap();
        String::from_utf8(archive[start..end].to_vec()).unwrap()
    };
    system
        .put(
            MARKER_ID,
            &json!({ "exportId": export_id, "state": "committing" }),
        )
        .await
        .unwrap();
    let some: Vec<Value> = leaves_of(&a)
        .await
        .into_values()
        .flatten()
        .take(10)
        .collect();
    leaves::store(&b.state.data_db().await.unwrap(), &some)
        .await
        .unwrap();

    let (_, other) = export(&a, "").await;
    let (status, body) = import(&b, other).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, report) = import(&b, archive).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["repeated"], json!(false));
    assert_same(&a, &b, &blobs).await;
    let marker = system.get(MARKER_ID).await.unwrap().unwrap();
    assert_eq!(marker["state"], json!("committed"));
    assert!(
        system.get(RESUME_ID).await.unwrap().is_none(),
        "a committed import forgets the stored blobs"
    );
}

/// `s3_request_duration_seconds` observations of PutObject (all statuses) so far.
fn put_objects(inst: &TestInstance) -> u64 {
    inst.state
        .metrics
        .encode(&inst.state)
        .lines()
        .filter(|l| {
            l.starts_with("vibe_dataplane_s3_request_duration_seconds_count")
                && l.contains("operation=\"PutObject\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_import_does_not_upload_the_blobs_an_interrupted_attempt_stored() {
    let Pair { a, b, _s3: s3 } = pair().await;
    let mut blobs = populate(&a).await;
    let token = a.owner_token().await;
    for i in 3..=4u64 {
        let bytes = pattern(1024 * 1024 + 3, i);
        let resp = a
            .http
            .put(a.url(&format!(
                "/api/v1/blob/upload?collection=photos&filename=more{i}.bin"
            )))
            .bearer_auth(&token)
            .header("x-vibe-app-id", APP)
            .header("content-type", "application/octet-stream")
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let meta: Value = resp.json().await.unwrap();
        blobs.push((meta["objectKey"].as_str().unwrap().to_string(), bytes));
    }
    let (_, archive) = export(&a, "").await;
    // Cut in the middle of the blob that comes last in the archive.
    let mut at: Vec<(usize, usize)> = blobs
        .iter()
        .enumerate()
        .map(|(i, (_, bytes))| {
            let pos = archive
                .windows(64)
                .position(|w| w == &bytes[..64])
                .expect("blob bytes in the archive");
            (pos, i)
        })
        .collect();
    at.sort();
    let (last_at, last) = *at.last().unwrap();
    let cut = archive.slice(..last_at + blobs[last].1.len() / 2);
    let total: u64 = blobs.iter().map(|(_, b)| b.len() as u64).sum();
    let last_len = blobs[last].1.len() as u64;

    let (status, body) = import(&b, cut).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let kept = assert_resumable(&s3, &b, &blobs, "cut off").await;
    assert_eq!(
        kept.len(),
        blobs.len() - 1,
        "every blob before the cut stays"
    );

    let metrics = &b.state.metrics;
    let (uploaded, reused, puts) = (
        metrics.import_blob_bytes_total("uploaded"),
        metrics.import_blob_bytes_total("kept"),
        put_objects(&b),
    );
    let (status, report) = import(&b, archive).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_same(&a, &b, &blobs).await;
    let uploaded = metrics.import_blob_bytes_total("uploaded") - uploaded;
    let reused = metrics.import_blob_bytes_total("kept") - reused;
    let puts = put_objects(&b) - puts;
    eprintln!(
        "second run: {uploaded} blob bytes uploaded, {reused} kept, {puts} PutObject \
         ({total} blob bytes in the archive)"
    );
    assert_eq!(
        uploaded, last_len,
        "only the blob that was cut off is sent again"
    );
    assert_eq!(reused, total - last_len);
    assert_eq!(puts, 1, "one PutObject: the blob that was cut off");
    let system = b.state.system_db().await.unwrap();
    assert!(system.get(RESUME_ID).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_are_for_the_owner_itself() {
    let a = TestInstance::start().await;
    let token = a.owner_token().await;
    a.upsert_app(&token, APP, &[("read:notes", "always")]).await;
    let (status, minted) = a
        .post(
            "/api/v1/apps/token",
            Some(&token),
            None,
            json!({ "appId": APP }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let app_token = minted["accessToken"].as_str().unwrap().to_string();

    for (who, bearer, app) in [
        ("app token", Some(app_token.as_str()), None),
        ("owner acting as an app", Some(token.as_str()), Some(APP)),
    ] {
        let (status, body) = a.get("/api/v1/export", bearer, app).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {body}");
        assert!(body["error"].is_string(), "{who}: {body}");
        let mut request = a
            .http
            .post(a.url("/api/v1/import"))
            .header("content-type", "application/x-tar");
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(app) = app {
            request = request.header("x-vibe-app-id", app);
        }
        let resp = request.body(vec![0u8; 1024]).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{who}");
    }
    let (status, body) = a.get("/api/v1/export", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = a
        .get("/api/v1/export?encrypt=someone", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A foreign owner's archive is refused.
    let stranger = TestInstance::start().await;
    let (_, foreign) = export(&stranger, "").await;
    let (status, body) = import(&a, foreign).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Not a tar at all.
    let (status, body) = import(&a, b"hello, this is no archive".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
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

fn decrypt(bytes: &[u8], identity: &age::ssh::Identity) -> Result<Vec<u8>, String> {
    let decryptor = age::Decryptor::new(bytes).map_err(|e| e.to_string())?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_archive_is_readable_only_with_the_owner_key() {
    let Pair { a, b, _s3 } = pair().await;
    let blobs = populate(&a).await;
    let (status, sealed) = export(&a, "?encrypt=owner").await;
    assert_eq!(status, StatusCode::OK);
    assert!(sealed.starts_with(b"age-encryption.org/v1"));
    // Nothing of the content shows through.
    assert!(!sealed.windows(5).any(|w| w == b"alpha"));
    assert!(!sealed.windows(64).any(|w| w == &blobs[0].1[..64]));
    // The data plane cannot import it (it has no private key) and says why.
    let (status, body) = import(&b, sealed.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("encrypted"),
        "{body}"
    );
    // Another key cannot decrypt it.
    let stranger = ssh_identity(&Keypair::generate());
    assert!(decrypt(&sealed, &stranger).is_err());
    // The owner's key can; the plain archive imports.
    let plain = decrypt(&sealed, &ssh_identity(&a.owner)).expect("owner decrypts");
    assert!(plain.windows(5).any(|w| w == b"alpha"));
    let (status, report) = import(&b, plain).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_same(&a, &b, &blobs).await;
}
