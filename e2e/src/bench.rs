//! `vibe-bench`: document throughput and latency through the data plane versus directly
//! against the CouchDB-compatible server it fronts (same server, same run, same HTTP
//! client), plus the data plane's idle memory and start-up time. Prints Markdown.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vibe_test_support::CouchServer;

use crate::client::{Client, Instance, TokenSource};
use crate::stack::{DataPlane, DataPlaneConfig, StackError};

/// Options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds each (operation, clients, path) cell runs.
    pub seconds: f64,
    /// Concurrent client counts.
    pub clients: Vec<usize>,
    /// Documents per bulk write / page size of bulk reads.
    pub batch: usize,
    /// Start-up measurements.
    pub startups: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seconds: 5.0,
            clients: vec![1, 16, 64],
            batch: 100,
            startups: 5,
        }
    }
}

/// The operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// One document per request.
    WriteSingle,
    /// One document by id.
    ReadSingle,
    /// `batch` documents per request.
    WriteBulk,
    /// A query returning `batch` documents.
    ReadBulk,
}

impl Operation {
    fn name(self, batch: usize) -> String {
        match self {
            Operation::WriteSingle => "write, single doc".into(),
            Operation::ReadSingle => "read by id".into(),
            Operation::WriteBulk => format!("write, bulk of {batch}"),
            Operation::ReadBulk => format!("query, page of {batch}"),
        }
    }

    fn docs_per_op(self, batch: usize) -> usize {
        match self {
            Operation::WriteSingle | Operation::ReadSingle => 1,
            Operation::WriteBulk | Operation::ReadBulk => batch,
        }
    }
}

/// Which side a request goes to.
#[derive(Clone)]
enum Target {
    DataPlane {
        base: String,
        token: String,
        app: String,
    },
    Direct {
        db_url: String,
        user: String,
        password: String,
    },
}

const COLLECTION: &str = "bench";

impl Target {
    fn label(&self) -> &'static str {
        match self {
            Target::DataPlane { .. } => "data plane",
            Target::Direct { .. } => "CouchDB direct",
        }
    }

    fn request(
        &self,
        http: &reqwest::Client,
        op: Operation,
        n: usize,
        batch: usize,
        ids: &[String],
    ) -> reqwest::RequestBuilder {
        let doc = |i: usize| json!({ "collection": COLLECTION, "n": i, "title": format!("document {i}"), "done": i.is_multiple_of(2) });
        match self {
            Target::DataPlane { base, token, app } => {
                let request = match op {
                    Operation::WriteSingle => http
                        .post(format!("{base}/api/v1/data/write"))
                        .json(&json!({ "collection": COLLECTION, "data": { "n": n, "title": format!("document {n}"), "done": n.is_multiple_of(2) } })),
                    Operation::WriteBulk => {
                        let docs: Vec<Value> = (0..batch).map(|i| json!({ "n": n * batch + i, "title": "bulk", "done": false })).collect();
                        http.post(format!("{base}/api/v1/data/write")).json(&json!({ "collection": COLLECTION, "data": docs }))
                    }
                    Operation::ReadSingle => {
                        let id = &ids[n % ids.len()];
                        let key = id.strip_prefix("bench/").unwrap_or(id);
                        http.get(format!("{base}/api/v1/data/{COLLECTION}/{key}"))
                    }
                    Operation::ReadBulk => http
                        .post(format!("{base}/api/v1/data/read"))
                        .json(&json!({ "collection": COLLECTION, "limit": batch })),
                };
                request
                    .bearer_auth(token)
                    .header(crate::client::APP_ID_HEADER, app)
            }
            Target::Direct {
                db_url,
                user,
                password,
            } => {
                let request = match op {
                    Operation::WriteSingle => {
                        let mut d = doc(n);
                        d["_id"] = json!(format!("bench/{}", uuid_like(n)));
                        http.post(db_url.clone()).json(&d)
                    }
                    Operation::WriteBulk => {
                        let docs: Vec<Value> = (0..batch)
                            .map(|i| {
                                let mut d = doc(n * batch + i);
                                d["_id"] = json!(format!("bench/{}", uuid_like(n * batch + i)));
                                d
                            })
                            .collect();
                        http.post(format!("{db_url}/_bulk_docs"))
                            .json(&json!({ "docs": docs }))
                    }
                    Operation::ReadSingle => {
                        let id = &ids[n % ids.len()];
                        http.get(format!("{db_url}/{}", id.replace('/', "%2F")))
                    }
                    Operation::ReadBulk => http
                        .post(format!("{db_url}/_find"))
                        .json(&json!({ "selector": { "collection": COLLECTION }, "limit": batch })),
                };
                request.basic_auth(user, Some(password))
            }
        }
    }
}

