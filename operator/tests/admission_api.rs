//! The control plane API against an in-memory Kubernetes API (tower-test mock client): every
//! route and error string, registration policy, provisioning, replay protection, claim-code
//! and refresh-token races, status derived from the VibeInstance.

mod admission_support;

use admission_support::FakeApi;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use chrono::{Duration, Utc};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;
use vibe_identity::{Keypair, TokenIssuer, TokenKind, TokenSpec, TokenVerifier, signed};
use vibe_operator::control_plane::api::ratelimit::RateLimiter;
use vibe_operator::control_plane::api::tokens::Tokens;
use vibe_operator::control_plane::api::{self, ControlPlane, RegistrationPolicy};
use vibe_operator::control_plane::registry::records::ClaimPurpose;
use vibe_operator::control_plane::registry::{Registry, RegistrySettings};
use vibe_operator::crd::DeletionPolicy;

const URL: &str = "https://cp.example.org";
const NS: &str = "vibe-system";
const TENANTS: &str = "tenants";

struct Harness {
    app: Router,
    fake: FakeApi,
    registry: Registry,
    key: Keypair,
}

fn harness_on(
    client: kube::Client,
    fake: FakeApi,
    policy: RegistrationPolicy,
    limiter: RateLimiter,
) -> Harness {
    let registry = Registry::new(
        client,
        RegistrySettings {
            namespace: NS.into(),
            tenant_namespace: TENANTS.into(),
            deletion_policy: DeletionPolicy::Delete,
            claim_namespaces: Vec::new(),
        },
    );
    let key = Keypair::from_seed([7; 32]);
    let state = ControlPlane {
        registry: registry.clone(),
        tokens: Arc::new(Tokens::new(&key, URL)),
        policy,
        clock_skew: signed::DEFAULT_CLOCK_SKEW,
    };
    Harness {
        app: api::router(state, Arc::new(limiter)),
        fake,
        registry,
        key,
    }
}

fn harness(policy: RegistrationPolicy) -> Harness {
    let (client, fake) = FakeApi::start();
    harness_on(
        client,
        fake,
        policy,
        RateLimiter::new(100_000, 100_000, false),
    )
}

/// What a request got: status, JSON body (`null` when not JSON) and headers.
type Answer = (StatusCode, Value, HeaderMap);

/// Requests to the harness's control plane, by method; `_as` sends a bearer token.
impl Harness {
    async fn get(&self, path: &str) -> Answer {
        call(&self.app, "GET", path, None, None).await
    }

    async fn get_as(&self, path: &str, token: &str) -> Answer {
        call(&self.app, "GET", path, None, Some(token)).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        call(&self.app, "POST", path, Some(body), None).await
    }

    async fn put_as(&self, path: &str, body: Value, token: &str) -> Answer {
        call(&self.app, "PUT", path, Some(body), Some(token)).await
    }

    async fn delete_as(&self, path: &str, token: &str) -> Answer {
        call(&self.app, "DELETE", path, None, Some(token)).await
    }
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    body: Option<Value>,
    bearer: Option<&str>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(serde_json::to_vec(&body).unwrap())
        }
        None => Body::empty(),
    };
    let mut request = request.body(body).unwrap();
    request.extensions_mut().insert(ConnectInfo(
        "192.0.2.10:40000".parse::<SocketAddr>().unwrap(),
    ));
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value, headers)
}

fn now() -> String {
    Utc::now().to_rfc3339()
}

fn register_body(key: &Keypair, nonce: &str, claim: Option<&str>) -> Value {
    let did = key.did().to_string();
    let ts = now();
    let signature = key.sign_base64(&signed::register_message(&did, nonce, &ts, claim));
    let mut body = json!({"did": did, "nonce": nonce, "timestamp": ts, "signature": signature, "profileName": "Alice"});
    if let Some(code) = claim {
        body["claimCode"] = json!(code);
    }
    body
}

fn login_body(key: &Keypair, nonce: &str) -> Value {
    let did = key.did().to_string();
    let ts = now();
    let signature = key.sign_base64(&signed::login_message(&did, nonce, &ts));
    json!({"did": did, "nonce": nonce, "timestamp": ts, "signature": signature})
}

