//! Prometheus metrics of one data plane, served as OpenMetrics text on their own port
//! (`VIBE_METRICS_ADDR`, see [`serve`]).
//!
//! Every series is prefixed `vibe_dataplane_`. Label values are bounded: HTTP requests are
//! labelled by their route template (`/api/v1/data/{collection}/{id}`, never the raw path),
//! CouchDB calls by the kind of endpoint ([`couch_endpoint`]), S3 calls by the SDK operation.
//!
//! Where they are recorded:
//! - HTTP: one middleware on the router ([`layer`]);
//! - CouchDB: [`crate::couch::CouchClient::send`], which every CouchDB call goes through;
//! - S3: an interceptor on the SDK client ([`crate::blobs::BlobStore`]);
//! - open WebSockets and sync feeds: guards held by the connections ([`Metrics::open`]);
//! - change readers, grants and the blob quota: read from the state on each scrape; the change
//!   readers' lag in sequences asks CouchDB for each database's `update_seq` then (bounded by
//!   [`SEQUENCE_PROBE_TIMEOUT`]).

pub mod layer;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::couch::Database;
use crate::realtime::seq::Seq;
use crate::state::AppState;

/// Content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Request method (`GET`, …; `other` for unusual ones).
    pub method: String,
    /// Route template that matched, or `unmatched`.
    pub route: String,
    /// Response status code.
    pub status: String,
}

/// Labels of a CouchDB call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CouchLabels {
    /// Request method.
    pub method: String,
    /// Kind of endpoint ([`couch_endpoint`]).
    pub endpoint: String,
    /// Response status code, or `error` when no answer came (refused, reset, timeout).
    pub status: String,
}

/// Labels of a read or document request refused by a query bound.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLimitLabels {
    /// The bound: `filter` (any filter-shape bound), `sort_fields`, `max_sort_indexes`,
    /// `timeout_ms`, `app_concurrency` or `app_rate_per_sec`.
    pub limit: String,
}

/// Labels of blob bytes an import handled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImportBlobLabels {
    /// `uploaded` (sent to the object store) or `kept` (already stored, by an earlier
    /// attempt of the same import: read and checked, not sent again).
    pub outcome: String,
}

/// Labels of an S3 call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct S3Labels {
    /// SDK operation (`HeadObject`, `PutObject`, …).
    pub operation: String,
    /// Response status code, or `error` when no answer came.
    pub status: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Longest a scrape waits for CouchDB to tell the databases' current sequences; a reader
/// whose database does not answer in time is left out of the sequence lag (its lag in
/// seconds shows the outage).
pub const SEQUENCE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Databases asked for their sequence at once during a scrape.
const SEQUENCE_PROBES_AT_ONCE: usize = 8;

/// Sequence number meaning "no row read yet".
const UNKNOWN_SEQ: u64 = u64::MAX;

/// Where a change reader is: when it last heard from CouchDB (a row or a heartbeat) and the
/// sequence number of the last row it read, in its database.
#[derive(Debug)]
pub struct ReaderClock {
    heard_ms: AtomicI64,
    read_seq: AtomicU64,
    db: Database,
}

