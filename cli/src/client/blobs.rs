//! Blobs: presigned upload (upload-url → PUT to storage → finalize), presigned download,
//! delete, list, and the streaming upload route for clients that cannot reach storage.

use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use vibe_api::blobs::{FinalizeUploadRequest, UploadUrlRequest};

use super::{Client, api_error};
use crate::error::{ClientError, Result};

/// Blob metadata as the instance returns it (`_id` = object key, `originalFilename`,
/// `contentType`, `size`, `collection`, …).
pub type BlobMeta = Value;

/// Reports transferred bytes (called with each increment).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// `POST /api/v1/blob/upload-url` answer.
pub type UploadUrl = vibe_api::blobs::UploadUrlResponse;

/// Guess a content type from a file name's extension.
pub fn guess_content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match extension.as_str() {
        "txt" | "md" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| ClientError::Usage(format!("{} has no file name", path.display())))
}

async fn file_body(path: &Path, progress: Option<Progress>) -> Result<(reqwest::Body, u64)> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ClientError::io(path, e))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| ClientError::io(path, e))?
        .len();
    let stream = ReaderStream::with_capacity(file, 256 * 1024).inspect_ok(move |chunk| {
        if let Some(progress) = &progress {
            progress(chunk.len() as u64);
        }
    });
    Ok((reqwest::Body::wrap_stream(stream), size))
}

impl Client {
    fn blob_key_url(&self, prefix: &str, object_key: &str) -> url::Url {
        let mut url = self.instance().endpoint(prefix);
        url.path_segments_mut()
            .expect("http URLs have paths")
            .push(object_key);
        url
    }

    /// `POST /api/v1/blob/upload-url`.
    pub async fn blob_upload_url(
        &self,
        collection: &str,
        filename: &str,
        content_type: &str,
        size: u64,
    ) -> Result<UploadUrl> {
        let body = UploadUrlRequest {
            collection_name: collection.to_string(),
            original_filename: filename.to_string(),
            content_type: content_type.to_string(),
            size,
        };
        self.send_json("POST /api/v1/blob/upload-url", |i| {
            i.request(Method::POST, "api/v1/blob/upload-url")
                .json(&body)
        })
        .await
    }

    /// `POST /api/v1/blob/finalize-upload` → metadata.
    pub async fn blob_finalize(
        &self,
        collection: &str,
        upload: &UploadUrl,
        filename: &str,
        content_type: &str,
        size: u64,
    ) -> Result<BlobMeta> {
        let body = FinalizeUploadRequest {
            object_key: upload.object_key.clone(),
            original_filename: filename.to_string(),
            content_type: content_type.to_string(),
            size,
            collection_name: collection.to_string(),
        };
        self.send_json("POST /api/v1/blob/finalize-upload", |i| {
            i.request(Method::POST, "api/v1/blob/finalize-upload")
                .json(&body)
        })
        .await
    }

