//! Documents: throughput and latency through the data plane versus directly against the
//! CouchDB-compatible server it fronts (same server, same run, same HTTP client).
//!
//! | operation | through the data plane | directly (server admin) |
//! |---|---|---|
//! | read by id | `GET /api/v1/data/bench/{id}` | `GET /bench_direct/{id}` |
//! | query, page of N | `POST /api/v1/data/read {collection, limit}` | `POST /bench_direct/_find` (same index, same order) |
//! | write, single doc | `POST /api/v1/data/write {collection, data}` | `POST /bench_direct` |
//! | write, bulk of N | `POST /api/v1/data/write {collection, data:[…]}` | `POST /bench_direct/_bulk_docs` |

use std::sync::Arc;

use serde_json::{Value, json};

use super::load::{self, LoadStats};
use super::{APP, Bench, BenchError, Options};

/// The collection written and read through the data plane.
pub const COLLECTION: &str = "bench";
/// The database written and read directly.
const DIRECT_DB: &str = "bench_direct";
/// Bulk writes seeding each side before the reads (ten pages of the query).
const SEED_ROUNDS: usize = 10;

/// The operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// One document by id.
    ReadSingle,
    /// A query returning `batch` documents.
    ReadBulk,
    /// One document per request.
    WriteSingle,
    /// `batch` documents per request.
    WriteBulk,
}

impl Operation {
    /// Reads first (the collection keeps its size while they run), then writes.
    pub const ALL: [Operation; 4] = [
        Operation::ReadSingle,
        Operation::ReadBulk,
        Operation::WriteSingle,
        Operation::WriteBulk,
    ];

    /// Row label.
    pub fn name(self, batch: usize) -> String {
        match self {
            Operation::WriteSingle => "write, single doc".into(),
            Operation::ReadSingle => "read by id".into(),
            Operation::WriteBulk => format!("write, bulk of {batch}"),
            Operation::ReadBulk => format!("query, page of {batch}"),
        }
    }

    /// Documents one request moves.
    pub fn docs_per_op(self, batch: usize) -> usize {
        match self {
            Operation::WriteSingle | Operation::ReadSingle => 1,
            Operation::WriteBulk | Operation::ReadBulk => batch,
        }
    }
}

/// One operation at one client count, both paths.
#[derive(Debug, Clone)]
pub struct Row {
    /// Operation.
    pub op: Operation,
    /// Through the data plane.
    pub plane: LoadStats,
    /// Directly against the CouchDB-compatible server.
    pub direct: LoadStats,
}

/// What the documents section measured.
#[derive(Debug, Clone, Default)]
pub struct DocumentResults {
    /// One row per operation and client count.
    pub rows: Vec<Row>,
    /// Seconds per cell.
    pub seconds: f64,
    /// Bulk size.
    pub batch: usize,
    /// Data plane `VmRSS` after the load, KiB.
    pub rss_after_kib: Option<u64>,
    /// Data plane `VmHWM` after the load, KiB.
    pub peak_rss_kib: Option<u64>,
}

/// Which side a request goes to.
#[derive(Clone)]
enum Target {
    DataPlane {
        base: String,
        token: String,
    },
    Direct {
        db_url: String,
        user: String,
        password: String,
    },
}

impl Target {
    fn request(
        &self,
        http: &reqwest::Client,
        op: Operation,
        n: usize,
        batch: usize,
        ids: &[String],
    ) -> reqwest::RequestBuilder {
        let fields = |i: usize| json!({ "n": i, "title": format!("document {i}"), "done": i.is_multiple_of(2) });
        match self {
            Target::DataPlane { base, token } => {
                let request = match op {
                    Operation::WriteSingle => http
                        .post(format!("{base}/api/v1/data/write"))
                        .json(&json!({ "collection": COLLECTION, "data": fields(n) })),
                    Operation::WriteBulk => {
                        let docs: Vec<Value> = (0..batch).map(|i| fields(n * batch + i)).collect();
                        http.post(format!("{base}/api/v1/data/write"))
                            .json(&json!({ "collection": COLLECTION, "data": docs }))
                    }
                    Operation::ReadSingle => {
                        let id = &ids[n % ids.len()];
                        let key = vibe_cli::client::local_id(COLLECTION, id);
                        http.get(format!("{base}/api/v1/data/{COLLECTION}/{key}"))
                    }
                    Operation::ReadBulk => http
                        .post(format!("{base}/api/v1/data/read"))
                        .json(&json!({ "collection": COLLECTION, "limit": batch })),
                };
                request
                    .bearer_auth(token)
                    .header(vibe_cli::client::APP_ID_HEADER, APP)
            }
            Target::Direct {
                db_url,
                user,
                password,
            } => {
                let doc = |i: usize| {
                    let mut d = fields(i);
                    d["collection"] = json!(COLLECTION);
                    d["_id"] = json!(format!("{COLLECTION}/{}", unique_id()));
                    d
                };
                let request = match op {
                    Operation::WriteSingle => http.post(db_url.clone()).json(&doc(n)),
                    Operation::WriteBulk => {
                        let docs: Vec<Value> = (0..batch).map(|i| doc(n * batch + i)).collect();
                        http.post(format!("{db_url}/_bulk_docs"))
                            .json(&json!({ "docs": docs }))
                    }
                    Operation::ReadSingle => {
                        let id = &ids[n % ids.len()];
                        http.get(format!("{db_url}/{}", id.replace('/', "%2F")))
                    }
                    // The page the data plane asks for: by collection in id order, on the
                    // same index (see `direct_index`).
                    Operation::ReadBulk => http.post(format!("{db_url}/_find")).json(&json!({
                        "selector": { "collection": COLLECTION },
                        "sort": [{ "collection": "asc" }, { "_id": "asc" }],
                        "limit": batch,
                    })),
                };
                request.basic_auth(user, Some(password))
            }
        }
    }
}

