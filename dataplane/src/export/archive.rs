//! Reading and writing archive entries with their SHA-256 sums (`vibe_api::export`).
//!
//! The tar container is `astral-tokio-tar`'s; this module only adds the bookkeeping the
//! manifest needs: every entry's path, size and sum, computed while the bytes pass.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tar::{Builder, EntryType, Header};
use vibe_api::export::ManifestEntry;

/// An [`AsyncRead`] that hashes and counts what passes through it. With an expected size
/// it fails when the source ends early or goes on past it, so a tar entry written from it
/// is either exactly as long as its header says or not written at all.
pub struct Summing<R> {
    inner: R,
    hash: Sha256,
    read: u64,
    expected: Option<u64>,
}

impl<R: AsyncRead + Unpin> Summing<R> {
    /// Sum whatever `inner` yields.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
            read: 0,
            expected: None,
        }
    }

    /// Sum `inner`, which must yield exactly `size` bytes.
    pub fn exactly(inner: R, size: u64) -> Self {
        Self {
            expected: Some(size),
            ..Self::new(inner)
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Size and lower-case hex SHA-256 of what was read.
    pub fn finish(self) -> (u64, String) {
        (self.read, hex::encode(self.hash.finalize()))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Summing<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                this.read += fresh.len() as u64;
                this.hash.update(fresh);
                if let Some(expected) = this.expected {
                    if this.read > expected {
                        return Poll::Ready(Err(io::Error::other(format!(
                            "source is longer than the {expected} bytes announced"
                        ))));
                    }
                    if fresh.is_empty() && this.read < expected {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("source ended after {} of {expected} bytes", this.read),
                        )));
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Size and lower-case hex SHA-256 of `bytes`.
pub fn sum_of(bytes: &[u8]) -> (u64, String) {
    (bytes.len() as u64, hex::encode(Sha256::digest(bytes)))
}

/// A tar stream being written, remembering each entry for the manifest.
pub struct ArchiveWriter<W: AsyncWrite + Unpin + Send + 'static> {
    tar: Builder<W>,
    entries: Vec<ManifestEntry>,
}

fn file_header(size: u64) -> Header {
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    header
}

impl<W: AsyncWrite + Unpin + Send + 'static> ArchiveWriter<W> {
    /// Start an archive on `out`.
    pub fn new(out: W) -> Self {
        Self {
            tar: Builder::new(out),
            entries: Vec::new(),
        }
    }

    /// Append an entry held in memory.
    pub async fn append_bytes(&mut self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let mut header = file_header(bytes.len() as u64);
        self.tar.append_data(&mut header, path, bytes).await?;
        let (size, sha256) = sum_of(bytes);
        self.entries.push(ManifestEntry {
            path: path.to_string(),
            size,
            sha256,
        });
        Ok(())
    }

    /// Append an entry streamed from `source`, which must yield exactly `size` bytes.
    pub async fn append_stream<R: AsyncRead + Unpin>(
        &mut self,
        path: &str,
        size: u64,
        source: R,
    ) -> io::Result<()> {
        let mut header = file_header(size);
        let mut summing = Summing::exactly(source, size);
        self.tar
            .append_data(&mut header, path, &mut summing)
            .await?;
        let (size, sha256) = summing.finish();
        self.entries.push(ManifestEntry {
            path: path.to_string(),
            size,
            sha256,
        });
        Ok(())
    }

    /// The entries written so far (what the manifest lists).
    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }

    /// Append the manifest (not listed in itself), end the tar and shut `out` down (which
    /// also finishes an encrypting writer). Returns `out`.
    pub async fn finish(mut self, manifest: &[u8]) -> io::Result<W> {
        let mut header = file_header(manifest.len() as u64);
        self.tar
            .append_data(&mut header, vibe_api::export::MANIFEST_PATH, manifest)
            .await?;
        let mut out = self.tar.into_inner().await?;
        tokio::io::AsyncWriteExt::shutdown(&mut out).await?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn written_entries_read_back_with_their_sums() {
        let mut writer = ArchiveWriter::new(Vec::new());
        writer.append_bytes("a.json", b"{}").await.unwrap();
        writer
            .append_stream("blobs/x", 5, &b"hello"[..])
            .await
            .unwrap();
        let listed = writer.entries().to_vec();
        assert_eq!(listed[1].sha256, sum_of(b"hello").1);
        let mut writer2 = ArchiveWriter::new(Vec::new());
        writer2.append_bytes("a.json", b"{}").await.unwrap();
        let buffer = writer2.finish(b"[]").await.unwrap();
        let mut archive = tokio_tar::Archive::new(&buffer[..]);
        let mut entries = archive.entries().unwrap();
        let mut paths = Vec::new();
        while let Some(entry) = entries.next().await {
            let mut entry = entry.unwrap();
            let mut text = String::new();
            entry.read_to_string(&mut text).await.unwrap();
            paths.push((entry.path().unwrap().display().to_string(), text));
        }
        assert_eq!(
            paths,
            vec![
                ("a.json".to_string(), "{}".to_string()),
                ("manifest.json".to_string(), "[]".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn a_short_or_long_source_is_an_error() {
        let mut writer = ArchiveWriter::new(Vec::new());
        let short = writer.append_stream("b", 10, &b"hello"[..]).await;
        assert!(short.is_err());
        let mut writer = ArchiveWriter::new(Vec::new());
        let long = writer.append_stream("b", 2, &b"hello"[..]).await;
        assert!(long.is_err());
    }
}
