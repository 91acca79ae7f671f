//! The Kubernetes API permissions the operator needs, in one list ([`REQUIRED`]), and the
//! translation of an API request into the RBAC attributes the API server authorizes it by
//! ([`attributes_of`]).
//!
//! The Helm chart and the kustomize base grant exactly what `charts/vibe-operator/files/rbac.yaml`
//! lists; a test here fails when that file and [`REQUIRED`] differ. The mock-API scenarios of the
//! controller and the admission endpoint pass every request they see to [`assert_allowed`], so an
//! API call the code makes that [`REQUIRED`] does not cover fails a test, and [`REQUIRED`] stays
//! derived from the code rather than from memory.

/// Where a permission applies, which decides how the chart binds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Cluster-scoped objects: a ClusterRole bound cluster-wide.
    Cluster,
    /// Objects in the namespaces whose VibeInstances are managed: bound cluster-wide when every
    /// namespace is watched, otherwise by one RoleBinding per watched namespace.
    Tenant,
    /// Objects in the operator's own namespace (leader Lease, webhook certificate, registry): a Role.
    Operator,
}

impl Scope {
    /// The key of this scope in `charts/vibe-operator/files/rbac.yaml`.
    pub fn key(self) -> &'static str {
        match self {
            Scope::Cluster => "cluster",
            Scope::Tenant => "tenant",
            Scope::Operator => "operator",
        }
    }
}

/// One permission: API group, resource (with `/subresource`), verbs, scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Plural resource name, `resource/subresource` for subresources.
    pub resource: &'static str,
    /// RBAC verbs.
    pub verbs: &'static [&'static str],
    /// Where the permission applies.
    pub scope: Scope,
    /// Why the operator needs it (what code makes the call).
    pub why: &'static str,
}

/// Children the controller watches (`.owns()` caches) and server-side applies; garbage collection
/// through ownerReferences deletes them, so no `delete`.
const CHILD_VERBS: &[&str] = &["list", "watch", "create", "patch"];

/// Every permission the operator needs. Server-side apply of an object that does not exist yet
/// is authorized as `patch` and `create`, so applied kinds list both.
pub const REQUIRED: &[Permission] = &[
    Permission {
        group: "admissionregistration.k8s.io",
        resource: "validatingwebhookconfigurations",
        verbs: &["get", "update"],
        scope: Scope::Cluster,
        why: "admission TLS writes its CA into the chart's ValidatingWebhookConfiguration (only that one, by resourceNames)",
    },
    Permission {
        group: "cloud.vibeapp.dev",
        resource: "vibeinstances",
        verbs: &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        scope: Scope::Tenant,
        why: "controller watch and finalizer; registry provisions, claims (sets spec.owner) and deprovisions",
    },
    Permission {
        group: "cloud.vibeapp.dev",
        resource: "vibeinstances/status",
        verbs: &["patch"],
        scope: Scope::Tenant,
        why: "controller status updates",
    },
    Permission {
        group: "cloud.vibeapp.dev",
        resource: "vibeinstances/finalizers",
        verbs: &["update"],
        scope: Scope::Tenant,
        why: "children carry ownerReferences with blockOwnerDeletion (OwnerReferencesPermissionEnforcement)",
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        scope: Scope::Tenant,
        why: "tenant Secrets: applied, read back (generated values are kept), the claim Secret deleted once claimed",
    },
    Permission {
        group: "",
        resource: "configmaps",
        verbs: CHILD_VERBS,
        scope: Scope::Tenant,
        why: "CouchDB local.ini",
    },
    Permission {
        group: "",
        resource: "services",
        verbs: CHILD_VERBS,
        scope: Scope::Tenant,
        why: "CouchDB and data plane Services",
    },
    Permission {
        group: "",
        resource: "persistentvolumeclaims",
        verbs: &["delete"],
        scope: Scope::Tenant,
        why: "deletionPolicy Delete removes the CouchDB volume",
    },
    Permission {
        group: "apps",
        resource: "statefulsets",
        verbs: CHILD_VERBS,
        scope: Scope::Tenant,
        why: "CouchDB",
    },
    Permission {
        group: "apps",
        resource: "deployments",
        verbs: CHILD_VERBS,
        scope: Scope::Tenant,
        why: "data plane",
    },
    Permission {
        group: "networking.k8s.io",
        resource: "ingresses",
        verbs: CHILD_VERBS,
        scope: Scope::Tenant,
        why: "tenant Ingress",
    },
    Permission {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: CHILD_VERBS,
        scope: Scope::Tenant,
        why: "tenant isolation",
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::Tenant,
        why: "Events on VibeInstances",
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: Scope::Operator,
        why: "leader election",
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["get", "list", "create", "update", "delete"],
        scope: Scope::Operator,
        why: "webhook CA and serving certificate; identity registry records, claim codes, nonces, refresh tokens",
    },
];

