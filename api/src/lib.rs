//! The contract between the parts of Vibe Cloud.
//!
//! Whatever two parts must agree on is written here once, as types and constants, so that
//! a change on one side is a compile error on the other instead of a failure in production:
//!
//! - [`collection::Collection`]: the one place a collection name is validated;
//! - [`app_id`]: the one place an app id is validated;
//! - [`dataplane_env`]: the environment variables `vibe-dataplane` reads, and which of them
//!   are secret — used by the data plane's flags, the operator's Deployment and the local
//!   stack;
//! - [`host`]: the host an instance is served at;
//! - [`export`]: the export archive (header, record lines, manifest) shared by the data
//!   plane's export/import and the `vibe` CLI;
//! - [`setting::SettingError`]: a setting that is wrong, named;
//! - [`json`]: strict JSON parsing of request bodies into any type (duplicate keys and
//!   trailing data refused, the field at fault named);
//! - [`schema`]: the JSON Schema of those bodies (`#[derive(JsonSchema)]` with the
//!   constraints the data plane enforces), from which the data plane's OpenAPI document
//!   takes its component schemas.
//!
//! Request and response bodies of the data plane's HTTP API, shared by the data plane and
//! its clients ([`auth`], [`apps`], [`blobs`], [`devices`], [`documents`], [`console`]): request bodies
//! refuse unknown fields (`#[serde(deny_unknown_fields)]`) and are read with [`json`];
//! responses are read leniently by clients, so an instance may add fields.
//!
//! The crate is deliberately light (serde, schemars and thiserror): the operator, the data
//! plane and every client depend on it.

pub mod app_id;
pub mod apps;
pub mod auth;
pub mod blobs;
pub mod collection;
pub mod console;
pub mod dataplane_env;
pub mod devices;
pub mod documents;
pub mod export;
pub mod host;
pub mod json;
pub mod schema;
pub mod setting;

pub use collection::Collection;
pub use setting::SettingError;