fn claim_body(key: &Keypair, code: &str) -> Value {
    json!({"did": key.did().to_string(), "claimCode": code, "signature": key.sign_base64(code)})
}

fn error(value: &Value) -> &str {
    value["error"].as_str().unwrap_or_default()
}

async fn register(h: &Harness, key: &Keypair) -> Value {
    let (status, body, _) = h
        .post("/api/v1/auth/register", register_body(key, &uuid(), None))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn instance_name(body: &Value) -> String {
    body["identity"]["instanceId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn health_answers() {
    let h = harness(RegistrationPolicy::Open);
    let (status, body, _) = h.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["service"], "control-plane");
    let (status, body, _) = h.get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&body), "NOT_FOUND");
}

#[tokio::test]
async fn registration_provisions_an_owned_instance_and_signs_in() {
    let h = harness(RegistrationPolicy::Open);
    let key = Keypair::generate();
    let body = register(&h, &key).await;
    let identity = &body["identity"];
    assert_eq!(identity["identityDid"], key.did().to_string());
    assert_eq!(identity["isAdmin"], false);
    assert_eq!(identity["profileName"], "Alice");
    assert_eq!(identity["instanceStatus"], "pending");
    let name = instance_name(&body);
    let instance = h
        .fake
        .get("vibeinstances", Some(TENANTS), &name)
        .expect("VibeInstance created");
    assert_eq!(instance["spec"]["owner"]["did"], key.did().to_string());
    assert_eq!(instance["spec"]["deletionPolicy"], "Delete");

    let tokens = &body["tokenDetails"];
    assert_eq!(tokens["tokenType"], "Bearer");
    assert!(tokens["accessTokenExpiresIn"].as_i64().unwrap() > Utc::now().timestamp());
    assert!(tokens["refreshTokenExpiresAt"].as_i64().unwrap() > Utc::now().timestamp() + 86_400);
    let access = tokens["accessToken"].as_str().unwrap();
    let ours = TokenVerifier::new(&h.key.public_key(), URL, URL);
    assert_eq!(
        ours.verify(access, TokenKind::Access).unwrap().sub,
        key.did().to_string()
    );
    // A data plane (audience = its own URL) never accepts a control plane token.
    let data_plane = TokenVerifier::new(&h.key.public_key(), URL, "https://alice.example.org");
    assert!(data_plane.verify(access, TokenKind::Access).is_err());
}

#[tokio::test]
async fn re_registering_never_resets_or_reprovisions_the_instance() {
    let h = harness(RegistrationPolicy::Open);
    let key = Keypair::generate();
    let first = register(&h, &key).await;
    let name = instance_name(&first);
    h.fake.set_status(
        "vibeinstances",
        Some(TENANTS),
        &name,
        json!({"phase": "Ready", "url": "https://x.example.org",
               "conditions": [{"type": "Ready", "status": "True", "reason": "AllReady", "message": "",
                               "lastTransitionTime": "2026-11-25T12:05:00Z"}]}),
    );
    let before = h.fake.get("vibeinstances", Some(TENANTS), &name).unwrap();
    h.fake.clear_log();
    let second = register(&h, &key).await;
    assert_eq!(instance_name(&second), name);
    assert_eq!(second["identity"]["instanceStatus"], "completed");
    assert_eq!(second["identity"]["instanceUrl"], "https://x.example.org");
    let after = h.fake.get("vibeinstances", Some(TENANTS), &name).unwrap();
    assert_eq!(before, after, "the healthy instance is untouched");
    assert!(
        h.fake
            .writes()
            .iter()
            .all(|w| w.resource != "vibeinstances")
    );
    assert_eq!(h.fake.all("vibeinstances").len(), 1);
}

