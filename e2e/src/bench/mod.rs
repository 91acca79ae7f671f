//! `vibe-bench`: every benchmark of issue 10 in one run, against ONE pouchdb-server (or the
//! existing CouchDB of `VIBE_TEST_COUCHDB_URL`), ONE s3s-fs and the spawned release `vibe-dataplane` process, reached black-box over HTTP and
//! WebSocket the way users reach it. Prints Markdown (stdout) for `docs/benchmarks.md`;
//! progress goes to stderr.
//!
//! Sections (`--only`), each in its own module:
//! - [`process`]: start-up time and idle RSS of the data plane process (plus the RSS and
//!   open-file helpers the other sections use);
//! - [`documents`]: document reads and writes through the data plane vs directly against
//!   the CouchDB-compatible server;
//! - [`realtime`]: N WebSockets, memory per idle socket, write → push latency;
//! - [`blobs`]: presign rate, streamed upload vs direct presigned PUT, RSS during a 1 GiB
//!   streamed upload.
//!
//! [`load`] is the closed-loop load generator and percentile code they share; [`report`]
//! renders the results, the machine and the versions.

pub mod blobs;
pub mod documents;
pub mod load;
pub mod process;
pub mod realtime;
pub mod report;

use std::time::Duration;

use clap::{Parser, ValueEnum};
use vibe_test_support::{CouchServer, S3Server};

use crate::stack::{DataPlane, DataPlaneConfig, S3Settings, StackError};
use vibe_cli::client::{Client, Instance, TokenSource};
use vibe_cli::error::ClientError;

/// The app every section acts as.
pub const APP: &str = "vibe-bench";

/// Environment variable naming the command to print (set by `deploy/local/bench`).
pub const COMMAND_ENV: &str = "VIBE_BENCH_COMMAND";

/// A problem that stops a run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Starting or driving a server or the data plane failed.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// A call to the instance failed during setup.
    #[error("{what}: {source}")]
    Client {
        /// The step.
        what: String,
        /// The error.
        #[source]
        source: ClientError,
    },
    /// Anything else that makes the measurement meaningless.
    #[error("{0}")]
    Failed(String),
}

impl BenchError {
    fn client(what: &str) -> impl FnOnce(ClientError) -> Self + '_ {
        move |source| Self::Client {
            what: what.to_string(),
            source,
        }
    }
}

/// A part of the run, selectable with `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Section {
    /// Start-up time and idle RSS of the data plane process.
    Process,
    /// Document reads and writes, data plane vs CouchDB direct.
    Documents,
    /// WebSocket memory per socket and write → push latency.
    Realtime,
    /// Presign rate, upload throughput, RSS during a large streamed upload.
    Blobs,
}

impl Section {
    /// Every section, in run order.
    pub const ALL: [Section; 4] = [
        Section::Process,
        Section::Documents,
        Section::Realtime,
        Section::Blobs,
    ];
}

