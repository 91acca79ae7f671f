//! Blob request bodies (`POST /api/v1/blob/upload-url`, `POST /api/v1/blob/finalize-upload`).
//!
//! Unlike the other request bodies these accept fields they do not know: the original
//! Vibe SDK's bodies are the compatibility contract here, and the OpenAPI document does not
//! close them (`additionalProperties` is not `false`).

use serde::{Deserialize, Serialize};

/// `POST /api/v1/blob/upload-url`: ask for a presigned PUT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadUrlRequest {
    /// The collection the blob goes to (`blob:write:<collectionName>` is needed).
    pub collection_name: String,
    /// The client's file name (1 to 1,024 characters, not only white space).
    pub original_filename: String,
    /// A media type, bound into the signature.
    pub content_type: String,
    /// Bytes, bound into the signature as `Content-Length`.
    #[serde(deserialize_with = "crate::json::whole_number")]
    pub size: u64,
}

/// `POST /api/v1/blob/finalize-upload`: record an object uploaded with a presigned PUT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalizeUploadRequest {
    /// The key the upload URL was issued for.
    pub object_key: String,
    /// The client's file name.
    pub original_filename: String,
    /// The media type the upload URL was issued for.
    pub content_type: String,
    /// Bytes; must equal the stored object's size.
    #[serde(deserialize_with = "crate::json::whole_number")]
    pub size: u64,
    /// The collection of the object key.
    pub collection_name: String,
}
