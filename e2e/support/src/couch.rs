//! A CouchDB for one test: a pouchdb-server of its own, or databases of its own on an existing
//! CouchDB (the external-CouchDB switch).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use tempfile::TempDir;

use crate::external::{self, COUCHDB_PASSWORD_ENV, COUCHDB_USER_ENV, ExternalCouch};
use crate::ports::{restart_on_port, start_on_free_port};
use crate::process::ServerProcess;
use crate::{SupportError, binaries, random_hex};

const SERVER: &str = "pouchdb-server";
const EXTERNAL: &str = "external CouchDB";
const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A CouchDB for one test: by default a pouchdb-server on 127.0.0.1 with its own data folder
/// and a server admin (it is never an "admin party": anonymous clients cannot create databases
/// or change configuration); with the external-CouchDB switch (`VIBE_TEST_COUCHDB_URL`, see
/// [`crate::uses_external_couchdb`]) an existing CouchDB shared by many tests.
///
/// Either way the test names its databases with [`CouchServer::db_name`] (and the data plane
/// gets [`CouchServer::db_prefix`] as `VIBE_DB_PREFIX`), a prefix unique to this value, so
/// parallel tests on one server never meet.
///
/// Own server: data lives on disk (LevelDB), so [`CouchServer::restart`] keeps every database;
/// dropping the value kills the server and deletes the folder. External server: dropping the
/// value (also while a test panics) deletes every database whose name starts with the prefix;
/// [`CouchServer::stop`], [`CouchServer::kill`] and [`CouchServer::restart`] are not possible
/// and panic — such tests skip themselves with [`crate::skip_with_external_couchdb`].
#[derive(Debug)]
pub struct CouchServer {
    /// Base URL without credentials, e.g. `http://127.0.0.1:23456`.
    pub url: String,
    /// The server admin's name.
    pub user: String,
    /// The server admin's password.
    pub password: String,
    db_prefix: String,
    http: reqwest::Client,
    store: Store,
}

#[derive(Debug)]
enum Store {
    /// A pouchdb-server this value started and owns.
    Own(OwnServer),
    /// An existing CouchDB; only the databases under our prefix are ours.
    External,
}

#[derive(Debug)]
struct OwnServer {
    port: u16,
    bin: PathBuf,
    // Declared before `dir`: the process must be dead before its folder is deleted.
    process: ServerProcess,
    dir: TempDir,
}

const EXTERNAL_ONLY_OWN: &str = "this test stops or restarts CouchDB, which is impossible with \
     VIBE_TEST_COUCHDB_URL set; skip it first with vibe_test_support::skip_with_external_couchdb";

