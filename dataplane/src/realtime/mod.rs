//! Realtime: documents pushed to WebSocket clients as they change in CouchDB.
//!
//! - [`hub`]: one `_changes` reader per database, shared by all sockets through a
//!   broadcast channel; started on first use, stopped when idle, resumes after errors.
//! - [`event`]: classification of change rows into pushed events (design documents and
//!   documents without a collection are never pushed; deletions carry the tombstone rev).
//! - [`replay`]: catch-up from a client's last sequence (`since`).
//! - [`seq`]: opaque sequence values.

pub mod event;
pub mod hub;
pub mod replay;
pub mod seq;

pub use event::{Event, EventKind};
pub use hub::{ChangesHub, FeedReceiver, HubSettings, Lagged};
pub use replay::{ReplayFence, ReplayPage, replay_page};
pub use seq::Seq;
