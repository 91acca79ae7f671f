//! Device credentials: a device (a PouchDB app on a phone, a laptop's replicator)
//! registers once and then syncs for as long as the owner trusts it.
//!
//! A device registration (`devices/<deviceId>` in the system database) names the device,
//! the app it acts as (none: the owner's own device) and its scopes. Registering returns
//! a random secret once; only its SHA-256 is stored (it is 256 random bits, so a fast
//! hash is enough). The device presents `deviceId:secret` as HTTP Basic credentials on
//! the sync endpoint — a fixed credential any replicator can send for hours, with nothing
//! to refresh. Registrations are cached in memory ([`DeviceRegistry`]) like grants, so a
//! check costs a hash and a map lookup, never a CouchDB round trip.
//!
//! A device stops working when the owner revokes it (`DELETE /api/v1/devices/{id}`), and
//! when the app registration it was created for is deleted (also if the app is
//! registered again). Revocation ends the device's open feeds within a second
//! ([`crate::auth::until_revoked`]).

mod routes;

pub use routes::routes;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::couch::{CouchError, Database};

/// Prefix of device documents in the system database.
pub const DEVICE_DOC_PREFIX: &str = "devices/";

/// A device registration as stored (`devices/<deviceId>`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    /// Random id, also the Basic-auth user name.
    pub device_id: String,
    /// Name the owner gave it.
    pub name: String,
    /// The app it acts as; `None`: the owner's own device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The app registration it was created for (see [`crate::apps::AppRecord::registration_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_registration: Option<String>,
    /// What it may do (e.g. `sync`); an app device also needs the app's grant.
    pub scopes: Vec<String>,
    /// `sha256:<hex>` of the secret.
    pub secret_hash: String,
    /// Registration time (RFC 3339).
    pub created_at: String,
}

impl DeviceRecord {
    /// Whether the device's scopes include `permission`.
    pub fn has_scope(&self, permission: &str) -> bool {
        self.scopes.iter().any(|s| s == permission)
    }
}

/// In-memory map of device id → registration.
#[derive(Default)]
pub struct DeviceRegistry {
    devices: RwLock<HashMap<String, Arc<DeviceRecord>>>,
}

impl DeviceRegistry {
    /// Load every registration from the system database (once, with the grants).
    pub(crate) async fn load(&self, db: &Database) -> Result<(), CouchError> {
        let docs = db.docs_with_prefix(DEVICE_DOC_PREFIX, 100_000).await?;
        let mut map = HashMap::new();
        for doc in docs {
            match serde_json::from_value::<DeviceRecord>(doc) {
                Ok(device) => {
                    map.insert(device.device_id.clone(), Arc::new(device));
                }
                Err(e) => tracing::warn!(error = %e, "skipping unreadable device document"),
            }
        }
        tracing::debug!(devices = map.len(), "devices loaded");
        *self.devices.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }

    /// The registration of `device_id`, if the device is trusted.
    pub fn get(&self, device_id: &str) -> Option<Arc<DeviceRecord>> {
        self.devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(device_id)
            .cloned()
    }

    /// The device whose id is `device_id` and whose secret is `secret`.
    pub fn verify(&self, device_id: &str, secret: &str) -> Option<Arc<DeviceRecord>> {
        let device = self.get(device_id)?;
        vibe_identity::secret::matches(secret, &device.secret_hash).then_some(device)
    }

    /// Every trusted device, by creation time.
    pub fn all(&self) -> Vec<Arc<DeviceRecord>> {
        let mut devices: Vec<_> = self
            .devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        devices.sort_by(|a, b| {
            (a.created_at.as_str(), a.device_id.as_str())
                .cmp(&(b.created_at.as_str(), b.device_id.as_str()))
        });
        devices
    }

    pub(crate) fn put(&self, device: DeviceRecord) {
        self.devices
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(device.device_id.clone(), Arc::new(device));
    }

    pub(crate) fn remove(&self, device_id: &str) -> bool {
        self.devices
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(device_id)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_secret_of_a_trusted_device_verifies() {
        let registry = DeviceRegistry::default();
        registry.put(DeviceRecord {
            device_id: "d1".into(),
            name: "Phone".into(),
            app_id: None,
            app_registration: None,
            scopes: vec!["sync".into()],
            secret_hash: vibe_identity::secret::hash("s3cret"),
            created_at: "2026-01-01T00:00:00Z".into(),
        });
        assert!(registry.verify("d1", "s3cret").is_some());
        assert!(registry.verify("d1", "other").is_none());
        assert!(registry.verify("d2", "s3cret").is_none());
        assert!(registry.remove("d1"));
        assert!(registry.verify("d1", "s3cret").is_none());
    }
}
