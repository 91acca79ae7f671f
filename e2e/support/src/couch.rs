//! A CouchDB-compatible server (pouchdb-server) for one test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use tempfile::TempDir;

use crate::ports::{restart_on_port, start_on_free_port};
use crate::process::ServerProcess;
use crate::{SupportError, binaries, random_hex};

const SERVER: &str = "pouchdb-server";
const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A pouchdb-server on 127.0.0.1 with its own data folder and a server admin (it is never an
/// "admin party": anonymous clients cannot create databases or change configuration).
///
/// Data lives on disk (LevelDB), so [`CouchServer::restart`] keeps every database. Dropping the
/// value kills the server and deletes the folder.
#[derive(Debug)]
pub struct CouchServer {
    /// Base URL without credentials, e.g. `http://127.0.0.1:23456`.
    pub url: String,
    /// The server admin's name.
    pub user: String,
    /// The server admin's password.
    pub password: String,
    port: u16,
    bin: PathBuf,
    http: reqwest::Client,
    // Declared before `dir`: the process must be dead before its folder is deleted.
    process: ServerProcess,
    dir: TempDir,
}

impl CouchServer {
    /// Starts a fresh server on a free port and waits until it accepts the admin's credentials.
    pub async fn start() -> Result<Self, SupportError> {
        let bin = binaries::pouchdb_server()?;
        let dir = tempfile::Builder::new()
            .prefix("vibe-couch-")
            .tempdir()
            .map_err(SupportError::io("create a temporary folder"))?;
        std::fs::create_dir_all(dir.path().join("data"))
            .map_err(SupportError::io("create the data folder"))?;
        let user = "admin".to_string();
        let password = random_hex(24);
        // pouchdb-server reads admins from its config file and hashes plain-text passwords
        // at start-up, like CouchDB's local.ini, so there is no moment without an admin.
        let config = serde_json::json!({ "admins": { &user: &password } });
        std::fs::write(dir.path().join("config.json"), config.to_string())
            .map_err(SupportError::io("write config.json"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| SupportError::Request {
                server: SERVER,
                message: e.to_string(),
            })?;

        let (port, url, process) = start_on_free_port(async |port| {
            let mut process = spawn(&bin, dir.path(), port)?;
            let url = format!("http://127.0.0.1:{port}");
            process
                .wait_ready(START_TIMEOUT, || answers(&http, &url, &user, &password))
                .await?;
            Ok((port, url, process))
        })
        .await?;
        tracing::info!(%url, "pouchdb-server ready");
        Ok(Self {
            url,
            user,
            password,
            port,
            bin,
            http,
            process,
            dir,
        })
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after a grace period). Data stays.
    pub async fn stop(&mut self) {
        self.process.stop(STOP_GRACE).await;
    }

    /// Kills the server at once, as a crash would. Data written so far stays.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again (stopping it first if it runs) on the same port with the same
    /// data, and waits until it answers.
    pub async fn restart(&mut self) -> Result<(), SupportError> {
        self.stop().await;
        // The port is ours, but another test may grab it while we are down.
        self.process = restart_on_port(async || {
            let mut process = spawn(&self.bin, self.dir.path(), self.port)?;
            process
                .wait_ready(START_TIMEOUT, || {
                    answers(&self.http, &self.url, &self.user, &self.password)
                })
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

    /// The base URL with the admin's credentials in it, for clients that take only a URL
    /// (PouchDB, `_replicate` bodies).
    pub fn url_with_credentials(&self) -> String {
        format!(
            "http://{}:{}@127.0.0.1:{}",
            self.user, self.password, self.port
        )
    }

    /// The folder holding the server's config, databases and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file the server's output goes to.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A request to `path` (e.g. `/mydb/_all_docs`) authenticated as the server admin.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.url, path))
            .basic_auth(&self.user, Some(&self.password))
    }

    /// Creates database `name` as the server admin.
    pub async fn create_db(&self, name: &str) -> Result<(), SupportError> {
        let response = self
            .request(Method::PUT, &format!("/{name}"))
            .send()
            .await
            .map_err(|e| SupportError::Request {
                server: SERVER,
                message: e.to_string(),
            })?;
        match response.status() {
            StatusCode::CREATED | StatusCode::ACCEPTED => Ok(()),
            status => Err(SupportError::Request {
                server: SERVER,
                message: format!(
                    "PUT /{name} answered {status}: {}",
                    response.text().await.unwrap_or_default()
                ),
            }),
        }
    }
}

fn spawn(bin: &Path, dir: &Path, port: u16) -> Result<ServerProcess, SupportError> {
    let args = [
        "--host".to_string(),
        "127.0.0.1".to_string(),
        "--port".to_string(),
        port.to_string(),
        "--dir".to_string(),
        dir.join("data").display().to_string(),
        "--config".to_string(),
        dir.join("config.json").display().to_string(),
        "--no-stdout-logs".to_string(),
    ];
    // On Node 20 some pouchdb-server code paths reject promises nobody handles; by default that
    // kills the whole server.
    let envs = [("NODE_OPTIONS", "--unhandled-rejections=warn")];
    ServerProcess::spawn(SERVER, bin, &args, &envs, dir, &dir.join("server.log"))
}

/// True when the server at `url` knows our admin (so it is ours, not another test's).
async fn answers(http: &reqwest::Client, url: &str, user: &str, password: &str) -> bool {
    let response = http
        .get(format!("{url}/_session"))
        .basic_auth(user, Some(password))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    let Ok(response) = response else { return false };
    if !response.status().is_success() {
        return false;
    }
    let Ok(body) = response.json::<serde_json::Value>().await else {
        return false;
    };
    body["userCtx"]["name"] == user
}
