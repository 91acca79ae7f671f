//! The Markdown a run prints: a heading, the exact command, machine and versions, then one
//! table per measurement. Pure functions of the results, so they are unit-tested.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::Results;
use super::blobs::BlobResults;
use super::documents::DocumentResults;
use super::load::median;
use super::process::ProcessResults;
use super::realtime::RealtimeResults;

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn mib_opt(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".to_string(), mib)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".into()
    }
}

/// Machine and software of a run.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// CPU model.
    pub cpu: String,
    /// Logical cores.
    pub cores: usize,
    /// Total memory, KiB.
    pub memory_kib: u64,
    /// `uname -r`.
    pub kernel: String,
    /// `rustc -V`.
    pub rustc: String,
    /// Short commit of the workspace, with a note when it has uncommitted changes.
    pub commit: String,
    /// pouchdb-server version.
    pub pouchdb: String,
    /// `node --version`.
    pub node: String,
    /// `s3s-fs --version`.
    pub s3s: String,
    /// 1-minute load average when the run started.
    pub load_start: String,
}

fn run_program(program: &str, args: &[&str]) -> Option<String> {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn unknown(value: Option<String>) -> String {
    value
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load_average() -> String {
    unknown(
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string)),
    )
}

fn server_binary(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| vibe_test_support::tools_dir().join(default))
}

/// The `version` of the npm package an executable belongs to.
fn npm_version(binary: &Path) -> Option<String> {
    let real = std::fs::canonicalize(binary).ok()?;
    real.ancestors().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join("package.json")).ok()?;
        let package: Value = serde_json::from_str(&text).ok()?;
        package["version"].as_str().map(str::to_string)
    })
}

impl Environment {
    /// Read the machine, the tools and the workspace's commit.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0);
        let root = crate::stack::workspace_root();
        let root = root.to_str().unwrap_or(".");
        let commit = unknown(run_program(
            "git",
            &["-C", root, "rev-parse", "--short", "HEAD"],
        ));
        let dirty = run_program(
            "git",
            &[
                "-C",
                root,
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "dataplane",
                "identity",
                "Cargo.lock",
            ],
        )
        .is_some_and(|s| !s.is_empty());
        let pouchdb_bin = server_binary(
            vibe_test_support::POUCHDB_SERVER_BIN_ENV,
            "pouchdb/node_modules/.bin/pouchdb-server",
        );
        let s3s_bin = server_binary(vibe_test_support::S3S_FS_BIN_ENV, "s3s/bin/s3s-fs");
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_kib,
            kernel: unknown(run_program("uname", &["-r"])),
            rustc: unknown(run_program("rustc", &["-V"])),
            commit: if dirty {
                format!("{commit} plus uncommitted changes under dataplane/")
            } else {
                commit
            },
            pouchdb: unknown(npm_version(&pouchdb_bin)),
            node: unknown(run_program("node", &["--version"])),
            s3s: unknown(
                run_program(s3s_bin.to_str().unwrap_or("s3s-fs"), &["--version"])
                    .map(|v| v.trim_start_matches("s3s-fs").trim().to_string()),
            ),
            load_start: load_average(),
        }
    }
}

/// The whole Markdown of a run: heading, command, environment, every section that ran.
pub fn markdown(results: &Results, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Run of {}\n", results.started);
    let _ = writeln!(out, "Command: `{command}`\n");
    let e = &results.environment;
    let profile = Path::new(&results.dataplane_binary)
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("unknown");
    let _ = writeln!(
        out,
        "- machine: {} × {}, {:.1} GiB RAM, Linux {}",
        e.cores,
        e.cpu,
        e.memory_kib as f64 / 1024.0 / 1024.0,
        e.kernel
    );
    let _ = writeln!(
        out,
        "- vibe-dataplane {} (commit {}, {profile} build), {}",
        env!("CARGO_PKG_VERSION"),
        e.commit,
        e.rustc
    );
    if results.external_store {
        let _ = writeln!(
            out,
            "- CouchDB: {} (an existing server, VIBE_TEST_COUCHDB_URL)",
            results.store
        );
    } else {
        let _ = writeln!(
            out,
            "- CouchDB-compatible server: pouchdb-server {} (LevelDB) on Node {}",
            e.pouchdb, e.node
        );
    }
    let _ = writeln!(
        out,
        "- S3-compatible server: s3s-fs {} (local file system)",
        e.s3s
    );
    let _ = writeln!(
        out,
        "- harness, data plane and both servers share the machine, over 127.0.0.1; HTTP/1.1 \
keep-alive (reqwest); open-file limit {} (inherited by the data plane); load average \
(1 min) {} at the start, {} at the end; the run took {:.0} s",
        results.open_files,
        e.load_start,
        results.load_end,
        results.took.as_secs_f64()
    );
    out.push('\n');
    if let Some(process) = &results.process {
        out.push_str(&process_table(process));
    }
    if let Some(documents) = &results.documents {
        out.push_str(&documents_table(documents));
    }
    if let Some(realtime) = &results.realtime {
        out.push_str(&realtime_table(realtime));
    }
    if let Some(blobs) = &results.blobs {
        out.push_str(&blobs_tables(blobs));
    }
    out
}

