//! Configuration: `clap` flags with environment fallbacks ([`Cli`]), validated into a
//! typed [`Config`]. Every variable is documented in `dataplane/README.md`; the names come
//! from the contract shared with the operator and clients ([`vibe_api::dataplane_env`]),
//! so a rename there is seen by every side (`deploy/` scripts still name them literally).
//!
//! Secrets (CouchDB password, signing key, claim code, S3 secret key) are marked
//! `hide_env_values` so `--help` never prints them, and [`Config`]'s `Debug` redacts them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use url::Url;
use vibe_api::SettingError;
use vibe_api::dataplane_env as env;
use vibe_identity::{Did, Keypair};

use crate::couch::CouchSettings;

/// Default lifetime of owner access tokens and app tokens (15 minutes).
pub const DEFAULT_ACCESS_TOKEN_TTL_SECONDS: u64 = 15 * 60;
/// Allowed `VIBE_ACCESS_TOKEN_TTL_SECONDS`: one second to one day.
pub const ACCESS_TOKEN_TTL_SECONDS: std::ops::RangeInclusive<u64> = 1..=86_400;

/// Command line and environment of `vibe-dataplane`.
#[derive(Debug, Parser)]
#[command(
    name = "vibe-dataplane",
    version,
    about = "The per-tenant Vibe Cloud data plane: DID login and tokens, documents over CouchDB, apps and grants, blobs and realtime.",
    long_about = None
)]
pub struct Cli {
    /// What to do: serve (the default, no subcommand) or `backup` once and exit.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on.
    #[arg(long, env = env::HOST, default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// TCP port to listen on.
    #[arg(long, env = env::PORT, default_value_t = 3000)]
    pub port: u16,

    /// Public base URL of this instance (e.g. https://alice.vibe.example). It is the
    /// issuer and audience of every token this instance mints and accepts.
    #[arg(long, env = env::PUBLIC_INSTANCE_URL)]
    pub public_url: Option<String>,

    /// DID of the owner (`did:vibe:z6Mk…`). Leave unset to let the first holder of the
    /// claim code become the owner through `POST /api/v1/admin/claim`.
    #[arg(long, env = env::TARGET_USER_DID)]
    pub owner_did: Option<String>,

    /// CouchDB base URL (without credentials), e.g. http://couchdb:5984.
    #[arg(long, env = env::COUCHDB_URL)]
    pub couchdb_url: Option<String>,

    /// CouchDB server-admin user.
    #[arg(long, env = env::COUCHDB_USER)]
    pub couchdb_user: Option<String>,

    /// CouchDB server-admin password.
    #[arg(long, env = env::COUCHDB_PASSWORD, hide_env_values = true)]
    pub couchdb_password: Option<String>,

    /// Name of the system database (apps and grants, refresh tokens, nonces, claim state).
    #[arg(long, env = env::VIBE_SYSTEM_DB, default_value = "vibe_system")]
    pub system_db: String,

    /// Prefix of every database name this instance uses (the system database and the owner's
    /// data database), so several instances or test runs can share one CouchDB. Empty: none.
    #[arg(long, env = env::VIBE_DB_PREFIX, default_value = "")]
    pub db_prefix: String,

    /// File holding the Ed25519 token-signing key: PKCS#8 PEM, a base64/hex 32-byte seed,
    /// or 32 raw bytes.
    #[arg(long, env = env::VIBE_SIGNING_KEY_FILE)]
    pub signing_key_file: Option<PathBuf>,

    /// The token-signing key itself (PEM or base64/hex seed), when no file is given.
    #[arg(long, env = env::VIBE_SIGNING_KEY, hide_env_values = true)]
    pub signing_key: Option<String>,

    /// One-time owner claim code, accepted only while the instance has no owner. Stored
    /// hashed in the system database.
    #[arg(long, env = env::VIBE_CLAIM_CODE, hide_env_values = true)]
    pub claim_code: Option<String>,

    /// Expiry of the claim code (RFC 3339). Unset: no expiry.
    #[arg(long, env = env::VIBE_CLAIM_CODE_EXPIRES_AT)]
    pub claim_code_expires_at: Option<String>,

    /// Restrict the claim code to this DID. Unset: any DID may claim.
    #[arg(long, env = env::VIBE_CLAIM_CODE_FOR_DID)]
    pub claim_code_for_did: Option<String>,

