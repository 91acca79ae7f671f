//! Test fixtures (controller-rs `fixtures.rs` pattern): instances in known states, a context on
//! kube's tower-test mock client, and a scripted API server that answers like Kubernetes,
//! records every request and checks each against the operator's RBAC (`crate::rbac`).

use super::cache::{ChildWriters, insert};
use super::{ChildCaches, Context};
use crate::bucket::BucketClient;
use crate::config::{OperatorConfig, S3Config};
use crate::crd::{
    FINALIZER, OwnerSpec, RECONCILE_ANNOTATION, RECONCILE_DISABLED, VibeInstance, VibeInstanceSpec,
};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A DID in the canonical form.
pub const OWNER_DID: &str = "did:vibe:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";

impl VibeInstance {
    /// `tenants/alice`, unowned, with our finalizer, generation 1.
    pub fn test() -> Self {
        let mut i = VibeInstance::new("alice", VibeInstanceSpec::default());
        i.metadata.namespace = Some("tenants".into());
        i.metadata.uid = Some("0f6b1c7e-alice".into());
        i.metadata.generation = Some(1);
        i.metadata.resource_version = Some("100".into());
        i.finalizers_mut().push(FINALIZER.into());
        i
    }

    /// Without our finalizer (never reconciled).
    pub fn unfinalized(mut self) -> Self {
        self.finalizers_mut().clear();
        self
    }

    /// Owned by [`OWNER_DID`].
    pub fn owned(mut self) -> Self {
        self.spec.owner = Some(OwnerSpec {
            did: OWNER_DID.into(),
        });
        self
    }

    /// Suspended.
    pub fn suspended(mut self) -> Self {
        self.spec.suspend = true;
        self
    }

    /// With the pause annotation.
    pub fn paused(mut self) -> Self {
        self.annotations_mut()
            .insert(RECONCILE_ANNOTATION.into(), RECONCILE_DISABLED.into());
        self
    }

    /// Being deleted since `seconds_ago`.
    pub fn deleting(mut self, seconds_ago: i64) -> Self {
        let at = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(seconds_ago);
        self.meta_mut().deletion_timestamp = Some(Time(at));
        self
    }
}

/// One request the fake API server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Content type.
    pub content_type: Option<String>,
    /// JSON body (Null when empty).
    pub body: Value,
}

impl Recorded {
    /// `METHOD path` without the query, for compact assertions.
    pub fn line(&self) -> String {
        format!(
            "{} {}",
            self.method,
            self.uri.split('?').next().unwrap_or_default()
        )
    }
}

/// How the fake API server answers.
#[derive(Clone, Default)]
pub struct FakeApi {
    /// The instance the server stores (returned by finalizer and status patches).
    pub instance: Option<VibeInstance>,
    /// Secrets that exist in the API server (GET returns them; others are 404).
    pub secrets: HashMap<String, Secret>,
}

/// Requests recorded by a running fake API server.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Recorded>>>);

impl Log {
    /// Everything received so far.
    pub fn all(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().clone()
    }