/// `vibe-bench` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vibe-bench",
    about = "Benchmarks of Vibe Cloud in one run: documents, realtime, blobs, data plane process",
    long_about = "Benchmarks of Vibe Cloud in one run, against one pouchdb-server (or, with \
VIBE_TEST_COUCHDB_URL/_USER/_PASSWORD set, an existing CouchDB), one s3s-fs and the release vibe-dataplane binary started as a separate process (black-box over HTTP and \
WebSocket). Prints Markdown for docs/benchmarks.md on stdout (machine, versions, the exact \
command, one table per measurement); progress goes to stderr.\n\n\
Sections: process (start-up time, idle RSS), documents (data plane vs CouchDB direct, \
single/bulk reads and writes at 1/16/64 clients), realtime (N sockets: RSS per idle socket, \
write -> push latency), blobs (presign rate, streamed upload vs direct presigned PUT, data \
plane RSS during a 1 GiB streamed upload).\n\n\
Needs the test servers (deploy/local/install-servers). deploy/local/bench installs them, builds \
the release binaries and runs this with the same arguments.",
    after_help = "Examples:\n  deploy/local/bench                         the full run (about 4 minutes)\n  \
deploy/local/bench --quick                 a smoke run (about 1 minute)\n  \
deploy/local/bench --only realtime --sockets 1,100,1000"
)]
pub struct Args {
    /// Sections to run, comma-separated [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Smoke run: short cells, few sockets, small uploads (explicit options still win)
    #[arg(long)]
    pub quick: bool,
    /// Seconds each load cell runs (documents, presign) [default: 5; quick: 1]
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Concurrent document clients, comma-separated [default: 1,16,64]
    #[arg(long, value_delimiter = ',')]
    pub clients: Option<Vec<usize>>,
    /// Documents per bulk write and per query page [default: 100]
    #[arg(long)]
    pub batch: Option<usize>,
    /// Start-up measurements of the data plane [default: 5; quick: 2]
    #[arg(long)]
    pub startups: Option<usize>,
    /// WebSocket counts, comma-separated [default: 1,100,1000,10000; quick: 1,100]
    #[arg(long, value_delimiter = ',')]
    pub sockets: Option<Vec<usize>>,
    /// Documents written per socket count while the sockets listen [default: 20; quick: 5]
    #[arg(long)]
    pub writes: Option<usize>,
    /// Milliseconds between those writes [default: 500; quick: 200]
    #[arg(long)]
    pub write_gap_ms: Option<u64>,
    /// Concurrent clients asking for presigned upload URLs, comma-separated [default: 1,16]
    #[arg(long, value_delimiter = ',')]
    pub presign_clients: Option<Vec<usize>>,
    /// MiB per upload in the throughput comparison [default: 256; quick: 16]
    #[arg(long)]
    pub upload_mib: Option<u64>,
    /// Rounds of the throughput comparison (median reported) [default: 3; quick: 1]
    #[arg(long)]
    pub upload_rounds: Option<usize>,
    /// MiB of the streamed upload whose data plane RSS is sampled [default: 1024; quick: 64]
    #[arg(long)]
    pub rss_upload_mib: Option<u64>,
}

/// Resolved options of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Sections to run (sorted, no duplicates).
    pub sections: Vec<Section>,
    /// Seconds each load cell runs.
    pub seconds: f64,
    /// Concurrent document clients.
    pub clients: Vec<usize>,
    /// Documents per bulk write / page size of bulk reads.
    pub batch: usize,
    /// Start-up measurements.
    pub startups: usize,
    /// WebSocket counts.
    pub sockets: Vec<usize>,
    /// Writes per socket count.
    pub writes: usize,
    /// Pause between those writes.
    pub write_gap: Duration,
    /// Concurrent presign clients.
    pub presign_clients: Vec<usize>,
    /// Bytes per upload in the throughput comparison.
    pub upload_bytes: u64,
    /// Rounds of the throughput comparison.
    pub upload_rounds: usize,
    /// Bytes of the RSS-sampled streamed upload.
    pub rss_upload_bytes: u64,
}

const MIB: u64 = 1024 * 1024;

impl Default for Options {
    fn default() -> Self {
        Self {
            sections: Section::ALL.to_vec(),
            seconds: 5.0,
            clients: vec![1, 16, 64],
            batch: 100,
            startups: 5,
            sockets: vec![1, 100, 1000, 10_000],
            writes: 20,
            write_gap: Duration::from_millis(500),
            presign_clients: vec![1, 16],
            upload_bytes: 256 * MIB,
            upload_rounds: 3,
            rss_upload_bytes: 1024 * MIB,
        }
    }
}

impl Options {
    /// The smoke-run defaults (`--quick`).
    pub fn quick() -> Self {
        Self {
            seconds: 1.0,
            startups: 2,
            sockets: vec![1, 100],
            writes: 5,
            write_gap: Duration::from_millis(200),
            upload_bytes: 16 * MIB,
            upload_rounds: 1,
            rss_upload_bytes: 64 * MIB,
            ..Self::default()
        }
    }

    /// Whether `section` runs.
    pub fn runs(&self, section: Section) -> bool {
        self.sections.contains(&section)
    }
}

