//! The validation rules of the VibeInstance webhook, as pure functions.
//!
//! Each rule returns a [`Violation`] whose message is written for the person who ran
//! `kubectl apply`: it names the field, the offending value and what to do instead.
//! The CRD schema and its CEL rules already catch most of this inside the API server; the
//! webhook repeats them with clearer messages and adds what CEL cannot see (other instances,
//! operator configuration).

use super::hosts::{HostIndex, host_of};
use super::quantity::to_milli_units;
use crate::crd::VibeInstance;
use std::fmt;
use vibe_identity::Did;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The JSON path of the field, e.g. `spec.host`.
    pub field: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Images the operator may run. Empty means every image is allowed.
///
/// Entries are image references where `*` matches any run of characters, e.g.
/// `ghcr.io/vibe-cloud/*` or `couchdb:3.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageAllowList(Vec<String>);

impl ImageAllowList {
    /// An allow-list of the given patterns (blank entries are dropped).
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self(
            patterns
                .into_iter()
                .map(Into::into)
                .map(|p: String| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        )
    }

    /// Whether `image` is allowed.
    pub fn allows(&self, image: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| glob_match(p, image))
    }

    /// Whether the list restricts anything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// What the rules may consult besides the object itself.
pub struct RuleContext<'a> {
    /// Who serves which host.
    pub hosts: &'a dyn HostIndex,
    /// Base domain of default hosts (`<name>.<base domain>`).
    pub base_domain: &'a str,
    /// Allowed images.
    pub images: &'a ImageAllowList,
    /// The platform's backup bucket (`--backup-bucket`), if any.
    pub backup_bucket: Option<&'a str>,
}

/// Every violation of a CREATE (`old` is `None`) or UPDATE of `new`.
///
/// On UPDATE only fields that changed are judged, so an instance admitted under older rules
/// (or by an older operator) can still be edited, and the operator can always remove its
/// finalizer. An instance being deleted is never blocked.
pub fn validate(
    new: &VibeInstance,
    old: Option<&VibeInstance>,
    ctx: &RuleContext<'_>,
) -> Vec<Violation> {
    if new.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let mut violations = Vec::new();
    let changed = |get: &dyn Fn(&VibeInstance) -> Option<String>| match old {
        None => true,
        Some(old) => get(old) != get(new),
    };

    if changed(&|i| i.owner_did().map(str::to_string)) {
        violations.extend(owner_did_is_valid(new));
    }
    if let Some(old) = old {
        violations.extend(owner_is_unchanged(old, new));
        violations.extend(storage_not_shrunk(old, new));
    }
    if let Some(host) = &new.spec.host
        && changed(&|i| i.spec.host.clone())
    {
        violations.extend(host_is_valid(host));
    }
    if changed(&|i| host_of(i, ctx.base_domain)) {
        violations.extend(host_is_free(new, ctx));
    }
    if changed(&|i| i.spec.couchdb.image.clone()) {
        violations.extend(image_is_allowed(
            "spec.couchdb.image",
            new.spec.couchdb.image.as_deref(),
            ctx.images,
        ));
    }
    if changed(&|i| i.spec.dataplane.image.clone()) {
        violations.extend(image_is_allowed(
            "spec.dataplane.image",
            new.spec.dataplane.image.as_deref(),
            ctx.images,
        ));
    }
    if changed(&|i| serde_json::to_string(&i.spec.backup).ok()) {
        violations.extend(backup_is_valid(new, ctx));
    }
    if changed(&|i| serde_json::to_string(&i.spec.restore_from).ok()) {
        violations.extend(restore_from_is_valid(new, old, ctx));
    }
    violations
}

/// `spec.backup`: a schedule Kubernetes accepts, and a bucket to write to.
pub fn backup_is_valid(instance: &VibeInstance, ctx: &RuleContext<'_>) -> Vec<Violation> {
    let Some(backup) = &instance.spec.backup else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(problem) = crate::desired::backup::schedule_problem(&backup.schedule) {
        out.push(Violation {
            field: "spec.backup.schedule",
            message: format!(
                "{:?} is not a cron schedule: {problem}; e.g. \"30 2 * * *\" (02:30 UTC daily) or \"@daily\"",
                backup.schedule
            ),
        });
    }
    if backup.bucket.is_none() && ctx.backup_bucket.is_none() {
        out.push(Violation {
            field: "spec.backup.bucket",
            message: "this platform has no backup bucket (the operator runs without \
                      --backup-bucket): name a bucket in spec.backup.bucket"
                .into(),
        });
    }
    out
}