fn uuid_like(_n: usize) -> String {
    // Unique per process run (not per cell: every cell restarts its own counter, and a
    // repeated id would measure 409s): a random prefix plus a process-wide sequence.
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static SEQUENCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let prefix =
        PREFIX.get_or_init(|| hex::encode(&vibe_identity::Keypair::generate().seed()[..6]));
    let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n:012}")
}

/// One measured cell.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Operation.
    pub op: Operation,
    /// Concurrent clients.
    pub clients: usize,
    /// `data plane` or `CouchDB direct`.
    pub path: &'static str,
    /// Requests per second.
    pub ops_per_sec: f64,
    /// Documents per second.
    pub docs_per_sec: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Failed requests (non-2xx or transport errors).
    pub errors: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn measure(
    http: &reqwest::Client,
    target: &Target,
    op: Operation,
    clients: usize,
    options: &Options,
    ids: Arc<Vec<String>>,
) -> Cell {
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Warm the pool and the server path briefly.
    for _ in 0..clients.min(8) {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = target
            .request(http, op, n, options.batch, &ids)
            .send()
            .await;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let http = http.clone();
        let target = target.clone();
        let ids = ids.clone();
        let counter = counter.clone();
        let batch = options.batch;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let at = Instant::now();
                let ok = match target.request(&http, op, n, batch, &ids).send().await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                latencies.push(at.elapsed());
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, e)) = task.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let ops = latencies.len() as f64 / elapsed;
    Cell {
        op,
        clients,
        path: target.label(),
        ops_per_sec: ops,
        docs_per_sec: ops * op.docs_per_op(options.batch) as f64,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        errors,
    }
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Results {
    /// Throughput/latency cells.
    pub cells: Vec<Cell>,
    /// RSS right after start-up, KiB.
    pub idle_rss_kib: Option<u64>,
    /// RSS after the load, KiB.
    pub rss_after_load_kib: Option<u64>,
    /// Peak RSS during the load, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Start-up to `/health` 200, per measurement.
    pub startup_health: Vec<Duration>,
    /// Start-up to `/ready` 200, per measurement.
    pub startup_ready: Vec<Duration>,
}

