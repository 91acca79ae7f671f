//! The `vibe` command line (clap). Every flag also reads an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Getting started (a local instance from deploy/local/up prints its URL and claim code):
  vibe keygen                                   # make your identity (prints your DID)
  vibe --instance http://127.0.0.1:3000 claim --code <CLAIM-CODE>   # become the owner, log in
  vibe apps grant notes-app read:notes write:notes
  vibe --app notes-app put notes '{\"title\":\"hello\"}'
  vibe --app notes-app find notes --filter '{\"title\":\"hello\"}'
  vibe --app notes-app watch notes              # in another terminal
  vibe sync ./my-notes --collection notes       # two-way sync with a folder

Files: the key is <config>/key.pem (mode 0600) and sessions are <config>/sessions.json
(mode 0600), where <config> is --config-dir, $VIBE_CONFIG_DIR, $XDG_CONFIG_HOME/vibe or
~/.config/vibe. The last instance logged in to is the default for --instance.

Output: human-readable by default; --json prints one JSON value per result on stdout.
Errors go to stderr (with --json as {\"error\":…,\"status\":…}) and exit with status 1;
usage errors exit with 2.";

/// `vibe`: the command-line client of a Vibe Cloud instance.
#[derive(Debug, Parser)]
#[command(
    name = "vibe",
    version,
    about = "Command-line client of a Vibe Cloud instance: identity, login, apps and grants, documents, blobs, realtime and folder sync.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Instance URL (e.g. http://127.0.0.1:3000). Default: the last instance logged in to.
    #[arg(long, short = 'i', env = "VIBE_INSTANCE", global = true)]
    pub instance: Option<String>,

    /// Configuration folder holding key.pem and sessions.json.
    #[arg(long, env = "VIBE_CONFIG_DIR", global = true)]
    pub config_dir: Option<PathBuf>,

    /// Key file (PKCS#8 PEM or seed; must be mode 0600). Default: <config>/key.pem.
    #[arg(long, env = "VIBE_KEY_FILE", global = true)]
    pub key: Option<PathBuf>,

    /// App to act as for documents, blobs, watch and sync (sent as X-Vibe-App-ID with
    /// your owner session). The app needs the matching grants (`vibe apps grant`).
    #[arg(long, env = "VIBE_APP", global = true)]
    pub app: Option<String>,

    /// Use this app-bound token (from `vibe apps token`) instead of your owner session.
    #[arg(long, env = "VIBE_APP_TOKEN", hide_env_values = true, global = true)]
    pub app_token: Option<String>,

    /// Print results as JSON (one value per result) for scripts.
    #[arg(long, global = true)]
    pub json: bool,

    /// Hide progress bars.
    #[arg(long, env = "VIBE_NO_PROGRESS", global = true, value_parser = clap::builder::BoolishValueParser::new())]
    pub no_progress: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an Ed25519 key pair, store it (mode 0600) and print its DID.
    Keygen {
        /// Replace an existing key (the old identity is lost).
        #[arg(long)]
        force: bool,
    },
    /// Print your DID and the instances you are logged in to.
    Whoami,
    /// Check an instance's health and readiness.
    Status,
    /// Become the owner of an unclaimed instance with its claim code, then log in.
    Claim {
        /// The claim code the instance printed at start.
        #[arg(long, env = "VIBE_CLAIM_CODE", hide_env_values = true)]
        code: String,
    },
    /// Log in as the owner (challenge, sign with your key, store the session).
    Login,
    /// Revoke the stored session on the instance and forget it.
    Logout,
    /// Open the owner console of the instance in a browser: signs in with your key,
    /// mints a one-time console link and prints it (owner only).
    #[command(
        after_help = "The link holds a code that works once, on this instance, for a short \
        time (2 minutes unless --ttl); the code is in the part after `#`, which browsers \
        never send to a server. Opening the link signs the page in; the page keeps its \
        session in memory only, so a reload or a closed tab ends it (run `vibe console` \
        again). Treat the link like a password until it is used. Details: docs/console.md."
    )]
    Console {
        /// Also try to open the link in the default browser (xdg-open, open).
        #[arg(long)]
        open: bool,
        /// How long the link works, in seconds (1 to 600).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
        ttl: Option<u64>,
    },
    /// Apps and their grants (owner only).
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Devices trusted to sync with the instance (owner only).
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Export the whole instance (documents with every revision, apps and grants, blobs)
    /// into one archive file, encrypted to your key unless --plain (owner only).
    #[command(
        after_help = "The archive is streamed to <OUTPUT>.vibe-partial and renamed when \
        complete. Only the holder of your key can read an encrypted archive (`vibe import` \
        decrypts it). Format: docs/export-format.md."
    )]
    Export {
        /// Where to write the archive, e.g. me.vibe.
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// Leave blob bytes out (documents and apps only; such an archive cannot be
        /// imported when you have blobs).
        #[arg(long)]
        no_blobs: bool,
        /// Do not encrypt the archive (anyone holding the file can read it).
        #[arg(long)]
        plain: bool,
    },
    /// Import an archive into this instance, which must be new, empty and yours; an
    /// encrypted archive is decrypted here with your key. Run it again after an
    /// interruption: it resumes, and repeating a finished import changes nothing.
    Import {
        /// The archive file (from `vibe export`).
        file: PathBuf,
    },
    /// Finish a restore: fetch the backup this instance was created from (the provider's
    /// `spec.restoreFrom`), decrypt it here with your key and import it. Run it again
    /// after an interruption: it resumes, and repeating a finished restore changes nothing.
    #[command(
        after_help = "The provider cannot read your backups: they are encrypted to your key, \
        so the instance serves the encrypted backup only to you and only you can turn it back \
        into your data. Claim or log in to the new instance with the same key first. \
        Until the restore ends, the instance refuses writes (409 restore_pending). With \
        --abandon you give the restore up instead: the backup is not imported and the \
        instance takes writes from then on, starting empty (this cannot be undone)."
    )]
    Restore {
        /// Give the restore up instead of running it (asks for confirmation).
        #[arg(long)]
        abandon: bool,
        /// Do not ask before abandoning (needed when stdin is not a terminal).
        #[arg(long, requires = "abandon")]
        yes: bool,
    },
    /// Move to another instance: export from this one, import into the new one (same key),
    /// verify, then print what your devices must do.
    Migrate {
        /// URL of the new, empty instance (you are logged in to it with your key).
        #[arg(long)]
        to: String,
    },
    /// Write documents: one JSON object (create or update) or an array (bulk).
    #[command(
        after_help = "Without DATA or with `-`, the JSON is read from stdin. To update, \
        include \"_id\" and the current \"_rev\". Ids are <collection>/<uuid> unless you \
        give an \"_id\" starting with <collection>/."
    )]
    Put {
        /// Collection ([a-z0-9][a-z0-9_-]{0,63}).
        collection: String,
        /// The document(s) as JSON text, or `-` for stdin.
        data: Option<String>,
    },
    /// Read one document by id (the full id or the part after `<collection>/`).
    Get {
        /// Collection.
        collection: String,
        /// Document id.
        id: String,
    },
    /// Query a collection with a Mango selector.
    Find {
        /// Collection.
        collection: String,
        /// Mango selector as JSON, e.g. '{"done":false}'.
        #[arg(long)]
        filter: Option<String>,
        /// Page size (1..=1000; instance default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Mango sort as JSON, e.g. '[{"title":"asc"}]'.
        #[arg(long)]
        sort: Option<String>,
        /// Fields to return, comma-separated.
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        /// Continue after this cursor (from a previous page).
        #[arg(long)]
        bookmark: Option<String>,
        /// Follow cursors and print every page.
        #[arg(long)]
        all: bool,
    },
    /// Delete a document.
    Delete {
        /// Collection.
        collection: String,
        /// Document id.
        id: String,
        /// Revision to delete; default: the current one (read first).
        #[arg(long)]
        rev: Option<String>,
    },
    /// Blobs (files): upload, download, delete, list.
    #[command(subcommand)]
    Blob(BlobCommand),
    /// Print realtime changes of a collection until interrupted (reconnects and
    /// resumes by itself).
    #[command(
        after_help = "Events go to stdout, one per line (--json: the instance's event frame). \
        Connection news go to stderr as plain lines: `subscribed to <c>` once events can flow, \
        `disconnected from <c>: …` when the connection is lost or cannot be made, and \
        `resubscribed to <c> (reconnect N, resuming after seq S)` after a reconnection, which \
        replays what changed meanwhile: no event is lost or repeated. A refused token or \
        permission ends the watch at once with status 1, as does an instance unreachable for \
        longer than --reconnect-for."
    )]
    Watch {
        /// Collection.
        collection: String,
        /// Replay changes after this sequence first (as printed in earlier events).
        #[arg(long)]
        since: Option<String>,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<usize>,
        /// Give up when the instance stays unreachable this long (seconds), at start or
        /// after a disconnection. A connected watch waits for events indefinitely.
        #[arg(long, default_value_t = 3600)]
        reconnect_for: u64,
    },
    /// Two-way sync of a folder of JSON files (<folder>/<collection>/<id>.json) with the
    /// instance, over its CouchDB replication endpoint.
    #[command(
        after_help = "Changes on one side are copied to the other, deletions included. \
        A document changed on both sides keeps the local file and gets the instance's version \
        beside it as <id>.conflict.json; it is not pushed until you delete that file. \
        Needs an owner session, or an app token whose app has the `sync` grant. \
        With --endpoint, prints the replication URL and a fresh bearer token instead, for \
        PouchDB or CouchDB replicators; the token expires like any access token (15 minutes \
        by default), so a device that syncs for longer should be registered with \
        `vibe devices add`."
    )]
    Sync(SyncArgs),
}

