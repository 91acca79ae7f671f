//! The `vibe-dataplane` binary's configuration surface: every setting is a clap flag with an
//! environment fallback, listed by `--help`; a bad value stops the start with a message
//! naming it. And `Config` values reach the routes (the realtime limits, here).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const APP: &str = "https://rt-config.example";

/// The realtime limits with their defaults, as documented in `dataplane/README.md`.
const WS_SETTINGS: [(&str, &str, &str); 6] = [
    ("VIBE_WS_AUTH_TIMEOUT_SECS", "--ws-auth-timeout-secs", "5"),
    (
        "VIBE_WS_PING_INTERVAL_SECS",
        "--ws-ping-interval-secs",
        "25",
    ),
    ("VIBE_WS_MAX_FRAME_BYTES", "--ws-max-frame-bytes", "16384"),
    (
        "VIBE_WS_MAX_MESSAGES_PER_SEC",
        "--ws-max-messages-per-sec",
        "20",
    ),
    ("VIBE_WS_MAX_SUBSCRIPTIONS", "--ws-max-subscriptions", "100"),
    ("VIBE_WS_BUFFER_EVENTS", "--ws-buffer-events", "1024"),
];

/// Run the binary with only `env` set (plus a minimal valid configuration unless `bare`).
fn run(args: &[&str], env: &[(&str, &str)], bare: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vibe-dataplane"));
    command.env_clear().args(args);
    if !bare {
        // The process must stop before it would connect to CouchDB.
        common::offline_binary_env(&mut command);
    }
    command.envs(env.iter().copied());
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("run vibe-dataplane");
    // A configuration it should refuse must not leave it serving: give it a minute (the machine may be busy).
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            child.kill().expect("kill");
            let out = child.wait_with_output().expect("output");
            panic!(
                "vibe-dataplane {args:?} with {env:?} is still running after 60 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn help_lists_the_realtime_limits_with_their_defaults() {
    let out = run(&["--help"], &[], true);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (env, flag, default) in WS_SETTINGS {
        let entry = help
            .split("\n  -")
            .chain(help.split("\n      --"))
            .find(|entry| entry.contains(&flag[2..]) && entry.contains(env))
            .unwrap_or_else(|| panic!("{flag} [env: {env}] missing from --help:\n{help}"));
        assert!(
            entry.contains(&format!("[default: {default}]")),
            "{flag}: default {default} not shown: {entry}"
        );
    }
}

#[test]
fn an_invalid_realtime_limit_stops_the_start_naming_it() {
    // Not a number: clap refuses it, naming the flag and the value.
    let out = run(&[], &[("VIBE_WS_MAX_FRAME_BYTES", "lots")], false);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--ws-max-frame-bytes") && stderr.contains("lots"),
        "{stderr}"
    );
    // A number out of range: one line naming the variable.
    for (env, value, problem) in [
        ("VIBE_WS_PING_INTERVAL_SECS", "0", "must be at least 1"),
        ("VIBE_WS_MAX_FRAME_BYTES", "100", "must be at least 256"),
        ("VIBE_WS_BUFFER_EVENTS", "2", "must be at least 16"),
    ] {
        let out = run(&[], &[(env, value)], false);
        assert_eq!(out.status.code(), Some(2), "{env}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.trim(),
            format!("vibe-dataplane: configuration error: {env}: {problem}")
        );
    }
}

#[tokio::test]
async fn realtime_limits_from_config_reach_the_websocket_endpoint() {
    // A 1 KiB frame is fine under the default 16 KiB limit (it gets an answer), and closes
    // the socket with 1009 (message too big) when the configuration lowers the limit to
    // 256 bytes.
    async fn close_code_after_a_large_frame(instance: &common::TestInstance) -> Option<u16> {
        let token = instance.owner_token().await;
        instance
            .upsert_app(&token, APP, &[("read:notes", "always")])
            .await;
        let url = instance
            .url(&format!("/ws?token={token}&appId={APP}"))
            .replacen("http://", "ws://", 1);
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let frame = serde_json::json!({"action": "subscribe", "collection": "x".repeat(1024)});
        ws.send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
        loop {
            let next = tokio::time::timeout(Duration::from_secs(15), ws.next())
                .await
                .expect("an answer within the wait");
            match next {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(Message::Text(text))) if !text.contains("authenticated") => return None,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    let lowered = common::TestInstance::start_with(|config| {
        config.realtime.max_frame_bytes = 256;
    })
    .await;
    assert_eq!(close_code_after_a_large_frame(&lowered).await, Some(1009));
    let default = common::TestInstance::start().await;
    assert_eq!(close_code_after_a_large_frame(&default).await, None);
}

#[test]
fn help_lists_the_http_timeouts_and_a_bad_one_stops_the_start() {
    let out = run(&["--help"], &[], true);
    let help = String::from_utf8(out.stdout).unwrap();
    for (env, flag, default) in [
        (
            "VIBE_HTTP_IDLE_TIMEOUT_SECS",
            "--http-idle-timeout-secs",
            "75",
        ),
        (
            "VIBE_HTTP_HEADER_READ_TIMEOUT_SECS",
            "--http-header-read-timeout-secs",
            "10",
        ),
    ] {
        let entry = help
            .split("\n      --")
            .find(|entry| entry.contains(&flag[2..]) && entry.contains(env))
            .unwrap_or_else(|| panic!("{flag} [env: {env}] missing from --help:\n{help}"));
        assert!(entry.contains(&format!("[default: {default}]")), "{entry}");
        let out = run(&[], &[(env, "0")], false);
        assert_eq!(out.status.code(), Some(2), "{env}=0");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            format!(
                "vibe-dataplane: configuration error: {env}: must be between 1 and 3600 seconds"
            )
        );
    }
}

#[test]
fn help_lists_the_access_token_lifetime_and_a_bad_one_stops_the_start() {
    let out = run(&["--help"], &[], true);
    let help = String::from_utf8(out.stdout).unwrap();
    let entry = help
        .split("\n      --")
        .find(|entry| {
            entry.starts_with("access-token-ttl-seconds")
                && entry.contains("VIBE_ACCESS_TOKEN_TTL_SECONDS")
        })
        .unwrap_or_else(|| panic!("--access-token-ttl-seconds missing from --help:\n{help}"));
    assert!(entry.contains("[default: 900]"), "{entry}");
    for bad in ["0", "86401"] {
        let out = run(&[], &[("VIBE_ACCESS_TOKEN_TTL_SECONDS", bad)], false);
        assert_eq!(
            out.status.code(),
            Some(2),
            "VIBE_ACCESS_TOKEN_TTL_SECONDS={bad}"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            "vibe-dataplane: configuration error: VIBE_ACCESS_TOKEN_TTL_SECONDS: must be between 1 and 86400 seconds"
        );
    }
}
