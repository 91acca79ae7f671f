//! The operator **binary** against a real API server (issue 14): it must report ready within
//! seconds, admit an instance through its webhook, refuse each bad change with its message, and
//! build the instance's children.
//!
//! Run: `KUBECONFIG=… VIBE_TEST_WEBHOOK_HOST=… cargo test -p vibe-operator --test
//! binary_cluster -- --ignored` (deploy/local/test.d/30-operator-cluster does it). Needs
//! cluster-admin (the CRD and a ValidatingWebhookConfiguration are applied) and an API server
//! that reaches this machine at `https://$VIBE_TEST_WEBHOOK_HOST:<port>`: the configuration uses
//! `clientConfig.url`, and the operator's own CA signs a certificate for that host name. The
//! operator runs out of the cluster with leader election off and an unreachable object store
//! (buckets are not what this checks). Everything created is deleted at the end.

mod cluster_support;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vibe_operator::VibeInstance;

const DID: &str = "did:vibe:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
const OTHER_DID: &str = "did:vibe:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH";
const WEBHOOK_PREFIX: &str =
    "admission webhook \"vibeinstances.cloud.vibeapp.dev\" denied the request: ";

/// The operator process; killed when dropped.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup {
    client: Client,
    system: String,
    tenants: String,
    webhook: String,
}

async fn setup(webhook_host: &str, webhook_port: u16) -> Setup {
    let client = Client::try_default().await.expect("KUBECONFIG is usable");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "vibeinstances.cloud.vibeapp.dev",
        &PatchParams::apply("vibe-operator-tests").force(),
        &Patch::Apply(VibeInstance::crd()),
    )
    .await
    .unwrap();
    let suffix = std::process::id();
    let system = format!("vibe-bin-system-{suffix}");
    let tenants = format!("vibe-bin-tenants-{suffix}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [&system, &tenants] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces.create(&PostParams::default(), &n).await.unwrap();
    }
    let webhook = format!("vibe-operator-test-{suffix}");
    let configuration: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": webhook},
        "webhooks": [{
            "name": "vibeinstances.cloud.vibeapp.dev",
            "clientConfig": {"url": format!("https://{webhook_host}:{webhook_port}/validate/vibeinstance")},
            "rules": [{"apiGroups": ["cloud.vibeapp.dev"], "apiVersions": ["*"],
                "resources": ["vibeinstances"], "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": tenants}},
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5
        }]
    }))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &configuration)
        .await
        .unwrap();
    Setup {
        client,
        system,
        tenants,
        webhook,
    }
}

async fn teardown(s: &Setup) {
    let _ = Api::<ValidatingWebhookConfiguration>::all(s.client.clone())
        .delete(&s.webhook, &DeleteParams::default())
        .await;
    // A failed run may leave instances whose finalizer no operator will release, and claims
    // that nothing unprotects on a cluster without nodes.
    let left = cluster_support::delete_namespaces(
        &s.client,
        &[&s.system, &s.tenants],
        Duration::from_secs(120),
    )
    .await;
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

fn start_operator(s: &Setup, webhook_host: &str, ports: [u16; 3]) -> Operator {
    let [webhook, http, control_plane] = ports;
    let child = Command::new(env!("CARGO_BIN_EXE_vibe-operator"))
        .env("VIBE_WEBHOOK_ADDR", format!("127.0.0.1:{webhook}"))
        .env("VIBE_WEBHOOK_SERVICE", webhook_host)
        .env("VIBE_WEBHOOK_CONFIGURATION", &s.webhook)
        .env("VIBE_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env(
            "VIBE_CONTROL_PLANE_ADDR",
            format!("127.0.0.1:{control_plane}"),
        )
        .env("POD_NAMESPACE", &s.system)
        .env("VIBE_WATCH_NAMESPACES", &s.tenants)
        .env("VIBE_TENANT_NAMESPACE", &s.tenants)
        .env("VIBE_LEADER_ELECTION_DISABLED", "true")
        .env("VIBE_BASE_DOMAIN", "vibe.test")
        .env("VIBE_ALLOWED_IMAGES", "ghcr.io/vibe-cloud/*")
        .env("VIBE_S3_ENDPOINT", "http://127.0.0.1:1")
        .env("VIBE_S3_ACCESS_KEY_ID", "test")
        .env("VIBE_S3_SECRET_ACCESS_KEY", "test")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the vibe-operator binary starts");
    Operator(child)
}

/// The status code of the operator's `/readyz` (a one-shot HTTP/1.1 GET), `None` when it does
/// not answer yet.
async fn readyz(http: u16) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = format!("127.0.0.1:{http}");
    let path = "/readyz";
    let mut stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1)?.parse().ok()
}

fn instance(name: &str, spec: serde_json::Value) -> VibeInstance {
    serde_json::from_value(json!({
        "apiVersion": "cloud.vibeapp.dev/v1alpha1",
        "kind": "VibeInstance",
        "metadata": {"name": name},
        "spec": spec
    }))
    .unwrap()
}