    /// Maximum size of a request body in bytes (larger → 413).
    #[arg(long, env = env::VIBE_MAX_BODY_BYTES, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Lifetime of owner access tokens and app tokens in seconds, 1 to 86400 (one day).
    /// Streams of a bearer token end when it expires; device credentials do not expire.
    /// Tests shorten it so minutes stand for hours of token refreshes.
    #[arg(long, env = env::VIBE_ACCESS_TOKEN_TTL_SECONDS, default_value_t = DEFAULT_ACCESS_TOKEN_TTL_SECONDS)]
    pub access_token_ttl_seconds: u64,

    /// Lifetime of refresh tokens in seconds.
    #[arg(long, env = env::VIBE_REFRESH_TOKEN_TTL_SECONDS, default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_seconds: u64,

    /// Allowed clock skew of signed login timestamps, in seconds.
    #[arg(long, env = env::VIBE_LOGIN_SKEW_SECONDS, default_value_t = 300)]
    pub login_skew_seconds: u64,

    /// Lifetime of login nonces issued by /api/v1/auth/challenge, in seconds.
    #[arg(long, env = env::VIBE_NONCE_TTL_SECONDS, default_value_t = 300)]
    pub nonce_ttl_seconds: u64,

    /// Comma-separated browser origins allowed by CORS and by the WebSocket Origin check
    /// (e.g. https://app.example,https://agent.example). `*` allows any origin without
    /// credentials. Empty: no cross-origin browser access.
    #[arg(long, env = env::VIBE_ALLOWED_ORIGINS, value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// S3 endpoint URL (e.g. http://minio:9000). Blobs are enabled when this and
    /// S3_BUCKET_NAME are set.
    #[arg(long, env = env::S3_ENDPOINT)]
    pub s3_endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = env::S3_REGION, default_value = "us-east-1")]
    pub s3_region: String,

    /// S3 access key id.
    #[arg(long, env = env::S3_ACCESS_KEY)]
    pub s3_access_key: Option<String>,

    /// S3 secret access key.
    #[arg(long, env = env::S3_SECRET_KEY, hide_env_values = true)]
    pub s3_secret_key: Option<String>,

    /// S3 bucket of this instance.
    #[arg(long, env = env::S3_BUCKET_NAME)]
    pub s3_bucket: Option<String>,

    /// Use path-style S3 addressing (MinIO and most self-hosted stores need it).
    #[arg(long, env = env::S3_FORCE_PATH_STYLE, default_value_t = true, action = clap::ArgAction::Set)]
    pub s3_force_path_style: bool,

    /// Bucket of the backup this instance is restored from (the operator sets it from
    /// `spec.restoreFrom`); with `VIBE_RESTORE_OBJECT_KEY`, the owner can fetch that backup
    /// (encrypted to them) from `GET /api/v1/restore/archive` and import it.
    #[arg(long, env = env::VIBE_RESTORE_BUCKET)]
    pub restore_bucket: Option<String>,

    /// Object key of the backup this instance is restored from.
    #[arg(long, env = env::VIBE_RESTORE_OBJECT_KEY)]
    pub restore_object_key: Option<String>,

    /// Blob limits and lifetimes (quota, per-file limit, URL lifetimes, sweep).
    #[command(flatten)]
    pub blobs: crate::blobs::BlobArgs,

    /// Realtime WebSocket limits (`VIBE_WS_*`).
    #[command(flatten)]
    pub realtime: crate::realtime::RealtimeArgs,

    /// Address (`host:port`) of a second listener that serves Prometheus metrics at
    /// `/metrics`, e.g. `0.0.0.0:9464`. Unset or empty: no metrics listener. Kept off the
    /// public port so that the ingress never exposes it.
    #[arg(long, env = env::VIBE_METRICS_ADDR)]
    pub metrics_addr: Option<String>,

    /// HTTP connection timeouts (`VIBE_HTTP_*`).
    #[command(flatten)]
    pub http: crate::server::HttpArgs,

    /// Query bounds: filter shape, sort fields, store deadline, per-app admission
    /// (`VIBE_QUERY_*`).
    #[command(flatten)]
    pub query: crate::documents::settings::QuerySettings,

    /// Log format: `text` or `json`. The level comes from RUST_LOG (default `info`).
    #[arg(long, env = env::VIBE_LOG_FORMAT, default_value = "text")]
    pub log_format: String,
}