#[tokio::test]
async fn registration_errors_keep_the_original_strings() {
    let h = harness(RegistrationPolicy::Open);
    let key = Keypair::generate();
    let mut body = register_body(&key, "n1", None);
    body["signature"] = json!(Keypair::generate().sign_base64("x"));
    let (status, answer, _) = h.post("/api/v1/auth/register", body).await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::UNAUTHORIZED,
            "Invalid signature for registration."
        )
    );

    let did = key.did().to_string();
    let old = (Utc::now() - Duration::minutes(10)).to_rfc3339();
    let stale = json!({"did": did, "nonce": "n2", "timestamp": old,
                       "signature": key.sign_base64(&signed::register_message(&did, "n2", &old, None))});
    let (status, answer, _) = h.post("/api/v1/auth/register", stale).await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::BAD_REQUEST,
            "Request timestamp is invalid or expired."
        )
    );

    let (status, answer, _) = h.post("/api/v1/auth/register", json!({"did": did})).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "Validation failed")
    );
    assert!(answer["details"].as_str().unwrap().contains("nonce"));

    let mut picture = register_body(&key, "n3", None);
    picture["profilePictureUrl"] = json!("javascript:alert(1)");
    let (status, _, _) = h.post("/api/v1/auth/register", picture).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(h.fake.all("vibeinstances").is_empty());
}

#[tokio::test]
async fn replayed_signed_requests_are_refused_on_every_replica() {
    let (client, fake) = FakeApi::start();
    let a = harness_on(
        client.clone(),
        fake.clone(),
        RegistrationPolicy::Open,
        RateLimiter::new(1000, 1000, false),
    );
    let b = harness_on(
        client,
        fake,
        RegistrationPolicy::Open,
        RateLimiter::new(1000, 1000, false),
    );
    let key = Keypair::generate();
    let body = register_body(&key, "same-nonce", None);
    let (status, _, _) = a.post("/api/v1/auth/register", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    for app in [&a.app, &b.app] {
        let (status, answer, _) = call(
            app,
            "POST",
            "/api/v1/auth/register",
            Some(body.clone()),
            None,
        )
        .await;
        assert_eq!(
            (status, error(&answer)),
            (StatusCode::UNAUTHORIZED, "Request has already been used.")
        );
    }
    let login = login_body(&key, "login-nonce");
    let (status, _, _) = a.post("/api/v1/auth/login", login.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer, _) = b.post("/api/v1/auth/login", login).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::UNAUTHORIZED, "Request has already been used.")
    );
}

#[tokio::test]
async fn registration_policy_closed_and_invite_only() {
    let closed = harness(RegistrationPolicy::Closed);
    let key = Keypair::generate();
    let (status, answer, _) = closed
        .post("/api/v1/auth/register", register_body(&key, "a", None))
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "Registration is closed.")
    );

    let h = harness(RegistrationPolicy::InviteOnly);
    let (status, answer, _) = h
        .post("/api/v1/auth/register", register_body(&key, "b", None))
        .await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::FORBIDDEN,
            "Registration requires an invite code."
        )
    );
    let (status, answer, _) = h
        .post(
            "/api/v1/auth/register",
            register_body(&key, "c", Some("NOPE")),
        )
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "Invalid or unknown claim code.")
    );

    let invite = h
        .registry
        .create_claim_code(ClaimPurpose::Invite, None, None)
        .await
        .unwrap();
    let (status, answer, _) = h
        .post(
            "/api/v1/auth/register",
            register_body(&key, "d", Some(&invite)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["identity"]["isAdmin"], false);
    let other = Keypair::generate();
    let (status, answer, _) = h
        .post(
            "/api/v1/auth/register",
            register_body(&other, "e", Some(&invite)),
        )
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "Claim code has already been used.")
    );
    // An existing identity signs in again without an invite.
    let (status, _, _) = h
        .post("/api/v1/auth/register", register_body(&key, "f", None))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let admin_code = h
        .registry
        .create_claim_code(ClaimPurpose::Admin, None, None)
        .await
        .unwrap();
    let (status, answer, _) = h
        .post(
            "/api/v1/auth/register",
            register_body(&other, "g", Some(&admin_code)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(answer["identity"]["isAdmin"], true);
    // The plain code is stored nowhere.
    assert!(
        !serde_json::to_string(&h.fake.all("secrets"))
            .unwrap()
            .contains(&admin_code)
    );
}

#[tokio::test]
async fn login_routes_and_errors() {
    let h = harness(RegistrationPolicy::Open);
    let key = Keypair::generate();
    let (status, answer, _) = h.post("/api/v1/auth/login", login_body(&key, "l1")).await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::NOT_FOUND,
            "Identity not found. Please register first."
        )
    );
    let mut bad = login_body(&key, "l2");
    bad["signature"] = json!(key.sign_base64("other"));
    let (status, answer, _) = h.post("/api/v1/auth/login", bad).await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::UNAUTHORIZED,
            "Invalid signature or authentication failed."
        )
    );
    register(&h, &key).await;
    let (status, answer, _) = h.post("/api/v1/auth/login", login_body(&key, "l3")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["identity"]["identityDid"], key.did().to_string());
    assert!(answer["tokenDetails"]["accessToken"].is_string());
}

