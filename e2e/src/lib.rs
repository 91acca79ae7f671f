//! The Vibe Cloud client, as a library and as the `vibe` command line.
//!
//! - [`client`]: typed HTTP calls to one instance (auth, apps and grants, documents,
//!   blobs) with self-refreshing owner sessions;
//! - [`watch`]: the realtime WebSocket, resuming after disconnects;
//! - [`sync`]: two-way sync of a folder of JSON files over the instance's CouchDB
//!   replication endpoint;
//! - [`keyfile`], [`session`]: the key and the per-instance sessions on disk;
//! - [`stack`]: the built data plane plus real test servers, for the suite and benchmarks;
//! - [`bench`]: the `vibe-bench` benchmark harness;
//! - [`cli`]: the `vibe` command (`src/bin/vibe.rs` only calls [`cli::main`]).
//!
//! The end-to-end suite (`e2e/tests/`) drives real instances through this same library
//! and through the built `vibe` binary.

pub mod bench;
pub mod cli;
pub mod client;
pub mod error;
pub mod keyfile;
pub mod session;
pub mod stack;
pub mod sync;
pub mod watch;

pub use client::{Client, Instance, TokenSource, Tokens};
pub use error::{ClientError, Result};