impl Args {
    /// The options these arguments select (quick or full defaults, then explicit values).
    pub fn options(&self) -> Result<Options, String> {
        let mut o = if self.quick {
            Options::quick()
        } else {
            Options::default()
        };
        if !self.only.is_empty() {
            let mut sections = self.only.clone();
            sections.sort();
            sections.dedup();
            o.sections = sections;
        }
        if let Some(v) = self.seconds {
            o.seconds = v;
        }
        if let Some(v) = &self.clients {
            o.clients = v.clone();
        }
        if let Some(v) = self.batch {
            o.batch = v;
        }
        if let Some(v) = self.startups {
            o.startups = v;
        }
        if let Some(v) = &self.sockets {
            o.sockets = v.clone();
        }
        if let Some(v) = self.writes {
            o.writes = v;
        }
        if let Some(v) = self.write_gap_ms {
            o.write_gap = Duration::from_millis(v);
        }
        if let Some(v) = &self.presign_clients {
            o.presign_clients = v.clone();
        }
        if let Some(v) = self.upload_mib {
            o.upload_bytes = v * MIB;
        }
        if let Some(v) = self.upload_rounds {
            o.upload_rounds = v;
        }
        if let Some(v) = self.rss_upload_mib {
            o.rss_upload_bytes = v * MIB;
        }
        let positive = |name: &str, values: &[usize]| {
            if values.is_empty() || values.contains(&0) {
                Err(format!("--{name} needs positive numbers"))
            } else {
                Ok(())
            }
        };
        positive("clients", &o.clients)?;
        positive("sockets", &o.sockets)?;
        positive("presign-clients", &o.presign_clients)?;
        positive("batch", &[o.batch])?;
        positive("startups", &[o.startups])?;
        positive("writes", &[o.writes])?;
        positive("upload-rounds", &[o.upload_rounds])?;
        if !(o.seconds.is_finite() && o.seconds > 0.0) {
            return Err("--seconds must be a positive number".into());
        }
        if o.upload_bytes == 0 || o.rss_upload_bytes == 0 {
            return Err("--upload-mib and --rss-upload-mib must be positive".into());
        }
        Ok(o)
    }
}

/// Everything one run measured; a section that did not run is `None`.
#[derive(Debug, Default)]
pub struct Results {
    /// Start-up and idle RSS.
    pub process: Option<process::ProcessResults>,
    /// Documents.
    pub documents: Option<documents::DocumentResults>,
    /// Realtime.
    pub realtime: Option<realtime::RealtimeResults>,
    /// Blobs.
    pub blobs: Option<blobs::BlobResults>,
    /// Open-file limit of the harness, inherited by the data plane.
    pub open_files: u64,
    /// The data plane binary that was measured.
    pub dataplane_binary: String,
    /// Machine and versions.
    pub environment: report::Environment,
    /// When the run started (UTC, minutes).
    pub started: String,
    /// How long it took.
    pub took: Duration,
    /// 1-minute load average at the end.
    pub load_end: String,
    /// The CouchDB measured, as it names itself (`Apache CouchDB 3.5.0`, `pouchdb-server …`).
    pub store: String,
    /// Whether it is an existing CouchDB (`VIBE_TEST_COUCHDB_URL`) rather than the stand-in.
    pub external_store: bool,
}

/// The servers and the data plane of a run, with the owner's session.
pub struct Bench {
    /// The CouchDB-compatible server.
    pub couch: CouchServer,
    /// The S3-compatible server.
    pub s3: S3Server,
    /// The data plane process.
    pub plane: DataPlane,
    /// The owner's session (refreshes itself), set once the instance is claimed.
    owner: Option<Client>,
}

impl Bench {
    /// Start pouchdb-server (or use the existing CouchDB of `VIBE_TEST_COUCHDB_URL`), s3s-fs
    /// (with a bucket) and a claimable data plane.
    pub async fn start() -> Result<Self, BenchError> {
        let store = if vibe_test_support::uses_external_couchdb() {
            "the existing CouchDB (VIBE_TEST_COUCHDB_URL)"
        } else {
            "pouchdb-server"
        };
        eprintln!("starting {store}, s3s-fs and the data plane…");
        let couch = CouchServer::start().await.map_err(StackError::from)?;
        let s3 = S3Server::start().await.map_err(StackError::from)?;
        let bucket = "vibe-bench";
        s3.create_bucket(bucket).await.map_err(StackError::from)?;
        let mut config = DataPlaneConfig::claimable(&couch);
        config.s3 = Some(S3Settings {
            endpoint: s3.endpoint.clone(),
            access_key: s3.access_key.clone(),
            secret_key: s3.secret_key.clone(),
            region: s3.region.clone(),
            bucket: bucket.into(),
        });
        // Room for every upload of the run; each is deleted after it is measured.
        config.extra_env.extend([
            ("BLOB_QUOTA_BYTES".to_string(), (1u64 << 40).to_string()),
            ("BLOB_MAX_FILE_SIZE".to_string(), (64u64 << 30).to_string()),
            // One app drives every client of the run: the per-app admission bounds
            // (`query.app_*`) would measure themselves instead of the data plane.
            (
                "VIBE_QUERY_APP_CONCURRENCY".to_string(),
                "100000".to_string(),
            ),
            (
                "VIBE_QUERY_APP_RATE_PER_SEC".to_string(),
                "100000000".to_string(),
            ),
        ]);
        let plane = DataPlane::start(config).await?;
        Ok(Self {
            couch,
            s3,
            plane,
            owner: None,
        })
    }

