//! Shared harness for the data plane's integration tests: a real CouchDB (`vibe-test-support`:
//! a pouchdb-server of its own, or this test's databases on an existing CouchDB with
//! `VIBE_TEST_COUCHDB_URL`), the real router served on 127.0.0.1:0, and HTTP helpers.
//! Feature test files (`tests/blob*.rs`, `tests/realtime*.rs`) can use it with `mod common;`.
#![allow(dead_code)]

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use vibe_api::dataplane_env as env;
use vibe_dataplane::config::Config;
use vibe_dataplane::couch::CouchSettings;
use vibe_dataplane::{AppState, router};
use vibe_identity::Keypair;
use vibe_test_support::CouchServer;

/// One running data plane with its own CouchDB-compatible server.
pub struct TestInstance {
    /// The CouchDB-compatible server (stop/restart it to test outages).
    pub couch: CouchServer,
    /// Base URL of the data plane, also its public URL (token issuer and audience).
    pub base: String,
    /// The owner's key pair.
    pub owner: Keypair,
    /// The instance's token-signing key.
    pub signing_key: Keypair,
    /// The state the server runs with.
    pub state: AppState,
    /// HTTP client.
    pub http: reqwest::Client,
    server: JoinHandle<()>,
    addr: SocketAddr,
}

impl Drop for TestInstance {
    fn drop(&mut self) {
        self.server.abort();
        if !std::thread::panicking() {
            assert_answers_documented();
        }
    }
}

/// Answers of the test servers that `dataplane/openapi.json` does not list for their route
/// (`METHOD route → status`), collected by [`record_undocumented_answers`].
static UNDOCUMENTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Middleware of every test server: notes each answer whose status the OpenAPI document
/// does not list for the matched route, so that the whole suite checks the document against
/// what the server really answers.
async fn record_undocumented_answers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let response = next.run(request).await;
    if let Some(route) = route
        && vibe_dataplane::openapi::documents_status(&method, &route, response.status())
            == Some(false)
    {
        UNDOCUMENTED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(format!("{method} {route} → {}", response.status()));
    }
    response
}

/// Fails when a test server answered a status its route does not document (checked when a
/// [`TestInstance`] is dropped; call it at the end of tests that use [`serve`] directly).
pub fn assert_answers_documented() {
    let seen = std::mem::take(
        &mut *UNDOCUMENTED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    assert!(
        seen.is_empty(),
        "answers missing from dataplane/openapi.json: {seen:?}"
    );
}

/// Couch settings of a test server.
pub fn couch_settings(couch: &CouchServer) -> CouchSettings {
    CouchSettings {
        url: couch.url.parse().expect("couch url"),
        user: Some(couch.user.clone()),
        password: Some(couch.password.clone()),
    }
}

/// Serve `config` on an already bound listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
) -> (AppState, JoinHandle<()>) {
    let state = AppState::new(config).expect("state");
    vibe_dataplane::startup::spawn(&state);
    let app = router(state.clone()).layer(axum::middleware::from_fn(record_undocumented_answers));
    let settings = state.config.http.clone();
    let server = tokio::spawn(async move {
        vibe_dataplane::server::serve(listener, app, settings, std::future::pending())
            .await
            .expect("serve");
    });
    (state, server)
}

