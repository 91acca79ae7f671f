//! A small CouchDB client over `reqwest`, shared by every feature of the data plane.
//!
//! One [`CouchClient`] holds a pooled keep-alive connection pool and the server-admin
//! credentials (sent as HTTP basic auth, so there is no session to expire). A
//! [`Database`] is a cheap handle on one database. Errors are classified into
//! [`CouchError`] so that callers can map "CouchDB is down" to 503 and recover by
//! themselves when it comes back: nothing here caches a broken connection.
//!
//! Coded to Apache CouchDB 3.5's documented API; also works against pouchdb-server,
//! which the tests use. `_changes` sequences are kept as opaque JSON values.

mod changes;

pub use changes::{ChangeRow, ChangesFeed, ChangesPage, ChangesQuery, seq_to_param};

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use url::Url;

/// Default timeout of a single (non-streaming) CouchDB request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to CouchDB.
#[derive(Debug, thiserror::Error)]
pub enum CouchError {
    /// CouchDB could not be reached, timed out, or answered 5xx.
    #[error("CouchDB unavailable: {0}")]
    Unavailable(String),
    /// 409: the revision given is not the current one (or the document exists).
    #[error("document update conflict")]
    Conflict,
    /// 404: no such document or database.
    #[error("not found: {reason}")]
    NotFound {
        /// CouchDB's `reason` (`missing`, `deleted`, `Database does not exist.`).
        reason: String,
    },
    /// 412: e.g. the database already exists.
    #[error("precondition failed: {reason}")]
    PreconditionFailed {
        /// CouchDB's `reason`.
        reason: String,
    },
    /// 400: CouchDB refused the request (bad selector, bad document).
    #[error("bad request: {error}: {reason}")]
    BadRequest {
        /// CouchDB's `error` field.
        error: String,
        /// CouchDB's `reason` field.
        reason: String,
    },
    /// 401/403: our credentials are wrong — a configuration error.
    #[error("CouchDB refused our credentials ({0})")]
    Unauthorized(StatusCode),
    /// Any other status.
    #[error("unexpected CouchDB answer {status}: {reason}")]
    Unexpected {
        /// The HTTP status.
        status: StatusCode,
        /// CouchDB's `reason`, if any.
        reason: String,
    },
    /// The answer was not the JSON we expected.
    #[error("cannot decode CouchDB answer: {0}")]
    Decode(String),
}

impl CouchError {
    /// Classify a transport-level error.
    fn transport(error: reqwest::Error) -> Self {
        // Never include the URL: it could carry credentials in a misconfigured setup.
        CouchError::Unavailable(error.without_url().to_string())
    }
}

/// A document write result (`{ok, id, rev}`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct DocResult {
    /// Document id.
    pub id: String,
    /// New revision.
    pub rev: String,
}

/// The part of a `_find` answer we use; documents as values, or as the JSON text CouchDB
/// wrote ([`Database::find_raw`]).
#[derive(Debug, Clone, Deserialize)]
pub struct FindResponse<D = Value> {
    /// Matching documents.
    pub docs: Vec<D>,
    /// CouchDB 3's bookmark (absent on pouchdb-server).
    #[serde(default)]
    pub bookmark: Option<String>,
    /// Index warnings, if any.
    #[serde(default)]
    pub warning: Option<String>,
}

/// Connection settings of a [`CouchClient`].
#[derive(Clone)]
pub struct CouchSettings {
    /// Base URL, e.g. `http://couchdb:5984/` (credentials in the URL are not allowed).
    pub url: Url,
    /// Server-admin user name.
    pub user: Option<String>,
    /// Server-admin password.
    pub password: Option<String>,
}

impl std::fmt::Debug for CouchSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CouchSettings")
            .field("url", &self.url.as_str())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A pooled CouchDB client. Cheap to clone.
#[derive(Clone)]
pub struct CouchClient {
    http: reqwest::Client,
    base: Url,
    user: Option<String>,
    password: Option<String>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for CouchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CouchClient")
            .field("base", &self.base.as_str())
            .finish()
    }
}

