//! Which replication requests may pass: an allow-list of paths, methods and query
//! parameters relative to the owner's database root. Everything else is refused before
//! CouchDB sees it, so `_design` documents, `_security`, views, `_find`, attachments,
//! other databases and the system database stay out of reach.

use axum::http::Method;

/// One allowed request, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncRequest {
    /// `GET /`: database information.
    DbInfo,
    /// `GET|POST _changes`.
    Changes,
    /// `POST _revs_diff`.
    RevsDiff,
    /// `POST _bulk_docs`: validated item by item.
    BulkDocs,
    /// `POST _bulk_get`.
    BulkGet,
    /// `GET|POST _all_docs`.
    AllDocs,
    /// `GET|PUT|DELETE _local/{id}`: replication checkpoints.
    Local(String),
    /// `POST _ensure_full_commit` (a no-op on CouchDB 3, still sent by older clients).
    EnsureFullCommit,
    /// `GET {docid}`.
    Document(String),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Path not served through sync (403 with a reason naming it).
    Forbidden(String),
    /// Path served, method not (405).
    MethodNotAllowed,
    /// A query parameter outside the allow-list (400).
    BadParameter(String),
}

const CHANGES_PARAMS: &[&str] = &[
    "feed",
    "style",
    "since",
    "limit",
    "heartbeat",
    "timeout",
    "doc_ids",
    "filter",
    "include_docs",
    "conflicts",
    "descending",
    "attachments",
    "att_encoding_info",
    "seq_interval",
    "last-event-id",
];
const ALL_DOCS_PARAMS: &[&str] = &[
    "include_docs",
    "conflicts",
    "descending",
    "limit",
    "skip",
    "key",
    "keys",
    "startkey",
    "start_key",
    "endkey",
    "end_key",
    "startkey_docid",
    "endkey_docid",
    "inclusive_end",
    "update_seq",
    "attachments",
    "att_encoding_info",
];
const BULK_GET_PARAMS: &[&str] = &["revs", "latest", "attachments", "att_encoding_info"];
const DOC_PARAMS: &[&str] = &[
    "rev",
    "revs",
    "revs_info",
    "open_revs",
    "latest",
    "attachments",
    "att_encoding_info",
    "atts_since",
    "conflicts",
    "deleted_conflicts",
    "local_seq",
    "meta",
];
const BULK_DOCS_PARAMS: &[&str] = &[];
const LOCAL_PARAMS: &[&str] = &["rev"];

impl SyncRequest {
    /// Classify `method` on `rest` (the raw, still percent-encoded path after the sync
    /// root, without a leading `/`) with query `query`.
    pub fn classify(method: &Method, rest: &str, query: Option<&str>) -> Result<Self, Refusal> {
        let segments: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let decoded: Vec<String> = segments
            .iter()
            .map(|s| percent_decode(s).ok_or_else(|| Refusal::Forbidden("Malformed path.".into())))
            .collect::<Result<_, _>>()?;
        let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();

        let (request, methods, params): (SyncRequest, &[Method], &[&str]) = match parts.as_slice() {
            [] => (SyncRequest::DbInfo, &[Method::GET, Method::HEAD], &[]),
            ["_changes"] => (
                SyncRequest::Changes,
                &[Method::GET, Method::POST],
                CHANGES_PARAMS,
            ),
            ["_revs_diff"] => (SyncRequest::RevsDiff, &[Method::POST], &[]),
            ["_bulk_docs"] => (SyncRequest::BulkDocs, &[Method::POST], BULK_DOCS_PARAMS),
            ["_bulk_get"] => (SyncRequest::BulkGet, &[Method::POST], BULK_GET_PARAMS),
            ["_all_docs"] => (
                SyncRequest::AllDocs,
                &[Method::GET, Method::POST],
                ALL_DOCS_PARAMS,
            ),
            ["_ensure_full_commit"] => (SyncRequest::EnsureFullCommit, &[Method::POST], &[]),
            ["_local", id] if valid_local_id(id) => (
                SyncRequest::Local((*id).to_string()),
                &[Method::GET, Method::PUT, Method::DELETE],
                LOCAL_PARAMS,
            ),
            // `_local%2Fid` arrives as one decoded segment.
            [single] if single.starts_with("_local/") && valid_local_id(&single[7..]) => (
                SyncRequest::Local(single[7..].to_string()),
                &[Method::GET, Method::PUT, Method::DELETE],
                LOCAL_PARAMS,
            ),
            [docid] if is_collection_doc_id(docid) => (
                SyncRequest::Document((*docid).to_string()),
                &[Method::GET, Method::HEAD],
                DOC_PARAMS,
            ),
            [first, ..] => {
                let what = first.chars().take(64).collect::<String>();
                return Err(Refusal::Forbidden(format!(
                    "'{what}' is not available through sync: only replication endpoints of the owner's database are."
                )));
            }
        };
        if !methods.contains(method) {
            return Err(Refusal::MethodNotAllowed);
        }
        check_params(query, params, &request)?;
        Ok(request)
    }
}

/// `<collection>/<rest>` with a valid collection: the only ids the data plane stores.
pub fn is_collection_doc_id(id: &str) -> bool {
    use crate::documents::validate::{check_collection, check_id};
    id.split_once('/').is_some_and(|(collection, _)| {
        check_collection(collection).is_ok() && check_id(collection, id).is_ok()
    })
}

