//! Webhook TLS without cert-manager: generation, renewal decisions, the Secret shared by
//! replicas, the caBundle write, and hot reload of the served certificate over real TLS.

mod admission_support;

use admission_support::FakeApi;
use chrono::{Duration, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vibe_operator::webhook::tls::ca_bundle::{BundleOutcome, ensure_ca_bundle};
use vibe_operator::webhook::tls::certs::{self, CertPolicy, Plan};
use vibe_operator::webhook::tls::resolver::{ReloadingResolver, server_config};
use vibe_operator::webhook::tls::{CertManager, CertSettings, secret};

fn names() -> Vec<String> {
    certs::service_dns_names("vibe-operator-webhook", "vibe-system")
}

#[test]
fn generation_and_renewal_decisions() {
    let policy = CertPolicy::default();
    let now = Utc::now();
    assert!(matches!(
        certs::plan(None, &names(), now, &policy),
        Plan::NewCa(_)
    ));
    let first = certs::execute(
        &certs::plan(None, &names(), now, &policy),
        None,
        &names(),
        now,
        &policy,
    )
    .unwrap();
    assert_eq!(
        certs::plan(Some(&first), &names(), now, &policy),
        Plan::Keep
    );
    assert_eq!(
        certs::plan(Some(&first), &names(), now + Duration::days(59), &policy),
        Plan::Keep
    );
    // 30 days before the 90-day serving certificate expires, it is renewed under the same CA.
    let due = now + Duration::days(61);
    let plan = certs::plan(Some(&first), &names(), due, &policy);
    assert!(matches!(plan, Plan::NewServingCert(_)), "{plan:?}");
    let renewed = certs::execute(&plan, Some(&first), &names(), due, &policy).unwrap();
    assert_eq!(renewed.ca_cert, first.ca_cert);
    assert_ne!(renewed.serving_cert, first.serving_cert);
    assert!(certs::not_after(&renewed.serving_cert).unwrap() > due + Duration::days(89));
    // A renamed Service gets a new certificate.
    let other = certs::service_dns_names("other", "vibe-system");
    assert!(matches!(
        certs::plan(Some(&first), &other, now, &policy),
        Plan::NewServingCert(_)
    ));
    // A year before the CA expires, a new CA; the old one stays trusted in the bundle.
    let late = now + Duration::days(3650 - 364);
    let plan = certs::plan(Some(&first), &names(), late, &policy);
    assert!(matches!(plan, Plan::NewCa(_)), "{plan:?}");
    let rotated = certs::execute(&plan, Some(&first), &names(), late, &policy).unwrap();
    assert_ne!(rotated.ca_cert, first.ca_cert);
    assert!(rotated.ca_bundle.starts_with(&rotated.ca_cert));
    assert!(rotated.ca_bundle.contains(&first.ca_cert));
    // Unreadable material is replaced.
    let mut broken = first.clone();
    broken.ca_key = "garbage".into();
    assert!(matches!(
        certs::plan(Some(&broken), &names(), now, &policy),
        Plan::NewCa(_)
    ));
    let mut broken = first.clone();
    broken.serving_cert = "garbage".into();
    assert!(matches!(
        certs::plan(Some(&broken), &names(), now, &policy),
        Plan::NewServingCert(_)
    ));
    assert!(
        !format!("{first:?}").contains("PRIVATE KEY"),
        "Debug never prints keys"
    );
}

/// Serves the webhook router over TLS from `resolver`; returns the address.
async fn serve(resolver: Arc<ReloadingResolver>) -> std::net::SocketAddr {
    let config = axum_server::tls_rustls::RustlsConfig::from_config(server_config(resolver));
    let handle = axum_server::Handle::new();
    let state = vibe_operator::webhook::WebhookState::new(
        Arc::new(vibe_operator::webhook::hosts::StaticHosts::default()),
        "vibe.example.org",
        Default::default(),
    );
    let app = vibe_operator::webhook::router(state);
    let server = axum_server::bind_rustls(
        "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
        config,
    )
    .handle(handle.clone());
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    handle.listening().await.unwrap()
}

/// Connects trusting `bundle`, as the API server does, and returns the served certificate and
/// the answer to an AdmissionReview.
async fn handshake(addr: std::net::SocketAddr, bundle: &str) -> (CertificateDer<'static>, String) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(certs::crypto_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("vibe-operator-webhook.vibe-system.svc").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("the served certificate verifies");
    let served = tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u1", "kind": {"group": "cloud.vibeapp.dev", "version": "v1alpha1", "kind": "VibeInstance"},
        "resource": {"group": "cloud.vibeapp.dev", "version": "v1alpha1", "resource": "vibeinstances"},
        "name": "a", "namespace": "n", "operation": "CREATE", "userInfo": {},
        "object": {"apiVersion": "cloud.vibeapp.dev/v1alpha1", "kind": "VibeInstance", "metadata": {"name": "a"}, "spec": {"host": "BAD"}}}})
    .to_string();
    let request = format!(
        "POST /validate/vibeinstance HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.ok();
    (served, answer)
}

