//! Shared steps of the end-to-end tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vibe_e2e::client::{Client, TokenSource};
use vibe_e2e::stack::Stack;
use vibe_identity::Keypair;

/// Claim the stack's instance with a new key and log in through the library.
pub async fn claim_and_login(stack: &Stack) -> (Keypair, Client) {
    let key = Keypair::generate();
    let instance = stack.instance();
    instance
        .claim(&key, stack.claim_code())
        .await
        .expect("claim with the instance's code");
    let tokens = instance.login(&key).await.expect("owner login");
    (key, Client::new(instance, TokenSource::session(tokens)))
}

/// Grant `permissions` (always) to `app` and return the owner client acting as it.
pub async fn app_with(owner: &Client, app: &str, permissions: &[&str]) -> Client {
    let permissions: Vec<String> = permissions.iter().map(|p| p.to_string()).collect();
    owner
        .set_grants(app, Some(app), &permissions, "always")
        .await
        .expect("grant");
    owner.as_app(app)
}

/// Poll `check` until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Unix mode bits of a file.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The `vibe` binary with its own config folder, pointed at one instance.
pub struct VibeCli {
    pub config: tempfile::TempDir,
    pub instance: String,
}

/// The result of one `vibe` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON (the command ran with --json).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

impl VibeCli {
    pub fn new(instance: &str) -> Self {
        Self {
            config: tempfile::tempdir().unwrap(),
            instance: instance.to_string(),
        }
    }

    pub fn key_path(&self) -> std::path::PathBuf {
        self.config.path().join("key.pem")
    }

    /// Run `vibe --json <args>` (with stdin from `input`).
    pub async fn run_with_input(&self, args: &[&str], input: Option<&str>) -> Run {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vibe"))
            .env_remove("VIBE_APP")
            .env_remove("VIBE_APP_TOKEN")
            .env("VIBE_CONFIG_DIR", self.config.path())
            .env("VIBE_INSTANCE", &self.instance)
            .env("VIBE_NO_PROGRESS", "1")
            .arg("--json")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run vibe");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).await.unwrap();
        }
        drop(stdin);
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("vibe finished within a minute")
            .unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, None).await
    }

    /// Run and require success; returns stdout JSON.
    pub async fn ok(&self, args: &[&str]) -> Value {
        let run = self.run(args).await;
        assert_eq!(
            run.code, 0,
            "vibe {args:?} failed\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        run.json()
    }

    /// Run and require failure (exit 1); returns stderr.
    pub async fn fails(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(
            run.code, 1,
            "vibe {args:?} should fail\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        run.stderr
    }
}
