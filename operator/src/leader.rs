//! Leader election on a `coordination.k8s.io/v1` Lease (kube 5 has none built in).
//!
//! Every replica watches and serves HTTP; only the Lease holder reconciles (the reconciler checks
//! [`Leadership::is_leader`] before writing). The holder renews every few seconds; a replica
//! takes over a Lease whose `renewTime + leaseDurationSeconds` has passed. Updates go through
//! `replace` with the read `resourceVersion`, so two replicas racing for one Lease cannot both
//! win: the loser gets 409 Conflict. A leader that cannot renew within the renew deadline stops
//! reconciling before its Lease can expire, so two replicas never both write. On shutdown the
//! holder releases the Lease so a standby takes over at once.

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Lease timing and identity.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (and a standby retries).
    pub retry_period: Duration,
    /// A leader that has not renewed for this long steps down (must be < `lease_duration`).
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    /// Defaults used by client-go's leader election: 15 s lease, 10 s deadline, 2 s retry.
    pub fn new(name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// Whether this replica may write. Cheap to clone and to check.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    /// Keeps the channel open for a fixed leadership ([`Leadership::always`]).
    _fixed: Option<std::sync::Arc<watch::Sender<bool>>>,
}

impl Leadership {
    /// A leadership flag and its sender.
    pub fn channel(initial: bool) -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(initial);
        (tx, Self { rx, _fixed: None })
    }

    /// Always leader (leader election disabled, tests).
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Self {
            rx,
            _fixed: Some(std::sync::Arc::new(tx)),
        }
    }

    /// Whether this replica currently holds the Lease.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// Yields once every time this replica becomes leader (to reconcile everything at once).
    pub fn acquired(&self) -> impl Stream<Item = ()> + Send + 'static {
        let rx = self.rx.clone();
        futures::stream::unfold((rx, false), |(mut rx, mut was)| async move {
            loop {
                let now = *rx.borrow_and_update();
                if now && !was {
                    return Some(((), (rx, true)));
                }
                was = now;
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .boxed()
    }
}

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Takeover,
    /// Someone else holds a valid Lease.
    Follow {
        /// Current holder.
        holder: String,
    },
}

/// Pure decision from the Lease as read.
pub fn decide(lease: Option<&Lease>, me: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Takeover;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    match spec.renew_time.or(spec.acquire_time) {
        Some(MicroTime(renewed)) if renewed + duration > now => Decision::Follow { holder },
        _ => Decision::Takeover,
    }
}