#[tokio::test]
async fn the_served_certificate_is_swapped_without_restart() {
    let policy = CertPolicy::default();
    let now = Utc::now();
    let first = certs::execute(&Plan::NewCa("test".into()), None, &names(), now, &policy).unwrap();
    let resolver = Arc::new(ReloadingResolver::new(
        certs::certified_key(&first).unwrap(),
    ));
    let addr = serve(resolver.clone()).await;
    let (served, answer) = handshake(addr, &first.ca_bundle).await;
    assert_eq!(
        served,
        CertificateDer::from_pem_slice(first.serving_cert.as_bytes()).unwrap()
    );
    assert!(
        answer.contains("\"allowed\":false") && answer.contains("spec.host"),
        "{answer}"
    );

    let renewed = certs::execute(
        &Plan::NewServingCert("test".into()),
        Some(&first),
        &names(),
        now,
        &policy,
    )
    .unwrap();
    resolver.swap(certs::certified_key(&renewed).unwrap());
    let (served, _) = handshake(addr, &first.ca_bundle).await;
    assert_eq!(
        served,
        CertificateDer::from_pem_slice(renewed.serving_cert.as_bytes()).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_secret_and_steady_state_writes_nothing() {
    let (client, fake) = FakeApi::start();
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client, "vibe-system");
    let policy = CertPolicy::default();
    let now = Utc::now();
    let dns = names();
    let (a, b) = tokio::join!(
        secret::ensure(&api, "webhook-tls", &dns, &policy, now),
        secret::ensure(&api, "webhook-tls", &dns, &policy, now)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.material, b.material,
        "both replicas serve the winner's certificate"
    );
    let stored = fake
        .get("secrets", Some("vibe-system"), "webhook-tls")
        .unwrap();
    assert_eq!(stored["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key", "ca.crt", "ca.key", "ca-bundle.crt"] {
        assert!(stored["data"][key].is_string(), "{key}");
    }
    assert!(
        stored["metadata"]["annotations"]["cloud.vibeapp.dev/serving-cert-not-after"].is_string()
    );
    fake.clear_log();
    let again = secret::ensure(
        &api,
        "webhook-tls",
        &names(),
        &policy,
        now + Duration::days(1),
    )
    .await
    .unwrap();
    assert_eq!(again.action, Plan::Keep);
    assert!(fake.writes().is_empty());
}

fn webhook_configuration() -> serde_json::Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
           "metadata": {"name": "vibe-operator"},
           "webhooks": [{"name": "vibeinstances.cloud.vibeapp.dev", "admissionReviewVersions": ["v1"],
                         "sideEffects": "None", "failurePolicy": "Fail",
                         "clientConfig": {"service": {"name": "vibe-operator-webhook", "namespace": "vibe-system",
                                                      "path": "/validate/vibeinstance", "port": 443}}}]})
}