/// Verbs no operator role may hold.
pub const FORBIDDEN_VERBS: &[&str] = &["*", "bind", "escalate", "impersonate"];

/// What the API server checks for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAttributes {
    /// API group (`""` for core).
    pub group: String,
    /// Resource, `resource/subresource` for subresources.
    pub resource: String,
    /// Verbs that must all be allowed (`patch` + `create` for a server-side apply).
    pub verbs: Vec<&'static str>,
    /// Namespace, for namespaced requests.
    pub namespace: Option<String>,
    /// Object name, when the request names one.
    pub name: Option<String>,
}

/// Translates a request of the Kubernetes API (method, path with query, `Content-Type`) into RBAC
/// attributes, as the API server's request-info resolver does. `None` for paths that are not
/// resource requests (discovery, `/version`, …).
pub fn attributes_of(
    method: &str,
    path_and_query: &str,
    content_type: Option<&str>,
) -> Option<RequestAttributes> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, sub] => (*resource, Some(name.to_string()), Some(*sub)),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verbs: Vec<&'static str> = match (method.to_ascii_uppercase().as_str(), name.is_some()) {
        ("GET", true) => vec!["get"],
        ("GET", false) if watch => vec!["watch"],
        ("GET", false) => vec!["list"],
        ("POST", _) => vec!["create"],
        ("PUT", _) => vec!["update"],
        // Server-side apply creates a missing object, which is authorized as `create` too; a
        // subresource (status) is never created that way.
        ("PATCH", _)
            if subresource.is_none()
                && content_type.is_some_and(|c| c.starts_with("application/apply-patch")) =>
        {
            vec!["patch", "create"]
        }
        ("PATCH", _) => vec!["patch"],
        ("DELETE", true) => vec!["delete"],
        ("DELETE", false) => vec!["deletecollection"],
        _ => return None,
    };
    let resource = match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    Some(RequestAttributes {
        group: group.to_string(),
        resource,
        verbs,
        namespace,
        name,
    })
}

/// The verbs of `attrs` that no entry of [`REQUIRED`] grants (empty: allowed).
pub fn missing_verbs(attrs: &RequestAttributes) -> Vec<&'static str> {
    attrs
        .verbs
        .iter()
        .copied()
        .filter(|verb| {
            !REQUIRED.iter().any(|p| {
                p.group == attrs.group && p.resource == attrs.resource && p.verbs.contains(verb)
            })
        })
        .collect()
}

