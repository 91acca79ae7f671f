//! The S3 layer against a real S3-compatible server (s3s-fs): presigned URLs bind what they
//! promise, HEAD, delete, streaming multipart upload and the abandoned-upload sweep.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use vibe_dataplane::blobs::store::BlobStore;
use vibe_dataplane::blobs::stream::{MAX_SINGLE_PUT, PART_SIZE, upload_sized, upload_stream};
use vibe_dataplane::blobs::sweep::sweep;
use vibe_dataplane::blobs::{BlobError, KeyScheme, QuotaLedger};
use vibe_dataplane::config::S3Config;
use vibe_test_support::S3Server;

const INSTANCE: &str = "did:vibe:z6MkTestInstance";

async fn store(s3: &S3Server) -> BlobStore {
    let store = BlobStore::new(&S3Config {
        endpoint: s3.endpoint.parse().unwrap(),
        region: s3.region.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        bucket: "vibe-test".into(),
        force_path_style: true,
    });
    store.ensure_bucket().await.expect("create bucket");
    store
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn presigned_put(url: &str, content_type: &str, body: Vec<u8>) -> reqwest::StatusCode {
    http()
        .put(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("PUT reaches the store")
        .status()
}

#[tokio::test]
async fn presigned_put_then_head_then_presigned_get_round_trips() {
    let s3 = S3Server::start().await.unwrap();
    let store = store(&s3).await;
    let key = KeyScheme::new(INSTANCE)
        .unwrap()
        .generate("photos", "cat.png")
        .unwrap();
    let body = b"not really a png".to_vec();

    let put = store
        .presign_put(
            key.as_str(),
            "image/png",
            body.len() as u64,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(put.url.contains("X-Amz-Signature="));
    let signed: Vec<_> = put
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    assert!(signed.contains(&"content-type".into()) && signed.contains(&"content-length".into()));
    assert!(store.head(key.as_str()).await.unwrap().is_none());
    assert!(
        presigned_put(&put.url, "image/png", body.clone())
            .await
            .is_success()
    );

    let info = store
        .head(key.as_str())
        .await
        .unwrap()
        .expect("object exists");
    assert_eq!(info.size, body.len() as u64);
    assert_eq!(info.content_type.as_deref(), Some("image/png"));
    assert!(info.last_modified.is_some());

    let get = store
        .presign_get(key.as_str(), Duration::from_secs(60))
        .await
        .unwrap();
    let resp = http().get(&get.url).send().await.unwrap();
    assert!(resp.status().is_success());
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());

    store.delete(key.as_str()).await.unwrap();
    assert!(store.head(key.as_str()).await.unwrap().is_none());
    // Deleting again is not an error: deletes are idempotent and so safe to retry.
    store.delete(key.as_str()).await.unwrap();
    let resp = http().get(&get.url).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn presigned_put_refuses_another_type_or_length_and_expires() {
    let s3 = S3Server::start().await.unwrap();
    let store = store(&s3).await;
    let key = KeyScheme::new(INSTANCE)
        .unwrap()
        .generate("docs", "a.txt")
        .unwrap();
    let put = store
        .presign_put(key.as_str(), "text/plain", 5, Duration::from_secs(60))
        .await
        .unwrap();

    let wrong_type = presigned_put(&put.url, "application/octet-stream", b"hello".to_vec()).await;
    assert_eq!(wrong_type, 403, "another content type must be refused");
    let longer = presigned_put(&put.url, "text/plain", b"hello world".to_vec()).await;
    assert_eq!(longer, 403, "another content length must be refused");
    let shorter = presigned_put(&put.url, "text/plain", b"hi".to_vec()).await;
    assert_eq!(shorter, 403, "another content length must be refused");
    assert!(store.head(key.as_str()).await.unwrap().is_none());

    let short = store
        .presign_put(key.as_str(), "text/plain", 5, Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        presigned_put(&short.url, "text/plain", b"hello".to_vec()).await,
        403,
        "expired URL"
    );
    assert!(store.head(key.as_str()).await.unwrap().is_none());

    let expiring_get = store
        .presign_get(key.as_str(), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        presigned_put(&put.url, "text/plain", b"hello".to_vec())
            .await
            .is_success()
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = http().get(&expiring_get.url).send().await.unwrap();
    assert_eq!(resp.status(), 403, "expired download URL");
}

/// Deterministic pseudo-random bytes, generated chunk by chunk.
fn generated(
    total: usize,
    chunk: usize,
) -> (
    impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
    Vec<u8>,
) {
    let mut all = Vec::with_capacity(total);
    let mut state: u32 = 0x9e37_79b9;
    for _ in 0..total {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        all.push(state as u8);
    }
    let chunks: Vec<Result<Bytes, std::io::Error>> = all
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (futures::stream::iter(chunks), all)
}

async fn fetch(store: &BlobStore, key: &str) -> Vec<u8> {
    let get = store
        .presign_get(key, Duration::from_secs(60))
        .await
        .unwrap();
    let resp = http().get(&get.url).send().await.unwrap();
    assert!(resp.status().is_success());
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn streaming_upload_small_and_multipart_round_trip() {
    let s3 = S3Server::start().await.unwrap();
    let store = store(&s3).await;
    let scheme = KeyScheme::new(INSTANCE).unwrap();

    let small = scheme.generate("docs", "small.bin").unwrap();
    let (body, expected) = generated(1000, 333);
    let n = upload_stream(&store, small.as_str(), "application/x-small", body, 1 << 30)
        .await
        .unwrap();
    assert_eq!(n, 1000);
    assert_eq!(fetch(&store, small.as_str()).await, expected);
    let info = store.head(small.as_str()).await.unwrap().unwrap();
    assert_eq!(info.content_type.as_deref(), Some("application/x-small"));

    // 2.5 parts, in uneven chunks that straddle part boundaries.
    let big = scheme.generate("docs", "big.bin").unwrap();
    let size = PART_SIZE * 5 / 2 + 17;
    let (body, expected) = generated(size, 100_003);
    let n = upload_stream(&store, big.as_str(), "application/x-big", body, 1 << 30)
        .await
        .unwrap();
    assert_eq!(n, size as u64);
    let info = store.head(big.as_str()).await.unwrap().unwrap();
    assert_eq!(info.size, size as u64);
    assert_eq!(info.content_type.as_deref(), Some("application/x-big"));
    assert!(
        fetch(&store, big.as_str()).await == expected,
        "multipart bytes differ"
    );
}

#[tokio::test]
async fn streaming_upload_over_the_limit_leaves_nothing_behind() {
    let s3 = S3Server::start().await.unwrap();
    let store = store(&s3).await;
    let scheme = KeyScheme::new(INSTANCE).unwrap();

    for size in [1000usize, PART_SIZE * 2 + 5] {
        let key = scheme.generate("docs", "too-big.bin").unwrap();
        let limit = size as u64 - 1;
        let (body, _) = generated(size, 65_536);
        let err = upload_stream(
            &store,
            key.as_str(),
            "application/octet-stream",
            body,
            limit,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, BlobError::TooLarge { limit: l, .. } if l == limit),
            "{err:?}"
        );
        assert!(store.head(key.as_str()).await.unwrap().is_none());
    }
    let pending = store.list_multipart(&scheme.instance_prefix()).await;
    if let Ok(pending) = pending {
        assert!(
            pending.is_empty(),
            "aborted uploads must not linger: {pending:?}"
        );
    }

    // A body that fails mid-way is an error, and also leaves no object.
    let key = scheme.generate("docs", "broken.bin").unwrap();
    let (good, _) = generated(PART_SIZE + 10, 1 << 20);
    let body = good.chain(futures::stream::iter([Err(std::io::Error::other(
        "client went away",
    ))]));
    let err = upload_stream(
        &store,
        key.as_str(),
        "application/octet-stream",
        Box::pin(body),
        1 << 30,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BlobError::Body(_)), "{err:?}");
    assert!(store.head(key.as_str()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_declared_length_goes_up_in_one_put_byte_for_byte() {
    let s3 = S3Server::start().await.unwrap();
    let store = store(&s3).await;
    let scheme = KeyScheme::new(INSTANCE).unwrap();

    // Empty, small, and several parts' worth in uneven chunks.
    for size in [0usize, 1000, PART_SIZE * 5 / 2 + 17] {
        let key = scheme.generate("docs", "sized.bin").unwrap();
        let (body, expected) = generated(size, 100_003);
        let n = upload_sized(
            &store,
            key.as_str(),
            "application/x-sized",
            body,
            size as u64,
        )
        .await
        .unwrap();
        assert_eq!(n, size as u64);
        let info = store.head(key.as_str()).await.unwrap().unwrap();
        assert_eq!(info.size, size as u64);
        assert_eq!(info.content_type.as_deref(), Some("application/x-sized"));
        assert!(
            fetch(&store, key.as_str()).await == expected,
            "{size} bytes differ"
        );
    }
    // No multipart upload was involved.
    if let Ok(pending) = store.list_multipart(&scheme.instance_prefix()).await {
        assert!(pending.is_empty(), "{pending:?}");
    }
}

#[tokio::test]
async fn a_body_unlike_its_declared_length_stores_nothing() {
    let s3 = S3Server::start().await.unwrap();
    let store = store(&s3).await;
    let scheme = KeyScheme::new(INSTANCE).unwrap();

    // Shorter and longer than declared, small and large.
    for (size, declared) in [
        (1000usize, 1001u64),
        (1001, 1000),
        (PART_SIZE + 10, PART_SIZE as u64 + 11),
        (PART_SIZE + 11, PART_SIZE as u64 + 10),
    ] {
        let key = scheme.generate("docs", "wrong-length.bin").unwrap();
        let (body, _) = generated(size, 65_536);
        let err = upload_sized(
            &store,
            key.as_str(),
            "application/octet-stream",
            body,
            declared,
        )
        .await
        .unwrap_err();
        match &err {
            BlobError::Body(why) if size < declared as usize => {
                assert!(why.contains("shorter"), "{why}")
            }
            BlobError::Body(why) => assert!(why.contains("longer"), "{why}"),
            other => panic!("{size} of {declared}: {other:?}"),
        }
        assert!(store.head(key.as_str()).await.unwrap().is_none());
    }

    // A body that fails mid-way: the client's fault, and no object.
    let key = scheme.generate("docs", "broken.bin").unwrap();
    let (good, _) = generated(PART_SIZE + 10, 1 << 20);
    let body = good.chain(futures::stream::iter([Err(std::io::Error::other(
        "client went away",
    ))]));
    let err = upload_sized(
        &store,
        key.as_str(),
        "application/octet-stream",
        Box::pin(body),
        PART_SIZE as u64 * 2,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, BlobError::Body(why) if why.contains("client went away")),
        "{err:?}"
    );
    assert!(store.head(key.as_str()).await.unwrap().is_none());

    // Beyond what one request may carry: refused before anything is sent.
    let (body, _) = generated(10, 10);
    let err = upload_sized(&store, "docs/x", "text/plain", body, MAX_SINGLE_PUT + 1)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Storage(_)), "{err:?}");
}

#[tokio::test]
async fn sweep_reclaims_only_abandoned_uploads_and_reconciles_the_quota() {
    let s3 = S3Server::start().await.unwrap();
    let store = store(&s3).await;
    let scheme = KeyScheme::new(INSTANCE).unwrap();
    let ledger = QuotaLedger::new(1 << 20);
    let far = SystemTime::now() + Duration::from_secs(600);

    let finalized = scheme.generate("docs", "kept.txt").unwrap();
    let abandoned = scheme.generate("docs", "abandoned.txt").unwrap();
    let in_progress = scheme.generate("docs", "in-progress.txt").unwrap();
    let other_instance = KeyScheme::new("did:vibe:z6MkSomeoneElse")
        .unwrap()
        .generate("docs", "x.txt")
        .unwrap();
    for (key, body) in [
        (&finalized, "kept!"),
        (&abandoned, "abandoned"),
        (&in_progress, "uploading"),
        (&other_instance, "not ours"),
    ] {
        store
            .put(key.as_str(), "text/plain", Bytes::from(body))
            .await
            .unwrap();
    }
    ledger.commit(finalized.as_str(), 5).unwrap();
    ledger
        .reserve(
            abandoned.as_str(),
            9,
            SystemTime::now() - Duration::from_secs(1),
        )
        .unwrap();
    ledger.reserve(in_progress.as_str(), 9, far).unwrap();
    assert_eq!(ledger.usage().used(), 23);

    let finalized_keys = HashSet::from([finalized.to_string()]);
    // Nothing is old enough yet: nothing is deleted.
    let report = sweep(
        &store,
        &ledger,
        &scheme.instance_prefix(),
        &finalized_keys,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert!(report.deleted.is_empty());

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = sweep(
        &store,
        &ledger,
        &scheme.instance_prefix(),
        &finalized_keys,
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert_eq!(report.deleted, vec![abandoned.to_string()]);
    assert!(store.head(abandoned.as_str()).await.unwrap().is_none());
    assert!(store.head(finalized.as_str()).await.unwrap().is_some());
    assert!(store.head(in_progress.as_str()).await.unwrap().is_some());
    assert!(
        store.head(other_instance.as_str()).await.unwrap().is_some(),
        "other prefixes are untouched"
    );
    // kept (5) + in progress (9); the abandoned upload stopped counting.
    assert_eq!(ledger.usage().used(), 14);
    assert_eq!(report.stored_bytes, 14);
}

#[tokio::test]
async fn a_stopped_store_is_unavailable_and_recovers_when_it_returns() {
    let mut s3 = S3Server::start().await.unwrap();
    let store = store(&s3).await;
    store
        .put("x/y", "text/plain", Bytes::from_static(b"1"))
        .await
        .unwrap();
    s3.stop().await;
    assert!(matches!(store.ping().await, Err(BlobError::Unavailable(_))));
    assert!(matches!(
        store.head("x/y").await,
        Err(BlobError::Unavailable(_))
    ));
    assert!(matches!(
        store.delete("x/y").await,
        Err(BlobError::Unavailable(_))
    ));
    // Presigning needs no network and still works.
    assert!(
        store
            .presign_get("x/y", Duration::from_secs(5))
            .await
            .is_ok()
    );
    s3.restart().await.unwrap();
    store.ping().await.expect("the same client recovers");
    assert!(store.head("x/y").await.unwrap().is_some());
}

#[tokio::test]
async fn wrong_credentials_are_a_storage_error_not_unavailability() {
    let s3 = S3Server::start().await.unwrap();
    let store = BlobStore::new(&S3Config {
        endpoint: s3.endpoint.parse().unwrap(),
        region: s3.region.clone(),
        access_key: s3.access_key.clone(),
        secret_key: "definitely-not-the-secret".into(),
        bucket: "vibe-test".into(),
        force_path_style: true,
    });
    let err = store.head("a/b").await.unwrap_err();
    assert!(matches!(err, BlobError::Storage(_)), "{err:?}");
    assert!(!err.to_string().contains("definitely-not-the-secret"));
}

/// A streamed upload slower than the store's read timeout (a large file from a slow client)
/// is not cut off: the timeout counts from the body's last byte, not from the start.
#[tokio::test]
async fn a_sized_upload_slower_than_the_read_timeout_is_stored() {
    let s3 = S3Server::start().await.unwrap();
    let config = S3Config {
        endpoint: s3.endpoint.parse().unwrap(),
        region: s3.region.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        bucket: "vibe-slow".into(),
        force_path_style: true,
    };
    let store = BlobStore::with_read_timeout(&config, None, Duration::from_secs(1));
    store.ensure_bucket().await.expect("create bucket");
    let key = KeyScheme::new(INSTANCE)
        .unwrap()
        .generate("docs", "slow.bin")
        .unwrap();
    // Four pieces, 700 ms apart: 2.1 s of sending against a 1 s read timeout.
    let pieces: Vec<Bytes> = (0..4u8).map(|i| Bytes::from(vec![i; 10_000])).collect();
    let body = futures::stream::iter(pieces.clone()).then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        Ok::<_, std::io::Error>(piece)
    });
    let started = std::time::Instant::now();
    let stored = upload_sized(
        &store,
        key.as_str(),
        "application/octet-stream",
        Box::pin(body),
        40_000,
    )
    .await
    .expect("a slow body is not cut off by the read timeout");
    assert_eq!(stored, 40_000);
    assert!(started.elapsed() > Duration::from_secs(2));
    let expected: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
    assert!(fetch(&store, key.as_str()).await == expected);
}

/// A store that takes the whole body and then never answers is given its read timeout from
/// the body's last byte, and the upload ends as unavailable instead of hanging.
#[tokio::test]
async fn a_store_that_never_answers_a_sized_upload_is_unavailable_after_the_read_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = silent.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // Read everything, answer nothing.
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut socket, &mut sink).await;
            });
        }
    });
    let config = S3Config {
        endpoint: endpoint.parse().unwrap(),
        region: "us-east-1".into(),
        access_key: "silent".into(),
        secret_key: "silent-secret".into(),
        bucket: "vibe-silent".into(),
        force_path_style: true,
    };
    let store = BlobStore::with_read_timeout(&config, None, Duration::from_secs(1));
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"0123456789"))]);
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        upload_sized(&store, "k/silent.bin", "application/octet-stream", body, 10),
    )
    .await
    .expect("the upload does not hang");
    assert!(
        matches!(outcome, Err(BlobError::Unavailable(_))),
        "{outcome:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}