    /// `METHOD path` lines of everything received so far.
    pub fn lines(&self) -> Vec<String> {
        self.all().iter().map(Recorded::line).collect()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// The one request whose [`Recorded::line`] is `line` (panics, listing what was received,
    /// when there is none or more than one): assertions name the request they look at rather
    /// than its position, so reordering two independent writes breaks no test.
    pub fn request(&self, line: &str) -> Recorded {
        let matching: Vec<Recorded> = self
            .all()
            .into_iter()
            .filter(|r| r.line() == line)
            .collect();
        match matching.as_slice() {
            [one] => one.clone(),
            found => panic!(
                "expected exactly one `{line}`, found {}: {:?}",
                found.len(),
                self.lines()
            ),
        }
    }

    /// The Secret created (POST) under `name`.
    pub fn created_secret(&self, name: &str) -> Recorded {
        let matching: Vec<Recorded> = self
            .all()
            .into_iter()
            .filter(|r| {
                r.method == "POST"
                    && r.uri.contains("/secrets")
                    && r.body["metadata"]["name"] == name
            })
            .collect();
        match matching.as_slice() {
            [one] => one.clone(),
            found => panic!(
                "expected one create of Secret {name}, found {}: {:?}",
                found.len(),
                self.lines()
            ),
        }
    }

    /// Where the first request with this `line` is in the log (panics when absent); for the
    /// orderings that matter, e.g. [`assert_before`].
    pub fn position(&self, line: &str) -> usize {
        let lines = self.lines();
        lines
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no `{line}` in {lines:?}"))
    }

    /// Asserts that every request with line `earlier` came before the first with `later`:
    /// the orderings the controller guarantees on purpose (a Secret before the workload
    /// that mounts it, children before the status that reports them).
    pub fn assert_before(&self, earlier: &str, later: &str) {
        let lines = self.lines();
        let last_earlier = lines
            .iter()
            .rposition(|l| l == earlier)
            .unwrap_or_else(|| panic!("no `{earlier}` in {lines:?}"));
        assert!(
            last_earlier < self.position(later),
            "`{earlier}` must come before `{later}`: {lines:?}"
        );
    }
}

fn status_response(code: u16, reason: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": reason, "reason": reason, "code": code});
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(value: &Value) -> Response<Body> {
    Response::builder()
        .body(Body::from(serde_json::to_vec(value).unwrap()))
        .unwrap()
}

impl FakeApi {
    /// Starts answering requests of `handle` in a background task.
    pub fn spawn(self, mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>) -> Log {
        let log = Log::default();
        let recorded = log.clone();
        let state = Arc::new(Mutex::new(self));
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().to_string();
                let uri = request.uri().to_string();
                let content_type = request
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                crate::rbac::assert_allowed(&method, &uri, content_type.as_deref());
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap()
                };
                let response = state.lock().unwrap().answer(&method, &uri, &body);
                recorded.0.lock().unwrap().push(Recorded {
                    method,
                    uri,
                    content_type,
                    body,
                });
                send.send_response(response);
            }
        });
        log
    }

    fn answer(&mut self, method: &str, uri: &str, body: &Value) -> Response<Body> {
        let path = uri.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let name = segments.last().copied().unwrap_or_default();
        match method {
            "GET" if path.contains("/secrets/") => match self.secrets.get(name) {
                Some(s) => ok(&serde_json::to_value(s).unwrap()),
                None => status_response(404, "NotFound"),
            },
            "GET" => status_response(404, "NotFound"),
            "POST" if path.ends_with("/events") => ok(body),
            "POST" if path.ends_with("/secrets") => {
                // A create: 409 for a Secret that exists, else the object as stored.
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                if self.secrets.contains_key(name) {
                    return status_response(409, "AlreadyExists");
                }
                let mut obj = body.clone();
                obj["metadata"]["resourceVersion"] = json!("1");
                obj["metadata"]["uid"] = json!(format!("uid-{name}"));
                self.secrets.insert(
                    name.to_string(),
                    serde_json::from_value(obj.clone()).expect("a Secret"),
                );
                ok(&obj)
            }
            "DELETE" => ok(
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}),
            ),
            "PATCH" if path.contains("/vibeinstances/") => {
                let mut instance = self
                    .instance
                    .clone()
                    .expect("the fake API server holds the instance");
                if path.ends_with("/status") {
                    instance.status = Some(
                        serde_json::from_value(body["status"].clone()).expect("a valid status"),
                    );
                } else if let Some(ops) = body.as_array() {
                    // The finalizer helper's JSON patch: add or remove our finalizer.
                    let adds = ops.iter().any(|op| op["op"] == "add");
                    let finalizers = instance.finalizers_mut();
                    finalizers.retain(|f| f != FINALIZER);
                    if adds {
                        finalizers.push(FINALIZER.into());
                    }
                }
                self.instance = Some(instance.clone());
                ok(&serde_json::to_value(&instance).unwrap())
            }
            "PATCH" => {
                // Server-side apply of a child: the object as stored.
                let mut obj = body.clone();
                obj["metadata"]["resourceVersion"] = json!("1");
                obj["metadata"]["uid"] = json!(format!("uid-{name}"));
                obj["metadata"]["generation"] = json!(1);
                ok(&obj)
            }
            other => panic!("unexpected {other} {uri}"),
        }
    }
}

