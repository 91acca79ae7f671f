//! Archive files on disk: reading one as a request body, decrypting it with the owner's
//! key when it is encrypted (age, the owner's Ed25519 key as an ssh-ed25519 identity).
//!
//! The key conversion uses `ssh-key` (the owner's seed and public key as an OpenSSH
//! Ed25519 private key) and decryption is `age`'s; nothing cryptographic is done here.

use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use futures::TryStreamExt;
use ssh_key::private::{Ed25519Keypair, Ed25519PrivateKey, KeypairData};
use ssh_key::public::Ed25519PublicKey;
use tokio_util::io::{ReaderStream, StreamReader, SyncIoBridge};
use vibe_api::export::AGE_MAGIC;
use vibe_identity::Keypair;

use crate::client::Progress;
use crate::error::{ClientError, Result};

/// Bytes read at a time.
const PIECE: usize = 256 * 1024;

/// The owner's key as an age identity (an OpenSSH Ed25519 private key).
pub fn age_identity(key: &Keypair) -> Result<age::ssh::Identity> {
    let pair = Ed25519Keypair {
        public: Ed25519PublicKey(key.public_key().to_bytes()),
        private: Ed25519PrivateKey::from_bytes(&key.seed()),
    };
    let private = ssh_key::PrivateKey::new(KeypairData::Ed25519(pair), key.did().to_string())
        .map_err(|e| ClientError::Key(e.to_string()))?;
    let pem = private
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| ClientError::Key(e.to_string()))?;
    age::ssh::Identity::from_buffer(pem.as_bytes(), None)
        .map_err(|e| ClientError::Key(e.to_string()))
}

/// Whether the file at `path` is age-encrypted.
pub fn is_encrypted(path: &Path) -> Result<bool> {
    let mut file = std::fs::File::open(path).map_err(|e| ClientError::io(path, e))?;
    let mut start = vec![0u8; AGE_MAGIC.len()];
    let read = file
        .read(&mut start)
        .map_err(|e| ClientError::io(path, e))?;
    Ok(read == AGE_MAGIC.len() && start == AGE_MAGIC)
}

/// The archive at `path` as a streamed request body of plain tar, and the file's size.
/// An encrypted file is decrypted on the fly with `key`; progress counts file bytes.
pub async fn plain_body(
    path: &Path,
    key: &Keypair,
    progress: Option<Progress>,
) -> Result<(reqwest::Body, u64)> {
    let size = std::fs::metadata(path)
        .map_err(|e| ClientError::io(path, e))?
        .len();
    if !is_encrypted(path)? {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClientError::io(path, e))?;
        let stream = ReaderStream::with_capacity(file, PIECE).inspect_ok(move |chunk| {
            if let Some(progress) = &progress {
                progress(chunk.len() as u64);
            }
        });
        return Ok((reqwest::Body::wrap_stream(stream), size));
    }
    let file = std::fs::File::open(path).map_err(|e| ClientError::io(path, e))?;
    let counted = Counting {
        inner: file,
        progress,
    };
    let body = decrypting_body(counted, key, path.display().to_string()).await?;
    Ok((body, size))
}

/// The age-encrypted stream `encrypted` (a backup served by `GET /api/v1/restore/archive`),
/// decrypted here with `key` as it arrives, as a streamed request body of plain tar.
/// `label` names the source in errors.
pub async fn decrypted_stream_body<S>(
    encrypted: S,
    key: &Keypair,
    label: String,
) -> Result<reqwest::Body>
where
    S: futures::Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
{
    let reader = SyncIoBridge::new(StreamReader::new(encrypted));
    decrypting_body(reader, key, label).await
}

/// Decrypts `encrypted` on a blocking thread with `key` and streams the plain bytes as a
/// request body. The age header is read and the key tried before this returns, so a file
/// that is not age or is encrypted to another key is an error here, not a broken body.
async fn decrypting_body<R>(encrypted: R, key: &Keypair, label: String) -> Result<reqwest::Body>
where
    R: Read + Send + 'static,
{
    let identity = age_identity(key)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel::<Result<()>>();
    tokio::task::spawn_blocking(move || {
        let decryptor = match age::Decryptor::new_buffered(std::io::BufReader::new(encrypted)) {
            Ok(decryptor) => decryptor,
            Err(e) => {
                let _ = opened_tx.send(Err(ClientError::Usage(format!(
                    "{label}: not a readable age file: {e}"
                ))));
                return;
            }
        };
        let mut reader = match decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)) {
            Ok(reader) => reader,
            Err(e) => {
                let _ = opened_tx.send(Err(ClientError::Key(format!(
                    "{label} cannot be decrypted with this key ({e}); it is encrypted to \
                     another owner"
                ))));
                return;
            }
        };
        if opened_tx.send(Ok(())).is_err() {
            return;
        }
        loop {
            let mut piece = vec![0u8; PIECE];
            match reader.read(&mut piece) {
                Ok(0) => break,
                Ok(n) => {
                    piece.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(piece))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    // A damaged or cut file: the body breaks, the import is refused.
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    opened_rx.await.map_err(|_| {
        ClientError::Usage("the decrypting thread stopped before it opened the archive".into())
    })??;
    let mut rx = rx;
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(reqwest::Body::wrap_stream(stream))
}

/// Counts the bytes read from a file into a progress callback.
struct Counting<R> {
    inner: R,
    progress: Option<Progress>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(progress) = &self.progress {
            progress(n as u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_owner_key_decrypts_what_was_encrypted_to_its_did() {
        let owner = Keypair::from_seed([9; 32]);
        // Encrypt as the data plane does: to the DID's key as an ssh-ed25519 recipient.
        let line = ssh_key::PublicKey::new(
            ssh_key::public::KeyData::Ed25519(Ed25519PublicKey(owner.public_key().to_bytes())),
            "owner",
        )
        .to_openssh()
        .unwrap();
        let recipient: age::ssh::Recipient = line.parse().unwrap();
        let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as _)).unwrap();
        let mut sealed = Vec::new();
        let mut writer = encryptor.wrap_output(&mut sealed).unwrap();
        writer.write_all(b"hello archive").unwrap();
        writer.finish().unwrap();

        let identity = age_identity(&owner).unwrap();
        let decryptor = age::Decryptor::new(&sealed[..]).unwrap();
        let mut plain = String::new();
        decryptor
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, "hello archive");

        let stranger = age_identity(&Keypair::from_seed([8; 32])).unwrap();
        let decryptor = age::Decryptor::new(&sealed[..]).unwrap();
        assert!(
            decryptor
                .decrypt(std::iter::once(&stranger as &dyn age::Identity))
                .is_err()
        );
    }
}
