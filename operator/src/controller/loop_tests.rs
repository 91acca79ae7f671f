//! The whole controller loop ([`super::run`]) and readiness against the list-and-watch fake API
//! server of [`super::fake_cluster`], with a real s3s-fs: what `main` runs, minus the process.
//! The request-by-request flows in `tests.rs` call `reconcile` directly and so could not see
//! the issue 14 readiness bug; these would have.

use super::fake_cluster::FakeCluster;
use super::loop_harness::{NS, Operator, eventually};
use super::readiness;
use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::{Value, json};
use std::time::Duration;

const INSTANCES: &str = "cloud.vibeapp.dev/v1alpha1/vibeinstances";

/// Every child of instance `name`: (collection, name).
fn children(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("v1/secrets", format!("{name}-couchdb-auth")),
        ("v1/secrets", format!("{name}-token-key")),
        ("v1/secrets", format!("{name}-claim")),
        ("v1/secrets", format!("{name}-s3")),
        ("v1/configmaps", format!("{name}-couchdb-config")),
        ("v1/services", format!("{name}-couchdb")),
        ("v1/services", format!("{name}-dataplane")),
        ("apps/v1/statefulsets", format!("{name}-couchdb")),
        ("apps/v1/deployments", format!("{name}-dataplane")),
        ("networking.k8s.io/v1/ingresses", name.to_string()),
        (
            "networking.k8s.io/v1/networkpolicies",
            format!("{name}-couchdb"),
        ),
        (
            "networking.k8s.io/v1/networkpolicies",
            format!("{name}-dataplane"),
        ),
    ]
}

fn instance(name: &str) -> Value {
    json!({
        "apiVersion": "cloud.vibeapp.dev/v1alpha1",
        "kind": "VibeInstance",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"deletionPolicy": "Retain"}
    })
}

fn phase(cluster: &FakeCluster, name: &str) -> Option<String> {
    cluster.get(INSTANCES, NS, name)?["status"]["phase"]
        .as_str()
        .map(str::to_string)
}

fn has_children(cluster: &FakeCluster, name: &str) -> bool {
    children(name)
        .iter()
        .all(|(collection, child)| cluster.get(collection, NS, child).is_some())
}

/// Requests other than reads (list, get, watch are GETs).
fn writes(cluster: &FakeCluster) -> Vec<String> {
    cluster
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| r.line())
        .collect()
}

/// Issue 14 through the loop: with an instance already stored, the operator lists and watches,
/// `/readyz` turns 200 within seconds (the readiness waiter of `main` polls before the
/// controller's runner, the order in which `Store::wait_until_ready` lost its waker), the
/// instance gets its children and becomes Ready through the watches, a resync writes nothing,
/// and a deleted child comes back.
#[tokio::test]
async fn the_loop_lists_watches_reports_ready_and_reconciles_through_the_watches() {
    let cluster = FakeCluster::new().with_ready_workloads();
    cluster.put(
        "cloud.vibeapp.dev/v1alpha1",
        "vibeinstances",
        instance("alice"),
    );
    let operator = Operator::start(&cluster, Duration::from_secs(1)).await;

    eventually(10, "/readyz answers 200", || async {
        operator.readyz().await == 200
    })
    .await;
    eventually(5, "\"watch caches synced\" is logged", || async {
        operator.readiness.is_finished()
    })
    .await;
    eventually(20, "alice is Ready with every child", || async {
        phase(&cluster, "alice").as_deref() == Some("Ready") && has_children(&cluster, "alice")
    })
    .await;
    let lines: Vec<String> = cluster.requests().iter().map(|r| r.uri.clone()).collect();
    assert!(
        lines
            .iter()
            .any(|u| u.contains("/vibeinstances?") && u.contains("watch=true")),
        "the instances were watched: {lines:#?}"
    );

    // Steady state: the next resyncs (every second here) make no write at all.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.clear_requests();
    let reconciles = operator.state.metrics.reconciles.get();
    eventually(10, "two more resyncs", || async {
        operator.state.metrics.reconciles.get() >= reconciles + 2
    })
    .await;
    assert_eq!(writes(&cluster), Vec::<String>::new(), "writes on resync");

    // A child deleted by hand comes back through its watch (no resync needed: 1 h).
    operator.stop().await;
    let operator = Operator::start(&cluster, Duration::from_secs(3600)).await;
    eventually(10, "/readyz after a restart", || async {
        operator.readyz().await == 200
    })
    .await;
    cluster.delete_object("apps/v1/deployments", NS, "alice-dataplane");
    assert!(
        cluster
            .get("apps/v1/deployments", NS, "alice-dataplane")
            .is_none()
    );
    eventually(10, "the deleted Deployment is back", || async {
        cluster
            .get("apps/v1/deployments", NS, "alice-dataplane")
            .is_some()
    })
    .await;
    operator.stop().await;
}