/// Creates through the webhook, retrying while the API server cannot reach it yet (the CA
/// bundle is written at start and may take a moment to be used).
async fn create(api: &Api<VibeInstance>, i: &VibeInstance) -> Result<(), kube::Error> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match api.create(&PostParams::default(), i).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e))
                if e.code >= 500 && e.message.contains("failed calling webhook") =>
            {
                assert!(
                    Instant::now() < deadline,
                    "the API server never reached the webhook: {}",
                    e.message
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn refusal(result: Result<(), kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(e)) => {
            assert!(
                e.code == 400 || e.code == 422,
                "refused with {}: {}",
                e.code,
                e.message
            );
            e.message
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn apply(api: &Api<VibeInstance>, i: &VibeInstance) -> Result<(), kube::Error> {
    api.patch(
        &i.metadata.name.clone().unwrap(),
        &PatchParams::apply("vibe-operator-tests").force(),
        &Patch::Apply(i),
    )
    .await
    .map(drop)
}

#[tokio::test]
#[ignore = "needs KUBECONFIG and VIBE_TEST_WEBHOOK_HOST (deploy/local/test.d/30-operator-cluster)"]
async fn binary_is_ready_admits_and_refuses_on_a_real_api_server() {
    let host = std::env::var("VIBE_TEST_WEBHOOK_HOST").expect(
        "set VIBE_TEST_WEBHOOK_HOST to a host name the API server resolves to this machine",
    );
    let ports = [free_port(), free_port(), free_port()];
    let s = setup(&host, ports[0]).await;
    let result = tokio::spawn(scenario(
        s.client.clone(),
        s.tenants.clone(),
        start_operator(&s, &host, ports),
        ports[1],
    ))
    .await;
    teardown(&s).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(client: Client, tenants: String, operator: Operator, http: u16) {
    // Ready within seconds of start (before issue 14 it never was).
    let started = Instant::now();
    while readyz(http).await != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "/readyz not ok 15 s after start (last: {:?})",
            readyz(http).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("/readyz ok {:?} after start", started.elapsed());

    let api: Api<VibeInstance> = Api::namespaced(client.clone(), &tenants);
    let alice = instance("alice", json!({"deletionPolicy": "Retain"}));
    create(&api, &alice).await.expect("alice is admitted");
    let bob_spec =
        json!({"owner": {"did": DID}, "couchdb": {"storage": "10Gi"}, "deletionPolicy": "Retain"});
    create(&api, &instance("bob", bob_spec.clone()))
        .await
        .expect("bob is admitted");

    // Each rule refuses with its message (the webhook's, or the CRD's own rule for the owner).
    let long_label = "a".repeat(64);
    let cases: [(&str, Result<(), kube::Error>, &str); 6] = [
        (
            "bad DID",
            create(&api, &instance("baddid", json!({"owner": {"did": format!("did:vibe:z{}", "1".repeat(44))}}))).await,
            "is not a valid Vibe DID",
        ),
        (
            "bad host",
            create(&api, &instance("badhost", json!({"host": format!("{long_label}.example.org")}))).await,
            "is longer than 63 characters",
        ),
        (
            "host taken",
            create(&api, &instance("thief", json!({"host": "alice.vibe.test"}))).await,
            &format!("is already served by VibeInstance {tenants}/alice"),
        ),
        (
            "image not allowed",
            create(&api, &instance("evil", json!({"dataplane": {"image": "docker.io/evil/dataplane:1"}}))).await,
            "is not allowed by this operator's image allow-list",
        ),
        (
            "storage shrink",
            apply(&api, &instance("bob", json!({"owner": {"did": DID}, "couchdb": {"storage": "5Gi"}, "deletionPolicy": "Retain"}))).await,
            "cannot shrink the CouchDB volume from 10Gi to 5Gi",
        ),
        (
            "owner change",
            apply(&api, &instance("bob", json!({"owner": {"did": OTHER_DID}, "couchdb": {"storage": "10Gi"}, "deletionPolicy": "Retain"}))).await,
            "spec.owner cannot be changed or removed once set",
        ),
    ];
    for (rule, result, expected) in cases {
        let message = refusal(result);
        eprintln!("{rule}: {message}");
        assert!(message.contains(expected), "{rule}: {message}");
        if rule != "owner change" {
            assert!(
                message.contains(WEBHOOK_PREFIX),
                "{rule} is the webhook's: {message}"
            );
        }
    }

    // The controller builds the children.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &tenants);
    let deadline = Instant::now() + Duration::from_secs(15);
    while deployments
        .get_opt("alice-dataplane")
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "no data plane Deployment");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Deletion (Retain) releases the finalizer while the operator runs.
    for name in ["alice", "bob"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "instances were not released");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(operator);
}