/// The process section.
pub fn process_table(p: &ProcessResults) -> String {
    let mut out = String::new();
    let spread = |values: &[Duration]| {
        let min = values.iter().min().copied().unwrap_or_default();
        let max = values.iter().max().copied().unwrap_or_default();
        format!(
            "{:.1} ms ({:.1}–{:.1})",
            ms(median(values)),
            ms(min),
            ms(max)
        )
    };
    let _ = writeln!(out, "#### Data plane process\n");
    let _ = writeln!(out, "| measure | value |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(
        out,
        "| start-up: spawn → first `/health` 200, median of {} (min–max) | {} |",
        p.startup_health.len(),
        spread(&p.startup_health)
    );
    let _ = writeln!(
        out,
        "| start-up: spawn → first `/ready` 200 (CouchDB and S3 reachable), median of {} (min–max) | {} |",
        p.startup_ready.len(),
        spread(&p.startup_ready)
    );
    let _ = writeln!(
        out,
        "| idle RSS (`VmRSS` 2 s after start, before any request) | {} |",
        mib_opt(p.idle_rss_kib)
    );
    out.push('\n');
    out
}

/// The documents section.
pub fn documents_table(d: &DocumentResults) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "#### Documents: through the data plane vs the CouchDB-compatible server direct\n"
    );
    let _ = writeln!(
        out,
        "Each cell runs {:.0} s; every client sends its next request when the previous answer \
is read. ratio = data plane req/s ÷ direct req/s.\n",
        d.seconds
    );
    let _ = writeln!(
        out,
        "| operation | clients | data plane req/s | direct req/s | ratio | data plane p50 / p99 ms | direct p50 / p99 ms | docs/s (data plane) | errors |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &d.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} | {} |",
            row.op.name(d.batch),
            row.plane.clients,
            row.plane.per_sec,
            row.direct.per_sec,
            ratio(row.plane.per_sec, row.direct.per_sec),
            ms(row.plane.latency.p50),
            ms(row.plane.latency.p99),
            ms(row.direct.latency.p50),
            ms(row.direct.latency.p99),
            row.plane.per_sec * row.op.docs_per_op(d.batch) as f64,
            row.plane.errors + row.direct.errors,
        );
    }
    let _ = writeln!(
        out,
        "\nData plane after the document load: `VmRSS` {}, `VmHWM` {}.\n",
        mib_opt(d.rss_after_kib),
        mib_opt(d.peak_rss_kib)
    );
    out
}

