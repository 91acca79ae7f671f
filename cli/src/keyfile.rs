//! The owner's Ed25519 key on disk: a PKCS#8 PEM file readable by its owner only (0600),
//! refused when group or others can read it (as ssh does).

use std::path::Path;

use vibe_identity::Keypair;

use crate::error::{ClientError, Result};

/// Generate a key pair and write it to `path` (mode 0600). Refuses to replace an
/// existing file unless `force`.
pub fn generate(path: &Path, force: bool) -> Result<Keypair> {
    let key = Keypair::generate();
    write(path, &key, force)?;
    Ok(key)
}

/// Write `key` as PEM to `path` with mode 0600 (parent folders are created 0700).
pub fn write(path: &Path, key: &Keypair, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(ClientError::Key(format!(
            "{} already exists; pass --force to replace it (the old identity is lost)",
            path.display()
        )));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::session::create_private_dir(parent)?;
    }
    crate::session::write_private(path, key.to_pem().as_bytes())
}

/// Load the key at `path`, refusing files that group or others may read.
pub fn load(path: &Path) -> Result<Keypair> {
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ClientError::Key(format!(
            "no key at {}: run `vibe keygen` first (or pass --key)",
            path.display()
        )),
        _ => ClientError::io(path, e),
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ClientError::Key(format!(
                "{} is readable by others (mode {mode:o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    Keypair::from_file(path).map_err(|e| ClientError::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_private_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key.pem");
        let key = generate(&path, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(load(&path).unwrap().did(), key.did());
        let again = generate(&path, false).unwrap_err();
        assert!(again.to_string().contains("--force"), "{again}");
        let replaced = generate(&path, true).unwrap();
        assert_ne!(replaced.did(), key.did());
    }

    #[cfg(unix)]
    #[test]
    fn keys_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        generate(&path, false).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_missing_key_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("nope.pem")).unwrap_err();
        assert!(err.to_string().contains("vibe keygen"), "{err}");
    }
}
