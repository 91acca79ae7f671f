//! The host an instance is served at.
//!
//! A `VibeInstance` is served at its `spec.host` when set, else at `<name>.<base domain>`
//! (the operator's `--base-domain`). The operator builds its Ingress and the data plane's
//! `PUBLIC_INSTANCE_URL` from it, and its admission webhook refuses a second instance on a
//! host already taken.

/// The host of the instance `name` with the optional explicit `spec_host`, as written
/// (compare hosts with [`same_host`]).
pub fn instance_host(name: &str, spec_host: Option<&str>, base_domain: &str) -> String {
    match spec_host {
        Some(host) => host.to_string(),
        None => format!("{name}.{base_domain}"),
    }
}

/// The public URL of an instance served at `host`.
pub fn instance_url(host: &str) -> String {
    format!("https://{host}")
}

/// Whether two host names are the same host (DNS names are case-insensitive).
pub fn same_host(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_host_wins_else_name_under_base_domain() {
        assert_eq!(
            instance_host("alice", None, "vibe.example"),
            "alice.vibe.example"
        );
        assert_eq!(
            instance_host("alice", Some("Cloud.Alice.Example"), "vibe.example"),
            "Cloud.Alice.Example"
        );
        assert_eq!(instance_url("a.b"), "https://a.b");
        assert!(same_host("Cloud.Alice.Example", "cloud.alice.example"));
        assert!(!same_host("alice.example", "bob.example"));
    }
}
