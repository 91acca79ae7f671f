//! Scale against a real API server (issue 14): 1,000 VibeInstances created at once must reach
//! all their children within a minute, with the operator's resident memory under 100 MiB, no
//! write at all when every instance is reconciled again (a resync), and none after a restart.
//!
//! Run (the figures in docs/operator.md come from it, release build):
//!
//! ```text
//! KUBECONFIG=… cargo test --release -p vibe-operator --test scale_cluster -- --ignored --nocapture
//! ```
//!
//! What it does: applies the CRD, creates the namespaces `<prefix><pid>-tenants` and
//! `<prefix><pid>-system`, starts a real s3s-fs (`vibe-test-support`) for the buckets and the
//! operator binary out of the cluster (watching the tenants namespace, leader election, webhook
//! and control plane off), waits for `/readyz`, creates the instances with 64 requests in
//! flight, and counts the children as they appear through one metadata watch per kind (no
//! polling lists: they would load the API server being measured). Then it waits until the
//! instances settle and every one has been reconciled once more (resync period
//! `VIBE_SCALE_RESYNC`, default 30s), counting the operator's Kubernetes requests in that window
//! from its own `vibe_operator_kube_requests_total`; then it restarts the operator and counts
//! again until every instance has been reconciled by the new process. It prints the load
//! average before, when the children were complete, and at the end. At the end the namespaces
//! are deleted and awaited (`cluster_support`: the instances' finalizer and the CouchDB
//! claims' `kubernetes.io/pvc-protection` are cleared, as no operator and, on a cluster without
//! nodes, nothing else would release them).
//!
//! Settings: `VIBE_SCALE_INSTANCES` (default 1000), `VIBE_SCALE_MAX_SECONDS` (60),
//! `VIBE_SCALE_MAX_RSS_MIB` (100), `VIBE_TEST_NAMESPACE_PREFIX` (`vibe-scale-`),
//! `VIBE_SCALE_OPERATOR_LOG` (a file for the operator's log, `.2` appended for the restarted
//! one; discarded when unset), `VIBE_OPERATOR_BIN` (another operator binary, e.g. an older
//! build). The operator's own settings (`VIBE_RECONCILE_CONCURRENCY`, …) pass through from the
//! environment.

mod cluster_support;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, CustomResourceExt, Resource};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vibe_operator::VibeInstance;
use vibe_test_support::S3Server;