/// `spec.restoreFrom`: only at creation, with an owner, naming a backup in a bucket.
pub fn restore_from_is_valid(
    new: &VibeInstance,
    old: Option<&VibeInstance>,
    ctx: &RuleContext<'_>,
) -> Vec<Violation> {
    const FIELD: &str = "spec.restoreFrom";
    let mut out = Vec::new();
    if old.is_some() {
        out.push(Violation {
            field: FIELD,
            message: "can only be set when the instance is created; create a new instance to \
                      restore a backup"
                .into(),
        });
        return out;
    }
    let Some(from) = &new.spec.restore_from else {
        return out;
    };
    if new.owner_did().is_none() {
        out.push(Violation {
            field: FIELD,
            message: "needs spec.owner: a backup is encrypted to its owner's key, and only \
                      that owner can restore it"
                .into(),
        });
    }
    match (&from.instance, &from.backup, &from.object_key) {
        (Some(instance), Some(backup), None) => {
            if !is_dns_label(instance) {
                out.push(Violation {
                    field: "spec.restoreFrom.instance",
                    message: format!("{instance:?} is not an instance name"),
                });
            }
            if !is_backup_name(backup) {
                out.push(Violation {
                    field: "spec.restoreFrom.backup",
                    message: format!(
                        "{backup:?} is not a backup name (status.lastBackup.name of the \
                         instance, e.g. 20261204T023000.123Z-1a2b3c4d)"
                    ),
                });
            }
        }
        (None, None, Some(key)) => {
            if key.starts_with('/') || key.trim().is_empty() {
                out.push(Violation {
                    field: "spec.restoreFrom.objectKey",
                    message: format!(
                        "{key:?} is not an object key (status.lastBackup.objectKey, without a \
                         leading /)"
                    ),
                });
            }
        }
        _ => out.push(Violation {
            field: FIELD,
            message: "set either instance and backup, or objectKey".into(),
        }),
    }
    if from.bucket.is_none() && ctx.backup_bucket.is_none() {
        out.push(Violation {
            field: "spec.restoreFrom.bucket",
            message: "this platform has no backup bucket (the operator runs without \
                      --backup-bucket): name the bucket in spec.restoreFrom.bucket"
                .into(),
        });
    }
    out
}

