//! Start-up of a data plane: the steps that make its system database usable, run once in the
//! background by [`spawn`] and retried until CouchDB answers.
//!
//! The steps, in order, each with its own [`StartupError`]:
//! 1. create (or open) the system database and note its update sequence;
//! 2. load the owner who claimed the instance, or store the configured claim code's hash;
//! 3. load app registrations and grants;
//! 4. load device registrations;
//! 5. load revoked token families;
//! 6. load when apps and devices were last seen (best effort: a failure is only logged);
//!
//! then follow the system database from the noted sequence ([`crate::system_feed`]), so that
//! whatever changed while the caches were loading is heard.
//!
//! Handlers reach the system database through [`crate::AppState::system_db`], which waits for
//! start-up ([`Startup::wait_ready`]) instead of doing any of this work itself. While CouchDB is
//! down a request asks for an immediate retry and answers 503 when that attempt fails too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::AppState;
use crate::couch::{CouchError, Database};
use crate::error::{ApiError, ApiResult, DATABASE_UNAVAILABLE};

/// How long a request waits for a start-up attempt it asked for.
pub const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// First pause between failed attempts; doubled after each failure up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest pause between failed attempts when no request asks for one sooner.
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// Shortest pause between attempts, even when requests keep asking; while CouchDB cannot be
/// reached, requests in that pause are answered with the last attempt's 503 at once.
pub const RETRY_FLOOR: Duration = Duration::from_millis(50);

/// The message of a 503 answered before the first start-up attempt finished.
pub const STARTING: &str = "The service is starting; retry in a few seconds.";