/// A test context: mock client answered by `api`, empty caches (seed them with the writers),
/// the given object store.
pub fn context(api: FakeApi, s3: S3Config) -> (Arc<Context>, ChildWriters, Log) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let config = OperatorConfig {
        base_domain: "vibe.example".into(),
        s3: s3.clone(),
        ..OperatorConfig::default()
    };
    let (caches, writers) = ChildCaches::new();
    // The caches hold what the scenario seeds: everything there is.
    writers.synced.mark_all();
    let ctx = Context::new(
        client,
        "vibe-operator-test".into(),
        Arc::new(config),
        caches,
        BucketClient::new(&s3),
        Arc::new(Metrics::default()),
        Leadership::always(),
    );
    let log = api.spawn(handle);
    (Arc::new(ctx), writers, log)
}

/// S3 settings of a running test server.
pub fn s3_config(server: &vibe_test_support::S3Server) -> S3Config {
    S3Config {
        endpoint: server.endpoint.clone(),
        region: server.region.clone(),
        path_style: true,
        access_key_id: server.access_key.clone(),
        secret_access_key: server.secret_key.clone(),
        tenant_endpoint: None,
    }
}

/// S3 settings pointing at a port nothing listens on.
pub fn unreachable_s3() -> S3Config {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    S3Config {
        endpoint: format!("http://127.0.0.1:{port}"),
        region: "us-east-1".into(),
        path_style: true,
        access_key_id: "k".into(),
        secret_access_key: "s".into(),
        tenant_endpoint: None,
    }
}

/// Feeds every object a recorded server-side apply or create (of a Secret) wrote into the
/// caches, as the watches would, with the status a healthy cluster reports.
pub fn seed_caches_from_applies(writers: &mut ChildWriters, log: &Log) {
    for r in log.all() {
        let applied = r.method == "PATCH"
            && r.content_type.as_deref() == Some("application/apply-patch+yaml")
            && !r.uri.contains("vibeinstances");
        let created = r.method == "POST" && r.uri.split('?').next().unwrap().ends_with("/secrets");
        if !applied && !created {
            continue;
        }
        let mut obj = r.body.clone();
        obj["metadata"]["resourceVersion"] = json!("1");
        obj["metadata"]["generation"] = json!(1);
        match obj["kind"].as_str().unwrap() {
            "Secret" => insert(&mut writers.secrets, serde_json::from_value(obj).unwrap()),
            "ConfigMap" => insert(
                &mut writers.config_maps,
                serde_json::from_value(obj).unwrap(),
            ),
            "Service" => insert(&mut writers.services, serde_json::from_value(obj).unwrap()),
            "StatefulSet" => {
                let replicas = obj["spec"]["replicas"].clone();
                obj["status"] = json!({"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1});
                insert(
                    &mut writers.stateful_sets,
                    serde_json::from_value(obj).unwrap(),
                )
            }
            "Deployment" => {
                let replicas = obj["spec"]["replicas"].clone();
                obj["status"] = json!({"replicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas,
                    "observedGeneration": 1, "conditions": [{"type": "Available", "status": "True"}]});
                insert(
                    &mut writers.deployments,
                    serde_json::from_value(obj).unwrap(),
                )
            }
            "Ingress" => {
                obj["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}});
                insert(&mut writers.ingresses, serde_json::from_value(obj).unwrap())
            }
            "NetworkPolicy" => insert(
                &mut writers.network_policies,
                serde_json::from_value(obj).unwrap(),
            ),
            other => panic!("unexpected kind {other}"),
        }
    }
}

/// The status the last recorded status patch wrote.
pub fn last_status(log: &Log) -> Option<crate::crd::VibeInstanceStatus> {
    log.all()
        .iter()
        .rev()
        .find(|r| r.uri.contains("/status"))
        .map(|r| serde_json::from_value(r.body["status"].clone()).unwrap())
}

/// Reasons of the recorded Events, in order.
pub fn event_reasons(log: &Log) -> Vec<String> {
    log.all()
        .iter()
        .filter(|r| r.uri.contains("/events"))
        .map(|r| r.body["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}