#[tokio::test]
async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family() {
    let h = harness(RegistrationPolicy::Open);
    let key = Keypair::generate();
    let first = register(&h, &key).await["tokenDetails"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, next, _) = h
        .post("/api/v1/auth/refresh", json!({"refreshToken": first}))
        .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_eq!(next["tokenType"], "Bearer");
    let second = next["refreshToken"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    // Reusing the first token: refused, and the family (including the second token) is revoked.
    let (status, answer, _) = h
        .post("/api/v1/auth/refresh", json!({"refreshToken": first}))
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::UNAUTHORIZED, "Refresh token has been revoked.")
    );
    let (status, answer, _) = h
        .post("/api/v1/auth/refresh", json!({"refreshToken": second}))
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::UNAUTHORIZED, "Refresh token has been revoked.")
    );

    let (status, answer, _) = h
        .post("/api/v1/auth/refresh", json!({"refreshToken": "garbage"}))
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::UNAUTHORIZED, "Invalid refresh token.")
    );
    let access = register(&h, &key).await["tokenDetails"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, answer, _) = h
        .post("/api/v1/auth/refresh", json!({"refreshToken": access}))
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::UNAUTHORIZED, "Invalid refresh token.")
    );
    let expired = TokenIssuer::new(&h.key, URL, URL)
        .issue(
            TokenSpec::new(
                key.did().to_string(),
                TokenKind::Refresh,
                Duration::seconds(60),
            )
            .issued_at(Utc::now().timestamp() - 3600)
            .family("abc"),
        )
        .unwrap();
    let (status, answer, _) = h
        .post(
            "/api/v1/auth/refresh",
            json!({"refreshToken": expired.token}),
        )
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::UNAUTHORIZED, "Refresh token expired.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_use_of_one_refresh_token_succeeds_once() {
    let h = harness(RegistrationPolicy::Open);
    let key = Keypair::generate();
    let token = register(&h, &key).await["tokenDetails"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let app = h.app.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            call(
                &app,
                "POST",
                "/api/v1/auth/refresh",
                Some(json!({"refreshToken": token})),
                None,
            )
            .await
            .0
        }));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn identity_routes_and_status_from_the_instance() {
    let h = harness(RegistrationPolicy::Open);
    let alice = Keypair::generate();
    let did = alice.did().to_string();
    let (status, answer, _) = h.get(&format!("/api/v1/identities/{did}/status")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"isActive": false}));

    let registered = register(&h, &alice).await;
    let token = registered["tokenDetails"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let name = instance_name(&registered);
    let (_, answer, _) = h.get(&format!("/api/v1/identities/{did}/status")).await;
    assert_eq!(
        answer,
        json!({"isActive": true, "instanceStatus": "pending"})
    );

    for (phase, expected) in [
        ("Provisioning", "provisioning"),
        ("Suspended", "suspended"),
        ("Failed", "failed"),
    ] {
        h.fake.set_status(
            "vibeinstances",
            Some(TENANTS),
            &name,
            json!({"phase": phase, "conditions": [{"type": "Ready", "status": "False", "reason": "X",
                    "message": "bucket unreachable", "lastTransitionTime": "2026-11-25T12:05:00Z"}]}),
        );
        let (_, answer, _) = h.get(&format!("/api/v1/identities/{did}/status")).await;
        assert_eq!(answer["instanceStatus"], expected);
    }
    let (status, answer, _) = h.get_as(&format!("/api/v1/identities/{did}"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["instanceStatus"], "failed");
    assert_eq!(answer["instanceErrorDetails"], "bucket unreachable");
    assert_eq!(answer["instanceId"], name);

    let (status, answer, _) = h.get(&format!("/api/v1/identities/{did}")).await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::UNAUTHORIZED,
            "Unauthorized: Missing Bearer token."
        )
    );
    let (status, answer, _) = h
        .get_as(&format!("/api/v1/identities/{did}"), "x.y.z")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error(&answer).starts_with("Unauthorized: "));
    let bob = Keypair::generate();
    let bob_token = register(&h, &bob).await["tokenDetails"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, answer, _) = h
        .get_as(&format!("/api/v1/identities/{did}"), &bob_token)
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "Forbidden: Access denied.")
    );
    let (status, answer, _) = h.get_as("/api/v1/identities", &bob_token).await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::FORBIDDEN,
            "Forbidden: Admin privileges required."
        )
    );
    let ghost = Keypair::generate().did().to_string();
    let admin = make_admin(&h).await;
    let (status, answer, _) = h
        .get_as(&format!("/api/v1/identities/{ghost}"), &admin)
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::NOT_FOUND, "Identity not found.")
    );
    let (status, answer, _) = h.get_as(&format!("/api/v1/identities/{did}"), &admin).await;
    assert_eq!(status, StatusCode::OK, "admins read any identity: {answer}");
}