/// Issue 14, the child caches: an operator restarted against an instance whose children are
/// all in order must write nothing. The Deployments' list is held back (a real server's list of
/// a large collection takes a while; the VibeInstances' came first): `/readyz` stays 503 naming
/// that watch, and the reconcile the instance list triggers waits instead of taking the missing
/// Deployment for a deleted one and applying it again. Once the list is answered: ready, and
/// still no write.
#[tokio::test]
async fn a_restart_waits_for_every_child_cache_and_writes_nothing() {
    let cluster = FakeCluster::new().with_ready_workloads();
    cluster.put(
        "cloud.vibeapp.dev/v1alpha1",
        "vibeinstances",
        instance("alice"),
    );
    let operator = Operator::start(&cluster, Duration::from_secs(3600)).await;
    eventually(20, "alice is Ready with every child", || async {
        phase(&cluster, "alice").as_deref() == Some("Ready") && has_children(&cluster, "alice")
    })
    .await;
    // Settled: the reconciles that the children's own events trigger are done.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s3 = operator.stop_keeping_s3().await;

    let hold = cluster.hold_lists("apps/v1/deployments");
    cluster.clear_requests();
    let operator = Operator::start_on(&cluster, Duration::from_secs(3600), s3).await;
    eventually(10, "alice is reconciled after the restart", || async {
        operator.state.metrics.reconciles.get() >= 1
    })
    .await;
    eventually(10, "the Deployments are being listed", || async {
        cluster
            .requests()
            .iter()
            .any(|r| r.uri.contains("/deployments?") && !r.uri.contains("watch=true"))
    })
    .await;
    // Time for a reconcile that does not wait to apply what it thinks is missing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        writes(&cluster),
        Vec::<String>::new(),
        "writes before the Deployments were listed"
    );
    let (status, body) = operator.readyz_answer().await;
    assert_eq!(
        (status, body.as_str()),
        (503, "caches not synced: tenants/deployments")
    );
    assert!(!operator.readiness.is_finished(), "not logged as synced");

    hold.release();
    eventually(10, "/readyz answers 200 once the list is in", || async {
        operator.readyz().await == 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        writes(&cluster),
        Vec::<String>::new(),
        "writes after the restart"
    );
    assert_eq!(phase(&cluster, "alice").as_deref(), Some("Ready"));
    operator.stop().await;
}