impl CouchClient {
    /// Build a client. Fails only if the HTTP client cannot be constructed.
    pub fn new(settings: CouchSettings) -> Result<Self, CouchError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| CouchError::Unavailable(e.to_string()))?;
        let mut base = settings.url;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            http,
            base,
            user: settings.user,
            password: settings.password,
            metrics: None,
        })
    }

    /// Record every call in `metrics` (see [`CouchClient::send`]).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The metrics this client records into, if any (the change readers report there too).
    pub fn metrics(&self) -> Option<&Arc<crate::metrics::Metrics>> {
        self.metrics.as_ref()
    }

    /// The base URL (never contains credentials).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// A handle on database `name` (not checked to exist).
    pub fn db(&self, name: &str) -> Database {
        Database {
            client: self.clone(),
            name: name.to_string(),
        }
    }

    /// URL of `segments` below the base, each segment percent-encoded (so `/` in a
    /// document id becomes `%2F`).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("base URL is hierarchical");
            path.pop_if_empty();
            for segment in segments {
                path.push(segment);
            }
        }
        url
    }

    /// A request with credentials attached, and the id of the HTTP request being served
    /// (`x-request-id`) when there is one. Use [`CouchClient::send`] to run it so that
    /// transport errors are classified. Meant for pass-through features (sync).
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let mut builder = self.http.request(method, url);
        if let Some(id) = crate::metrics::layer::current_request_id() {
            builder = builder.header(&crate::metrics::layer::REQUEST_ID_HEADER, id);
        }
        match &self.user {
            Some(user) => builder.basic_auth(user, self.password.as_deref()),
            None => builder,
        }
    }

    /// Send a request; transport failures and 5xx become [`CouchError::Unavailable`].
    /// Other statuses are returned as-is for the caller to inspect. Every call is timed
    /// (until the response head) into the metrics by method, endpoint kind and status.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, CouchError> {
        let (http, request) = request.build_split();
        let request = request.map_err(CouchError::transport)?;
        let method = request.method().clone();
        let endpoint = self.endpoint_of(request.url());
        let start = Instant::now();
        let sent = http.execute(request).await;
        if let Some(metrics) = &self.metrics {
            let status = sent.as_ref().ok().map(|r| r.status().as_u16());
            metrics.couch_call(method.as_str(), endpoint, status, start.elapsed());
        }
        let response = sent.map_err(CouchError::transport)?;
        if response.status().is_server_error() {
            return Err(CouchError::Unavailable(format!(
                "CouchDB answered {}",
                response.status()
            )));
        }
        Ok(response)
    }

    /// Send a request and decode a successful JSON answer, classifying errors.
    pub async fn json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<T, CouchError> {
        let response = self.send(request.timeout(REQUEST_TIMEOUT)).await?;
        let response = check_status(response).await?;
        response
            .json::<T>()
            .await
            .map_err(|e| CouchError::Decode(e.without_url().to_string()))
    }

    /// The `endpoint` label of a URL below the base ([`crate::metrics::couch_endpoint`]).
    fn endpoint_of(&self, url: &Url) -> &'static str {
        let path = url
            .path()
            .strip_prefix(self.base.path())
            .unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        crate::metrics::couch_endpoint(&segments)
    }

    /// `GET /`: succeeds when the server answers (used by `/ready`).
    pub async fn ping(&self) -> Result<(), CouchError> {
        let _: Value = self
            .json(self.request(Method::GET, self.base.clone()))
            .await?;
        Ok(())
    }
}