/// Run the whole benchmark; progress goes to stderr.
pub async fn run(options: &Options) -> Result<Results, StackError> {
    let mut results = Results::default();
    eprintln!("starting pouchdb-server and the data plane (release build)…");
    let couch = CouchServer::start().await?;
    let config = DataPlaneConfig::claimable(&couch);
    let mut plane = DataPlane::start(config).await?;

    // Start-up time: restart a few times, timing /health and /ready.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("HTTP client");
    for _ in 0..options.startups {
        plane.stop().await;
        let at = Instant::now();
        plane.restart().await?;
        results.startup_health.push(plane.started_in);
        loop {
            let ready = http.get(format!("{}/ready", plane.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        results.startup_ready.push(at.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    results.idle_rss_kib = plane.rss_kib();

    // Owner, app, grants; the direct database.
    let key = vibe_identity::Keypair::generate();
    let instance = Instance::new(&plane.url).map_err(|e| StackError::Io(e.to_string()))?;
    let code = plane.config.claim_code.clone().expect("claimable");
    let setup = async {
        instance.claim(&key, &code).await?;
        let tokens = instance.login(&key).await?;
        let owner = Client::new(instance.clone(), TokenSource::session(tokens));
        owner
            .set_grants(
                "bench-app",
                Some("bench"),
                &[format!("read:{COLLECTION}"), format!("write:{COLLECTION}")],
                "always",
            )
            .await?;
        owner.app_token("bench-app").await
    };
    let app_token = setup
        .await
        .map_err(|e| StackError::Io(format!("setup: {e}")))?;
    couch.create_db("bench_direct").await?;
    let through = Target::DataPlane {
        base: plane.url.clone(),
        token: app_token.access_token,
        app: "bench-app".into(),
    };
    let direct = Target::Direct {
        db_url: format!("{}/bench_direct", couch.url),
        user: couch.user.clone(),
        password: couch.password.clone(),
    };

    // Seed documents to read (same count both sides).
    let mut seeded: Vec<Arc<Vec<String>>> = Vec::new();
    for target in [&through, &direct] {
        let mut ids = Vec::new();
        for round in 0..10 {
            let response = target
                .request(&http, Operation::WriteBulk, 1_000_000 + round, 100, &[])
                .send()
                .await
                .map_err(|e| StackError::Io(format!("seeding: {e}")))?;
            let body: Value = response
                .json()
                .await
                .map_err(|e| StackError::Io(format!("seeding: {e}")))?;
            ids.extend(
                body.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["id"].as_str().map(str::to_string)),
            );
        }
        if ids.is_empty() {
            return Err(StackError::Io("seeding wrote no documents".into()));
        }
        seeded.push(Arc::new(ids));
    }

    // Reads first (so the collection has a stable size), then writes.
    let ops = [
        Operation::ReadSingle,
        Operation::ReadBulk,
        Operation::WriteSingle,
        Operation::WriteBulk,
    ];
    for op in ops {
        for &clients in &options.clients {
            for (target, ids) in [(&through, &seeded[0]), (&direct, &seeded[1])] {
                let cell = measure(&http, target, op, clients, options, ids.clone()).await;
                eprintln!(
                    "{:<22} {:>3} clients  {:<15} {:>9.1} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
                    op.name(options.batch),
                    clients,
                    cell.path,
                    cell.ops_per_sec,
                    ms(cell.p50),
                    ms(cell.p99),
                    cell.errors
                );
                results.cells.push(cell);
            }
        }
    }
    results.rss_after_load_kib = plane.rss_kib();
    results.peak_rss_kib = plane.peak_rss_kib();
    plane.stop().await;
    Ok(results)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    percentile(&sorted, 50.0)
}

/// The results as Markdown tables.
pub fn markdown(results: &Results, options: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Documents: data plane vs CouchDB-compatible server direct\n"
    );
    let _ = writeln!(
        out,
        "Each cell runs {:.0} s; clients loop request after request. \"ratio\" = data plane req/s ÷ direct req/s.\n",
        options.seconds
    );
    let _ = writeln!(
        out,
        "| operation | clients | data plane req/s | direct req/s | ratio | data plane p50 / p99 ms | direct p50 / p99 ms | docs/s (data plane) | errors |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = results.cells.chunks(2);
    for pair in &mut rows {
        let [plane, direct] = pair else { continue };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} | {} |",
            plane.op.name(options.batch),
            plane.clients,
            plane.ops_per_sec,
            direct.ops_per_sec,
            if direct.ops_per_sec > 0.0 {
                plane.ops_per_sec / direct.ops_per_sec
            } else {
                0.0
            },
            ms(plane.p50),
            ms(plane.p99),
            ms(direct.p50),
            ms(direct.p99),
            plane.docs_per_sec,
            plane.errors + direct.errors,
        );
    }
    let _ = writeln!(out, "\n### Data plane process\n");
    let _ = writeln!(out, "| measure | value |");
    let _ = writeln!(out, "|---|---:|");
    let kib = |v: Option<u64>| {
        v.map_or("n/a".to_string(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    let _ = writeln!(
        out,
        "| idle RSS (2 s after start, before any load) | {} |",
        kib(results.idle_rss_kib)
    );
    let _ = writeln!(
        out,
        "| RSS after the document load | {} |",
        kib(results.rss_after_load_kib)
    );
    let _ = writeln!(out, "| peak RSS (VmHWM) | {} |", kib(results.peak_rss_kib));
    let _ = writeln!(
        out,
        "| start-up: spawn → `/health` 200 (median of {}) | {:.1} ms |",
        results.startup_health.len(),
        ms(median(&results.startup_health))
    );
    let _ = writeln!(
        out,
        "| start-up: spawn → `/ready` 200 (median of {}) | {:.1} ms |",
        results.startup_ready.len(),
        ms(median(&results.startup_ready))
    );
    out
}

/// Machine and versions, as a Markdown list.
pub fn environment() -> String {
    let run = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let pouchdb = std::fs::read_to_string(
        vibe_test_support::tools_dir().join("pouchdb/node_modules/pouchdb-server/package.json"),
    )
    .ok()
    .and_then(|p| serde_json::from_str::<Value>(&p).ok())
    .and_then(|p| p["version"].as_str().map(str::to_string))
    .unwrap_or_else(|| "unknown".into());
    let root = crate::stack::workspace_root();
    let commit = run(
        "git",
        &[
            "-C",
            root.to_str().unwrap_or("."),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let mut out = String::new();
    let _ = writeln!(
        out,
        "- machine: {} × {cpu}, {memory} RAM, Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        run("uname", &["-r"])
    );
    let _ = writeln!(
        out,
        "- vibe-dataplane {} (commit {commit}, release build), {}",
        env!("CARGO_PKG_VERSION"),
        run("rustc", &["-V"])
    );
    let _ = writeln!(
        out,
        "- CouchDB-compatible server: pouchdb-server {pouchdb} (LevelDB) on Node {}",
        run("node", &["--version"])
    );
    let _ = writeln!(
        out,
        "- client, data plane and server share the machine; HTTP/1.1 keep-alive (reqwest), 127.0.0.1"
    );
    out
}

/// Parse `vibe-bench` arguments (`--seconds S`, `--clients 1,16,64`, `--batch N`,
/// `--startups N`, `--quick`).
pub fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = |name: &str| {
            iter.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--seconds" => {
                options.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "--clients" => {
                options.clients = value("--clients")?
                    .split(',')
                    .map(|c| {
                        c.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--clients: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--batch" => {
                options.batch = value("--batch")?
                    .parse()
                    .map_err(|e| format!("--batch: {e}"))?
            }
            "--startups" => {
                options.startups = value("--startups")?
                    .parse()
                    .map_err(|e| format!("--startups: {e}"))?
            }
            "--quick" => {
                options.seconds = 1.0;
                options.startups = 2;
            }
            "-h" | "--help" => return Err(HELP.into()),
            other => return Err(format!("unknown argument {other}\n\n{HELP}")),
        }
    }
    if options.clients.is_empty()
        || options.clients.contains(&0)
        || options.batch == 0
        || options.seconds <= 0.0
    {
        return Err("clients, batch and seconds must be positive".into());
    }
    Ok(options)
}

/// `vibe-bench --help`.
pub const HELP: &str = "\
vibe-bench: documents through the data plane vs directly against the CouchDB-compatible
server (same server, same run), data plane idle RSS and start-up time. Prints Markdown.

Usage: cargo run --release -p vibe-e2e --bin vibe-bench -- [options]
  --seconds S     duration of each cell (default 5)
  --clients LIST  concurrent clients, comma-separated (default 1,16,64)
  --batch N       documents per bulk write / query page (default 100)
  --startups N    start-up measurements (default 5)
  --quick         1 s cells, 2 start-ups (a smoke run)
Needs the test servers: deploy/local/install-servers.";
