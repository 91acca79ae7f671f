//! A fake Kubernetes API server that answers **list and watch** as kube-apiserver does, so
//! tests can drive the whole controller loop ([`super::run`]) and readiness, not just one
//! `reconcile` call (issue 14: the readiness bug lived in the loop, which the request-by-request
//! mock of `fixtures.rs` never ran).
//!
//! What it keeps and answers, as the real server does:
//! - one `resourceVersion` counter for every write; lists carry the current one in
//!   `metadata.resourceVersion`; list items of built-in kinds come without `kind`/`apiVersion`;
//! - `labelSelector` (`key=value`, comma separated) on lists and watches;
//! - watches from a `resourceVersion` replay every later change, then stream new ones (chunked
//!   JSON lines); a `resourceVersion` older than the compacted history gets an `ERROR` event
//!   with a 410 `Expired` Status (the watch stream itself answers 200, as the watch cache does);
//! - `sendInitialEvents=true` streams the current objects as `ADDED`, then a `BOOKMARK` whose
//!   annotation `k8s.io/initial-events-end` is `"true"`;
//! - watches end after `timeoutSeconds`, or all at once on [`FakeCluster::close_watches`];
//! - server-side apply creates or replaces the applied fields (server-owned metadata and
//!   `status` kept; `generation` bumped when `spec` changes), JSON patches (kube's finalizer
//!   helper) and merge patches, `/status`, GET, DELETE with finalizers (`deletionTimestamp`
//!   first, gone once the last finalizer is removed), Events accepted;
//! - optionally the work of kube-controller-manager: Deployments and StatefulSets report their
//!   replicas ready (a status write of their own, as the controllers would);
//! - lists of one collection can be held back ([`FakeCluster::hold_lists`]), as a slow list of
//!   a large collection is on a real server, while everything else is answered.
//!
//! Every request is checked against the chart's RBAC (`crate::rbac`) and recorded.

use super::fixtures::Recorded;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

type Bytes = axum::body::Bytes;

/// Answers: a whole JSON document, or a watch stream.
type Answer = Response<UnsyncBoxBody<Bytes, Infallible>>;

/// Where an object lives: `apps/v1/deployments` (or `v1/secrets`), namespace, name.
type Key = (String, String, String);

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    collection: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    /// Watches may resume from this resourceVersion or later; older ones get 410.
    oldest: u64,
    uid: u64,
    log: Vec<Recorded>,
    workloads_become_ready: bool,
    gone: usize,
    /// Collections whose lists wait until the flag turns `true`.
    held_lists: BTreeMap<String, tokio::sync::watch::Receiver<bool>>,
}

/// Lists of one collection held back by [`FakeCluster::hold_lists`]; answered on
/// [`ListHold::release`] (or when dropped).
pub struct ListHold(tokio::sync::watch::Sender<bool>);

impl ListHold {
    /// Answers the held lists, and every later one at once.
    pub fn release(self) {
        self.0.send_replace(true);
    }
}

/// Messages to open watches.
#[derive(Clone, Debug)]
enum Signal {
    Change(Change),
    Close,
}

/// The fake API server; cheap to clone (shared state).
#[derive(Clone)]
pub struct FakeCluster {
    inner: Arc<Mutex<Inner>>,
    signals: broadcast::Sender<Signal>,
}

/// A request path taken apart.
struct Target {
    /// `apps/v1/deployments`.
    collection: String,
    /// `apps/v1`.
    api_version: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => (version.to_string(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, sub] => (*resource, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    Some(Target {
        collection: format!("{api_version}/{resource}"),
        api_version,
        namespace,
        name,
        subresource,
    })
}

fn query(uri: &http::Uri) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn matches_selector(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn kind_of(collection: &str) -> String {
    let resource = collection.rsplit('/').next().unwrap_or_default();
    match resource {
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "services" => "Service",
        "statefulsets" => "StatefulSet",
        "deployments" => "Deployment",
        "ingresses" => "Ingress",
        "networkpolicies" => "NetworkPolicy",
        "cronjobs" => "CronJob",
        "jobs" => "Job",
        "pods" => "Pod",
        "vibeinstances" => "VibeInstance",
        "events" => "Event",
        "leases" => "Lease",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        other => panic!("the fake API server does not know {other}"),
    }
    .to_string()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

fn respond(code: u16, value: &Value) -> Answer {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).unwrap())).boxed_unsync())
        .unwrap()
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

impl Inner {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, change: Change, signals: &broadcast::Sender<Signal>) {
        self.history.push(change.clone());
        let _ = signals.send(Signal::Change(change));
    }

