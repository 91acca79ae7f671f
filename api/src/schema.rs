//! JSON Schema of the API's bodies: the constraints the data plane enforces, written once
//! as attributes on the types of this crate (`#[derive(JsonSchema)]`) from the patterns and
//! helpers here. The data plane's OpenAPI document takes its component schemas from them
//! (`dataplane/src/openapi/components.rs`), so a field renamed or a bound changed here
//! changes the document, and a test fails until the committed document is regenerated.
//!
//! Patterns are ECMA-262 regular expressions without `\s`, `\w` or `\d` (whose meaning
//! differs between engines: Python's and JavaScript's `\s` are not the same set), so that
//! every client generator and validator reads them the same way.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::apps::GrantSetting;

/// A collection name ([`crate::Collection`]): lower-case letters, digits, `_` and `-`,
/// starting with a letter or digit, at most 64 characters.
pub const COLLECTION: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";

/// Text that is not only white space: at least one character outside Unicode `White_Space`
/// (what Rust's `char::is_whitespace` and `str::trim` remove).
pub const NOT_BLANK: &str =
    r"[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// An app id ([`crate::app_id`]): no control character (C0, DEL, C1) anywhere, and at least
/// one character that is neither a control character nor white space. The length (1 to
/// 512 characters) is a `minLength`/`maxLength`, which count characters as the rule does.
pub const APP_ID: &str = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$";

/// A permission: `sync`, or `read`, `write`, `blob:read`, `blob:write` or `blob:delete`
/// followed by `:` and a collection name.
pub const PERMISSION: &str =
    "^(sync|(read|write|blob:read|blob:write|blob:delete):[a-z0-9][a-z0-9_-]{0,63})$";

/// A `did:vibe` identifier: an Ed25519 public key, multibase base58btc (`z6Mk…`).
pub const DID_VIBE: &str = "^did:vibe:z6Mk[1-9A-HJ-NP-Za-km-z]{44}$";

/// An example `did:vibe`.
pub const DID_VIBE_EXAMPLE: &str = "did:vibe:z6MkjDf2LZx8sfNkh9h4r8QNvbVsJVVCJvbcsR67rDD5N2T4";

/// A media type (`type/subtype`, optional parameters), as blob uploads accept it.
pub const CONTENT_TYPE: &str = "^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+( *;[ -~]*)?$";

/// The largest whole number a JSON number holds exactly (2^53), the bound of every count
/// the API reads ([`crate::json::whole_number`]).
pub const MAX_SAFE_SIZE: u64 = 1 << 53;

/// The `grants` map of an app: permission → [`GrantSetting`]; only `always` allows.
/// Schema only (the Rust type is a `BTreeMap`): it names the map and constrains its keys.
pub struct Grants;

impl JsonSchema for Grants {
    fn schema_name() -> Cow<'static, str> {
        "Grants".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let setting = generator.subschema_for::<GrantSetting>();
        json_schema!({
            "type": "object",
            "description": "Permission (`read:<c>`, `write:<c>`, `blob:read:<c>`, `blob:write:<c>`, `blob:delete:<c>`, `sync`) → setting; only `always` allows",
            "propertyNames": { "pattern": PERMISSION },
            "additionalProperties": setting,
        })
    }
}

/// Marks `names` required in an object schema. For fields the data plane reads with a serde
/// default (so that it can refuse their absence in its own words) but refuses without:
/// schemars counts a defaulted field as optional.
fn require(schema: &mut Schema, names: &[&str]) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let required = object
        .entry("required")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if let Some(required) = required.as_array_mut() {
        for name in names {
            if !required.iter().any(|r| r == name) {
                required.push((*name).into());
            }
        }
    }
}

/// Container transform: `collection` is required.
pub fn require_collection(schema: &mut Schema) {
    require(schema, &["collection"]);
}

/// Container transform: `collection` and `data` are required.
pub fn require_collection_and_data(schema: &mut Schema) {
    require(schema, &["collection", "data"]);
}

/// Schema of a Mango selector in a read (`filter`): any object (its bounds are checked by
/// the data plane, and told in the field's description).
pub fn filter(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
    })
}

/// Schema of a read's `sort`: field names, or `{field: "asc" | "desc"}`.
pub fn sort(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {
            "oneOf": [
                { "type": "string" },
                { "type": "object", "additionalProperties": { "enum": ["asc", "desc"] } }
            ]
        },
    })
}

/// Schema of a write's `data`: one document, or up to 1,000 of them.
pub fn write_data(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "oneOf": [
            { "type": "object" },
            { "type": "array", "items": { "type": "object" }, "maxItems": 1000 }
        ],
    })
}

/// Schema of a JSON document as stored (any object).
pub fn document(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object" })
}

/// Schema of a list of documents.
pub fn documents(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": { "type": "object" } })
}

/// Schema of a field that is always the constant `true`.
pub fn always_true(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "const": true })
}

/// Schema of `tokenType`: always `Bearer`.
pub fn bearer(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "const": crate::auth::BEARER })
}

/// Schema of an RFC 3339 time (`format: date-time`).
pub fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "date-time" })
}

/// Schema of an RFC 3339 time or `null`.
pub fn optional_date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": ["string", "null"], "format": "date-time" })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The characters of a negated class `[^…]` written with `\t`, `\r`, `\uXXXX`, plain
    /// characters and `a-b` ranges, as a membership test.
    fn negated_class(class: &str) -> impl Fn(char) -> bool + use<> {
        let body = class
            .strip_prefix("[^")
            .and_then(|c| c.strip_suffix(']'))
            .expect("a negated class");
        let mut chars = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (c, tail) = if let Some(t) = rest.strip_prefix(r"\u") {
                let code = u32::from_str_radix(&t[..4], 16).unwrap();
                (char::from_u32(code).unwrap(), &t[4..])
            } else if let Some(t) = rest.strip_prefix(r"\t") {
                ('\t', t)
            } else if let Some(t) = rest.strip_prefix(r"\r") {
                ('\r', t)
            } else {
                let c = rest.chars().next().unwrap();
                (c, &rest[c.len_utf8()..])
            };
            chars.push(c);
            rest = tail;
        }
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            if chars.get(i + 1) == Some(&'-') && i + 2 < chars.len() {
                ranges.push((chars[i], chars[i + 2]));
                i += 3;
            } else {
                ranges.push((chars[i], chars[i]));
                i += 1;
            }
        }
        move |c| ranges.iter().all(|(a, b)| c < *a || c > *b)
    }

    #[test]
    fn not_blank_is_rusts_white_space() {
        let allowed = negated_class(NOT_BLANK);
        for c in (0..=0x3100).filter_map(char::from_u32) {
            assert_eq!(allowed(c), !c.is_whitespace(), "{:#x}", c as u32);
        }
    }

    #[test]
    fn app_id_classes_are_the_rule_of_app_id() {
        // ^[no control]*[neither control nor white space][no control]*$
        let inner = APP_ID.strip_prefix('^').unwrap().strip_suffix('$').unwrap();
        let (anywhere, rest) = inner.split_once("]*").unwrap();
        let (one, tail) = rest.split_once(']').unwrap();
        assert_eq!(format!("{anywhere}]*"), tail);
        let anywhere = negated_class(&format!("{anywhere}]"));
        let one = negated_class(&format!("{one}]"));
        for c in (0..=0x3100).filter_map(char::from_u32) {
            assert_eq!(anywhere(c), !c.is_control(), "{:#x}", c as u32);
            assert_eq!(
                one(c),
                !c.is_control() && !c.is_whitespace(),
                "{:#x}",
                c as u32
            );
        }
    }
}
