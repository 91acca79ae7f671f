//! Children this replica wrote that its watch caches may not hold yet.
//!
//! A write's answer reaches the cache through the watch a little later. A reconcile that
//! follows its own write within that lag — another child's event, or a second instance
//! event — would find the child missing (or, for a generated Secret, would create it again)
//! and write it once more: with a fleet reconciled at once, hundreds of needless requests.
//! So what the API server answered stands in for the cache's copy until the cache holds the
//! object, for [`MEMORY`] at most. A reconcile that leaned on it is requeued within
//! [`MEMORY`] ([`Recall::used`]), so a child deleted before the cache ever saw it comes back
//! at the latest then.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a written object stands in for the cache's copy.
pub const MEMORY: Duration = Duration::from_secs(30);

/// The objects written recently, by kind, namespace and name, as the API server answered.
#[derive(Default)]
pub struct Written {
    entries: Mutex<HashMap<String, (serde_json::Value, Instant)>>,
}

fn key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

impl Written {
    /// Remembers `object` (as the API server answered a write of it).
    pub fn remember(&self, kind: &str, namespace: &str, name: &str, object: serde_json::Value) {
        let mut entries = self.entries.lock().expect("written lock");
        // Lapsed entries go here, on a write, not on every lookup of every reconcile.
        entries.retain(|_, (_, at)| at.elapsed() < MEMORY);
        entries.insert(key(kind, namespace, name), (object, Instant::now()));
    }

    /// The object as last written, when the cache does not hold it (`in_cache` false) and it
    /// was written within [`MEMORY`]. Once the cache holds it, the memory is dropped: from
    /// then on the cache (and any change someone else made) is what counts.
    pub fn recall(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        in_cache: bool,
        recall: &Recall,
    ) -> Option<serde_json::Value> {
        let mut entries = self.entries.lock().expect("written lock");
        let key = key(kind, namespace, name);
        if in_cache {
            entries.remove(&key);
            return None;
        }
        let found = entries
            .get(&key)
            .filter(|(_, at)| at.elapsed() < MEMORY)
            .map(|(object, _)| object.clone());
        if found.is_some() {
            recall.used.store(true, Ordering::Relaxed);
        }
        found
    }
}

/// Whether one reconcile leaned on [`Written`] memory.
#[derive(Default)]
pub struct Recall {
    used: AtomicBool,
}

impl Recall {
    /// Whether anything was recalled instead of read from the cache.
    pub fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_written_object_stands_in_until_the_cache_holds_it() {
        let written = Written::default();
        let recall = Recall::default();
        assert_eq!(
            written.recall("Deployment", "ns", "a", false, &recall),
            None
        );
        assert!(!recall.used());
        written.remember("Deployment", "ns", "a", json!({"v": 1}));
        assert_eq!(
            written.recall("Deployment", "ns", "a", false, &recall),
            Some(json!({"v": 1}))
        );
        assert!(recall.used());
        // Another kind or name is another object.
        assert_eq!(written.recall("Service", "ns", "a", false, &recall), None);
        // The cache caught up: forgotten, even if the cache loses it again later.
        assert_eq!(written.recall("Deployment", "ns", "a", true, &recall), None);
        assert_eq!(
            written.recall("Deployment", "ns", "a", false, &recall),
            None
        );
    }
}
