//! Realtime: documents pushed to WebSocket clients as they change in CouchDB.
//!
//! - [`hub`]: one `_changes` reader per database, shared by all sockets through a
//!   broadcast channel; started on first use, stopped when idle, resumes after errors.
//! - [`event`]: classification of change rows into pushed events (design documents and
//!   documents without a collection are never pushed; deletions carry the tombstone rev).
//! - [`replay`]: catch-up from a client's last sequence (`since`).
//! - [`seq`]: opaque sequence values.
//! - [`protocol`], [`session`], [`routes`], [`settings`]: the `GET /ws` endpoint.

pub mod event;
pub mod hub;
pub mod protocol;
pub mod replay;
pub mod routes;
pub mod seq;
pub mod session;
pub mod settings;

pub use event::{Event, EventKind};
pub use hub::{ChangesHub, FeedReceiver, HubSettings, Lagged};
pub use replay::{ReplayFence, ReplayPage, replay_page};
pub use routes::routes_with;
pub use seq::Seq;
pub use settings::{RealtimeArgs, RealtimeSettings};
