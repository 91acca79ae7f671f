//! An in-memory Kubernetes API behind kube's tower-test mock client (controller-rs pattern),
//! with the semantics the admission code relies on: create-if-absent (409 AlreadyExists),
//! replace conditioned on `resourceVersion` (409 Conflict), label-selector lists with
//! `limit`/`continue`, deletion with finalizers, and the status subresource kept apart.
//!
//! Requests are answered one at a time, in arrival order, like one API server; concurrency
//! comes from the many client tasks that interleave their reads and writes.
//!
//! Every request is checked against the operator's RBAC list (`rbac::assert_allowed`, the
//! check the controller's mock API runs too): one that `REQUIRED` does not grant is answered
//! 403 Forbidden, as the real API server would, and recorded; the test then fails when its
//! `FakeApi` handle is dropped (or at once through [`FakeApi::assert_rbac_clean`]).

#![allow(dead_code)]

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[path = "../rbac_list/mod.rs"]
#[allow(dead_code, missing_docs)]
mod rbac;

/// Resource plurals the fake serves.
const RESOURCES: [&str; 3] = [
    "secrets",
    "vibeinstances",
    "validatingwebhookconfigurations",
];

type Key = (String, Option<String>, String);

/// One request as seen by the fake, with its answer's status code.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: Method,
    pub resource: String,
    pub name: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    log: Vec<Logged>,
    failing: Option<String>,
    barrier: Option<Barrier>,
    /// Requests `rbac::REQUIRED` does not allow, with the reason.
    rbac_violations: Vec<String>,
}

/// Holds back answers to GETs of objects named `prefix…` until `readers` of them are waiting,
/// then answers them all, `rounds` times: every reader sees the same resourceVersion, so their
/// conditional writes really race.
struct Barrier {
    prefix: String,
    readers: usize,
    rounds: usize,
}

/// Handle to the fake API server's state.
#[derive(Clone, Default)]
pub struct FakeApi {
    store: Arc<Mutex<Store>>,
    /// Held by the test's handles only (not the serving task): when the last one is dropped,
    /// requests outside the RBAC list fail the test.
    rbac_check: Option<Arc<RbacCheck>>,
}

/// Fails the test (panics on drop, unless already panicking) when any request was outside
/// `rbac::REQUIRED`, as mock objects check their expectations when dropped.
struct RbacCheck(Arc<Mutex<Store>>);

impl Drop for RbacCheck {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let violations = self
            .0
            .lock()
            .map(|store| store.rbac_violations.clone())
            .unwrap_or_default();
        assert!(
            violations.is_empty(),
            "requests outside operator::rbac::REQUIRED (answered 403):\n{}",
            violations.join("\n")
        );
    }
}

/// `Err(reason)` when `rbac::REQUIRED` does not allow the request.
fn rbac_verdict(
    method: &Method,
    uri: &http::Uri,
    content_type: Option<&str>,
) -> Result<(), String> {
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
    std::panic::catch_unwind(|| {
        rbac::assert_allowed(method.as_str(), &path_and_query, content_type)
    })
    .map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| format!("{method} {path_and_query} is not allowed"))
    })
}

