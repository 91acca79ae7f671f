//! An S3-compatible server (s3s-fs) for one test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use tempfile::TempDir;

use crate::ports::{restart_on_port, start_on_free_port};
use crate::process::ServerProcess;
use crate::{SupportError, binaries, random_hex};

const SERVER: &str = "s3s-fs";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// An s3s-fs server on 127.0.0.1 that checks SigV4 signatures (including presigned URLs)
/// against its own random key pair. Objects live in a temporary folder, one sub-folder per
/// bucket, so [`S3Server::restart`] keeps them. Dropping the value kills the server and deletes
/// the folder.
#[derive(Debug)]
pub struct S3Server {
    /// Endpoint URL, e.g. `http://127.0.0.1:23456` (use path-style addressing).
    pub endpoint: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Region to sign for (the server accepts any; this is what the helpers use).
    pub region: String,
    port: u16,
    bin: PathBuf,
    // Declared before `dir`: the process must be dead before its folder is deleted.
    process: ServerProcess,
    dir: TempDir,
}

impl S3Server {
    /// Starts a fresh server on a free port and waits until it accepts a signed request.
    pub async fn start() -> Result<Self, SupportError> {
        let bin = binaries::s3s_fs()?;
        let dir = tempfile::Builder::new()
            .prefix("vibe-s3-")
            .tempdir()
            .map_err(SupportError::io("create a temporary folder"))?;
        std::fs::create_dir_all(dir.path().join("data"))
            .map_err(SupportError::io("create the data folder"))?;
        let access_key = format!("VIBE{}", random_hex(8).to_uppercase());
        let secret_key = random_hex(20);
        let region = "us-east-1".to_string();

        let (port, endpoint, process) = start_on_free_port(async |port| {
            let endpoint = format!("http://127.0.0.1:{port}");
            let probe = client_for(&endpoint, &access_key, &secret_key, &region);
            let mut process = spawn(&bin, dir.path(), port, &access_key, &secret_key)?;
            process
                .wait_ready(START_TIMEOUT, || answers(&probe))
                .await?;
            Ok((port, endpoint, process))
        })
        .await?;
        tracing::info!(%endpoint, "s3s-fs ready");
        Ok(Self {
            endpoint,
            access_key,
            secret_key,
            region,
            port,
            bin,
            process,
            dir,
        })
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after a grace period). Objects stay.
    pub async fn stop(&mut self) {
        self.process.stop(STOP_GRACE).await;
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again (stopping it first if it runs) on the same port with the same
    /// objects and keys, and waits until it answers.
    pub async fn restart(&mut self) -> Result<(), SupportError> {
        self.stop().await;
        let probe = self.client();
        // The port is ours, but another test may grab it while we are down.
        self.process = restart_on_port(async || {
            let mut process = spawn(
                &self.bin,
                self.dir.path(),
                self.port,
                &self.access_key,
                &self.secret_key,
            )?;
            process
                .wait_ready(START_TIMEOUT, || answers(&probe))
                .await?;
            Ok(process)
        })
        .await?;
        Ok(())
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.check_alive().is_ok()
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The port, fixed for the life of this value.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder holding the server's objects (`data/<bucket>/…`) and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file the server's output goes to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// An `aws-sdk-s3` client for this server (path-style, static keys, no retries).
    pub fn client(&self) -> aws_sdk_s3::Client {
        client_for(
            &self.endpoint,
            &self.access_key,
            &self.secret_key,
            &self.region,
        )
    }

    /// Creates bucket `name`.
    pub async fn create_bucket(&self, name: &str) -> Result<(), SupportError> {
        self.client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .map_err(|e| SupportError::Request {
                server: SERVER,
                message: format!(
                    "create bucket {name}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ),
            })?;
        Ok(())
    }
}

fn client_for(
    endpoint: &str,
    access_key: &str,
    secret_key: &str,
    region: &str,
) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "vibe-test-support",
        ))
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn spawn(
    bin: &Path,
    dir: &Path,
    port: u16,
    access_key: &str,
    secret_key: &str,
) -> Result<ServerProcess, SupportError> {
    // Always pass keys: without them s3s-fs refuses every signed request.
    let args = [
        "--host".to_string(),
        "127.0.0.1".to_string(),
        "--port".to_string(),
        port.to_string(),
        "--access-key".to_string(),
        access_key.to_string(),
        "--secret-key".to_string(),
        secret_key.to_string(),
        dir.join("data").display().to_string(),
    ];
    ServerProcess::spawn(SERVER, bin, &args, &[], dir, &dir.join("server.log"))
}

/// True when the server accepts a request signed with our keys (so it is ours).
async fn answers(client: &aws_sdk_s3::Client) -> bool {
    tokio::time::timeout(Duration::from_secs(2), client.list_buckets().send())
        .await
        .is_ok_and(|result| result.is_ok())
}