    /// Upload a file with the presigned flow; returns the metadata.
    pub async fn blob_put_file(
        &self,
        collection: &str,
        path: &Path,
        content_type: Option<&str>,
        progress: Option<Progress>,
    ) -> Result<BlobMeta> {
        let filename = file_name(path)?;
        let content_type = content_type.unwrap_or_else(|| guess_content_type(path));
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| ClientError::io(path, e))?
            .len();
        let upload = self
            .blob_upload_url(collection, &filename, content_type, size)
            .await?;
        let (body, _) = file_body(path, progress).await?;
        self.put_presigned(&upload, body, content_type, size)
            .await?;
        self.blob_finalize(collection, &upload, &filename, content_type, size)
            .await
    }

    /// PUT `body` to a presigned storage URL with the signed headers, content type and length.
    pub async fn put_presigned(
        &self,
        upload: &UploadUrl,
        body: impl Into<reqwest::Body>,
        content_type: &str,
        size: u64,
    ) -> Result<()> {
        let url =
            url::Url::parse(&upload.presigned_url).map_err(|e| ClientError::InvalidResponse {
                what: "presigned URL".into(),
                problem: e.to_string(),
            })?;
        let mut request = self.instance().http().put(url.clone());
        for (name, value) in &upload.headers {
            // Content type and length are set below (once: a repeated header breaks the
            // signature); `host` comes from the URL.
            let set_below = ["content-length", "content-type", "host"];
            if !set_below.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                request = request.header(name, value);
            }
        }
        let response = request
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .map_err(|e| ClientError::transport(&url, e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(api_error(response).await)
        }
    }

    /// `PUT /api/v1/blob/upload?collection=&filename=`: stream a file through the
    /// instance (no direct storage access needed); returns the metadata.
    pub async fn blob_stream_file(
        &self,
        collection: &str,
        path: &Path,
        content_type: Option<&str>,
        progress: Option<Progress>,
    ) -> Result<BlobMeta> {
        let filename = file_name(path)?;
        let content_type = content_type
            .unwrap_or_else(|| guess_content_type(path))
            .to_string();
        // The body stream is consumed by the first attempt, so no retry after a refresh:
        // get a fresh token first instead.
        let token = self.access_token().await?;
        let (body, size) = file_body(path, progress).await?;
        let mut url = self.instance().endpoint("api/v1/blob/upload");
        url.query_pairs_mut()
            .append_pair("collection", collection)
            .append_pair("filename", &filename);
        let mut request = self
            .instance()
            .http()
            .put(url)
            .bearer_auth(token)
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, size)
            .body(body);
        if let Some(app) = self.app() {
            request = request.header(super::APP_ID_HEADER, app);
        }
        let response = super::send(request, "PUT /api/v1/blob/upload").await?;
        super::decode(response, "PUT /api/v1/blob/upload").await
    }

    /// `GET /api/v1/blob/download-url/{objectKey}` → presigned GET URL.
    pub async fn blob_download_url(&self, object_key: &str) -> Result<String> {
        let url = self.blob_key_url("api/v1/blob/download-url", object_key);
        let body: Value = self
            .send_json("GET /api/v1/blob/download-url", |i| {
                i.http().get(url.clone())
            })
            .await?;
        body["url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::InvalidResponse {
                what: "GET /api/v1/blob/download-url".into(),
                problem: "no `url` field".into(),
            })
    }

    /// Download a blob into `out`, creating or replacing it; returns the byte count.
    /// `on_length` is told the total size when storage announces it.
    pub async fn blob_get_to_file(
        &self,
        object_key: &str,
        out: &Path,
        on_length: impl FnOnce(Option<u64>),
        progress: Option<Progress>,
    ) -> Result<u64> {
        let presigned = self.blob_download_url(object_key).await?;
        let url = url::Url::parse(&presigned).map_err(|e| ClientError::InvalidResponse {
            what: "download URL".into(),
            problem: e.to_string(),
        })?;
        let response = self
            .instance()
            .http()
            .get(url.clone())
            .send()
            .await
            .map_err(|e| ClientError::transport(&url, e))?;
        if !response.status().is_success() {
            return Err(api_error(response).await);
        }
        on_length(response.content_length());
        let partial = out.with_extension("vibe-partial");
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| ClientError::io(&partial, e))?;
        let mut stream = response.bytes_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ClientError::transport(&url, e))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| ClientError::io(&partial, e))?;
            total += chunk.len() as u64;
            if let Some(progress) = &progress {
                progress(chunk.len() as u64);
            }
        }
        file.flush()
            .await
            .map_err(|e| ClientError::io(&partial, e))?;
        drop(file);
        tokio::fs::rename(&partial, out)
            .await
            .map_err(|e| ClientError::io(out, e))?;
        Ok(total)
    }

    /// Download a blob into memory.
    pub async fn blob_get_bytes(&self, object_key: &str) -> Result<bytes::Bytes> {
        let presigned = self.blob_download_url(object_key).await?;
        let url = url::Url::parse(&presigned).map_err(|e| ClientError::InvalidResponse {
            what: "download URL".into(),
            problem: e.to_string(),
        })?;
        let response = self
            .instance()
            .http()
            .get(url.clone())
            .send()
            .await
            .map_err(|e| ClientError::transport(&url, e))?;
        if !response.status().is_success() {
            return Err(api_error(response).await);
        }
        response
            .bytes()
            .await
            .map_err(|e| ClientError::transport(&url, e))
    }

    /// `DELETE /api/v1/blob/{objectKey}`.
    pub async fn blob_delete(&self, object_key: &str) -> Result<()> {
        let url = self.blob_key_url("api/v1/blob", object_key);
        self.send("DELETE /api/v1/blob/{objectKey}", |i| {
            i.http().delete(url.clone())
        })
        .await?;
        Ok(())
    }

    /// `GET /api/v1/blob?collection=` (one page; pass the previous page's cursor).
    pub async fn blob_list(&self, collection: &str, bookmark: Option<&str>) -> Result<Value> {
        self.send_json("GET /api/v1/blob", |i| {
            let request = i
                .request(Method::GET, "api/v1/blob")
                .query(&[("collection", collection)]);
            match bookmark {
                Some(b) => request.query(&[("bookmark", b)]),
                None => request,
            }
        })
        .await
    }
}
