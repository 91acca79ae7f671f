//! Strict JSON request bodies.
//!
//! [`from_slice`] parses a body into any `T`, refusing what lenient parsers accept
//! differently: duplicate object keys at any depth (CouchDB keeps the last, others the
//! first) and trailing data. Unknown fields are refused by the body types themselves
//! (`#[serde(deny_unknown_fields)]`). The data plane's `StrictJson<T>` extractor reads
//! request bodies with it.

use std::fmt;

use serde::Deserialize;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Value};

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON at all (or JSON followed by more data).
    #[error("the body is not JSON")]
    NotJson,
    /// JSON with a duplicate key; the message names it (at most 64 characters of it).
    #[error("{0}")]
    DuplicateKey(String),
    /// JSON of the wrong shape; the message names the field at fault when there is one.
    #[error("{0}")]
    Invalid(String),
}

/// Parse `bytes` as a `T`, refusing duplicate keys, trailing data and (through `T`)
/// unknown fields.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    let value = parse_value(bytes)?;
    from_value(value)
}

/// Convert an already strictly parsed `value` into a `T`; the error names the path of the
/// offending field, e.g. `'grants.read:x': unknown variant …`.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, BodyError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let (path, inner) = plain_words(path, &e.into_inner().to_string());
        BodyError::Invalid(if path == "." || path.is_empty() {
            inner
        } else {
            format!("'{path}': {inner}")
        })
    })
}

/// serde's `unknown field `x`, expected one of …` and `missing field `x`` in the API's
/// words (`Unknown field 'x'.`, `'x' is required.`), at the path of the object holding
/// the field; names are cut to 64 characters, so a client's huge key is not echoed back.
/// Other messages pass unchanged.
fn plain_words(path: String, message: &str) -> (String, String) {
    let named = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
    };
    let short = |name: &str| name.chars().take(64).collect::<String>();
    if let Some(name) = named("unknown field `") {
        let parent = path
            .strip_suffix(name)
            .map(|p| p.trim_end_matches('.').to_string())
            .unwrap_or(path.clone());
        (parent, format!("Unknown field '{}'.", short(name)))
    } else if let Some(name) = named("missing field `") {
        (path, format!("'{}' is required.", short(name)))
    } else {
        (path, message.to_string())
    }
}

/// Parse JSON into a [`Value`], refusing duplicate object keys and trailing data.
pub fn parse_value(bytes: &[u8]) -> Result<Value, BodyError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue
        .deserialize(&mut deserializer)
        .map_err(|e| match e.to_string() {
            m if m.starts_with(DUPLICATE) => {
                BodyError::DuplicateKey(m.split(" at line").next().unwrap_or(DUPLICATE).to_string())
            }
            _ => BodyError::NotJson,
        })?;
    deserializer.end().map_err(|_| BodyError::NotJson)?;
    Ok(value)
}

const DUPLICATE: &str = "Duplicate key";

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(de::Error::custom(format!(
                    "{DUPLICATE} '{shown}' in a JSON object."
                )));
            }
            let value = map.next_value_seed(StrictValue)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Reads a count (`u64`) the way JSON Schema's `integer` reads it: JSON has a single number
/// type, so `5`, `5.0` and `5e0` are the same whole number and are all accepted (Python's
/// `json.dumps(5.0)` writes `5.0`); `5.5`, negative numbers and numbers above 2^53 (beyond
/// what a double holds exactly) are refused. Use with `#[serde(deserialize_with = …)]`.
pub fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    let whole = match number.as_u64() {
        // Written as an integer: exact, so 2^53 + 1 is not taken for 2^53.
        Some(n) => Some(n).filter(|n| *n <= 1 << 53),
        None => number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=EXACT).contains(f))
            .map(|f| f as u64),
    };
    match whole {
        Some(n) => Ok(n),
        None => Err(de::Error::custom(format!(
            "invalid value: {number}, expected a whole number from 0"
        ))),
    }
}

/// [`whole_number`] for an optional field (use with `#[serde(default)]`).
pub fn optional_whole_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    whole_number(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn parses_normal_json() {
        let v: Value = from_slice(br#"{"a":[1,2.5,"x",null,true,{"b":{}}]}"#).unwrap();
        assert_eq!(v["a"][1], 2.5);
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        for body in [&br#"{"a":1,"a":2}"#[..], br#"{"x":[{"b":1,"b":1}]}"#] {
            match from_slice::<Value>(body) {
                Err(BodyError::DuplicateKey(details)) => {
                    assert!(details.contains("Duplicate key"), "{details}")
                }
                other => panic!("expected a duplicate key error, got {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_garbage_and_trailing_data() {
        for body in [&b"{"[..], b"{} {}", b""] {
            assert_eq!(from_slice::<Value>(body), Err(BodyError::NotJson));
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        n: u8,
    }

    #[test]
    fn typed_bodies_name_the_field_at_fault() {
        assert!(from_slice::<Body>(br#"{"name":"x"}"#).is_ok());
        let missing = from_slice::<Body>(br#"{}"#).unwrap_err().to_string();
        assert_eq!(missing, "'name' is required.");
        let unknown = from_slice::<Body>(br#"{"name":"x","extra":1}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(unknown, "Unknown field 'extra'.");
        let long = format!(r#"{{"name":"x","{}":1}}"#, "k".repeat(500));
        let long = from_slice::<Body>(long.as_bytes()).unwrap_err().to_string();
        assert_eq!(long, format!("Unknown field '{}'.", "k".repeat(64)));
        let nested = from_slice::<Body>(br#"{"name":"x","inner":{"n":"1"}}"#)
            .unwrap_err()
            .to_string();
        assert!(nested.starts_with("'inner.n': invalid type"), "{nested}");
        let nested = from_slice::<Body>(br#"{"name":"x","inner":{"n":1,"m":2}}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(nested, "'inner': Unknown field 'm'.");
        assert!(matches!(
            from_slice::<Body>(br#"{"name":"x","name":"y"}"#),
            Err(BodyError::DuplicateKey(_))
        ));
    }
}
