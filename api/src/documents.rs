//! Document bodies: `POST /api/v1/data/read` and `POST /api/v1/data/write`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Body of `POST /api/v1/data/read`: a Mango query over one collection, paged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// The collection (the server forces it into the selector). Absent or empty: refused
    /// as `Collection name is required.`
    #[serde(default)]
    pub collection: String,
    /// Mango selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// Page size (server default 100, at most 1000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::optional_whole_number"
    )]
    pub limit: Option<u64>,
    /// Mango sort: field names or `{field: "asc"|"desc"}` objects, one direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<Value>,
    /// Fields to return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// Cursor from the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bookmark: Option<String>,
}

impl ReadQuery {
    /// Every document of `collection`.
    pub fn collection(collection: &str) -> Self {
        Self {
            collection: collection.to_string(),
            ..Self::default()
        }
    }
}

/// `POST /api/v1/data/read` answer: one page. `D` is how a document is held: decoded
/// ([`Value`], the default, for clients) or as the store's text (`Box<RawValue>`, which
/// the server passes on without re-encoding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<D = Value> {
    /// The documents.
    #[serde(default = "Vec::new")]
    pub docs: Vec<D>,
    /// The first document (when there is one), as the original answered.
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub doc: Option<D>,
    /// The next page's cursor (absent or empty when this was the last page).
    #[serde(default)]
    pub bookmark: Option<String>,
}

/// Body of `POST /api/v1/data/write`: one document (create or update) or an array of
/// them (bulk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    /// The collection. Absent or empty: refused as `Collection name is required.`
    #[serde(default)]
    pub collection: String,
    /// A JSON object or an array of objects; anything else is refused as `Data must be a
    /// single object or an array of objects.`
    #[serde(default)]
    pub data: Value,
}

/// `{ok, id, rev}`: the answer of a single write, of `POST /api/v1/apps/upsert` and of a
/// document delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// `true`.
    #[serde(default)]
    pub ok: bool,
    /// Document id.
    pub id: String,
    /// New revision.
    pub rev: String,
}
