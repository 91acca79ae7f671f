//! Tests of the argument handling, the statistics and the report, plus one tiny end-to-end
//! run of every section against the real servers.

use std::time::Duration;

use clap::Parser;

use super::load::{Latency, LoadStats, median, median_f64, percentile};
use super::report::{self, shell_words};
use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn percentiles_are_nearest_rank() {
    let sorted: Vec<Duration> = (1..=100).map(ms).collect();
    assert_eq!(percentile(&sorted, 50.0), ms(50));
    assert_eq!(percentile(&sorted, 99.0), ms(99));
    assert_eq!(percentile(&sorted, 100.0), ms(100));
    assert_eq!(percentile(&sorted, 0.0), ms(1));
    assert_eq!(percentile(&[ms(7)], 99.0), ms(7));
    assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    let mut samples = vec![ms(3), ms(1), ms(2)];
    let latency = Latency::of(&mut samples);
    assert_eq!((latency.count, latency.p50, latency.max), (3, ms(2), ms(3)));
    assert_eq!(median(&[ms(9), ms(1), ms(5)]), ms(5));
    assert_eq!(median_f64(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    assert_eq!(median_f64(&[]), 0.0);
}

#[test]
fn quick_defaults_yield_to_explicit_options() {
    let parse = |args: &[&str]| {
        Args::try_parse_from(std::iter::once("vibe-bench").chain(args.iter().copied()))
            .expect("valid arguments")
            .options()
    };
    assert_eq!(parse(&[]).unwrap(), Options::default());
    let quick = parse(&["--quick", "--sockets", "1,10", "--only", "blobs,realtime"]).unwrap();
    assert_eq!(quick.seconds, 1.0);
    assert_eq!(quick.sockets, vec![1, 10]);
    assert_eq!(quick.sections, vec![Section::Realtime, Section::Blobs]);
    assert_eq!(quick.upload_bytes, 16 * MIB);
    assert!(parse(&["--clients", "0"]).is_err());
    assert!(parse(&["--seconds", "0"]).is_err());
    assert!(Args::try_parse_from(["vibe-bench", "--only", "everything"]).is_err());
}

#[test]
fn shell_words_quote_what_a_shell_would_split() {
    let words = ["run", "--only", "documents,blobs", "a b", "it's"].map(String::from);
    assert_eq!(
        shell_words(&words),
        r"run --only documents,blobs 'a b' 'it'\''s'"
    );
}

#[test]
fn report_has_every_section_that_ran() {
    let stats = |per_sec| LoadStats {
        clients: 16,
        per_sec,
        latency: Latency {
            count: 10,
            p50: ms(2),
            p99: ms(9),
            max: ms(12),
        },
        errors: 0,
    };
    let mut results = Results {
        started: "2026-11-25 23:00 UTC".into(),
        dataplane_binary: "/t/release/vibe-dataplane".into(),
        documents: Some(documents::DocumentResults {
            rows: vec![documents::Row {
                op: documents::Operation::WriteBulk,
                plane: stats(50.0),
                direct: stats(100.0),
            }],
            seconds: 5.0,
            batch: 100,
            ..Default::default()
        }),
        realtime: Some(realtime::RealtimeResults {
            rows: vec![
                realtime::Row {
                    sockets: 1000,
                    connected: 1000,
                    rss_before_kib: 10_000,
                    rss_with_sockets_kib: 20_240,
                    delivery: Latency {
                        count: 20_000,
                        p50: ms(27),
                        p99: ms(42),
                        max: ms(45),
                    },
                    delivered: 20_000,
                    expected: 20_000,
                    ..Default::default()
                },
                realtime::Row {
                    sockets: 100_000,
                    skipped: Some("open-file limit".into()),
                    ..Default::default()
                },
            ],
            writes: 20,
            gap: ms(500),
            plane_open_files: Some(20_000),
        }),
        ..Results::default()
    };
    let text = report::markdown(&results, "deploy/local/bench");
    assert!(text.contains("Command: `deploy/local/bench`"), "{text}");
    assert!(text.contains("release build"), "{text}");
    assert!(
        text.contains("| write, bulk of 100 | 16 | 50 | 100 | 0.50 | 2.00 / 9.00 |"),
        "{text}"
    );
    assert!(
        text.contains("| 1000 | 0.00 | 19.8 | 10.2 | 27.00 | 42.00 | 45.00 |"),
        "{text}"
    );
    assert!(
        text.contains("| 100000 | skipped: open-file limit |"),
        "{text}"
    );
    assert!(!text.contains("Data plane process"), "{text}");
    assert!(!text.contains("#### Blobs"), "{text}");
    assert!(text.contains("pouchdb-server"), "{text}");
    results.blobs = Some(blobs::BlobResults::default());
    assert!(report::markdown(&results, "x").contains("#### Blobs"));
    // On an existing CouchDB the report names it and its version.
    results.store = "Apache CouchDB 3.5.0".into();
    results.external_store = true;
    let text = report::markdown(&results, "x");
    assert!(
        text.contains("- CouchDB: Apache CouchDB 3.5.0 (an existing server"),
        "{text}"
    );
    assert!(!text.contains("pouchdb-server"), "{text}");
}

/// Every section, tiny, against the real servers and the built data plane: the harness works
/// end to end and every measurement completes without errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_run_of_every_section_completes() {
    let options = Options {
        sections: Section::ALL.to_vec(),
        seconds: 0.25,
        clients: vec![2],
        batch: 5,
        startups: 1,
        sockets: vec![5],
        writes: 3,
        write_gap: ms(20),
        presign_clients: vec![2],
        upload_bytes: 3 * MIB + 12_345,
        upload_rounds: 1,
        rss_upload_bytes: 8 * MIB,
    };
    let results = run(&options).await.expect("the run completes");
    let process = results.process.as_ref().expect("process section");
    assert_eq!(process.startup_ready.len(), 1);
    assert!(process.idle_rss_kib.is_some_and(|k| k > 0));
    let documents = results.documents.as_ref().expect("documents section");
    assert_eq!(documents.rows.len(), 4);
    for row in &documents.rows {
        assert_eq!(row.plane.errors + row.direct.errors, 0, "{row:?}");
        assert!(row.plane.latency.count > 0 && row.direct.latency.count > 0);
    }
    let realtime = results.realtime.as_ref().expect("realtime section");
    for row in &realtime.rows {
        assert_eq!(row.connected, row.sockets, "{row:?}");
        assert_eq!(row.delivered, row.sockets * 3, "{row:?}");
        assert!(row.rss_with_sockets_kib > 0);
    }
    let blobs = results.blobs.as_ref().expect("blobs section");
    assert!(
        blobs
            .presign
            .iter()
            .all(|s| s.errors == 0 && s.per_sec > 0.0)
    );
    assert!(blobs.streamed.median_mib_s > 0.0 && blobs.direct.median_mib_s > 0.0);
    assert!(blobs.memory.hwm_kib >= blobs.memory.rss_before_kib && blobs.memory.samples > 0);
    let text = report::markdown(&results, "test");
    for heading in ["Data plane process", "Documents", "Realtime", "Blobs"] {
        assert!(text.contains(heading), "{heading} missing:\n{text}");
    }
}
