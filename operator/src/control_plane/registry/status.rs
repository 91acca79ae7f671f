//! Identity status names (the original control plane's vocabulary) derived from the
//! VibeInstance status: the instance is the source of truth, there is no side table.

use crate::crd::{Phase, VibeInstance};

/// The `instanceStatus` of an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    /// Registered; the operator has not reported on the instance yet.
    Pending,
    /// The operator is creating the instance's parts.
    Provisioning,
    /// Every part is ready.
    Completed,
    /// The instance is scaled to zero by the provider.
    Suspended,
    /// Something needs attention (see `instanceErrorDetails`).
    Failed,
    /// The instance is being deleted.
    Deprovisioning,
    /// The instance is gone.
    Deprovisioned,
}

impl InstanceStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Pending => "pending",
            InstanceStatus::Provisioning => "provisioning",
            InstanceStatus::Completed => "completed",
            InstanceStatus::Suspended => "suspended",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Deprovisioning => "deprovisioning",
            InstanceStatus::Deprovisioned => "deprovisioned",
        }
    }

    /// The status of an identity whose instance is `instance` (`None`: it does not exist).
    pub fn of(instance: Option<&VibeInstance>) -> Self {
        let Some(instance) = instance else {
            return InstanceStatus::Deprovisioned;
        };
        if instance.metadata.deletion_timestamp.is_some() {
            return InstanceStatus::Deprovisioning;
        }
        let ready = instance
            .condition("Ready")
            .is_some_and(|c| c.status == "True");
        match instance.status.as_ref().and_then(|s| s.phase) {
            _ if ready => InstanceStatus::Completed,
            None => InstanceStatus::Pending,
            Some(Phase::Provisioning) | Some(Phase::Paused) => InstanceStatus::Provisioning,
            Some(Phase::Ready) => InstanceStatus::Completed,
            Some(Phase::Suspended) => InstanceStatus::Suspended,
            Some(Phase::Failed) => InstanceStatus::Failed,
            Some(Phase::Deleting) => InstanceStatus::Deprovisioning,
        }
    }
}

/// Why the instance failed, from its Ready condition (only for failed instances).
pub fn error_details(instance: &VibeInstance) -> Option<String> {
    (InstanceStatus::of(Some(instance)) == InstanceStatus::Failed)
        .then(|| instance.condition("Ready").map(|c| c.message.clone()))
        .flatten()
        .filter(|m| !m.is_empty())
}

/// Whether the instance needs nothing from a re-registration (exists and is not going away).
pub fn is_alive(instance: &VibeInstance) -> bool {
    instance.metadata.deletion_timestamp.is_none()
}
