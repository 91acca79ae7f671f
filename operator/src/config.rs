//! Operator configuration: the settings that shape the objects the operator creates and how
//! it reaches S3 — flags, each also readable from the environment, flattened into the
//! command line by [`crate::cli`].

use clap::Args;
use std::time::Duration;

/// Settings that shape the objects the operator creates.
#[derive(Args, Debug, Clone)]
pub struct OperatorConfig {
    /// Base domain: an instance without `spec.host` is served at `<name>.<base domain>`.
    #[arg(
        long,
        env = "VIBE_BASE_DOMAIN",
        default_value = "vibe.localhost",
        global = true
    )]
    pub base_domain: String,
    /// Default CouchDB image (a pinned CouchDB 3.x).
    #[arg(
        long,
        env = "VIBE_COUCHDB_IMAGE",
        default_value = "couchdb:3.5.0",
        global = true
    )]
    pub couchdb_image: String,
    /// Default data plane image.
    #[arg(
        long,
        env = "VIBE_DATAPLANE_IMAGE",
        default_value = concat!("ghcr.io/vibe-cloud/vibe-dataplane:", env!("CARGO_PKG_VERSION")),
        global = true
    )]
    pub dataplane_image: String,
    /// Default IngressClass of tenant Ingresses.
    #[arg(long, env = "VIBE_INGRESS_CLASS", global = true)]
    pub ingress_class: Option<String>,
    /// Default cert-manager ClusterIssuer of tenant Ingresses.
    #[arg(long, env = "VIBE_CLUSTER_ISSUER", global = true)]
    pub cluster_issuer: Option<String>,
    /// Namespace of the ingress controller, the only one allowed to reach data planes; `*` allows
    /// every namespace.
    #[arg(
        long,
        env = "VIBE_INGRESS_NAMESPACE",
        default_value = "ingress-nginx",
        global = true
    )]
    pub ingress_namespace: String,
    /// Namespace of the Prometheus that scrapes data planes: their NetworkPolicy lets it reach
    /// the metrics port (9464); `*` allows every namespace; empty (the default) allows none.
    #[arg(
        long,
        env = "VIBE_TENANT_METRICS_NAMESPACE",
        default_value = "",
        global = true
    )]
    pub tenant_metrics_namespace: String,
    /// Prefix of generated bucket names.
    #[arg(
        long,
        env = "VIBE_BUCKET_PREFIX",
        default_value = "vibe-",
        global = true
    )]
    pub bucket_prefix: String,
    /// S3 settings.
    #[command(flatten)]
    pub s3: S3Config,
    /// The platform's backup bucket: where `spec.backup` writes unless it names a bucket (on
    /// the same S3 endpoint, with the same credentials). Create it beforehand; unset: an
    /// instance must name its own bucket to be backed up.
    #[arg(long, env = "VIBE_BACKUP_BUCKET", global = true)]
    pub backup_bucket: Option<String>,
    /// Prefix of every backup key; an instance's backups are under
    /// `<prefix><namespace>/<name>/` unless `spec.backup.prefix` says otherwise.
    #[arg(long, env = "VIBE_BACKUP_PREFIX", default_value = "", global = true)]
    pub backup_prefix: String,
    /// How long deletion keeps retrying an unreachable object store before it gives up on the
    /// bucket (it is then left behind and reported in an Event).
    #[arg(long, env = "VIBE_CLEANUP_DEADLINE", default_value = "1h", value_parser = parse_duration, global = true)]
    pub cleanup_deadline: Duration,
    /// Longest wait between two looks for the end of a restore (`spec.restoreFrom`): the
    /// data plane cannot wake the operator, so an instance whose restore has not ended is
    /// reconciled at least this often.
    #[arg(long, env = "VIBE_RESTORE_POLL", default_value = "1m", value_parser = parse_duration, global = true)]
    pub restore_poll: Duration,
    /// Resync period of a healthy instance.
    #[arg(long, env = "VIBE_RESYNC_PERIOD", default_value = "5m", value_parser = parse_duration, global = true)]
    pub resync_period: Duration,
    /// How many instances are reconciled at the same time (one instance is never reconciled
    /// twice at once).
    #[arg(
        long,
        env = "VIBE_RECONCILE_CONCURRENCY",
        default_value_t = DEFAULT_RECONCILE_CONCURRENCY,
        value_parser = clap::value_parser!(u16).range(1..),
        global = true
    )]
    pub reconcile_concurrency: u16,
}

/// Default of `--reconcile-concurrency`.
pub const DEFAULT_RECONCILE_CONCURRENCY: u16 = 16;

/// Object store the operator creates buckets in.
#[derive(Args, Debug, Clone, Default)]
pub struct S3Config {
    /// S3 endpoint URL (e.g. `https://s3.fr-par.scw.cloud` or `http://minio.minio:9000`).
    #[arg(
        long = "s3-endpoint",
        env = "VIBE_S3_ENDPOINT",
        default_value = "http://minio.minio.svc:9000",
        global = true
    )]
    pub endpoint: String,
    /// S3 region.
    #[arg(
        long = "s3-region",
        env = "VIBE_S3_REGION",
        default_value = "us-east-1",
        global = true
    )]
    pub region: String,
    /// Use path-style URLs (`endpoint/bucket/key`), as MinIO needs.
    #[arg(long = "s3-path-style", env = "VIBE_S3_PATH_STYLE", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub path_style: bool,
    /// Access key id (mount it from a Secret as an environment variable).
    #[arg(
        long = "s3-access-key-id",
        env = "VIBE_S3_ACCESS_KEY_ID",
        default_value = "",
        hide_env_values = true,
        global = true
    )]
    pub access_key_id: String,
    /// Secret access key (mount it from a Secret as an environment variable).
    #[arg(
        long = "s3-secret-access-key",
        env = "VIBE_S3_SECRET_ACCESS_KEY",
        default_value = "",
        hide_env_values = true,
        global = true
    )]
    pub secret_access_key: String,
    /// Endpoint the data planes use, when it differs from the operator's (e.g. a public URL so
    /// presigned links work from browsers). Defaults to `--s3-endpoint`.
    #[arg(
        long = "s3-tenant-endpoint",
        env = "VIBE_S3_TENANT_ENDPOINT",
        global = true
    )]
    pub tenant_endpoint: Option<String>,
}

impl S3Config {
    /// The endpoint written into data plane configuration.
    pub fn tenant_endpoint(&self) -> &str {
        self.tenant_endpoint.as_deref().unwrap_or(&self.endpoint)
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            base_domain: "vibe.localhost".into(),
            couchdb_image: "couchdb:3.5.0".into(),
            dataplane_image: concat!(
                "ghcr.io/vibe-cloud/vibe-dataplane:",
                env!("CARGO_PKG_VERSION")
            )
            .into(),
            ingress_class: None,
            cluster_issuer: None,
            ingress_namespace: "ingress-nginx".into(),
            tenant_metrics_namespace: String::new(),
            bucket_prefix: "vibe-".into(),
            s3: S3Config {
                endpoint: "http://minio.minio.svc:9000".into(),
                region: "us-east-1".into(),
                path_style: true,
                ..S3Config::default()
            },
            backup_bucket: None,
            backup_prefix: String::new(),
            cleanup_deadline: Duration::from_secs(3600),
            restore_poll: Duration::from_secs(60),
            resync_period: Duration::from_secs(300),
            reconcile_concurrency: DEFAULT_RECONCILE_CONCURRENCY,
        }
    }
}

/// Parses `90s`, `5m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid duration `{s}`"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration unit in `{s}` (use s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("m").is_err());
    }
}
