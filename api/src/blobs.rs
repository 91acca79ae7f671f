//! Blob request bodies (`POST /api/v1/blob/upload-url`, `POST /api/v1/blob/finalize-upload`).
//!
//! Unlike the other request bodies these accept fields they do not know: the original
//! Vibe SDK's bodies are the compatibility contract here, and the OpenAPI document does not
//! close them (`additionalProperties` is not `false`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema;

/// `POST /api/v1/blob/upload-url`: ask for a presigned PUT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadUrlRequest {
    /// The collection the blob goes to (`blob:write:<collectionName>` is needed).
    #[schemars(regex(pattern = schema::COLLECTION))]
    pub collection_name: String,
    /// The client's file name (1 to 1,024 characters, not only white space).
    #[schemars(length(min = 1, max = 1024), regex(pattern = schema::NOT_BLANK))]
    pub original_filename: String,
    /// A media type, bound into the signature.
    #[schemars(length(max = 255), regex(pattern = schema::CONTENT_TYPE))]
    pub content_type: String,
    /// Bytes, bound into the signature as `Content-Length`.
    #[serde(deserialize_with = "crate::json::whole_number")]
    #[schemars(range(max = schema::MAX_SAFE_SIZE))]
    pub size: u64,
}

/// `POST /api/v1/blob/finalize-upload`: record an object uploaded with a presigned PUT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "FinalizeRequest")]
pub struct FinalizeUploadRequest {
    /// The key the upload URL was issued for.
    #[schemars(length(min = 1))]
    pub object_key: String,
    /// The client's file name (1 to 1,024 characters, not only white space).
    #[schemars(length(min = 1, max = 1024), regex(pattern = schema::NOT_BLANK))]
    pub original_filename: String,
    /// The media type the upload URL was issued for.
    #[schemars(length(max = 255), regex(pattern = schema::CONTENT_TYPE))]
    pub content_type: String,
    /// Bytes; must equal the stored object's size.
    #[serde(deserialize_with = "crate::json::whole_number")]
    #[schemars(range(max = schema::MAX_SAFE_SIZE))]
    pub size: u64,
    /// The collection of the object key.
    #[schemars(regex(pattern = schema::COLLECTION))]
    pub collection_name: String,
}

/// `POST /api/v1/blob/upload-url` answer: where and how to PUT the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadUrlResponse {
    /// The presigned URL (it binds the content type and length).
    pub presigned_url: String,
    /// The key the object will have: `<instance>/<collection>/<uuidv7>-<sanitised filename>`.
    pub object_key: String,
    /// When the URL expires (UNIX seconds).
    pub expires_at: u64,
    /// Always `PUT`.
    #[serde(default = "put")]
    #[schemars(extend("enum" = ["PUT"]))]
    pub method: String,
    /// Headers to send with the PUT, exactly (they are bound into the signature).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn put() -> String {
    "PUT".to_string()
}

/// A blob's metadata: a document of the reserved `blobs` collection in the owner's
/// database, id `blobs/<uuid>`, as finalising an upload stores and answers it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlobMetadata {
    /// `blobs/<uuid>` (the uuid of the object key).
    #[serde(rename = "_id")]
    pub id: String,
    /// The document's revision.
    #[serde(rename = "_rev", default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    /// Always `blobs`.
    #[schemars(extend("enum" = ["blobs"]))]
    pub collection: String,
    /// The user collection the blob belongs to (grants `blob:*:<collectionName>`).
    pub collection_name: String,
    /// The object key.
    pub object_key: String,
    /// The filename the client gave.
    pub original_filename: String,
    /// Content type, as verified on the stored object.
    pub content_type: String,
    /// Size in bytes, as verified on the stored object.
    pub size: u64,
    /// The owner's DID.
    pub owner_did: String,
    /// When the upload was finalised (RFC 3339).
    #[schemars(schema_with = "crate::schema::date_time")]
    pub upload_timestamp: String,
    /// Bucket holding the object.
    pub bucket: String,
    /// The app that uploaded it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}
