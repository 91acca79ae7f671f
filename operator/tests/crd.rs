//! The CRD: the committed `crds/vibeinstance.yaml` is what `crdgen` generates, and the CEL
//! rules reject what they must (evaluated client-side with kube's CEL evaluator).

use kube::CustomResourceExt;
use kube::core::cel::{validate_cel, validate_cel_update};
use vibe_operator::crd::{BlobsSpec, OwnerSpec, RestoreFromSpec, VibeInstance, VibeInstanceSpec};

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

fn restoring(owner: Option<&str>, from: RestoreFromSpec) -> VibeInstance {
    let mut i = instance(owner, None);
    i.spec.restore_from = Some(from);
    i
}

fn from_backup(instance: &str, backup: &str) -> RestoreFromSpec {
    RestoreFromSpec {
        instance: Some(instance.into()),
        backup: Some(backup.into()),
        ..RestoreFromSpec::default()
    }
}

#[test]
fn restore_from_is_set_at_creation_only_and_needs_an_owner() {
    let from = from_backup("old", "20261204T023000.123Z-1a2b3c4d");
    let restored = restoring(Some(DID_A), from.clone());
    validate_cel(&restored).expect("create restoring from a backup");
    validate_cel_update(&restored, &restored).expect("unchanged");

    let err = validate_cel(&restoring(None, from.clone())).expect_err("restore without owner");
    assert!(
        format!("{err:?}").contains("spec.restoreFrom needs spec.owner"),
        "{err:?}"
    );
    let plain = instance(Some(DID_A), None);
    let err = validate_cel_update(&restored, &plain).expect_err("added after creation");
    assert!(
        format!("{err:?}")
            .contains("spec.restoreFrom can only be set when the instance is created"),
        "{err:?}"
    );
    validate_cel_update(&plain, &restored).expect_err("removed");
    let other = restoring(
        Some(DID_A),
        from_backup("old", "20261205T023000.123Z-1a2b3c4d"),
    );
    validate_cel_update(&other, &restored).expect_err("changed");
}

#[test]
fn restore_from_names_either_a_backup_or_an_object_key() {
    let schema = serde_json::to_value(VibeInstance::crd()).unwrap();
    let rules = schema.pointer(
        "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/restoreFrom/x-kubernetes-validations/0/rule",
    );
    assert!(
        rules
            .and_then(|r| r.as_str())
            .is_some_and(|r| r.contains("objectKey")),
        "restoreFrom carries its either/or rule: {rules:?}"
    );
    let by_key = RestoreFromSpec {
        object_key: Some("tenants/old/20261204T023000.123Z-1a2b3c4d.vibe.age".into()),
        ..RestoreFromSpec::default()
    };
    validate_cel(&restoring(Some(DID_A), by_key.clone())).expect("object key");
    let both = RestoreFromSpec {
        object_key: by_key.object_key.clone(),
        ..from_backup("old", "20261204T023000.123Z-1a2b3c4d")
    };
    let err = validate_cel(&restoring(Some(DID_A), both)).expect_err("both");
    assert!(
        format!("{err:?}").contains("set either instance and backup, or objectKey"),
        "{err:?}"
    );
    let half = RestoreFromSpec {
        instance: Some("old".into()),
        ..RestoreFromSpec::default()
    };
    validate_cel(&restoring(Some(DID_A), half)).expect_err("instance without backup");
    validate_cel(&restoring(Some(DID_A), RestoreFromSpec::default())).expect_err("nothing");
}