/// A document id unique in this process (a random prefix plus a process-wide sequence), so
/// direct writes never collide with each other (a repeated id would measure 409s).
fn unique_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static SEQUENCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let prefix =
        PREFIX.get_or_init(|| hex::encode(&vibe_identity::Keypair::generate().seed()[..6]));
    let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n:012}")
}

/// Give the direct database the index the data plane creates on its own (`collection`,
/// `_id`), so both sides answer the query page from an index: without it CouchDB scans the
/// whole database for every direct `_find`, and the ratio would measure the missing index.
async fn direct_index(bench: &Bench, db: &str) -> Result<(), BenchError> {
    let response = bench
        .couch
        .request(reqwest::Method::POST, &format!("/{db}/_index"))
        .json(&json!({
            "index": { "fields": ["collection", "_id"] },
            "name": "idx-collection-id",
            "type": "json",
        }))
        .send()
        .await
        .map_err(|e| BenchError::Failed(format!("direct index: {e}")))?;
    if !response.status().is_success() {
        return Err(BenchError::Failed(format!(
            "direct index: CouchDB answered {}",
            response.status()
        )));
    }
    Ok(())
}

/// Seed `SEED_ROUNDS × batch` documents through `target`; returns their ids.
async fn seed(
    http: &reqwest::Client,
    target: &Target,
    batch: usize,
) -> Result<Vec<String>, BenchError> {
    let mut ids = Vec::new();
    for round in 0..SEED_ROUNDS {
        let response = target
            .request(http, Operation::WriteBulk, 1_000_000 + round, batch, &[])
            .send()
            .await
            .map_err(|e| BenchError::Failed(format!("seeding: {e}")))?;
        let body: Value = response
            .json()
            .await
            .map_err(|e| BenchError::Failed(format!("seeding: {e}")))?;
        ids.extend(
            body.as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["id"].as_str().map(str::to_string)),
        );
    }
    if ids.is_empty() {
        return Err(BenchError::Failed("seeding wrote no documents".into()));
    }
    Ok(ids)
}

/// Run every operation × client count × path.
pub async fn run(bench: &mut Bench, options: &Options) -> Result<DocumentResults, BenchError> {
    let token = bench.app_token().await?;
    let direct_db = bench.couch.db_name(DIRECT_DB);
    bench
        .couch
        .create_db(&direct_db)
        .await
        .map_err(crate::stack::StackError::from)?;
    direct_index(bench, &direct_db).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| BenchError::Failed(format!("HTTP client: {e}")))?;
    let plane = Target::DataPlane {
        base: bench.plane.url.clone(),
        token,
    };
    let direct = Target::Direct {
        db_url: format!("{}/{direct_db}", bench.couch.url),
        user: bench.couch.user.clone(),
        password: bench.couch.password.clone(),
    };
    let plane_ids = Arc::new(seed(&http, &plane, options.batch).await?);
    let direct_ids = Arc::new(seed(&http, &direct, options.batch).await?);

    let mut results = DocumentResults {
        seconds: options.seconds,
        batch: options.batch,
        ..DocumentResults::default()
    };
    for op in Operation::ALL {
        for &clients in &options.clients {
            let cell = |target: &Target, ids: &Arc<Vec<String>>| {
                let (http, target, ids, batch) =
                    (http.clone(), target.clone(), ids.clone(), options.batch);
                load::closed_loop(clients, options.seconds, move |n| {
                    load::succeeded(target.request(&http, op, n, batch, &ids))
                })
            };
            let plane_stats = cell(&plane, &plane_ids).await;
            let direct_stats = cell(&direct, &direct_ids).await;
            eprintln!(
                "{:<20} {clients:>3} clients  data plane {:>8.1} req/s (p50 {:.2} ms)  direct {:>8.1} req/s (p50 {:.2} ms)  errors {}",
                op.name(options.batch),
                plane_stats.per_sec,
                super::report::ms(plane_stats.latency.p50),
                direct_stats.per_sec,
                super::report::ms(direct_stats.latency.p50),
                plane_stats.errors + direct_stats.errors,
            );
            results.rows.push(Row {
                op,
                plane: plane_stats,
                direct: direct_stats,
            });
        }
    }
    results.rss_after_kib = bench.plane.rss_kib();
    results.peak_rss_kib = bench.plane.peak_rss_kib();
    Ok(results)
}