/// Subcommands of `vibe-dataplane`; without one it serves.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write one backup of this instance, encrypted to its owner, to a bucket; apply
    /// retention; print a JSON report and exit (run by the operator's CronJob, with the same
    /// CouchDB and S3 settings as the server).
    Backup(crate::export::backup::BackupArgs),
}

/// A configuration problem, naming the setting (never showing a secret value). `main`
/// prints it as one line, `configuration error: <setting>: <problem>`, and exits.
pub type ConfigError = SettingError;

fn config_error(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    SettingError::new(setting, problem)
}

/// S3 settings used by the blob feature. Present only when S3 is configured.
#[derive(Clone)]
pub struct S3Config {
    /// Endpoint URL.
    pub endpoint: Url,
    /// Region.
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Bucket of this instance.
    pub bucket: String,
    /// Path-style addressing.
    pub force_path_style: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("force_path_style", &self.force_path_style)
            .finish_non_exhaustive()
    }
}

/// The backup an instance is restored from (`VIBE_RESTORE_BUCKET`, `VIBE_RESTORE_OBJECT_KEY`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreSource {
    /// Bucket.
    pub bucket: String,
    /// Object key.
    pub key: String,
}

/// The one-time owner claim code given at start.
#[derive(Clone)]
pub struct ClaimCodeConfig {
    /// The code (hashed before it is stored).
    pub code: String,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Only this DID may claim, if set.
    pub for_did: Option<Did>,
}

impl std::fmt::Debug for ClaimCodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimCodeConfig")
            .field("expires_at", &self.expires_at)
            .field("for_did", &self.for_did)
            .finish_non_exhaustive()
    }
}

/// Limits and lifetimes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum request body size in bytes.
    pub max_body_bytes: usize,
    /// Access-token lifetime (15 minutes).
    pub access_token_ttl: Duration,
    /// Refresh-token lifetime.
    pub refresh_token_ttl: Duration,
    /// Allowed login timestamp skew.
    pub login_skew: Duration,
    /// Nonce lifetime.
    pub nonce_ttl: Duration,
    /// How often a running process deletes stored revocations no token can outlive
    /// (one hour; start-up also deletes them).
    pub revocation_sweep: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            access_token_ttl: Duration::from_secs(DEFAULT_ACCESS_TOKEN_TTL_SECONDS),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            login_skew: Duration::from_secs(300),
            nonce_ttl: Duration::from_secs(300),
            revocation_sweep: Duration::from_secs(3600),
        }
    }
}

/// Validated configuration of one data-plane instance.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Listen address of the metrics endpoint; `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Public URL: token issuer and audience (no trailing slash).
    pub public_url: String,
    /// Owner from configuration; `None` = claimable (or claimed earlier, see the system db).
    pub owner: Option<Did>,
    /// CouchDB connection.
    pub couch: CouchSettings,
    /// System database name, without [`Config::db_prefix`] (see [`Config::system_db_name`]).
    pub system_db: String,
    /// Prefix of every database name (`VIBE_DB_PREFIX`; empty by default).
    pub db_prefix: String,
    /// Token-signing key.
    pub signing_key: Keypair,
    /// Claim code, if any.
    pub claim_code: Option<ClaimCodeConfig>,
    /// Limits.
    pub limits: Limits,
    /// Allowed browser origins (CORS, WebSocket Origin check).
    pub allowed_origins: Vec<String>,
    /// S3, when configured.
    pub s3: Option<S3Config>,
    /// The backup this instance is restored from, if any.
    pub restore: Option<RestoreSource>,
    /// Blob limits and lifetimes.
    pub blobs: crate::blobs::BlobSettings,
    /// Realtime WebSocket limits and timings.
    pub realtime: crate::realtime::RealtimeSettings,
    /// HTTP connection timeouts.
    pub http: crate::server::HttpSettings,
    /// Query bounds (`VIBE_QUERY_*`).
    pub query: crate::documents::settings::QuerySettings,
}

