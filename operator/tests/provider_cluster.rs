//! What a provider does, on a real API server (issue 14 item 2): install the packaged manifests,
//! run the operator with the chart's own service account, provision through the control-plane
//! API, delete with both policies, and restart the operator.
//!
//! Run: `KUBECONFIG=… VIBE_TEST_WEBHOOK_HOST=… cargo test -p vibe-operator --test
//! provider_cluster -- --ignored` (deploy/local/test.d/30-operator-cluster does it). Needs
//! cluster-admin, the API server able to reach this machine at `$VIBE_TEST_WEBHOOK_HOST`, the
//! offline deploy tools (`deploy/check/install-tools`: Helm SDK and kubectl with kustomize) and
//! the s3s-fs test server. Steps:
//!
//! 1. `kubectl kustomize deploy/kubernetes/operator` is applied server-side as a dry run (every
//!    object admitted by the real API server, nothing stored: its fixed cluster-wide names would
//!    clash with other users of a shared cluster), moved into this test's namespace.
//! 2. The chart, rendered into this test's namespaces with its monitoring on, is applied
//!    server-side for real. The PodMonitor, ServiceMonitor and PrometheusRule are applied when
//!    the cluster serves `monitoring.coreos.com/v1` (prometheus-operator installed); otherwise
//!    the test says they were not applied — no package registry ships those CRDs.
//! 3. The operator binary runs out of the cluster with the environment of the chart's
//!    Deployment and a token of the chart's ServiceAccount (TokenRequest), so every request it
//!    makes is checked against the chart's RBAC; the webhook configuration is pointed at it by
//!    URL. It must become ready, and never log "forbidden"; the account must not reach Secrets
//!    outside its namespaces.
//! 4. Registration through the control-plane API creates an owned instance, reported through
//!    `/api/v1/identities/{did}/status`; its children are built.
//! 5. Restart: the operator is stopped, a child deleted, the operator started again; it re-adopts
//!    the instance and rebuilds the child.
//! 6. Deletion: a `Delete` instance loses its bucket, a `Retain` one keeps it; both release
//!    their finalizer.
//!
//! Namespaces are `$VIBE_TEST_NAMESPACE_PREFIX` (default `vibe-prov-`) + the process id; every
//! object created is deleted at the end.

mod cluster_support;

use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, Kubeconfig, NamedAuthInfo};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vibe_identity::{Keypair, signed};
use vibe_operator::VibeInstance;
use vibe_operator::bucket::BucketClient;
use vibe_operator::config::S3Config;

