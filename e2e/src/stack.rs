//! Real stacks for the end-to-end suite and the benchmarks: the BUILT `vibe-dataplane`
//! binary run as a process, against the real CouchDB- and S3-compatible servers that
//! `vibe-test-support` starts (or an existing CouchDB through its `VIBE_TEST_COUCHDB_URL`
//! switch).
//!
//! The binary is found next to the running executable in the cargo target folder (or at
//! `$VIBE_DATAPLANE_BIN`) and built first with `cargo build -p vibe-dataplane` in the
//! same profile, so tests never run a stale data plane. The `vibe` command, which the
//! suite also drives as a process, is found the same way ([`vibe_binary`],
//! `$VIBE_BIN_VIBE`, `cargo build -p vibe-cli`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use vibe_api::dataplane_env as env;
use vibe_identity::Keypair;
use vibe_test_support::{CouchServer, S3Server, SupportError};

use vibe_cli::client::Instance;

/// Environment variable naming a prebuilt `vibe-dataplane` binary to use instead.
pub const DATAPLANE_BIN_ENV: &str = "VIBE_DATAPLANE_BIN";

/// Environment variable naming a prebuilt `vibe` binary to use instead (the name
/// `deploy/local/test` gives the workspace's `vibe` binary).
pub const VIBE_BIN_ENV: &str = "VIBE_BIN_VIBE";

/// A problem starting or driving a stack.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A test server failed.
    #[error(transparent)]
    Support(#[from] SupportError),
    /// Building a workspace binary (the data plane, the `vibe` command) failed.
    #[error("building a workspace binary failed: {0}")]
    Build(String),
    /// The data plane did not start or answer.
    #[error("vibe-dataplane: {problem}\n--- log tail ({log}) ---\n{tail}")]
    DataPlane {
        /// What went wrong.
        problem: String,
        /// Log file.
        log: String,
        /// Its last lines.
        tail: String,
    },
    /// A local I/O problem.
    #[error("{0}")]
    Io(String),
}

/// S3 settings handed to the data plane.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Endpoint URL.
    pub endpoint: String,
    /// Access key.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
    /// Region.
    pub region: String,
    /// Bucket.
    pub bucket: String,
}

/// How to run one data plane (the env contract of `vibe-dataplane --help`).
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    /// `COUCHDB_URL`.
    pub couch_url: String,
    /// `COUCHDB_USER`.
    pub couch_user: String,
    /// `COUCHDB_PASSWORD`.
    pub couch_password: String,
    /// Token-signing key (`VIBE_SIGNING_KEY`).
    pub signing_key: Keypair,
    /// `VIBE_CLAIM_CODE`.
    pub claim_code: Option<String>,
    /// `TARGET_USER_DID`.
    pub owner: Option<String>,
    /// `VIBE_SYSTEM_DB`.
    pub system_db: String,
    /// `VIBE_DB_PREFIX`: the CouchDB test server's prefix, so an existing CouchDB shared by
    /// several tests keeps them apart and the server's clean-up finds every database.
    pub db_prefix: String,
    /// `PUBLIC_INSTANCE_URL`; default `http://127.0.0.1:<port>`.
    pub public_url: Option<String>,
    /// S3, when blobs are wanted.
    pub s3: Option<S3Settings>,
    /// Anything else (`RUST_LOG`, limits, …).
    pub extra_env: Vec<(String, String)>,
}

impl DataPlaneConfig {
    /// A claimable instance on `couch` with a fresh signing key and claim code.
    pub fn claimable(couch: &CouchServer) -> Self {
        Self {
            couch_url: couch.url.clone(),
            couch_user: couch.user.clone(),
            couch_password: couch.password.clone(),
            signing_key: Keypair::generate(),
            claim_code: Some(format!("claim-{}", random_suffix())),
            owner: None,
            system_db: format!("vibe_system_{}", random_suffix()),
            db_prefix: couch.db_prefix().to_string(),
            public_url: None,
            s3: None,
            extra_env: Vec::new(),
        }
    }
}

fn random_suffix() -> String {
    let key = Keypair::generate();
    hex::encode(&key.seed()[..6])
}

