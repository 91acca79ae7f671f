//! The CRD: the committed `crds/vibeinstance.yaml` is what `crdgen` generates, and the CEL
//! rules reject what they must (evaluated client-side with kube's CEL evaluator).

use kube::CustomResourceExt;
use kube::core::cel::{validate_cel, validate_cel_update};
use vibe_operator::crd::{BlobsSpec, OwnerSpec, VibeInstance, VibeInstanceSpec};

const DID_A: &str = "did:vibe:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
const DID_B: &str = "did:vibe:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH";

fn instance(owner: Option<&str>, bucket: Option<&str>) -> VibeInstance {
    let mut i = VibeInstance::new("alice", VibeInstanceSpec::default());
    i.spec.owner = owner.map(|d| OwnerSpec { did: d.into() });
    i.spec.blobs = bucket.map(|b| BlobsSpec {
        bucket: Some(b.into()),
        quota: None,
    });
    i
}

#[test]
fn committed_crd_matches_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/vibeinstance.yaml");
    let committed = std::fs::read_to_string(path).expect("crds/vibeinstance.yaml exists");
    assert!(
        committed == vibe_operator::crd_yaml(),
        "crds/vibeinstance.yaml is stale: run `cargo run -p vibe-operator --bin crdgen > crds/vibeinstance.yaml`"
    );
}

#[test]
fn crd_has_names_columns_and_status_subresource() {
    let crd = VibeInstance::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("vibeinstances.cloud.vibeapp.dev")
    );
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["vibe".to_string()][..])
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Owner", "URL", "Ready", "Phase", "Age"]);
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let yaml = vibe_operator::crd_yaml();
    for doc in ["deletionPolicy", "claim code", "x-kubernetes-validations"] {
        assert!(yaml.contains(doc), "{doc} missing from the CRD");
    }
}

#[test]
fn owner_can_be_set_once_and_never_changed_or_removed() {
    let unowned = instance(None, None);
    let owned = instance(Some(DID_A), None);
    validate_cel(&owned).expect("create with owner");
    validate_cel_update(&owned, &unowned).expect("claiming sets the owner");
    validate_cel_update(&owned, &owned).expect("unchanged");
    let err = validate_cel_update(&instance(Some(DID_B), None), &owned).expect_err("owner change");
    assert!(
        format!("{err:?}").contains("spec.owner cannot be changed"),
        "{err:?}"
    );
    validate_cel_update(&unowned, &owned).expect_err("owner removal");
}

#[test]
fn bucket_is_immutable() {
    let plain = instance(None, None);
    let with_bucket = instance(None, Some("legacy"));
    validate_cel(&with_bucket).expect("create with a bucket override");
    validate_cel_update(&with_bucket, &with_bucket).expect("unchanged");
    let err = validate_cel_update(&instance(None, Some("other")), &with_bucket)
        .expect_err("bucket change");
    assert!(
        format!("{err:?}").contains("spec.blobs.bucket is immutable"),
        "{err:?}"
    );
    validate_cel_update(&plain, &with_bucket).expect_err("bucket removal");
    validate_cel_update(&with_bucket, &plain)
        .expect_err("adding a bucket later would switch buckets");
}