/// A start-up step that failed. Shown in logs; clients see a 503 (store unreachable) or a 500.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Creating or opening the system database failed.
    #[error("start-up step 'system database' failed: {0}")]
    SystemDatabase(#[source] CouchError),
    /// Loading the claimed owner or storing the claim code's hash failed.
    #[error("start-up step 'claim' failed: {0}")]
    Claim(#[source] ApiError),
    /// Loading app registrations and grants failed.
    #[error("start-up step 'grants' failed: {0}")]
    Grants(#[source] CouchError),
    /// Loading device registrations failed.
    #[error("start-up step 'devices' failed: {0}")]
    Devices(#[source] CouchError),
    /// Loading revoked token families failed.
    #[error("start-up step 'revocations' failed: {0}")]
    Revocations(#[source] CouchError),
}

impl StartupError {
    /// The name of the step that failed, as logged.
    pub fn step(&self) -> &'static str {
        match self {
            StartupError::SystemDatabase(_) => "system database",
            StartupError::Claim(_) => "claim",
            StartupError::Grants(_) => "grants",
            StartupError::Devices(_) => "devices",
            StartupError::Revocations(_) => "revocations",
        }
    }

    /// Whether the step failed because CouchDB could not be reached (a 503, and worth
    /// retrying soon) rather than because of what it found (a 500 until someone acts).
    pub fn store_unreachable(&self) -> bool {
        match self {
            StartupError::SystemDatabase(e)
            | StartupError::Grants(e)
            | StartupError::Devices(e)
            | StartupError::Revocations(e) => matches!(e, CouchError::Unavailable(_)),
            StartupError::Claim(e) => matches!(e, ApiError::Unavailable(_)),
        }
    }
}

/// Where start-up stands.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// No attempt has finished yet.
    Pending,
    /// The last attempt failed at `step`.
    Failed {
        /// The step that failed ([`StartupError::step`]).
        step: &'static str,
        /// Whether CouchDB could not be reached ([`StartupError::store_unreachable`]).
        store_unreachable: bool,
    },
    /// The system database is loaded and followed.
    Ready(Database),
}

/// Start-up's progress: attempts finished so far and the last outcome.
#[derive(Clone, Debug)]
pub struct Status {
    /// Attempts that have finished (failed or succeeded).
    pub attempts: u64,
    /// The outcome of the last attempt.
    pub outcome: Outcome,
    /// When the last attempt finished (`None` before the first).
    pub finished_at: Option<Instant>,
}

/// Start-up state shared by the background task and the handlers (one per [`AppState`]).
pub struct Startup {
    status: watch::Sender<Status>,
    retry_now: Notify,
    spawned: AtomicBool,
}

impl Default for Startup {
    fn default() -> Self {
        Self {
            status: watch::Sender::new(Status {
                attempts: 0,
                outcome: Outcome::Pending,
                finished_at: None,
            }),
            retry_now: Notify::new(),
            spawned: AtomicBool::new(false),
        }
    }
}

impl Startup {
    /// Where start-up stands now.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The system database once start-up is done. Before that, asks for an attempt now and
    /// waits for it (at most [`REQUEST_WAIT`]): 503 [`DATABASE_UNAVAILABLE`] when CouchDB
    /// cannot be reached, 500 when a step failed for another reason (logged by the task),
    /// 503 [`STARTING`] when no attempt finished in time or [`spawn`] was never called.
    pub async fn wait_ready(&self) -> ApiResult<Database> {
        let mut status = self.status.subscribe();
        let seen = {
            let now = status.borrow_and_update();
            if let Outcome::Ready(db) = &now.outcome {
                return Ok(db.clone());
            }
            // A flood while CouchDB is down costs one attempt per RETRY_FLOOR, not one each,
            // and is answered at once. Any other failure waits for a new attempt (still at
            // most one per RETRY_FLOOR), so a repair is seen by the very next request.
            let unreachable = matches!(
                now.outcome,
                Outcome::Failed {
                    store_unreachable: true,
                    ..
                }
            );
            let fresh = now.finished_at.is_some_and(|at| at.elapsed() < RETRY_FLOOR);
            if unreachable && fresh {
                self.retry_now.notify_one();
                return answer(&now.outcome);
            }
            now.attempts
        };
        if !self.spawned.load(Ordering::Acquire) {
            tracing::error!("a request needs the system database, but start-up was never spawned");
            return Err(ApiError::Unavailable(STARTING.into()));
        }
        self.retry_now.notify_one();
        let next = tokio::time::timeout(
            REQUEST_WAIT,
            status.wait_for(|s| s.attempts > seen || matches!(s.outcome, Outcome::Ready(_))),
        )
        .await;
        match next {
            Ok(Ok(now)) => answer(&now.outcome),
            // Timed out, or the task is gone (the runtime is shutting down).
            _ => Err(ApiError::Unavailable(STARTING.into())),
        }
    }

    fn finish_attempt(&self, outcome: Outcome) {
        self.status.send_modify(|status| {
            status.attempts += 1;
            status.outcome = outcome;
            status.finished_at = Some(Instant::now());
        });
    }
}

/// What a request gets for a start-up outcome.
fn answer(outcome: &Outcome) -> ApiResult<Database> {
    match outcome {
        Outcome::Ready(db) => Ok(db.clone()),
        Outcome::Failed {
            store_unreachable: true,
            ..
        } => Err(ApiError::Unavailable(DATABASE_UNAVAILABLE.into())),
        Outcome::Failed { .. } => Err(ApiError::Internal),
        Outcome::Pending => Err(ApiError::Unavailable(STARTING.into())),
    }
}

/// Start the data plane's start-up in the background: the steps of this module, retried with
/// back-off ([`RETRY_MIN`] doubling to [`RETRY_MAX`], sooner when a request asks) until they
/// all succeed. Call once per [`AppState`], from a Tokio runtime; later calls do nothing and
/// return `None`.
pub fn spawn(state: &AppState) -> Option<JoinHandle<()>> {
    if state.startup.spawned.swap(true, Ordering::AcqRel) {
        return None;
    }
    Some(tokio::spawn(run(state.clone())))
}

async fn run(state: AppState) {
    let mut pause = RETRY_MIN;
    loop {
        match prepare_system(&state).await {
            Ok((db, since)) => {
                tokio::spawn(crate::system_feed::follow(state.clone(), db.clone(), since));
                tokio::spawn(crate::last_seen::write_forever(state.clone(), db.clone()));
                tokio::spawn(crate::revocations::sweep_forever(state.clone(), db.clone()));
                crate::export::restore::spawn_publish(state.clone());
                tracing::info!(db = db.name(), "system database ready");
                state.startup.finish_attempt(Outcome::Ready(db));
                return;
            }
            Err(e) => {
                if e.store_unreachable() {
                    tracing::warn!(error = %e, retry_in = ?pause, "CouchDB not reachable yet; retrying");
                } else {
                    tracing::error!(error = %e, retry_in = ?pause, "start-up failed; retrying");
                }
                state.startup.finish_attempt(Outcome::Failed {
                    step: e.step(),
                    store_unreachable: e.store_unreachable(),
                });
            }
        }
        let failed_at = Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = async {
                state.startup.retry_now.notified().await;
                tokio::time::sleep_until(failed_at + RETRY_FLOOR).await;
            } => {}
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// Run every step once; the system database and the update sequence noted before loading.
pub async fn prepare_system(state: &AppState) -> Result<(Database, Value), StartupError> {
    let db = state.couch.db(&state.config.system_db_name());
    db.ensure_exists()
        .await
        .map_err(StartupError::SystemDatabase)?;
    // Noted before loading: whatever changes meanwhile is followed.
    let since = db
        .info()
        .await
        .map_err(StartupError::SystemDatabase)?
        .get("update_seq")
        .cloned()
        .unwrap_or(Value::from(0));
    crate::auth::claim::load_or_seed(state, &db)
        .await
        .map_err(StartupError::Claim)?;
    state.grants.load(&db).await.map_err(StartupError::Grants)?;
    state
        .devices
        .load(&db)
        .await
        .map_err(StartupError::Devices)?;
    crate::revocations::load(&state.tokens, &db)
        .await
        .map_err(StartupError::Revocations)?;
    // Only shown to the owner: a failure leaves the times to be learnt anew.
    if let Err(e) = state.last_seen.load(&db).await {
        tracing::warn!(error = %e, "last-seen times not loaded");
    }
    Ok((db, since))
}
