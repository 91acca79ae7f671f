//! Apps registered by the owner and the grants they hold.
//!
//! Registrations live in the system database as `apps/<appId>` documents and are cached
//! in memory ([`GrantsCache`]): a permission check never costs a CouchDB round trip, and
//! every change made through the API replaces the cached entry before the response is
//! sent, so a revoked grant is refused on the very next request. Long-lived consumers
//! (WebSocket subscriptions) can [`GrantsCache::subscribe`] to hear about changes.

mod routes;

pub use routes::routes;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::couch::{CouchError, Database};

/// Prefix of app documents in the system database.
pub const APP_DOC_PREFIX: &str = "apps/";

pub use vibe_api::apps::GrantSetting;

/// An app registration as stored (`apps/<appId>` in the system database).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AppRecord {
    /// The app id (typically its origin URL).
    pub app_id: String,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Picture URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture_url: Option<String>,
    /// Permissions the app's manifest requests.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Permission → setting, as granted by the owner.
    #[serde(default)]
    pub grants: BTreeMap<String, GrantSetting>,
    /// First registration (RFC 3339).
    #[serde(default)]
    pub registered_at: String,
    /// Last change of grants (RFC 3339).
    #[serde(default)]
    pub grants_updated_at: String,
    /// Identifies this registration: chosen when the app is registered, kept by updates,
    /// new when the app is deleted and registered again. App tokens carry it (`reg`) and
    /// stop fitting when it changes. Registrations stored before it existed fall back to
    /// their `registeredAt` ([`AppRecord::registration_id`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub registration: String,
}

impl AppRecord {
    /// The registration id tokens are bound to.
    pub fn registration_id(&self) -> String {
        if self.registration.is_empty() {
            format!("registered-at:{}", self.registered_at)
        } else {
            self.registration.clone()
        }
    }

    /// Whether the owner granted `permission` with `always`.
    pub fn allows(&self, permission: &str) -> bool {
        self.grants.get(permission) == Some(&GrantSetting::Always)
    }

    /// Whether `newer` (a later state of this registration) takes away a permission this
    /// one allows: a grant revoked (set to `ask` or `never`, or dropped). Granting more
    /// takes nothing away.
    pub fn revoked_in(&self, newer: &AppRecord) -> bool {
        self.grants.iter().any(|(permission, setting)| {
            *setting == GrantSetting::Always && !newer.allows(permission)
        })
    }
}

/// What changed in the cache (sent to [`GrantsCache::subscribe`]rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantsChanged {
    /// The app whose registration or grants changed (or which was deleted).
    pub app_id: String,
}

/// In-memory map of app id → registration.
pub struct GrantsCache {
    apps: RwLock<HashMap<String, Arc<AppRecord>>>,
    changes: broadcast::Sender<GrantsChanged>,
}

impl Default for GrantsCache {
    fn default() -> Self {
        Self {
            apps: RwLock::new(HashMap::new()),
            changes: broadcast::channel(256).0,
        }
    }
}

impl GrantsCache {
    /// Load every registration from the system database (called once at start-up).
    pub(crate) async fn load(&self, db: &Database) -> Result<(), CouchError> {
        let docs = db.docs_with_prefix(APP_DOC_PREFIX, 100_000).await?;
        let mut map = HashMap::new();
        for doc in docs {
            match serde_json::from_value::<AppRecord>(doc) {
                Ok(app) => {
                    map.insert(app.app_id.clone(), Arc::new(app));
                }
                Err(e) => tracing::warn!(error = %e, "skipping unreadable app document"),
            }
        }
        tracing::debug!(apps = map.len(), "grants loaded");
        *self.apps.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }

    /// The registration of `app_id`, if any.
    pub fn get(&self, app_id: &str) -> Option<Arc<AppRecord>> {
        self.apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app_id)
            .cloned()
    }

    /// Whether `app_id` holds `permission` with `always`.
    pub fn allows(&self, app_id: &str, permission: &str) -> bool {
        self.get(app_id).is_some_and(|app| app.allows(permission))
    }

    /// Number of registrations held.
    pub fn len(&self) -> usize {
        self.apps.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no app is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All registrations, by app id.
    pub fn all(&self) -> Vec<Arc<AppRecord>> {
        let mut apps: Vec<_> = self
            .apps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        apps.sort_by(|a, b| a.app_id.cmp(&b.app_id));
        apps
    }

    /// Hear about every change to registrations and grants.
    pub fn subscribe(&self) -> broadcast::Receiver<GrantsChanged> {
        self.changes.subscribe()
    }

    pub(crate) fn put(&self, app: AppRecord) {
        let app_id = app.app_id.clone();
        self.apps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app_id.clone(), Arc::new(app));
        let _ = self.changes.send(GrantsChanged { app_id });
    }

    pub(crate) fn remove(&self, app_id: &str) {
        self.apps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(app_id);
        let _ = self.changes.send(GrantsChanged {
            app_id: app_id.to_string(),
        });
    }
}

/// Whether `permission` is one the data plane understands: `read:<c>`, `write:<c>`,
/// `blob:read:<c>`, `blob:write:<c>`, `blob:delete:<c>`, or `sync`.
pub fn is_valid_permission(permission: &str) -> bool {
    if permission == "sync" {
        return true;
    }
    let collection = [
        "read:",
        "write:",
        "blob:read:",
        "blob:write:",
        "blob:delete:",
    ]
    .iter()
    .find_map(|prefix| permission.strip_prefix(prefix));
    collection.is_some_and(vibe_api::Collection::is_valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_grammar() {
        for ok in [
            "read:notes",
            "write:a-b_c",
            "blob:read:x",
            "blob:write:x",
            "blob:delete:x",
            "sync",
        ] {
            assert!(is_valid_permission(ok), "{ok}");
        }
        for bad in [
            "read:",
            "read:Notes",
            "delete:x",
            "blob:x",
            "read:_design",
            "write:a/b",
            "",
        ] {
            assert!(!is_valid_permission(bad), "{bad}");
        }
    }

    #[test]
    fn only_always_allows() {
        let mut app = AppRecord {
            app_id: "a".into(),
            name: "A".into(),
            description: None,
            picture_url: None,
            permissions: vec![],
            grants: BTreeMap::new(),
            registered_at: String::new(),
            grants_updated_at: String::new(),
            registration: String::new(),
        };
        app.grants.insert("read:x".into(), GrantSetting::Always);
        app.grants.insert("write:x".into(), GrantSetting::Ask);
        app.grants.insert("blob:read:x".into(), GrantSetting::Never);
        assert!(app.allows("read:x"));
        assert!(!app.allows("write:x"));
        assert!(!app.allows("blob:read:x"));
        assert!(!app.allows("read:y"));
        let mut more = app.clone();
        more.grants.insert("write:x".into(), GrantSetting::Always);
        assert!(!app.revoked_in(&more), "granting more revokes nothing");
        assert!(!app.revoked_in(&app));
        let mut less = app.clone();
        less.grants.insert("read:x".into(), GrantSetting::Ask);
        assert!(app.revoked_in(&less), "always → ask revokes");
        less.grants.remove("read:x");
        assert!(app.revoked_in(&less), "a dropped grant is revoked");
        assert!(!less.revoked_in(&app));
        let cache = GrantsCache::default();
        let mut rx = cache.subscribe();
        cache.put(app);
        assert!(cache.allows("a", "read:x"));
        assert_eq!(rx.try_recv().unwrap().app_id, "a");
        cache.remove("a");
        assert!(!cache.allows("a", "read:x"));
    }
}
