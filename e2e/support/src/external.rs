//! The external-CouchDB switch: `VIBE_TEST_COUCHDB_URL`, `VIBE_TEST_COUCHDB_USER` and
//! `VIBE_TEST_COUCHDB_PASSWORD` point every test at an existing CouchDB instead of a
//! pouchdb-server started per test.

use crate::SupportError;

/// Base URL of an existing CouchDB (no credentials in it), e.g. `http://127.0.0.1:5984`.
pub const COUCHDB_URL_ENV: &str = "VIBE_TEST_COUCHDB_URL";
/// A server admin of that CouchDB.
pub const COUCHDB_USER_ENV: &str = "VIBE_TEST_COUCHDB_USER";
/// That admin's password.
pub const COUCHDB_PASSWORD_ENV: &str = "VIBE_TEST_COUCHDB_PASSWORD";

/// The existing CouchDB named by the environment.
#[derive(Clone)]
pub(crate) struct ExternalCouch {
    pub(crate) url: String,
    pub(crate) user: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for ExternalCouch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalCouch")
            .field("url", &self.url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// True when `VIBE_TEST_COUCHDB_URL` is set: tests run against an existing CouchDB, which they
/// can neither stop nor restart.
pub fn uses_external_couchdb() -> bool {
    setting(COUCHDB_URL_ENV).is_some()
}

/// For a test that stops, kills or restarts the CouchDB server (or needs pouchdb-server
/// itself): under the external-CouchDB switch it prints why it is skipped and returns `true`
/// (the test should then return at once); otherwise `false`.
///
/// ```no_run
/// if vibe_test_support::skip_with_external_couchdb("restarts CouchDB") {
///     return;
/// }
/// ```
///
/// The line starts with `SKIPPED` and names the test (the test thread's name); runners show it
/// with their success output (`cargo nextest run --success-output final`,
/// `cargo test -- --nocapture`).
pub fn skip_with_external_couchdb(reason: &str) -> bool {
    if !uses_external_couchdb() {
        return false;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    eprintln!(
        "SKIPPED {test}: {reason}, which a test cannot do to the existing CouchDB at {COUCHDB_URL_ENV}"
    );
    true
}

/// The external CouchDB from the environment, `None` when the switch is off, or an error
/// naming the setting that is missing or malformed.
pub(crate) fn from_env() -> Result<Option<ExternalCouch>, SupportError> {
    parse(|name| std::env::var(name).ok())
}

fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Option<ExternalCouch>, SupportError> {
    let setting = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let Some(url) = setting(COUCHDB_URL_ENV) else {
        return Ok(None);
    };
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| SupportError::Setting {
        name: COUCHDB_URL_ENV,
        problem: format!("not a URL ({e})"),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(SupportError::Setting {
            name: COUCHDB_URL_ENV,
            problem: "must be an http(s) URL with a host".into(),
        });
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(SupportError::Setting {
            name: COUCHDB_URL_ENV,
            problem: format!(
                "must not contain credentials; use {COUCHDB_USER_ENV} and {COUCHDB_PASSWORD_ENV}"
            ),
        });
    }
    let user = setting(COUCHDB_USER_ENV).ok_or_else(|| SupportError::Setting {
        name: COUCHDB_USER_ENV,
        problem: format!("is required with {COUCHDB_URL_ENV} (a server admin)"),
    })?;
    let password = get(COUCHDB_PASSWORD_ENV).ok_or_else(|| SupportError::Setting {
        name: COUCHDB_PASSWORD_ENV,
        problem: format!("is required with {COUCHDB_URL_ENV}"),
    })?;
    Ok(Some(ExternalCouch {
        url: url.trim().trim_end_matches('/').to_string(),
        user,
        password,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(settings: &[(&str, &str)]) -> Result<Option<ExternalCouch>, SupportError> {
        parse(|name| {
            settings
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn refused(settings: &[(&str, &str)]) -> &'static str {
        match parsed(settings) {
            Err(SupportError::Setting { name, .. }) => name,
            other => panic!("expected a refused setting, got {other:?}"),
        }
    }

    #[test]
    fn off_without_a_url() {
        assert!(parsed(&[]).unwrap().is_none());
        assert!(parsed(&[(COUCHDB_URL_ENV, " ")]).unwrap().is_none());
    }

    #[test]
    fn url_user_and_password() {
        let couch = parsed(&[
            (COUCHDB_URL_ENV, "http://127.0.0.1:5984/"),
            (COUCHDB_USER_ENV, "admin"),
            (COUCHDB_PASSWORD_ENV, "s3cret"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(couch.url, "http://127.0.0.1:5984");
        assert_eq!(
            (couch.user.as_str(), couch.password.as_str()),
            ("admin", "s3cret")
        );
        assert!(!format!("{couch:?}").contains("s3cret"));
    }

    #[test]
    fn bad_or_missing_settings_are_named() {
        let user = (COUCHDB_USER_ENV, "admin");
        let password = (COUCHDB_PASSWORD_ENV, "pw");
        assert_eq!(
            refused(&[(COUCHDB_URL_ENV, "not a url"), user, password]),
            COUCHDB_URL_ENV
        );
        assert_eq!(
            refused(&[(COUCHDB_URL_ENV, "ftp://h:1"), user, password]),
            COUCHDB_URL_ENV
        );
        assert_eq!(
            refused(&[(COUCHDB_URL_ENV, "http://a:b@h:5984"), user, password]),
            COUCHDB_URL_ENV
        );
        assert_eq!(
            refused(&[(COUCHDB_URL_ENV, "http://h:5984"), password]),
            COUCHDB_USER_ENV
        );
        assert_eq!(
            refused(&[(COUCHDB_URL_ENV, "http://h:5984"), user]),
            COUCHDB_PASSWORD_ENV
        );
    }
}
