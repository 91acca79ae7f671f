//! Reconciling 1,000 VibeInstances against kube's tower-test mock API server (answering like
//! Kubernetes and feeding applied objects into the watch caches, as the watches would) and a
//! real s3s-fs: Kubernetes API requests per instance on the first reconcile, on the reconcile
//! that observes the children ready, and on a resync; wall time; peak memory (VmHWM).
//!
//! Run: `cargo bench -p vibe-operator --bench reconcile_1000` (numbers go to docs/operator.md).

use futures::StreamExt;
use http::{Request, Response};
use kube::client::Body;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vibe_operator::bucket::BucketClient;
use vibe_operator::config::{OperatorConfig, S3Config};
use vibe_operator::controller::cache::{ChildCaches, ChildWriters, insert};
use vibe_operator::controller::{Context, reconcile};
use vibe_operator::crd::{FINALIZER, VibeInstance, VibeInstanceSpec, VibeInstanceStatus};
use vibe_operator::leader::Leadership;
use vibe_operator::metrics::Metrics;

const INSTANCES: usize = 1000;
const CONCURRENCY: usize = 16;

#[derive(Default)]
struct Counters {
    get: AtomicU64,
    patch: AtomicU64,
    post: AtomicU64,
    delete: AtomicU64,
    /// POSTs that were Events (the rest are creates).
    events: AtomicU64,
}

