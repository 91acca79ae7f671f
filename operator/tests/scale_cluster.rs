//! Scale against a real API server (issue 14): 1,000 VibeInstances created at once must reach
//! all their children within a minute, with the operator's resident memory under 100 MiB and
//! no write at all when every instance is reconciled again (a resync).
//!
//! Run (the figures in docs/operator.md come from it, release build):
//!
//! ```text
//! KUBECONFIG=… cargo test --release -p vibe-operator --test scale_cluster -- --ignored --nocapture
//! ```
//!
//! What it does: applies the CRD, creates the namespaces `scale-tenants-<pid>` and
//! `scale-system-<pid>`, starts a real s3s-fs (`vibe-test-support`) for the buckets and the
//! operator binary out of the cluster (watching the tenants namespace, leader election, webhook
//! and control plane off), waits for `/readyz`, creates the instances with 64 requests in
//! flight, and polls the API server for the children every second. Then it waits until every
//! instance has been reconciled once more (resync period `VIBE_SCALE_RESYNC`, default 30s) and
//! counts the operator's Kubernetes requests in that window from its own
//! `vibe_operator_kube_requests_total`. Everything is deleted at the end.
//!
//! Settings: `VIBE_SCALE_INSTANCES` (default 1000), `VIBE_SCALE_MAX_SECONDS` (60),
//! `VIBE_SCALE_MAX_RSS_MIB` (100), `VIBE_SCALE_OPERATOR_LOG` (a file for the operator's log;
//! discarded when unset), `VIBE_OPERATOR_BIN` (another operator binary, e.g. an older build).

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
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

async fn count<K>(client: &Client, ns: &str) -> usize
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.list_metadata(&ListParams::default().labels(SELECTOR))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

/// Managed children by kind.
async fn children(client: &Client, ns: &str) -> [usize; 7] {
    [
        count::<Secret>(client, ns).await,
        count::<ConfigMap>(client, ns).await,
        count::<Service>(client, ns).await,
        count::<StatefulSet>(client, ns).await,
        count::<Deployment>(client, ns).await,
        count::<Ingress>(client, ns).await,
        count::<NetworkPolicy>(client, ns).await,
    ]
}

/// Children per instance of each kind in [`children`]: 4 Secrets (CouchDB auth, token key,
/// claim, S3), 1 ConfigMap, 2 Services, 1 StatefulSet, 1 Deployment, 1 Ingress, 2
/// NetworkPolicies.
const PER_INSTANCE: [usize; 7] = [4, 1, 2, 1, 1, 1, 2];

fn start_operator(s3: &S3Server, tenants: &str, system: &str, http: u16) -> Operator {
    let bin = std::env::var("VIBE_OPERATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_vibe-operator").to_string());
    let log = match std::env::var("VIBE_SCALE_OPERATOR_LOG") {
        Ok(path) => Stdio::from(std::fs::File::create(path).expect("operator log file")),
        Err(_) => Stdio::null(),
    };
    let child = Command::new(bin)
        .env("VIBE_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("VIBE_WEBHOOK_DISABLED", "true")
        .env("VIBE_CONTROL_PLANE_DISABLED", "true")
        .env("POD_NAMESPACE", system)
        .env("VIBE_WATCH_NAMESPACES", tenants)
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
    let suffix = std::process::id();
    let tenants = format!("scale-tenants-{suffix}");
    let system = format!("scale-system-{suffix}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [&tenants, &system] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces.create(&PostParams::default(), &n).await.unwrap();
    }
    let s3 = S3Server::start().await.expect("s3s-fs starts");
    let http = free_port();
    let operator = start_operator(&s3, &tenants, &system, http);

    let result = tokio::spawn(scenario(client.clone(), tenants.clone(), operator, http)).await;

    // Instances keep a finalizer no operator releases any more: drop it, then the namespaces.
    let api: Api<VibeInstance> = Api::namespaced(client.clone(), &tenants);
    if let Ok(list) = api.list_metadata(&Default::default()).await {
        futures::stream::iter(list.items)
            .for_each_concurrent(32, |i| {
                let api = api.clone();
                async move {
                    let patch = json!({"metadata": {"finalizers": null}});
                    let name = i.metadata.name.unwrap_or_default();
                    let _ = api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                }
            })
            .await;
    }
    for ns in [&tenants, &system] {
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(client: Client, tenants: String, operator: Operator, http: u16) {
    let n: usize = setting("VIBE_SCALE_INSTANCES", 1000);
    let max_seconds: f64 = setting("VIBE_SCALE_MAX_SECONDS", 60.0);
    let max_rss_mib: f64 = setting("VIBE_SCALE_MAX_RSS_MIB", 100.0);

    let started = Instant::now();
    while get(http, "/readyz").await.map(|r| r.0) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "/readyz not ok 30 s after start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle = operator.memory_kib();
    eprintln!("operator ready; idle RSS {} KiB", idle.0);

    // All instances at once (64 requests in flight, as `kubectl apply` of one big file would
    // not be faster).
    let api: Api<VibeInstance> = Api::namespaced(client.clone(), &tenants);
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
    let all_at = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(operator.memory_kib().0);
        let have = children(&client, &tenants).await;
        if deployments_at.is_none() && have[4] >= n {
            deployments_at = Some(t0.elapsed());
        }
        eprintln!(
            "{:>6.1?} children [Secret, ConfigMap, Service, StatefulSet, Deployment, Ingress, NetworkPolicy] {have:?}, RSS {} KiB",
            t0.elapsed(),
            operator.memory_kib().0
        );
        if have.iter().zip(&expected).all(|(h, e)| h >= e) {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "children still missing after 15 min: {have:?}"
        );
    };

    // The instances settle (the children's status reach them), then one full round of
    // reconciles, which must write nothing.
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
    let reconciles = |c: &BTreeMap<String, f64>| {
        c.get("vibe_operator_reconciles_total")
            .copied()
            .unwrap_or(0.0)
    };
    let resync_start = Instant::now();
    let after = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        peak_rss = peak_rss.max(operator.memory_kib().0);
        let now = counters(http).await;
        if reconciles(&now) - reconciles(&before) >= n as f64 {
            break now;
        }
        assert!(
            resync_start.elapsed() < Duration::from_secs(600),
            "no full resync within 10 min"
        );
    };
    let resync = delta(&before, &after);
    let (rss, hwm) = operator.memory_kib();
    peak_rss = peak_rss.max(rss);

    eprintln!("--- {n} instances ---");
    eprintln!("created in                {created:.1?}");
    eprintln!("all Deployments after     {deployments_at:.1?}");
    eprintln!("all children after        {all_at:.1?}");
    eprintln!("settled (no writes) after {settled:.1?}");
    eprintln!(
        "RSS idle {} KiB, peak sampled {} KiB, now {} KiB, VmHWM {} KiB",
        idle.0, peak_rss, rss, hwm
    );
    eprintln!(
        "one resync ({} reconciles in {:.1?}): {resync:#?}",
        reconciles(&after) - reconciles(&before),
        resync_start.elapsed()
    );

    assert!(
        all_at.as_secs_f64() <= max_seconds,
        "all children after {all_at:.1?}, over {max_seconds} s"
    );
    assert!(
        hwm as f64 / 1024.0 <= max_rss_mib,
        "operator peak RSS {hwm} KiB over {max_rss_mib} MiB"
    );
    assert_eq!(writes(&resync), 0.0, "writes during a resync: {resync:?}");
    drop(operator);
}