async fn make_admin(h: &Harness) -> String {
    let key = Keypair::generate();
    let code = h
        .registry
        .create_claim_code(ClaimPurpose::Admin, None, None)
        .await
        .unwrap();
    let (status, answer, _) = h.post("/api/v1/admin/claim", claim_body(&key, &code)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn admins_list_identities_page_by_page() {
    let h = harness(RegistrationPolicy::Open);
    for _ in 0..3 {
        register(&h, &Keypair::generate()).await;
    }
    let admin = make_admin(&h).await;
    let (status, page, headers) = h.get_as("/api/v1/identities?limit=3", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.as_array().unwrap().len(), 3);
    let next = headers
        .get("x-continue")
        .expect("a next page")
        .to_str()
        .unwrap()
        .to_string();
    let (_, rest, headers) = h
        .get_as(
            &format!("/api/v1/identities?limit=3&continue={next}"),
            &admin,
        )
        .await;
    assert_eq!(
        rest.as_array().unwrap().len(),
        1,
        "4 identities in all (3 + the admin)"
    );
    assert!(headers.get("x-continue").is_none());
}

#[tokio::test]
async fn owners_update_their_profile_with_a_signed_request() {
    let h = harness(RegistrationPolicy::Open);
    let key = Keypair::generate();
    let did = key.did().to_string();
    let token = register(&h, &key).await["tokenDetails"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/identities/{did}");
    let (status, answer, _) = h.put_as(&path, json!({"profileName": "Al"}), &token).await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::BAD_REQUEST,
            "Missing signature parameters for owner update."
        )
    );

    let ts = now();
    let signed_body = |name: &str, nonce: &str, code: &str, signer: &Keypair| {
        let message = format!("{did}|{nonce}|{ts}|{code}|{name}|");
        let mut body = json!({"nonce": nonce, "timestamp": ts, "signature": signer.sign_base64(&message), "profileName": name});
        if !code.is_empty() {
            body["claimCode"] = json!(code);
        }
        body
    };
    let (status, answer, _) = h
        .put_as(
            &path,
            signed_body("Al", "p1", "", &Keypair::generate()),
            &token,
        )
        .await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::UNAUTHORIZED,
            "Invalid signature for owner update."
        )
    );
    let body = signed_body("Al", "p2", "", &key);
    let (status, answer, _) = h.put_as(&path, body.clone(), &token).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["profileName"], "Al");
    assert!(answer.get("token").is_none());
    let (status, answer, _) = h.put_as(&path, body, &token).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::UNAUTHORIZED, "Request has already been used.")
    );

    let code = h
        .registry
        .create_claim_code(ClaimPurpose::Admin, None, None)
        .await
        .unwrap();
    let (status, answer, _) = h
        .put_as(&path, signed_body("Al", "p3", &code, &key), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["isAdmin"], true);
    assert!(
        answer["token"].is_string(),
        "a fresh token accompanies the promotion"
    );

    let bob = Keypair::generate();
    let bob_token = register(&h, &bob).await["tokenDetails"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, answer, _) = h
        .put_as(&path, json!({"profileName": "x"}), &bob_token)
        .await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::FORBIDDEN,
            "Forbidden: Insufficient permissions."
        )
    );
    // Alice is admin now: she may change Bob's profile without a signature.
    let (status, answer, _) = h
        .put_as(
            &format!("/api/v1/identities/{}", bob.did()),
            json!({"profileName": "Robert"}),
            &token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["profileName"], "Robert");
}

