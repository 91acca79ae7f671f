//! When is a watch cache complete? When the reflector has applied the initial list:
//! [`mark_synced`] watches the (already reflected) event stream for `watcher::Event::InitDone`
//! and flips the watch's flag. Every watch has one: the VibeInstances of each scope
//! ([`crate::state::ScopeCache`]) and each kind of child ([`super::cache::ChildCaches`]).
//! `/readyz` answers 200 once all are set ([`WatchFlag`], [`unsynced`]), and a reconcile reads
//! the child caches only once theirs are (a child missing from a cache that has not listed yet
//! is not missing from the cluster).
//!
//! Why not `Store::wait_until_ready`: in kube-runtime 5 it polls a `oneshot::Receiver` shared
//! by every waiter, and a oneshot receiver keeps one waker — the last poller's. The controller's
//! runner waits on the same store, so a second waiter that polled first (the operator's
//! readiness task did) is never woken. A `tokio::sync::watch` channel wakes every waiter.

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::watch;

/// A new scope flag: the sender for the watch stream, the receiver for the readers.
pub fn flag() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

/// Passes `events` through unchanged and sets `synced` once an initial list has completed.
///
/// Put it after `.reflect(writer)`: the reflector applies each event to the store before
/// yielding it, so when the flag flips the store already holds the whole list.
pub fn mark_synced<S, K>(events: S, synced: watch::Sender<bool>) -> impl Stream<Item = S::Item>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    events.inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            synced.send_if_modified(|s| !std::mem::replace(s, true));
        }
    })
}

/// The sync flag of one watch, with the name `/readyz` reports it by: `<namespace>/<resource>`,
/// `*/<resource>` for a watch of all namespaces, or just the resource for a child cache not
/// yet placed in a scope.
#[derive(Clone, Debug)]
pub struct WatchFlag {
    /// `tenants/deployments`, `*/vibeinstances`, …
    pub name: String,
    /// `true` once the watch's initial list is in its cache; never goes back to `false`.
    pub synced: watch::Receiver<bool>,
}

impl WatchFlag {
    /// Whether the initial list is in the cache.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// The same flag under `<scope>/<name>`.
    pub fn within(&self, scope: &str) -> Self {
        Self {
            name: format!("{scope}/{}", self.name),
            synced: self.synced.clone(),
        }
    }
}

/// The names of the watches whose initial list is not in their cache yet, in order.
pub fn unsynced(flags: &[WatchFlag]) -> Vec<String> {
    flags
        .iter()
        .filter(|f| !f.is_synced())
        .map(|f| f.name.clone())
        .collect()
}

/// Waits until every flag is set; any number of tasks may wait at once. Returns `false` when
/// a watch stopped (shutdown) before its initial list completed.
pub async fn wait_all(flags: &[WatchFlag]) -> bool {
    for flag in flags {
        let mut synced = flag.synced.clone();
        if synced.wait_for(|s| *s).await.is_err() {
            return false;
        }
    }
    true
}

/// Logs "watch caches synced" once every watch of `flags` (instances and children of every
/// scope) is synced — the operator's start-up message; `/readyz` reads the flags directly.
pub async fn log_when_synced(flags: Vec<WatchFlag>) {
    if wait_all(&flags).await {
        tracing::info!(watches = flags.len(), "watch caches synced");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{VibeInstance, VibeInstanceSpec};
    use crate::state::{InstanceIndex, ScopeCache};
    use kube::runtime::WatchStreamExt;
    use kube::runtime::reflector;
    use std::pin::pin;
    use std::time::Duration;

    fn instance(name: &str) -> VibeInstance {
        let mut i = VibeInstance::new(name, VibeInstanceSpec::default());
        i.metadata.namespace = Some("tenants".into());
        i
    }

    /// Issue 14: the operator's readiness waiter polls first, then the controller's runner
    /// waits on the same store (as kube's Controller does); both must be woken by the initial
    /// list. Each waiter is its own task, polled only when woken, as in the operator. With
    /// readiness built on `Store::wait_until_ready` the first waiter was never woken.
    #[tokio::test]
    async fn readiness_flips_even_when_the_controller_waits_on_the_store_too() {
        let (store, writer) = reflector::store::<VibeInstance>();
        let (tx, rx) = flag();
        let index = InstanceIndex::new(vec![ScopeCache {
            store: store.clone(),
            synced: rx.clone(),
        }]);
        let flags = vec![WatchFlag {
            name: "tenants/vibeinstances".into(),
            synced: rx,
        }];
        let (events_tx, events_rx) = futures::channel::mpsc::unbounded();
        let mut stream = pin!(mark_synced(events_rx.reflect(writer), tx));

        // The operator's waiter polls first, the controller's second (the order on a real
        // API server, where the initial list takes a while).
        let operator = tokio::spawn(async move { wait_all(&flags).await });
        tokio::task::yield_now().await;
        let controller = tokio::spawn({
            let store = store.clone();
            async move { store.wait_until_ready().await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert!(!operator.is_finished() && !controller.is_finished());
        assert!(!index.is_synced());

        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(instance("alice")),
            watcher::Event::InitApply(instance("bob")),
        ] {
            events_tx.unbounded_send(Ok(event)).unwrap();
            stream.next().await.unwrap().unwrap();
        }
        assert!(!index.is_synced(), "not synced before InitDone");
        events_tx
            .unbounded_send(Ok(watcher::Event::InitDone))
            .unwrap();
        stream.next().await.unwrap().unwrap();

        assert!(index.is_synced());
        assert_eq!(index.all().len(), 2, "the store holds the list when ready");
        let wait = Duration::from_secs(5);
        let controller = tokio::time::timeout(wait, controller).await;
        assert!(
            controller
                .expect("the controller's waiter was woken")
                .unwrap()
        );
        let operator = tokio::time::timeout(wait, operator).await;
        assert!(operator.expect("the operator's waiter was woken").unwrap());
    }

    /// Many watches: ready only once each has listed, the ones still listing named in order;
    /// a watch that stops before its list completes reports not synced instead of hanging.
    #[tokio::test]
    async fn every_watch_must_list_and_a_stopped_watch_is_not_synced() {
        let (a_tx, a_rx) = flag();
        let (b_tx, b_rx) = flag();
        let index = InstanceIndex::new(vec![ScopeCache {
            store: reflector::store::<VibeInstance>().0,
            synced: a_rx.clone(),
        }]);
        let flags = vec![
            WatchFlag {
                name: "vibeinstances".into(),
                synced: a_rx,
            }
            .within("tenants"),
            WatchFlag {
                name: "deployments".into(),
                synced: b_rx,
            }
            .within("*"),
        ];
        assert_eq!(unsynced(&flags), ["tenants/vibeinstances", "*/deployments"]);
        let waiter = tokio::spawn({
            let flags = flags.clone();
            async move { wait_all(&flags).await }
        });
        a_tx.send_replace(true);
        tokio::task::yield_now().await;
        assert!(index.is_synced(), "the instance scope listed");
        assert_eq!(unsynced(&flags), ["*/deployments"]);
        assert!(!waiter.is_finished());
        drop(b_tx);
        assert!(!waiter.await.unwrap(), "a stopped watch never synced");
        assert_eq!(unsynced(&flags), ["*/deployments"]);
        assert!(wait_all(&flags[..1]).await);
        assert!(
            InstanceIndex::default().is_synced() && wait_all(&[]).await,
            "no watch: nothing to wait for"
        );
    }
}
