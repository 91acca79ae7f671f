//! Shared application state: one [`AppState`] (a cheap `Arc` clone) per process.
//!
//! Features reach CouchDB through [`StateInner::couch`], the owner's data database through
//! [`AppState::data_db`], the system database through [`AppState::system_db`], grants
//! through [`StateInner::grants`] and tokens through [`StateInner::tokens`].
//!
//! Adding feature state (an S3 client, a realtime hub): add one field to [`StateInner`]
//! and initialise it in [`AppState::new`]. A feature that talks to a backing service
//! should also push a [`ReadinessProbe`] so `/ready` reports it.

use std::collections::HashSet;
use std::ops::Deref;
use std::sync::{Arc, Mutex, RwLock};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::OnceCell;
use vibe_identity::Did;

use crate::apps::GrantsCache;
use crate::auth::tokens::TokenService;
use crate::config::Config;
use crate::couch::{CouchClient, CouchError, Database};
use crate::error::{ApiError, ApiResult};

/// A check `/ready` runs; `Err` carries a short, secret-free reason.
pub trait ReadinessProbe: Send + Sync {
    /// What is checked, e.g. `couchdb` or `s3`.
    fn name(&self) -> &'static str;
    /// Run the check.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The process-wide state handed to every handler. Clone freely.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

/// What [`AppState`] holds.
pub struct StateInner {
    /// The validated configuration.
    pub config: Config,
    /// Pooled CouchDB client.
    pub couch: CouchClient,
    /// Token minting and verification, refresh-token families.
    pub tokens: TokenService,
    /// In-memory app registrations and grants.
    pub grants: GrantsCache,
    /// In-memory device registrations (sync credentials).
    pub devices: crate::devices::DeviceRegistry,
    /// When each app and device was last seen ([`crate::last_seen`]).
    pub last_seen: crate::last_seen::LastSeen,
    /// Probes `/ready` runs besides CouchDB.
    pub readiness: Vec<Arc<dyn ReadinessProbe>>,
    /// Blob storage; `None` when no object store is configured.
    pub blobs: Option<Arc<crate::blobs::Blobs>>,
    /// Graceful shutdown of WebSockets and streamed sync feeds.
    pub shutdown: crate::shutdown::Shutdown,
    /// Prometheus metrics, shared with the CouchDB and S3 clients.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Per-app admission of document, blob and sync requests (`query.app_*`).
    pub admission: crate::admission::Admission,
    /// Start-up of the system database ([`crate::startup::spawn`]).
    pub startup: crate::startup::Startup,
    /// Writes wait for the restore from a backup ([`crate::export::restore`]).
    pub restore_gate: crate::export::restore::RestoreGate,
    owner: RwLock<Option<Owner>>,
    indexes: Mutex<HashSet<String>>,
    data_ready: OnceCell<Database>,
}

impl Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.inner
    }
}

/// The owner's DID with its text, encoded once when the owner became known.
struct Owner {
    did: Did,
    text: Box<str>,
}

impl Owner {
    fn new(did: Did) -> Self {
        Self {
            text: did.to_string().into_boxed_str(),
            did,
        }
    }
}

/// Name of the Mango index on `collection` and `_id` in the data database.
pub const COLLECTION_INDEX: &str = "idx-collection-id";
/// Design document holding the data plane's indexes.
pub const INDEX_DESIGN_DOC: &str = "vibe-indexes";

