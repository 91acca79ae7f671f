//! A typed HTTP client for one Vibe Cloud instance.
//!
//! [`Instance`] makes unauthenticated calls (health, challenge, login, claim, refresh);
//! [`Client`] makes authenticated ones with a [`TokenSource`] that refreshes the owner's
//! access token before it expires (and once more on a 401), optionally acting as an app
//! (`X-Vibe-App-ID`). The CLI and the end-to-end suite both use these types, so the suite
//! exercises exactly what a person runs.

mod apps;
mod auth;
mod blobs;
mod console;
mod data;
mod devices;
mod export;
mod tokens;

pub use apps::{AppStatus, AppToken, check_permission};
pub use auth::{Challenge, Tokens, sign_login, sign_login_at};
pub use blobs::{BlobMeta, Progress, UploadUrl};
pub use data::{Page, ReadQuery, WriteResult, local_id};
pub use devices::{DeviceCredentials, RegisteredDevice};
pub use export::ExportSummary;
pub use tokens::TokenSource;
pub use vibe_api::auth::LoginRequest;

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use crate::error::{ClientError, Result};

/// Header naming the app a request acts as.
pub const APP_ID_HEADER: &str = "X-Vibe-App-ID";

/// An instance's base URL and a pooled HTTP client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Instance {
    base: Url,
    http: reqwest::Client,
}

impl Instance {
    /// An instance at `url` (e.g. `http://127.0.0.1:3000`).
    pub fn new(url: &str) -> Result<Self> {
        let mut base = Url::parse(url.trim())
            .map_err(|e| ClientError::Usage(format!("instance URL {url:?} is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(ClientError::Usage(format!(
                "instance URL {url:?} must be an http(s) URL with a host"
            )));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("vibe-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { base, http })
    }

    /// The base URL without a trailing slash, as tokens name it (`iss`/`aud`).
    pub fn url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// The shared HTTP client (also used for presigned storage URLs).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Absolute URL of `path` (`api/v1/...`, with or without a leading slash).
    pub fn endpoint(&self, path: &str) -> Url {
        self.base
            .join(path.trim_start_matches('/'))
            .expect("relative paths always join")
    }

    /// The WebSocket URL of the realtime endpoint (`ws(s)://…/ws`).
    pub fn websocket_url(&self) -> Url {
        let mut url = self.endpoint("ws");
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).expect("ws schemes are valid");
        url
    }

    /// A request builder for `path`.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.endpoint(path))
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Value> {
        send_json(self.request(Method::GET, "health"), "GET /health").await
    }

    /// `GET /ready`: `Ok` with the body when ready, an [`ClientError::Api`] 503 otherwise.
    pub async fn ready(&self) -> Result<Value> {
        send_json(self.request(Method::GET, "ready"), "GET /ready").await
    }
}

/// Send `request` and return the response when its status is a success, or the
/// instance's error as [`ClientError::Api`].
pub(crate) async fn send(request: RequestBuilder, what: &str) -> Result<Response> {
    let (client, request) = request.build_split();
    let request = request.map_err(|e| ClientError::Usage(format!("{what}: {e}")))?;
    let url = request.url().clone();
    let response = client
        .execute(request)
        .await
        .map_err(|e| ClientError::transport(&url, e))?;
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(api_error(response).await)
    }
}

/// Send and decode a JSON success body.
pub(crate) async fn send_json<T: DeserializeOwned>(
    request: RequestBuilder,
    what: &str,
) -> Result<T> {
    let response = send(request, what).await?;
    decode(response, what).await
}

/// Decode a JSON body.
pub(crate) async fn decode<T: DeserializeOwned>(response: Response, what: &str) -> Result<T> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| ClientError::InvalidResponse {
            what: what.to_string(),
            problem: format!("body could not be read: {}", e.without_url()),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::InvalidResponse {
        what: what.to_string(),
        problem: format!("not the expected JSON: {e}"),
    })
}

/// Turn an error response into [`ClientError::Api`], keeping the instance's message.
pub(crate) async fn api_error(response: Response) -> ClientError {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let message = match (&body["error"], &body["details"]) {
        (Value::String(error), Value::String(details)) if details != error => {
            format!("{error} ({details})")
        }
        (Value::String(error), Value::Null) | (Value::String(error), _) => {
            if let Some(reason) = body["reason"].as_str() {
                format!("{error}: {reason}")
            } else {
                error.clone()
            }
        }
        _ if !text.trim().is_empty() && text.len() < 500 => text.trim().to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    ClientError::Api {
        status: status.as_u16(),
        message,
        body,
    }
}

/// An authenticated client: an [`Instance`], a [`TokenSource`] and, optionally, the app
/// it acts as. Cheap to clone; clones share the token source.
#[derive(Clone, Debug)]
pub struct Client {
    instance: Instance,
    tokens: TokenSource,
    app: Option<String>,
}

impl Client {
    /// A client using `tokens` on `instance`, acting as the owner.
    pub fn new(instance: Instance, tokens: TokenSource) -> Self {
        Self {
            instance,
            tokens,
            app: None,
        }
    }

    /// The same client acting as app `app_id` (sends `X-Vibe-App-ID`).
    pub fn as_app(&self, app_id: &str) -> Self {
        Self {
            app: Some(app_id.to_string()),
            ..self.clone()
        }
    }

    /// The same client with no app header.
    pub fn as_owner(&self) -> Self {
        Self {
            app: None,
            ..self.clone()
        }
    }

    /// The app this client acts as.
    pub fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }

    /// The instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The token source.
    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    /// A current access token (refreshed first when it is about to expire).
    pub async fn access_token(&self) -> Result<String> {
        self.tokens.access_token(&self.instance).await
    }

    /// Send an authenticated request built by `build` (called again for the retry after
    /// a refresh on 401), returning the successful response.
    pub async fn send<F>(&self, what: &str, build: F) -> Result<Response>
    where
        F: Fn(&Instance) -> RequestBuilder,
    {
        let token = self.access_token().await?;
        match send(self.authorize(build(&self.instance), &token), what).await {
            Err(ClientError::Api { status: 401, .. }) if self.tokens.can_refresh() => {
                self.tokens.force_refresh(&self.instance, &token).await?;
                let token = self.access_token().await?;
                send(self.authorize(build(&self.instance), &token), what).await
            }
            other => other,
        }
    }

    /// [`Client::send`] and decode JSON.
    pub async fn send_json<T, F>(&self, what: &str, build: F) -> Result<T>
    where
        T: DeserializeOwned,
        F: Fn(&Instance) -> RequestBuilder,
    {
        let response = self.send(what, build).await?;
        decode(response, what).await
    }

    /// Like [`Client::send`] but returns any response, error statuses included (for
    /// callers that need the status, e.g. 207 or per-route checks in tests).
    pub async fn send_raw<F>(&self, build: F) -> Result<Response>
    where
        F: Fn(&Instance) -> RequestBuilder,
    {
        let token = self.access_token().await?;
        let (client, request) = self.authorize(build(&self.instance), &token).build_split();
        let request = request.map_err(|e| ClientError::Usage(e.to_string()))?;
        let url = request.url().clone();
        client
            .execute(request)
            .await
            .map_err(|e| ClientError::transport(&url, e))
    }

    fn authorize(&self, request: RequestBuilder, token: &str) -> RequestBuilder {
        let request = request.bearer_auth(token);
        match &self.app {
            Some(app) => request.header(APP_ID_HEADER, app),
            None => request,
        }
    }
}