#[tokio::test]
async fn deleting_an_identity_deprovisions_its_instance() {
    let h = harness(RegistrationPolicy::Open);
    let key = Keypair::generate();
    let did = key.did().to_string();
    let registered = register(&h, &key).await;
    let token = registered["tokenDetails"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let refresh = registered["tokenDetails"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    let name = instance_name(&registered);
    // The operator's finalizer keeps the instance while it cleans up.
    let mut instance = h.fake.get("vibeinstances", Some(TENANTS), &name).unwrap();
    instance["metadata"]["finalizers"] = json!(["cloud.vibeapp.dev/cleanup"]);
    h.fake.insert("vibeinstances", Some(TENANTS), instance);

    let bob_token = register(&h, &Keypair::generate()).await["tokenDetails"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/v1/identities/{did}");
    let (status, answer, _) = h.delete_as(&path, &bob_token).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::FORBIDDEN, "Forbidden: Access denied.")
    );

    let (status, answer, _) = h.delete_as(&path, &token).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        answer["message"],
        format!("Deprovisioning process initiated for identity {did} and instance {name}.")
    );
    let (_, answer, _) = h.get(&format!("{path}/status")).await;
    assert_eq!(
        answer,
        json!({"isActive": true, "instanceStatus": "deprovisioning"})
    );
    let (status, _, _) = h
        .post("/api/v1/auth/refresh", json!({"refreshToken": refresh}))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "deleting revokes refresh tokens"
    );

    h.fake.remove("vibeinstances", Some(TENANTS), &name);
    let (_, answer, _) = h.get(&format!("{path}/status")).await;
    assert_eq!(answer, json!({"isActive": false}));
    let (status, answer, _) = h.delete_as(&path, &token).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::NOT_FOUND, "Identity not found.")
    );

    // An identity without an instance (an admin) is deleted at once.
    let admin = make_admin(&h).await;
    let admin_did = TokenVerifier::new(&h.key.public_key(), URL, URL)
        .verify(&admin, TokenKind::Access)
        .unwrap()
        .sub;
    let (status, answer, _) = h
        .delete_as(&format!("/api/v1/identities/{admin_did}"), &admin)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        answer["message"],
        format!("Identity {admin_did} deleted successfully (no instance to deprovision).")
    );
}