impl CouchServer {
    /// A CouchDB for this test: the existing one named by `VIBE_TEST_COUCHDB_URL` (checked to
    /// accept the admin's credentials), or a fresh pouchdb-server on a free port, returned once it
    /// accepts the admin's credentials.
    pub async fn start() -> Result<Self, SupportError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| SupportError::Request {
                server: SERVER,
                message: e.to_string(),
            })?;
        let db_prefix = format!("vt{}_", random_hex(6));
        if let Some(external) = external::from_env()? {
            return Self::use_external(external, http, db_prefix).await;
        }

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
            db_prefix,
            http,
            store: Store::Own(OwnServer {
                port,
                bin,
                process,
                dir,
            }),
        })
    }

    async fn use_external(
        external: ExternalCouch,
        http: reqwest::Client,
        db_prefix: String,
    ) -> Result<Self, SupportError> {
        let ExternalCouch {
            url,
            user,
            password,
        } = external;
        let session = http
            .get(format!("{url}/_session"))
            .basic_auth(&user, Some(&password))
            .send()
            .await
            .map_err(|e| SupportError::Request {
                server: EXTERNAL,
                message: format!("{url} does not answer ({e})"),
            })?;
        let status = session.status();
        let body: serde_json::Value = session.json().await.unwrap_or_default();
        let is_admin = body["userCtx"]["name"] == user.as_str()
            && body["userCtx"]["roles"]
                .as_array()
                .is_some_and(|roles| roles.iter().any(|r| r == "_admin"));
        if !status.is_success() || !is_admin {
            return Err(SupportError::Request {
                server: EXTERNAL,
                message: format!(
                    "{url}: {COUCHDB_USER_ENV} is not a server admin there with \
                     {COUCHDB_PASSWORD_ENV} (GET /_session answered {status})"
                ),
            });
        }
        tracing::info!(%url, %db_prefix, "using the existing CouchDB");
        Ok(Self {
            url,
            user,
            password,
            db_prefix,
            http,
            store: Store::External,
        })
    }

    /// True when this is an existing CouchDB (`VIBE_TEST_COUCHDB_URL`), not a server of ours.
    pub fn is_external(&self) -> bool {
        matches!(self.store, Store::External)
    }

    /// The prefix of every database this test may create, unique to this value (e.g.
    /// `vt3f9a0c1d2e4b_`): hand it to the data plane as `VIBE_DB_PREFIX`.
    pub fn db_prefix(&self) -> &str {
        &self.db_prefix
    }

    /// The full name of this test's database `name`: [`CouchServer::db_prefix`] + `name`.
    pub fn db_name(&self, name: &str) -> String {
        format!("{}{name}", self.db_prefix)
    }

    fn own(&mut self) -> &mut OwnServer {
        match &mut self.store {
            Store::Own(own) => own,
            Store::External => panic!("{EXTERNAL_ONLY_OWN}"),
        }
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after a grace period). Data stays.
    ///
    /// # Panics
    /// On an external CouchDB.
    pub async fn stop(&mut self) {
        self.own().process.stop(STOP_GRACE).await;
    }

    /// Kills the server at once, as a crash would. Data written so far stays.
    ///
    /// # Panics
    /// On an external CouchDB.
    pub fn kill(&mut self) {
        self.own().process.kill();
    }

    /// Starts the server again (stopping it first if it runs) on the same port with the same
    /// data, and waits until it answers.
    ///
    /// # Panics
    /// On an external CouchDB.
    pub async fn restart(&mut self) -> Result<(), SupportError> {
        self.stop().await;
        let Store::Own(own) = &mut self.store else {
            unreachable!("stop() panics on an external CouchDB")
        };
        let (http, url, user, password) = (&self.http, &self.url, &self.user, &self.password);
        // The port is ours, but another test may grab it while we are down.
        own.process = restart_on_port(async || {
            let mut process = spawn(&own.bin, own.dir.path(), own.port)?;
            process
                .wait_ready(START_TIMEOUT, || answers(http, url, user, password))
                .await?;
            Ok(process)
        })
        .await?;
        Ok(())
    }

    /// True while the server process runs (always true for an external CouchDB).
    pub fn is_running(&mut self) -> bool {
        match &mut self.store {
            Store::Own(own) => own.process.check_alive().is_ok(),
            Store::External => true,
        }
    }

    /// The server's process id while it runs (`None` for an external CouchDB).
    pub fn pid(&self) -> Option<u32> {
        match &self.store {
            Store::Own(own) => own.process.pid(),
            Store::External => None,
        }
    }

    /// The port, fixed for the life of this value.
    pub fn port(&self) -> u16 {
        match &self.store {
            Store::Own(own) => own.port,
            Store::External => reqwest::Url::parse(&self.url)
                .ok()
                .and_then(|u| u.port_or_known_default())
                .unwrap_or(5984),
        }
    }

    /// The base URL with the admin's credentials in it, for clients that take only a URL
    /// (PouchDB, `_replicate` bodies).
    pub fn url_with_credentials(&self) -> String {
        let mut url = reqwest::Url::parse(&self.url).expect("the server URL was checked");
        // Both succeed on an http(s) URL with a host, and percent-encode what needs it.
        let _ = url.set_username(&self.user);
        let _ = url.set_password(Some(&self.password));
        let text = url.to_string();
        if self.url.ends_with('/') {
            text
        } else {
            text.trim_end_matches('/').to_string()
        }
    }

    /// The folder holding the server's config, databases and logs (`None` for an external
    /// CouchDB).
    pub fn dir(&self) -> Option<&Path> {
        match &self.store {
            Store::Own(own) => Some(own.dir.path()),
            Store::External => None,
        }
    }

    /// The file the server's output goes to (`None` for an external CouchDB).
    pub fn log_path(&self) -> Option<PathBuf> {
        self.dir().map(|dir| dir.join("server.log"))
    }

    /// A request to `path` (e.g. `/mydb/_all_docs`) authenticated as the server admin.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.url, path))
            .basic_auth(&self.user, Some(&self.password))
    }

    /// What the server says it is, from `GET /`: `Apache CouchDB 3.5.0`,
    /// `pouchdb-server (express-pouchdb 4.2.0)` or the raw answer.
    pub async fn describe(&self) -> Result<String, SupportError> {
        let welcome: serde_json::Value = self
            .request(Method::GET, "/")
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| self.request_error(format!("GET / failed: {e}")))?
            .json()
            .await
            .map_err(|e| self.request_error(format!("GET / is not JSON: {e}")))?;
        let version = welcome["version"].as_str().unwrap_or("unknown version");
        Ok(if welcome.get("couchdb").is_some() {
            format!("Apache CouchDB {version}")
        } else if welcome.get("express-pouchdb").is_some() {
            format!("pouchdb-server (express-pouchdb {version})")
        } else {
            welcome.to_string()
        })
    }

    fn request_error(&self, message: String) -> SupportError {
        SupportError::Request {
            server: if self.is_external() { EXTERNAL } else { SERVER },
            message,
        }
    }

    /// Creates database `name` (exactly that name; use [`CouchServer::db_name`] for one that
    /// is deleted with an external server) as the server admin.
    pub async fn create_db(&self, name: &str) -> Result<(), SupportError> {
        let response = self
            .request(Method::PUT, &format!("/{}", encode_db(name)))
            .send()
            .await
            .map_err(|e| self.request_error(e.to_string()))?;
        match response.status() {
            StatusCode::CREATED | StatusCode::ACCEPTED => Ok(()),
            status => Err(self.request_error(format!(
                "PUT /{name} answered {status}: {}",
                response.text().await.unwrap_or_default()
            ))),
        }
    }

    /// The names of this test's databases (those starting with [`CouchServer::db_prefix`]).
    pub async fn own_databases(&self) -> Result<Vec<String>, SupportError> {
        list_prefixed(
            &self.http,
            &self.url,
            &self.user,
            &self.password,
            &self.db_prefix,
        )
        .await
        .map_err(|message| self.request_error(message))
    }
}