#[tokio::test]
async fn the_ca_bundle_is_written_once_and_kept() {
    let (client, fake) = FakeApi::start();
    let api = kube::Api::all(client);
    assert_eq!(
        ensure_ca_bundle(&api, "vibe-operator", "PEM")
            .await
            .unwrap(),
        BundleOutcome::Missing
    );
    fake.insert(
        "validatingwebhookconfigurations",
        None,
        webhook_configuration(),
    );
    assert_eq!(
        ensure_ca_bundle(&api, "vibe-operator", "PEM")
            .await
            .unwrap(),
        BundleOutcome::Updated
    );
    let stored = fake
        .get("validatingwebhookconfigurations", None, "vibe-operator")
        .unwrap();
    assert_eq!(stored["webhooks"][0]["clientConfig"]["caBundle"], "UEVN"); // base64("PEM")
    fake.clear_log();
    assert_eq!(
        ensure_ca_bundle(&api, "vibe-operator", "PEM")
            .await
            .unwrap(),
        BundleOutcome::Unchanged
    );
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn the_manager_renews_publishes_and_reloads() {
    let (client, fake) = FakeApi::start();
    fake.insert(
        "validatingwebhookconfigurations",
        None,
        webhook_configuration(),
    );
    let settings = CertSettings {
        secret_name: "vibe-operator-webhook-tls".into(),
        webhook_config_name: "vibe-operator".into(),
        service: "vibe-operator-webhook".into(),
        namespace: "vibe-system".into(),
        policy: CertPolicy::default(),
    };
    let manager = CertManager::start(client, settings).await.unwrap();
    let first = manager.served();
    let addr = serve(manager.resolver()).await;
    let published = fake
        .get("validatingwebhookconfigurations", None, "vibe-operator")
        .unwrap();
    let bundle = published["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap()
        .to_string();
    use base64::Engine;
    let bundle = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(bundle)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(bundle, first.ca_bundle);

    let quiet = manager.check(Utc::now()).await.unwrap();
    assert_eq!(
        (quiet.action, quiet.bundle, quiet.reloaded),
        (Plan::Keep, BundleOutcome::Unchanged, false)
    );

    let outcome = manager
        .check(Utc::now() + Duration::days(65))
        .await
        .unwrap();
    assert!(matches!(outcome.action, Plan::NewServingCert(_)));
    assert!(outcome.reloaded);
    let renewed = manager.served();
    assert_ne!(renewed.serving_cert, first.serving_cert);
    // (Issued at a simulated future date, so only the resolver is checked here.)
    assert_eq!(
        manager.resolver().current().cert[0],
        CertificateDer::from_pem_slice(renewed.serving_cert.as_bytes()).unwrap()
    );

    // Another replica renewing is adopted on the next check.
    let other = certs::execute(
        &Plan::NewCa("rotated elsewhere".into()),
        Some(&renewed),
        &names(),
        Utc::now(),
        &CertPolicy::default(),
    )
    .unwrap();
    let mut stored = fake
        .get("secrets", Some("vibe-system"), "vibe-operator-webhook-tls")
        .unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    stored["data"]["tls.crt"] = json!(b64(&other.serving_cert));
    stored["data"]["tls.key"] = json!(b64(&other.serving_key));
    stored["data"]["ca.crt"] = json!(b64(&other.ca_cert));
    stored["data"]["ca.key"] = json!(b64(&other.ca_key));
    stored["data"]["ca-bundle.crt"] = json!(b64(&other.ca_bundle));
    fake.insert("secrets", Some("vibe-system"), stored);
    let outcome = manager.check(Utc::now()).await.unwrap();
    assert_eq!(
        (outcome.action, outcome.bundle, outcome.reloaded),
        (Plan::Keep, BundleOutcome::Updated, true)
    );
    let (served, _) = handshake(addr, &other.ca_bundle).await;
    assert_eq!(
        served,
        CertificateDer::from_pem_slice(other.serving_cert.as_bytes()).unwrap()
    );
}
