//! Bounds on the shape of a read filter, checked before the store sees it (issue 15: one
//! `$in` of 100,000 items or an `$or` of 50,000 clauses kept CouchDB busy for minutes).
//!
//! A filter is refused with a 400 naming the bound it broke, e.g.
//! `Query limit exceeded: '$in' has 5000 items; query.max_in_items = 100.` The bounds are
//! [`QuerySettings`]: nesting depth, field names, operators and array items in total, items of
//! `$in`/`$nin`/`$all` (and of any other array), clauses of `$or`/`$and`/`$nor`, string
//! length, and the number, length and shape of `$regex` patterns ([`super::regex`]).

use serde_json::Value;

use super::regex::check_pattern;
use super::settings::QuerySettings;
use crate::error::ApiError;

/// The 400 for a filter over the bound `name` (its value `value`); `what` says what broke
/// it.
pub fn exceeded(
    what: impl std::fmt::Display,
    name: &str,
    value: impl std::fmt::Display,
) -> ApiError {
    ApiError::BadRequest(format!(
        "Query limit exceeded: {what}; query.{name} = {value}."
    ))
}

struct Walk<'a> {
    settings: &'a QuerySettings,
    clauses: u32,
    regexes: u32,
}

/// Check a client filter against every bound of `settings`.
pub fn check_filter(settings: &QuerySettings, filter: &Value) -> Result<(), ApiError> {
    let mut walk = Walk {
        settings,
        clauses: 0,
        regexes: 0,
    };
    walk.value(filter, 1)
}

fn shown(text: &str) -> String {
    text.chars().take(32).collect()
}

impl Walk<'_> {
    fn value(&mut self, value: &Value, depth: u32) -> Result<(), ApiError> {
        let s = self.settings;
        if depth > s.max_depth {
            return Err(exceeded(
                format!("the filter is nested deeper than {} levels", s.max_depth),
                "max_depth",
                s.max_depth,
            ));
        }
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    self.clauses += 1;
                    if self.clauses > s.max_clauses {
                        return Err(self.too_many_clauses());
                    }
                    self.string(key)?;
                    self.operand(key, inner)?;
                    self.value(inner, depth + 1)?;
                }
                Ok(())
            }
            Value::Array(items) => {
                // Arrays outside the operators checked in `operand` (`$mod`, equality on
                // an array value, …) share the `$in` bound.
                if items.len() > s.max_in_items as usize {
                    return Err(exceeded(
                        format!("an array has {} items", items.len()),
                        "max_in_items",
                        s.max_in_items,
                    ));
                }
                // Array items count as clauses too: the store compares each with every
                // document, so `$or` of many `$in` must stay within the same total.
                self.clauses += items.len() as u32;
                if self.clauses > s.max_clauses {
                    return Err(self.too_many_clauses());
                }
                items
                    .iter()
                    .try_for_each(|item| self.value(item, depth + 1))
            }
            Value::String(text) => self.string(text),
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
        }
    }

    /// Bounds that depend on the operator `key` introduces.
    fn operand(&mut self, key: &str, inner: &Value) -> Result<(), ApiError> {
        let s = self.settings;
        match (key, inner) {
            ("$in" | "$nin" | "$all", Value::Array(items))
                if items.len() > s.max_in_items as usize =>
            {
                Err(exceeded(
                    format!("'{key}' has {} items", items.len()),
                    "max_in_items",
                    s.max_in_items,
                ))
            }
            ("$or" | "$and" | "$nor", Value::Array(items))
                if items.len() > s.max_or_items as usize =>
            {
                Err(exceeded(
                    format!("'{key}' has {} clauses", items.len()),
                    "max_or_items",
                    s.max_or_items,
                ))
            }
            ("$regex", pattern) => {
                self.regexes += 1;
                if self.regexes > s.max_regexes {
                    return Err(exceeded(
                        "the filter has too many '$regex' operators",
                        "max_regexes",
                        s.max_regexes,
                    ));
                }
                let Value::String(pattern) = pattern else {
                    return Err(ApiError::Validation("$regex must be a string.".into()));
                };
                if pattern.len() > s.max_regex_bytes as usize {
                    return Err(exceeded(
                        format!("a '$regex' pattern has {} bytes", pattern.len()),
                        "max_regex_bytes",
                        s.max_regex_bytes,
                    ));
                }
                check_pattern(pattern).map_err(|why| {
                    ApiError::BadRequest(format!(
                        "Query limit exceeded: '$regex' {why}; query.safe_regex."
                    ))
                })
            }
            _ => Ok(()),
        }
    }

    fn too_many_clauses(&self) -> ApiError {
        exceeded(
            "the filter has too many field names, operators and array items",
            "max_clauses",
            self.settings.max_clauses,
        )
    }

    fn string(&self, text: &str) -> Result<(), ApiError> {
        let max = self.settings.max_string_bytes;
        if text.len() > max as usize {
            return Err(exceeded(
                format!("a string of {} bytes ('{}…')", text.len(), shown(text)),
                "max_string_bytes",
                max,
            ));
        }
        Ok(())
    }
}

