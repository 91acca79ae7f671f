//! Reads: turning a `/api/v1/data/read` body into a Mango query and paging it with our own
//! opaque cursor.
//!
//! Paging is keyset-based, so it works the same on CouchDB 3 (which has its own Mango
//! bookmark) and pouchdb-server (which has none), and returns every document exactly once
//! even while others are written: results are ordered by `(sort fields…, _id)` and the
//! cursor holds the last row's key; the next page asks for keys strictly after it.
//! Documents lacking a sort field are not returned by a sorted read (CouchDB JSON indexes
//! leave them out).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use vibe_api::documents::ReadQuery;

use super::validate::check_collection;
use crate::state::{COLLECTION_INDEX, INDEX_DESIGN_DOC};

/// Name prefix of the indexes created for sorted reads.
pub const SORT_INDEX_PREFIX: &str = "idx-sort-";

/// Default page size.
pub const DEFAULT_LIMIT: u64 = 100;
/// Largest page size.
pub const MAX_LIMIT: u64 = 1000;

/// Sort direction (uniform over all sort fields, as CouchDB requires).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

/// A validated read request.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// Collection.
    pub collection: String,
    /// Client selector (without `collection`).
    pub filter: Map<String, Value>,
    /// Page size.
    pub limit: u64,
    /// Client sort fields.
    pub sort: Vec<String>,
    /// Direction of all sort fields.
    pub direction: Direction,
    /// Requested projection.
    pub fields: Option<Vec<String>>,
    /// Position after which to continue.
    pub after: Option<Vec<Value>>,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    c: String,
    s: Vec<String>,
    d: Direction,
    k: Vec<Value>,
}

fn invalid(message: impl Into<String>) -> String {
    message.into()
}

/// The collection of a read or write body: `Collection name is required.` when absent
/// (the body types read an absent collection as empty).
pub fn collection_of(collection: &str) -> Result<String, String> {
    if collection.is_empty() {
        return Err("Collection name is required.".into());
    }
    check_collection(collection)?;
    Ok(collection.to_string())
}

/// Whether `name` may be a sort or projection field (not empty, at most 128 bytes, not
/// `_…`, not `collection`).
pub fn is_valid_field_name(name: &str) -> bool {
    check_field_name(name).is_ok()
}

fn check_field_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || name.starts_with('_') || name == "collection" {
        return Err(format!(
            "Invalid field name '{}' in sort or fields.",
            name.chars().take(64).collect::<String>()
        ));
    }
    Ok(())
}

