//! The operator's RBAC list (`tests/rbac_list/mod.rs`, shared with the controller's unit tests
//! and the admission scenarios, which pass every API request they make to
//! `rbac::assert_allowed`): the chart's RBAC (`charts/vibe-operator/files/rbac.yaml`) must equal
//! `REQUIRED`, and the request resolver must authorize requests as the API server does.

#[allow(dead_code)]
#[path = "rbac_list/mod.rs"]
mod rbac;

use rbac::*;
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
    let text =
        std::fs::read_to_string(path).expect("charts/vibe-operator/files/rbac.yaml is readable");
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
    // Pods may be listed (a finished backup Job's report), not read one by one or watched.
    let read_pod = attributes_of("GET", "/api/v1/namespaces/t/pods/p", None).unwrap();
    assert_eq!(missing_verbs(&read_pod), vec!["get"]);
    let watch_pods = attributes_of("GET", "/api/v1/namespaces/t/pods?watch=true", None).unwrap();
    assert_eq!(missing_verbs(&watch_pods), vec!["watch"]);
    let read_nodes = attributes_of("GET", "/api/v1/nodes", None).unwrap();
    assert_eq!(missing_verbs(&read_nodes), vec!["list"]);
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