const MANAGER: &str = "vibe-provider-tests";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The virtualenv of the offline deploy tools (installed on first use).
fn deploy_tools() -> PathBuf {
    let out = Command::new(repo().join("deploy/check/install-tools"))
        .stderr(Stdio::inherit())
        .output()
        .expect("deploy/check/install-tools runs");
    assert!(out.status.success(), "deploy/check/install-tools failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .filter(|d| !d.is_null())
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::inherit()).output().expect("command runs");
    assert!(out.status.success(), "{cmd:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Names {
    system: String,
    tenants: String,
    release: String,
}

impl Names {
    fn new() -> Self {
        let prefix =
            std::env::var("VIBE_TEST_NAMESPACE_PREFIX").unwrap_or_else(|_| "vibe-prov-".into());
        let id = std::process::id();
        Self {
            system: format!("{prefix}{id}-system"),
            tenants: format!("{prefix}{id}-tenants"),
            release: format!("{prefix}{id}-op"),
        }
    }
}

/// Server-side applies `doc` (a dry run when `dry_run`). `Ok(false)` when the cluster does not
/// serve its kind.
async fn apply(client: &Client, doc: &Value, dry_run: bool) -> Result<bool, kube::Error> {
    let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            doc["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, doc["kind"].as_str().unwrap());
    let (resource, caps) = match discovery::pinned_kind(client, &gvk).await {
        Ok(found) => found,
        Err(_) => return Ok(false),
    };
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            doc["metadata"]["namespace"].as_str().unwrap(),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply(MANAGER).force();
    params.dry_run = dry_run;
    api.patch(
        doc["metadata"]["name"].as_str().unwrap(),
        &params,
        &Patch::Apply(doc),
    )
    .await?;
    Ok(true)
}

/// The kustomize output with its namespace `vibe-system` replaced by `ns`.
fn kustomize_output(tools: &Path, ns: &str) -> Vec<Value> {
    let text = run(Command::new(tools.join("bin/kubectl"))
        .arg("kustomize")
        .arg(repo().join("deploy/kubernetes/operator")));
    let moved = text.replace("namespace: vibe-system", &format!("namespace: {ns}"));
    let mut docs = yaml_docs(&moved);
    for d in &mut docs {
        if d["kind"] == "Namespace" {
            d["metadata"]["name"] = json!(ns);
        }
    }
    docs
}

fn chart_output(tools: &Path, names: &Names) -> Vec<Value> {
    let values = json!({
        "fullnameOverride": names.release,
        "watchNamespaces": [names.tenants],
        "tenantNamespace": names.tenants,
        "replicaCount": 1,
        "registration": {"policy": "open"},
        "metrics": {"serviceMonitor": {"enabled": true}},
        "monitoring": {"podMonitor": {"enabled": true}, "prometheusRule": {"enabled": true},
                       "dashboard": {"enabled": true}},
    });
    yaml_docs(&run(Command::new(tools.join("bin/python"))
        .arg(repo().join("deploy/check/manifests.py"))
        .args(["render", &names.system, &values.to_string()])))
}

/// The operator process; killed when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run<'a> {
    deployment: &'a Value,
    kubeconfig: &'a Path,
    webhook_host: &'a str,
    ports: [u16; 3],
    s3: &'a S3Config,
    log: PathBuf,
}

/// Starts the binary with the chart Deployment's environment (fieldRefs and Secret refs filled
/// in the way the kubelet would), listening on local ports.
fn start_operator(r: &Run<'_>, system: &str) -> Operator {
    let [webhook, http, api] = r.ports;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vibe-operator"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KUBECONFIG", r.kubeconfig);
    let container = &r.deployment["spec"]["template"]["spec"]["containers"][0];
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = match (&e["value"], &e["valueFrom"]) {
            (Value::String(v), _) => v.clone(),
            (_, from) if from["fieldRef"]["fieldPath"] == "metadata.namespace" => system.into(),
            (_, from) if from["fieldRef"]["fieldPath"] == "metadata.name" => "operator-0".into(),
            (_, from) if from["secretKeyRef"]["key"] == "access-key-id" => {
                r.s3.access_key_id.clone()
            }
            (_, from) if from["secretKeyRef"]["key"] == "secret-access-key" => {
                r.s3.secret_access_key.clone()
            }
            other => panic!("the chart sets {name} in a way this test cannot reproduce: {other:?}"),
        };
        cmd.env(name, value);
    }
    cmd.env("VIBE_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("VIBE_WEBHOOK_ADDR", format!("127.0.0.1:{webhook}"))
        .env("VIBE_CONTROL_PLANE_ADDR", format!("127.0.0.1:{api}"))
        .env("VIBE_WEBHOOK_SERVICE", r.webhook_host)
        .env("VIBE_S3_ENDPOINT", &r.s3.endpoint)
        .env("VIBE_S3_REGION", &r.s3.region)
        .env("VIBE_S3_PATH_STYLE", "true")
        .env("VIBE_TRUST_FORWARDED_FOR", "false")
        .env("VIBE_LOG_FORMAT", "text");
    let log = std::fs::File::create(&r.log).unwrap();
    let child = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("the vibe-operator binary starts");
    Operator {
        child,
        log: r.log.clone(),
    }
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("127.0.0.1:{port}");
    let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

async fn post_json(port: u16, path: &str, body: &Value) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("127.0.0.1:{port}");
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // The body may be chunked: take the JSON object inside.
    let json = body
        .find('{')
        .and_then(|start| body.rfind('}').map(|end| &body[start..=end]))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

async fn wait_ready(op: &Operator, http: u16) {
    let started = Instant::now();
    while get(http, "/readyz").await.map(|r| r.0) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "/readyz not ok 20 s after start; log:\n{}",
            std::fs::read_to_string(&op.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A kubeconfig that authenticates with `token` to the current cluster.
fn token_kubeconfig(token: &str, path: &Path) {
    let mut config = Kubeconfig::read().expect("KUBECONFIG is readable");
    let context = config.current_context.clone().expect("a current context");
    let user = "chart-service-account".to_string();
    for c in &mut config.contexts {
        if c.name == context {
            c.context.as_mut().unwrap().user = Some(user.clone());
        }
    }
    config.auth_infos = vec![NamedAuthInfo {
        name: user,
        auth_info: Some(AuthInfo {
            token: Some(token.to_string().into()),
            ..AuthInfo::default()
        }),
        other: Default::default(),
    }];
    std::fs::write(path, serde_json::to_vec(&config).unwrap()).unwrap();
}

async fn allowed(client: &Client, verb: &str, group_resource: &str, namespace: &str) -> bool {
    let (group, resource) = group_resource
        .split_once('/')
        .unwrap_or(("", group_resource));
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: Some(namespace.into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

#[tokio::test]
#[ignore = "needs KUBECONFIG, VIBE_TEST_WEBHOOK_HOST and the deploy tools (deploy/local/test.d/30-operator-cluster)"]
async fn a_provider_installs_runs_provisions_restarts_and_deletes() {
    let host = std::env::var("VIBE_TEST_WEBHOOK_HOST").expect(
        "set VIBE_TEST_WEBHOOK_HOST to a host name the API server resolves to this machine",
    );
    let client = Client::try_default().await.expect("KUBECONFIG is usable");
    let names = Names::new();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [&names.system, &names.tenants] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces.create(&PostParams::default(), &n).await.unwrap();
    }
    let scratch = tempfile::tempdir().unwrap();
    let tools = deploy_tools();
    let chart = chart_output(&tools, &names);
    // Not spawned: the scenario's futures borrow across awaits; a panic is caught to tear down.
    let result = std::panic::AssertUnwindSafe(scenario(
        client.clone(),
        host,
        tools,
        names.system.clone(),
        names.tenants.clone(),
        names.release.clone(),
        chart.clone(),
        scratch.path().to_path_buf(),
    ))
    .catch_unwind()
    .await;
    teardown(&client, &names, &chart).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn teardown(client: &Client, names: &Names, chart: &[Value]) {
    // Cluster-scoped objects of the chart (the CRD stays: other tests and users share it).
    for doc in chart {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if !matches!(
            kind,
            "ClusterRole" | "ClusterRoleBinding" | "ValidatingWebhookConfiguration"
        ) {
            continue;
        }
        let gvk = GroupVersionKind::gvk(
            doc["apiVersion"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap(),
            doc["apiVersion"]
                .as_str()
                .unwrap()
                .split('/')
                .nth(1)
                .unwrap(),
            kind,
        );
        if let Ok((resource, _)) = discovery::pinned_kind(client, &gvk).await {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let _ = api
                .delete(
                    doc["metadata"]["name"].as_str().unwrap(),
                    &DeleteParams::default(),
                )
                .await;
        }
    }
    // Instances whose finalizer no operator will release, claims nothing unprotects on a
    // cluster without nodes: cleared until the namespaces are gone.
    let left = cluster_support::delete_namespaces(
        client,
        &[&names.system, &names.tenants],
        Duration::from_secs(120),
    )
    .await;
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[allow(clippy::too_many_arguments)]
async fn scenario(
    client: Client,
    host: String,
    tools: PathBuf,
    system: String,
    tenants: String,
    release: String,
    chart: Vec<Value>,
    scratch: PathBuf,
) {
    // 1. kustomize output: every object admitted by the API server (dry run).
    let kustomized = kustomize_output(&tools, &system);
    let crd = kustomized
        .iter()
        .find(|d| d["kind"] == "CustomResourceDefinition")
        .expect("the kustomize base has the CRD");
    apply(&client, crd, false).await.expect("CRD applies");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for doc in &kustomized {
        if doc["kind"] == "Namespace" {
            continue;
        }
        let served = apply(&client, doc, true).await.unwrap_or_else(|e| {
            panic!(
                "kustomize output: {} {} refused: {e}",
                doc["kind"], doc["metadata"]["name"]
            )
        });
        assert!(served, "kustomize output: {} is not served", doc["kind"]);
    }
    eprintln!(
        "kustomize output: {} objects admitted (dry run)",
        kustomized.len()
    );

    // 2. The chart's rendered output, applied for real.
    let mut skipped = Vec::new();
    for doc in &chart {
        let served = apply(&client, doc, false).await.unwrap_or_else(|e| {
            panic!(
                "chart output: {} {} refused: {e}",
                doc["kind"], doc["metadata"]["name"]
            )
        });
        if !served {
            skipped.push(format!("{} {}", doc["kind"], doc["metadata"]["name"]));
        }
    }
    for s in &skipped {
        assert!(
            s.starts_with("\"PodMonitor\"")
                || s.starts_with("\"ServiceMonitor\"")
                || s.starts_with("\"PrometheusRule\""),
            "chart output: {s} is not served by the cluster"
        );
        eprintln!(
            "chart output: {s} not applied: the cluster does not serve monitoring.coreos.com/v1 (prometheus-operator CRDs)"
        );
    }
    eprintln!(
        "chart output: {} objects applied server-side",
        chart.len() - skipped.len()
    );

    // The webhook configuration is pointed at the operator by URL (it runs out of the cluster).
    let ports = [free_port(), free_port(), free_port()];
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let webhook_name = format!("{release}-webhook");
    let mut configuration = webhooks.get(&webhook_name).await.unwrap();
    for w in configuration.webhooks.iter_mut().flatten() {
        w.client_config.service = None;
        w.client_config.url = Some(format!("https://{host}:{}/validate/vibeinstance", ports[0]));
    }
    webhooks
        .replace(&webhook_name, &PostParams::default(), &configuration)
        .await
        .unwrap();

    // 3. The operator with the chart's ServiceAccount token.
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &system)
        .create_token_request(&release, &PostParams::default(), &request)
        .await
        .expect("a token of the chart's ServiceAccount")
        .status
        .and_then(|s| s.token)
        .expect("the TokenRequest answers a token");
    let kubeconfig = scratch.join("kubeconfig");
    token_kubeconfig(&token, &kubeconfig);
    let sa_client = Client::try_from(
        kube::Config::from_custom_kubeconfig(
            serde_json::from_slice(&std::fs::read(&kubeconfig).unwrap()).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert!(allowed(&sa_client, "create", "apps/statefulsets", &tenants).await);
    for (verb, resource, ns) in [
        ("list", "secrets", "kube-system"),
        ("get", "secrets", "default"),
        ("delete", "namespaces", ""),
        (
            "create",
            "rbac.authorization.k8s.io/clusterrolebindings",
            "",
        ),
    ] {
        assert!(
            !allowed(&sa_client, verb, resource, ns).await,
            "the chart's ServiceAccount may {verb} {resource} in {ns:?}"
        );
    }

    let s3_server = vibe_test_support::S3Server::start().await.unwrap();
    let s3 = S3Config {
        endpoint: s3_server.endpoint.clone(),
        region: s3_server.region.clone(),
        path_style: true,
        access_key_id: s3_server.access_key.clone(),
        secret_access_key: s3_server.secret_key.clone(),
        tenant_endpoint: None,
    };
    let deployment = chart
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the chart has the operator Deployment");
    let mut run = Run {
        deployment,
        kubeconfig: &kubeconfig,
        webhook_host: &host,
        ports,
        s3: &s3,
        log: scratch.join("operator-1.log"),
    };
    let operator = start_operator(&run, &system);
    wait_ready(&operator, ports[1]).await;

    // 4. Registration through the control-plane API → an owned instance. The API listens once
    // its signing key is loaded from (or written to) its Secret.
    let started = Instant::now();
    while get(ports[2], "/health").await.map(|r| r.0) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the control-plane API does not answer; log:\n{}",
            std::fs::read_to_string(&operator.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = Keypair::generate();
    let did = key.did().to_string();
    let timestamp = chrono::Utc::now().to_rfc3339();
    let nonce = format!("nonce-{}", std::process::id());
    let signature = key.sign_base64(&signed::register_message(&did, &nonce, &timestamp, None));
    let (status, body) = post_json(
        ports[2],
        "/api/v1/auth/register",
        &json!({"did": did, "nonce": nonce, "timestamp": timestamp, "signature": signature,
                "profileName": "Provider test"}),
    )
    .await;
    assert!(status == 200 || status == 201, "register: {status} {body}");
    let api: Api<VibeInstance> = Api::namespaced(client.clone(), &tenants);
    let deadline = Instant::now() + Duration::from_secs(20);
    let owned = loop {
        let list = api.list(&Default::default()).await.unwrap();
        if let Some(i) = list
            .items
            .into_iter()
            .find(|i| i.owner_did() == Some(did.as_str()))
        {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "registration creates an instance owned by the DID"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let name = owned.name_any();
    let uid = owned.uid().unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &tenants);
    let child = format!("{name}-dataplane");
    eventually(
        "the registered instance's data plane Deployment",
        20,
        || {
            let d = deployments.clone();
            let child = child.clone();
            async move { d.get_opt(&child).await.unwrap().is_some() }
        },
    )
    .await;
    eventually(
        "the status is reported through the control-plane API",
        20,
        || {
            let path = format!("/api/v1/identities/{did}/status");
            async move {
                matches!(get(ports[2], &path).await, Some((200, body)) if body.contains("isActive"))
            }
        },
    )
    .await;

    // 5. Restart: the operator is stopped, a child deleted, the operator started again.
    drop(operator);
    deployments
        .delete(&child, &DeleteParams::default())
        .await
        .unwrap();
    run.log = scratch.join("operator-2.log");
    let operator = start_operator(&run, &system);
    wait_ready(&operator, ports[1]).await;
    eventually(
        "the restarted operator rebuilds the deleted child",
        30,
        || {
            let d = deployments.clone();
            let child = child.clone();
            async move { d.get_opt(&child).await.unwrap().is_some() }
        },
    )
    .await;
    let rebuilt = deployments.get(&child).await.unwrap();
    assert_eq!(
        rebuilt.owner_references()[0].uid,
        uid,
        "re-adopted: the child belongs to the same instance"
    );

    // 6. Deletion with both policies.
    let bucket = |n: &str| vibe_operator::naming::bucket_name("vibe-", &tenants, n);
    let doomed: VibeInstance = serde_json::from_value(json!({
        "apiVersion": "cloud.vibeapp.dev/v1alpha1", "kind": "VibeInstance",
        "metadata": {"name": "doomed"}, "spec": {"deletionPolicy": "Delete"}
    }))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match api.create(&PostParams::default(), &doomed).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code >= 500 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("doomed is not admitted: {e}"),
        }
    }
    let buckets = BucketClient::new(&s3);
    for n in ["doomed", name.as_str()] {
        let b = bucket(n);
        let buckets = &buckets;
        eventually(&format!("bucket {b} exists"), 30, || {
            let b = b.clone();
            async move { buckets.exists(&b).await.unwrap_or(false) }
        })
        .await;
    }
    for n in ["doomed", name.as_str()] {
        api.delete(n, &DeleteParams::default()).await.unwrap();
    }
    eventually("both instances release their finalizer", 30, || {
        let api = api.clone();
        async move {
            api.list(&Default::default())
                .await
                .unwrap()
                .items
                .is_empty()
        }
    })
    .await;
    assert!(
        !buckets.exists(&bucket("doomed")).await.unwrap(),
        "Delete removes the bucket"
    );
    assert!(
        buckets.exists(&bucket(&name)).await.unwrap(),
        "Retain keeps the bucket"
    );

    drop(operator);
    for log in ["operator-1.log", "operator-2.log"] {
        let text = std::fs::read_to_string(scratch.join(log)).unwrap();
        assert!(
            !text.to_ascii_lowercase().contains("forbidden"),
            "the chart's RBAC refused the operator something ({log}):\n{text}"
        );
    }
}