/// Panics with a clear message when a request the code made is not covered by [`REQUIRED`]. For
/// mock-API tests: call it on every request the mock receives.
pub fn assert_allowed(method: &str, path_and_query: &str, content_type: Option<&str>) {
    if let Some(attrs) = attributes_of(method, path_and_query, content_type) {
        let missing = missing_verbs(&attrs);
        assert!(
            missing.is_empty(),
            "{method} {path_and_query} needs {missing:?} on {:?} {:?}, which operator::rbac::REQUIRED does not grant; \
             add it there and to charts/vibe-operator/files/rbac.yaml",
            attrs.group,
            attrs.resource
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    type Triple = (String, String, String);

    fn required(scope: Scope) -> BTreeSet<Triple> {
        REQUIRED
            .iter()
            .filter(|p| p.scope == scope)
            .flat_map(|p| {
                p.verbs
                    .iter()
                    .map(move |v| (p.group.to_string(), p.resource.to_string(), v.to_string()))
            })
            .collect()
    }

    /// One rule of `rbac.yaml`: field (`apiGroups`, `resources`, `verbs`, …) → values.
    type Rule = BTreeMap<String, Vec<String>>;

    /// Reads `charts/vibe-operator/files/rbac.yaml` (scope → rules) with the standard library
    /// only. The file keeps a fixed shape that this reader enforces: top-level scope keys, rules
    /// made of `field: ["a", "b"]` flow lists. (deploy/check-manifests also parses it as YAML
    /// and renders it through the chart.)
    fn chart_rules() -> BTreeMap<String, Vec<Rule>> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/vibe-operator/files/rbac.yaml"
        );
        let text = std::fs::read_to_string(path)
            .expect("charts/vibe-operator/files/rbac.yaml is readable");
        let mut out: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
        let mut scope: Option<String> = None;
        for (index, line) in text.lines().enumerate() {
            let no = index + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if !line.starts_with(' ') {
                let key = trimmed
                    .strip_suffix(':')
                    .unwrap_or_else(|| panic!("rbac.yaml line {no}: expected `<scope>:`"));
                out.entry(key.to_string()).or_default();
                scope = Some(key.to_string());
                continue;
            }
            let rules = out
                .get_mut(scope.as_deref().expect("a rule before any scope key"))
                .expect("scope entry exists");
            let body = match trimmed.strip_prefix("- ") {
                Some(body) => {
                    rules.push(Rule::new());
                    body
                }
                None => trimmed,
            };
            let (field, list) = body
                .split_once(':')
                .unwrap_or_else(|| panic!("rbac.yaml line {no}: expected `field: [...]`"));
            let list = list
                .trim()
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .unwrap_or_else(|| panic!("rbac.yaml line {no}: expected a flow list `[...]`"));
            let values = list
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| item.trim_matches(|c| c == '"' || c == '\'').to_string())
                .collect();
            rules
                .last_mut()
                .unwrap_or_else(|| panic!("rbac.yaml line {no}: field outside a `- ` rule"))
                .insert(field.trim().to_string(), values);
        }
        out
    }

    fn strings(rule: &Rule, field: &str) -> Vec<String> {
        rule.get(field).cloned().unwrap_or_default()
    }

    fn granted(rules: &BTreeMap<String, Vec<Rule>>, scope: Scope) -> BTreeSet<Triple> {
        let mut out = BTreeSet::new();
        for rule in rules.get(scope.key()).into_iter().flatten() {
            for g in strings(rule, "apiGroups") {
                for r in strings(rule, "resources") {
                    for v in strings(rule, "verbs") {
                        out.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn chart_grants_exactly_what_the_operator_requires() {
        let rules = chart_rules();
        for scope in [Scope::Cluster, Scope::Tenant, Scope::Operator] {
            let want = required(scope);
            let have = granted(&rules, scope);
            let extra: Vec<_> = have.difference(&want).collect();
            let missing: Vec<_> = want.difference(&have).collect();
            assert!(
                extra.is_empty() && missing.is_empty(),
                "charts/vibe-operator/files/rbac.yaml `{}` differs from operator::rbac::REQUIRED:\n  granted but not required: {extra:?}\n  required but not granted: {missing:?}",
                scope.key()
            );
        }
    }

    #[test]
    fn cluster_scoped_rules_are_limited_to_named_objects() {
        let rules = chart_rules();
        for rule in rules.get("cluster").into_iter().flatten() {
            assert!(
                !strings(rule, "resourceNames").is_empty(),
                "cluster rule without resourceNames: {rule:?}"
            );
        }
    }

    #[test]
    fn nothing_forbidden_is_required() {
        for p in REQUIRED {
            for v in p.verbs {
                assert!(!FORBIDDEN_VERBS.contains(v), "{p:?} holds {v}");
            }
            assert_ne!(p.resource, "*");
        }
    }

    #[test]
    fn applied_kinds_may_also_be_created() {
        for p in REQUIRED
            .iter()
            .filter(|p| p.verbs.contains(&"patch") && !p.resource.contains('/'))
        {
            assert!(
                p.verbs.contains(&"create") || p.resource == "events",
                "{} patch without create: server-side apply creates",
                p.resource
            );
        }
    }

    #[test]
    fn resolves_requests_like_the_api_server() {
        let a = attributes_of(
            "GET",
            "/api/v1/namespaces/t/secrets/alice-couchdb-auth",
            None,
        )
        .unwrap();
        assert_eq!(
            (a.group.as_str(), a.resource.as_str(), a.verbs.clone()),
            ("", "secrets", vec!["get"])
        );
        assert_eq!(a.namespace.as_deref(), Some("t"));
        assert_eq!(a.name.as_deref(), Some("alice-couchdb-auth"));

        let w = attributes_of(
            "GET",
            "/apis/apps/v1/statefulsets?labelSelector=x&watch=true&resourceVersion=1",
            None,
        )
        .unwrap();
        assert_eq!(
            (w.group.as_str(), w.resource.as_str(), w.verbs.clone()),
            ("apps", "statefulsets", vec!["watch"])
        );
        assert_eq!(w.namespace, None);

        let l = attributes_of(
            "GET",
            "/apis/cloud.vibeapp.dev/v1alpha1/vibeinstances?limit=500",
            None,
        )
        .unwrap();
        assert_eq!(l.verbs, vec!["list"]);

        let apply = attributes_of(
            "PATCH",
            "/apis/apps/v1/namespaces/t/deployments/alice-dataplane?fieldManager=vibe-operator&force=true",
            Some("application/apply-patch+yaml"),
        )
        .unwrap();
        assert_eq!(apply.verbs, vec!["patch", "create"]);

        let status = attributes_of(
            "PATCH",
            "/apis/cloud.vibeapp.dev/v1alpha1/namespaces/t/vibeinstances/alice/status?fieldManager=vibe-operator",
            Some("application/apply-patch+yaml"),
        )
        .unwrap();
        assert_eq!(
            (status.resource.as_str(), status.verbs.clone()),
            ("vibeinstances/status", vec!["patch"])
        );

        assert_eq!(
            attributes_of(
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/s/leases/l",
                None
            )
            .unwrap()
            .verbs,
            vec!["update"]
        );
        assert_eq!(
            attributes_of("POST", "/api/v1/namespaces/s/secrets", None)
                .unwrap()
                .verbs,
            vec!["create"]
        );
        assert_eq!(
            attributes_of("DELETE", "/api/v1/namespaces/s/secrets/x", None)
                .unwrap()
                .verbs,
            vec!["delete"]
        );
        assert_eq!(
            attributes_of("DELETE", "/api/v1/namespaces/s/secrets", None)
                .unwrap()
                .verbs,
            vec!["deletecollection"]
        );
        let ns = attributes_of("GET", "/api/v1/namespaces/vibe", None).unwrap();
        assert_eq!(
            (ns.resource.as_str(), ns.name.as_deref()),
            ("namespaces", Some("vibe"))
        );
        assert_eq!(attributes_of("GET", "/version", None), None);
        assert_eq!(attributes_of("GET", "/apis/apps/v1", None), None);
    }

    #[test]
    fn requests_outside_the_list_are_refused() {
        let read_pods = attributes_of("GET", "/api/v1/namespaces/t/pods", None).unwrap();
        assert_eq!(missing_verbs(&read_pods), vec!["list"]);
        let update_secret_everywhere =
            attributes_of("DELETE", "/api/v1/namespaces/t/secrets", None).unwrap();
        assert_eq!(
            missing_verbs(&update_secret_everywhere),
            vec!["deletecollection"]
        );
        let apply_lease = attributes_of(
            "PATCH",
            "/apis/coordination.k8s.io/v1/namespaces/s/leases/l",
            Some("application/apply-patch+yaml"),
        )
        .unwrap();
        assert_eq!(missing_verbs(&apply_lease), vec!["patch"]);
        assert!(std::panic::catch_unwind(|| assert_allowed("GET", "/api/v1/nodes", None)).is_err());
        assert_allowed(
            "PATCH",
            "/apis/apps/v1/namespaces/t/deployments/x?fieldManager=vibe-operator",
            Some("application/apply-patch+yaml"),
        );
    }
}