impl FakeApi {
    /// A fake API server and a client talking to it.
    pub fn start() -> (kube::Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let store = Arc::new(Mutex::new(Store::default()));
        let server = FakeApi {
            store: store.clone(),
            rbac_check: None,
        };
        let fake = FakeApi {
            rbac_check: Some(Arc::new(RbacCheck(store.clone()))),
            store,
        };
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let content_type = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                let (status, value) = match rbac_verdict(&parts.method, &parts.uri, content_type) {
                    Ok(()) => server.answer(&parts.method, &parts.uri, &bytes),
                    Err(reason) => server.forbid(&parts.method, &parts.uri, reason),
                };
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap()))
                    .unwrap();
                let name = parts
                    .uri
                    .path()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let mut store = server.store.lock().unwrap();
                match &mut store.barrier {
                    Some(barrier)
                        if parts.method == Method::GET && name.starts_with(&barrier.prefix) =>
                    {
                        held.push((respond, response));
                        if held.len() == barrier.readers {
                            barrier.rounds -= 1;
                            if barrier.rounds == 0 {
                                store.barrier = None;
                            }
                            for (respond, response) in held.drain(..) {
                                respond.send_response(response);
                            }
                        }
                    }
                    _ => respond.send_response(response),
                }
            }
        });
        (kube::Client::new(service, "default"), fake)
    }

    /// Requests so far that `rbac::REQUIRED` does not allow (each answered 403).
    pub fn rbac_violations(&self) -> Vec<String> {
        self.store.lock().unwrap().rbac_violations.clone()
    }

    /// Returns and forgets the violations so far (for tests that provoke one on purpose).
    pub fn take_rbac_violations(&self) -> Vec<String> {
        std::mem::take(&mut self.store.lock().unwrap().rbac_violations)
    }

    /// Panics now when a request so far was outside `rbac::REQUIRED` (otherwise that
    /// happens when the last test handle is dropped).
    pub fn assert_rbac_clean(&self) {
        let violations = self.rbac_violations();
        assert!(
            violations.is_empty(),
            "requests outside operator::rbac::REQUIRED (answered 403):\n{}",
            violations.join("\n")
        );
    }

    /// Answers 403 as an API server does when RBAC denies a request, and records it.
    fn forbid(&self, method: &Method, uri: &http::Uri, reason: String) -> (StatusCode, Value) {
        let mut store = self.store.lock().unwrap();
        store.rbac_violations.push(reason);
        let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
        store.log.push(Logged {
            method: method.clone(),
            resource: segments.iter().rev().nth(1).unwrap_or(&"").to_string(),
            name: segments.last().map(|s| s.to_string()),
            status: 403,
        });
        status(
            403,
            "Forbidden",
            &format!(
                "{} {} is forbidden: the operator's service account is not granted it",
                method,
                uri.path()
            ),
        )
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.store.lock().unwrap().log.clone()
    }

    /// Answers every request for `resource` with a 500 whose message holds internals.
    pub fn fail(&self, resource: Option<&str>) {
        self.store.lock().unwrap().failing = resource.map(String::from);
    }

    /// Makes `readers` concurrent GETs of objects named `prefix…` return together, `rounds` times.
    pub fn barrier(&self, prefix: &str, readers: usize, rounds: usize) {
        self.store.lock().unwrap().barrier = Some(Barrier {
            prefix: prefix.into(),
            readers,
            rounds,
        });
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.store.lock().unwrap().log.clear();
    }

    /// Writes (POST/PUT/PATCH/DELETE) in the log.
    pub fn writes(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.method != Method::GET)
            .collect()
    }

    /// A stored object.
    pub fn get(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = (
            resource.to_string(),
            namespace.map(String::from),
            name.to_string(),
        );
        self.store.lock().unwrap().objects.get(&key).cloned()
    }

    /// Every stored object of a resource.
    pub fn all(&self, resource: &str) -> Vec<Value> {
        let store = self.store.lock().unwrap();
        store
            .objects
            .iter()
            .filter(|((r, _, _), _)| r == resource)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stores an object as if created by someone else (kubectl, the operator).
    pub fn insert(&self, resource: &str, namespace: Option<&str>, mut object: Value) {
        let mut store = self.store.lock().unwrap();
        store.resource_version += 1;
        let rv = store.resource_version.to_string();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        object["metadata"]["resourceVersion"] = json!(rv);
        object["metadata"]["uid"] = json!(format!("uid-{rv}"));
        object["metadata"]["creationTimestamp"] = json!("2026-11-25T12:00:00Z");
        if let Some(ns) = namespace {
            object["metadata"]["namespace"] = json!(ns);
        }
        store
            .objects
            .insert((resource.into(), namespace.map(String::from), name), object);
    }

    /// Sets the status of a stored object (what the operator's status writes do).
    pub fn set_status(&self, resource: &str, namespace: Option<&str>, name: &str, status: Value) {
        let mut store = self.store.lock().unwrap();
        store.resource_version += 1;
        let rv = store.resource_version.to_string();
        let key = (
            resource.to_string(),
            namespace.map(String::from),
            name.to_string(),
        );
        let object = store.objects.get_mut(&key).expect("object exists");
        object["status"] = status;
        object["metadata"]["resourceVersion"] = json!(rv);
    }

    /// Removes an object outright (a finalizer finished).
    pub fn remove(&self, resource: &str, namespace: Option<&str>, name: &str) {
        let key = (
            resource.to_string(),
            namespace.map(String::from),
            name.to_string(),
        );
        self.store.lock().unwrap().objects.remove(&key);
    }

    fn answer(&self, method: &Method, uri: &http::Uri, body: &[u8]) -> (StatusCode, Value) {
        let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
        let Some(at) = segments.iter().position(|s| RESOURCES.contains(s)) else {
            return status(404, "NotFound", "unknown path");
        };
        let resource = segments[at].to_string();
        let namespace =
            (at >= 2 && segments[at - 2] == "namespaces").then(|| segments[at - 1].to_string());
        let name = segments.get(at + 1).map(|s| s.to_string());
        let subresource = segments.get(at + 2).map(|s| s.to_string());
        let query: BTreeMap<String, String> = uri
            .query()
            .map(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), percent_decode(v)))
                    .collect()
            })
            .unwrap_or_default();
        let mut store = self.store.lock().unwrap();
        if store.failing.as_deref() == Some(resource.as_str()) {
            return status(
                500,
                "InternalError",
                "etcdserver: leader changed; secret token=SUPERSECRET",
            );
        }
        let (code, value) = store.handle(
            method,
            &resource,
            namespace,
            name.clone(),
            subresource,
            &query,
            body,
        );
        store.log.push(Logged {
            method: method.clone(),
            resource,
            name,
            status: code.as_u16(),
        });
        (code, value)
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(code: u16, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn labels_match(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap();
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

impl Store {
    #[allow(clippy::too_many_arguments)]
    fn handle(
        &mut self,
        method: &Method,
        resource: &str,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
        query: &BTreeMap<String, String>,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let key = |name: &str| (resource.to_string(), namespace.clone(), name.to_string());
        match (method.clone(), name) {
            (Method::GET, Some(name)) => match self.objects.get(&key(&name)) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
            },
            (Method::GET, None) => {
                let mut items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|((r, ns, _), _)| {
                        r == resource && (namespace.is_none() || *ns == namespace)
                    })
                    .filter(|(_, o)| labels_match(o, query.get("labelSelector")))
                    .map(|(_, o)| o.clone())
                    .collect();
                let start: usize = query
                    .get("continue")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                items = items.into_iter().skip(start).collect();
                let mut next = None;
                if let Some(limit) = query.get("limit").and_then(|l| l.parse::<usize>().ok())
                    && items.len() > limit
                {
                    items.truncate(limit);
                    next = Some((start + limit).to_string());
                }
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List",
                           "metadata": {"resourceVersion": self.resource_version.to_string(), "continue": next},
                           "items": items}),
                )
            }
            (Method::POST, None) => {
                let mut object: Value = match serde_json::from_slice(body) {
                    Ok(o) => o,
                    Err(_) => return status(400, "BadRequest", "bad body"),
                };
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if self.objects.contains_key(&key(&name)) {
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("{resource} \"{name}\" already exists"),
                    );
                }
                self.resource_version += 1;
                let rv = self.resource_version.to_string();
                object["metadata"]["resourceVersion"] = json!(rv);
                object["metadata"]["uid"] = json!(format!("uid-{rv}"));
                object["metadata"]["creationTimestamp"] = json!("2026-11-25T12:00:00Z");
                if let Some(ns) = &namespace {
                    object["metadata"]["namespace"] = json!(ns);
                }
                if resource == "vibeinstances" {
                    object.as_object_mut().unwrap().remove("status");
                }
                self.objects.insert(key(&name), object.clone());
                (StatusCode::CREATED, object)
            }
            (Method::PUT, Some(name)) => {
                let mut object: Value = match serde_json::from_slice(body) {
                    Ok(o) => o,
                    Err(_) => return status(400, "BadRequest", "bad body"),
                };
                let Some(stored) = self.objects.get(&key(&name)).cloned() else {
                    return status(404, "NotFound", &format!("{resource} \"{name}\" not found"));
                };
                let sent_rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default();
                if !sent_rv.is_empty()
                    && sent_rv
                        != stored["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or_default()
                {
                    return status(
                        409,
                        "Conflict",
                        &format!(
                            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                        ),
                    );
                }
                self.resource_version += 1;
                let rv = self.resource_version.to_string();
                object["metadata"]["resourceVersion"] = json!(rv);
                for field in ["uid", "creationTimestamp", "namespace", "deletionTimestamp"] {
                    object["metadata"][field] = stored["metadata"][field].clone();
                }
                if resource == "vibeinstances" {
                    // Status subresource: PUT on the main resource ignores status, and vice versa.
                    if subresource.as_deref() == Some("status") {
                        let status = object["status"].clone();
                        object = stored.clone();
                        object["status"] = status;
                        object["metadata"]["resourceVersion"] = json!(rv);
                    } else {
                        object["status"] = stored["status"].clone();
                    }
                }
                let finalizers_gone = object["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(|f| f.is_empty());
                if !stored["metadata"]["deletionTimestamp"].is_null() && finalizers_gone {
                    self.objects.remove(&key(&name));
                } else {
                    self.objects.insert(key(&name), object.clone());
                }
                (StatusCode::OK, object)
            }
            (Method::DELETE, Some(name)) => {
                let Some(mut stored) = self.objects.get(&key(&name)).cloned() else {
                    return status(404, "NotFound", &format!("{resource} \"{name}\" not found"));
                };
                let has_finalizers = stored["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if has_finalizers {
                    self.resource_version += 1;
                    stored["metadata"]["deletionTimestamp"] = json!("2026-11-25T13:00:00Z");
                    stored["metadata"]["resourceVersion"] =
                        json!(self.resource_version.to_string());
                    self.objects.insert(key(&name), stored.clone());
                } else {
                    self.objects.remove(&key(&name));
                }
                (StatusCode::OK, stored)
            }
            _ => status(405, "MethodNotAllowed", "not supported by the fake"),
        }
    }
}