impl Counters {
    fn total(&self) -> u64 {
        self.get.load(Ordering::Relaxed)
            + self.patch.load(Ordering::Relaxed)
            + self.post.load(Ordering::Relaxed)
            + self.delete.load(Ordering::Relaxed)
    }
    fn snapshot(&self) -> [u64; 5] {
        [
            &self.get,
            &self.patch,
            &self.post,
            &self.delete,
            &self.events,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

fn ok(v: &Value) -> Response<Body> {
    Response::builder()
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

/// The object as the API server stores it on create: no status yet.
fn stored(mut obj: Value) -> Value {
    obj["metadata"]["resourceVersion"] = json!("1");
    obj["metadata"]["generation"] = json!(1);
    obj
}

/// The object as the watches deliver it once its workload runs.
fn healthy(obj: Value) -> Value {
    let mut obj = stored(obj);
    let replicas = obj["spec"]["replicas"].clone();
    match obj["kind"].as_str().unwrap_or_default() {
        "StatefulSet" => {
            obj["status"] =
                json!({"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1})
        }
        "Deployment" => {
            obj["status"] = json!({"replicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas,
                "observedGeneration": 1, "conditions": [{"type": "Available", "status": "True"}]})
        }
        "Ingress" => obj["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}),
        _ => {}
    }
    obj
}

fn cache(writers: &mut ChildWriters, obj: Value) {
    match obj["kind"].as_str().unwrap_or_default() {
        "Secret" => insert(&mut writers.secrets, serde_json::from_value(obj).unwrap()),
        "ConfigMap" => insert(
            &mut writers.config_maps,
            serde_json::from_value(obj).unwrap(),
        ),
        "Service" => insert(&mut writers.services, serde_json::from_value(obj).unwrap()),
        "StatefulSet" => insert(
            &mut writers.stateful_sets,
            serde_json::from_value(obj).unwrap(),
        ),
        "Deployment" => insert(
            &mut writers.deployments,
            serde_json::from_value(obj).unwrap(),
        ),
        "Ingress" => insert(&mut writers.ingresses, serde_json::from_value(obj).unwrap()),
        "NetworkPolicy" => insert(
            &mut writers.network_policies,
            serde_json::from_value(obj).unwrap(),
        ),
        _ => {}
    }
}

fn peak_memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn round(
    label: &str,
    instances: &[VibeInstance],
    ctx: &Arc<Context>,
    counters: &Counters,
) -> (f64, [u64; 5]) {
    let before = counters.snapshot();
    let start_total = counters.total();
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(instances.iter().cloned())
        .map(|i| reconcile(Arc::new(i), ctx.clone()))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let failures = results.iter().filter(|r| r.is_err()).count();
    let after = counters.snapshot();
    let per = (counters.total() - start_total) as f64 / instances.len() as f64;
    let delta = [0, 1, 2, 3, 4].map(|i| after[i] - before[i]);
    println!(
        "{label:<28} {per:>7.2} API requests/instance (GET {} PATCH {} POST {} of which Events {} DELETE {}), {:>7.1} ms total, {:>6.3} ms/instance, {failures} failures, RSS {:.1} MiB",
        delta[0],
        delta[1],
        delta[2],
        delta[4],
        delta[3],
        elapsed.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64() * 1000.0 / instances.len() as f64,
        peak_memory_kib().1 as f64 / 1024.0
    );
    (per, delta)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s3 = vibe_test_support::S3Server::start().await.expect("s3s-fs (deploy/local/install-servers)");
        let s3_config = S3Config {
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            path_style: true,
            access_key_id: s3.access_key.clone(),
            secret_access_key: s3.secret_key.clone(),
            tenant_endpoint: None,
        };
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let (caches, writers) = ChildCaches::new();
        writers.synced.mark_all();
        let writers = Arc::new(Mutex::new(writers));
        let counters = Arc::new(Counters::default());
        let statuses: Arc<Mutex<HashMap<String, VibeInstanceStatus>>> = Arc::default();

        let mut instances = Vec::with_capacity(INSTANCES);
        for n in 0..INSTANCES {
            let mut i = VibeInstance::new(&format!("tenant-{n:04}"), VibeInstanceSpec::default());
            i.metadata.namespace = Some("tenants".into());
            i.metadata.uid = Some(format!("uid-{n}"));
            i.metadata.generation = Some(1);
            i.finalizers_mut().push(FINALIZER.into());
            instances.push(i);
        }
        let by_name: Arc<HashMap<String, VibeInstance>> =
            Arc::new(instances.iter().map(|i| (i.name_any(), i.clone())).collect());

        {
            let (writers, counters, statuses, by_name) = (writers.clone(), counters.clone(), statuses.clone(), by_name.clone());
            tokio::spawn(async move {
                while let Some((request, send)) = handle.next_request().await {
                    let method = request.method().clone();
                    let path = request.uri().path().to_string();
                    let bytes = request.into_body().collect_bytes().await.unwrap();
                    let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
                    let name = path.rsplit('/').find(|s| *s != "status").unwrap_or_default().to_string();
                    let response = match method.as_str() {
                        "GET" => {
                            counters.get.fetch_add(1, Ordering::Relaxed);
                            Response::builder()
                                .status(404)
                                .body(Body::from(br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#.to_vec()))
                                .unwrap()
                        }
                        "POST" => {
                            counters.post.fetch_add(1, Ordering::Relaxed);
                            if path.ends_with("/events") {
                                counters.events.fetch_add(1, Ordering::Relaxed);
                                ok(&body)
                            } else {
                                // A create (the generated Secrets): the watch brings it.
                                let stored = stored(body);
                                cache(&mut writers.lock().unwrap(), stored.clone());
                                ok(&stored)
                            }
                        }
                        "DELETE" => {
                            counters.delete.fetch_add(1, Ordering::Relaxed);
                            ok(&json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
                        }
                        _ if path.contains("/vibeinstances/") => {
                            counters.patch.fetch_add(1, Ordering::Relaxed);
                            let mut instance = by_name[&name].clone();
                            let status: VibeInstanceStatus = serde_json::from_value(body["status"].clone()).unwrap();
                            statuses.lock().unwrap().insert(name, status.clone());
                            instance.status = Some(status);
                            ok(&serde_json::to_value(&instance).unwrap())
                        }
                        _ => {
                            // An apply answers the object as stored, without status, as a real
                            // API server does; the watches then bring it running (ready) into
                            // the caches, which the next round's reconciles read.
                            counters.patch.fetch_add(1, Ordering::Relaxed);
                            cache(&mut writers.lock().unwrap(), healthy(body.clone()));
                            ok(&stored(body))
                        }
                    };
                    send.send_response(response);
                }
            });
        }

        let config = OperatorConfig { base_domain: "vibe.example".into(), s3: s3_config.clone(), ..OperatorConfig::default() };
        let ctx = Arc::new(Context::new(
            client,
            "bench".into(),
            Arc::new(config),
            caches,
            BucketClient::new(&s3_config),
            Arc::new(Metrics::default()),
            Leadership::always(),
        ));

        println!("reconciling {INSTANCES} VibeInstances, concurrency {CONCURRENCY}, mock API + s3s-fs");
        let apply_status = |instances: &mut Vec<VibeInstance>| {
            let statuses = statuses.lock().unwrap();
            for i in instances.iter_mut() {
                i.status = statuses.get(&i.name_any()).cloned();
            }
        };
        let (_, rss_before) = peak_memory_kib();
        println!(
            "RSS before the first reconcile {:.1} MiB (mock, s3 client, {INSTANCES} instances, empty caches)",
            rss_before as f64 / 1024.0
        );
        round("first reconcile", &instances, &ctx, &counters).await;
        apply_status(&mut instances);
        round("children observed ready", &instances, &ctx, &counters).await;
        apply_status(&mut instances);
        round("resync (steady state)", &instances, &ctx, &counters).await;
        round("resync again", &instances, &ctx, &counters).await;
        let ready = statuses
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.phase == Some(vibe_operator::crd::Phase::Ready))
            .count();
        let (hwm, rss) = peak_memory_kib();
        println!("instances Ready: {ready}/{INSTANCES}");
        println!(
            "peak memory (VmHWM) {:.1} MiB, RSS now {:.1} MiB (bench process: operator caches of 12 children × {INSTANCES} + mock)",
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0
        );
    });
}