#[tokio::test]
async fn admin_claim_errors_keep_the_original_strings() {
    let h = harness(RegistrationPolicy::Open);
    let key = Keypair::generate();
    let claim = |body: Value| {
        let app = h.app.clone();
        async move { call(&app, "POST", "/api/v1/admin/claim", Some(body), None).await }
    };
    let (status, answer, _) = claim(claim_body(&key, "UNKNOWN-CODE")).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "Invalid or unknown claim code.")
    );

    let expired = h
        .registry
        .create_claim_code(
            ClaimPurpose::Admin,
            None,
            Some(Utc::now() - Duration::minutes(1)),
        )
        .await
        .unwrap();
    let (status, answer, _) = claim(claim_body(&key, &expired)).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "Claim code has expired.")
    );

    let bound = h
        .registry
        .create_claim_code(
            ClaimPurpose::Admin,
            Some(Keypair::generate().did().to_string()),
            None,
        )
        .await
        .unwrap();
    let (status, answer, _) = claim(claim_body(&key, &bound)).await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::BAD_REQUEST,
            "Claim code is not valid for the provided DID."
        )
    );

    let invite = h
        .registry
        .create_claim_code(ClaimPurpose::Invite, None, None)
        .await
        .unwrap();
    let (status, answer, _) = claim(claim_body(&key, &invite)).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "Invalid or unknown claim code.")
    );

    let code = h
        .registry
        .create_claim_code(ClaimPurpose::Admin, None, None)
        .await
        .unwrap();
    let mut forged = claim_body(&key, &code);
    forged["signature"] = json!(Keypair::generate().sign_base64(&code));
    let (status, answer, _) = claim(forged).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "Invalid signature.")
    );
    assert!(
        h.registry
            .claim_code(&code)
            .await
            .unwrap()
            .unwrap()
            .spent_at
            .is_none(),
        "still unspent"
    );

    let (status, answer, _) = claim(claim_body(&key, &code)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(answer["message"], "Admin account claimed successfully.");
    assert_eq!(answer["userDid"], key.did().to_string());
    assert_eq!(answer["isAdmin"], true);
    assert!(answer["token"].is_string());
    let spent = h.registry.claim_code(&code).await.unwrap().unwrap();
    assert_eq!(
        spent.claimed_by_did.as_deref(),
        Some(key.did().to_string().as_str())
    );
    let (status, answer, _) = claim(claim_body(&Keypair::generate(), &code)).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "Claim code has already been used.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admin_claims_of_one_code_succeed_exactly_once() {
    let h = harness(RegistrationPolicy::Open);
    let code = h
        .registry
        .create_claim_code(ClaimPurpose::Admin, None, None)
        .await
        .unwrap();
    h.fake.clear_log();
    // All 16 read the unspent code (the pre-check, then the read before the conditional write)
    // before any of them writes, so 15 writes must lose.
    h.fake.barrier("vibe-claim-", 16, 2);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let app = h.app.clone();
        let body = claim_body(&Keypair::generate(), &code);
        tasks.push(tokio::spawn(async move {
            call(&app, "POST", "/api/v1/admin/claim", Some(body), None).await
        }));
    }
    let mut created = 0;
    for task in tasks {
        let (status, answer, _) = task.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            _ => assert_eq!(
                (status, error(&answer)),
                (StatusCode::BAD_REQUEST, "Claim code has already been used.")
            ),
        }
    }
    assert_eq!(created, 1);
    let spends: Vec<_> = h
        .fake
        .log()
        .into_iter()
        .filter(|l| {
            l.method == http::Method::PUT
                && l.name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("vibe-claim-"))
        })
        .collect();
    assert_eq!(
        spends.iter().filter(|l| l.status == 200).count(),
        1,
        "one write wins"
    );
    assert_eq!(
        spends.iter().filter(|l| l.status == 409).count(),
        15,
        "losing writers get 409 Conflict"
    );
    let admins = h
        .fake
        .all("secrets")
        .into_iter()
        .filter(|s| s["type"] == "cloud.vibeapp.dev/identity")
        .count();
    assert_eq!(admins, 1);
}

fn unowned_instance(name: &str, code: &str) -> Value {
    json!({"apiVersion": "cloud.vibeapp.dev/v1alpha1", "kind": "VibeInstance",
           "metadata": {"name": name},
           "spec": {},
           "status": {"phase": "Ready", "claimCodeHash": vibe_identity::secret::hash(code).trim_start_matches("sha256:")}})
}