    /// Stores `object` (new or changed) with a fresh resourceVersion and tells the watches.
    fn store(&mut self, key: Key, mut object: Value, signals: &broadcast::Sender<Signal>) -> Value {
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let gone = object["metadata"]["deletionTimestamp"].is_string()
            && object["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty);
        let kind = if gone {
            self.objects.remove(&key);
            "DELETED"
        } else if self.objects.insert(key.clone(), object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(
            Change {
                rv,
                collection: key.0,
                namespace: key.1,
                kind,
                object: object.clone(),
            },
            signals,
        );
        object
    }

    fn new_object(&mut self, target: &Target, namespace: &str, name: &str, body: &Value) -> Value {
        self.uid += 1;
        let mut object = body.clone();
        object["apiVersion"] = json!(target.api_version);
        object["kind"] = json!(kind_of(&target.collection));
        let meta = &mut object["metadata"];
        meta["name"] = json!(name);
        meta["namespace"] = json!(namespace);
        meta["uid"] = json!(format!("00000000-0000-0000-0000-{:012}", self.uid));
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        meta["generation"] = json!(1);
        if let Some(m) = meta.as_object_mut() {
            m.remove("resourceVersion");
        }
        if let Some(o) = object.as_object_mut() {
            o.remove("status");
        }
        object
    }

    /// kube-controller-manager's part: the workload's pods are up.
    fn ready_status(object: &Value) -> Option<Value> {
        let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
        let generation = object["metadata"]["generation"].clone();
        match object["kind"].as_str()? {
            "Deployment" => Some(json!({"replicas": replicas, "updatedReplicas": replicas,
                "readyReplicas": replicas, "availableReplicas": replicas, "observedGeneration": generation,
                "conditions": [{"type": "Available", "status": "True"}]})),
            "StatefulSet" => Some(json!({"replicas": replicas, "readyReplicas": replicas,
                "currentReplicas": replicas, "updatedReplicas": replicas,
                "observedGeneration": generation})),
            "Ingress" => Some(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}})),
            _ => None,
        }
    }
}

impl FakeCluster {
    /// An empty cluster.
    pub fn new() -> Self {
        let (signals, _) = broadcast::channel(100_000);
        Self {
            inner: Arc::default(),
            signals,
        }
    }

    /// Deployments, StatefulSets and Ingresses report themselves ready after each change (a
    /// status write of their own, as kube-controller-manager and an ingress controller would).
    pub fn with_ready_workloads(self) -> Self {
        self.inner.lock().unwrap().workloads_become_ready = true;
        self
    }