    /// The owner's client: claims the instance and logs in on first use, and grants the
    /// benchmark app everything the sections need.
    pub async fn owner(&mut self) -> Result<Client, BenchError> {
        if let Some(owner) = &self.owner {
            return Ok(owner.clone());
        }
        let key = vibe_identity::Keypair::generate();
        let instance = Instance::new(&self.plane.url).map_err(BenchError::client("instance"))?;
        let code = self
            .plane
            .config
            .claim_code
            .clone()
            .ok_or_else(|| BenchError::Failed("the data plane has no claim code".into()))?;
        instance
            .claim(&key, &code)
            .await
            .map_err(BenchError::client("claim"))?;
        let tokens = instance
            .login(&key)
            .await
            .map_err(BenchError::client("login"))?;
        let owner = Client::new(instance, TokenSource::session(tokens));
        let permissions = [
            format!("read:{}", documents::COLLECTION),
            format!("write:{}", documents::COLLECTION),
            format!("read:{}", realtime::COLLECTION),
            format!("write:{}", realtime::COLLECTION),
            format!("blob:write:{}", blobs::COLLECTION),
            format!("blob:delete:{}", blobs::COLLECTION),
        ];
        owner
            .set_grants(APP, Some("vibe-bench"), &permissions, "always")
            .await
            .map_err(BenchError::client("grants"))?;
        self.owner = Some(owner.clone());
        Ok(owner)
    }

    /// A fresh app token (minted per use: access tokens live 15 minutes, a run longer).
    pub async fn app_token(&mut self) -> Result<String, BenchError> {
        let owner = self.owner().await?;
        let token = owner
            .app_token(APP)
            .await
            .map_err(BenchError::client("app token"))?;
        Ok(token.access_token)
    }

    /// A client acting as the benchmark app with a fresh token.
    pub async fn app_client(&mut self) -> Result<Client, BenchError> {
        let token = self.app_token().await?;
        Ok(Client::new(self.plane.instance(), TokenSource::fixed(token)).as_app(APP))
    }

    /// Restart the data plane (same port, configuration and data) and wait for `/ready`.
    pub async fn restart_plane(&mut self) -> Result<(), BenchError> {
        self.plane.restart().await?;
        process::wait_ready(&self.plane.url).await
    }
}

/// Run the selected sections in order (process, documents, realtime, blobs).
pub async fn run(options: &Options) -> Result<Results, BenchError> {
    let began = std::time::Instant::now();
    let started = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let environment = report::Environment::detect();
    let open_files = process::raise_open_file_limit();
    let mut bench = Bench::start().await?;
    let store = bench.couch.describe().await.map_err(StackError::from)?;
    eprintln!("CouchDB: {store}");
    let mut results = Results {
        store,
        external_store: bench.couch.is_external(),
        open_files,
        dataplane_binary: crate::stack::dataplane_binary()?.display().to_string(),
        environment,
        started,
        ..Results::default()
    };
    let outcome = async {
        for section in &options.sections {
            eprintln!("== {section:?}");
            let section_began = std::time::Instant::now();
            match section {
                Section::Process => {
                    results.process = Some(process::run(&mut bench, options).await?);
                }
                Section::Documents => {
                    results.documents = Some(documents::run(&mut bench, options).await?);
                }
                Section::Realtime => {
                    results.realtime = Some(realtime::run(&mut bench, options).await?);
                }
                Section::Blobs => {
                    results.blobs = Some(blobs::run(&mut bench, options).await?);
                }
            }
            eprintln!(
                "== {section:?} took {:.1} s",
                section_began.elapsed().as_secs_f64()
            );
        }
        Ok::<_, BenchError>(())
    }
    .await;
    bench.plane.stop().await;
    results.took = began.elapsed();
    results.load_end = report::load_average();
    outcome.map(|()| results)
}

#[cfg(test)]
mod tests;
