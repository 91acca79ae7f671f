//! Documents: `POST /api/v1/data/read|write`, `GET|DELETE /api/v1/data/{collection}/{id}`.
//! These act as an app: use [`Client::as_app`] or an app token.

use reqwest::Method;
use serde_json::Value;
use vibe_api::documents::WriteRequest;

use super::Client;
use crate::error::{ClientError, Result};

pub use vibe_api::documents::{Page, ReadQuery, WriteResult};

/// The part of a full document id after `<collection>/` (the `{id}` of the URL routes).
pub fn local_id<'a>(collection: &str, id: &'a str) -> &'a str {
    id.strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(id)
}

impl Client {
    fn data_url(&self, collection: &str, id: &str) -> url::Url {
        let mut url = self.instance().endpoint("api/v1/data");
        url.path_segments_mut()
            .expect("http URLs have paths")
            .push(collection)
            .push(local_id(collection, id));
        url
    }

    /// One page of documents.
    pub async fn read(&self, query: &ReadQuery) -> Result<Page> {
        self.send_json("POST /api/v1/data/read", |i| {
            i.request(Method::POST, "api/v1/data/read").json(query)
        })
        .await
    }

    /// Every matching document, following bookmarks until the last page.
    pub async fn read_all(&self, query: &ReadQuery) -> Result<Vec<Value>> {
        let mut query = query.clone();
        let mut docs = Vec::new();
        loop {
            let page = self.read(&query).await?;
            let fetched = page.docs.len();
            docs.extend(page.docs);
            match page.bookmark.filter(|b| !b.is_empty()) {
                Some(bookmark) if fetched > 0 && query.bookmark.as_ref() != Some(&bookmark) => {
                    query.bookmark = Some(bookmark)
                }
                _ => return Ok(docs),
            }
        }
    }

    /// Write one document (create, or update when it carries `_id` and `_rev`).
    pub async fn write(&self, collection: &str, doc: &Value) -> Result<WriteResult> {
        if !doc.is_object() {
            return Err(ClientError::Usage(
                "a document must be a JSON object".into(),
            ));
        }
        let body = write_body(collection, doc.clone());
        self.send_json("POST /api/v1/data/write", |i| {
            i.request(Method::POST, "api/v1/data/write").json(&body)
        })
        .await
    }

    /// Write many documents in one request. Returns the HTTP status (200, or 207 when
    /// any item failed) and the per-item results (`{ok,id,rev}` or `{id,error,reason}`).
    pub async fn write_bulk(&self, collection: &str, docs: &[Value]) -> Result<(u16, Vec<Value>)> {
        let body = write_body(collection, Value::Array(docs.to_vec()));
        let response = self
            .send("POST /api/v1/data/write", |i| {
                i.request(Method::POST, "api/v1/data/write").json(&body)
            })
            .await?;
        let status = response.status().as_u16();
        let results = super::decode(response, "POST /api/v1/data/write").await?;
        Ok((status, results))
    }

    /// `GET /api/v1/data/{collection}/{id}`; `id` may be full or the part after the slash.
    pub async fn get(&self, collection: &str, id: &str) -> Result<Value> {
        let url = self.data_url(collection, id);
        self.send_json("GET /api/v1/data/{collection}/{id}", |i| {
            i.http().get(url.clone())
        })
        .await
    }

    /// `DELETE /api/v1/data/{collection}/{id}?rev=`. Returns the body (with the
    /// deletion's `rev` when the instance reports it).
    pub async fn delete(&self, collection: &str, id: &str, rev: &str) -> Result<Value> {
        let url = self.data_url(collection, id);
        let response = self
            .send("DELETE /api/v1/data/{collection}/{id}", |i| {
                i.http().delete(url.clone()).query(&[("rev", rev)])
            })
            .await?;
        let text = response.text().await.unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn write_body(collection: &str, data: Value) -> WriteRequest {
    WriteRequest {
        collection: collection.to_string(),
        data,
    }
}
