//! Opaque `_changes` sequence values.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest `since` a client may send (CouchDB 3 sequences are ~100 bytes; this leaves room).
pub const MAX_SEQ_LEN: usize = 1024;

/// A position in a database's `_changes` feed.
///
/// Sequences are opaque: Apache CouchDB 3 uses strings (`"12-g1AAAA…"`), pouchdb-server
/// integers. They are carried as the JSON value the server sent and never parsed or compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(Value);

impl Seq {
    /// The special `now` position: only changes after the request.
    pub fn now() -> Self {
        Seq(Value::String("now".to_owned()))
    }

    /// True for the special `now` position.
    pub fn is_now(&self) -> bool {
        self.0.as_str() == Some("now")
    }

    /// The start of the feed.
    pub fn zero() -> Self {
        Seq(Value::from(0))
    }

    /// Accepts a client-supplied sequence: a non-empty string or a number, of bounded size.
    pub fn from_client(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) if !s.is_empty() && s.len() <= MAX_SEQ_LEN => Some(Seq(value.clone())),
            Value::Number(_) => Some(Seq(value.clone())),
            _ => None,
        }
    }

    /// The form used in a `since=` query parameter.
    pub fn as_query(&self) -> String {
        match &self.0 {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// The JSON value as received.
    pub fn as_json(&self) -> &Value {
        &self.0
    }

    /// How many changes the sequence counts, for metrics only: pouchdb-server's integer, or
    /// the number before the `-` of an Apache CouchDB 3 sequence (the sum of its shards'
    /// update sequences). `None` for `now` and anything else. Never used to order or resume.
    pub fn number(&self) -> Option<u64> {
        match &self.0 {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.split('-').next()?.parse().ok(),
            _ => None,
        }
    }
}

impl From<Value> for Seq {
    fn from(value: Value) -> Self {
        Seq(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_and_numbers_pass_through_unchanged() {
        let s = Seq::from_client(&json!("12-g1AAAAFTeJzLYWBg")).unwrap();
        assert_eq!(s.as_query(), "12-g1AAAAFTeJzLYWBg");
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!("12-g1AAAAFTeJzLYWBg")
        );
        let n = Seq::from_client(&json!(42)).unwrap();
        assert_eq!(n.as_query(), "42");
        assert_eq!(serde_json::to_value(&n).unwrap(), json!(42));
    }

    #[test]
    fn numbers_of_couchdb_and_pouchdb_sequences() {
        assert_eq!(Seq::from(json!(42)).number(), Some(42));
        assert_eq!(Seq::from(json!("12-g1AAAAFTeJzLYWBg")).number(), Some(12));
        assert_eq!(Seq::from(json!("7")).number(), Some(7));
        assert_eq!(Seq::now().number(), None);
        assert_eq!(Seq::from(json!("g1AAA-12")).number(), None);
        assert_eq!(Seq::from(json!(null)).number(), None);
    }

    #[test]
    fn rejects_other_shapes() {
        assert!(Seq::from_client(&json!(null)).is_none());
        assert!(Seq::from_client(&json!("")).is_none());
        assert!(Seq::from_client(&json!({"a": 1})).is_none());
        assert!(Seq::from_client(&json!([1])).is_none());
        assert!(Seq::from_client(&json!("x".repeat(MAX_SEQ_LEN + 1))).is_none());
    }
}
