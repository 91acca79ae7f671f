//! Shared steps of the end-to-end tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vibe_cli::client::{Client, TokenSource};
use vibe_e2e::stack::{DataPlane, Stack};
use vibe_identity::Keypair;

/// Runs the data plane's scheduled backup once, as the operator's CronJob does, into
/// `bucket` under `prefix`; checks that it succeeded and returns its report (one JSON line
/// on standard output) and the archive's object key.
pub async fn run_backup(dataplane: &DataPlane, bucket: &str, prefix: &str) -> (Value, String) {
    let backup = dataplane
        .run_subcommand(&["backup", "--bucket", bucket, "--prefix", prefix])
        .await
        .expect("run the backup");
    let report: Value = serde_json::from_slice(&backup.stdout).unwrap_or_else(|e| {
        panic!(
            "backup report ({e}): {}\n{}",
            String::from_utf8_lossy(&backup.stdout),
            String::from_utf8_lossy(&backup.stderr)
        )
    });
    assert!(backup.status.success(), "{report}");
    assert_eq!(report["outcome"], "Succeeded", "{report}");
    let key = report["objectKey"].as_str().expect("objectKey").to_string();
    (report, key)
}

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

    /// `vibe --json` with this config folder and instance, acting as the owner unless
    /// the caller sets `VIBE_APP`/`VIBE_APP_TOKEN`.
    fn command(&self) -> tokio::process::Command {
        let vibe = vibe_e2e::stack::vibe_binary().expect("build the vibe command");
        let mut command = tokio::process::Command::new(vibe);
        command
            .env_remove("VIBE_APP")
            .env_remove("VIBE_APP_TOKEN")
            .env("VIBE_CONFIG_DIR", self.config.path())
            .env("VIBE_INSTANCE", &self.instance)
            .env("VIBE_NO_PROGRESS", "1")
            .arg("--json");
        command
    }

    /// Run `vibe --json <args>` (with stdin from `input`).
    pub async fn run_with_input(&self, args: &[&str], input: Option<&str>) -> Run {
        use tokio::io::AsyncWriteExt;
        let mut child = self
            .command()
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

/// A long-running `vibe` child (such as `vibe watch`), its stdout and stderr read line
/// by line as they come. Killed when dropped.
pub struct VibeChild {
    child: tokio::process::Child,
    stdout: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Every line seen so far on either stream, for failure messages.
    transcript: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn forward_lines(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    label: &'static str,
    transcript: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use tokio::io::AsyncBufReadExt;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            transcript.lock().unwrap().push(format!("{label}: {line}"));
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl VibeCli {
    /// Start `vibe --json <args>` in the background with extra environment variables.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> VibeChild {
        let mut child = self
            .command()
            .envs(env.iter().copied())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start vibe");
        let transcript = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stdout = forward_lines(child.stdout.take().unwrap(), "stdout", transcript.clone());
        let stderr = forward_lines(child.stderr.take().unwrap(), "stderr", transcript.clone());
        VibeChild {
            child,
            stdout,
            stderr,
            transcript,
        }
    }
}

impl VibeChild {
    /// Everything printed so far, one `stdout: …` / `stderr: …` line each.
    pub fn transcript(&self) -> String {
        self.transcript.lock().unwrap().join("\n")
    }

    /// The next stdout line; panics (with the transcript) when none comes in `timeout`.
    pub async fn stdout_line(&mut self, timeout: Duration) -> String {
        match tokio::time::timeout(timeout, self.stdout.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("vibe closed its stdout\n{}", self.transcript()),
            Err(_) => panic!("no stdout line within {timeout:?}\n{}", self.transcript()),
        }
    }

    /// The next stdout line as JSON.
    pub async fn stdout_json(&mut self, timeout: Duration) -> Value {
        let line = self.stdout_line(timeout).await;
        serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "stdout line is not JSON ({e}): {line}\n{}",
                self.transcript()
            )
        })
    }

    /// Skip stderr lines until one contains `needle`, and return it; panics (with the
    /// transcript) when none does within `timeout`.
    pub async fn stderr_until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stderr.recv()).await {
                Ok(Some(line)) if line.contains(needle) => return line,
                Ok(Some(_)) => continue,
                Ok(None) => panic!(
                    "vibe closed its stderr before printing {needle:?}\n{}",
                    self.transcript()
                ),
                Err(_) => panic!(
                    "no stderr line with {needle:?} within {timeout:?}\n{}",
                    self.transcript()
                ),
            }
        }
    }

    /// Wait for the process to exit (at most `timeout`); returns its status and the
    /// output not consumed yet.
    pub async fn exit(mut self, timeout: Duration) -> Run {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for vibe"),
            Err(_) => panic!("vibe still runs after {timeout:?}\n{}", self.transcript()),
        };
        let mut stdout = Vec::new();
        while let Some(line) = self.stdout.recv().await {
            stdout.push(line);
        }
        let mut stderr = Vec::new();
        while let Some(line) = self.stderr.recv().await {
            stderr.push(line);
        }
        Run {
            code: status.code().unwrap_or(-1),
            stdout: stdout.join("\n"),
            stderr: stderr.join("\n"),
        }
    }
}
