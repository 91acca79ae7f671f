//! Blobs end to end: the `vibe` CLI uploads (presigned PUT straight to the real
//! S3-compatible server), downloads and deletes; the library streams through the
//! instance; grants are enforced.

mod common;

use common::{VibeCli, app_with, claim_and_login};
use vibe_e2e::stack::Stack;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_upload_download_and_delete() {
    let stack = Stack::start(true).await.expect("stack with S3");
    let vibe = VibeCli::new(&stack.dataplane.url);
    vibe.ok(&["keygen"]).await;
    vibe.ok(&["claim", "--code", stack.claim_code()]).await;
    vibe.ok(&[
        "apps",
        "grant",
        "photos-app",
        "blob:read:photos",
        "blob:write:photos",
        "blob:delete:photos",
    ])
    .await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("holiday photo.png");
    let bytes = pattern(3 * 1024 * 1024 + 17);
    std::fs::write(&file, &bytes).unwrap();
    let file_arg = file.to_str().unwrap();

    let app = ["--app", "photos-app"];
    let put = vibe
        .ok(&[app[0], app[1], "blob", "put", "photos", file_arg])
        .await;
    let key = put["objectKey"].as_str().expect("objectKey").to_string();
    assert_eq!(put["size"], bytes.len() as u64);
    assert_eq!(put["contentType"], "image/png");
    assert_eq!(put["originalFilename"], "holiday photo.png");

    let listed = vibe.ok(&[app[0], app[1], "blob", "ls", "photos"]).await;
    assert!(listed.to_string().contains(&key), "{listed}");

    let out = dir.path().join("downloaded.png");
    let got = vibe
        .ok(&[
            app[0],
            app[1],
            "blob",
            "get",
            &key,
            "-o",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(got["bytes"], bytes.len() as u64);
    assert!(
        std::fs::read(&out).unwrap() == bytes,
        "downloaded bytes differ"
    );

    // Without the grant: refused.
    let denied = vibe
        .fails(&["--app", "other-app", "blob", "get", &key, "-o", "/dev/null"])
        .await;
    assert!(denied.contains("403"), "{denied}");

    vibe.ok(&[app[0], app[1], "blob", "rm", &key]).await;
    let gone = vibe
        .fails(&[
            app[0],
            app[1],
            "blob",
            "get",
            &key,
            "-o",
            out.to_str().unwrap(),
        ])
        .await;
    assert!(gone.contains("404"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_stream_through_the_instance() {
    let stack = Stack::start(true).await.expect("stack with S3");
    let (_key, owner) = claim_and_login(&stack).await;
    let app = app_with(
        &owner,
        "files-app",
        &["blob:read:files", "blob:write:files", "blob:delete:files"],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.pdf");
    let bytes = pattern(12 * 1024 * 1024 + 5);
    std::fs::write(&file, &bytes).unwrap();

    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let meta = app
        .blob_stream_file(
            "files",
            &file,
            None,
            Some(std::sync::Arc::new(move |n| {
                counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            })),
        )
        .await
        .expect("streaming upload");
    assert_eq!(
        sent.load(std::sync::atomic::Ordering::Relaxed),
        bytes.len() as u64
    );
    assert_eq!(meta["size"], bytes.len() as u64);
    assert_eq!(meta["contentType"], "application/pdf");
    let key = meta["objectKey"].as_str().unwrap();
    let downloaded = app.blob_get_bytes(key).await.unwrap();
    assert!(downloaded.as_ref() == bytes.as_slice());

    // A read-only app may not delete.
    let reader = app_with(&owner, "viewer-app", &["blob:read:files"]).await;
    let denied = reader.blob_delete(key).await.unwrap_err();
    assert_eq!(denied.status(), Some(403), "{denied}");
    app.blob_delete(key).await.unwrap();
    let gone = app.blob_download_url(key).await.unwrap_err();
    assert_eq!(gone.status(), Some(404), "{gone}");
}