impl TestInstance {
    /// A fresh instance whose owner is configured (`TARGET_USER_DID`).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A fresh instance; `configure` may change the configuration before start.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let couch = CouchServer::start().await.expect("start CouchDB");
        Self::start_on(couch, Keypair::generate(), Keypair::generate(), configure).await
    }

    /// An instance on an existing CouchDB server with given keys.
    pub async fn start_on(
        couch: CouchServer,
        owner: Keypair,
        signing_key: Keypair,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let mut config = Config::new(&base, couch_settings(&couch), signing_key.clone());
        config.db_prefix = couch.db_prefix().to_string();
        config.owner = Some(owner.did());
        configure(&mut config);
        let (state, server) = serve(listener, config).await;
        Self {
            couch,
            base,
            owner,
            signing_key,
            state,
            http: reqwest::Client::new(),
            server,
            addr,
        }
    }

    /// Replace the running data plane by a new process-equivalent (new state, new port)
    /// on the same CouchDB data and keys, as after a restart. `configure` adjusts the
    /// new configuration (the owner stays configured unless it clears it).
    pub async fn restart(&mut self, configure: impl FnOnce(&mut Config)) {
        self.server.abort();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        self.addr = listener.local_addr().expect("addr");
        self.base = format!("http://{}", self.addr);
        let mut config = Config::new(
            &self.base,
            couch_settings(&self.couch),
            self.signing_key.clone(),
        );
        config.db_prefix = self.couch.db_prefix().to_string();
        config.owner = Some(self.owner.did());
        configure(&mut config);
        let (state, server) = serve(listener, config).await;
        self.state = state;
        self.server = server;
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send a request; returns status and JSON body (Null when empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        app: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(app) = app {
            request = request.header("X-Vibe-App-ID", app);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POST JSON.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        app: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, app, Some(body)).await
    }

    /// GET.
    pub async fn get(
        &self,
        path: &str,
        token: Option<&str>,
        app: Option<&str>,
    ) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, app, None).await
    }

    /// A signed login body for `key` with a fresh server nonce.
    pub async fn login_body(&self, key: &Keypair) -> Value {
        let (status, challenge) = self
            .post("/api/v1/auth/challenge", None, None, json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{challenge}");
        let nonce = challenge["nonce"].as_str().expect("nonce").to_string();
        signed_login(key, &nonce, &chrono::Utc::now().to_rfc3339())
    }

    /// Log the owner in; returns the token response.
    pub async fn login(&self) -> Value {
        let body = self.login_body(&self.owner).await;
        let (status, tokens) = self.post("/api/v1/auth/login", None, None, body).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        tokens
    }

    /// An owner access token.
    pub async fn owner_token(&self) -> String {
        self.login().await["accessToken"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Register (or update) `app_id` with `grants` (all requested as permissions).
    pub async fn upsert_app(
        &self,
        token: &str,
        app_id: &str,
        grants: &[(&str, &str)],
    ) -> StatusCode {
        let permissions: Vec<&str> = grants.iter().map(|(p, _)| *p).collect();
        let grants: serde_json::Map<String, Value> = grants
            .iter()
            .map(|(p, s)| (p.to_string(), json!(s)))
            .collect();
        let (status, body) = self
            .post(
                "/api/v1/apps/upsert",
                Some(token),
                Some(app_id),
                json!({ "appId": app_id, "name": "Test App", "permissions": permissions, "grants": grants }),
            )
            .await;
        assert!(
            status == StatusCode::OK || status == StatusCode::CREATED,
            "{status} {body}"
        );
        status
    }
}

/// A login body signed by `key`.
pub fn signed_login(key: &Keypair, nonce: &str, timestamp: &str) -> Value {
    let did = key.did().to_string();
    let message = vibe_identity::signed::login_message(&did, nonce, timestamp);
    json!({
        "did": did,
        "nonce": nonce,
        "timestamp": timestamp,
        "signature": key.sign_base64(&message),
    })
}

/// The least environment the `vibe-dataplane` binary starts with, on a free port, without a
/// reachable CouchDB (it serves, not ready): for tests of the process itself.
pub fn offline_binary_env(command: &mut std::process::Command) -> &mut std::process::Command {
    command
        .env(env::PUBLIC_INSTANCE_URL, "https://alice.vibe.test")
        // Nothing listens there.
        .env(env::COUCHDB_URL, "http://127.0.0.1:9")
        .env(
            "VIBE_SIGNING_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .env(env::PORT, "0")
        .env(env::HOST, "127.0.0.1")
}
