//! Drift detection: does the live object already contain everything we want?
//!
//! The desired object must be a *subset* of the live one: every field we set has the same
//! value, while fields the API server defaults (or other controllers own) are ignored. Arrays
//! must match element by element. This is what keeps a resync free of writes.

use serde_json::Value;

/// Whether every field of `desired` is present with an equal value in `live`.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => is_subset(dv, lv),
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (Value::Null, _) => true,
        (d, l) => d == l,
    }
}

/// `{}`, `[]` and null are what the API server drops, so a missing live field equals them.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaulted_fields_are_ignored() {
        let desired = json!({"spec": {"replicas": 1, "template": {"containers": [{"name": "a", "image": "x"}]}}});
        let live = json!({"spec": {"replicas": 1, "revisionHistoryLimit": 10,
            "template": {"containers": [{"name": "a", "image": "x", "imagePullPolicy": "IfNotPresent"}]}},
            "status": {"readyReplicas": 1}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn changed_or_missing_fields_are_drift() {
        let desired = json!({"spec": {"replicas": 1, "containers": [{"image": "x"}]}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 0, "containers": [{"image": "x"}]}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 1, "containers": [{"image": "y"}]}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 1, "containers": []}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"containers": [{"image": "x"}]}})
        ));
    }

    #[test]
    fn empty_desired_values_match_absent_live_fields() {
        assert!(is_subset(&json!({"a": {}, "b": [], "c": null}), &json!({})));
        assert!(!is_subset(&json!({"a": {"b": 1}}), &json!({})));
    }
}
