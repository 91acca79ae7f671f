//! Blob storage on S3-compatible object stores.
//!
//! The data plane never proxies downloads: clients receive short-lived presigned URLs and talk
//! to the object store directly. Uploads go either through a presigned `PUT` that binds the
//! declared content type and length, or — for clients that cannot reach the store — through a
//! streaming upload that the data plane forwards to S3 in bounded-memory multipart chunks.
//!
//! Module map:
//! - [`settings`]: blob limits and lifetimes (the S3 connection is in [`crate::config::S3Config`]).
//! - [`key`]: the server-generated object key scheme and its validation.
//! - [`store`]: the S3 client (presigning, HEAD, delete with retry, listing).
//! - [`stream`]: streaming multipart upload with bounded memory.
//! - [`quota`]: per-instance byte accounting (stored objects plus outstanding reservations).
//! - [`sweep`]: reclaiming uploads that were never finalised.

pub mod error;
pub mod key;
pub mod quota;
pub mod settings;
pub mod store;
pub mod stream;
pub mod sweep;

pub use error::BlobError;
pub use key::{KeyScheme, ObjectKey};
pub use quota::QuotaLedger;
pub use settings::{BlobArgs, BlobSettings};
pub use store::BlobStore;
