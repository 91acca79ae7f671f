//! The S3-compatible test server: starts, checks signatures, keeps objects across restarts,
//! and goes away when stopped or dropped.

use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use vibe_test_support::S3Server;

async fn put(s3: &S3Server, bucket: &str, key: &str, body: &'static [u8]) {
    s3.client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(body))
        .send()
        .await
        .unwrap();
}

async fn get(s3: &S3Server, bucket: &str, key: &str) -> Vec<u8> {
    let object = s3
        .client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    object.body.collect().await.unwrap().into_bytes().to_vec()
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .contains("State:\tZ")
}

#[tokio::test]
async fn stores_and_returns_objects() {
    let s3 = S3Server::start().await.unwrap();
    assert!(s3.endpoint.starts_with("http://127.0.0.1:"));
    s3.create_bucket("photos").await.unwrap();
    put(&s3, "photos", "cat.txt", b"meow").await;
    assert_eq!(get(&s3, "photos", "cat.txt").await, b"meow");
}

#[tokio::test]
async fn refuses_a_wrong_secret_and_anonymous_requests() {
    let s3 = S3Server::start().await.unwrap();
    s3.create_bucket("private").await.unwrap();

    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&s3.endpoint)
        .region(Region::new(s3.region.clone()))
        .credentials_provider(Credentials::new(
            &s3.access_key,
            "wrong-secret",
            None,
            None,
            "test",
        ))
        .force_path_style(true)
        .build();
    let forged = aws_sdk_s3::Client::from_conf(config)
        .list_objects_v2()
        .bucket("private")
        .send()
        .await;
    let error = forged.expect_err("a wrong secret must be refused");
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(403));

    let anonymous = reqwest::get(format!("{}/private", s3.endpoint))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn presigned_get_works_and_tampering_is_refused() {
    let s3 = S3Server::start().await.unwrap();
    s3.create_bucket("shared").await.unwrap();
    put(&s3, "shared", "doc.txt", b"hello").await;

    let presigned = s3
        .client()
        .get_object()
        .bucket("shared")
        .key("doc.txt")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(60)).unwrap(),
        )
        .await
        .unwrap();
    let ok = reqwest::get(presigned.uri()).await.unwrap();
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    assert_eq!(ok.bytes().await.unwrap().as_ref(), b"hello");

    let tampered = presigned.uri().replace("doc.txt", "other.txt");
    let refused = reqwest::get(tampered).await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn restart_keeps_port_keys_and_objects() {
    let mut s3 = S3Server::start().await.unwrap();
    let endpoint = s3.endpoint.clone();
    s3.create_bucket("keep").await.unwrap();
    put(&s3, "keep", "a/b.txt", b"still here").await;

    s3.restart().await.unwrap();

    assert_eq!(s3.endpoint, endpoint);
    assert_eq!(get(&s3, "keep", "a/b.txt").await, b"still here");
}

#[tokio::test]
async fn stop_closes_the_port_and_drop_kills_the_process() {
    let mut s3 = S3Server::start().await.unwrap();
    let pid = s3.pid().unwrap();
    s3.stop().await;
    assert!(!s3.is_running());
    assert!(
        reqwest::get(&s3.endpoint).await.is_err(),
        "nothing listens after stop"
    );

    s3.restart().await.unwrap();
    let pid = s3.pid().filter(|new| *new != pid).unwrap();
    let dir = s3.dir().to_path_buf();
    drop(s3);

    let deadline = Instant::now() + Duration::from_secs(5);
    while process_exists(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!process_exists(pid), "s3s-fs {pid} still runs after drop");
    assert!(!dir.exists());
}