impl AppState {
    /// Build the state. No I/O: start-up ([`crate::startup::spawn`]) contacts CouchDB in the
    /// background and retries, so the service starts, and reports not-ready, while CouchDB is
    /// down.
    pub fn new(config: Config) -> Result<Self, CouchError> {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let couch = CouchClient::new(config.couch.clone())?.with_metrics(metrics.clone());
        let tokens = TokenService::new(&config);
        let owner = RwLock::new(config.owner.map(Owner::new));
        let blobs = config.s3.as_ref().map(|s3| {
            let store = crate::blobs::BlobStore::with_metrics(s3, Some(metrics.clone()));
            Arc::new(crate::blobs::Blobs::with_store(store, config.blobs.clone()))
        });
        Ok(Self {
            inner: Arc::new(StateInner {
                couch,
                tokens,
                grants: GrantsCache::default(),
                devices: Default::default(),
                last_seen: Default::default(),
                readiness: blobs.iter().map(|b| b.probe()).collect(),
                blobs,
                shutdown: Default::default(),
                metrics,
                admission: crate::admission::Admission::new(&config.query),
                owner,
                indexes: Mutex::new(HashSet::new()),
                startup: Default::default(),
                restore_gate: crate::export::restore::RestoreGate::new(config.restore.is_some()),
                data_ready: OnceCell::new(),
                config,
            }),
        })
    }

    /// The current owner, if the instance has one.
    pub fn owner(&self) -> Option<Did> {
        let owner = self.owner.read().unwrap_or_else(|e| e.into_inner());
        owner.as_ref().map(|o| o.did)
    }

    /// Whether `did` is the current owner's DID as text (a token's subject), compared without
    /// encoding the owner's key again on every request.
    pub fn is_owner_text(&self, did: &str) -> bool {
        let owner = self.owner.read().unwrap_or_else(|e| e.into_inner());
        owner.as_ref().is_some_and(|o| *o.text == *did)
    }

    pub(crate) fn set_owner(&self, did: Did) {
        *self.owner.write().unwrap_or_else(|e| e.into_inner()) = Some(Owner::new(did));
    }

    /// The system database, once start-up ([`crate::startup`]) has created and loaded it
    /// (claim state, owner, grants, devices, revoked families). While it has not, asks for an
    /// attempt now and waits for it: 503 while CouchDB is down.
    pub async fn system_db(&self) -> ApiResult<Database> {
        self.startup.wait_ready().await
    }

    /// The owner's data database, created with its index on first use (the owner can appear
    /// at any time, through a claim, so this cannot be a start-up step). 503 while CouchDB is
    /// down; 503 `This instance has no owner yet.` before a claim.
    pub async fn data_db(&self) -> ApiResult<Database> {
        self.system_db().await?;
        let owner = self
            .owner()
            .ok_or_else(|| ApiError::Unavailable("This instance has no owner yet.".into()))?;
        let db = self
            .data_ready
            .get_or_try_init(|| async {
                let db = self.couch.db(&self.config.data_db_name(&owner));
                db.ensure_exists().await?;
                db.create_index(COLLECTION_INDEX, INDEX_DESIGN_DOC, &["collection", "_id"])
                    .await?;
                tracing::info!(db = db.name(), "data database ready");
                Ok::<Database, ApiError>(db)
            })
            .await?;
        Ok(db.clone())
    }

    /// Whether the Mango index `name` was created by this process.
    pub(crate) fn has_index(&self, name: &str) -> bool {
        self.indexes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    pub(crate) fn remember_index(&self, name: String) {
        self.indexes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name);
    }

    /// Check CouchDB and every registered probe; returns the names of what is down.
    pub async fn readiness_failures(&self) -> Vec<(String, String)> {
        let mut down = Vec::new();
        if let Err(e) = self.couch.ping().await {
            tracing::debug!(error = %e, "readiness: couchdb down");
            down.push(("couchdb".to_string(), "not reachable".to_string()));
        } else if let Err(e) = self.system_db().await {
            down.push(("couchdb".to_string(), e.to_string()));
        }
        for probe in &self.readiness {
            if let Err(reason) = probe.check().await {
                down.push((probe.name().to_string(), reason));
            }
        }
        down
    }
}

/// Current UNIX time in seconds.
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Read a string field of a JSON document.
pub(crate) fn str_field<'a>(doc: &'a Value, name: &str) -> Option<&'a str> {
    doc.get(name).and_then(Value::as_str)
}
