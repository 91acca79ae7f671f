//! The CLI's configuration folder: the key (`key.pem`) and the sessions of each instance
//! (`sessions.json`, tokens per instance URL), both private to the user (0600/0700).
//!
//! Folder: `--config-dir`, else `$VIBE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/vibe`, else
//! `$HOME/.config/vibe`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::client::{Client, Instance, TokenSource, Tokens};
use crate::error::{ClientError, Result};

/// The configuration folder.
#[derive(Debug, Clone)]
pub struct ConfigDir {
    path: PathBuf,
}

/// One stored login.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredSession {
    /// The DID that logged in.
    pub did: String,
    /// The tokens (rotated on every refresh).
    pub tokens: Tokens,
}

/// Contents of `sessions.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Sessions {
    /// The instance used when no `--instance` is given (the last one logged in to).
    #[serde(default)]
    pub default_instance: Option<String>,
    /// Sessions by instance URL.
    #[serde(default)]
    pub instances: BTreeMap<String, StoredSession>,
}

impl ConfigDir {
    /// Resolve the folder (see the module docs); it is created on first write.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Self> {
        if let Some(path) = explicit {
            return Ok(Self { path });
        }
        let from_env = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let path = from_env("XDG_CONFIG_HOME")
            .map(|p| p.join("vibe"))
            .or_else(|| from_env("HOME").map(|h| h.join(".config").join("vibe")))
            .ok_or_else(|| {
                ClientError::Usage(
                    "cannot find a configuration folder: set HOME, XDG_CONFIG_HOME or pass --config-dir".into(),
                )
            })?;
        Ok(Self { path })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Default key file.
    pub fn key_path(&self) -> PathBuf {
        self.path.join("key.pem")
    }

    /// Session store file.
    pub fn sessions_path(&self) -> PathBuf {
        self.path.join("sessions.json")
    }

    /// Load `sessions.json` (empty when absent).
    pub fn load_sessions(&self) -> Result<Sessions> {
        let path = self.sessions_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Usage(format!(
                    "{} is corrupt ({e}); delete it and log in again",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Sessions::default()),
            Err(e) => Err(ClientError::io(&path, e)),
        }
    }

    /// Replace `sessions.json` atomically (mode 0600).
    pub fn save_sessions(&self, sessions: &Sessions) -> Result<()> {
        create_private_dir(&self.path)?;
        let bytes = serde_json::to_vec_pretty(sessions).expect("sessions serialize");
        write_private(&self.sessions_path(), &bytes)
    }

    /// Store (or replace) the session of `instance` and make it the default.
    pub fn store_session(&self, instance: &str, session: StoredSession) -> Result<()> {
        let mut sessions = self.load_sessions()?;
        sessions.instances.insert(instance.to_string(), session);
        sessions.default_instance = Some(instance.to_string());
        self.save_sessions(&sessions)
    }

    /// Forget the session of `instance`.
    pub fn remove_session(&self, instance: &str) -> Result<Option<StoredSession>> {
        let mut sessions = self.load_sessions()?;
        let removed = sessions.instances.remove(instance);
        if sessions.default_instance.as_deref() == Some(instance) {
            sessions.default_instance = None;
        }
        self.save_sessions(&sessions)?;
        Ok(removed)
    }

    /// The instance URL to use: explicit, else the default from the last login.
    pub fn instance_url(&self, explicit: Option<&str>) -> Result<String> {
        if let Some(url) = explicit {
            return Ok(Instance::new(url)?.url());
        }
        self.load_sessions()?.default_instance.ok_or_else(|| {
            ClientError::Usage("no instance given: pass --instance URL or set VIBE_INSTANCE".into())
        })
    }

    /// An authenticated client for `instance` from its stored session; refreshed
    /// tokens are written back to the store.
    pub fn client(&self, instance: &Instance) -> Result<Client> {
        let url = instance.url();
        let sessions = self.load_sessions()?;
        let stored =
            sessions
                .instances
                .get(&url)
                .cloned()
                .ok_or_else(|| ClientError::NotLoggedIn {
                    instance: url.clone(),
                })?;
        let dir = self.clone();
        let did = stored.did.clone();
        let observer = Arc::new(move |tokens: &Tokens| {
            let result = dir.load_sessions().and_then(|mut sessions| {
                sessions.instances.insert(
                    url.clone(),
                    StoredSession {
                        did: did.clone(),
                        tokens: tokens.clone(),
                    },
                );
                dir.save_sessions(&sessions)
            });
            if let Err(e) = result {
                eprintln!("warning: could not save refreshed tokens: {e}");
            }
        });
        Ok(Client::new(
            instance.clone(),
            TokenSource::session_observed(stored.tokens, Some(observer)),
        ))
    }
}

/// Create `dir` (and parents) with mode 0700 where new.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| ClientError::io(dir, e))
}

/// Write `bytes` to `path` atomically with mode 0600 (temp file + rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temp).map_err(|e| ClientError::io(&temp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| ClientError::io(&temp, e))?;
    drop(file);
    std::fs::rename(&temp, path).map_err(|e| ClientError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: i64) -> Tokens {
        Tokens {
            access_token: format!("a{n}"),
            access_token_expires_in: n,
            refresh_token: format!("r{n}"),
            refresh_token_expires_at: n,
            token_type: "Bearer".into(),
        }
    }

    #[test]
    fn sessions_round_trip_privately_and_track_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let config = ConfigDir::resolve(Some(dir.path().join("cfg"))).unwrap();
        assert!(config.load_sessions().unwrap().instances.is_empty());
        let session = |n| StoredSession {
            did: "did:vibe:z6Mk".into(),
            tokens: tokens(n),
        };
        config.store_session("http://a", session(1)).unwrap();
        config.store_session("http://b", session(2)).unwrap();
        let loaded = config.load_sessions().unwrap();
        assert_eq!(loaded.default_instance.as_deref(), Some("http://b"));
        assert_eq!(loaded.instances["http://a"].tokens, tokens(1));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&config.sessions_path()), 0o600);
            assert_eq!(mode(config.path()), 0o700);
        }
        assert_eq!(config.instance_url(None).unwrap(), "http://b");
        assert_eq!(
            config.instance_url(Some("http://c:1/")).unwrap(),
            "http://c:1"
        );
        config.remove_session("http://b").unwrap();
        assert!(config.instance_url(None).is_err());
        let missing = config
            .client(&Instance::new("http://b").unwrap())
            .unwrap_err();
        assert!(missing.to_string().contains("vibe login"), "{missing}");
    }
}
