//! Setting `spec.owner` — the source of truth of ownership — when an unowned instance is
//! claimed. Used by the admission endpoint's claim route (issue 8).

use crate::crd::VibeInstance;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// Field manager of ownership changes.
pub const OWNER_FIELD_MANAGER: &str = "vibe-operator-claims";

/// Sets `spec.owner.did` on an instance, conditional on `resource_version` (the version the
/// caller checked as unowned): a concurrent claim makes this fail with 409 Conflict, so exactly
/// one claim wins. The CRD's CEL rule rejects (422) any change of an owner already set. After
/// this the controller rolls the data plane with `TARGET_USER_DID` and deletes the claim Secret.
pub async fn set_owner(
    api: &Api<VibeInstance>,
    name: &str,
    did: &str,
    resource_version: &str,
) -> Result<VibeInstance, kube::Error> {
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": resource_version },
        "spec": { "owner": { "did": did } },
    });
    let params = PatchParams {
        field_manager: Some(OWNER_FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Merge(&patch)).await
}