/// A running `vibe-dataplane` process.
pub struct DataPlane {
    /// Its configuration.
    pub config: DataPlaneConfig,
    /// Base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    port: u16,
    /// How long the last start took, from spawning the process to the first `/health` 200.
    pub started_in: Duration,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl DataPlane {
    /// Build (if needed) and start a data plane; returns once `/health` answers.
    pub async fn start(config: DataPlaneConfig) -> Result<Self, StackError> {
        let dir = tempfile::Builder::new()
            .prefix("vibe-dataplane-")
            .tempdir()
            .map_err(|e| StackError::Io(format!("temporary folder: {e}")))?;
        let port = free_port()?;
        let mut plane = Self {
            url: format!("http://127.0.0.1:{port}"),
            config,
            port,
            started_in: Duration::ZERO,
            child: None,
            log: dir.path().join("dataplane.log"),
            _dir: dir,
        };
        plane.spawn().await?;
        Ok(plane)
    }

    /// An [`Instance`] client for it.
    pub fn instance(&self) -> Instance {
        Instance::new(&self.url).expect("the harness URL is valid")
    }

    /// The public URL the instance uses as token issuer/audience.
    pub fn public_url(&self) -> String {
        self.config
            .public_url
            .clone()
            .unwrap_or_else(|| self.url.clone())
    }

    /// The data plane binary with this instance's environment (its CouchDB, S3, keys and
    /// claim), not yet told what to run.
    fn command(&self, binary: &Path) -> Command {
        let c = &self.config;
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(env::PUBLIC_INSTANCE_URL, self.public_url())
            .env(env::COUCHDB_URL, &c.couch_url)
            .env(env::COUCHDB_USER, &c.couch_user)
            .env(env::COUCHDB_PASSWORD, &c.couch_password)
            .env(env::VIBE_SIGNING_KEY, c.signing_key.seed_base64())
            .env(env::VIBE_SYSTEM_DB, &c.system_db)
            .env(env::VIBE_DB_PREFIX, &c.db_prefix)
            .env(
                "RUST_LOG",
                std::env::var("VIBE_E2E_DATAPLANE_LOG").unwrap_or_else(|_| "info".into()),
            );
        if let Some(code) = &c.claim_code {
            command.env(env::VIBE_CLAIM_CODE, code);
        }
        if let Some(owner) = &c.owner {
            command.env(env::TARGET_USER_DID, owner);
        }
        if let Some(s3) = &c.s3 {
            command
                .env(env::S3_ENDPOINT, &s3.endpoint)
                .env(env::S3_ACCESS_KEY, &s3.access_key)
                .env(env::S3_SECRET_KEY, &s3.secret_key)
                .env(env::S3_REGION, &s3.region)
                .env(env::S3_BUCKET_NAME, &s3.bucket)
                .env(env::S3_FORCE_PATH_STYLE, "true");
        }
        for (name, value) in &c.extra_env {
            command.env(name, value);
        }
        command
    }

    /// Runs a one-shot subcommand of the data plane binary (e.g. `backup --bucket B`) with
    /// this instance's environment, as the operator's CronJob does beside the running data
    /// plane, and returns what it printed and its exit status.
    pub async fn run_subcommand(&self, args: &[&str]) -> Result<std::process::Output, StackError> {
        let binary = dataplane_binary()?;
        self.command(&binary)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| StackError::Io(format!("{}: {e}", binary.display())))
    }

    async fn spawn(&mut self) -> Result<(), StackError> {
        let binary = dataplane_binary()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| StackError::Io(format!("{}: {e}", self.log.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| StackError::Io(format!("{}: {e}", self.log.display())))?;
        let mut command = self.command(&binary);
        command
            .env(env::HOST, "127.0.0.1")
            .env(env::PORT, self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| StackError::DataPlane {
            problem: format!("cannot start {}: {e}", binary.display()),
            log: self.log.display().to_string(),
            tail: String::new(),
        })?;
        self.child = Some(child);
        let started = Instant::now();
        self.wait_healthy(Duration::from_secs(30)).await?;
        self.started_in = started.elapsed();
        Ok(())
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<(), StackError> {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.failure(format!("exited at start ({status})")));
            }
            let health = http
                .get(format!("{}/health", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(self.failure(format!("no /health answer within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn failure(&self, problem: String) -> StackError {
        StackError::DataPlane {
            problem,
            log: self.log.display().to_string(),
            tail: self.log_tail(),
        }
    }

    /// The last 40 lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Resident memory in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid()?, "VmRSS:")
    }

    /// Peak resident memory in KiB since start (Linux `/proc`).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid()?, "VmHWM:")
    }

    /// Graceful stop: SIGTERM, then SIGKILL after 10 s. Returns the exit status when the
    /// process ended by itself after SIGTERM (`None`: it was not running, or had to be
    /// killed).
    pub async fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// Kill at once (a crash, as far as the data plane can tell).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Stop and start again with the same port and configuration.
    pub async fn restart(&mut self) -> Result<(), StackError> {
        self.stop().await;
        self.spawn().await
    }
}

/// A `kB` field (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn free_port() -> Result<u16, StackError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StackError::Io(format!("no free port: {e}")))
}

/// The workspace root (this crate's parent folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lies inside the workspace")
        .to_path_buf()
}

/// The cargo profile folder of the running executable (`…/target/debug` for tests,
/// `…/target/release` for `cargo run --release`).
fn profile_dir() -> Result<PathBuf, StackError> {
    let exe = std::env::current_exe().map_err(|e| StackError::Io(e.to_string()))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| StackError::Io("executable has no folder".into()))?
        .to_path_buf();
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.pop();
    }
    Ok(dir)
}

