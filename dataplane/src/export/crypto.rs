//! Encryption of archives to the owner: age (`age` crate) with the owner's Ed25519 DID key
//! as an `ssh-ed25519` recipient.
//!
//! A `did:vibe` DID carries the owner's Ed25519 public key (`vibe_identity::Did::public_key`);
//! `ssh-key` writes it as an OpenSSH public key line, which age parses as an ssh-ed25519
//! recipient. No cryptography is done here: age derives the X25519 key and encrypts.

use std::io;
use std::str::FromStr;

use ssh_key::public::{Ed25519PublicKey, KeyData};
use tokio::io::AsyncWrite;
use tokio_util::compat::{FuturesAsyncWriteCompatExt, TokioAsyncWriteCompatExt};
use vibe_identity::Did;

/// The owner's key as an OpenSSH public key line (`ssh-ed25519 AAAA… <comment>`).
pub fn ssh_public_key(owner: &Did) -> Result<String, ssh_key::Error> {
    let key = KeyData::Ed25519(Ed25519PublicKey(owner.public_key().to_bytes()));
    ssh_key::PublicKey::new(key, owner.to_string()).to_openssh()
}

/// The age recipient of `owner`.
pub fn recipient(owner: &Did) -> io::Result<age::ssh::Recipient> {
    let line = ssh_public_key(owner).map_err(io::Error::other)?;
    age::ssh::Recipient::from_str(&line)
        .map_err(|e| io::Error::other(format!("owner key is not an age recipient: {e:?}")))
}

/// Wrap `out` so that what is written to it is encrypted to `owner`; shutting the returned
/// writer down finishes the age stream and shuts `out` down.
pub async fn encrypt_to_owner<W>(
    owner: &Did,
    out: W,
) -> io::Result<impl AsyncWrite + Unpin + Send + 'static>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let recipient = recipient(owner)?;
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as _))
        .map_err(io::Error::other)?;
    let writer = encryptor.wrap_async_output(out.compat_write()).await?;
    Ok(writer.compat_write())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vibe_identity::Keypair;

    #[test]
    fn the_did_key_becomes_an_ssh_ed25519_recipient() {
        let owner = Keypair::from_seed([7; 32]).did();
        let line = ssh_public_key(&owner).unwrap();
        assert!(
            line.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"),
            "{line}"
        );
        assert!(recipient(&owner).is_ok());
        // The same key read back is the DID's key.
        let parsed = ssh_key::PublicKey::from_openssh(&line).unwrap();
        let KeyData::Ed25519(key) = parsed.key_data() else {
            panic!("not ed25519")
        };
        assert_eq!(key.0, owner.public_key().to_bytes());
    }
}