impl Config {
    /// A configuration with defaults, for embedding and tests.
    pub fn new(public_url: &str, couch: CouchSettings, signing_key: Keypair) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: None,
            public_url: public_url.trim_end_matches('/').to_string(),
            owner: None,
            couch,
            system_db: "vibe_system".to_string(),
            db_prefix: String::new(),
            signing_key,
            claim_code: None,
            limits: Limits::default(),
            allowed_origins: Vec::new(),
            s3: None,
            restore: None,
            blobs: crate::blobs::BlobSettings::default(),
            realtime: crate::realtime::RealtimeSettings::default(),
            http: crate::server::HttpSettings::default(),
            query: crate::documents::settings::QuerySettings::default(),
        }
    }
}

impl Config {
    /// The system database's full name: prefix + `VIBE_SYSTEM_DB`.
    pub fn system_db_name(&self) -> String {
        format!("{}{}", self.db_prefix, self.system_db)
    }

    /// The full name of `owner`'s data database: prefix + [`crate::dbnames::user_db_name`].
    pub fn data_db_name(&self, owner: &Did) -> String {
        format!("{}{}", self.db_prefix, crate::dbnames::user_db_name(owner))
    }
}

/// Longest accepted `VIBE_DB_PREFIX`: with the longest data database name (123 characters)
/// the result stays within CouchDB's 238.
pub const MAX_DB_PREFIX_LEN: usize = 100;