fn held_spec(
    config: &LeaseConfig,
    previous: Option<&LeaseSpec>,
    now: Timestamp,
    takeover: bool,
) -> LeaseSpec {
    let previous = previous.cloned().unwrap_or_default();
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.lease_duration.as_secs() as i32),
        acquire_time: if takeover {
            Some(MicroTime(now))
        } else {
            previous.acquire_time.or(Some(MicroTime(now)))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(previous.lease_transitions.unwrap_or(0) + i32::from(takeover)),
        ..previous
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// One election round: read the Lease and create, renew or take it over. `Ok(true)` when we
/// hold it afterwards.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaseConfig,
    now: Timestamp,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&config.name).await?;
    let result = match decide(current.as_ref(), &config.identity, now) {
        Decision::Follow { .. } => return Ok(false),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(held_spec(config, None, now, true)),
            };
            api.create(&PostParams::default(), &lease).await
        }
        decision @ (Decision::Renew | Decision::Takeover) => {
            let mut lease = current.expect("decided on an existing lease");
            lease.spec = Some(held_spec(
                config,
                lease.spec.as_ref(),
                now,
                decision == Decision::Takeover,
            ));
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if we hold it (graceful shutdown).
pub async fn release(api: &Api<Lease>, config: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs the election until `shutdown`, publishing leadership on `tx`; releases the Lease at the
/// end.
pub async fn run(
    api: Api<Lease>,
    config: LeaseConfig,
    tx: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        let outcome = try_acquire_or_renew(&api, &config, Timestamp::now()).await;
        let leading = match outcome {
            Ok(true) => {
                last_renewal = Some(tokio::time::Instant::now());
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, lease = %config.name, "leader election round failed");
                // Keep leading only while the last renewal is within the deadline.
                last_renewal.is_some_and(|t| t.elapsed() < config.renew_deadline) && *tx.borrow()
            }
        };
        if leading != *tx.borrow() {
            tracing::info!(identity = %config.identity, leading, "leadership changed");
        }
        tx.send_replace(leading);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(config.retry_period) => {}
        }
    }
    if *tx.borrow() {
        tx.send_replace(false);
        if let Err(e) = release(&api, &config).await {
            tracing::warn!(error = %e, "could not release the leader Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: Timestamp, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(secs),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let recent = now - SignedDuration::from_secs(5);
        let old = now - SignedDuration::from_secs(20);
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), old, 15)), "a", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), recent, 15)), "a", now),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), old, 15)), "a", now),
            Decision::Takeover
        );
        assert_eq!(
            decide(Some(&lease(None, recent, 15)), "a", now),
            Decision::Takeover
        );
        assert_eq!(
            decide(Some(&lease(Some(""), recent, 15)), "a", now),
            Decision::Takeover
        );
    }

    #[test]
    fn takeover_counts_transitions() {
        let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let config = LeaseConfig::new("l", "me");
        let prev = LeaseSpec {
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        };
        let spec = held_spec(&config, Some(&prev), now, true);
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        let renewed = held_spec(&config, Some(&spec), now, false);
        assert_eq!(renewed.lease_transitions, Some(4));
    }

    #[tokio::test]
    async fn acquired_fires_on_each_gain() {
        let (tx, l) = Leadership::channel(false);
        let mut s = l.acquired();
        tx.send_replace(true);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), s.next())
                .await
                .unwrap()
                .is_some()
        );
        tx.send_replace(false);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), s.next())
                .await
                .is_err(),
            "losing is not acquiring"
        );
        tx.send_replace(true);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), s.next())
                .await
                .unwrap()
                .is_some()
        );
    }

    /// Answers one request of the mock API server with `status` and `body`, returning the
    /// method and path it saw.
    async fn answer(
        handle: &mut tower_test::mock::Handle<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >,
        status: u16,
        body: serde_json::Value,
    ) -> (String, String, serde_json::Value) {
        let (request, send) = handle.next_request().await.expect("a request");
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let sent = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        send.send_response(
            http::Response::builder()
                .status(status)
                .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
        (method, path, sent)
    }

    fn not_found() -> serde_json::Value {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
    }

    #[tokio::test]
    async fn election_rounds_against_the_api() {
        let (service, mut handle) = tower_test::mock::pair();
        let client = kube::Client::new(service, "default");
        let api: Api<Lease> = Api::namespaced(client, "vibe-system");
        let config = LeaseConfig::new("vibe-operator-leader", "pod-a");
        let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        const PATH: &str =
            "/apis/coordination.k8s.io/v1/namespaces/vibe-system/leases/vibe-operator-leader";

        // No Lease: create it, held by us.
        let round = tokio::spawn({
            let (api, config) = (api.clone(), config.clone());
            async move { try_acquire_or_renew(&api, &config, now).await }
        });
        assert_eq!(answer(&mut handle, 404, not_found()).await.1, PATH);
        let (method, path, sent) = answer(&mut handle, 201, serde_json::json!({})).await;
        assert_eq!(
            (method.as_str(), path.as_str()),
            (
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/vibe-system/leases"
            )
        );
        assert_eq!(sent["spec"]["holderIdentity"], "pod-a");
        assert!(
            round.await.unwrap().unwrap(),
            "leader after creating the Lease"
        );

        // Another replica holds a fresh Lease: follow, without writing.
        let held = lease(Some("pod-b"), now, 15);
        let round = tokio::spawn({
            let (api, config) = (api.clone(), config.clone());
            async move { try_acquire_or_renew(&api, &config, now).await }
        });
        answer(&mut handle, 200, serde_json::to_value(&held).unwrap()).await;
        assert!(!round.await.unwrap().unwrap());

        // Expired: take over with replace; a concurrent winner makes it a 409 → follower.
        let later = now + SignedDuration::from_secs(60);
        let round = tokio::spawn({
            let (api, config) = (api.clone(), config.clone());
            async move { try_acquire_or_renew(&api, &config, later).await }
        });
        answer(&mut handle, 200, serde_json::to_value(&held).unwrap()).await;
        let conflict = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409});
        let (method, path, sent) = answer(&mut handle, 409, conflict).await;
        assert_eq!((method.as_str(), path.as_str()), ("PUT", PATH));
        assert_eq!(sent["spec"]["holderIdentity"], "pod-a");
        assert!(
            !round.await.unwrap().unwrap(),
            "losing the race means following"
        );
    }
}
