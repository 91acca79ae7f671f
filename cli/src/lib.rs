//! The Vibe Cloud client, as a library and as the `vibe` command line.
//!
//! - [`client`]: typed HTTP calls to one instance (auth, apps and grants, documents,
//!   blobs) with self-refreshing owner sessions;
//! - [`watch`]: the realtime WebSocket, resuming after disconnects;
//! - [`sync`]: two-way sync of a folder of JSON files over the instance's CouchDB
//!   replication endpoint;
//! - [`archive`]: export archives on disk, decrypted with the owner's key;
//! - [`keyfile`], [`session`]: the key and the per-instance sessions on disk;
//! - [`cmd`]: the `vibe` command (`src/bin/vibe.rs` only calls [`cmd::main`]).
//!
//! This crate talks to an instance over HTTP only; the end-to-end suite and `vibe-bench`
//! (crate `vibe-e2e`) drive real instances through this same library and the built `vibe`
//! binary.

pub mod archive;
pub mod client;
pub mod cmd;
pub mod error;
pub mod keyfile;
pub mod session;
pub mod sync;
pub mod watch;

pub use client::{Client, Instance, TokenSource, Tokens};
pub use error::{ClientError, Result};
