//! `vibe console` against the built data plane: it signs in with the owner's key when
//! there is no session, prints a one-time console link for this instance, and the link's
//! code is exchanged once, never twice, and never appears in the instance's log (issue 19).

mod common;

use common::VibeCli;
use vibe_e2e::stack::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vibe_console_prints_a_one_time_link() {
    let stack = Stack::start(false).await.expect("stack");
    let vibe = VibeCli::new(&stack.dataplane.url);
    vibe.ok(&["keygen"]).await;
    vibe.ok(&["claim", "--code", stack.claim_code()]).await;
    // No session: `vibe console` logs in with the key by itself.
    vibe.ok(&["logout"]).await;

    let link = vibe.ok(&["console"]).await;
    let url = link["url"].as_str().unwrap().to_string();
    let base = stack.dataplane.url.trim_end_matches('/');
    let code = url
        .strip_prefix(&format!("{base}/console/#code="))
        .unwrap_or_else(|| panic!("{url} is not this instance's console link"));
    assert_eq!(link["opened"], false);
    let lifetime = link["expiresAt"].as_i64().unwrap() - chrono::Utc::now().timestamp();
    assert!((100..=120).contains(&lifetime), "{lifetime}");

    let instance = stack.instance();
    let tokens = instance
        .console_session(code)
        .await
        .expect("first exchange");
    assert!(!tokens.access_token.is_empty());
    let reused = instance.console_session(code).await.unwrap_err();
    assert_eq!(reused.status(), Some(401), "{reused}");
    // The instance logs what happened, never the code or the tokens.
    let log = stack.dataplane.log_tail();
    assert!(log.contains("console session started"), "{log}");
    for secret in [code, &tokens.access_token, &tokens.refresh_token] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }

    // --ttl bounds the link's life; out of range is a usage error.
    let short = vibe.ok(&["console", "--ttl", "30"]).await;
    let lifetime = short["expiresAt"].as_i64().unwrap() - chrono::Utc::now().timestamp();
    assert!((20..=30).contains(&lifetime), "{lifetime}");
    let run = vibe.run(&["console", "--ttl", "601"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
}
