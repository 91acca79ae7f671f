//! Streaming upload: forwards a request body to S3 with bounded memory.
//!
//! Bodies smaller than one part go up in a single `PutObject`; larger ones become a multipart
//! upload of [`PART_SIZE`] parts with at most [`PARTS_IN_FLIGHT`] parts uploading while the
//! next one fills, so memory stays near `(PARTS_IN_FLIGHT + 1) × PART_SIZE` whatever the size.
//! A failure or an oversized body aborts the multipart upload, leaving nothing behind.

use std::fmt::Display;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};

use super::BlobError;
use super::store::{BlobStore, classify};

/// Size of each multipart part (S3 needs at least 5 MiB for all but the last part).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading concurrently while the next one is being filled.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Streams `body` into the object `key`. Stops with [`BlobError::TooLarge`] as soon as more
/// than `limit` bytes arrive. Returns the number of bytes stored.
pub async fn upload_stream<S, E>(
    store: &BlobStore,
    key: &str,
    content_type: &str,
    mut body: S,
    limit: u64,
) -> Result<u64, BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let mut buf = BytesMut::new();
    let mut total: u64 = 0;
    let mut multipart: Option<Multipart<'_>> = None;

    let result: Result<(), BlobError> = async {
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| BlobError::Body(e.to_string()))?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(BlobError::TooLarge { size: total, limit });
            }
            while !chunk.is_empty() {
                if buf.capacity() == 0 {
                    buf.reserve(PART_SIZE);
                }
                let take = (PART_SIZE - buf.len()).min(chunk.len());
                buf.extend_from_slice(&chunk.split_to(take));
                if buf.len() == PART_SIZE {
                    let part = buf.split().freeze();
                    buf = BytesMut::new();
                    if multipart.is_none() {
                        multipart = Some(Multipart::start(store, key, content_type).await?);
                    }
                    if let Some(mp) = multipart.as_mut() {
                        mp.push(part).await?;
                    }
                }
            }
        }
        Ok(())
    }
    .await;

    match (result, multipart) {
        (Err(e), Some(mp)) => {
            mp.abort().await;
            Err(e)
        }
        (Err(e), None) => Err(e),
        (Ok(()), None) => {
            store.put(key, content_type, buf.freeze()).await?;
            Ok(total)
        }
        (Ok(()), Some(mut mp)) => {
            let finished = async {
                if !buf.is_empty() {
                    mp.push(buf.freeze()).await?;
                }
                mp.finish().await
            }
            .await;
            match finished {
                Ok(()) => Ok(total),
                Err(e) => {
                    mp.abort().await;
                    Err(e)
                }
            }
        }
    }
}

type PartFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<CompletedPart, BlobError>> + Send + 'a>,
>;

/// An open multipart upload and its parts in flight.
struct Multipart<'a> {
    store: &'a BlobStore,
    key: &'a str,
    upload_id: String,
    next_part: i32,
    in_flight: FuturesUnordered<PartFuture<'a>>,
    done: Vec<CompletedPart>,
}

impl<'a> Multipart<'a> {
    async fn start(
        store: &'a BlobStore,
        key: &'a str,
        content_type: &str,
    ) -> Result<Self, BlobError> {
        let out = store
            .client
            .create_multipart_upload()
            .bucket(&store.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| classify("CreateMultipartUpload", e))?;
        let upload_id = out
            .upload_id()
            .ok_or_else(|| {
                BlobError::Storage("CreateMultipartUpload returned no upload id".into())
            })?
            .to_string();
        Ok(Self {
            store,
            key,
            upload_id,
            next_part: 1,
            in_flight: FuturesUnordered::new(),
            done: Vec::new(),
        })
    }

    /// Queues a part, first waiting for a slot when [`PARTS_IN_FLIGHT`] are uploading.
    async fn push(&mut self, part: Bytes) -> Result<(), BlobError> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_one().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let request = self
            .store
            .client
            .upload_part()
            .bucket(&self.store.bucket)
            .key(self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .content_length(part.len() as i64)
            .body(ByteStream::from(part));
        self.in_flight.push(Box::pin(async move {
            let out = request
                .send()
                .await
                .map_err(|e| classify("UploadPart", e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build())
        }));
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), BlobError> {
        if let Some(done) = self.in_flight.next().await {
            self.done.push(done?);
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), BlobError> {
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        let mut parts = std::mem::take(&mut self.done);
        parts.sort_by_key(|p| p.part_number());
        self.store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("CompleteMultipartUpload", e))
    }

    /// Best effort: the sweep aborts whatever this leaves behind.
    async fn abort(self) {
        drop(self.in_flight);
        if let Err(e) = self.store.abort_multipart(self.key, &self.upload_id).await {
            tracing::warn!(error = %e, "could not abort a multipart upload; the sweep will retry");
        }
    }
}
