//! Document bodies: `POST /api/v1/data/read` and `POST /api/v1/data/write`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema;

/// Body of `POST /api/v1/data/read`: a Mango query over one collection, paged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ReadRequest", transform = schema::require_collection)]
pub struct ReadQuery {
    /// The collection (the server forces it into the selector). Absent or empty: refused
    /// as `Collection name is required.`
    #[serde(default)]
    #[schemars(regex(pattern = schema::COLLECTION))]
    pub collection: String,
    /// Mango selector; `collection` is forced by the server. Bounded: `query.max_depth`
    /// (8), `query.max_clauses` (256, counting array items), `query.max_in_items` (100,
    /// any array), `query.max_or_items` (16), `query.max_string_bytes` (1024),
    /// `query.max_regex_bytes` (128), `query.max_regexes` (2) and `query.safe_regex` (one
    /// variable repetition at most, of characters or classes only, anchored with `^`; no
    /// back-references or look-around); defaults shown, set per instance with
    /// `VIBE_QUERY_*`. A filter over a bound is refused with 400 naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::filter")]
    pub filter: Option<Value>,
    /// Page size (server default 100, at most 1000).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::optional_whole_number"
    )]
    #[schemars(with = "u64", range(min = 1, max = 1000), extend("default" = 100))]
    pub limit: Option<u64>,
    /// Mango sort: field names or `{field: "asc"|"desc"}` objects. Up to 4 fields, one
    /// direction; documents lacking a sort field are left out. Only fields listed in
    /// `query.sort_fields` (default `createdAt,updatedAt,name,title,date,order`), and at
    /// most `query.max_sort_indexes` (16) different sorts per instance; otherwise 400
    /// naming the bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::sort")]
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
    /// The first document, absent when there is none (as the original answered).
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub doc: Option<D>,
    /// Pass back to get the next page; `null` on the last page.
    #[serde(default)]
    pub bookmark: Option<String>,
}

/// Written by hand: the derive cannot see through `D` (any document representation).
impl<D> JsonSchema for Page<D> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ReadPage".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "One page of documents.",
            "required": ["docs", "bookmark"],
            "properties": {
                "docs": { "type": "array", "items": { "type": "object" } },
                "doc": {
                    "type": "object",
                    "description": "The first document, absent when there is none (as the original answered)"
                },
                "bookmark": {
                    "type": ["string", "null"],
                    "description": "Pass back to get the next page; null on the last page"
                }
            }
        })
    }
}

/// Body of `POST /api/v1/data/write`: one document (create or update) or an array of
/// them (bulk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = schema::require_collection_and_data)]
pub struct WriteRequest {
    /// The collection: any valid collection except the reserved `blobs` (403). Absent or
    /// empty: refused as `Collection name is required.`
    #[serde(default)]
    #[schemars(regex(pattern = schema::COLLECTION))]
    pub collection: String,
    /// A JSON object or an array of up to 1,000 objects; anything else is refused as `Data
    /// must be a single object or an array of objects.` `_id` (must start with
    /// `<collection>/`; generated `<collection>/<uuidv7>` when absent), `_rev` and
    /// `_deleted` are the only `_` fields allowed; `collection`, if sent, must match.
    #[serde(default)]
    #[schemars(schema_with = "schema::write_data")]
    pub data: Value,
}

/// `{ok, id, rev}`: the answer of a single write, of `POST /api/v1/apps/upsert` and of a
/// document delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "DocResult")]
pub struct WriteResult {
    /// `true`.
    #[serde(default)]
    #[schemars(schema_with = "schema::always_true")]
    pub ok: bool,
    /// Document id.
    pub id: String,
    /// New revision.
    pub rev: String,
}