/// Whether `name` is one of the variables cargo sets for the crate it runs (not cargo's
/// own configuration such as `CARGO_HOME` or `CARGO_BUILD_*`).
fn is_package_env(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// Path of a fresh `vibe-dataplane` binary, building it once per process.
pub fn dataplane_binary() -> Result<PathBuf, StackError> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    workspace_binary(
        &BUILT,
        DATAPLANE_BIN_ENV,
        "vibe-dataplane",
        "vibe-dataplane",
    )
}

/// Path of a fresh `vibe` command line binary (crate `vibe-cli`), building it once per
/// process.
pub fn vibe_binary() -> Result<PathBuf, StackError> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    workspace_binary(&BUILT, VIBE_BIN_ENV, "vibe-cli", "vibe")
}

/// `$override_env` when set, else `bin` of `package` built once (per `built`) in the
/// running executable's target folder and profile.
fn workspace_binary(
    built: &OnceLock<Result<PathBuf, String>>,
    override_env: &str,
    package: &str,
    bin: &str,
) -> Result<PathBuf, StackError> {
    if let Some(path) = std::env::var_os(override_env).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    built
        .get_or_init(|| build_binary(package, bin).map_err(|e| e.to_string()))
        .clone()
        .map_err(StackError::Build)
}

fn build_binary(package: &str, bin: &str) -> Result<PathBuf, StackError> {
    let profile_dir = profile_dir()?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| StackError::Io("profile folder has no parent".into()))?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    // Cargo sets CARGO_MANIFEST_DIR, CARGO_PKG_* … for the test or bench running us.
    // Passed on, they change the fingerprints of build scripts that watch them (ring's
    // does), so every test run would rebuild the TLS stack and the data plane, and so
    // would the next ordinary build.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_package_env) {
            command.env_remove(name);
        }
    }
    command
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["build", "--quiet", "-p", package, "--bin", bin]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let output = command
        .output()
        .map_err(|e| StackError::Build(format!("cannot run cargo: {e}")))?;
    if !output.status.success() {
        return Err(StackError::Build(format!(
            "{bin}: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let binary = profile_dir.join(bin);
    if binary.exists() {
        Ok(binary)
    } else {
        Err(StackError::Build(format!(
            "{} missing after the build",
            binary.display()
        )))
    }
}

/// CouchDB, optionally S3, and one claimable data plane.
pub struct Stack {
    /// The data plane.
    pub dataplane: DataPlane,
    /// The S3-compatible server, when started.
    pub s3: Option<S3Server>,
    /// The CouchDB-compatible server.
    pub couch: CouchServer,
}

impl Stack {
    /// Start CouchDB and a claimable data plane (plus S3 with a bucket when `with_s3`).
    pub async fn start(with_s3: bool) -> Result<Self, StackError> {
        let couch = CouchServer::start().await?;
        let mut config = DataPlaneConfig::claimable(&couch);
        let s3 = if with_s3 {
            let s3 = S3Server::start().await?;
            let bucket = format!("vibe-{}", random_suffix());
            s3.create_bucket(&bucket).await?;
            config.s3 = Some(S3Settings {
                endpoint: s3.endpoint.clone(),
                access_key: s3.access_key.clone(),
                secret_key: s3.secret_key.clone(),
                region: s3.region.clone(),
                bucket,
            });
            Some(s3)
        } else {
            None
        };
        let dataplane = DataPlane::start(config).await?;
        Ok(Self {
            dataplane,
            s3,
            couch,
        })
    }

    /// The data plane's claim code.
    pub fn claim_code(&self) -> &str {
        self.dataplane
            .config
            .claim_code
            .as_deref()
            .expect("stacks start claimable")
    }

    /// A client for the data plane.
    pub fn instance(&self) -> Instance {
        self.dataplane.instance()
    }
}

#[cfg(test)]
mod tests {
    use super::is_package_env;

    #[test]
    fn only_the_running_crates_variables_are_dropped_from_the_nested_build() {
        for dropped in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_BIN_EXE_vibe",
            "CARGO_CRATE_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
        ] {
            assert!(is_package_env(dropped), "{dropped}");
        }
        for kept in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_NET_OFFLINE",
            "PATH",
        ] {
            assert!(!is_package_env(kept), "{kept}");
        }
    }
}