impl ReaderClock {
    /// Record that CouchDB just said something on the feed.
    pub fn heard(&self) {
        self.heard_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Record the position of the reader: the sequence of the last row read (or where it
    /// starts). Sequences without a number ([`Seq::number`]) are ignored.
    pub fn read_up_to(&self, seq: &Seq) {
        if let Some(n) = seq.number() {
            self.read_seq.store(n, Ordering::Relaxed);
        }
    }

    fn silence(&self, now: i64) -> Duration {
        let heard = self.heard_ms.load(Ordering::Relaxed);
        Duration::from_millis(now.saturating_sub(heard).max(0) as u64)
    }

    /// Changes committed to the database that the reader has not read yet: its current
    /// `update_seq` minus the reader's position. `None` when either is unknown.
    async fn sequences_behind(&self) -> Option<u64> {
        let read = self.read_seq.load(Ordering::Relaxed);
        if read == UNKNOWN_SEQ {
            return None;
        }
        let info = tokio::time::timeout(SEQUENCE_PROBE_TIMEOUT, self.db.info())
            .await
            .ok()?
            .ok()?;
        let head = Seq::from(info.get("update_seq")?.clone()).number()?;
        Some(head.saturating_sub(read))
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The data plane's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests: duration until the response head, by method, route and status.
    pub http: Histograms<HttpLabels>,
    /// CouchDB calls: duration until the response head, by method, endpoint and status.
    pub couch: Histograms<CouchLabels>,
    /// S3 calls (each attempt): duration, by operation and status.
    pub s3: Histograms<S3Labels>,
    query_refused: Family<QueryLimitLabels, prometheus_client::metrics::counter::Counter>,
    import_blob_bytes: Family<ImportBlobLabels, prometheus_client::metrics::counter::Counter>,
    websockets: Gauge,
    sync_feeds: Gauge,
    change_readers: Gauge,
    change_reader_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    change_reader_lag_sequences: Gauge,
    grants: Gauge,
    blob_used: Gauge,
    blob_quota: Gauge,
    readers: Mutex<Vec<Weak<ReaderClock>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What an open-connection gauge counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// A realtime WebSocket.
    WebSocket,
    /// A sync `_changes` feed that stays open (continuous or longpoll).
    SyncFeed,
}

/// Decrements its gauge when dropped.
#[derive(Debug)]
pub struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Fresh metrics in their own registry (prefix `vibe_dataplane`).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vibe_dataplane");
        let m = Self {
            http: Family::new_with_constructor(request_histogram),
            couch: Family::new_with_constructor(request_histogram),
            s3: Family::new_with_constructor(request_histogram),
            query_refused: Family::default(),
            import_blob_bytes: Family::default(),
            websockets: Gauge::default(),
            sync_feeds: Gauge::default(),
            change_readers: Gauge::default(),
            change_reader_lag: Gauge::default(),
            change_reader_lag_sequences: Gauge::default(),
            grants: Gauge::default(),
            blob_used: Gauge::default(),
            blob_quota: Gauge::default(),
            readers: Mutex::new(Vec::new()),
            registry: Registry::default(),
        };
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests by method, route template and status: time until the response head",
            m.http.clone(),
        );
        registry.register(
            "couchdb_request_duration_seconds",
            "CouchDB calls by method, endpoint kind and status (`error`: no answer)",
            m.couch.clone(),
        );
        registry.register(
            "s3_request_duration_seconds",
            "S3 call attempts by operation and status (`error`: no answer)",
            m.s3.clone(),
        );
        registry.register(
            "query_refused",
            "Document requests refused by a query bound (400, 429, or 503 at the store deadline)",
            m.query_refused.clone(),
        );
        registry.register(
            "import_blob_bytes",
            "Blob bytes of imports by outcome: uploaded to the object store, or kept (stored by \
             an earlier, interrupted attempt of the same import and not sent again)",
            m.import_blob_bytes.clone(),
        );
        registry.register(
            "websockets_open",
            "Realtime WebSockets open",
            m.websockets.clone(),
        );
        registry.register(
            "sync_feeds_open",
            "Sync _changes feeds held open (continuous or longpoll)",
            m.sync_feeds.clone(),
        );
        registry.register(
            "change_readers",
            "Running _changes readers of the realtime engine",
            m.change_readers.clone(),
        );
        registry.register(
            "change_reader_lag_seconds",
            "Longest time any change reader has not heard from CouchDB (rows or heartbeats; \
             stays below the heartbeat interval while feeds are live)",
            m.change_reader_lag.clone(),
        );
        registry.register(
            "change_reader_lag_sequences",
            "Most changes any change reader is behind its database (update_seq minus the last \
             sequence read; CouchDB 3 sequences count by their number prefix), as of the scrape",
            m.change_reader_lag_sequences.clone(),
        );
        registry.register(
            "grants_cached_apps",
            "App registrations in the grants cache",
            m.grants.clone(),
        );
        registry.register(
            "blob_used_bytes",
            "Bytes counted against the blob quota (stored plus reserved by uploads in progress)",
            m.blob_used.clone(),
        );
        registry.register(
            "blob_quota_bytes",
            "Blob quota in bytes",
            m.blob_quota.clone(),
        );
        Self { registry, ..m }
    }

