//! Multi-device sync, black-box: the built `vibe` CLI and `vibe-dataplane` against the
//! real pouchdb-server.
//!
//! - Two PouchDB devices (separate Node processes, each with its own local database,
//!   driven by `devices/device.js`) take the endpoint and token from
//!   `vibe sync --endpoint --json` (one as the owner, one as an app with the `sync`
//!   grant) and replicate live with the instance: creates, edits, deletions, CLI writes
//!   and a conflict reach everyone, also across restarts of the data plane and of the
//!   CouchDB-compatible server.
//! - Two folders synced with `vibe sync <folder>` act as two devices: creates, edits,
//!   deletions, conflicts and their resolution, refusals and per-document errors.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::VibeCli;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use vibe_e2e::stack::Stack;

/// How long one device operation (a wait included) may take.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a device waits for a document to arrive (ms, inside the driver).
const WAIT_MS: u64 = 30_000;

/// Where a device replicates to, as `vibe sync --endpoint --json` prints it.
#[derive(Clone, Debug)]
struct Endpoint {
    url: String,
    authorization: String,
}

impl Endpoint {
    async fn from_cli(vibe: &VibeCli, extra: &[&str]) -> Self {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["sync", "--endpoint"]);
        let printed = vibe.ok(&args).await;
        let url = printed["url"].as_str().expect("url").to_string();
        let authorization = printed["authorization"]
            .as_str()
            .expect("authorization")
            .to_string();
        assert!(url.ends_with("/api/v1/sync/"), "{printed}");
        assert!(authorization.starts_with("Bearer "), "{printed}");
        assert!(printed["expiresAt"].as_i64().is_some(), "{printed}");
        Self { url, authorization }
    }

    fn token(&self) -> &str {
        self.authorization.trim_start_matches("Bearer ")
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .header("Authorization", &self.authorization)
            .send()
            .await
            .expect("instance answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Every document on the instance as id → winning revision.
    async fn all_docs(&self) -> BTreeMap<String, String> {
        let (status, body) = self.get("_all_docs").await;
        assert_eq!(status, 200, "{body}");
        body["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|row| {
                (
                    row["id"].as_str().unwrap().to_string(),
                    row["value"]["rev"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// One document on the instance with its conflicts.
    async fn doc(&self, id: &str) -> Value {
        let encoded = id.replace('/', "%2F");
        let (status, body) = self.get(&format!("{encoded}?conflicts=true")).await;
        assert_eq!(status, 200, "{id}: {body}");
        body
    }
}

/// One PouchDB device: a Node process with its own local database.
struct Device {
    name: &'static str,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    _child: Child,
}

impl Device {
    fn spawn(name: &'static str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/devices/device.js");
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .arg(name)
            .env(
                "NODE_PATH",
                vibe_test_support::pouchdb_client_modules().expect("PouchDB client"),
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            name,
            stdin,
            lines,
            next_id: 0,
            _child: child,
        }
    }

    async fn try_call(&mut self, op: &str, mut args: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        args["req"] = json!(id);
        args["op"] = json!(op);
        let mut line = args.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("device {}: write: {e}", self.name));
        let answer = loop {
            let line = tokio::time::timeout(DEVICE_TIMEOUT, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("device {}: no answer to {op} in time", self.name))
                .unwrap_or_else(|e| panic!("device {}: read: {e}", self.name))
                .unwrap_or_else(|| panic!("device {} exited during {op}", self.name));
            let answer: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("device {}: not JSON ({e}): {line}", self.name));
            if answer["req"] == json!(id) {
                break answer;
            }
        };
        if answer["ok"] == true {
            Ok(answer["result"].clone())
        } else {
            Err(answer["error"].as_str().unwrap_or("?").to_string())
        }
    }

    async fn call(&mut self, op: &str, args: Value) -> Value {
        let name = self.name;
        self.try_call(op, args)
            .await
            .unwrap_or_else(|e| panic!("device {name}: {op} failed: {e}"))
    }

    /// Start live two-way replication; returns once the first round caught up.
    async fn start(&mut self, endpoint: &Endpoint) {
        self.call(
            "start",
            json!({ "url": endpoint.url, "authorization": endpoint.authorization }),
        )
        .await;
    }

    async fn stop(&mut self) {
        self.call("stop", json!({})).await;
    }

    /// Write a document locally; returns its new revision.
    async fn put(&mut self, doc: Value) -> String {
        let written = self.call("put", json!({ "doc": doc })).await;
        written["rev"].as_str().unwrap().to_string()
    }

    async fn get(&mut self, id: &str) -> Value {
        self.call("get", json!({ "id": id })).await
    }

    async fn remove(&mut self, id: &str) -> String {
        let removed = self.call("remove", json!({ "id": id })).await;
        removed["rev"].as_str().unwrap().to_string()
    }

    /// Wait until the local winner of `id` is `rev`; returns the document.
    async fn wait_rev(&mut self, id: &str, rev: &str) -> Value {
        self.call(
            "wait",
            json!({ "id": id, "rev": rev, "timeoutMs": WAIT_MS }),
        )
        .await
    }

    async fn wait_deleted(&mut self, id: &str) {
        self.call(
            "wait",
            json!({ "id": id, "deleted": true, "timeoutMs": WAIT_MS }),
        )
        .await;
    }

    /// Wait until `id` has all of `leaves` as leaf revisions; returns the document.
    async fn wait_leaves(&mut self, id: &str, leaves: &[&str]) -> Value {
        self.call(
            "wait",
            json!({ "id": id, "leaves": leaves, "timeoutMs": WAIT_MS }),
        )
        .await
    }

    /// Wait until exactly `count` documents exist; returns id → winning revision.
    async fn wait_count(&mut self, count: usize) -> BTreeMap<String, String> {
        let docs = self
            .call("waitCount", json!({ "count": count, "timeoutMs": WAIT_MS }))
            .await;
        serde_json::from_value(docs).unwrap()
    }

    async fn stats(&mut self) -> Value {
        self.call("stats", json!({})).await
    }

    /// How many requests to the instance failed so far (no answer or 5xx).
    async fn failed_requests(&mut self) -> u64 {
        let stats = self.stats().await;
        stats["failedRequests"]
            .as_object()
            .expect("failedRequests")
            .values()
            .filter_map(Value::as_u64)
            .sum()
    }
}

/// A stack claimed through the CLI (keygen + claim), with an app `devices-app` granted
/// `sync` plus `read:notes` and `write:notes` (for `vibe get/put` as that app).
async fn claimed_stack() -> (Stack, VibeCli) {
    let stack = Stack::start(false).await.expect("stack");
    let vibe = VibeCli::new(&stack.dataplane.url);
    vibe.ok(&["keygen"]).await;
    vibe.ok(&["claim", "--code", stack.claim_code()]).await;
    vibe.ok(&[
        "apps",
        "grant",
        "devices-app",
        "sync",
        "read:notes",
        "write:notes",
    ])
    .await;
    (stack, vibe)
}

const APP: [&str; 2] = ["--app", "devices-app"];

fn with_app<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = APP.to_vec();
    args.extend_from_slice(rest);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pouchdb_devices_sync_live_through_the_instance() {
    let (stack, vibe) = claimed_stack().await;

    // Device A syncs as the owner; device B as the app, with an app-bound token: the
    // token `--app` prints is not the owner's and cannot do owner things.
    let owner = Endpoint::from_cli(&vibe, &[]).await;
    let app = Endpoint::from_cli(&vibe, &APP).await;
    assert_ne!(owner.token(), app.token());
    let apps_list = reqwest::Client::new()
        .get(format!("{}/api/v1/apps", stack.dataplane.url))
        .bearer_auth(app.token())
        .send()
        .await
        .unwrap();
    assert_eq!(
        apps_list.status().as_u16(),
        403,
        "app token acts as the app"
    );

    let mut a = Device::spawn("A");
    let mut b = Device::spawn("B");
    tokio::join!(a.start(&owner), b.start(&app));

    // Created on A: arrives on B and through the document API.
    let rev = a
        .put(json!({ "_id": "notes/from-a", "collection": "notes", "text": "written on A" }))
        .await;
    let on_b = b.wait_rev("notes/from-a", &rev).await;
    assert_eq!(on_b["text"], "written on A");
    let got = vibe.ok(&with_app(&["get", "notes", "from-a"])).await;
    assert_eq!(got["text"], "written on A");
    assert_eq!(got["_rev"], rev.as_str());

    // Edited on B: arrives on A.
    let mut edited = on_b.clone();
    edited["text"] = json!("edited on B");
    let rev = b.put(edited).await;
    let on_a = a.wait_rev("notes/from-a", &rev).await;
    assert_eq!(on_a["text"], "edited on B");

    // Written with `vibe put`: reaches both devices.
    let put = vibe
        .ok(&with_app(&[
            "put",
            "notes",
            r#"{"_id":"notes/from-cli","text":"written with vibe put"}"#,
        ]))
        .await;
    let rev = put["rev"].as_str().unwrap().to_string();
    let (on_a, on_b) = tokio::join!(
        a.wait_rev("notes/from-cli", &rev),
        b.wait_rev("notes/from-cli", &rev)
    );
    assert_eq!(on_a["text"], "written with vibe put");
    assert_eq!(on_b["collection"], "notes");

    // Deleted on A: gone on B and on the instance.
    a.remove("notes/from-a").await;
    b.wait_deleted("notes/from-a").await;
    let gone = vibe.fails(&with_app(&["get", "notes", "from-a"])).await;
    assert!(gone.contains("404"), "{gone}");

    // Concurrent edits while both devices are offline: after they reconnect, both
    // devices and the instance hold both revisions and agree on the winner.
    let rev = a
        .put(json!({ "_id": "notes/shared", "collection": "notes", "text": "base" }))
        .await;
    let base = b.wait_rev("notes/shared", &rev).await;
    tokio::join!(a.stop(), b.stop());
    let mut on_a = base.clone();
    on_a["text"] = json!("A's version");
    let mut on_b = base.clone();
    on_b["text"] = json!("B's version");
    let rev_a = a.put(on_a).await;
    let rev_b = b.put(on_b).await;
    assert_ne!(rev_a, rev_b);
    tokio::join!(a.start(&owner), b.start(&app));
    let leaves = [rev_a.as_str(), rev_b.as_str()];
    let (doc_a, doc_b) = tokio::join!(
        a.wait_leaves("notes/shared", &leaves),
        b.wait_leaves("notes/shared", &leaves)
    );
    assert_eq!(doc_a["_rev"], doc_b["_rev"], "{doc_a} vs {doc_b}");
    assert_eq!(doc_a["_conflicts"], doc_b["_conflicts"]);
    assert_eq!(doc_a["_conflicts"].as_array().unwrap().len(), 1, "{doc_a}");
    let on_instance = owner.doc("notes/shared").await;
    assert_eq!(on_instance["_rev"], doc_a["_rev"], "{on_instance}");
    assert_eq!(on_instance["_conflicts"], doc_a["_conflicts"]);
    let got = vibe.ok(&with_app(&["get", "notes", "shared"])).await;
    assert_eq!(got["_rev"], doc_a["_rev"]);
    assert_eq!(got["text"], doc_a["text"]);

    // Everyone holds the same documents at the same revisions.
    let instance_docs = owner.all_docs().await;
    assert_eq!(instance_docs.len(), 2, "{instance_docs:?}");
    let (docs_a, docs_b) = tokio::join!(a.wait_count(2), b.wait_count(2));
    assert_eq!(docs_a, instance_docs);
    assert_eq!(docs_b, instance_docs);
    for device in [&mut a, &mut b] {
        let stats = device.stats().await;
        assert_eq!(stats["errors"], json!([]), "{stats}");
        assert_eq!(stats["denied"], json!([]), "{stats}");
    }
}

/// `n` notes written on one device, ids `notes/<prefix>-<i>`.
async fn write_notes(device: &mut Device, prefix: &str, n: usize) {
    for i in 0..n {
        device
            .put(json!({ "_id": format!("notes/{prefix}-{i:03}"), "collection": "notes", "n": i }))
            .await;
    }
}

/// Wait until A, B and the instance hold exactly `count` documents and the same ones.
async fn all_agree(a: &mut Device, b: &mut Device, endpoint: &Endpoint, count: usize) {
    let (docs_a, docs_b) = tokio::join!(a.wait_count(count), b.wait_count(count));
    let on_instance = endpoint.all_docs().await;
    assert_eq!(on_instance.len(), count, "{on_instance:?}");
    assert_eq!(docs_a, on_instance, "device A vs instance");
    assert_eq!(docs_b, on_instance, "device B vs instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_devices_lose_nothing_across_data_plane_and_couchdb_restarts() {
    if vibe_test_support::skip_with_external_couchdb("stops and restarts CouchDB") {
        return;
    }
    let (mut stack, vibe) = claimed_stack().await;
    let owner = Endpoint::from_cli(&vibe, &[]).await;
    let app = Endpoint::from_cli(&vibe, &APP).await;
    let mut a = Device::spawn("A");
    let mut b = Device::spawn("B");
    tokio::join!(a.start(&owner), b.start(&app));

    write_notes(&mut a, "a-before", 10).await;
    write_notes(&mut b, "b-before", 10).await;
    all_agree(&mut a, &mut b, &owner, 20).await;

    // The data plane goes away with both devices' live feeds open; the devices keep
    // writing while it is down and after it is back.
    let failed_before = (a.failed_requests().await, b.failed_requests().await);
    assert_eq!(failed_before, (0, 0));
    stack.dataplane.stop().await;
    write_notes(&mut a, "a-dp-down", 5).await;
    write_notes(&mut b, "b-dp-down", 5).await;
    stack
        .dataplane
        .restart()
        .await
        .expect("data plane restarts");
    write_notes(&mut a, "a-dp-up", 5).await;
    write_notes(&mut b, "b-dp-up", 5).await;
    vibe.ok(&with_app(&[
        "put",
        "notes",
        r#"{"_id":"notes/cli-after-dp-restart","n":1}"#,
    ]))
    .await;
    all_agree(&mut a, &mut b, &owner, 41).await;
    // Both devices did lose the instance for a while (and recovered by themselves).
    let failed_after_dp = (a.failed_requests().await, b.failed_requests().await);
    assert!(
        failed_after_dp.0 > 0 && failed_after_dp.1 > 0,
        "{failed_after_dp:?}"
    );

    // The CouchDB-compatible server goes away and comes back (same data).
    stack.couch.stop().await;
    write_notes(&mut a, "a-couch-down", 5).await;
    write_notes(&mut b, "b-couch-down", 5).await;
    stack.couch.restart().await.expect("CouchDB restarts");
    write_notes(&mut a, "a-couch-up", 5).await;
    write_notes(&mut b, "b-couch-up", 5).await;
    common::eventually(Duration::from_secs(30), "the instance is ready", || {
        let instance = stack.instance();
        async move { instance.ready().await.ok() }
    })
    .await;
    vibe.ok(&with_app(&[
        "put",
        "notes",
        r#"{"_id":"notes/cli-after-couch-restart","n":2}"#,
    ]))
    .await;
    all_agree(&mut a, &mut b, &owner, 62).await;
    let failed_after_couch = (a.failed_requests().await, b.failed_requests().await);
    assert!(
        failed_after_couch.0 > failed_after_dp.0 && failed_after_couch.1 > failed_after_dp.1,
        "{failed_after_couch:?}"
    );

    // An edit made on a device after both restarts still travels both ways.
    let mut doc = a.get("notes/b-couch-up-004").await;
    doc["edited"] = json!(true);
    let rev = a.put(doc).await;
    b.wait_rev("notes/b-couch-up-004", &rev).await;
    for device in [&mut a, &mut b] {
        let stats = device.stats().await;
        assert_eq!(stats["errors"], json!([]), "{stats}");
        assert_eq!(stats["denied"], json!([]), "{stats}");
        // During the outages the instance answered 503 (retry) or not at all; never
        // another error.
        let kinds = stats["failedRequests"].as_object().unwrap();
        assert!(
            kinds.keys().all(|k| k == "503" || k == "no answer"),
            "{stats}"
        );
    }
}

fn write_json(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

fn read_json(path: &Path) -> Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("{} unreadable: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// The ids listed under `field` of a `vibe sync --json` report.
fn ids(report: &Value, field: &str) -> Vec<String> {
    report[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {report}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// `vibe sync <folder>`, which must succeed; returns its report.
async fn sync_folder(vibe: &VibeCli, folder: &Path) -> Value {
    let report = vibe.ok(&["sync", folder.to_str().unwrap()]).await;
    assert_eq!(report["errors"], json!([]), "{report}");
    report
}

/// A second device of the same person: its own config folder with a copy of the key,
/// logged in on its own.
async fn second_device(vibe: &VibeCli) -> VibeCli {
    let other = VibeCli::new(&vibe.instance);
    std::fs::copy(vibe.key_path(), other.key_path()).unwrap();
    other.ok(&["login"]).await;
    other
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_folders_sync_through_the_instance_with_vibe_sync() {
    let (_stack, vibe_a) = claimed_stack().await;
    let vibe_b = second_device(&vibe_a).await;
    let dirs = tempfile::tempdir().unwrap();
    let (a, b) = (dirs.path().join("a"), dirs.path().join("b"));

    // Created in A, pulled into B.
    write_json(&a.join("notes/x.json"), &json!({ "text": "one" }));
    let report = sync_folder(&vibe_a, &a).await;
    assert_eq!(ids(&report, "pushed"), ["notes/x"], "{report}");
    let report = sync_folder(&vibe_b, &b).await;
    assert_eq!(ids(&report, "pulled"), ["notes/x"], "{report}");
    assert_eq!(
        read_json(&b.join("notes/x.json")),
        json!({ "collection": "notes", "text": "one" })
    );
    let got = vibe_a.ok(&with_app(&["get", "notes", "x"])).await;
    assert_eq!(got["text"], "one");

    // Edited in B, pulled into A; a sync with nothing new does nothing.
    write_json(
        &b.join("notes/x.json"),
        &json!({ "collection": "notes", "text": "two" }),
    );
    let report = sync_folder(&vibe_b, &b).await;
    assert_eq!(ids(&report, "pushed"), ["notes/x"], "{report}");
    let report = sync_folder(&vibe_a, &a).await;
    assert_eq!(ids(&report, "pulled"), ["notes/x"], "{report}");
    assert_eq!(read_json(&a.join("notes/x.json"))["text"], "two");
    for (vibe, folder) in [(&vibe_a, &a), (&vibe_b, &b)] {
        let idle = sync_folder(vibe, folder).await;
        for field in [
            "pulled",
            "pushed",
            "deleted_locally",
            "deleted_remotely",
            "conflicts",
        ] {
            assert_eq!(idle[field], json!([]), "{field}: {idle}");
        }
    }

    // Deleted in A: deleted on the instance, then in B.
    std::fs::remove_file(a.join("notes/x.json")).unwrap();
    let report = sync_folder(&vibe_a, &a).await;
    assert_eq!(ids(&report, "deleted_remotely"), ["notes/x"], "{report}");
    let report = sync_folder(&vibe_b, &b).await;
    assert_eq!(ids(&report, "deleted_locally"), ["notes/x"], "{report}");
    assert!(!b.join("notes/x.json").exists());
    let gone = vibe_a.fails(&with_app(&["get", "notes", "x"])).await;
    assert!(gone.contains("404"), "{gone}");

    // Edited on both sides: the second to sync gets a conflict file and pushes nothing
    // until it is resolved; then the resolution travels.
    write_json(&a.join("notes/y.json"), &json!({ "text": "base" }));
    sync_folder(&vibe_a, &a).await;
    sync_folder(&vibe_b, &b).await;
    write_json(
        &a.join("notes/y.json"),
        &json!({ "collection": "notes", "text": "from A" }),
    );
    write_json(
        &b.join("notes/y.json"),
        &json!({ "collection": "notes", "text": "from B" }),
    );
    let report = sync_folder(&vibe_a, &a).await;
    assert_eq!(ids(&report, "pushed"), ["notes/y"], "{report}");
    let report = sync_folder(&vibe_b, &b).await;
    let conflict_file = b.join("notes/y.conflict.json");
    assert_eq!(report["pushed"], json!([]), "{report}");
    assert!(
        report["conflicts"][0]
            .as_str()
            .is_some_and(|c| c.starts_with("notes/y:")),
        "{report}"
    );
    assert_eq!(read_json(&conflict_file)["text"], "from A");
    assert_eq!(read_json(&b.join("notes/y.json"))["text"], "from B");
    // Unresolved: still not pushed, and said so.
    let report = sync_folder(&vibe_b, &b).await;
    assert_eq!(report["pushed"], json!([]), "{report}");
    assert!(
        report["conflicts"][0]
            .as_str()
            .is_some_and(|c| c.starts_with("notes/y:") && c.contains("conflict.json")),
        "{report}"
    );
    let got = vibe_a.ok(&with_app(&["get", "notes", "y"])).await;
    assert_eq!(got["text"], "from A");
    write_json(
        &b.join("notes/y.json"),
        &json!({ "collection": "notes", "text": "merged" }),
    );
    std::fs::remove_file(&conflict_file).unwrap();
    let report = sync_folder(&vibe_b, &b).await;
    assert_eq!(ids(&report, "pushed"), ["notes/y"], "{report}");
    assert_eq!(report["conflicts"], json!([]), "{report}");
    let report = sync_folder(&vibe_a, &a).await;
    assert_eq!(ids(&report, "pulled"), ["notes/y"], "{report}");
    assert_eq!(read_json(&a.join("notes/y.json"))["text"], "merged");
    let got = vibe_a.ok(&with_app(&["get", "notes", "y"])).await;
    assert_eq!(got["text"], "merged");

    // A file that is not JSON: a per-document error and exit status 1; the other
    // changes of the same run are synced and the file is left as it was.
    std::fs::write(a.join("notes/bad.json"), "{ not json").unwrap();
    write_json(&a.join("notes/good.json"), &json!({ "text": "fine" }));
    let run = vibe_a.run(&["sync", a.to_str().unwrap()]).await;
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let report = run.json();
    assert_eq!(ids(&report, "pushed"), ["notes/good"], "{report}");
    let errors = ids(&report, "errors");
    assert_eq!(errors.len(), 1, "{report}");
    assert!(
        errors[0].starts_with("notes/bad:") && errors[0].contains("not JSON"),
        "{report}"
    );
    assert!(
        run.stderr.contains("1 document(s) could not be synced"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(a.join("notes/bad.json")).unwrap(),
        "{ not json"
    );
    let report = sync_folder(&vibe_b, &b).await;
    assert_eq!(ids(&report, "pulled"), ["notes/good"], "{report}");
    assert!(!b.join("notes/bad.json").exists());
    // Fixed, it syncs.
    write_json(&a.join("notes/bad.json"), &json!({ "text": "fixed" }));
    let report = sync_folder(&vibe_a, &a).await;
    assert_eq!(ids(&report, "pushed"), ["notes/bad"], "{report}");
    let report = sync_folder(&vibe_b, &b).await;
    assert_eq!(ids(&report, "pulled"), ["notes/bad"], "{report}");

    // Both folders now hold the same documents as the instance.
    let owner = Endpoint::from_cli(&vibe_a, &[]).await;
    let on_instance: Vec<String> = owner.all_docs().await.into_keys().collect();
    assert_eq!(on_instance, ["notes/bad", "notes/good", "notes/y"]);
    for folder in [&a, &b] {
        let mut files: Vec<String> = std::fs::read_dir(folder.join("notes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["bad.json", "good.json", "y.json"],
            "{}",
            folder.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vibe_sync_with_app_tokens_needs_the_sync_grant() {
    let (_stack, vibe) = claimed_stack().await;
    let dirs = tempfile::tempdir().unwrap();
    vibe.ok(&with_app(&[
        "put",
        "notes",
        r#"{"_id":"notes/n1","text":"hello"}"#,
    ]))
    .await;

    // An app without `sync`: refused with the instance's message, exit status 1, and
    // nothing written to the folder.
    vibe.ok(&["apps", "grant", "notes-only", "read:notes", "write:notes"])
        .await;
    let token = vibe.ok(&["apps", "token", "notes-only"]).await["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let refused_dir = dirs.path().join("refused");
    let refused = vibe
        .fails(&["--app-token", &token, "sync", refused_dir.to_str().unwrap()])
        .await;
    assert!(refused.contains("\"status\":403"), "{refused}");
    assert!(refused.contains("permission 'sync'"), "{refused}");
    assert!(!refused_dir.join("notes").exists());
    for args in [
        vec!["--app-token", token.as_str(), "sync", "--endpoint"],
        vec!["--app", "notes-only", "sync", "--endpoint"],
    ] {
        let refused = vibe.fails(&args).await;
        assert!(refused.contains("permission 'sync'"), "{args:?}: {refused}");
    }

    // With the grant, the same kind of token syncs.
    let token = vibe.ok(&["apps", "token", "devices-app"]).await["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let synced_dir = dirs.path().join("synced");
    let report = vibe
        .ok(&["--app-token", &token, "sync", synced_dir.to_str().unwrap()])
        .await;
    assert_eq!(ids(&report, "pulled"), ["notes/n1"], "{report}");
    assert_eq!(
        read_json(&synced_dir.join("notes/n1.json"))["text"],
        "hello"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_folder_sync_pulls_every_page_of_changes() {
    let (_stack, vibe) = claimed_stack().await;
    let docs: Vec<Value> = (0..450)
        .map(|i| json!({ "_id": format!("notes/n{i:04}"), "n": i }))
        .collect();
    vibe.ok(&with_app(&[
        "put",
        "notes",
        &Value::Array(docs).to_string(),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let report = sync_folder(&vibe, dir.path()).await;
    assert_eq!(ids(&report, "pulled").len(), 450, "pulled in one sync");
    assert_eq!(report["conflicts"], json!([]), "{report}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("notes")).unwrap().count(),
        450
    );
}

/// Successful `POST /api/v1/auth/refresh` calls the data plane counted (its metrics).
async fn refreshes(metrics: &str) -> u64 {
    let text = reqwest::get(metrics)
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("vibe_dataplane_http_request_duration_seconds_count{"))
        .filter(|l| l.contains("route=\"/api/v1/auth/refresh\"") && l.contains("status=\"200\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A PouchDB device registered once (`vibe devices add`) keeps syncing live, both ways,
/// across hours of token lifetimes: the instance runs with 3-second access tokens
/// (`VIBE_ACCESS_TOKEN_TTL_SECONDS`), so every `vibe` command refreshes its session and
/// each round stands for one or more 15-minute lifetimes; the run lasts until the tokens
/// of its start are long refused (lifetime plus the verifier's 30 s leeway). At the end
/// the device and the instance hold exactly the same documents, each once, at its first
/// revision, and no device request failed. Then `vibe devices revoke` cuts it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_pouchdb_device_syncs_across_dozens_of_token_refreshes() {
    const TTL_SECONDS: u64 = 3;
    let couch = vibe_test_support::CouchServer::start()
        .await
        .expect("CouchDB");
    let mut config = vibe_e2e::stack::DataPlaneConfig::claimable(&couch);
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    config.extra_env.extend([
        (
            "VIBE_ACCESS_TOKEN_TTL_SECONDS".to_string(),
            TTL_SECONDS.to_string(),
        ),
        ("VIBE_METRICS_ADDR".to_string(), metrics_addr.to_string()),
    ]);
    let metrics = format!("http://{metrics_addr}/metrics");
    let plane = vibe_e2e::stack::DataPlane::start(config)
        .await
        .expect("data plane");
    let vibe = VibeCli::new(&plane.url);
    vibe.ok(&["keygen"]).await;
    let code = plane.config.claim_code.clone().unwrap();
    vibe.ok(&["claim", "--code", &code]).await;
    vibe.ok(&["apps", "grant", "devices-app", "read:notes", "write:notes"])
        .await;
    // A bearer token of the start, to show later that its lifetime is long over.
    let first = Endpoint::from_cli(&vibe, &[]).await;
    let refreshed_before = refreshes(&metrics).await;

    let registered = vibe.ok(&["devices", "add", "phone"]).await;
    let endpoint = Endpoint {
        url: registered["syncUrl"].as_str().unwrap().to_string(),
        authorization: registered["authorization"].as_str().unwrap().to_string(),
    };
    assert!(endpoint.authorization.starts_with("Basic "), "{registered}");
    let mut device = Device::spawn("phone");
    device.start(&endpoint).await;

    let outlived = Duration::from_secs(TTL_SECONDS + 30 + 5);
    let started = std::time::Instant::now();
    let mut round = 0u64;
    while started.elapsed() < outlived {
        round += 1;
        // Instance → device.
        let id = format!("notes/from-cli-{round:03}");
        let written = vibe
            .ok(&with_app(&[
                "put",
                "notes",
                &json!({ "_id": id, "round": round }).to_string(),
            ]))
            .await;
        let rev = written["rev"].as_str().expect("rev").to_string();
        device.wait_rev(&id, &rev).await;
        // Device → instance, read back through the CLI.
        let id = format!("from-phone-{round:03}");
        device
            .put(json!({ "_id": format!("notes/{id}"), "collection": "notes", "round": round }))
            .await;
        let got = loop {
            let run = vibe.run(&with_app(&["get", "notes", &id])).await;
            if run.code == 0 {
                break run.json();
            }
            assert!(
                started.elapsed() < outlived + Duration::from_secs(60),
                "notes/{id} never reached the instance: {}",
                run.stderr
            );
        };
        assert_eq!(got["round"], round);
    }
    let cycles = refreshes(&metrics).await - refreshed_before;
    eprintln!(
        "{round} rounds in {:?}: {cycles} token refreshes of {TTL_SECONDS} s tokens \
         (= {:.1} h of 15-minute tokens)",
        started.elapsed(),
        cycles as f64 * 0.25
    );
    assert!(cycles >= 24, "only {cycles} refreshes");
    let (status, _) = first.get("").await;
    assert_eq!(status, 401, "a token of the start is long expired");

    // Nothing lost, nothing twice: the same documents on both sides, each at revision 1.
    let expected = 2 * round as usize;
    let local = device.wait_count(expected).await;
    let remote = endpoint.all_docs().await;
    let remote: BTreeMap<String, String> = remote
        .into_iter()
        .filter(|(id, _)| !id.starts_with("_design/"))
        .collect();
    assert_eq!(local, remote);
    assert_eq!(local.len(), expected);
    assert!(local.values().all(|rev| rev.starts_with("1-")), "{local:?}");
    let stats = device.stats().await;
    assert_eq!(device.failed_requests().await, 0, "{stats}");
    assert_eq!(stats["errors"], json!([]), "{stats}");
    assert_eq!(stats["denied"], json!([]), "{stats}");
    assert_eq!(stats["pausedWithError"], 0, "{stats}");

    // Revoked: the credentials stop working at once.
    let device_id = registered["deviceId"].as_str().unwrap();
    vibe.ok(&["devices", "revoke", device_id]).await;
    let (status, _) = endpoint.get("").await;
    assert_eq!(status, 401);
    let listed = vibe.ok(&["devices", "list"]).await;
    assert_eq!(listed["devices"], json!([]));
}

/// Issue 18: after `vibe migrate`, the owner's two PouchDB devices, re-pointed at the new
/// instance, keep syncing where they stopped — every document, revision and conflict is
/// there once, a change made offline before the move arrives, and new changes flow both
/// ways — with nothing duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pouchdb_devices_re_pointed_after_vibe_migrate_sync_without_duplicates() {
    let (old, vibe) = claimed_stack().await;
    let new = Stack::start(false).await.expect("the new instance");
    vibe.ok(&[
        "--instance",
        &new.dataplane.url,
        "claim",
        "--code",
        new.claim_code(),
    ])
    .await;

    // Two devices in sync with the old instance: notes from each, and one conflict.
    let old_owner = Endpoint::from_cli(&vibe, &["--instance", &old.dataplane.url]).await;
    let old_app = Endpoint::from_cli(
        &vibe,
        &["--instance", &old.dataplane.url, "--app", "devices-app"],
    )
    .await;
    let mut a = Device::spawn("A");
    let mut b = Device::spawn("B");
    tokio::join!(a.start(&old_owner), b.start(&old_app));
    write_notes(&mut a, "a", 3).await;
    write_notes(&mut b, "b", 2).await;
    let rev = a
        .put(json!({ "_id": "notes/shared", "collection": "notes", "text": "base" }))
        .await;
    let base = b.wait_rev("notes/shared", &rev).await;
    tokio::join!(a.stop(), b.stop());
    let mut on_a = base.clone();
    on_a["text"] = json!("A's version");
    let mut on_b = base.clone();
    on_b["text"] = json!("B's version");
    let rev_a = a.put(on_a).await;
    let rev_b = b.put(on_b).await;
    tokio::join!(a.start(&old_owner), b.start(&old_app));
    let leaves = [rev_a.as_str(), rev_b.as_str()];
    tokio::join!(
        a.wait_leaves("notes/shared", &leaves),
        b.wait_leaves("notes/shared", &leaves)
    );
    tokio::join!(a.wait_count(6), b.wait_count(6));
    tokio::join!(a.stop(), b.stop());
    let before = old_owner.all_docs().await;
    assert_eq!(before.len(), 6, "{before:?}");

    // Written on A while it is offline, before the move: only A has it.
    let offline_rev = a
        .put(json!({ "_id": "notes/offline", "collection": "notes", "text": "not synced yet" }))
        .await;

    // The move.
    let migrated = vibe
        .ok(&[
            "--instance",
            &old.dataplane.url,
            "migrate",
            "--to",
            &new.dataplane.url,
        ])
        .await;
    assert_eq!(migrated["verified"], true, "{migrated}");
    let new_owner = Endpoint::from_cli(&vibe, &["--instance", &new.dataplane.url]).await;
    assert_eq!(
        new_owner.all_docs().await,
        before,
        "the new instance holds every document at the same revision"
    );

    // Both devices re-pointed at the new instance (B still as the app, whose grants moved).
    let new_app = Endpoint::from_cli(
        &vibe,
        &["--instance", &new.dataplane.url, "--app", "devices-app"],
    )
    .await;
    tokio::join!(a.start(&new_owner), b.start(&new_app));
    b.wait_rev("notes/offline", &offline_rev).await;
    let rev = b
        .put(json!({ "_id": "notes/after-move", "collection": "notes", "text": "from B" }))
        .await;
    a.wait_rev("notes/after-move", &rev).await;

    // Nothing duplicated: the instance and both devices hold the same 8 documents at the
    // same winning revisions, and the conflict still has exactly its two leaves.
    let (docs_a, docs_b) = tokio::join!(a.wait_count(8), b.wait_count(8));
    let on_new = new_owner.all_docs().await;
    assert_eq!(on_new.len(), 8, "{on_new:?}");
    assert_eq!(docs_a, on_new);
    assert_eq!(docs_b, on_new);
    for (id, rev) in &before {
        assert_eq!(on_new.get(id), Some(rev), "{id} kept its revision");
    }
    let shared = new_owner.doc("notes/shared").await;
    assert_eq!(
        shared["_conflicts"].as_array().map(Vec::len),
        Some(1),
        "{shared}"
    );
    let mut shared_leaves = vec![shared["_rev"].as_str().unwrap().to_string()];
    shared_leaves.push(shared["_conflicts"][0].as_str().unwrap().to_string());
    shared_leaves.sort();
    let mut expected_leaves = vec![rev_a.clone(), rev_b.clone()];
    expected_leaves.sort();
    assert_eq!(shared_leaves, expected_leaves);
    for device in [&mut a, &mut b] {
        let stats = device.stats().await;
        assert_eq!(stats["errors"], json!([]), "{stats}");
        assert_eq!(stats["denied"], json!([]), "{stats}");
    }
}
