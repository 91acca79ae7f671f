//! `vibe-operator render -f instance.yaml`: the objects the operator would apply, as YAML,
//! without a cluster. Secret values are generated on first reconcile and shown redacted.

use crate::config::OperatorConfig;
use crate::crd::VibeInstance;
use crate::desired::{self, Child, ExistingSecrets, Inputs};
use serde::Deserialize;

/// Rendering failures.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The input is not YAML/JSON.
    #[error("cannot parse the manifest: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// No VibeInstance in the input.
    #[error("the manifest contains no VibeInstance (apiVersion cloud.vibeapp.dev/v1alpha1)")]
    NoInstance,
}

/// Placeholder of redacted Secret values.
pub const REDACTED: &str = "<generated on first reconcile>";

/// Renders every VibeInstance in `manifest` (multi-document YAML or JSON).
pub fn render(manifest: &str, config: &OperatorConfig) -> Result<String, RenderError> {
    let mut out = String::new();
    let mut found = false;
    for doc in serde_yaml::Deserializer::from_str(manifest) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("VibeInstance") {
            continue;
        }
        let mut instance: VibeInstance = serde_yaml::from_value(value)?;
        if instance.metadata.namespace.is_none() {
            instance.metadata.namespace = Some("default".into());
        }
        found = true;
        let inputs = Inputs::new(&instance, config);
        out.push_str(&format!(
            "# VibeInstance {}/{}: bucket {} on {} (created with the S3 API, not a Kubernetes object)\n",
            inputs.namespace(),
            inputs.name(),
            inputs.bucket(),
            config.s3.endpoint
        ));
        for child in desired::children(&inputs, &ExistingSecrets::default()) {
            let mut value = child.to_value();
            if matches!(child, Child::Secret(_)) {
                redact(&mut value);
            }
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&value)?);
        }
    }
    if found {
        Ok(out)
    } else {
        Err(RenderError::NoInstance)
    }
}

fn redact(secret: &mut serde_json::Value) {
    if let Some(obj) = secret.as_object_mut()
        && let Some(serde_json::Value::Object(data)) = obj.remove("data")
    {
        let string_data: serde_json::Map<String, serde_json::Value> = data
            .keys()
            .map(|k| (k.clone(), serde_json::Value::String(REDACTED.into())))
            .collect();
        obj.insert("stringData".into(), serde_json::Value::Object(string_data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_child_with_redacted_secrets() {
        let manifest = "apiVersion: cloud.vibeapp.dev/v1alpha1\nkind: VibeInstance\nmetadata:\n  name: alice\n  namespace: tenants\nspec: {}\n";
        let out = render(manifest, &OperatorConfig::default()).unwrap();
        for kind in [
            "kind: Secret",
            "kind: ConfigMap",
            "kind: StatefulSet",
            "kind: Deployment",
            "kind: Ingress",
            "kind: NetworkPolicy",
            "kind: Service",
        ] {
            assert!(out.contains(kind), "{kind} missing in\n{out}");
        }
        assert!(
            out.contains("alice-claim"),
            "unowned instances get a claim Secret"
        );
        assert!(out.contains(REDACTED));
        assert!(
            !out.contains("BEGIN PRIVATE KEY"),
            "no generated secret leaks"
        );
        assert!(out.contains("bucket vibe-tenants-alice"));
        let docs = out.matches("\n---\n").count() + usize::from(out.starts_with("---"));
        assert!(docs >= 12, "{docs} documents");
    }

    #[test]
    fn rejects_manifests_without_instance() {
        assert!(matches!(
            render("kind: ConfigMap\n", &OperatorConfig::default()),
            Err(RenderError::NoInstance)
        ));
        assert!(render(": : :", &OperatorConfig::default()).is_err());
    }
}
