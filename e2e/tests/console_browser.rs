//! The owner console in a real browser (issue 19): the built data plane and `vibe` binary on
//! pouchdb-server and s3s-fs, and Debian's headless Chromium driven by playwright-core
//! (`e2e/console/browser.mjs`). The `vibe console` link logs in; revoking an app's grant
//! in the page makes the app's next request 403, ends its realtime subscription and closes
//! its WebSocket (4003); a grant revoked with `vibe apps revoke` while the page is open stays
//! revoked after a click on another permission in the page (the page sends only that one
//! change); deleting the app closes its new WebSocket (4001); a device is
//! revoked; a document is browsed; a blob is downloaded and deleted; an export is
//! downloaded; "log out everywhere" ends the CLI's session too; a used and an expired link
//! are refused; a console session logs out of itself. The Overview shows the backup that
//! `vibe-dataplane backup` made before (succeeded, its object key), the Sessions page when
//! every session expires. Signing in with the key file in the page: a stranger's key and a
//! non-key are refused, the owner's PEM and the same key as a bare seed each make a console
//! session, and no request the page makes carries the key.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci` in `e2e/console`. Without them the
//! test says so and passes, unless `VIBE_REQUIRE_BROWSER=1` (CI sets it), which makes a
//! missing browser a failure. `VIBE_CONSOLE_SCREENSHOTS=<folder>` also writes screenshots
//! of every page at desktop and phone width (docs/console.md shows them).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::VibeCli;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use vibe_api::apps::GrantSetting;
use vibe_cli::client::{Client, TokenSource};
use vibe_e2e::stack::Stack;

const APP: &str = "https://notes.example";
const APP_NAME: &str = "Notes";
const DEVICE_NAME: &str = "Phone";
const BLOB_NAME: &str = "hello.txt";
const BLOB_TEXT: &str = "hello from the console test\n";
const WAIT: Duration = Duration::from_secs(20);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Chromium and the npm packages, or why the test cannot run.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("console");
    if !chromium.exists() {
        return Err(format!(
            "{} is missing (apt-get install chromium)",
            chromium.display()
        ));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Err("e2e/console/node_modules is missing (npm ci in e2e/console)".into());
    }
    Ok((chromium, dir))
}

async fn next_text(ws: &mut Socket) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Close(frame)))) => return format!("closed {frame:?}"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("the WebSocket ended: {other:?}"),
        }
    }
}

/// The app's WebSocket, authenticated with its token and subscribed to `collections`.
async fn app_socket(stack: &Stack, token: &str, collections: &[&str]) -> Socket {
    let (mut ws, _) = tokio_tungstenite::connect_async(stack.instance().websocket_url().as_str())
        .await
        .expect("WebSocket opens");
    let auth = json!({ "action": "auth", "token": token, "appId": APP });
    let subscribe = collections
        .iter()
        .map(|c| json!({ "action": "subscribe", "collection": c }));
    for frame in std::iter::once(auth).chain(subscribe) {
        ws.send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
        let answer = next_text(&mut ws).await;
        assert!(!answer.contains("error"), "{frame} → {answer}");
    }
    ws
}

