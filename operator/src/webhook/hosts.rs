//! Which instance serves a host: the one lookup the webhook needs from the operator's cache.

use crate::config::OperatorConfig;
use crate::crd::VibeInstance;
use crate::state::{InstanceIndex, effective_host};
use kube::ResourceExt;
use std::collections::BTreeMap;
use vibe_api::host::{instance_host, same_host};

/// Answers "which other VibeInstance already serves this host?".
///
/// The operator implements it over its reflector caches ([`CachedHosts`]); tests use a map.
pub trait HostIndex: Send + Sync {
    /// `namespace/name` of an instance serving `host` that is not `(namespace, name)`.
    fn holder_of(&self, host: &str, namespace: &str, name: &str) -> Option<String>;
}

/// The effective host of an instance ([`vibe_api::host::instance_host`]), lower-cased;
/// `None` for an instance with neither `spec.host` nor a name (yet).
pub fn host_of(instance: &VibeInstance, base_domain: &str) -> Option<String> {
    let name = instance.metadata.name.as_deref().unwrap_or_default();
    let spec_host = instance.spec.host.as_deref();
    (spec_host.is_some() || !name.is_empty())
        .then(|| instance_host(name, spec_host, base_domain).to_ascii_lowercase())
}

/// A fixed table `host → namespace/name` (tests, and the cert-manager-free `render` path).
#[derive(Debug, Default, Clone)]
pub struct StaticHosts(pub BTreeMap<String, String>);

impl HostIndex for StaticHosts {
    fn holder_of(&self, host: &str, namespace: &str, name: &str) -> Option<String> {
        let me = format!("{namespace}/{name}");
        self.0
            .get(&host.to_ascii_lowercase())
            .filter(|holder| **holder != me)
            .cloned()
    }
}

/// The operator's VibeInstance watch caches (every replica has them, leader or not).
#[derive(Clone)]
pub struct CachedHosts {
    /// The controller's caches.
    pub instances: InstanceIndex,
    /// Operator configuration (for the default host).
    pub config: std::sync::Arc<OperatorConfig>,
}

impl HostIndex for CachedHosts {
    fn holder_of(&self, host: &str, namespace: &str, name: &str) -> Option<String> {
        self.instances
            .all()
            .into_iter()
            .filter(|i| !(i.namespace().as_deref() == Some(namespace) && i.name_any() == name))
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .find(|i| same_host(&effective_host(i, &self.config), host))
            .map(|i| format!("{}/{}", i.namespace().unwrap_or_default(), i.name_any()))
    }
}