fn valid_local_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 512 && !id.chars().any(char::is_control)
}

fn check_params(
    query: Option<&str>,
    allowed: &[&str],
    request: &SyncRequest,
) -> Result<(), Refusal> {
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !allowed.contains(&name.as_ref()) {
            return Err(Refusal::BadParameter(format!(
                "Query parameter '{}' is not allowed through sync.",
                name.chars().take(64).collect::<String>()
            )));
        }
        // Only the built-in doc-id filter: selector and design-document filters run
        // arbitrary queries or code.
        if *request == SyncRequest::Changes
            && name == "feed"
            && !["normal", "longpoll", "continuous"].contains(&value.as_ref())
        {
            return Err(Refusal::BadParameter(
                "feed must be normal, longpoll or continuous.".into(),
            ));
        }
        if *request == SyncRequest::Changes && name == "filter" && value != "_doc_ids" {
            return Err(Refusal::BadParameter(
                "Only filter=_doc_ids is allowed through sync.".into(),
            ));
        }
    }
    Ok(())
}

fn percent_decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(method: Method, rest: &str, query: Option<&str>) -> SyncRequest {
        SyncRequest::classify(&method, rest, query).unwrap_or_else(|e| panic!("{rest}: {e:?}"))
    }

    fn refused(method: Method, rest: &str, query: Option<&str>) -> Refusal {
        SyncRequest::classify(&method, rest, query).expect_err(rest)
    }

    #[test]
    fn replication_endpoints_pass() {
        assert_eq!(ok(Method::GET, "", None), SyncRequest::DbInfo);
        assert_eq!(
            ok(
                Method::GET,
                "_changes",
                Some("style=all_docs&since=0&limit=100&feed=longpoll&heartbeat=10000&timeout=5000")
            ),
            SyncRequest::Changes
        );
        assert_eq!(
            ok(
                Method::POST,
                "_changes",
                Some("filter=_doc_ids&style=all_docs")
            ),
            SyncRequest::Changes
        );
        assert_eq!(ok(Method::POST, "_revs_diff", None), SyncRequest::RevsDiff);
        assert_eq!(ok(Method::POST, "_bulk_docs", None), SyncRequest::BulkDocs);
        assert_eq!(
            ok(Method::POST, "_bulk_get", Some("revs=true&latest=true")),
            SyncRequest::BulkGet
        );
        assert_eq!(
            ok(Method::POST, "_all_docs", Some("include_docs=true")),
            SyncRequest::AllDocs
        );
        assert_eq!(
            ok(Method::POST, "_ensure_full_commit", None),
            SyncRequest::EnsureFullCommit
        );
        assert_eq!(
            ok(Method::PUT, "_local/abc", None),
            SyncRequest::Local("abc".into())
        );
        assert_eq!(
            ok(Method::GET, "_local%2Fabc", None),
            SyncRequest::Local("abc".into())
        );
        assert_eq!(
            ok(
                Method::GET,
                "notes%2F123",
                Some("revs=true&open_revs=all&latest=true")
            ),
            SyncRequest::Document("notes/123".into())
        );
    }

    #[test]
    fn everything_else_is_refused() {
        for rest in [
            "_design/x",
            "_design%2Fx",
            "_security",
            "_find",
            "_index",
            "_purge",
            "_all_dbs",
            "_users",
            "_view",
            "_design/x/_view/y",
            "notes%2F1/attachment.png",
            "_replicator",
            "_session",
            "..%2F_users",
            "_explain",
            "_compact",
        ] {
            assert!(
                matches!(refused(Method::GET, rest, None), Refusal::Forbidden(_)),
                "{rest}"
            );
            assert!(
                matches!(refused(Method::POST, rest, None), Refusal::Forbidden(_)),
                "{rest}"
            );
        }
    }

    #[test]
    fn wrong_methods_are_refused() {
        assert_eq!(refused(Method::DELETE, "", None), Refusal::MethodNotAllowed);
        assert_eq!(refused(Method::PUT, "", None), Refusal::MethodNotAllowed);
        assert_eq!(
            refused(Method::PUT, "notes%2F1", None),
            Refusal::MethodNotAllowed
        );
        assert_eq!(
            refused(Method::DELETE, "notes%2F1", None),
            Refusal::MethodNotAllowed
        );
        assert_eq!(
            refused(Method::GET, "_bulk_docs", None),
            Refusal::MethodNotAllowed
        );
    }

    #[test]
    fn unknown_parameters_and_filters_are_refused() {
        assert!(matches!(
            refused(Method::GET, "_changes", Some("filter=_selector")),
            Refusal::BadParameter(_)
        ));
        assert!(matches!(
            refused(Method::GET, "_changes", Some("filter=app/by_type")),
            Refusal::BadParameter(_)
        ));
        assert!(matches!(
            refused(Method::GET, "_changes", Some("filter=_view&view=a/b")),
            Refusal::BadParameter(_)
        ));
        assert!(matches!(
            refused(Method::POST, "_bulk_docs", Some("w=3")),
            Refusal::BadParameter(_)
        ));
        assert!(matches!(
            refused(Method::GET, "notes%2F1", Some("callback=x")),
            Refusal::BadParameter(_)
        ));
    }
}