fn required<T>(value: Option<T>, setting: &'static str) -> Result<T, ConfigError> {
    value.ok_or_else(|| config_error(setting, "is required but not set"))
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

impl Cli {
    /// Validate into a [`Config`]; the error names the first bad setting.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let public_url = required(non_empty(self.public_url), env::PUBLIC_INSTANCE_URL)?;
        let parsed = Url::parse(&public_url)
            .map_err(|e| config_error(env::PUBLIC_INSTANCE_URL, format!("not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(config_error(
                env::PUBLIC_INSTANCE_URL,
                "must be an http(s) URL with a host",
            ));
        }

        let owner = non_empty(self.owner_did)
            .map(|d| Did::parse(d.trim()))
            .transpose()
            .map_err(|e| config_error(env::TARGET_USER_DID, format!("not a did:vibe DID ({e})")))?;

        let couch_url = required(non_empty(self.couchdb_url), env::COUCHDB_URL)?;
        let couch_url = Url::parse(&couch_url)
            .map_err(|e| config_error(env::COUCHDB_URL, format!("not a URL ({e})")))?;
        if !matches!(couch_url.scheme(), "http" | "https") {
            return Err(config_error(env::COUCHDB_URL, "must be an http(s) URL"));
        }
        if !couch_url.username().is_empty() || couch_url.password().is_some() {
            return Err(config_error(
                env::COUCHDB_URL,
                "must not contain credentials; use COUCHDB_USER and COUCHDB_PASSWORD",
            ));
        }
        let couchdb_user = non_empty(self.couchdb_user);
        let couchdb_password = self.couchdb_password;
        if couchdb_user.is_some() && couchdb_password.is_none() {
            return Err(config_error(
                env::COUCHDB_PASSWORD,
                "is required when COUCHDB_USER is set",
            ));
        }

        let signing_key = match (self.signing_key_file, non_empty(self.signing_key)) {
            (Some(path), _) => Keypair::from_file(&path)
                .map_err(|e| config_error(env::VIBE_SIGNING_KEY_FILE, e.to_string()))?,
            (None, Some(text)) => Keypair::from_text(&text)
                .map_err(|e| config_error(env::VIBE_SIGNING_KEY, e.to_string()))?,
            (None, None) => {
                return Err(config_error(
                    env::VIBE_SIGNING_KEY_FILE,
                    "a token-signing key is required (VIBE_SIGNING_KEY_FILE or VIBE_SIGNING_KEY)",
                ));
            }
        };

        let claim_code = match non_empty(self.claim_code) {
            None => None,
            Some(code) => {
                if code.trim().len() < 8 {
                    return Err(config_error(
                        env::VIBE_CLAIM_CODE,
                        "must be at least 8 characters",
                    ));
                }
                let expires_at = non_empty(self.claim_code_expires_at)
                    .map(|t| DateTime::parse_from_rfc3339(t.trim()).map(|d| d.with_timezone(&Utc)))
                    .transpose()
                    .map_err(|e| {
                        config_error(
                            env::VIBE_CLAIM_CODE_EXPIRES_AT,
                            format!("not RFC 3339 ({e})"),
                        )
                    })?;
                let for_did = non_empty(self.claim_code_for_did)
                    .map(|d| Did::parse(d.trim()))
                    .transpose()
                    .map_err(|e| {
                        config_error(
                            env::VIBE_CLAIM_CODE_FOR_DID,
                            format!("not a did:vibe DID ({e})"),
                        )
                    })?;
                Some(ClaimCodeConfig {
                    code: code.trim().to_string(),
                    expires_at,
                    for_did,
                })
            }
        };

        if !crate::dbnames::is_valid_db_name(&self.system_db) {
            return Err(config_error(
                env::VIBE_SYSTEM_DB,
                "must match ^[a-z][a-z0-9_$()+/-]*$",
            ));
        }
        let db_prefix = self.db_prefix.trim().to_string();
        if !db_prefix.is_empty() && !crate::dbnames::is_valid_db_name(&db_prefix) {
            return Err(config_error(
                env::VIBE_DB_PREFIX,
                "must be empty or match ^[a-z][a-z0-9_$()+/-]*$",
            ));
        }
        if db_prefix.len() > MAX_DB_PREFIX_LEN {
            return Err(config_error(
                env::VIBE_DB_PREFIX,
                format!("must be at most {MAX_DB_PREFIX_LEN} characters"),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(config_error(
                env::VIBE_MAX_BODY_BYTES,
                "must be at least 1024",
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(config_error(
                env::VIBE_LOG_FORMAT,
                "must be `text` or `json`",
            ));
        }

        let metrics_listen = non_empty(self.metrics_addr)
            .map(|addr| addr.trim().parse::<SocketAddr>())
            .transpose()
            .map_err(|e| {
                config_error(
                    env::VIBE_METRICS_ADDR,
                    format!("not a host:port address ({e})"),
                )
            })?;
        if metrics_listen.is_some_and(|m| m.port() != 0 && m.port() == self.port) {
            return Err(config_error(
                env::VIBE_METRICS_ADDR,
                "must use another port than PORT",
            ));
        }

        let s3 = match (non_empty(self.s3_endpoint), non_empty(self.s3_bucket)) {
            (None, None) => None,
            (Some(endpoint), Some(bucket)) => {
                let endpoint = Url::parse(&endpoint)
                    .map_err(|e| config_error(env::S3_ENDPOINT, format!("not a URL ({e})")))?;
                Some(S3Config {
                    endpoint,
                    region: self.s3_region,
                    access_key: required(non_empty(self.s3_access_key), env::S3_ACCESS_KEY)?,
                    secret_key: required(non_empty(self.s3_secret_key), env::S3_SECRET_KEY)?,
                    bucket,
                    force_path_style: self.s3_force_path_style,
                })
            }
            (None, Some(_)) => {
                return Err(config_error(
                    env::S3_ENDPOINT,
                    "is required when S3_BUCKET_NAME is set",
                ));
            }
            (Some(_), None) => {
                return Err(config_error(
                    env::S3_BUCKET_NAME,
                    "is required when S3_ENDPOINT is set",
                ));
            }
        };

        let restore = match (
            non_empty(self.restore_bucket),
            non_empty(self.restore_object_key),
        ) {
            (None, None) => None,
            (Some(bucket), Some(key)) if s3.is_some() => Some(RestoreSource { bucket, key }),
            (Some(_), Some(_)) => {
                return Err(config_error(
                    env::VIBE_RESTORE_BUCKET,
                    "needs S3 (S3_ENDPOINT, S3_BUCKET_NAME): the backup is read with those settings",
                ));
            }
            (Some(_), None) => {
                return Err(config_error(
                    env::VIBE_RESTORE_OBJECT_KEY,
                    "is required when VIBE_RESTORE_BUCKET is set",
                ));
            }
            (None, Some(_)) => {
                return Err(config_error(
                    env::VIBE_RESTORE_BUCKET,
                    "is required when VIBE_RESTORE_OBJECT_KEY is set",
                ));
            }
        };

        let blobs = self.blobs.resolve()?;
        let realtime = self.realtime.resolve()?;
        let http = self.http.resolve()?;

        let mut query = self.query;
        query.sort_fields = query
            .sort_fields
            .iter()
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect();
        if let Some(bad) = query
            .sort_fields
            .iter()
            .find(|f| !crate::documents::query::is_valid_field_name(f))
        {
            return Err(config_error(
                env::VIBE_QUERY_SORT_FIELDS,
                format!("'{bad}' is not a field name reads may sort on"),
            ));
        }

        let allowed_origins = self
            .allowed_origins
            .into_iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();

        if !ACCESS_TOKEN_TTL_SECONDS.contains(&self.access_token_ttl_seconds) {
            return Err(config_error(
                env::VIBE_ACCESS_TOKEN_TTL_SECONDS,
                format!(
                    "must be between {} and {} seconds",
                    ACCESS_TOKEN_TTL_SECONDS.start(),
                    ACCESS_TOKEN_TTL_SECONDS.end()
                ),
            ));
        }

        Ok(Config {
            listen: SocketAddr::new(self.host, self.port),
            metrics_listen,
            public_url: public_url.trim_end_matches('/').to_string(),
            owner,
            couch: CouchSettings {
                url: couch_url,
                user: couchdb_user,
                password: couchdb_password,
            },
            system_db: self.system_db,
            db_prefix,
            signing_key,
            claim_code,
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                access_token_ttl: Duration::from_secs(self.access_token_ttl_seconds),
                refresh_token_ttl: Duration::from_secs(self.refresh_token_ttl_seconds),
                login_skew: Duration::from_secs(self.login_skew_seconds),
                nonce_ttl: Duration::from_secs(self.nonce_ttl_seconds),
                ..Limits::default()
            },
            allowed_origins,
            s3,
            restore,
            blobs,
            realtime,
            http,
            query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["vibe-dataplane"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses")
    }

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    /// The flags read exactly the variables of the contract (`vibe_api::dataplane_env`),
    /// and hide the value of every secret one in `--help`.
    #[test]
    fn flags_read_the_environment_contract() {
        use clap::CommandFactory;
        let command = Cli::command();
        let read: Vec<(String, bool)> = command
            .get_arguments()
            .chain(command.get_subcommands().flat_map(|c| c.get_arguments()))
            .filter_map(|arg| {
                let name = arg.get_env()?.to_str()?.to_string();
                Some((name, arg.is_hide_env_values_set()))
            })
            .collect();
        for (name, hidden) in &read {
            assert!(env::is_read(name), "{name} is read but not in the contract");
            assert_eq!(
                *hidden,
                env::is_secret(name),
                "{name}: hidden in --help iff secret"
            );
        }
        for name in env::ALL.iter().filter(|n| **n != env::RUST_LOG) {
            assert!(
                read.iter().any(|(r, _)| r == name),
                "{name} is in the contract but no flag reads it"
            );
        }
    }

    #[test]
    fn access_token_lifetime_is_configurable_within_bounds() {
        let base = [
            "--public-url",
            "https://a.example",
            "--couchdb-url",
            "http://127.0.0.1:5984",
            "--signing-key",
            KEY,
        ];
        let config = cli(&base).into_config().expect("valid");
        assert_eq!(config.limits.access_token_ttl, Duration::from_secs(900));
        for (value, ok) in [("1", true), ("86400", true), ("0", false), ("86401", false)] {
            let mut args = base.to_vec();
            args.extend(["--access-token-ttl-seconds", value]);
            match cli(&args).into_config() {
                Ok(config) if ok => assert_eq!(
                    config.limits.access_token_ttl,
                    Duration::from_secs(value.parse().unwrap())
                ),
                Err(e) if !ok => {
                    assert_eq!(e.setting, "VIBE_ACCESS_TOKEN_TTL_SECONDS");
                    assert_eq!(e.problem, "must be between 1 and 86400 seconds");
                }
                other => panic!("{value}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn missing_public_url_is_named() {
        let err = cli(&[
            "--couchdb-url",
            "http://127.0.0.1:5984",
            "--signing-key",
            KEY,
        ])
        .into_config()
        .unwrap_err();
        assert_eq!(err.setting, "PUBLIC_INSTANCE_URL");
    }

    #[test]
    fn bad_owner_did_is_named() {
        let err = cli(&[
            "--public-url",
            "https://a.example",
            "--couchdb-url",
            "http://127.0.0.1:5984",
            "--signing-key",
            KEY,
            "--owner-did",
            "did:web:nope",
        ])
        .into_config()
        .unwrap_err();
        assert_eq!(err.setting, "TARGET_USER_DID");
    }

    #[test]
    fn credentials_in_couch_url_are_refused() {
        let err = cli(&[
            "--public-url",
            "https://a.example",
            "--couchdb-url",
            "http://admin:secret@127.0.0.1:5984",
            "--signing-key",
            KEY,
        ])
        .into_config()
        .unwrap_err();
        assert_eq!(err.setting, "COUCHDB_URL");
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn missing_key_is_named_and_minimal_config_is_valid() {
        let err = cli(&[
            "--public-url",
            "https://a.example/",
            "--couchdb-url",
            "http://c:5984",
        ])
        .into_config()
        .unwrap_err();
        assert_eq!(err.setting, "VIBE_SIGNING_KEY_FILE");
        let config = cli(&[
            "--public-url",
            "https://a.example/",
            "--couchdb-url",
            "http://c:5984",
            "--signing-key",
            KEY,
        ])
        .into_config()
        .expect("valid");
        assert_eq!(config.public_url, "https://a.example");
        assert_eq!(config.listen.port(), 3000);
        assert!(config.s3.is_none());
        assert!(config.owner.is_none());
    }

    #[test]
    fn metrics_listener_is_off_unless_an_address_is_given() {
        let base = [
            "--public-url",
            "https://a.example",
            "--couchdb-url",
            "http://c:5984",
            "--signing-key",
            KEY,
        ];
        assert!(cli(&base).into_config().unwrap().metrics_listen.is_none());
        let mut args = base.to_vec();
        args.extend(["--metrics-addr", "0.0.0.0:9464"]);
        let config = cli(&args).into_config().unwrap();
        assert_eq!(config.metrics_listen, Some("0.0.0.0:9464".parse().unwrap()));
        for bad in ["9464", "0.0.0.0:3000"] {
            let mut args = base.to_vec();
            args.extend(["--metrics-addr", bad]);
            let err = cli(&args).into_config().unwrap_err();
            assert_eq!(err.setting, "VIBE_METRICS_ADDR", "{bad}");
        }
    }

    #[test]
    fn db_prefix_applies_to_every_database_and_is_checked() {
        let base = [
            "--public-url",
            "https://a.example",
            "--couchdb-url",
            "http://c:5984",
            "--signing-key",
            KEY,
        ];
        let owner = Keypair::from_seed([7; 32]).did();
        let plain = cli(&base).into_config().expect("valid");
        assert_eq!(plain.system_db_name(), "vibe_system");
        assert_eq!(
            plain.data_db_name(&owner),
            crate::dbnames::user_db_name(&owner)
        );

        let mut args = base.to_vec();
        args.extend(["--db-prefix", "t42_"]);
        let prefixed = cli(&args).into_config().expect("valid");
        assert_eq!(prefixed.system_db_name(), "t42_vibe_system");
        let data = prefixed.data_db_name(&owner);
        assert_eq!(
            data,
            format!("t42_{}", crate::dbnames::user_db_name(&owner))
        );
        assert!(crate::dbnames::is_valid_db_name(&data));

        let longest = "p".repeat(MAX_DB_PREFIX_LEN);
        let mut args = base.to_vec();
        args.extend(["--db-prefix", &longest]);
        let config = cli(&args).into_config().expect("valid");
        assert!(crate::dbnames::is_valid_db_name(
            &config.data_db_name(&owner)
        ));

        let too_long = "p".repeat(MAX_DB_PREFIX_LEN + 1);
        for bad in ["T42_", "_users", "9x", "a b", too_long.as_str()] {
            let mut args = base.to_vec();
            args.extend(["--db-prefix", bad]);
            let err = cli(&args).into_config().unwrap_err();
            assert_eq!(err.setting, "VIBE_DB_PREFIX", "{bad}");
        }
    }

    #[test]
    fn half_configured_s3_is_named() {
        let err = cli(&[
            "--public-url",
            "https://a.example",
            "--couchdb-url",
            "http://c:5984",
            "--signing-key",
            KEY,
            "--s3-bucket",
            "b",
        ])
        .into_config()
        .unwrap_err();
        assert_eq!(err.setting, "S3_ENDPOINT");
    }
}
