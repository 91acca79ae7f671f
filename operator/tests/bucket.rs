//! Bucket provisioning against a real S3-compatible server (s3s-fs via vibe-test-support).

use aws_sdk_s3::primitives::ByteStream;
use vibe_operator::bucket::{BucketClient, BucketError, LifecycleState};
use vibe_operator::config::S3Config;
use vibe_test_support::S3Server;

fn config(s3: &S3Server) -> S3Config {
    S3Config {
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        path_style: true,
        access_key_id: s3.access_key.clone(),
        secret_access_key: s3.secret_key.clone(),
        tenant_endpoint: None,
    }
}

fn raw(s3: &S3Server) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(s3.region.clone()))
            .endpoint_url(&s3.endpoint)
            .force_path_style(true)
            .credentials_provider(aws_credential_types::Credentials::new(
                &s3.access_key,
                &s3.secret_key,
                None,
                None,
                "t",
            ))
            .build(),
    )
}

#[tokio::test]
async fn ensure_creates_once_and_is_idempotent() {
    let s3 = S3Server::start().await.unwrap();
    let buckets = BucketClient::new(&config(&s3));
    assert!(!buckets.exists("vibe-tenants-alice").await.unwrap());
    let first = buckets.ensure("vibe-tenants-alice").await.unwrap();
    assert!(first.created);
    // s3s-fs has no lifecycle API; MinIO and Scaleway do (the rule is then applied once and
    // found on later checks). The operator reports which case it is in the BucketReady message.
    assert!(matches!(
        first.lifecycle,
        LifecycleState::Applied | LifecycleState::Unsupported
    ));
    let second = buckets.ensure("vibe-tenants-alice").await.unwrap();
    assert!(!second.created, "an existing bucket of ours is fine");
    assert!(matches!(
        second.lifecycle,
        LifecycleState::Present | LifecycleState::Unsupported
    ));
    let listed = raw(&s3).list_buckets().send().await.unwrap();
    assert_eq!(
        listed
            .buckets()
            .iter()
            .filter(|b| b.name() == Some("vibe-tenants-alice"))
            .count(),
        1
    );
}

#[tokio::test]
async fn delete_empties_the_bucket_and_tolerates_a_missing_one() {
    let s3 = S3Server::start().await.unwrap();
    let buckets = BucketClient::new(&config(&s3));
    buckets.ensure("vibe-tenants-bob").await.unwrap();
    let client = raw(&s3);
    for i in 0..25 {
        client
            .put_object()
            .bucket("vibe-tenants-bob")
            .key(format!("blobs/{i}.bin"))
            .body(ByteStream::from(vec![i as u8; 64]))
            .send()
            .await
            .unwrap();
    }
    buckets.delete("vibe-tenants-bob").await.unwrap();
    assert!(!buckets.exists("vibe-tenants-bob").await.unwrap());
    buckets
        .delete("vibe-tenants-bob")
        .await
        .expect("deleting twice is fine");
}

#[tokio::test]
async fn wrong_credentials_are_denied_and_a_dead_endpoint_is_unreachable() {
    let s3 = S3Server::start().await.unwrap();
    let mut wrong = config(&s3);
    wrong.secret_access_key = "not-the-secret".into();
    let err = BucketClient::new(&wrong)
        .ensure("vibe-x")
        .await
        .unwrap_err();
    assert!(matches!(err, BucketError::Denied { .. }), "{err:?}");
    assert!(
        !err.to_string().contains("not-the-secret"),
        "no secret in errors"
    );
    let mut dead = config(&s3);
    dead.endpoint = "http://127.0.0.1:9".into();
    let err = BucketClient::new(&dead).ensure("vibe-x").await.unwrap_err();
    assert_eq!(err.reason(), "ObjectStoreUnreachable");
}