impl Drop for CouchServer {
    fn drop(&mut self) {
        if !self.is_external() {
            return; // The process and its folder go with `store`.
        }
        let (url, user, password, prefix) = (
            self.url.clone(),
            self.user.clone(),
            self.password.clone(),
            self.db_prefix.clone(),
        );
        // Drop may run inside an async runtime (or while it unwinds from a panic): do the
        // requests on a thread of our own with a runtime of its own, and wait for it.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(delete_prefixed(&url, &user, &password, &prefix))
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => eprintln!(
                "vibe-test-support: could not delete the databases {}* of this test: {message}",
                self.db_prefix
            ),
            Err(_) => eprintln!("vibe-test-support: the database clean-up thread panicked"),
        }
    }
}

/// A database name as one URL path segment (names may contain `/`, `+`, `$`, `(`, `)`).
fn encode_db(name: &str) -> String {
    name.replace('/', "%2F")
        .replace('+', "%2B")
        .replace('$', "%24")
}

async fn list_prefixed(
    http: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
    prefix: &str,
) -> Result<Vec<String>, String> {
    // `_all_dbs` is sorted by name; ask for the prefix's range only.
    let start = serde_json::to_string(prefix).map_err(|e| e.to_string())?;
    let end = serde_json::to_string(&format!("{prefix}\u{fff0}")).map_err(|e| e.to_string())?;
    let names: Vec<String> = http
        .get(format!("{url}/_all_dbs"))
        .query(&[("start_key", start), ("end_key", end)])
        .basic_auth(user, Some(password))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("GET /_all_dbs: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET /_all_dbs: {e}"))?;
    // A server that ignores the range still gets only ours deleted.
    Ok(names
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect())
}

async fn delete_prefixed(
    url: &str,
    user: &str,
    password: &str,
    prefix: &str,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    for name in list_prefixed(&http, url, user, password, prefix).await? {
        let response = http
            .delete(format!("{url}/{}", encode_db(&name)))
            .basic_auth(user, Some(password))
            .send()
            .await
            .map_err(|e| format!("DELETE /{name}: {e}"))?;
        // 404: deleted meanwhile (by the test itself).
        if !response.status().is_success() && response.status() != StatusCode::NOT_FOUND {
            return Err(format!("DELETE /{name} answered {}", response.status()));
        }
    }
    Ok(())
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