/// Turn a non-2xx answer into a [`CouchError`].
pub async fn check_status(response: Response) -> Result<Response, CouchError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Err(match status {
        StatusCode::CONFLICT => CouchError::Conflict,
        StatusCode::NOT_FOUND => CouchError::NotFound {
            reason: field("reason"),
        },
        StatusCode::PRECONDITION_FAILED => CouchError::PreconditionFailed {
            reason: field("reason"),
        },
        StatusCode::BAD_REQUEST => CouchError::BadRequest {
            error: field("error"),
            reason: field("reason"),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CouchError::Unauthorized(status),
        s if s.is_server_error() => CouchError::Unavailable(format!("CouchDB answered {s}")),
        s => CouchError::Unexpected {
            status: s,
            reason: field("reason"),
        },
    })
}

/// A handle on one database.
#[derive(Clone, Debug)]
pub struct Database {
    client: CouchClient,
    name: String,
}

impl Database {
    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client this handle uses.
    pub fn client(&self) -> &CouchClient {
        &self.client
    }

    /// URL of a path below this database (each segment percent-encoded).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut all = Vec::with_capacity(segments.len() + 1);
        all.push(self.name.as_str());
        all.extend_from_slice(segments);
        self.client.url(&all)
    }

    /// Create the database if it does not exist.
    pub async fn ensure_exists(&self) -> Result<(), CouchError> {
        let request = self.client.request(Method::PUT, self.url(&[]));
        match self.client.json::<Value>(request).await {
            Ok(_) | Err(CouchError::PreconditionFailed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Delete the database (tests, cleanup).
    pub async fn destroy(&self) -> Result<(), CouchError> {
        let request = self.client.request(Method::DELETE, self.url(&[]));
        self.client.json::<Value>(request).await.map(|_| ())
    }

    /// Database information (`GET /{db}`).
    pub async fn info(&self) -> Result<Value, CouchError> {
        self.client
            .json(self.client.request(Method::GET, self.url(&[])))
            .await
    }

    /// Fetch a document; `Ok(None)` when it does not exist or is deleted.
    pub async fn get(&self, id: &str) -> Result<Option<Value>, CouchError> {
        self.get_as(id).await
    }

    /// Fetch a document's JSON text as CouchDB sent it, to be passed on without decoding;
    /// `Ok(None)` when it does not exist or is deleted.
    pub async fn get_json(&self, id: &str) -> Result<Option<Bytes>, CouchError> {
        let request = self
            .client
            .request(Method::GET, self.url(&[id]))
            .timeout(REQUEST_TIMEOUT);
        let response = match check_status(self.client.send(request).await?).await {
            Ok(response) => response,
            Err(CouchError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        response
            .bytes()
            .await
            .map(Some)
            .map_err(CouchError::transport)
    }

    /// Fetch and decode a document; `Ok(None)` when it does not exist or is deleted.
    pub async fn get_as<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, CouchError> {
        let request = self.client.request(Method::GET, self.url(&[id]));
        match self.client.json::<T>(request).await {
            Ok(doc) => Ok(Some(doc)),
            Err(CouchError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create or update a document (`PUT /{db}/{id}`); a stale `_rev` in `doc` gives
    /// [`CouchError::Conflict`].
    pub async fn put(&self, id: &str, doc: &Value) -> Result<DocResult, CouchError> {
        let request = self.client.request(Method::PUT, self.url(&[id])).json(doc);
        self.client.json(request).await
    }

    /// Delete a document revision.
    pub async fn delete(&self, id: &str, rev: &str) -> Result<DocResult, CouchError> {
        let mut url = self.url(&[id]);
        url.query_pairs_mut().append_pair("rev", rev);
        self.client
            .json(self.client.request(Method::DELETE, url))
            .await
    }

    /// `POST _bulk_docs`; returns CouchDB's per-document results unchanged.
    pub async fn bulk_docs(&self, docs: &[Value]) -> Result<Vec<Value>, CouchError> {
        let request = self
            .client
            .request(Method::POST, self.url(&["_bulk_docs"]))
            .json(&json!({ "docs": docs }));
        self.client.json(request).await
    }

    /// `POST _revs_diff`: which of the given `(id, rev)` pairs the database does not have.
    /// Returns the missing pairs.
    pub async fn missing_revisions(
        &self,
        revisions: &[(String, String)],
    ) -> Result<Vec<(String, String)>, CouchError> {
        let mut asked = serde_json::Map::new();
        for (id, rev) in revisions {
            let revs = asked.entry(id.clone()).or_insert_with(|| json!([]));
            if let Value::Array(revs) = revs {
                revs.push(json!(rev));
            }
        }
        let request = self
            .client
            .request(Method::POST, self.url(&["_revs_diff"]))
            .json(&asked);
        let answer: std::collections::HashMap<String, RevsDiffEntry> =
            self.client.json(request).await?;
        Ok(answer
            .into_iter()
            .flat_map(|(id, entry)| entry.missing.into_iter().map(move |rev| (id.clone(), rev)))
            .collect())
    }

    /// `POST _find` with a full Mango query.
    pub async fn find(&self, query: &Value) -> Result<FindResponse, CouchError> {
        self.find_as(query).await
    }

    /// [`Database::find`] with each document kept as the JSON text CouchDB wrote, to be
    /// passed on without being rebuilt.
    pub async fn find_raw(&self, query: &Value) -> Result<FindResponse<Box<RawValue>>, CouchError> {
        self.find_as(query).await
    }

    async fn find_as<D: DeserializeOwned>(
        &self,
        query: &Value,
    ) -> Result<FindResponse<D>, CouchError> {
        let request = self
            .client
            .request(Method::POST, self.url(&["_find"]))
            .json(query);
        self.client.json(request).await
    }

    /// `POST _index`: create a JSON index (idempotent in CouchDB).
    pub async fn create_index(
        &self,
        name: &str,
        design_doc: &str,
        fields: &[&str],
    ) -> Result<(), CouchError> {
        let body = json!({
            "index": { "fields": fields },
            "name": name,
            "ddoc": design_doc,
            "type": "json",
        });
        let request = self
            .client
            .request(Method::POST, self.url(&["_index"]))
            .json(&body);
        self.client.json::<Value>(request).await.map(|_| ())
    }

    /// Names of the Mango indexes of design document `design_doc` (`GET _index`).
    pub async fn index_names(&self, design_doc: &str) -> Result<Vec<String>, CouchError> {
        #[derive(Deserialize)]
        struct Index {
            ddoc: Option<String>,
            name: String,
        }
        #[derive(Deserialize)]
        struct Indexes {
            indexes: Vec<Index>,
        }
        let request = self.client.request(Method::GET, self.url(&["_index"]));
        let answer: Indexes = self.client.json(request).await?;
        let ddoc = format!("_design/{design_doc}");
        Ok(answer
            .indexes
            .into_iter()
            .filter(|i| i.ddoc.as_deref() == Some(ddoc.as_str()))
            .map(|i| i.name)
            .collect())
    }

    /// Documents whose id starts with `prefix`, in id order (`_all_docs` with
    /// `include_docs=true`), at most `limit`.
    pub async fn docs_with_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<Value>, CouchError> {
        #[derive(Deserialize)]
        struct Row {
            doc: Option<Value>,
        }
        #[derive(Deserialize)]
        struct AllDocs {
            rows: Vec<Row>,
        }
        let mut url = self.url(&["_all_docs"]);
        url.query_pairs_mut()
            .append_pair("include_docs", "true")
            .append_pair("startkey", &Value::String(prefix.to_string()).to_string())
            .append_pair(
                "endkey",
                &Value::String(format!("{prefix}\u{fff0}")).to_string(),
            )
            .append_pair("limit", &limit.to_string());
        let page: AllDocs = self
            .client
            .json(self.client.request(Method::GET, url))
            .await?;
        Ok(page.rows.into_iter().filter_map(|r| r.doc).collect())
    }
}

/// One document's entry in a `_revs_diff` answer.
#[derive(Deserialize)]
struct RevsDiffEntry {
    #[serde(default)]
    missing: Vec<String>,
}
