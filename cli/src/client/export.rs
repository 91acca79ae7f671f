//! Export and import of a whole instance (`GET /api/v1/export`, `POST /api/v1/import`),
//! owner session only. Archives are streamed to and from disk; encrypted ones are
//! decrypted on this machine with the owner's key ([`crate::archive`]).

use std::path::Path;

use futures::StreamExt;
use reqwest::header::CONTENT_TYPE;
use tokio::io::AsyncWriteExt;
use vibe_api::export::{ImportReport, MEDIA_TYPE, RestoreOutcome};

use super::{Client, Progress};
use crate::error::{ClientError, Result};

/// What `export_to_file` wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// The archive's export id.
    pub export_id: String,
    /// Bytes written.
    pub bytes: u64,
}

impl Client {
    /// `GET /api/v1/export`: the response, streaming (`blobs`: include blob bytes;
    /// `encrypt`: age-encrypted to the owner's key).
    pub async fn export_stream(&self, blobs: bool, encrypt: bool) -> Result<reqwest::Response> {
        let mut url = self.instance().endpoint("api/v1/export");
        if !blobs {
            url.query_pairs_mut().append_pair("blobs", "false");
        }
        if encrypt {
            url.query_pairs_mut().append_pair("encrypt", "owner");
        }
        self.send("GET /api/v1/export", |i| i.http().get(url.clone()))
            .await
    }

    /// `GET /api/v1/restore/archive`: the backup this instance is being restored from, as
    /// the provider stored it (encrypted to the owner's key), streaming. Its object key is
    /// in the `x-vibe-backup-key` header.
    pub async fn restore_archive(&self) -> Result<reqwest::Response> {
        let url = self.instance().endpoint("api/v1/restore/archive");
        self.send("GET /api/v1/restore/archive", |i| i.http().get(url.clone()))
            .await
    }

    /// `POST /api/v1/restore/abandon`: give up the restore from a backup; the instance takes
    /// writes from then on. Repeating it answers the same outcome.
    pub async fn abandon_restore(&self) -> Result<RestoreOutcome> {
        self.send_json("POST /api/v1/restore/abandon", |i| {
            i.http()
                .post(i.endpoint("api/v1/restore/abandon"))
                .json(&serde_json::json!({}))
        })
        .await
    }

    /// Export into `out` (written as `<out>.vibe-partial`, renamed when complete, so a cut
    /// transfer never leaves a file that looks whole).
    pub async fn export_to_file(
        &self,
        out: &Path,
        blobs: bool,
        encrypt: bool,
        progress: Option<Progress>,
    ) -> Result<ExportSummary> {
        let response = self.export_stream(blobs, encrypt).await?;
        let export_id = response
            .headers()
            .get("x-vibe-export-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let url = response.url().clone();
        let partial = out.with_extension("vibe-partial");
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| ClientError::io(&partial, e))?;
        let mut stream = response.bytes_stream();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ClientError::transport(&url, e))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| ClientError::io(&partial, e))?;
            bytes += chunk.len() as u64;
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
        Ok(ExportSummary { export_id, bytes })
    }

    /// `POST /api/v1/import` with a plain archive as `body` (consumed: no retry after a
    /// token refresh, so a fresh token is taken first).
    pub async fn import_body(&self, body: reqwest::Body) -> Result<ImportReport> {
        let token = self.access_token().await?;
        let request = self
            .instance()
            .http()
            .post(self.instance().endpoint("api/v1/import"))
            .bearer_auth(token)
            .header(CONTENT_TYPE, MEDIA_TYPE)
            .body(body);
        let response = super::send(request, "POST /api/v1/import").await?;
        super::decode(response, "POST /api/v1/import").await
    }
}
