//! Against a real cluster (`KUBECONFIG` set, CRD installed, the operator running):
//! register → a VibeInstance appears, owned by the DID → its status is reported through
//! `/api/v1/identities/{did}/status`. Run with `cargo test -p vibe-operator --test
//! admission_cluster -- --ignored`. `VIBE_TEST_NAMESPACE` (default `default`) holds both the
//! registry Secrets and the instance; everything created is deleted at the end.

use axum::body::Body;
use axum::extract::ConnectInfo;
use chrono::Utc;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use kube::Api;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use vibe_identity::{Keypair, signed};
use vibe_operator::VibeInstance;
use vibe_operator::control_plane::api::ratelimit::RateLimiter;
use vibe_operator::control_plane::api::tokens::Tokens;
use vibe_operator::control_plane::api::{self, ControlPlane, RegistrationPolicy};
use vibe_operator::control_plane::registry::{Registry, RegistrySettings};
use vibe_operator::crd::DeletionPolicy;

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
    bearer: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut request = request
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo("127.0.0.1:1".parse::<SocketAddr>().unwrap()));
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (KUBECONFIG), the VibeInstance CRD and a running operator"]
async fn register_provisions_an_instance_whose_status_is_reported() {
    let namespace = std::env::var("VIBE_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let client = kube::Client::try_default().await.expect("KUBECONFIG");
    let registry = Registry::new(
        client.clone(),
        RegistrySettings {
            namespace: namespace.clone(),
            tenant_namespace: namespace.clone(),
            deletion_policy: DeletionPolicy::Delete,
            claim_namespaces: vec![namespace.clone()],
        },
    );
    let key = registry.signing_key().await.unwrap();
    let app = api::router(
        ControlPlane {
            registry,
            tokens: Arc::new(Tokens::new(&key, "https://control-plane.test")),
            policy: RegistrationPolicy::Open,
            clock_skew: signed::DEFAULT_CLOCK_SKEW,
        },
        Arc::new(RateLimiter::new(1000, 1000, false)),
    );

    let user = Keypair::generate();
    let did = user.did().to_string();
    let ts = Utc::now().to_rfc3339();
    let nonce = uuid::Uuid::new_v4().to_string();
    let body = json!({"did": did, "nonce": nonce, "timestamp": ts,
                      "signature": user.sign_base64(&signed::register_message(&did, &nonce, &ts, None))});
    let (status, registered) = call(&app, "POST", "/api/v1/auth/register", Some(body), None).await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let name = registered["identity"]["instanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let token = registered["tokenDetails"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();

    let instances: Api<VibeInstance> = Api::namespaced(client, &namespace);
    let instance = instances.get(&name).await.expect("the VibeInstance exists");
    assert_eq!(instance.owner_did(), Some(did.as_str()));

    // The operator reconciles it; the status leaves `pending` once it reports a phase.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let (_, status) = call(
            &app,
            "GET",
            &format!("/api/v1/identities/{did}/status"),
            None,
            None,
        )
        .await;
        last = status.clone();
        if status["isActive"] == true && status["instanceStatus"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert_ne!(
        last["instanceStatus"], "pending",
        "the operator never reported on {name}: {last}"
    );

    let (status, _) = call(
        &app,
        "DELETE",
        &format!("/api/v1/identities/{did}"),
        None,
        Some(&token),
    )
    .await;
    assert!(status == StatusCode::ACCEPTED || status == StatusCode::OK);
}
