//! Issue 18 end to end with the `vibe` binary and three built data planes: a person exports
//! their instance (encrypted to their key), imports the file into a new instance, and
//! migrates to a third with `vibe migrate`; each new instance serves the same documents,
//! apps and grants.

mod common;

use common::VibeCli;
use vibe_e2e::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_exports_imports_and_migrates_with_the_cli() {
    let old = Stack::start(false).await.expect("old stack");
    let restored = Stack::start(false).await.expect("second stack");
    let moved = Stack::start(false).await.expect("third stack");
    let vibe = VibeCli::new(&old.dataplane.url);
    vibe.ok(&["keygen"]).await;
    // One person owns all three (claiming logs in to each).
    vibe.ok(&["claim", "--code", old.claim_code()]).await;
    for stack in [&restored, &moved] {
        vibe.ok(&[
            "--instance",
            &stack.dataplane.url,
            "claim",
            "--code",
            stack.claim_code(),
        ])
        .await;
    }
    vibe.ok(&["apps", "grant", "notes-app", "read:notes", "write:notes"])
        .await;
    for title in ["one", "two", "three"] {
        let doc = format!("{{\"title\":\"{title}\"}}");
        vibe.ok(&["--app", "notes-app", "put", "notes", &doc]).await;
    }
    let find = |url: String| {
        let vibe = &vibe;
        async move {
            let page = vibe
                .ok(&[
                    "--instance",
                    &url,
                    "--app",
                    "notes-app",
                    "find",
                    "notes",
                    "--all",
                ])
                .await;
            page.to_string()
        }
    };
    let before = find(old.dataplane.url.clone()).await;
    assert!(before.contains("three"), "{before}");

    // Export, encrypted to the owner's key by default.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("me.vibe");
    let file = file.to_str().unwrap();
    let exported = vibe.ok(&["export", "-o", file]).await;
    assert_eq!(exported["encrypted"], true, "{exported}");
    let bytes = std::fs::read(file).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    assert!(!bytes.windows(5).any(|w| w == b"three"));

    // Import it into an empty instance (decrypted here with the key).
    let imported = vibe
        .ok(&["--instance", &restored.dataplane.url, "import", file])
        .await;
    assert_eq!(imported["counts"]["apps"], 1, "{imported}");
    assert_eq!(imported["counts"]["documents"], 3, "{imported}");
    assert_eq!(find(restored.dataplane.url.clone()).await, before);
    // Again: accepted, nothing changes.
    let again = vibe
        .ok(&["--instance", &restored.dataplane.url, "import", file])
        .await;
    assert_eq!(again["repeated"], true, "{again}");

    // Migrate from the old instance to the third.
    let migrated = vibe
        .ok(&[
            "--instance",
            &old.dataplane.url,
            "migrate",
            "--to",
            &moved.dataplane.url,
        ])
        .await;
    assert_eq!(migrated["verified"], true, "{migrated}");
    assert_eq!(migrated["counts"]["documents"], 3, "{migrated}");
    assert!(
        migrated["devices"].as_array().unwrap().len() >= 2,
        "{migrated}"
    );
    assert_eq!(find(moved.dataplane.url.clone()).await, before);
    // The third instance now holds data: another export is refused there.
    let refused = vibe
        .fails(&["--instance", &moved.dataplane.url, "import", file])
        .await;
    assert!(refused.contains("already holds data"), "{refused}");
}
