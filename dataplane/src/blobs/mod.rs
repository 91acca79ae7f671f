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
//! - [`presign`]: upload URLs of path-style buckets signed without the SDK's orchestrator.
//! - [`stream`]: streaming multipart upload with bounded memory.
//! - [`quota`]: per-instance byte accounting (stored objects plus outstanding reservations).
//! - [`sweep`]: reclaiming uploads that were never finalised.
//! - [`metadata`]: metadata documents (`blobs/<uuid>` in the owner's database).
//! - [`service`]: the feature state in [`crate::state::StateInner::blobs`], the periodic
//!   sweep and the readiness probe; `routes`: the HTTP API.
//!
//! Differences from the original API, on purpose: metadata documents are in the `blobs`
//! collection (`collection: "blobs"`, id `blobs/<uuid>`) and name the user collection in
//! `collectionName`, so they can be stored, read and synced like any document (the
//! original's could not be written at all); `size` is required when asking for an upload URL
//! and is bound into the signature; finalise verifies the stored object; responses carry
//! `expiresAt` (UNIX seconds).

pub mod error;
pub mod key;
pub mod metadata;
pub mod presign;
pub mod quota;
mod routes;
pub mod service;
pub mod settings;
pub mod store;
pub mod stream;
pub mod sweep;
mod telemetry;

pub use error::BlobError;
pub use key::{KeyScheme, ObjectKey};
pub use quota::QuotaLedger;
pub use routes::routes;
pub use service::{Blobs, sweep_forever};
pub use settings::{BlobArgs, BlobSettings};
pub use store::BlobStore;
