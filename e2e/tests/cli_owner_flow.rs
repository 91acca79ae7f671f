//! The `vibe` binary against the built data plane and a real CouchDB-compatible server:
//! keygen → claim → login → grant an app → documents create/read/find/update/delete →
//! grant revocation → app tokens → logout.

mod common;

use common::{VibeCli, mode};
use serde_json::json;
use vibe_e2e::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_runs_an_instance_with_the_cli() {
    let stack = Stack::start(false).await.expect("stack");
    let vibe = VibeCli::new(&stack.dataplane.url);

    // keygen: prints the DID, stores the key privately, refuses to overwrite.
    let keygen = vibe.ok(&["keygen"]).await;
    let did = keygen["did"].as_str().unwrap().to_string();
    assert!(did.starts_with("did:vibe:z6Mk"), "{did}");
    assert_eq!(mode(&vibe.key_path()), 0o600);
    let again = vibe.fails(&["keygen"]).await;
    assert!(again.contains("--force"), "{again}");

    // Data commands before login say what to do.
    let early = vibe
        .fails(&["--app", "notes-app", "get", "notes", "x"])
        .await;
    assert!(early.contains("vibe login"), "{early}");

    // claim: a wrong code is refused with the instance's message; the right one works
    // and logs in.
    let wrong = vibe
        .fails(&["claim", "--code", "not-the-code-at-all"])
        .await;
    assert!(wrong.contains("Invalid or unknown claim code."), "{wrong}");
    assert!(wrong.contains("\"status\":400"), "{wrong}");
    let claimed = vibe.ok(&["claim", "--code", stack.claim_code()]).await;
    assert_eq!(claimed["did"], did.as_str());
    let sessions = vibe.config.path().join("sessions.json");
    assert_eq!(mode(&sessions), 0o600);
    // Claimed: any further claim, with the spent code too, is over (409).
    let used = vibe.fails(&["claim", "--code", stack.claim_code()]).await;
    assert!(
        used.contains("This instance already has an owner."),
        "{used}"
    );
    assert!(used.contains("\"status\":409"), "{used}");

    // login again (a fresh session) and whoami.
    let login = vibe.ok(&["login"]).await;
    assert_eq!(login["did"], did.as_str());
    let whoami = vibe.ok(&["whoami"]).await;
    assert_eq!(whoami["did"], did.as_str());
    assert_eq!(whoami["sessions"][0]["default"], true);
    let status = vibe.ok(&["status"]).await;
    assert_eq!(status["health"]["status"], "ok");
    assert_eq!(status["ready"]["ready"], true);

    // grant an app.
    let granted = vibe
        .ok(&[
            "apps",
            "grant",
            "notes-app",
            "read:notes",
            "write:notes",
            "--name",
            "Notes",
        ])
        .await;
    assert_eq!(granted["grants"]["read:notes"], "always");
    assert_eq!(granted["grants"]["write:notes"], "always");
    let listed = vibe.ok(&["apps", "list"]).await;
    assert!(listed.to_string().contains("notes-app"), "{listed}");
    let bad_permission = vibe
        .fails(&["apps", "grant", "notes-app", "delete:everything"])
        .await;
    assert!(
        bad_permission.contains("is not a permission"),
        "{bad_permission}"
    );

    // documents: create, read, find, update, stale update, bulk, delete.
    let app = ["--app", "notes-app"];
    let args = |rest: &[&'static str]| -> Vec<&'static str> {
        let mut all: Vec<&'static str> = app.to_vec();
        all.extend_from_slice(rest);
        all
    };
    let created = vibe
        .ok(&args(&["put", "notes", r#"{"title":"hello","n":1}"#]))
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let rev1 = created["rev"].as_str().unwrap().to_string();
    assert!(id.starts_with("notes/"), "{id}");

    let key = id.strip_prefix("notes/").unwrap().to_string();
    let read = vibe.ok(&[app[0], app[1], "get", "notes", &key]).await;
    assert_eq!(read["title"], "hello");
    assert_eq!(read["_rev"], rev1.as_str());
    let by_full_id = vibe.ok(&[app[0], app[1], "get", "notes", &id]).await;
    assert_eq!(by_full_id["_id"], id.as_str());

    let found = vibe
        .ok(&args(&[
            "find",
            "notes",
            "--filter",
            r#"{"title":"hello"}"#,
        ]))
        .await;
    assert_eq!(found["docs"].as_array().unwrap().len(), 1);
    assert_eq!(found["docs"][0]["_id"], id.as_str());

    let update = json!({"_id": id, "_rev": rev1, "title": "hello again", "n": 2}).to_string();
    let updated = vibe.ok(&[app[0], app[1], "put", "notes", &update]).await;
    let rev2 = updated["rev"].as_str().unwrap().to_string();
    assert_ne!(rev2, rev1);
    let stale = vibe.fails(&[app[0], app[1], "put", "notes", &update]).await;
    assert!(
        stale.contains("409") && stale.contains("Revision conflict"),
        "{stale}"
    );

    // stdin and bulk.
    let bulk = vibe
        .run_with_input(
            &[app[0], app[1], "put", "notes", "-"],
            Some(r#"[{"title":"a"},{"title":"b"},{"title":"c"}]"#),
        )
        .await;
    assert_eq!(bulk.code, 0, "{}", bulk.stderr);
    let bulk = bulk.json();
    assert_eq!(bulk["results"].as_array().unwrap().len(), 3);
    // --all prints one JSON page per line.
    let pages = vibe
        .run(&args(&["find", "notes", "--all", "--limit", "2"]))
        .await;
    let total: usize = pages
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["docs"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(total, 4, "{}", pages.stdout);

    vibe.ok(&[app[0], app[1], "delete", "notes", &key]).await;
    let gone = vibe.fails(&[app[0], app[1], "get", "notes", &key]).await;
    assert!(gone.contains("404"), "{gone}");

    // an app without grants is refused; a revoked grant is refused on the next request.
    let other = vibe
        .fails(&["--app", "other-app", "put", "notes", r#"{"title":"x"}"#])
        .await;
    assert!(other.contains("403"), "{other}");
    vibe.ok(&["apps", "revoke", "notes-app", "write:notes"])
        .await;
    let revoked = vibe
        .fails(&args(&["put", "notes", r#"{"title":"after revoke"}"#]))
        .await;
    assert!(
        revoked.contains("403") && revoked.contains("write:notes"),
        "{revoked}"
    );
    // reading is still granted.
    vibe.ok(&args(&["find", "notes"])).await;

    // app tokens act as their app only.
    let token = vibe.ok(&["apps", "token", "notes-app"]).await;
    let token = token["accessToken"].as_str().unwrap().to_string();
    let as_app = vibe.ok(&["--app-token", &token, "find", "notes"]).await;
    assert_eq!(as_app["docs"].as_array().unwrap().len(), 3);
    let impersonation = vibe
        .fails(&["--app-token", &token, "--app", "other-app", "find", "notes"])
        .await;
    assert!(impersonation.contains("403"), "{impersonation}");

    // logout revokes the session and forgets it.
    vibe.ok(&["logout"]).await;
    let after = vibe.fails(&["apps", "list"]).await;
    assert!(after.contains("not logged in"), "{after}");
}