/// `vibe sync` arguments.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The folder to sync (created if missing).
    #[arg(required_unless_present = "endpoint")]
    pub folder: Option<PathBuf>,
    /// Only these collections (repeatable). Default: all.
    #[arg(long = "collection")]
    pub collections: Vec<String>,
    /// Print the replication endpoint and a bearer token instead of syncing.
    #[arg(long, conflicts_with = "folder")]
    pub endpoint: bool,
}

/// `vibe apps …`.
#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List registered apps with their grants.
    List,
    /// Show one app's manifest and grants.
    Status {
        /// App id.
        app_id: String,
    },
    /// Grant permissions to an app (registering it if new): read:<c>, write:<c>,
    /// blob:read:<c>, blob:write:<c>, blob:delete:<c>, sync.
    Grant {
        /// App id.
        app_id: String,
        /// Permissions to grant.
        #[arg(required = true)]
        permissions: Vec<String>,
        /// Display name when registering (a registered app keeps its name).
        #[arg(long)]
        name: Option<String>,
        /// Grant setting; only `always` allows access.
        #[arg(long, default_value = "always", value_parser = ["always", "ask", "never"])]
        setting: String,
    },
    /// Revoke permissions (sets them to `never`; effective on the next request).
    Revoke {
        /// App id.
        app_id: String,
        /// Permissions to revoke.
        #[arg(required = true)]
        permissions: Vec<String>,
    },
    /// Remove an app and all its grants.
    Rm {
        /// App id.
        app_id: String,
    },
    /// Mint an app-bound token (use with --app-token or VIBE_APP_TOKEN).
    Token {
        /// App id.
        app_id: String,
    },
}