/// Refuse sorting on a field outside `query.sort_fields`.
pub fn check_sort(settings: &QuerySettings, sort: &[String]) -> Result<(), ApiError> {
    match sort.iter().find(|field| !settings.allows_sort_on(field)) {
        None => Ok(()),
        Some(field) => Err(exceeded(
            format!("sorting on '{}' is not allowed", shown(field)),
            "sort_fields",
            settings.sort_fields.join(","),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal(filter: Value) -> Option<String> {
        check_filter(&QuerySettings::default(), &filter)
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn ordinary_filters_pass() {
        for ok in [
            json!({"title": {"$regex": "^hello"}}),
            json!({"tags": {"$in": (0..100).collect::<Vec<_>>()}}),
            json!({"$or": [{"a": 1}, {"b": {"$gt": 2}}]}),
            json!({"n": {"$mod": [3, 1]}, "done": false, "who": null}),
        ] {
            assert_eq!(refusal(ok.clone()), None, "{ok}");
        }
    }

    #[test]
    fn each_bound_is_named() {
        let cases = [
            (
                json!({"a": {"$in": (0..101).collect::<Vec<_>>()}}),
                "query.max_in_items = 100",
            ),
            (
                json!({"a": {"$nin": (0..100_000).collect::<Vec<_>>()}}),
                "query.max_in_items = 100",
            ),
            (
                json!({"a": (0..101).collect::<Vec<_>>()}),
                "query.max_in_items = 100",
            ),
            (
                json!({"$or": (0..17).map(|i| json!({"a": i})).collect::<Vec<_>>()}),
                "query.max_or_items = 16",
            ),
            (
                Value::Object((0..257).map(|i| (format!("f{i}"), json!(i))).collect()),
                "query.max_clauses = 256",
            ),
            (
                json!({"$or": (0..3).map(|j| json!({"n": {"$in": (0..100).map(|i| j * 100 + i).collect::<Vec<_>>()}})).collect::<Vec<_>>()}),
                "query.max_clauses = 256",
            ),
            (
                json!({"a": "x".repeat(1025)}),
                "query.max_string_bytes = 1024",
            ),
            (
                json!({"a": {"$regex": "a".repeat(129)}}),
                "query.max_regex_bytes = 128",
            ),
            (
                json!({"a": {"$regex": "^a"}, "b": {"$regex": "^b"}, "c": {"$regex": "^c"}}),
                "query.max_regexes = 2",
            ),
            (json!({"a": {"$regex": "^(a+)+$"}}), "query.safe_regex"),
        ];
        for (filter, named) in cases {
            let refused = refusal(filter).expect("refused");
            assert!(refused.contains(named), "{refused} should name {named}");
        }
        let mut deep = json!(1);
        for _ in 0..8 {
            deep = json!({ "$not": deep });
        }
        assert!(refusal(deep).unwrap().contains("query.max_depth = 8"));
    }

    #[test]
    fn sorts_only_on_allowed_fields() {
        let settings = QuerySettings::default();
        assert!(check_sort(&settings, &["createdAt".into(), "title".into()]).is_ok());
        let refused = check_sort(&settings, &["createdAt".into(), "secret".into()])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("'secret'"), "{refused}");
        assert!(
            refused.contains("query.sort_fields = createdAt,"),
            "{refused}"
        );
    }

    #[test]
    fn refusals_are_400() {
        let error = check_filter(
            &QuerySettings::default(),
            &json!({"a": {"$in": (0..1000).collect::<Vec<_>>()}}),
        )
        .unwrap_err();
        assert_eq!(error.status(), axum::http::StatusCode::BAD_REQUEST);
    }
}
