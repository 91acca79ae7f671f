//! The operator's Kubernetes client: kube's default stack with one more layer that counts every
//! request by verb and resource (`vibe_operator_kube_requests_total`), so "how many API calls
//! does a resync cost" is read from `/metrics` instead of guessed (issue 14).

use crate::metrics::RequestLabels;
use http::{Method, Request, Uri};
use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tower::util::MapRequestLayer;

/// A client from the inferred configuration (kubeconfig, else in-cluster) whose requests are
/// counted in `requests`.
pub async fn counted(requests: Family<RequestLabels, Counter>) -> kube::Result<Client> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    let count = MapRequestLayer::new(move |request: Request<Body>| {
        requests
            .get_or_create(&labels(request.method(), request.uri()))
            .inc();
        request
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&count).build())
}

/// The Kubernetes verb and resource of a request: `GET …/deployments?watch=true` is a `watch`
/// of `deployments`, `PATCH …/vibeinstances/x/status` a `patch` of `vibeinstances/status`.
pub fn labels(method: &Method, uri: &Uri) -> RequestLabels {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    // Skip `api/<version>` or `apis/<group>/<version>`, then `namespaces/<ns>` when what
    // follows is a namespaced resource (a bare `namespaces/<ns>` is the Namespace itself).
    let mut rest: &[&str] = match segments.first() {
        Some(&"api") => segments.get(2..).unwrap_or_default(),
        Some(&"apis") => segments.get(3..).unwrap_or_default(),
        _ => &[],
    };
    if rest.len() >= 3 && rest[0] == "namespaces" {
        rest = &rest[2..];
    }
    let resource = match rest {
        [] => "other".to_string(),
        [kind] | [kind, _] => (*kind).to_string(),
        [kind, _, sub, ..] => format!("{kind}/{sub}"),
    };
    let named = rest.len() >= 2;
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    RequestLabels {
        verb: verb.into(),
        resource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, uri: &str) -> (String, String) {
        let l = labels(&method, &uri.parse().unwrap());
        (l.verb, l.resource)
    }

    #[test]
    fn verbs_and_resources_of_the_operators_requests() {
        let cases = [
            (
                Method::GET,
                "/apis/apps/v1/namespaces/t/deployments?labelSelector=x&watch=true&resourceVersion=5",
                ("watch", "deployments"),
            ),
            (
                Method::GET,
                "/apis/apps/v1/deployments?limit=500",
                ("list", "deployments"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/t/secrets/alice-token-key",
                ("get", "secrets"),
            ),
            (
                Method::PATCH,
                "/apis/cloud.vibeapp.dev/v1alpha1/namespaces/t/vibeinstances/alice/status?fieldManager=vibe-operator&force=true",
                ("patch", "vibeinstances/status"),
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/t/events",
                ("create", "events"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/t/secrets/alice-claim",
                ("delete", "secrets"),
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/s/leases/l",
                ("update", "leases"),
            ),
            (Method::GET, "/api/v1/namespaces/t", ("get", "namespaces")),
            (Method::GET, "/version", ("list", "other")),
        ];
        for (method, uri, (verb, resource)) in cases {
            assert_eq!(
                of(method, uri),
                (verb.to_string(), resource.to_string()),
                "{uri}"
            );
        }
    }
}
