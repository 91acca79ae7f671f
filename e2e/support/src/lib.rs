//! Real servers for tests: a CouchDB-compatible server (pouchdb-server) and an S3-compatible
//! server that checks SigV4 signatures (s3s-fs), each on a free port of 127.0.0.1 in its own
//! temporary folder.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vibe_test_support::SupportError> {
//! use vibe_test_support::{CouchServer, S3Server};
//!
//! let mut couch = CouchServer::start().await?; // couch.url, couch.user, couch.password
//! couch.create_db("notes").await?;
//! couch.restart().await?; // same port, same data: "CouchDB restarted mid-test"
//!
//! let s3 = S3Server::start().await?; // s3.endpoint, s3.access_key, s3.secret_key, s3.region
//! s3.create_bucket("blobs").await?;
//! # Ok(()) }
//! ```
//!
//! With `VIBE_TEST_COUCHDB_URL`, `VIBE_TEST_COUCHDB_USER` and `VIBE_TEST_COUCHDB_PASSWORD` set,
//! [`CouchServer::start`] uses that existing CouchDB instead: each value gets databases under a
//! prefix of its own ([`CouchServer::db_prefix`]) and deletes them when dropped; tests that stop
//! or restart CouchDB skip themselves with [`skip_with_external_couchdb`].
//!
//! The servers must be installed first: `deploy/local/install-servers` puts them under
//! `$HOME/.cache/vibe-cloud/tools` (or `$VIBE_TOOLS_DIR`); `VIBE_POUCHDB_SERVER_BIN` and
//! `VIBE_S3S_FS_BIN` point at other copies. A server dies with the value that owns it, and with
//! the test process even when that is killed.

mod binaries;
mod couch;
mod error;
mod external;
mod ports;
mod process;
mod s3;

pub use binaries::{
    POUCHDB_SERVER_BIN_ENV, S3S_FS_BIN_ENV, TOOLS_DIR_ENV, pouchdb_client_modules, tools_dir,
};
pub use couch::CouchServer;
pub use error::SupportError;
pub use external::{
    COUCHDB_PASSWORD_ENV, COUCHDB_URL_ENV, COUCHDB_USER_ENV, skip_with_external_couchdb,
    uses_external_couchdb,
};
pub use s3::S3Server;

/// A random lowercase hex string of `bytes * 2` characters.
fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}