/// Issue 14 with a fleet rather than one instance: instances stored at once all converge
/// through the watches (finalizer, Secrets created, children applied, workloads ready), each
/// writing only what it must, and a restart over the converged fleet writes nothing at all.
#[tokio::test]
async fn a_fleet_converges_and_a_restart_over_it_writes_nothing() {
    const FLEET: usize = 40;
    let names: Vec<String> = (0..FLEET).map(|n| format!("t{n:03}")).collect();
    let cluster = FakeCluster::new().with_ready_workloads();
    for name in &names {
        cluster.put(
            "cloud.vibeapp.dev/v1alpha1",
            "vibeinstances",
            instance(name),
        );
    }
    let operator = Operator::start(&cluster, Duration::from_secs(3600)).await;
    eventually(120, "every instance Ready with every child", || async {
        names
            .iter()
            .all(|n| phase(&cluster, n).as_deref() == Some("Ready") && has_children(&cluster, n))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let writes_of = |kind: &str| writes(&cluster).iter().filter(|l| l.contains(kind)).count();
    // Per instance: its three generated Secrets created once, never applied after.
    assert_eq!(
        writes(&cluster)
            .iter()
            .filter(|l| l.starts_with("POST") && l.ends_with("/secrets"))
            .count(),
        3 * FLEET
    );
    assert_eq!(
        writes_of("/deployments/"),
        FLEET,
        "one apply per Deployment"
    );
    let s3 = operator.stop_keeping_s3().await;

    cluster.clear_requests();
    let operator = Operator::start_on(&cluster, Duration::from_secs(3600), s3).await;
    eventually(
        60,
        "every instance reconciled after the restart",
        || async { operator.state.metrics.reconciles.get() >= FLEET as u64 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        writes(&cluster),
        Vec::<String>::new(),
        "writes after the restart"
    );
    operator.stop().await;
}

/// The instance watch resumes from a resourceVersion the server compacted away: the server
/// answers 410 Gone, the watcher lists again, and an instance created meanwhile is reconciled.
#[tokio::test]
async fn a_watch_past_compaction_gets_410_gone_and_relists() {
    let cluster = FakeCluster::new().with_ready_workloads();
    cluster.put(
        "cloud.vibeapp.dev/v1alpha1",
        "vibeinstances",
        instance("alice"),
    );
    let operator = Operator::start(&cluster, Duration::from_secs(3600)).await;
    eventually(20, "alice is Ready", || async {
        phase(&cluster, "alice").as_deref() == Some("Ready")
    })
    .await;
    let lists = |cluster: &FakeCluster| {
        cluster
            .requests()
            .iter()
            .filter(|r| r.uri.contains("/vibeinstances?") && !r.uri.contains("watch=true"))
            .count()
    };
    let before = lists(&cluster);
    let gone = cluster.gone_answers();

    cluster.compact();
    cluster.close_watches();
    cluster.put(
        "cloud.vibeapp.dev/v1alpha1",
        "vibeinstances",
        instance("bob"),
    );

    eventually(20, "bob is Ready with every child", || async {
        phase(&cluster, "bob").as_deref() == Some("Ready") && has_children(&cluster, "bob")
    })
    .await;
    assert!(
        cluster.gone_answers() > gone,
        "a watch was answered 410 Gone"
    );
    assert!(lists(&cluster) > before, "the instances were listed again");
    assert_eq!(operator.readyz().await, 200, "still ready after the relist");
    operator.stop().await;
}

/// The fake answers a streaming list (`sendInitialEvents=true`) as the API server does: the
/// objects as ADDED, then a BOOKMARK annotated `k8s.io/initial-events-end`, after which
/// kube's watcher reports the initial list done — and the operator's readiness flag with it.
#[tokio::test]
async fn streaming_lists_end_with_the_initial_events_end_bookmark() {
    let cluster = FakeCluster::new();
    for name in ["alice", "bob"] {
        cluster.put(
            "cloud.vibeapp.dev/v1alpha1",
            "vibeinstances",
            instance(name),
        );
    }
    let api: Api<crate::VibeInstance> = Api::namespaced(cluster.client(), NS);
    let (store, writer) = reflector::store();
    let (tx, synced) = readiness::flag();
    let mut events = Box::pin(readiness::mark_synced(
        watcher(api, watcher::Config::default().streaming_lists()).reflect(writer),
        tx,
    ));
    let mut seen = Vec::new();
    while !*synced.borrow() {
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("the initial events end")
            .expect("the stream goes on")
            .expect("no watch error");
        seen.push(match event {
            watcher::Event::Init => "Init".to_string(),
            watcher::Event::InitApply(i) => format!("InitApply {}", i.metadata.name.unwrap()),
            watcher::Event::InitDone => "InitDone".to_string(),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        seen,
        ["Init", "InitApply alice", "InitApply bob", "InitDone"]
    );
    assert_eq!(store.state().len(), 2);
    let watch = cluster
        .requests()
        .into_iter()
        .find(|r| r.uri.contains("watch=true"))
        .expect("a watch request");
    assert!(
        watch.uri.contains("sendInitialEvents=true"),
        "{}",
        watch.uri
    );

    // Live changes follow on the same stream.
    cluster.put(
        "cloud.vibeapp.dev/v1alpha1",
        "vibeinstances",
        instance("carol"),
    );
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(event, watcher::Event::Apply(i) if i.metadata.name.as_deref() == Some("carol"))
    );
}