/// The realtime section.
pub fn realtime_table(r: &RealtimeResults) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "#### Realtime: WebSockets on `/ws`\n");
    let _ = writeln!(
        out,
        "Per row: a freshly started data plane (warmed by one socket and one push); N sockets \
connect, authenticate and subscribe to one collection; RSS per idle socket = data plane \
`VmRSS` growth ÷ N. Then {} documents are written through the data plane, {} ms apart, and \
write → push is the time from sending each write to its push arriving, over all (write, \
socket) pairs. Data plane open-file limit: {}.\n",
        r.writes,
        r.gap.as_millis(),
        r.plane_open_files
            .map_or_else(|| "n/a".to_string(), |l| l.to_string())
    );
    let _ = writeln!(
        out,
        "| sockets | connect + auth + subscribe (s) | data plane RSS with the sockets (MiB) | RSS per idle socket (KiB) | write → push p50 (ms) | p99 (ms) | max (ms) | the write itself p50 (ms) | pushes delivered |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &r.rows {
        if let Some(why) = &row.skipped {
            let _ = writeln!(out, "| {} | skipped: {why} | | | | | | | |", row.sockets);
            continue;
        }
        let connected = if row.connected == row.sockets {
            String::new()
        } else {
            format!(" ({} connected)", row.connected)
        };
        let _ = writeln!(
            out,
            "| {}{connected} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {}/{} |",
            row.sockets,
            row.connect.as_secs_f64(),
            row.rss_with_sockets_kib as f64 / 1024.0,
            row.per_socket_kib(),
            ms(row.delivery.p50),
            ms(row.delivery.p99),
            ms(row.delivery.max),
            ms(row.write.p50),
            row.delivered,
            row.expected
        );
    }
    out.push('\n');
    out
}

/// The blobs section.
pub fn blobs_tables(b: &BlobResults) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "#### Blobs\n");
    let _ = writeln!(
        out,
        "Presigned upload URLs: `POST /api/v1/blob/upload-url` over HTTP (token, grant, quota \
reservation, SigV4 presigning, JSON; no S3 round trip), {:.0} s per row.\n",
        b.seconds
    );
    let _ = writeln!(out, "| clients | URLs/s | p50 ms | p99 ms | errors |");
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
    for s in &b.presign {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.2} | {} |",
            s.clients,
            s.per_sec,
            ms(s.latency.p50),
            ms(s.latency.p99),
            s.errors
        );
    }
    let size = b.upload_bytes >> 20;
    let _ = writeln!(
        out,
        "\nUpload throughput, the same {size} MiB body to the same s3s-fs, median of {} \
alternating rounds (min–max):\n",
        b.rounds
    );
    let _ = writeln!(out, "| path | MiB/s |");
    let _ = writeln!(out, "|---|---:|");
    let row = |t: &super::blobs::Throughput| {
        format!(
            "{:.1} ({:.1}–{:.1})",
            t.median_mib_s, t.min_mib_s, t.max_mib_s
        )
    };
    let _ = writeln!(
        out,
        "| streamed through the data plane (`PUT /api/v1/blob/upload`, multipart to S3) | {} |",
        row(&b.streamed)
    );
    let _ = writeln!(
        out,
        "| direct `PUT` to a presigned URL (only the PUT timed) | {} |",
        row(&b.direct)
    );
    let _ = writeln!(
        out,
        "| ratio, through the data plane ÷ direct | {} |",
        ratio(b.streamed.median_mib_s, b.direct.median_mib_s)
    );
    let m = &b.memory;
    let _ = writeln!(
        out,
        "\nData plane memory during one {} MiB streamed upload ({:.1} MiB/s), on a freshly \
started process:\n",
        m.bytes >> 20,
        m.mib_s
    );
    let _ = writeln!(out, "| measure | value |");
    let _ = writeln!(out, "|---|---:|");
    let _ = writeln!(out, "| `VmRSS` before | {} |", mib(m.rss_before_kib));
    let _ = writeln!(
        out,
        "| largest `VmRSS` sampled every 20 ms ({} samples) | {} |",
        m.samples,
        mib(m.sampled_max_kib)
    );
    let _ = writeln!(out, "| `VmHWM` (peak) after | {} |", mib(m.hwm_kib));
    // The kernel updates VmHWM lazily (per-thread RSS counters are folded in periodically),
    // so a sample can exceed it: the peak is the larger of the two.
    let _ = writeln!(
        out,
        "| growth, peak (larger of the two above) − before | {} |",
        mib(m
            .hwm_kib
            .max(m.sampled_max_kib)
            .saturating_sub(m.rss_before_kib))
    );
    let _ = writeln!(out, "| `VmRSS` after | {} |", mib(m.rss_after_kib));
    out.push('\n');
    out
}

/// A command line as one would type it (arguments with shell characters single-quoted).
pub fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./,=:@%+".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