/// `vibe devices …`.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Register a device: prints its replication URL and its credentials (a device id
    /// and a secret, shown only now), valid until the device is revoked.
    #[command(
        after_help = "Give the device the URL with the credentials as HTTP Basic auth \
        (user = device id, password = secret), e.g. \
        new PouchDB('https://<id>:<secret>@alice.example/api/v1/sync/'). Nothing expires and \
        nothing needs refreshing: the device syncs until `vibe devices revoke`, or until its \
        app is removed. A revocation is stored by the instance, so it holds on every replica \
        and across restarts, and ends the device's open feeds within a second."
    )]
    Add {
        /// A name to recognise the device by.
        name: String,
        /// Act as this app (its `sync` grant is needed); default: as the owner.
        #[arg(long)]
        app: Option<String>,
        /// Scopes (repeatable); default: sync.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List trusted devices.
    List,
    /// Revoke a device: its credentials stop working and its open feeds end at once.
    Revoke {
        /// Device id (as printed by `devices list`).
        device_id: String,
    },
}

/// `vibe blob …`.
#[derive(Debug, Subcommand)]
pub enum BlobCommand {
    /// Upload a file (presigned upload straight to storage; --stream sends it through
    /// the instance instead).
    Put {
        /// Collection the blob belongs to (grants: blob:write:<collection>).
        collection: String,
        /// The file.
        file: PathBuf,
        /// Content type; default guessed from the extension.
        #[arg(long)]
        content_type: Option<String>,
        /// Stream through the instance (PUT /api/v1/blob/upload).
        #[arg(long)]
        stream: bool,
    },
    /// Download a blob by object key.
    Get {
        /// Object key (as printed by `blob put` or `blob ls`).
        object_key: String,
        /// Output file; default: the key's last segment in the current folder.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Delete a blob (object and metadata).
    Rm {
        /// Object key.
        object_key: String,
    },
    /// List a collection's blobs.
    Ls {
        /// Collection.
        collection: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    fn help(path: &[&str]) -> String {
        let mut command = Cli::command();
        for name in path {
            command = command
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("no subcommand {name}"))
                .clone();
        }
        command.render_long_help().to_string()
    }

    /// The device and endpoint help reads as prose (no runs of spaces from broken
    /// line continuations) and says how long each credential lasts.
    #[test]
    fn device_help_says_how_long_credentials_last() {
        let add = help(&["devices", "add"]);
        assert!(!add.contains("   ("), "{add}");
        assert!(add.contains("Nothing expires"), "{add}");
        assert!(add.contains("every replica"), "{add}");
        let sync = help(&["sync"]);
        assert!(sync.contains("vibe devices add"), "{sync}");
    }
}