fn is_dns_label(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

/// `YYYYMMDDTHHMMSS.mmmZ-xxxxxxxx`, as `vibe-dataplane backup` names backups.
fn is_backup_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 29
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'.'
        && b[16..19].iter().all(u8::is_ascii_digit)
        && b[19] == b'Z'
        && b[20] == b'-'
        && b[21..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// `spec.owner.did` must be a `did:vibe:` identifier of an Ed25519 key.
pub fn owner_did_is_valid(instance: &VibeInstance) -> Option<Violation> {
    let did = instance.owner_did()?;
    Did::parse(did).err().map(|err| Violation {
        field: "spec.owner.did",
        message: format!(
            "{did:?} is not a valid Vibe DID ({}); copy the owner's did:vibe:z6Mk… identifier from the Vibe app",
            err.to_string().trim_start_matches("invalid DID: ")
        ),
    })
}

/// Once set, `spec.owner.did` can neither change nor go away.
pub fn owner_is_unchanged(old: &VibeInstance, new: &VibeInstance) -> Option<Violation> {
    let before = old.owner_did()?;
    match new.owner_did() {
        Some(after) if after == before => None,
        Some(after) => Some(Violation {
            field: "spec.owner.did",
            message: format!(
                "cannot change the owner from {before:?} to {after:?}: an instance belongs to one person for its whole life; create a new instance for {after:?} instead"
            ),
        }),
        None => Some(Violation {
            field: "spec.owner",
            message: format!(
                "cannot remove the owner {before:?} once set; keep spec.owner.did as it is"
            ),
        }),
    }
}

/// RFC 1123 host name: lower-case labels of letters, digits and `-`, 1–63 characters each,
/// starting and ending with a letter or digit; at most 253 characters; no port, scheme or
/// wildcard.
pub fn host_is_valid(host: &str) -> Option<Violation> {
    let problem = if host.is_empty() {
        Some("it is empty".to_string())
    } else if host.len() > 253 {
        Some(format!(
            "it is {} characters long (at most 253)",
            host.len()
        ))
    } else if host.contains("://") || host.contains('/') {
        Some("give only the host name, without scheme or path".to_string())
    } else if host.contains(':') {
        Some("give only the host name, without a port".to_string())
    } else if host.chars().any(|c| c.is_ascii_uppercase()) {
        Some("use lower-case letters only".to_string())
    } else {
        host.split('.').find_map(|label| {
            if label.is_empty() {
                Some(
                    "it has an empty label (two dots in a row, or a leading or trailing dot)"
                        .to_string(),
                )
            } else if label.len() > 63 {
                Some(format!("label {label:?} is longer than 63 characters"))
            } else if !label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                Some(format!("label {label:?} may only contain a-z, 0-9 and '-'"))
            } else if label.starts_with('-') || label.ends_with('-') {
                Some(format!(
                    "label {label:?} must start and end with a letter or digit"
                ))
            } else {
                None
            }
        })
    };
    problem.map(|problem| Violation {
        field: "spec.host",
        message: format!(
            "{host:?} is not a valid host name: {problem} (RFC 1123, e.g. alice.cloud.example.org)"
        ),
    })
}

/// No two instances may serve the same host (the second would capture the first one's traffic).
pub fn host_is_free(instance: &VibeInstance, ctx: &RuleContext<'_>) -> Option<Violation> {
    let host = host_of(instance, ctx.base_domain)?;
    let namespace = instance.metadata.namespace.as_deref().unwrap_or_default();
    let name = instance.metadata.name.as_deref().unwrap_or_default();
    let holder = ctx.hosts.holder_of(&host, namespace, name)?;
    let field = if instance.spec.host.is_some() {
        "spec.host"
    } else {
        "metadata.name"
    };
    let hint = if instance.spec.host.is_some() {
        "choose another spec.host".to_string()
    } else {
        format!(
            "the default host <name>.{} is taken; set spec.host or choose another name",
            ctx.base_domain
        )
    };
    Some(Violation {
        field,
        message: format!("host {host:?} is already served by VibeInstance {holder}; {hint}"),
    })
}

/// The CouchDB volume can grow but never shrink (PersistentVolumeClaims cannot shrink).
pub fn storage_not_shrunk(old: &VibeInstance, new: &VibeInstance) -> Option<Violation> {
    let (before, after) = (&old.spec.couchdb.storage.0, &new.spec.couchdb.storage.0);
    if before == after {
        return None;
    }
    let Some(after_units) = to_milli_units(after) else {
        return Some(Violation {
            field: "spec.couchdb.storage",
            message: format!("{after:?} is not a valid quantity; write a size such as 5Gi or 20Gi"),
        });
    };
    match to_milli_units(before) {
        Some(before_units) if after_units < before_units => Some(Violation {
            field: "spec.couchdb.storage",
            message: format!(
                "cannot shrink the CouchDB volume from {before} to {after}: volumes can only grow; keep {before} or choose a larger size"
            ),
        }),
        _ => None,
    }
}

/// With an allow-list configured, only listed images may run.
pub fn image_is_allowed(
    field: &'static str,
    image: Option<&str>,
    allowed: &ImageAllowList,
) -> Option<Violation> {
    let image = image?;
    (!allowed.allows(image)).then(|| Violation {
        field,
        message: format!(
            "image {image:?} is not allowed by this operator's image allow-list ({}); use an allowed image or leave the field empty for the default",
            allowed.0.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_prefixes_suffixes_and_middles() {
        assert!(glob_match("couchdb:3.*", "couchdb:3.5.0"));
        assert!(!glob_match("couchdb:3.*", "couchdb:2.3.1"));
        assert!(glob_match(
            "ghcr.io/vibe-cloud/*",
            "ghcr.io/vibe-cloud/vibe-dataplane:0.1.0"
        ));
        assert!(!glob_match(
            "ghcr.io/vibe-cloud/*",
            "ghcr.io/evil/vibe-cloud/x"
        ));
        assert!(glob_match("*/vibe-*:*", "reg.example/vibe-dataplane:1"));
        assert!(glob_match("exact:1", "exact:1"));
        assert!(!glob_match("exact:1", "exact:10"));
        assert!(ImageAllowList::default().allows("anything"));
    }

    #[test]
    fn hosts_follow_rfc_1123() {
        for good in [
            "a.example.org",
            "alice",
            "x1-2.y",
            &format!("{}.org", "a".repeat(63)),
        ] {
            assert_eq!(host_is_valid(good), None, "{good}");
        }
        for bad in [
            "",
            "Alice.example.org",
            "a..b",
            ".a",
            "a.",
            "-a.b",
            "a-.b",
            "a_b.c",
            "*.example.org",
            "https://a.b",
            "a.b:443",
            &format!("{}.org", "a".repeat(64)),
            &"a.".repeat(127),
        ] {
            let v = host_is_valid(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert_eq!(v.field, "spec.host");
            assert!(
                v.message.contains("is not a valid host name"),
                "{}",
                v.message
            );
        }
    }
}