impl ReadRequest {
    /// Validate a read body (its shape and field names were checked by
    /// [`ReadQuery`]'s deserialisation). Errors are `details` of a 400 `Validation failed`.
    pub fn parse(body: &ReadQuery) -> Result<Self, String> {
        let collection = collection_of(&body.collection)?;
        let filter = match &body.filter {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(f)) => {
                check_selector(&Value::Object(f.clone()), 0)?;
                let mut filter = f.clone();
                // Kept for clients that repeat the collection in the filter; it is
                // the request's own collection clause that selects.
                filter.remove("collection");
                check_no_collection_clause(&filter)?;
                filter
            }
            Some(_) => return Err("Filter must be an object.".into()),
        };
        let limit = match body.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                return Err(format!(
                    "limit must be an integer between 1 and {MAX_LIMIT}."
                ));
            }
        };
        let (sort, direction) = parse_sort(body.sort.as_ref())?;
        let fields = match &body.fields {
            None => None,
            Some(items) => Some(
                items
                    .iter()
                    .map(|name| match name.as_str() {
                        "_id" | "_rev" | "collection" => Ok(name.clone()),
                        _ => check_field_name(name).map(|_| name.clone()),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let after = match body.bookmark.as_deref() {
            None | Some("") => None,
            Some(b) => {
                let cursor = decode_cursor(b).ok_or_else(|| invalid("Invalid bookmark."))?;
                if cursor.c != collection
                    || cursor.s != sort
                    || cursor.d != direction
                    || cursor.k.len() != sort.len() + 1
                {
                    return Err("Invalid bookmark: it belongs to another query.".into());
                }
                Some(cursor.k)
            }
        };
        Ok(Self {
            collection,
            filter,
            limit,
            sort,
            direction,
            fields,
            after,
        })
    }

    /// Name of the index this read uses.
    pub fn index_name(&self) -> String {
        if self.sort.is_empty() {
            COLLECTION_INDEX.to_string()
        } else {
            let digest = Sha256::digest(self.sort.join("\u{1}").as_bytes());
            format!("{SORT_INDEX_PREFIX}{}", &hex::encode(digest)[..16])
        }
    }

    /// Fields of the index this read uses.
    pub fn index_fields(&self) -> Vec<String> {
        let mut fields = vec!["collection".to_string()];
        fields.extend(self.sort.iter().cloned());
        fields.push("_id".into());
        fields
    }

    /// The Mango query for one page. It asks for two rows more than `limit`: one to learn
    /// whether another page exists, and one because some servers (pouchdb-server) treat
    /// the exclusive bound on `_id` as inclusive and return the cursor's own row, which
    /// [`ReadRequest::finish_page`] drops.
    pub fn mango_query(&self) -> Value {
        let dir = match self.direction {
            Direction::Asc => "asc",
            Direction::Desc => "desc",
        };
        let mut clauses = vec![json!({ "collection": { "$eq": self.collection } })];
        if !self.filter.is_empty() {
            clauses.push(Value::Object(self.filter.clone()));
        }
        for field in &self.sort {
            clauses.push(json!({ field: { "$exists": true } }));
        }
        match &self.after {
            None => clauses.push(json!({ "_id": { "$gt": null } })),
            Some(key) => {
                let op = match self.direction {
                    Direction::Asc => "$gt",
                    Direction::Desc => "$lt",
                };
                let mut names: Vec<&str> = self.sort.iter().map(String::as_str).collect();
                names.push("_id");
                let mut alternatives = Vec::new();
                for i in 0..names.len() {
                    let mut branch = Map::new();
                    for j in 0..i {
                        branch.insert(names[j].to_string(), json!({ "$eq": key[j] }));
                    }
                    branch.insert(names[i].to_string(), json!({ op: key[i] }));
                    alternatives.push(Value::Object(branch));
                }
                if names.len() == 1 {
                    clauses.push(alternatives.remove(0));
                } else {
                    clauses.push(json!({ "_id": { "$gt": null } }));
                    clauses.push(json!({ "$or": alternatives }));
                }
            }
        }
        let sort: Vec<Value> = self
            .index_fields()
            .iter()
            .map(|f| json!({ f: dir }))
            .collect();
        let mut query = json!({
            "selector": { "$and": clauses },
            "sort": sort,
            "limit": self.limit + 2,
            "use_index": [INDEX_DESIGN_DOC, self.index_name()],
        });
        if let Some(fields) = &self.fields {
            let mut all = fields.clone();
            // `_id` and `collection` are what the result check reads; dropped again in
            // `finish_page` unless asked for.
            let always = ["_id".to_string(), "collection".to_string()];
            for needed in self.sort.iter().chain(always.iter()) {
                if !all.contains(needed) {
                    all.push(needed.clone());
                }
            }
            query["fields"] = json!(all);
        }
        query
    }

    /// Shape one page: trim the look-ahead row, drop every row `admit` refuses (the
    /// result check of [`crate::access`]), strip fields added for paging, and make the
    /// bookmark of the next page (None on the last page).
    ///
    /// The page covers the first `limit` rows the store returned; refused rows among them
    /// are dropped, not replaced, and the bookmark points after the last row *covered*
    /// (refused or not). So a page may hold fewer than `limit` documents, even none, and
    /// still carry a bookmark: readers continue until there is no bookmark. With a store
    /// that honours the collection clause nothing is ever refused.
    pub fn finish_page(
        &self,
        mut docs: Vec<Box<RawValue>>,
        admit: impl Fn(&RawValue) -> bool,
    ) -> (Vec<Box<RawValue>>, Option<String>) {
        if let Some(last_id) = self.after.as_ref().and_then(|k| k.last()) {
            docs.retain(|d| id_of(d).as_ref() != Some(last_id));
        }
        let more = docs.len() as u64 > self.limit;
        docs.truncate(self.limit as usize);
        // Only the last covered row is read whole, for the next page's key.
        let covered_last = if more {
            docs.last()
                .and_then(|d| serde_json::from_str::<Map<String, Value>>(d.get()).ok())
        } else {
            None
        };
        let before = docs.len();
        docs.retain(|d| admit(d));
        if docs.len() < before {
            tracing::warn!(
                collection = %self.collection,
                refused = before - docs.len(),
                "read: the store returned documents outside the request's collection; dropped"
            );
        }
        let bookmark = covered_last.map(|last| {
            let mut key: Vec<Value> = self
                .sort
                .iter()
                .map(|f| last.get(f).cloned().unwrap_or(Value::Null))
                .collect();
            key.push(last.get("_id").cloned().unwrap_or(Value::Null));
            encode_cursor(&Cursor {
                c: self.collection.clone(),
                s: self.sort.clone(),
                d: self.direction,
                k: key,
            })
        });
        if let Some(fields) = &self.fields {
            docs = docs
                .into_iter()
                .filter_map(|doc| {
                    let mut map = serde_json::from_str::<Map<String, Value>>(doc.get()).ok()?;
                    map.retain(|k, _| fields.contains(k));
                    serde_json::value::to_raw_value(&map).ok()
                })
                .collect();
        }
        (docs, bookmark)
    }
}

/// The `_id` of a document given as JSON text, read without building the document.
fn id_of(doc: &RawValue) -> Option<Value> {
    #[derive(Deserialize)]
    struct Id {
        #[serde(rename = "_id")]
        id: Option<Value>,
    }
    serde_json::from_str::<Id>(doc.get()).ok()?.id
}

/// Mango operators a filter may use (CouchDB 3.5).
const MANGO_OPERATORS: [&str; 22] = [
    "$and",
    "$or",
    "$not",
    "$nor",
    "$all",
    "$elemMatch",
    "$allMatch",
    "$keyMapMatch",
    "$lt",
    "$lte",
    "$eq",
    "$ne",
    "$gte",
    "$gt",
    "$exists",
    "$type",
    "$in",
    "$nin",
    "$size",
    "$mod",
    "$regex",
    "$beginsWith",
];

/// Refuse unknown operators (CouchDB answers 400, pouchdb-server silently matches
/// nothing) and absurd nesting.
fn check_selector(value: &Value, depth: usize) -> Result<(), String> {
    if depth > 32 {
        return Err("Filter is nested too deeply.".into());
    }
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key.starts_with('$') && !MANGO_OPERATORS.contains(&key.as_str()) {
                    return Err(format!(
                        "Invalid filter: unknown operator '{}'.",
                        key.chars().take(32).collect::<String>()
                    ));
                }
                check_selector(inner, depth + 1)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_selector(v, depth + 1)),
        _ => Ok(()),
    }
}

