//! Collection names.
//!
//! A collection groups an owner's documents and blobs and is what grants are written
//! against (`read:<collection>`). Its name is `[a-z0-9][a-z0-9_-]{0,63}`: it never starts
//! with `_` (CouchDB's reserved ids) and never contains `/` (the separator of document ids
//! `<collection>/<key>`). [`Collection`] is the only place that rule is written.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A valid collection name. Constructing one is the check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Collection(String);

/// A string that is not a collection name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Invalid collection name: expected 1 to 64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit."
)]
pub struct InvalidCollection;

impl Collection {
    /// Longest collection name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Check `name` and wrap it.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidCollection> {
        let name = name.into();
        if Self::is_valid(&name) {
            Ok(Self(name))
        } else {
            Err(InvalidCollection)
        }
    }

    /// Whether `name` is a valid collection name: `[a-z0-9][a-z0-9_-]{0,63}`.
    pub fn is_valid(name: &str) -> bool {
        let bytes = name.as_bytes();
        let lower_or_digit = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match bytes.split_first() {
            Some((first, rest)) => {
                bytes.len() <= Self::MAX_LEN
                    && lower_or_digit(first)
                    && rest
                        .iter()
                        .all(|b| lower_or_digit(b) || *b == b'_' || *b == b'-')
            }
            None => false,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Collection {
    type Error = InvalidCollection;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

impl FromStr for Collection {
    type Err = InvalidCollection;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::new(name)
    }
}

impl From<Collection> for String {
    fn from(collection: Collection) -> String {
        collection.0
    }
}

impl AsRef<str> for Collection {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collection_rule() {
        for ok in ["notes", "rt_items_1-2", "0_x-y", "a", &"a".repeat(64)] {
            assert!(Collection::is_valid(ok), "{ok}");
            assert_eq!(Collection::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "Notes",
            "_x",
            "_design",
            "-x",
            "a/b",
            "a b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!Collection::is_valid(bad), "{bad}");
            assert_eq!(bad.parse::<Collection>(), Err(InvalidCollection));
        }
    }

    #[test]
    fn deserializing_checks_the_name() {
        let ok: Collection = serde_json::from_str(r#""notes""#).unwrap();
        assert_eq!(ok.to_string(), "notes");
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#""notes""#);
        let err = serde_json::from_str::<Collection>(r#""_users""#).unwrap_err();
        assert!(err.to_string().contains("Invalid collection name"), "{err}");
    }
}