#[tokio::test]
async fn owner_claims_set_spec_owner_once() {
    let h = harness(RegistrationPolicy::Closed);
    h.fake.insert(
        "vibeinstances",
        Some("shop"),
        unowned_instance("alice", "K7QX2-M9TPA-AAAAA-BBBBB"),
    );
    let key = Keypair::generate();
    let path = "/api/v1/instances/claim";
    let (status, answer, _) = h.post(path, claim_body(&key, "WRONG")).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "Invalid or unknown claim code.")
    );
    let mut forged = claim_body(&key, "K7QX2-M9TPA-AAAAA-BBBBB");
    forged["signature"] = json!(Keypair::generate().sign_base64("K7QX2-M9TPA-AAAAA-BBBBB"));
    let (status, answer, _) = h.post(path, forged).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "Invalid signature.")
    );

    let (status, answer, _) = h
        .post(path, claim_body(&key, "K7QX2-M9TPA-AAAAA-BBBBB"))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["message"], "Instance claimed successfully.");
    assert_eq!(answer["identity"]["instanceId"], "alice");
    assert!(answer["tokenDetails"]["accessToken"].is_string());
    let stored = h.fake.get("vibeinstances", Some("shop"), "alice").unwrap();
    assert_eq!(stored["spec"]["owner"]["did"], key.did().to_string());
    assert_eq!(stored["status"]["phase"], "Ready", "status untouched");

    let (status, answer, _) = h
        .post(
            path,
            claim_body(&Keypair::generate(), "K7QX2-M9TPA-AAAAA-BBBBB"),
        )
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::BAD_REQUEST, "Claim code has already been used.")
    );
    // The new owner can sign in although registration is closed.
    let (status, _, _) = h.post("/api/v1/auth/login", login_body(&key, "x")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_owner_claims_succeed_exactly_once() {
    let h = harness(RegistrationPolicy::Open);
    h.fake.insert(
        "vibeinstances",
        Some("shop"),
        unowned_instance("bob", "CODE-RACE"),
    );
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let app = h.app.clone();
        let key = Keypair::generate();
        tasks.push(tokio::spawn(async move {
            let did = key.did().to_string();
            let (status, _, _) = call(
                &app,
                "POST",
                "/api/v1/instances/claim",
                Some(claim_body(&key, "CODE-RACE")),
                None,
            )
            .await;
            (status, did)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (status, did) = task.await.unwrap();
        if status == StatusCode::OK {
            winners.push(did);
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST);
        }
    }
    assert_eq!(winners.len(), 1);
    let stored = h.fake.get("vibeinstances", Some("shop"), "bob").unwrap();
    assert_eq!(stored["spec"]["owner"]["did"], winners[0]);
}

#[tokio::test]
async fn rate_limits_and_body_limits() {
    let (client, fake) = FakeApi::start();
    let h = harness_on(
        client,
        fake,
        RegistrationPolicy::Open,
        RateLimiter::new(1, 2, false),
    );
    let key = Keypair::generate();
    let mut last = StatusCode::OK;
    let mut retry_after = None;
    for i in 0..3 {
        let (status, _, headers) = h
            .post("/api/v1/auth/login", login_body(&key, &format!("r{i}")))
            .await;
        last = status;
        retry_after = headers.get("retry-after").cloned();
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after.is_some());

    let h = harness(RegistrationPolicy::Open);
    let big = json!({"did": "x", "nonce": "n", "timestamp": "t", "signature": "s", "profileName": "a".repeat(20_000)});
    let (status, answer, _) = h.post("/api/v1/auth/register", big).await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large.")
    );
}

#[tokio::test]
async fn internal_errors_are_not_echoed() {
    let h = harness(RegistrationPolicy::Open);
    h.fake.fail(Some("secrets"));
    let key = Keypair::generate();
    let (status, answer, _) = h
        .post("/api/v1/auth/register", register_body(&key, "i1", None))
        .await;
    assert_eq!(
        (status, error(&answer)),
        (StatusCode::INTERNAL_SERVER_ERROR, "Registration failed.")
    );
    let (status, answer, _) = h.post("/api/v1/auth/login", login_body(&key, "i2")).await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login failed due to an internal error."
        )
    );
    let (status, answer, _) = h
        .get(&format!("/api/v1/identities/{}/status", key.did()))
        .await;
    assert_eq!(
        (status, error(&answer)),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Failed to get identity status."
        )
    );
    assert!(!answer.to_string().contains("etcd") && !answer.to_string().contains("SUPERSECRET"));
}

/// Collects everything logged while the closure's future runs on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_and_tokens_never_reach_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = harness(RegistrationPolicy::InviteOnly);
    let key = Keypair::generate();
    let code = h
        .registry
        .create_claim_code(ClaimPurpose::Admin, None, None)
        .await
        .unwrap();
    let (_, registered, _) = h
        .post(
            "/api/v1/auth/register",
            register_body(&key, "s1", Some(&code)),
        )
        .await;
    let refresh = registered["tokenDetails"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_string();
    let access = registered["tokenDetails"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    h.post(
        "/api/v1/auth/refresh",
        json!({"refreshToken": refresh.clone()}),
    )
    .await;
    h.post(
        "/api/v1/auth/refresh",
        json!({"refreshToken": refresh.clone()}),
    )
    .await;
    h.fake.fail(Some("secrets"));
    h.post("/api/v1/auth/login", login_body(&key, "s2")).await;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("identity registered"),
        "logging works: {logs}"
    );
    for secret in [code.as_str(), refresh.as_str(), access.as_str()] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}
