//! Test support (not part of the operator binary): the Kubernetes API permissions the operator needs, in one list ([`REQUIRED`]), and the
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
        group: "batch",
        resource: "cronjobs",
        verbs: &["list", "watch", "create", "patch", "delete"],
        scope: Scope::Tenant,
        why: "scheduled backups (spec.backup): applied and watched; deleted when spec.backup is removed",
    },
    Permission {
        group: "batch",
        resource: "jobs",
        verbs: &["list", "watch"],
        scope: Scope::Tenant,
        why: "the backup CronJobs' Jobs: a finished one updates status.lastBackup",
    },
    Permission {
        group: "",
        resource: "pods",
        verbs: &["list"],
        scope: Scope::Tenant,
        why: "a finished backup Job's pods: the report in their termination message",
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
