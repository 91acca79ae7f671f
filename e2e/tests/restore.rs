//! Issue 18's restore, end to end with built binaries: the provider's scheduled backup
//! (`vibe-dataplane backup`, as the operator's CronJob runs it) writes an archive encrypted to
//! the owner; a new instance created with `spec.restoreFrom` (the operator sets
//! `VIBE_RESTORE_BUCKET`/`VIBE_RESTORE_OBJECT_KEY`) serves that archive to its owner only; the
//! owner's `vibe restore` decrypts it on their machine and imports it, and the new instance
//! then holds the same documents, apps, grants and blobs. Repeating the restore changes
//! nothing; a key that is not the owner's gets nothing to decrypt.

mod common;

use common::VibeCli;
use vibe_api::dataplane_env as env;
use vibe_api::export::RESTORE_OUTCOME_KEY;
use vibe_e2e::stack::{DataPlane, DataPlaneConfig, S3Settings, Stack};
use vibe_test_support::CouchServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_restored_into_a_new_instance_by_its_owner_with_vibe_restore() {
    let old = Stack::start(true).await.expect("old stack");
    let s3 = old.s3.as_ref().expect("S3 started");
    let vibe = VibeCli::new(&old.dataplane.url);
    vibe.ok(&["keygen"]).await;
    vibe.ok(&["claim", "--code", old.claim_code()]).await;
    vibe.ok(&[
        "apps",
        "grant",
        "notes-app",
        "read:notes",
        "write:notes",
        "blob:read:files",
        "blob:write:files",
    ])
    .await;
    for title in ["alpha", "beta", "gamma"] {
        let doc = format!("{{\"title\":\"{title}\"}}");
        vibe.ok(&["--app", "notes-app", "put", "notes", &doc]).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("photo.bin");
    let photo_bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&photo, &photo_bytes).unwrap();
    let stored = vibe
        .ok(&[
            "--app",
            "notes-app",
            "blob",
            "put",
            "files",
            photo.to_str().unwrap(),
        ])
        .await;
    let object_key = stored["objectKey"].as_str().expect("objectKey").to_string();

    // The provider's scheduled backup, as the CronJob runs it.
    s3.create_bucket("vibe-backups")
        .await
        .expect("backup bucket");
    let (_, backup_key) = common::run_backup(&old.dataplane, "vibe-backups", "alice/").await;

    // A new instance the operator created with spec.restoreFrom pointing at that backup.
    let couch = CouchServer::start()
        .await
        .expect("CouchDB for the new instance");
    let mut config = DataPlaneConfig::claimable(&couch);
    s3.create_bucket("vibe-restored").await.expect("bucket");
    config.s3 = Some(S3Settings {
        endpoint: s3.endpoint.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        region: s3.region.clone(),
        bucket: "vibe-restored".into(),
    });
    config.extra_env = vec![
        (env::VIBE_RESTORE_BUCKET.into(), "vibe-backups".into()),
        (env::VIBE_RESTORE_OBJECT_KEY.into(), backup_key.clone()),
    ];
    let claim_code = config.claim_code.clone().unwrap();
    let restored = DataPlane::start(config).await.expect("restored data plane");
    let at_new = |args: &[&str]| {
        let mut all = vec!["--instance", restored.url.as_str()];
        all.extend_from_slice(args);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let vibe = &vibe;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            vibe.ok(&args).await
        }
    };

    // Somebody else's key gets no session, so not even the encrypted backup.
    let stranger = VibeCli::new(&restored.url);
    stranger.ok(&["keygen"]).await;
    stranger.fails(&["claim", "--code", "not-the-code"]).await;
    let refused = stranger.fails(&["restore"]).await;
    assert!(refused.contains("not logged in"), "{refused}");

    run(at_new(&["claim", "--code", &claim_code])).await;
    // Until the restore, the new instance takes no writes (an import needs it empty).
    let mut refused = vec!["--instance", restored.url.as_str()];
    refused.extend(["apps", "grant", "notes-app", "read:notes"]);
    let refused = vibe.fails(&refused).await;
    assert!(refused.contains("vibe restore"), "{refused}");
    let done = run(at_new(&["restore"])).await;
    assert_eq!(done["backup"], backup_key.as_str(), "{done}");
    assert_eq!(done["repeated"], false, "{done}");
    // Three notes and the blob's metadata document.
    assert_eq!(done["counts"]["documents"], 4, "{done}");
    assert_eq!(done["counts"]["apps"], 1, "{done}");
    assert_eq!(done["counts"]["blobs"], 1, "{done}");
    assert_eq!(
        done["counts"]["blobBytes"],
        photo_bytes.len() as u64,
        "{done}"
    );

    // Same documents, grants and blob bytes as the old instance.
    let find = |instance: String| {
        let vibe = &vibe;
        async move {
            vibe.ok(&[
                "--instance",
                &instance,
                "--app",
                "notes-app",
                "find",
                "notes",
                "--all",
            ])
            .await
            .to_string()
        }
    };
    let before = find(old.dataplane.url.clone()).await;
    assert!(before.contains("gamma"), "{before}");
    assert_eq!(find(restored.url.clone()).await, before);
    // Apps and grants, not when each instance last saw the app (observed, not restored).
    let registrations = |mut apps: serde_json::Value| {
        for app in apps["apps"].as_array_mut().into_iter().flatten() {
            if let Some(app) = app.as_object_mut() {
                app.remove("lastSeenAt");
            }
        }
        apps
    };
    let apps_old = registrations(vibe.ok(&["apps", "list"]).await);
    let apps_new = registrations(run(at_new(&["apps", "list"])).await);
    assert_eq!(apps_new, apps_old);
    let copy = dir.path().join("copy.bin");
    run(at_new(&[
        "--app",
        "notes-app",
        "blob",
        "get",
        &object_key,
        "-o",
        copy.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(std::fs::read(&copy).unwrap(), photo_bytes);

    // Again (an interrupted restore is simply run again): accepted, nothing changes.
    let again = run(at_new(&["restore"])).await;
    assert_eq!(again["repeated"], true, "{again}");
    assert_eq!(find(restored.url.clone()).await, before);

    // The operator finds the outcome in the instance's own bucket.
    let outcome = outcome_in(s3, "vibe-restored").await;
    assert_eq!(outcome["outcome"], "Restored", "{outcome}");
    assert_eq!(outcome["objectKey"], backup_key.as_str(), "{outcome}");

    // The old instance is not being restored: it has no backup to serve.
    let nothing = vibe.fails(&["restore"]).await;
    assert!(
        nothing.contains("not being restored from a backup"),
        "{nothing}"
    );
}

/// The restore outcome the data plane left in `bucket` for the operator (written in the
/// background: waits for it).
async fn outcome_in(s3: &vibe_test_support::S3Server, bucket: &str) -> serde_json::Value {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_abandons_a_restore_with_vibe_restore_abandon_and_the_instance_takes_writes() {
    let s3 = vibe_test_support::S3Server::start()
        .await
        .expect("start s3s-fs");
    s3.create_bucket("vibe-backups").await.expect("bucket");
    s3.create_bucket("vibe-abandoned").await.expect("bucket");
    let couch = CouchServer::start().await.expect("CouchDB");
    let mut config = DataPlaneConfig::claimable(&couch);
    config.s3 = Some(S3Settings {
        endpoint: s3.endpoint.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        region: s3.region.clone(),
        bucket: "vibe-abandoned".into(),
    });
    // A backup that was lost: the owner cannot restore it and starts afresh.
    let lost = "alice/20261204T000000.000Z-00000000.vibe.age";
    config.extra_env = vec![
        (env::VIBE_RESTORE_BUCKET.into(), "vibe-backups".into()),
        (env::VIBE_RESTORE_OBJECT_KEY.into(), lost.into()),
    ];
    let claim_code = config.claim_code.clone().unwrap();
    let instance = DataPlane::start(config).await.expect("data plane");
    let vibe = VibeCli::new(&instance.url);
    vibe.ok(&["keygen"]).await;
    vibe.ok(&["claim", "--code", &claim_code]).await;

    let refused = vibe
        .fails(&["apps", "grant", "notes-app", "write:notes"])
        .await;
    assert!(
        refused.contains("vibe restore") && refused.contains("--abandon"),
        "{refused}"
    );
    let missing = vibe.fails(&["restore"]).await;
    assert!(missing.contains(lost), "{missing}");
    // Without a terminal to confirm on, --yes is required.
    let unconfirmed = vibe.fails(&["restore", "--abandon"]).await;
    assert!(unconfirmed.contains("--yes"), "{unconfirmed}");
    vibe.fails(&["apps", "grant", "notes-app", "write:notes"])
        .await;

    let abandoned = vibe.ok(&["restore", "--abandon", "--yes"]).await;
    assert_eq!(abandoned["outcome"], "Abandoned", "{abandoned}");
    assert_eq!(abandoned["objectKey"], lost, "{abandoned}");
    vibe.ok(&["apps", "grant", "notes-app", "write:notes"])
        .await;
    vibe.ok(&[
        "--app",
        "notes-app",
        "put",
        "notes",
        "{\"title\":\"fresh start\"}",
    ])
    .await;
    let outcome = outcome_in(&s3, "vibe-abandoned").await;
    assert_eq!(outcome["outcome"], "Abandoned", "{outcome}");
    assert_eq!(outcome["time"], abandoned["time"], "{outcome}");
}
