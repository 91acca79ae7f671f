//! The admission tests' fake API enforces the operator's RBAC list: a request that
//! `rbac::REQUIRED` does not grant is answered 403 like the real API server would, and fails the
//! test that made it.

mod admission_support;

use admission_support::FakeApi;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams};

#[tokio::test]
async fn a_request_outside_the_rbac_list_is_forbidden_and_recorded() {
    let (client, fake) = FakeApi::start();
    // Granted: listing Secrets (the registry does it).
    Api::<Secret>::namespaced(client.clone(), "vibe-system")
        .list(&ListParams::default())
        .await
        .expect("listing secrets is granted");
    assert!(fake.rbac_violations().is_empty());

    // Not granted: nodes, and deleting a whole collection of Secrets.
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&nodes, kube::Error::Api(s) if s.code == 403),
        "{nodes:?}"
    );
    let collection = Api::<Secret>::namespaced(client, "vibe-system")
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&collection, kube::Error::Api(s) if s.code == 403),
        "{collection:?}"
    );
    let violations = fake.take_rbac_violations();
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations[0].contains("\"nodes\""), "{violations:?}");
    assert!(violations[1].contains("deletecollection"), "{violations:?}");
}

#[tokio::test]
async fn a_test_that_made_such_a_request_fails_when_its_fake_is_dropped() {
    let (client, fake) = FakeApi::start();
    let _ = Api::<Node>::all(client).list(&ListParams::default()).await;
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(fake)));
    let message = dropped.expect_err("dropping the fake fails the test");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("outside operator::rbac::REQUIRED"),
        "{message}"
    );
}