    /// Count an open connection until the guard is dropped.
    pub fn open(&self, what: Open) -> OpenGuard {
        let gauge = match what {
            Open::WebSocket => &self.websockets,
            Open::SyncFeed => &self.sync_feeds,
        };
        gauge.inc();
        OpenGuard(gauge.clone())
    }

    /// A clock for a new change reader of `db`; it counts as running while the clock is alive.
    pub fn change_reader(&self, db: Database) -> Arc<ReaderClock> {
        let clock = Arc::new(ReaderClock {
            heard_ms: AtomicI64::new(now_ms()),
            read_seq: AtomicU64::new(UNKNOWN_SEQ),
            db,
        });
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        readers.retain(|r| r.strong_count() > 0);
        readers.push(Arc::downgrade(&clock));
        clock
    }

    fn live_readers(&self) -> Vec<Arc<ReaderClock>> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        readers.retain(|r| r.strong_count() > 0);
        readers.iter().filter_map(Weak::upgrade).collect()
    }

    /// Ask CouchDB how far each running change reader is behind its database and keep the
    /// largest for the next [`Metrics::encode`] (0 with no reader, or none that answered).
    pub async fn measure_sequence_lag(&self) {
        let probes = self
            .live_readers()
            .into_iter()
            .map(|reader| async move { reader.sequences_behind().await });
        let lag = futures::stream::iter(probes)
            .buffer_unordered(SEQUENCE_PROBES_AT_ONCE)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
        self.change_reader_lag_sequences.set(clamp(lag));
    }

    /// Observe a CouchDB call.
    pub fn couch_call(&self, method: &str, endpoint: &str, status: Option<u16>, took: Duration) {
        self.couch
            .get_or_create(&CouchLabels {
                method: method_label(method).to_string(),
                endpoint: endpoint.to_string(),
                status: status_label(status),
            })
            .observe(took.as_secs_f64());
    }

    /// Count a request refused by the query bound `limit` (a fixed name, see
    /// [`QueryLimitLabels`]).
    pub fn query_refused(&self, limit: &'static str) {
        self.query_refused
            .get_or_create(&QueryLimitLabels {
                limit: limit.to_string(),
            })
            .inc();
    }

    /// Count blob bytes an import `uploaded` or `kept` (see [`ImportBlobLabels`]).
    pub fn import_blob_bytes(&self, outcome: &'static str, bytes: u64) {
        self.import_blob_bytes
            .get_or_create(&ImportBlobLabels {
                outcome: outcome.to_string(),
            })
            .inc_by(bytes);
    }

    /// Blob bytes imports `uploaded` or `kept` so far in this process.
    pub fn import_blob_bytes_total(&self, outcome: &'static str) -> u64 {
        self.import_blob_bytes
            .get_or_create(&ImportBlobLabels {
                outcome: outcome.to_string(),
            })
            .get()
    }

    /// Observe an S3 call attempt.
    pub fn s3_call(&self, operation: &str, status: Option<u16>, took: Duration) {
        self.s3
            .get_or_create(&S3Labels {
                operation: operation.to_string(),
                status: status_label(status),
            })
            .observe(took.as_secs_f64());
    }

    /// Read the gauges that come from the state, then encode everything.
    pub fn encode(&self, state: &AppState) -> String {
        let now = now_ms();
        {
            let readers = self.live_readers();
            let lag = readers
                .iter()
                .map(|clock| clock.silence(now))
                .max()
                .unwrap_or_default();
            self.change_readers.set(readers.len() as i64);
            self.change_reader_lag.set(lag.as_secs_f64());
        }
        self.grants.set(state.grants.len() as i64);
        if let Some(blobs) = &state.blobs {
            let usage = blobs.ledger.usage();
            self.blob_used.set(clamp(usage.used()));
            self.blob_quota.set(clamp(usage.quota));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn clamp(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The method as a label: the standard ones as they are, anything else `other`.
pub fn method_label(method: &str) -> &str {
    match method {
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" | "COPY" => method,
        _ => "other",
    }
}

fn status_label(status: Option<u16>) -> String {
    status.map_or_else(|| "error".to_string(), |s| s.to_string())
}

/// CouchDB endpoints named in the `endpoint` label; any other `_`-path is `other`.
const COUCH_ENDPOINTS: &[&str] = &[
    "_all_dbs",
    "_all_docs",
    "_bulk_docs",
    "_bulk_get",
    "_changes",
    "_design",
    "_ensure_full_commit",
    "_explain",
    "_find",
    "_index",
    "_local",
    "_revs_diff",
    "_session",
    "_up",
];

/// The kind of CouchDB endpoint `path` (relative to the server's base) is, as a bounded
/// label: `server` (`/`), `database` (`/{db}`), `document` (`/{db}/{id}…`), or the special
/// endpoint (`_changes`, `_find`, `_local`, …) — never a database name or document id.
pub fn couch_endpoint(path: &[&str]) -> &'static str {
    let special = |segment: &str| {
        COUCH_ENDPOINTS
            .iter()
            .find(|known| **known == segment)
            .copied()
            .unwrap_or("other")
    };
    match path {
        [] | [""] => "server",
        [first, ..] if first.starts_with('_') => special(first),
        [_db] | [_db, ""] => "database",
        [_db, second, ..] if second.starts_with('_') => special(second),
        _ => "document",
    }
}

/// Path of the metrics endpoint on the metrics listener.
pub const PATH: &str = "/metrics";

/// Serve `GET /metrics` of `state` on `listener` until the process ends. This listener is
/// not the public API (and not in `openapi.json`): every other path is 404.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, get(scrape).with_state(state)).await
}

async fn scrape(State(state): State<AppState>, uri: Uri) -> Response {
    if uri.path() != PATH {
        return StatusCode::NOT_FOUND.into_response();
    }
    state.metrics.measure_sequence_lag().await;
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.encode(&state),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn couch_endpoints_are_bounded() {
        assert_eq!(couch_endpoint(&[]), "server");
        assert_eq!(couch_endpoint(&["userdb-abc"]), "database");
        assert_eq!(couch_endpoint(&["userdb-abc", "doc-1"]), "document");
        assert_eq!(couch_endpoint(&["userdb-abc", "doc-1", "att"]), "document");
        assert_eq!(couch_endpoint(&["userdb-abc", "_changes"]), "_changes");
        assert_eq!(couch_endpoint(&["userdb-abc", "_local", "x"]), "_local");
        assert_eq!(couch_endpoint(&["userdb-abc", "_whatever"]), "other");
        assert_eq!(couch_endpoint(&["_up"]), "_up");
        assert_eq!(couch_endpoint(&["_node", "x"]), "other");
    }

    #[test]
    fn open_guards_count_connections() {
        let m = Metrics::new();
        let a = m.open(Open::WebSocket);
        let b = m.open(Open::WebSocket);
        let c = m.open(Open::SyncFeed);
        assert_eq!(m.websockets.get(), 2);
        drop(a);
        assert_eq!(m.websockets.get(), 1);
        assert_eq!(m.sync_feeds.get(), 1);
        drop((b, c));
        assert_eq!((m.websockets.get(), m.sync_feeds.get()), (0, 0));
    }

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "other");
    }
}
