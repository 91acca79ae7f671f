//! Settings of the query bounds (`VIBE_QUERY_*`): how much one read may ask of the store,
//! which fields it may sort on, how long its store work may run, and how many requests one
//! app may have in flight or send per second. Each bound has a name (`query.max_in_items`,
//! …) that refusals quote; `dataplane/README.md` lists them all.

use std::time::Duration;

use clap::Parser;
use vibe_api::dataplane_env as env;

/// The query bounds, flattened into [`crate::config::Cli`] (each flag has an environment
/// fallback) and kept whole in [`crate::config::Config::query`].
#[derive(Clone, Debug, clap::Args)]
pub struct QuerySettings {
    /// Deepest nesting of objects and arrays in a read filter (`query.max_depth`).
    #[arg(long = "query-max-depth", env = env::VIBE_QUERY_MAX_DEPTH, default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(2..=64))]
    pub max_depth: u32,

    /// Most field names, operators and array items in one read filter, counted over the
    /// whole filter (`query.max_clauses`).
    #[arg(long = "query-max-clauses", env = env::VIBE_QUERY_MAX_CLAUSES, default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clauses: u32,

    /// Most items of one `$in`, `$nin` or `$all` array (`query.max_in_items`).
    #[arg(long = "query-max-in-items", env = env::VIBE_QUERY_MAX_IN_ITEMS, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_items: u32,

    /// Most clauses of one `$or`, `$and` or `$nor` (`query.max_or_items`).
    #[arg(long = "query-max-or-items", env = env::VIBE_QUERY_MAX_OR_ITEMS, default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_or_items: u32,

    /// Longest string (value or field name) in a read filter, in bytes
    /// (`query.max_string_bytes`).
    #[arg(long = "query-max-string-bytes", env = env::VIBE_QUERY_MAX_STRING_BYTES, default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_string_bytes: u32,

    /// Longest `$regex` pattern, in bytes (`query.max_regex_bytes`).
    #[arg(long = "query-max-regex-bytes", env = env::VIBE_QUERY_MAX_REGEX_BYTES, default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_regex_bytes: u32,

    /// Most `$regex` operators in one read filter (`query.max_regexes`).
    #[arg(long = "query-max-regexes", env = env::VIBE_QUERY_MAX_REGEXES, default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..))]
    pub max_regexes: u32,

    /// Comma-separated fields reads may sort on (`query.sort_fields`). Each new
    /// combination of sort fields creates an index in CouchDB.
    #[arg(
        long = "query-sort-fields",
        env = env::VIBE_QUERY_SORT_FIELDS,
        value_delimiter = ',',
        default_value = "createdAt,updatedAt,name,title,date,order"
    )]
    pub sort_fields: Vec<String>,

    /// Most sort indexes the data plane creates in the owner's database, all collections
    /// together (`query.max_sort_indexes`).
    #[arg(long = "query-max-sort-indexes", env = env::VIBE_QUERY_MAX_SORT_INDEXES, default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(0..))]
    pub max_sort_indexes: u32,

    /// Deadline of a read's store work in milliseconds (`query.timeout_ms`). On expiry the
    /// data plane answers 503 and closes its connection to CouchDB, which ends the query
    /// there (after CouchDB's `[chttpd] disconnect_check_msec`).
    #[arg(long = "query-timeout-ms", env = env::VIBE_QUERY_TIMEOUT_MS, default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub timeout_ms: u64,

    /// Most ids one sync request may name (`query.max_sync_ids`): `doc_ids` of `_changes`,
    /// `keys` of `_all_docs`, `docs` of `_bulk_get`, revisions of `_revs_diff`. CouchDB's
    /// cost of these grows faster than their count (10,000 `doc_ids` took 19 s on
    /// CouchDB 3.5); replicators ask in batches of 100–500.
    #[arg(long = "query-max-sync-ids", env = env::VIBE_QUERY_MAX_SYNC_IDS, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sync_ids: u32,

    /// Document, blob and sync requests one app may have in flight at once
    /// (`query.app_concurrency`); more are answered 429. Open sync feeds take no slot.
    #[arg(long = "query-app-concurrency", env = env::VIBE_QUERY_APP_CONCURRENCY, default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub app_concurrency: u32,

    /// Sustained document, blob and sync requests per second of one app
    /// (`query.app_rate_per_sec`), with bursts of twice that; more are answered 429.
    #[arg(long = "query-app-rate-per-sec", env = env::VIBE_QUERY_APP_RATE_PER_SEC, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub app_rate_per_sec: u32,
}

#[derive(Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    query: QuerySettings,
}

impl Default for QuerySettings {
    /// The `--help` defaults (environment ignored).
    fn default() -> Self {
        DefaultsOnly::command_defaults()
    }
}

impl DefaultsOnly {
    fn command_defaults() -> QuerySettings {
        use clap::{CommandFactory, FromArgMatches};
        // Parse an empty command line without reading the environment, so `Default`
        // always means the documented defaults.
        let mut command = Self::command();
        command = command.mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(["defaults"])
            .expect("defaults parse");
        Self::from_arg_matches(&matches)
            .expect("defaults are valid")
            .query
    }
}

impl QuerySettings {
    /// `query.timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Whether reads may sort on `field`.
    pub fn allows_sort_on(&self, field: &str) -> bool {
        self.sort_fields.iter().any(|f| f.trim() == field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_ignore_the_environment_and_match_help() {
        let d = QuerySettings::default();
        assert_eq!(d.max_in_items, 100);
        assert_eq!(d.timeout(), Duration::from_secs(5));
        assert!(d.allows_sort_on("createdAt"));
        assert!(!d.allows_sort_on("anything"));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let parsed = DefaultsOnly::try_parse_from(["t", "--query-max-in-items", "0"]);
        assert!(parsed.is_err());
        let parsed =
            DefaultsOnly::try_parse_from(["t", "--query-sort-fields", "a,b"]).expect("parses");
        assert_eq!(parsed.query.sort_fields, vec!["a", "b"]);
    }
}
