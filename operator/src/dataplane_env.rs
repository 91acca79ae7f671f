//! How the operator configures the data plane: the environment contract of `vibe-dataplane`
//! (re-exported from [`vibe_api::dataplane_env`], the names its flags read) and the values
//! and paths the operator chooses for them.
//!
//! Values of [`SECRET`] variables are never put in a pod spec as literals: they reach the pod
//! through `secretKeyRef` (or, for the signing key, a mounted Secret file).

pub use vibe_api::dataplane_env::*;

/// The port the operator configures ([`PORT`], the data plane's default).
pub const PORT_VALUE: i32 = 3000;
/// The metrics port the operator configures in [`VIBE_METRICS_ADDR`] (container port named
/// `metrics`).
pub const METRICS_PORT_VALUE: i32 = 9464;
/// Liveness probe path of the data plane.
pub const HEALTH_PATH: &str = "/health";
/// Readiness probe path of the data plane.
pub const READY_PATH: &str = "/ready";
/// Directory the token signing key Secret is mounted at.
pub const TOKEN_KEY_DIR: &str = "/var/run/vibe/token-key";
/// File name of the key inside the token key Secret and the mounted directory
/// ([`VIBE_SIGNING_KEY_FILE`] points at it).
pub const TOKEN_KEY_FILE_NAME: &str = "signing-key.pem";
