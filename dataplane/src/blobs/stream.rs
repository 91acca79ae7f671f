//! Streaming upload: forwards a request body to S3 with bounded memory.
//!
//! - A body of a known length (up to [`MAX_SINGLE_PUT`]) goes up in **one** `PutObject` whose
//!   body is the request body itself ([`upload_sized`]): each chunk is passed on as it
//!   arrives, nothing is buffered or copied, and memory stays at the HTTP buffers' size. A
//!   body that ends early or fails makes the `PutObject` fail, so nothing is stored.
//! - A body of unknown length ([`upload_stream`]) smaller than one part goes up in a single
//!   `PutObject`; a larger one becomes a multipart upload of [`PART_SIZE`] parts with at most
//!   [`PARTS_IN_FLIGHT`] parts uploading while the next one fills, so memory stays near
//!   `(PARTS_IN_FLIGHT + 1) × PART_SIZE` whatever the size. A failure or an oversized body
//!   aborts the multipart upload, leaving nothing behind.
//!
//! Neither signs the payload (`UNSIGNED-PAYLOAD`, as a presigned URL's `PUT` does): hashing
//! every byte with SHA-256 for the signature cost more CPU than the transfer itself, and the
//! store hashed it again to check.

use std::fmt::Display;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};

use super::BlobError;
use super::store::{BlobStore, CONNECT_TIMEOUT, classify};
use aws_sdk_s3::config::timeout::TimeoutConfig;

/// Size of each multipart part (S3 needs at least 5 MiB for all but the last part).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading concurrently while the next one is being filled.
pub const PARTS_IN_FLIGHT: usize = 3;
/// Largest body sent in one `PutObject` (S3's limit for a single request).
pub const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// Streams `body`, which must be exactly `length` bytes (at most [`MAX_SINGLE_PUT`]), into
/// the object `key` with one `PutObject`, chunk by chunk as it arrives. A body that fails,
/// ends before `length` bytes or goes beyond them is [`BlobError::Body`], and the store
/// keeps nothing of it. Returns `length`.
pub async fn upload_sized<S, E>(
    store: &BlobStore,
    key: &str,
    content_type: &str,
    body: S,
    length: u64,
) -> Result<u64, BlobError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Display,
{
    if length > MAX_SINGLE_PUT {
        return Err(BlobError::Storage(format!(
            "a single PutObject carries at most {MAX_SINGLE_PUT} bytes"
        )));
    }
    let fault = Arc::new(Mutex::new(None));
    let sent_all = Arc::new(tokio::sync::Notify::new());
    let exact = ExactBody {
        inner: Mutex::new(body),
        remaining: length,
        fault: fault.clone(),
        sent_all: sent_all.clone(),
    };
    // The SDK's read timeout runs from the start of the request, body included: an upload
    // slower than it (a large file from a slow client) would be cut off half-way. So it is
    // off for this request, and the store gets `read_timeout` from the body's last byte.
    let no_read_timeout = aws_sdk_s3::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .disable_read_timeout()
            .build(),
    );
    let put = store
        .client
        .put_object()
        .bucket(&store.bucket)
        .key(key)
        .content_type(content_type)
        .content_length(length as i64)
        .body(ByteStream::from_body_1_x(exact))
        .customize()
        .disable_payload_signing()
        .config_override(no_read_timeout)
        .send();
    let answer_deadline = async {
        sent_all.notified().await;
        tokio::time::sleep(store.read_timeout).await;
    };
    let sent = tokio::select! {
        sent = put => sent,
        () = answer_deadline => {
            return Err(BlobError::Unavailable(
                format!(
                    "PutObject: no answer within {:?} of the body's last byte",
                    store.read_timeout
                )
                .into(),
            ));
        }
    };
    // The body's own fault first: a client that stopped sending is a bad request, not an
    // unavailable store.
    let fault = fault
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match (fault, sent) {
        (Some(fault), _) => Err(BlobError::Body(fault)),
        (None, Ok(_)) => Ok(length),
        (None, Err(e)) => Err(classify("PutObject", e)),
    }
}

/// A request body of exactly `remaining` more bytes, as an `http_body` body the S3 client
/// can send. The stream sits in a `Mutex` only to be `Sync` (it is reached through `&mut`,
/// never locked). What went wrong with the body is left in `fault`.
struct ExactBody<S> {
    inner: Mutex<S>,
    remaining: u64,
    fault: Arc<Mutex<Option<String>>>,
    /// Told when the whole body has been handed over.
    sent_all: Arc<tokio::sync::Notify>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BodyFault(String);

impl<S> ExactBody<S> {
    fn fail(&mut self, why: String) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyFault>>> {
        *self
            .fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why.clone());
        self.remaining = 0;
        Poll::Ready(Some(Err(BodyFault(why))))
    }
}

impl<S, E> http_body::Body for ExactBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    type Data = Bytes;
    type Error = BodyFault;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyFault>>> {
        let this = self.get_mut();
        let next = this
            .inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .poll_next_unpin(cx);
        match next {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                if n > this.remaining {
                    return this.fail("The body is longer than its Content-Length.".into());
                }
                this.remaining -= n;
                if this.remaining == 0 {
                    // The HTTP client may not ask again once the declared length is sent.
                    this.sent_all.notify_one();
                }
                Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => this.fail(e.to_string()),
            Poll::Ready(None) if this.remaining > 0 => {
                this.fail("The body is shorter than its Content-Length.".into())
            }
            Poll::Ready(None) => {
                this.sent_all.notify_one();
                Poll::Ready(None)
            }
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

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
            .body(ByteStream::from(part))
            .customize()
            .disable_payload_signing();
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
