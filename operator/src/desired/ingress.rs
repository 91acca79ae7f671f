//! The Ingress publishing the data plane at the instance's host, with TLS.

use super::Inputs;
use super::common::meta;
use crate::naming::Component;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

/// Annotation cert-manager's ingress-shim reads.
pub const CLUSTER_ISSUER_ANNOTATION: &str = "cert-manager.io/cluster-issuer";

/// The Ingress of an instance.
pub fn ingress(inputs: &Inputs<'_>) -> Ingress {
    let names = inputs.names();
    let spec = &inputs.instance.spec.ingress;
    let host = inputs.host();
    let mut metadata = meta(inputs, &names.ingress, Component::Ingress);
    let mut annotations = spec.annotations.clone();
    if let Some(issuer) = spec
        .cluster_issuer
        .clone()
        .or_else(|| inputs.config.cluster_issuer.clone())
    {
        annotations.insert(CLUSTER_ISSUER_ANNOTATION.into(), issuer);
    }
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
    }
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec
                .class_name
                .clone()
                .or_else(|| inputs.config.ingress_class.clone()),
            tls: Some(vec![IngressTLS {
                hosts: Some(vec![host.clone()]),
                secret_name: Some(names.tls_secret.clone()),
            }]),
            rules: Some(vec![IngressRule {
                host: Some(host),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: names.dataplane.clone(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}
