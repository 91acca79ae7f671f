//! The start-up check: can this operator list VibeInstances where it is going to watch them?
//!
//! It lists (one item) in every watched namespace, or cluster-wide when it watches all of
//! them — exactly the scopes the watches use, so it needs no permission the chart does not
//! grant. Listing cluster-wide while the chart granted namespaced permissions only (its
//! `watchNamespaces` setting) made the operator refuse to start with its own service account
//! (found by operator/tests/provider_cluster.rs on a real API server, issue 14).

use crate::crd::VibeInstance;
use kube::api::ListParams;
use kube::{Api, Client};

/// The problem found: which scope could not be listed, and the API server's answer.
#[derive(Debug, thiserror::Error)]
#[error("cannot list VibeInstances {scope}: is crds/vibeinstance.yaml installed and RBAC granted?")]
pub struct PreflightError {
    /// `in namespace <ns>` or `in all namespaces`.
    pub scope: String,
    /// The API server's answer.
    #[source]
    pub source: kube::Error,
}

/// Lists one VibeInstance in each of `namespaces` (all namespaces when empty).
pub async fn check_access(client: &Client, namespaces: &[String]) -> Result<(), PreflightError> {
    let one = ListParams::default().limit(1);
    if namespaces.is_empty() {
        return Api::<VibeInstance>::all(client.clone())
            .list(&one)
            .await
            .map(drop)
            .map_err(|source| PreflightError {
                scope: "in all namespaces".into(),
                source,
            });
    }
    for ns in namespaces {
        Api::<VibeInstance>::namespaced(client.clone(), ns)
            .list(&one)
            .await
            .map_err(|source| PreflightError {
                scope: format!("in namespace {ns}"),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    /// Answers every request with an empty list and returns the paths asked.
    async fn paths_listed(namespaces: &[String]) -> Vec<String> {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let server = tokio::spawn(async move {
            let mut paths = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                paths.push(request.uri().to_string());
                let list = serde_json::json!({
                    "apiVersion": "cloud.vibeapp.dev/v1alpha1", "kind": "VibeInstanceList",
                    "metadata": {"resourceVersion": "1"}, "items": []
                });
                send.send_response(
                    Response::builder()
                        .body(Body::from(serde_json::to_vec(&list).unwrap()))
                        .unwrap(),
                );
            }
            paths
        });
        check_access(&client, namespaces).await.unwrap();
        drop(client);
        server.await.unwrap()
    }

    /// Issue 14: with watched namespaces (the chart's namespaced RBAC) the check lists in those
    /// namespaces only, never cluster-wide.
    #[tokio::test]
    async fn lists_where_the_operator_watches() {
        let watched = vec!["tenants".to_string(), "team-b".to_string()];
        assert_eq!(
            paths_listed(&watched).await,
            [
                "/apis/cloud.vibeapp.dev/v1alpha1/namespaces/tenants/vibeinstances?&limit=1",
                "/apis/cloud.vibeapp.dev/v1alpha1/namespaces/team-b/vibeinstances?&limit=1",
            ]
        );
        assert_eq!(
            paths_listed(&[]).await,
            ["/apis/cloud.vibeapp.dev/v1alpha1/vibeinstances?&limit=1"]
        );
    }
}