/// Refuse a filter that names the field `collection` in selector position (top level, or
/// inside `$and`/`$or`/`$nor`/`$not`): some stores merge such a clause with the
/// request's own collection clause and let the client's win. Sub-fields
/// (`{"album": {"collection": …}}`) and `$elemMatch` selectors are about other values and
/// stay allowed.
fn check_no_collection_clause(selector: &Map<String, Value>) -> Result<(), String> {
    for (key, inner) in selector {
        match key.as_str() {
            "collection" => {
                return Err(
                    "Invalid filter: the field 'collection' cannot be filtered on; \
                     the request's collection selects the documents."
                        .into(),
                );
            }
            "$and" | "$or" | "$nor" => {
                if let Value::Array(items) = inner {
                    for item in items {
                        if let Value::Object(map) = item {
                            check_no_collection_clause(map)?;
                        }
                    }
                }
            }
            "$not" => {
                if let Value::Object(map) = inner {
                    check_no_collection_clause(map)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_sort(sort: Option<&Value>) -> Result<(Vec<String>, Direction), String> {
    let items = match sort {
        None | Some(Value::Null) => return Ok((Vec::new(), Direction::Asc)),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(sort_error()),
    };
    let mut fields = Vec::new();
    let mut direction = None;
    for item in items {
        let (name, dir) = match item {
            Value::String(name) => (name.clone(), Direction::Asc),
            Value::Object(map) if map.len() == 1 => {
                let (name, dir) = map.iter().next().expect("one entry");
                let dir = match dir.as_str() {
                    Some("asc") => Direction::Asc,
                    Some("desc") => Direction::Desc,
                    _ => return Err(sort_error()),
                };
                (name.clone(), dir)
            }
            _ => return Err(sort_error()),
        };
        if name == "_id" {
            // `_id` is always the last sort key; accept it explicitly too.
            if direction.is_some_and(|d| d != dir) {
                return Err("All sort fields must use the same direction.".into());
            }
            direction = Some(dir);
            continue;
        }
        check_field_name(&name)?;
        if direction.is_some_and(|d| d != dir) {
            return Err("All sort fields must use the same direction.".into());
        }
        direction = Some(dir);
        if !fields.contains(&name) {
            fields.push(name);
        }
    }
    if fields.len() > 4 {
        return Err("At most 4 sort fields are supported.".into());
    }
    Ok((fields, direction.unwrap_or(Direction::Asc)))
}

fn sort_error() -> String {
    "sort must be an array of field names or {\"field\": \"asc\"|\"desc\"} objects.".into()
}

fn encode_cursor(cursor: &Cursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).expect("cursor serialises"))
}

fn decode_cursor(text: &str) -> Option<Cursor> {
    if text.len() > 8192 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<ReadRequest, String> {
        let query: ReadQuery = vibe_api::json::from_value(body).map_err(|e| e.to_string())?;
        ReadRequest::parse(&query)
    }

    #[test]
    fn defaults_and_limits() {
        let r = parse(json!({"collection": "notes"})).unwrap();
        assert_eq!(r.limit, DEFAULT_LIMIT);
        assert!(parse(json!({"collection": "notes", "limit": 1001})).is_err());
        assert!(parse(json!({"collection": "notes", "limit": 0})).is_err());
        assert!(parse(json!({"collection": "notes", "limit": 1000})).is_ok());
        assert_eq!(
            parse(json!({"filter": {}})).unwrap_err(),
            "Collection name is required."
        );
        assert!(parse(json!({"collection": "n", "filter": {"a": {"$nope": 1}}})).is_err());
        assert!(parse(json!({"collection": "n", "filter": {"$or": [{"a": {"$gt": 1}}]}})).is_ok());
        assert_eq!(
            parse(json!({"collection": "n", "filter": 3})).unwrap_err(),
            "Filter must be an object."
        );
    }

    #[test]
    fn cursor_round_trip_and_binding() {
        let r = parse(json!({"collection": "notes", "limit": 1})).unwrap();
        let docs = raw(&[json!({"_id": "notes/a"}), json!({"_id": "notes/b"})]);
        let (page, bookmark) = r.finish_page(docs, |_| true);
        assert_eq!(page.len(), 1);
        let bookmark = bookmark.unwrap();
        let next = parse(json!({"collection": "notes", "limit": 1, "bookmark": bookmark})).unwrap();
        assert_eq!(next.after, Some(vec![json!("notes/a")]));
        assert!(parse(json!({"collection": "other", "bookmark": bookmark})).is_err());
        assert!(parse(json!({"collection": "notes", "bookmark": "garbage!"})).is_err());
    }

    fn raw(docs: &[Value]) -> Vec<Box<RawValue>> {
        docs.iter()
            .map(|d| serde_json::value::to_raw_value(d).unwrap())
            .collect()
    }

    fn texts(docs: &[Box<RawValue>]) -> Vec<Value> {
        docs.iter()
            .map(|d| serde_json::from_str(d.get()).unwrap())
            .collect()
    }

    #[test]
    fn a_page_is_passed_on_as_the_store_wrote_it_minus_what_is_refused() {
        let r = parse(json!({"collection": "notes", "limit": 2})).unwrap();
        let store = [
            json!({"_id": "notes/a", "collection": "notes", "n": 1}),
            json!({"_id": "secretz/b", "collection": "secretz", "n": 2}),
            json!({"_id": "notes/c", "collection": "notes", "n": 3}),
        ];
        let (page, bookmark) = r.finish_page(raw(&store), |d| !d.get().contains("secretz"));
        assert_eq!(texts(&page), vec![store[0].clone()]);
        assert_eq!(page[0].get(), serde_json::to_string(&store[0]).unwrap());
        // The refused row was covered: the next page starts after it.
        let next = parse(json!({"collection": "notes", "limit": 2, "bookmark": bookmark.unwrap()}))
            .unwrap();
        assert_eq!(next.after, Some(vec![json!("secretz/b")]));
        // The cursor's own row, returned again by a store that treats the bound as
        // inclusive, is dropped; the last page has no bookmark.
        let (page, bookmark) = next.finish_page(raw(&store[1..]), |_| true);
        assert_eq!(texts(&page), vec![store[2].clone()]);
        assert_eq!(bookmark, None);
    }

    #[test]
    fn a_projection_keeps_only_the_fields_asked_for() {
        let r = parse(
            json!({"collection": "notes", "fields": ["n"], "sort": [{"n": "asc"}], "limit": 1}),
        )
        .unwrap();
        let store = [
            json!({"_id": "notes/a", "collection": "notes", "n": 1, "secret": true}),
            json!({"_id": "notes/b", "collection": "notes", "n": 2}),
        ];
        let (page, bookmark) = r.finish_page(raw(&store), |_| true);
        assert_eq!(texts(&page), vec![json!({"n": 1})]);
        let next = parse(json!({"collection": "notes", "fields": ["n"],
            "sort": [{"n": "asc"}], "limit": 1, "bookmark": bookmark.unwrap()}))
        .unwrap();
        assert_eq!(next.after, Some(vec![json!(1), json!("notes/a")]));
    }

    #[test]
    fn sort_directions_must_agree() {
        assert!(parse(json!({"collection": "n", "sort": [{"a": "asc"}, {"b": "desc"}]})).is_err());
        let r = parse(json!({"collection": "n", "sort": [{"a": "desc"}]})).unwrap();
        assert_eq!(r.direction, Direction::Desc);
        assert_eq!(r.index_fields(), vec!["collection", "a", "_id"]);
    }
}