/// What the app gets when it reads `notes` with its token.
async fn app_read_status(stack: &Stack, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/api/v1/data/read", stack.dataplane.url))
        .bearer_auth(token)
        .json(&json!({ "collection": "notes" }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_runs_the_instance_from_the_console_in_a_browser() {
    let (chromium, dir) = match browser() {
        Ok(found) => found,
        Err(missing) if std::env::var("VIBE_REQUIRE_BROWSER").as_deref() != Ok("1") => {
            eprintln!("console browser test skipped: {missing}");
            return;
        }
        Err(missing) => panic!("VIBE_REQUIRE_BROWSER=1 but {missing}"),
    };
    let stack = Stack::start(true).await.expect("stack");
    let vibe = VibeCli::new(&stack.dataplane.url);
    vibe.ok(&["keygen"]).await;
    vibe.ok(&["claim", "--code", stack.claim_code()]).await;
    let key = vibe_cli::keyfile::load(&vibe.key_path()).unwrap();
    let tokens = stack.instance().login(&key).await.unwrap();
    let owner = Client::new(stack.instance(), TokenSource::session(tokens));

    // An app with grants, 25 notes (two pages of 20), a blob, a device.
    let grants: Vec<String> = ["read:notes", "write:notes", "blob:write:files"]
        .map(String::from)
        .to_vec();
    owner
        .set_grants(APP, Some(APP_NAME), &grants, "always")
        .await
        .unwrap();
    let app = owner.as_app(APP);
    let notes: Vec<Value> = (0..25)
        .map(|i| json!({ "_id": format!("notes/{i:02}"), "title": format!("Note {i}") }))
        .collect();
    app.write_bulk("notes", &notes).await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join(BLOB_NAME);
    std::fs::write(&file, BLOB_TEXT).unwrap();
    app.blob_stream_file("files", &file, Some("text/plain"), None)
        .await
        .unwrap();
    let device = owner.register_device(DEVICE_NAME, None, &[]).await.unwrap();
    // The device syncs once, so the Devices page has a time to show.
    let synced = reqwest::Client::new()
        .get(&device.sync_url)
        .header("Authorization", device.credentials.authorization())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(synced.as_u16(), 200);
    let app_token = owner.app_token(APP).await.unwrap().access_token;
    let mut socket = app_socket(&stack, &app_token, &["notes"]).await;
    assert_eq!(app_read_status(&stack, &app_token).await, 200);

    // The provider's scheduled backup ran once (as the operator's CronJob runs it): the
    // Overview must show it succeeded, and where the archive is.
    let s3 = stack.s3.as_ref().expect("S3 started");
    s3.create_bucket("vibe-backups")
        .await
        .expect("backup bucket");
    let (_, backup_key) = common::run_backup(&stack.dataplane, "vibe-backups", "owner/").await;

    // Console links: one to use, and one that expires before it is tried.
    let link = vibe.ok(&["console"]).await["url"]
        .as_str()
        .unwrap()
        .to_string();
    let second = vibe.ok(&["console", "--ttl", "600"]).await["url"]
        .as_str()
        .unwrap()
        .to_string();
    let expired = vibe.ok(&["console", "--ttl", "1"]).await["url"]
        .as_str()
        .unwrap()
        .to_string();

    // Key files for signing in in the page: the owner's own (the PEM `vibe keygen` wrote),
    // the same key as a bare seed (base64 text, as `vibe` also reads), somebody else's.
    let other_key = folder.path().join("other.pem");
    std::fs::write(&other_key, vibe_identity::Keypair::generate().to_pem()).unwrap();
    let seed_file = folder.path().join("seed.txt");
    std::fs::write(&seed_file, key.seed_base64()).unwrap();

    let mut command = tokio::process::Command::new("node");
    command
        .arg("browser.mjs")
        .current_dir(&dir)
        .env("CHROMIUM", &chromium)
        .env("CONSOLE_URL", &link)
        .env("EXPIRED_URL", &expired)
        .env("LOGOUT_URL", &second)
        .env("APP_NAME", APP_NAME)
        .env("DEVICE_NAME", DEVICE_NAME)
        .env("DOC_ID", "notes/22")
        .env("BLOB_NAME", BLOB_NAME)
        .env("BLOB_TEXT", BLOB_TEXT)
        .env("BACKUP_KEY", &backup_key)
        .env("KEY_FILE", vibe.key_path())
        .env("SEED_FILE", &seed_file)
        .env("OTHER_KEY_FILE", &other_key)
        .env("KEY_SEED_HEX", hex::encode(key.seed()))
        .env("OWNER_DID", key.did().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(shots) = std::env::var_os("VIBE_CONSOLE_SCREENSHOTS") {
        std::fs::create_dir_all(&shots).unwrap();
        command.env("SCREENSHOTS", shots);
    }
    let mut node = command.spawn().expect("run node");
    let mut input = node.stdin.take().unwrap();
    let mut output = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut steps = Vec::new();
    let mut done = false;
    while let Some(line) = tokio::time::timeout(Duration::from_secs(120), output.next_line())
        .await
        .expect("the browser test makes progress")
        .unwrap()
    {
        let Some(step) = line.strip_prefix("STEP ") else {
            done |= line == "DONE";
            continue;
        };
        match step {
            "grant-revoked" => {
                assert_eq!(app_read_status(&stack, &app_token).await, 403);
                let notice = next_text(&mut socket).await;
                assert!(
                    notice.contains("\"revoked\"") && notice.contains("notes"),
                    "{notice}"
                );
                // Then the socket closes: a revoked grant ends the app's open streams.
                let end = next_text(&mut socket).await;
                assert!(
                    end.starts_with("closed") && end.contains("4003"),
                    "the socket closed: {end}"
                );
                // The token still authenticates a new socket (what deleting the app ends).
                socket = app_socket(&stack, &app_token, &[]).await;
            }
            "cli-revoked-write" => {
                // Revoked with `vibe` while the page is open: the app's socket ends (4003).
                let revoked = vibe.ok(&["apps", "revoke", APP, "write:notes"]).await;
                assert_eq!(revoked["grants"]["write:notes"], "never", "{revoked}");
                let end = next_text(&mut socket).await;
                assert!(
                    end.starts_with("closed") && end.contains("4003"),
                    "the socket closed: {end}"
                );
                socket = app_socket(&stack, &app_token, &[]).await;
            }
            "granted-another" => {
                // The page granted read:notes; write:notes stayed revoked.
                assert_eq!(app_read_status(&stack, &app_token).await, 200);
                let status = reqwest::Client::new()
                    .post(format!("{}/api/v1/data/write", stack.dataplane.url))
                    .bearer_auth(&app_token)
                    .json(&json!({ "collection": "notes", "data": { "title": "after" } }))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status.as_u16(), 403, "write:notes stays revoked");
                let grants = owner.app_status(APP).await.unwrap().grants.unwrap();
                assert_eq!(grants["write:notes"], GrantSetting::Never, "{grants:?}");
                assert_eq!(grants["read:notes"], GrantSetting::Always, "{grants:?}");
                assert_eq!(
                    grants["blob:write:files"],
                    GrantSetting::Always,
                    "{grants:?}"
                );
            }
            "device-revoked" => {
                let status = reqwest::Client::new()
                    .get(&device.sync_url)
                    .header("Authorization", device.credentials.authorization())
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status.as_u16(), 401);
            }
            "blob-deleted" => {
                let blobs = console_blobs(&owner).await;
                assert_eq!(blobs, json!([]), "no blob left");
            }
            "app-deleted" => {
                let end = next_text(&mut socket).await;
                assert!(end.contains("4001"), "the socket closed: {end}");
                assert_eq!(app_read_status(&stack, &app_token).await, 401);
            }
            "logged-out-everywhere" => {
                let refused = vibe.fails(&["apps", "list"]).await;
                assert!(
                    refused.contains("401") || refused.contains("revoked"),
                    "{refused}"
                );
                assert!(owner.list_devices().await.is_err(), "owner session ended");
            }
            other => panic!("unknown step {other}"),
        }
        steps.push(step.to_string());
        input.write_all(b"ok\n").await.unwrap();
    }
    let status = node.wait().await.unwrap();
    assert!(
        status.success(),
        "the browser test failed after steps {steps:?}"
    );
    assert!(done, "the browser test did not finish: {steps:?}");
    assert_eq!(steps.len(), 7, "{steps:?}");
}

/// The console's blob listing, for checks from outside the page.
async fn console_blobs(owner: &Client) -> Value {
    let token = owner.access_token().await.unwrap();
    let listed: Value = reqwest::Client::new()
        .get(owner.instance().endpoint("api/v1/console/blobs"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listed["blobs"].clone()
}