    /// A client talking to this server.
    pub fn client(&self) -> Client {
        let cluster = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let cluster = cluster.clone();
            async move { Ok::<_, Infallible>(cluster.handle(request).await) }
        });
        Client::new(service, "default")
    }

    /// Puts an object in (as a user's create would), e.g. a VibeInstance.
    pub fn put(&self, api_version: &str, resource: &str, object: Value) {
        let target = Target {
            collection: format!("{api_version}/{resource}"),
            api_version: api_version.into(),
            namespace: None,
            name: None,
            subresource: None,
        };
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap()
            .to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let mut inner = self.inner.lock().unwrap();
        let mut new = inner.new_object(&target, &ns, &name, &object);
        if let Some(status) = object.get("status") {
            new["status"] = status.clone();
        }
        inner.store((target.collection, ns, name), new, &self.signals);
    }

    /// Deletes an object as a user would (not through the operator's client, so not checked
    /// against the operator's RBAC): `deletionTimestamp` first while it has finalizers.
    pub fn delete_object(&self, collection: &str, namespace: &str, name: &str) {
        let key: Key = (collection.into(), namespace.into(), name.into());
        let mut inner = self.inner.lock().unwrap();
        let Some(mut o) = inner.objects.get(&key).cloned() else {
            return;
        };
        if o["metadata"]["deletionTimestamp"].is_null() {
            o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
        }
        inner.store(key, o, &self.signals);
    }

    /// An object, if it exists.
    pub fn get(&self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = (collection.into(), namespace.into(), name.into());
        self.inner.lock().unwrap().objects.get(&key).cloned()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().log.clone()
    }

    /// How many watches were answered 410 Gone.
    pub fn gone_answers(&self) -> usize {
        self.inner.lock().unwrap().gone
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.inner.lock().unwrap().log.clear();
    }

    /// Forgets the change history (etcd compaction): a watch can no longer resume from any
    /// resourceVersion seen so far, and gets 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.history.clear();
        inner.oldest = inner.rv + 1;
    }

    /// Holds back every list of `collection` (`apps/v1/deployments`) until the returned hold
    /// is released: the requests are received and recorded, the answers wait.
    pub fn hold_lists(&self, collection: &str) -> ListHold {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.inner
            .lock()
            .unwrap()
            .held_lists
            .insert(collection.into(), rx);
        ListHold(tx)
    }

    /// Ends every open watch (as an API server restart or a watch timeout does).
    pub fn close_watches(&self) {
        let _ = self.signals.send(Signal::Close);
    }

    async fn handle(&self, request: Request<Body>) -> Answer {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        crate::rbac::assert_allowed(method.as_str(), &uri.to_string(), content_type.as_deref());
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        self.inner.lock().unwrap().log.push(Recorded {
            method: method.to_string(),
            uri: uri.to_string(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        let Some(target) = parse_path(uri.path()) else {
            return respond(404, &status(404, "NotFound", "no such path"));
        };
        let params = query(&uri);
        match (&method, &target.name) {
            (&Method::GET, None)
                if params.get("watch").is_some_and(|w| w == "true" || w == "1") =>
            {
                self.watch(&target, &params)
            }
            (&Method::GET, None) => {
                let held = self
                    .inner
                    .lock()
                    .unwrap()
                    .held_lists
                    .get(&target.collection)
                    .cloned();
                if let Some(mut released) = held {
                    // A dropped hold (Err) releases too.
                    let _ = released.wait_for(|r| *r).await;
                }
                self.list(&target, &params)
            }
            (&Method::GET, Some(name)) => {
                let ns = target.namespace.clone().unwrap_or_default();
                match self.get(&target.collection, &ns, name) {
                    Some(o) => respond(200, &o),
                    None => respond(404, &status(404, "NotFound", &format!("{name} not found"))),
                }
            }
            (&Method::POST, None) => self.create(&target, &body),
            (&Method::PATCH, Some(name)) => {
                self.patch(&target, name, content_type.as_deref(), &body)
            }
            (&Method::DELETE, Some(name)) => self.delete(&target, name),
            _ => respond(
                405,
                &status(405, "MethodNotAllowed", &format!("{method} {uri}")),
            ),
        }
    }

    fn list(&self, target: &Target, params: &BTreeMap<String, String>) -> Answer {
        let inner = self.inner.lock().unwrap();
        let builtin = !target.api_version.contains(".vibeapp.dev");
        let items: Vec<Value> = inner
            .objects
            .iter()
            .filter(|((c, ns, _), o)| {
                c == &target.collection
                    && target.namespace.as_ref().is_none_or(|t| t == ns)
                    && matches_selector(o, params.get("labelSelector"))
            })
            .map(|(_, o)| {
                let mut o = o.clone();
                if builtin && let Some(m) = o.as_object_mut() {
                    m.remove("kind");
                    m.remove("apiVersion");
                }
                o
            })
            .collect();
        respond(
            200,
            &json!({
                "kind": format!("{}List", kind_of(&target.collection)),
                "apiVersion": target.api_version,
                "metadata": {"resourceVersion": inner.rv.to_string()},
                "items": items,
            }),
        )
    }

    fn watch(&self, target: &Target, params: &BTreeMap<String, String>) -> Answer {
        let selector = params.get("labelSelector").cloned();
        let initial_events = params.get("sendInitialEvents").is_some_and(|b| b == "true");
        let timeout = params
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let kind = kind_of(&target.collection);
        let relevant = {
            let collection = target.collection.clone();
            let namespace = target.namespace.clone();
            let selector = selector.clone();
            move |c: &Change| {
                c.collection == collection
                    && namespace.as_ref().is_none_or(|n| n == &c.namespace)
                    && matches_selector(&c.object, selector.as_ref())
            }
        };
        let event = |type_: &str, object: &Value| line(&json!({"type": type_, "object": object}));
        let initial_events_end = {
            let kind = kind.clone();
            let api_version = target.api_version.clone();
            move |rv: u64| {
                let metadata = json!({"resourceVersion": rv.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"}});
                line(
                    &json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": metadata}}),
                )
            }
        };

        // Under the lock: what to send first, and the subscription for what follows, so no
        // change falls between the two.
        let mut inner = self.inner.lock().unwrap();
        let live = self.signals.subscribe();
        let mut first: Vec<Bytes> = Vec::new();
        let mut closed = false;
        if initial_events {
            for ((c, ns, _), o) in &inner.objects {
                let change = Change {
                    rv: 0,
                    collection: c.clone(),
                    namespace: ns.clone(),
                    kind: "ADDED",
                    object: o.clone(),
                };
                if relevant(&change) {
                    first.push(event("ADDED", o));
                }
            }
            first.push(initial_events_end(inner.rv));
        } else {
            let from: u64 = params
                .get("resourceVersion")
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0);
            if from == 0 {
                // "Any" semantic: start now (a list came first).
            } else if from + 1 < inner.oldest {
                let message = format!(
                    "too old resource version: {from} ({})",
                    inner.oldest.saturating_sub(1)
                );
                first.push(event("ERROR", &status(410, "Expired", &message)));
                inner.gone += 1;
                closed = true;
            } else {
                for c in inner.history.iter().filter(|c| c.rv > from) {
                    if relevant(c) {
                        first.push(event(c.kind, &c.object));
                    }
                }
            }
        }
        drop(inner);

        let head = futures::stream::iter(first);
        let tail = futures::stream::unfold(
            (live, closed, tokio::time::Instant::now() + timeout),
            move |(mut live, closed, deadline)| {
                let relevant = relevant.clone();
                async move {
                    if closed {
                        return None;
                    }
                    loop {
                        let signal = tokio::select! {
                            s = live.recv() => s,
                            () = tokio::time::sleep_until(deadline) => return None,
                        };
                        match signal {
                            Ok(Signal::Change(c)) => {
                                if relevant(&c) {
                                    let line = event(c.kind, &c.object);
                                    return Some((line, (live, false, deadline)));
                                }
                            }
                            Ok(Signal::Close) | Err(_) => return None,
                        }
                    }
                }
            },
        );
        let frames = head
            .chain(tail)
            .map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
        Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::TRANSFER_ENCODING, "chunked")
            .body(StreamBody::new(frames).boxed_unsync())
            .unwrap()
    }

    fn patch(
        &self,
        target: &Target,
        name: &str,
        content_type: Option<&str>,
        body: &Value,
    ) -> Answer {
        let ns = target.namespace.clone().unwrap_or_default();
        let key: Key = (target.collection.clone(), ns.clone(), name.into());
        let mut inner = self.inner.lock().unwrap();
        let existing = inner.objects.get(&key).cloned();
        let updated = match (content_type, target.subresource.as_deref(), existing) {
            (Some("application/apply-patch+yaml"), Some("status"), Some(mut o)) => {
                o["status"] = body["status"].clone();
                o
            }
            (Some("application/apply-patch+yaml"), None, None) => {
                inner.new_object(target, &ns, name, body)
            }
            (Some("application/apply-patch+yaml"), None, Some(old)) => {
                let mut o = body.clone();
                for field in [
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "finalizers",
                    "namespace",
                ] {
                    if !old["metadata"][field].is_null() {
                        o["metadata"][field] = old["metadata"][field].clone();
                    }
                }
                o["status"] = old["status"].clone();
                if o["spec"] != old["spec"] {
                    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                    o["metadata"]["generation"] = json!(generation + 1);
                }
                if o["status"].is_null()
                    && let Some(m) = o.as_object_mut()
                {
                    m.remove("status");
                }
                o
            }
            (Some("application/json-patch+json"), None, Some(mut o)) => {
                let mut patch: json_patch::Patch = serde_json::from_value(body.clone()).unwrap();
                // kube-apiserver (evanphx/json-patch) lets `test` with `null` pass on a
                // missing path; kube's finalizer helper relies on it when adding the first
                // finalizer. The json-patch crate fails it, so such tests are dropped here.
                patch.0.retain(|op| match op {
                    json_patch::PatchOperation::Test(t) => {
                        !(t.value.is_null() && t.path.resolve(&o).is_err())
                    }
                    _ => true,
                });
                if let Err(e) = json_patch::patch(&mut o, &patch) {
                    return respond(422, &status(422, "Invalid", &e.to_string()));
                }
                o
            }
            (Some("application/merge-patch+json"), _, Some(mut o)) => {
                json_patch::merge(&mut o, body);
                o
            }
            (_, _, None) => {
                return respond(404, &status(404, "NotFound", &format!("{name} not found")));
            }
            (other, sub, _) => panic!("the fake API server cannot patch {other:?} {sub:?}"),
        };
        let stored = inner.store(key.clone(), updated, &self.signals);
        if inner.workloads_become_ready
            && target.subresource.is_none()
            && let Some(ready) = Inner::ready_status(&stored)
            && stored["status"] != ready
        {
            let mut o = stored.clone();
            o["status"] = ready;
            inner.store(key, o, &self.signals);
        }
        respond(200, &stored)
    }

    fn create(&self, target: &Target, body: &Value) -> Answer {
        let ns = target.namespace.clone().unwrap_or_default();
        let mut inner = self.inner.lock().unwrap();
        let name = match (
            body["metadata"]["name"].as_str(),
            body["metadata"]["generateName"].as_str(),
        ) {
            (Some(name), _) => name.to_string(),
            (None, Some(prefix)) => format!("{prefix}{}", inner.uid + 1),
            (None, None) => return respond(422, &status(422, "Invalid", "name is required")),
        };
        let key: Key = (target.collection.clone(), ns.clone(), name.clone());
        if inner.objects.contains_key(&key) {
            return respond(
                409,
                &status(409, "AlreadyExists", &format!("{name} exists")),
            );
        }
        let mut object = inner.new_object(target, &ns, &name, body);
        if target.collection.ends_with("/events") {
            // Events have no spec and keep what the client sent.
            object = body.clone();
            object["metadata"]["name"] = json!(name);
        }
        let stored = inner.store(key, object, &self.signals);
        respond(201, &stored)
    }

    fn delete(&self, target: &Target, name: &str) -> Answer {
        let ns = target.namespace.clone().unwrap_or_default();
        if self.get(&target.collection, &ns, name).is_none() {
            return respond(404, &status(404, "NotFound", &format!("{name} not found")));
        }
        self.delete_object(&target.collection, &ns, name);
        let stored = self.get(&target.collection, &ns, name);
        respond(
            200,
            &stored.unwrap_or_else(
                || json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
        )
    }
}
