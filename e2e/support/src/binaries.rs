//! Where the server executables live: an environment variable, or the tools folder that
//! `deploy/local/install-servers` fills.

use std::path::PathBuf;

use crate::SupportError;

/// Overrides the pouchdb-server executable.
pub const POUCHDB_SERVER_BIN_ENV: &str = "VIBE_POUCHDB_SERVER_BIN";
/// Overrides the s3s-fs executable.
pub const S3S_FS_BIN_ENV: &str = "VIBE_S3S_FS_BIN";
/// Overrides the tools folder (default `$HOME/.cache/vibe-cloud/tools`).
pub const TOOLS_DIR_ENV: &str = "VIBE_TOOLS_DIR";

/// The folder `deploy/local/install-servers` installs into.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(TOOLS_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/".into());
    home.join(".cache/vibe-cloud/tools")
}

/// The pouchdb-server executable, or an error that says how to install it.
pub fn pouchdb_server() -> Result<PathBuf, SupportError> {
    locate(
        "pouchdb-server",
        POUCHDB_SERVER_BIN_ENV,
        tools_dir().join("pouchdb/node_modules/.bin/pouchdb-server"),
    )
}

/// The s3s-fs executable, or an error that says how to install it.
pub fn s3s_fs() -> Result<PathBuf, SupportError> {
    locate("s3s-fs", S3S_FS_BIN_ENV, tools_dir().join("s3s/bin/s3s-fs"))
}

/// `node_modules` of the PouchDB client (with its memory adapter) that
/// `deploy/local/install-servers` installs for sync tests, or an error that says how to
/// install it.
pub fn pouchdb_client_modules() -> Result<PathBuf, SupportError> {
    let modules = tools_dir().join("pouchdb-client/node_modules");
    if modules.join("pouchdb").is_dir() && modules.join("pouchdb-adapter-memory").is_dir() {
        Ok(modules)
    } else {
        Err(SupportError::MissingBinary {
            server: "the PouchDB client",
            path: modules,
            env_var: TOOLS_DIR_ENV,
        })
    }
}

fn locate(
    server: &'static str,
    env_var: &'static str,
    default: PathBuf,
) -> Result<PathBuf, SupportError> {
    let path = std::env::var_os(env_var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or(default);
    if path.is_file() {
        Ok(path)
    } else {
        Err(SupportError::MissingBinary {
            server,
            path,
            env_var,
        })
    }
}