const SELECTOR: &str = "app.kubernetes.io/managed-by=vibe-operator";

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The operator process; killed when dropped.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Operator {
    /// (VmRSS, VmHWM) in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-shot HTTP/1.1 GET on the operator's admin port: (status, body).
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("127.0.0.1:{port}");
    let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Samples of the operator's counters: `name{labels}` → value, for the metrics of interest.
async fn counters(port: u16) -> BTreeMap<String, f64> {
    let (_, body) = get(port, "/metrics").await.expect("/metrics answers");
    body.lines()
        .filter(|l| {
            l.starts_with("vibe_operator_kube_requests_total")
                || l.starts_with("vibe_operator_api_writes_total")
                || l.starts_with("vibe_operator_reconciles_total")
        })
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// Requests that change something: every counted request whose verb is not a read (an
/// operator without the request counter: its own count of applies, status patches, Events
/// and deletes).
fn writes(d: &BTreeMap<String, f64>) -> f64 {
    let counted = |prefix: &str| d.keys().any(|k| k.starts_with(prefix));
    let prefix = if counted("vibe_operator_kube_requests_total") {
        "vibe_operator_kube_requests_total"
    } else {
        "vibe_operator_api_writes_total"
    };
    d.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .filter(|(k, _)| {
            !["\"get\"", "\"list\"", "\"watch\""]
                .iter()
                .any(|v| k.contains(v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// A live count of the managed objects of kind `K` in `ns`, kept by a metadata watch (the
/// harness adds one watch per kind instead of listing thousands of objects every second, which
/// would load the API server it measures).
fn counted<K>(client: &Client, ns: &str) -> Store<PartialObjectMeta<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    // An `Api` of `PartialObjectMeta` asks for metadata only.
    let api: Api<PartialObjectMeta<K>> = Api::namespaced(client.clone(), ns);
    let (store, writer) = reflector::store();
    let events = watcher(api, watcher::Config::default().labels(SELECTOR))
        .default_backoff()
        .reflect(writer);
    tokio::spawn(events.for_each(|_| std::future::ready(())));
    store
}

/// Live counts of the managed children of every kind.
struct Children {
    secrets: Store<PartialObjectMeta<Secret>>,
    config_maps: Store<PartialObjectMeta<ConfigMap>>,
    services: Store<PartialObjectMeta<Service>>,
    stateful_sets: Store<PartialObjectMeta<StatefulSet>>,
    deployments: Store<PartialObjectMeta<Deployment>>,
    ingresses: Store<PartialObjectMeta<Ingress>>,
    network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
}

impl Children {
    fn watch(client: &Client, ns: &str) -> Self {
        Self {
            secrets: counted(client, ns),
            config_maps: counted(client, ns),
            services: counted(client, ns),
            stateful_sets: counted(client, ns),
            deployments: counted(client, ns),
            ingresses: counted(client, ns),
            network_policies: counted(client, ns),
        }
    }

    /// Managed children by kind, in the order of [`PER_INSTANCE`].
    fn counts(&self) -> [usize; 7] {
        [
            self.secrets.state().len(),
            self.config_maps.state().len(),
            self.services.state().len(),
            self.stateful_sets.state().len(),
            self.deployments.state().len(),
            self.ingresses.state().len(),
            self.network_policies.state().len(),
        ]
    }
}

/// Children per instance of each kind in [`Children::counts`]: 4 Secrets (CouchDB auth, token key,
/// claim, S3), 1 ConfigMap, 2 Services, 1 StatefulSet, 1 Deployment, 1 Ingress, 2
/// NetworkPolicies.
const PER_INSTANCE: [usize; 7] = [4, 1, 2, 1, 1, 1, 2];

/// Where the test runs: namespaces, object store, the operator's admin port.
struct Setup {
    client: Client,
    tenants: String,
    system: String,
    s3: S3Server,
    http: u16,
}

impl Setup {
    /// Starts the operator binary (the `n`th start of this run; its log, when kept, goes to
    /// `VIBE_SCALE_OPERATOR_LOG` with `.<n>` appended after the first).
    fn start_operator(&self, n: u32) -> Operator {
        let bin = std::env::var("VIBE_OPERATOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_vibe-operator").to_string());
        let log = match std::env::var("VIBE_SCALE_OPERATOR_LOG") {
            Ok(path) => {
                let path = if n == 1 { path } else { format!("{path}.{n}") };
                Stdio::from(std::fs::File::create(path).expect("operator log file"))
            }
            Err(_) => Stdio::null(),
        };
        let s3 = &self.s3;
        let child = Command::new(bin)
            .env("VIBE_HTTP_ADDR", format!("127.0.0.1:{}", self.http))
            .env("VIBE_WEBHOOK_DISABLED", "true")
            .env("VIBE_CONTROL_PLANE_DISABLED", "true")
            .env("POD_NAMESPACE", &self.system)
            .env("VIBE_WATCH_NAMESPACES", &self.tenants)
            .env("VIBE_LEADER_ELECTION_DISABLED", "true")
            .env("VIBE_BASE_DOMAIN", "scale.test")
            .env(
                "VIBE_RESYNC_PERIOD",
                std::env::var("VIBE_SCALE_RESYNC").unwrap_or_else(|_| "30s".into()),
            )
            .env("VIBE_S3_ENDPOINT", &s3.endpoint)
            .env("VIBE_S3_REGION", &s3.region)
            .env("VIBE_S3_ACCESS_KEY_ID", &s3.access_key)
            .env("VIBE_S3_SECRET_ACCESS_KEY", &s3.secret_key)
            .env("RUST_LOG", "info")
            .stdout(log)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the vibe-operator binary starts");
        Operator(child)
    }
}

/// The load average (1, 5, 15 min) of the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG; a load test of several minutes (see the file's documentation)"]
async fn a_thousand_instances_reach_their_children_within_a_minute() {
    let client = Client::try_default().await.expect("KUBECONFIG is usable");
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(
            "vibeinstances.cloud.vibeapp.dev",
            &PatchParams::apply("vibe-operator-tests").force(),
            &Patch::Apply(VibeInstance::crd()),
        )
        .await
        .unwrap();
    let prefix =
        std::env::var("VIBE_TEST_NAMESPACE_PREFIX").unwrap_or_else(|_| "vibe-scale-".into());
    let suffix = std::process::id();
    let tenants = format!("{prefix}{suffix}-tenants");
    let system = format!("{prefix}{suffix}-system");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [&tenants, &system] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces.create(&PostParams::default(), &n).await.unwrap();
    }
    let setup = Setup {
        client: client.clone(),
        tenants: tenants.clone(),
        system: system.clone(),
        s3: S3Server::start().await.expect("s3s-fs starts"),
        http: free_port(),
    };

    let result = tokio::spawn(scenario(setup)).await;

    // The operators are stopped (dropped with the scenario): their instances keep a finalizer
    // nobody releases, and the CouchDB claims their protection; both are cleared.
    let left =
        cluster_support::delete_namespaces(&client, &[&tenants, &system], Duration::from_secs(300))
            .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// Polls the operator until `/readyz` answers 200; returns how long that took.
async fn wait_ready(http: u16, started: Instant) -> Duration {
    while get(http, "/readyz").await.map(|r| r.0) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "/readyz not ok 60 s after start: {:?}",
            get(http, "/readyz").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

fn reconciles(c: &BTreeMap<String, f64>) -> f64 {
    c.get("vibe_operator_reconciles_total")
        .copied()
        .unwrap_or(0.0)
}

/// Waits until the operator has reconciled `n` more instances than in `before` and then made
/// no write for 5 s; returns the counters then.
async fn round_of_reconciles(
    operator: &Operator,
    http: u16,
    before: &BTreeMap<String, f64>,
    n: usize,
    peak_rss: &mut u64,
) -> BTreeMap<String, f64> {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        *peak_rss = (*peak_rss).max(operator.memory_kib().0);
        let now = counters(http).await;
        if reconciles(&now) - reconciles(before) >= n as f64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not {n} reconciles within 10 min"
        );
    }
    let mut last = counters(http).await;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        *peak_rss = (*peak_rss).max(operator.memory_kib().0);
        let now = counters(http).await;
        let quiet = writes(&delta(&last, &now)) == 0.0;
        last = now;
        if quiet {
            return last;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "still writing 10 min later"
        );
    }
}

async fn scenario(setup: Setup) {
    let n: usize = setting("VIBE_SCALE_INSTANCES", 1000);
    let max_seconds: f64 = setting("VIBE_SCALE_MAX_SECONDS", 60.0);
    let max_rss_mib: f64 = setting("VIBE_SCALE_MAX_RSS_MIB", 100.0);
    let client = setup.client.clone();
    let http = setup.http;
    let children = Children::watch(&client, &setup.tenants);
    let load_before = load_average();

    let started = Instant::now();
    let operator = setup.start_operator(1);
    let ready_after = wait_ready(http, started).await;
    let idle = operator.memory_kib();
    eprintln!(
        "operator ready after {ready_after:.2?}; idle RSS {} KiB",
        idle.0
    );

    // All instances at once (64 requests in flight, as `kubectl apply` of one big file would
    // not be faster).
    let api: Api<VibeInstance> = Api::namespaced(client.clone(), &setup.tenants);
    let t0 = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let instance: VibeInstance = serde_json::from_value(json!({
                    "apiVersion": "cloud.vibeapp.dev/v1alpha1",
                    "kind": "VibeInstance",
                    "metadata": {"name": format!("t{i:04}")},
                    "spec": {"deletionPolicy": "Retain"}
                }))
                .unwrap();
                api.create(&PostParams::default(), &instance).await
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await
        .expect("every instance is created");
    let created = t0.elapsed();
    eprintln!("{n} instances created in {created:.1?}");

    let expected: Vec<usize> = PER_INSTANCE.iter().map(|k| k * n).collect();
    let mut peak_rss = 0;
    let mut deployments_at = None;
    let mut printed = Instant::now();
    let all_at = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak_rss = peak_rss.max(operator.memory_kib().0);
        let have = children.counts();
        if deployments_at.is_none() && have[4] >= n {
            deployments_at = Some(t0.elapsed());
        }
        let done = have.iter().zip(&expected).all(|(h, e)| h >= e);
        if done || printed.elapsed() >= Duration::from_secs(5) {
            printed = Instant::now();
            eprintln!(
                "{:>6.1?} children [Secret, ConfigMap, Service, StatefulSet, Deployment, Ingress, NetworkPolicy] {have:?}, RSS {} KiB, load {}",
                t0.elapsed(),
                operator.memory_kib().0,
                load_average()
            );
        }
        if done {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "children still missing after 15 min: {have:?}"
        );
    };
    let load_at_children = load_average();

    // The instances settle (the children's status reach them), then one full round of
    // reconciles (the resync), which must write nothing.
    let mut last = counters(http).await;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = counters(http).await;
        let d = delta(&last, &now);
        last = now;
        peak_rss = peak_rss.max(operator.memory_kib().0);
        if writes(&d) == 0.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1200),
            "still writing after 20 min: {d:?}"
        );
    }
    let settled = t0.elapsed();
    let before = last;
    let resync_start = Instant::now();
    let after = round_of_reconciles(&operator, http, &before, n, &mut peak_rss).await;
    let resync = delta(&before, &after);
    let resync_took = resync_start.elapsed();
    let (rss, hwm) = operator.memory_kib();
    peak_rss = peak_rss.max(rss);
    drop(operator);

    // A restart against the 1,000 instances in order: ready within seconds, every instance
    // reconciled from the freshly listed caches, and nothing written.
    let restarted = Instant::now();
    let operator = setup.start_operator(2);
    let ready_again = wait_ready(http, restarted).await;
    let mut restart_peak = 0;
    let after_restart =
        round_of_reconciles(&operator, http, &BTreeMap::new(), n, &mut restart_peak).await;
    let restart = delta(&BTreeMap::new(), &after_restart);
    let (_, restart_hwm) = operator.memory_kib();
    drop(operator);

    eprintln!("--- {n} instances ---");
    eprintln!("load average before        {load_before}");
    eprintln!("operator ready after       {ready_after:.2?}");
    eprintln!("created in                 {created:.1?}");
    eprintln!("all Deployments after      {deployments_at:.1?}");
    eprintln!("all children after         {all_at:.1?} (load average then {load_at_children})");
    eprintln!("settled (no writes) after  {settled:.1?}");
    eprintln!(
        "RSS idle {} KiB, peak sampled {} KiB, at the end {} KiB, VmHWM {} KiB",
        idle.0, peak_rss, rss, hwm
    );
    eprintln!(
        "one resync ({} reconciles in {resync_took:.1?}): {resync:#?}",
        reconciles(&after) - reconciles(&before),
    );
    eprintln!(
        "restart: ready after {ready_again:.2?}, {} reconciles, VmHWM {restart_hwm} KiB: {restart:#?}",
        reconciles(&after_restart)
    );
    eprintln!("load average at the end    {}", load_average());

    assert!(
        all_at.as_secs_f64() <= max_seconds,
        "all children after {all_at:.1?}, over {max_seconds} s"
    );
    assert!(
        hwm as f64 / 1024.0 <= max_rss_mib,
        "operator peak RSS {hwm} KiB over {max_rss_mib} MiB"
    );
    assert_eq!(writes(&resync), 0.0, "writes during a resync: {resync:?}");
    assert_eq!(writes(&restart), 0.0, "writes after a restart: {restart:?}");
}
