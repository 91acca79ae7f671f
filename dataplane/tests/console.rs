//! The owner console's server side (issue 19): one-time console codes exchanged for an
//! owner session, the console routes refusing everyone but the owner itself, sessions and
//! "log out everywhere", read-only browsing of documents, blobs listed, downloaded and
//! deleted, and the embedded page served with its security headers. Against a real
//! CouchDB-compatible server and a real S3-compatible one.

mod common;

use std::time::Duration;

use common::TestInstance;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vibe_dataplane::config::S3Config;
use vibe_test_support::S3Server;

const APP: &str = "https://notes.example";

/// A console code minted with the owner token `owner` (optionally with a lifetime).
async fn mint(instance: &TestInstance, owner: &str, ttl: Option<u64>) -> Value {
    let body = match ttl {
        Some(ttl) => json!({ "ttlSeconds": ttl }),
        None => json!({}),
    };
    let (status, answer) = instance
        .post("/api/v1/console/code", Some(owner), None, body)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

async fn exchange(instance: &TestInstance, code: &str) -> (StatusCode, Value) {
    instance
        .post(
            "/api/v1/console/session",
            None,
            None,
            json!({ "code": code }),
        )
        .await
}

/// A console session: its token response.
async fn console_session(instance: &TestInstance) -> Value {
    let owner = instance.owner_token().await;
    let code = mint(instance, &owner, None).await;
    let (status, tokens) = exchange(instance, code["code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokens
}

fn access(tokens: &Value) -> &str {
    tokens["accessToken"].as_str().unwrap()
}

#[tokio::test]
async fn a_console_code_is_good_once_on_its_instance_until_it_expires() {
    let instance = TestInstance::start().await;
    let owner = instance.owner_token().await;
    let minted = mint(&instance, &owner, None).await;
    let code = minted["code"].as_str().unwrap();
    assert!(code.len() >= 40, "256 random bits: {code}");
    assert_eq!(
        minted["url"].as_str().unwrap(),
        format!("{}/console/#code={code}", instance.base),
        "the code travels in the fragment"
    );
    let lifetime = minted["expiresAt"].as_i64().unwrap() - chrono::Utc::now().timestamp();
    assert!((100..=120).contains(&lifetime), "two minutes: {lifetime}");

    let (status, tokens) = exchange(&instance, code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["tokenType"], "Bearer");
    let (status, overview) = instance
        .get("/api/v1/console/overview", Some(access(&tokens)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{overview}");
    assert_eq!(overview["ownerDid"], instance.owner.did().to_string());
    assert_eq!(overview["instanceUrl"], instance.base);
    assert_eq!(overview["services"][0]["name"], "couchdb");
    assert_eq!(overview["services"][0]["ok"], true);
    // The console session is an owner session like any other: it refreshes.
    let (status, refreshed) = instance
        .post(
            "/api/v1/auth/refresh",
            None,
            None,
            json!({ "refreshToken": tokens["refreshToken"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");

    // Used once: refused from then on.
    let (status, refused) = exchange(&instance, code).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("already used console code"),
        "{refused}"
    );

    // Expired: refused, and spent by the attempt.
    let short = mint(&instance, &owner, Some(1)).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (status, _) = exchange(&instance, short["code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Made up, empty, or too long: refused.
    for made_up in ["not-a-code", "", &"x".repeat(10_000)] {
        let (status, _) = exchange(&instance, made_up).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{made_up:.20}");
    }
    // Lifetimes out of range, unknown fields: refused.
    for body in [
        json!({"ttlSeconds": 0}),
        json!({"ttlSeconds": 601}),
        json!({"ttl": 5}),
    ] {
        let (status, _) = instance
            .post("/api/v1/console/code", Some(&owner), None, body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
}

#[tokio::test]
async fn two_exchanges_of_one_code_at_once_succeed_at_most_once() {
    let instance = TestInstance::start().await;
    let owner = instance.owner_token().await;
    let code = mint(&instance, &owner, None).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let attempts = futures::future::join_all((0..4).map(|_| exchange(&instance, &code))).await;
    let won = attempts
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(won, 1, "{attempts:?}");
}

#[tokio::test]
async fn a_code_minted_on_one_instance_is_refused_by_another() {
    let first = TestInstance::start().await;
    let owner = first.owner_token().await;
    let code = mint(&first, &owner, None).await["code"]
        .as_str()
        .unwrap()
        .to_string();
    // Another instance of the same owner, on the same CouchDB data (another public URL).
    let mut second = first;
    second.restart(|_| {}).await;
    let (status, _) = exchange(&second, &code).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn console_routes_refuse_app_tokens_agents_and_strangers() {
    let instance = TestInstance::start().await;
    let owner = instance.owner_token().await;
    instance
        .upsert_app(&owner, APP, &[("read:notes", "always")])
        .await;
    let (status, app) = instance
        .post(
            "/api/v1/apps/token",
            Some(&owner),
            None,
            json!({ "appId": APP }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{app}");
    let app_token = app["accessToken"].as_str().unwrap().to_string();

    let routes = [
        (Method::POST, "/api/v1/console/code", Some(json!({}))),
        (Method::GET, "/api/v1/console/overview", None),
        (Method::GET, "/api/v1/console/sessions", None),
        (
            Method::POST,
            "/api/v1/console/sessions/logout-all",
            Some(json!({})),
        ),
        (Method::GET, "/api/v1/console/collections", None),
        (
            Method::GET,
            "/api/v1/console/collections/notes/documents",
            None,
        ),
        (
            Method::GET,
            "/api/v1/console/collections/notes/documents/1",
            None,
        ),
        (Method::GET, "/api/v1/console/blobs", None),
        (Method::GET, "/api/v1/console/blobs/content/x/notes/y", None),
        (Method::DELETE, "/api/v1/console/blobs/x/notes/y", None),
        // The page's grant button (owner itself only, like the console's own routes).
        (
            Method::POST,
            "/api/v1/apps/grant",
            Some(json!({ "appId": APP, "permission": "read:notes", "setting": "never" })),
        ),
    ];
    for (method, path, body) in &routes {
        // An app token, with or without its app header.
        for header in [None, Some(APP)] {
            let (status, answer) = instance
                .call(method.clone(), path, Some(&app_token), header, body.clone())
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        }
        // The owner's token acting as an app.
        let (status, answer) = instance
            .call(method.clone(), path, Some(&owner), Some(APP), body.clone())
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        // No token: a request from another site carries none (the console keeps its
        // token in memory; no cookie is ever set).
        let mut request = instance
            .http
            .request(method.clone(), instance.url(path))
            .header("Origin", "https://evil.example");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert!(response.headers().get("set-cookie").is_none());
    }
    // Nobody but the owner itself changed the grant.
    let apps = listed(&instance, &owner, "/api/v1/apps").await;
    assert_eq!(apps["apps"][0]["grants"]["read:notes"], "always", "{apps}");
    // The cross-site logout-all did nothing: the owner's session lives.
    let (status, _) = instance
        .get("/api/v1/console/sessions", Some(&owner), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    // The exchange sets no cookie either.
    let owner_code = mint(&instance, &owner, None).await;
    let response = instance
        .http
        .post(instance.url("/api/v1/console/session"))
        .json(&json!({ "code": owner_code["code"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn sessions_are_listed_and_logout_everywhere_ends_them_all() {
    let instance = TestInstance::start().await;
    let cli = instance.login().await;
    let console = console_session(&instance).await;
    instance
        .upsert_app(
            cli["accessToken"].as_str().unwrap(),
            APP,
            &[("read:notes", "always")],
        )
        .await;
    let (_, app) = instance
        .post(
            "/api/v1/apps/token",
            cli["accessToken"].as_str(),
            None,
            json!({ "appId": APP }),
        )
        .await;
    let app_token = app["accessToken"].as_str().unwrap().to_string();

    let (status, list) = instance
        .get("/api/v1/console/sessions", Some(access(&console)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let sessions = list["sessions"].as_array().unwrap();
    // Two owner logins (the one that minted the code, and `cli`) and the console.
    assert_eq!(sessions.len(), 3, "{list}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{list}");
    assert_eq!(current[0]["kind"], "console");
    assert_eq!(
        sessions.iter().filter(|s| s["kind"] == "login").count(),
        2,
        "{list}"
    );

    let (status, answer) = instance
        .post(
            "/api/v1/console/sessions/logout-all",
            Some(access(&console)),
            None,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["revoked"], 3);
    // Every access token, refresh token and app token of every session is dead.
    for token in [access(&console), cli["accessToken"].as_str().unwrap()] {
        let (status, _) = instance
            .get("/api/v1/console/sessions", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for refresh in [&console["refreshToken"], &cli["refreshToken"]] {
        let (status, _) = instance
            .post(
                "/api/v1/auth/refresh",
                None,
                None,
                json!({ "refreshToken": refresh }),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = instance
        .post(
            "/api/v1/data/read",
            Some(&app_token),
            Some(APP),
            json!({"collection": "notes"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A new login works and is the only session.
    let fresh = instance.owner_token().await;
    let (_, list) = instance
        .get("/api/v1/console/sessions", Some(&fresh), None)
        .await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
}

/// The page can also sign in with the owner's key file (WebCrypto in the browser): an
/// ordinary signed login that names itself `client: "console"`, listed as a console
/// session. Other client names are refused; a login without one stays a `login`.
#[tokio::test]
async fn a_signed_login_from_the_page_is_listed_as_a_console_session() {
    let instance = TestInstance::start().await;
    let mut body = instance.login_body(&instance.owner).await;
    body["client"] = json!("console");
    let (status, page) = instance.post("/api/v1/auth/login", None, None, body).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let cli = instance.login().await;

    let mut refused = instance.login_body(&instance.owner).await;
    refused["client"] = json!("agent");
    let (status, answer) = instance
        .post("/api/v1/auth/login", None, None, refused)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    let (status, list) = instance
        .get("/api/v1/console/sessions", Some(access(&page)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let kinds: Vec<(&str, bool)> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["kind"].as_str().unwrap(), s["current"] == true))
        .collect();
    // Newest first: the CLI's login, then the page's.
    assert_eq!(kinds, [("login", false), ("console", true)], "{list}");
    // Its session is an owner session like any other: it refreshes and reaches the
    // console routes and the rest of the API.
    let (status, refreshed) = instance
        .post(
            "/api/v1/auth/refresh",
            None,
            None,
            json!({ "refreshToken": page["refreshToken"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let (status, _) = instance
        .get("/api/v1/console/overview", Some(access(&refreshed)), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = instance.get("/api/v1/apps", Some(access(&cli)), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn collections_are_counted_and_browsed_page_by_page_read_only() {
    let instance = TestInstance::start().await;
    let owner = instance.owner_token().await;
    instance
        .upsert_app(
            &owner,
            APP,
            &[("write:notes", "always"), ("write:todos", "always")],
        )
        .await;
    let notes: Vec<Value> = (0..25)
        .map(|i| json!({ "_id": format!("notes/{i:02}"), "title": format!("Note {i}") }))
        .collect();
    let (status, written) = instance
        .post(
            "/api/v1/data/write",
            Some(&owner),
            Some(APP),
            json!({ "collection": "notes", "data": notes }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{written}");
    let (status, _) = instance
        .post(
            "/api/v1/data/write",
            Some(&owner),
            Some(APP),
            json!({ "collection": "todos", "data": {"_id": "todos/a/b", "done": false} }),
        )
        .await;
    assert!(status.is_success());
    let console = console_session(&instance).await;
    let token = access(&console);

    let (status, list) = instance
        .get("/api/v1/console/collections", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        list,
        json!({"collections": [{"name": "notes", "count": 25}, {"name": "todos", "count": 1}],
            "truncated": false})
    );

    // Page by page: 10, 10, 5, in id order, nothing twice.
    let mut seen = Vec::new();
    let mut path = "/api/v1/console/collections/notes/documents?limit=10".to_string();
    loop {
        let (status, page) = instance.get(&path, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for doc in page["docs"].as_array().unwrap() {
            seen.push(doc["_id"].as_str().unwrap().to_string());
            assert!(doc["title"].is_string());
        }
        match page["next"].as_str() {
            Some(next) => {
                path = format!(
                    "/api/v1/console/collections/notes/documents?limit=10&after={}",
                    urlencode(next)
                )
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("notes/{i:02}")).collect();
    assert_eq!(seen, expected);

    let (status, doc) = instance
        .get(
            "/api/v1/console/collections/todos/documents/a/b",
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["_id"], "todos/a/b");
    assert_eq!(doc["done"], false);
    for missing in [
        "/api/v1/console/collections/todos/documents/nope",
        "/api/v1/console/collections/notes/documents/a/b",
    ] {
        let (status, _) = instance.get(missing, Some(token), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }
    for bad in [
        "/api/v1/console/collections/_design/documents",
        "/api/v1/console/collections/notes/documents?limit=0",
        "/api/v1/console/collections/notes/documents?limit=201",
    ] {
        let (status, _) = instance.get(bad, Some(token), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn blobs_are_listed_downloaded_and_deleted_by_the_owner() {
    let s3 = S3Server::start().await.expect("start s3s-fs");
    let s3_config = S3Config {
        endpoint: s3.endpoint.parse().unwrap(),
        region: s3.region.clone(),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        bucket: "vibe-console".into(),
        force_path_style: true,
    };
    let instance = TestInstance::start_with(|c| {
        c.s3 = Some(s3_config);
        c.blobs.create_bucket = true;
    })
    .await;
    let owner = instance.owner_token().await;
    instance
        .upsert_app(&owner, APP, &[("blob:write:photos", "always")])
        .await;
    let body = b"hello, console".to_vec();
    let uploaded: Value = instance
        .http
        .put(instance.url("/api/v1/blob/upload?collection=photos&filename=h%C3%A9llo%20world.txt"))
        .bearer_auth(&owner)
        .header("X-Vibe-App-ID", APP)
        .header("Content-Type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = uploaded["objectKey"].as_str().unwrap().to_string();
    let console = console_session(&instance).await;
    let token = access(&console);

    let (status, list) = instance
        .get("/api/v1/console/blobs", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let blobs = list["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), 1, "{list}");
    assert_eq!(blobs[0]["objectKey"], key.as_str());
    assert_eq!(blobs[0]["collection"], "photos");
    assert_eq!(blobs[0]["filename"], "héllo world.txt");
    assert_eq!(blobs[0]["size"], body.len());
    assert_eq!(blobs[0]["contentType"], "text/plain");

    let (status, overview) = instance
        .get("/api/v1/console/overview", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(overview["storage"]["blobsBytes"], body.len());
    assert!(overview["storage"]["blobQuotaBytes"].as_u64().unwrap() > 0);
    assert_eq!(overview["services"][1], json!({"name": "s3", "ok": true}));

    let response = instance
        .http
        .get(instance.url(&format!("/api/v1/console/blobs/content/{key}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment;")
            && disposition.contains("filename*=UTF-8''h%C3%A9llo%20world.txt"),
        "{disposition}"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.bytes().await.unwrap().as_ref(), &body[..]);

    let (status, _) = instance
        .call(
            Method::DELETE,
            &format!("/api/v1/console/blobs/{key}"),
            Some(token),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = instance
        .get("/api/v1/console/blobs", Some(token), None)
        .await;
    assert_eq!(list["blobs"], json!([]));
    let (status, _) = instance
        .get(
            &format!("/api/v1/console/blobs/content/{key}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(s3);
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let instance = TestInstance::start().await;
    let page = instance
        .http
        .get(instance.url("/console/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    // No inline script or style: every script is a file of the console.
    assert!(!html.contains("<script>") && !html.contains("style="));
    assert!(html.contains("src=\"console.js\""), "{html}");
    assert!(!html.contains(&instance.owner.did().to_string()));

    for (file, kind) in [
        ("console.js", "text/javascript"),
        ("console.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let response = instance
            .http
            .get(instance.url(&format!("/console/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        let headers = response.headers();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{file}"
        );
        assert_eq!(headers["content-security-policy"], csp);
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let missing = instance
        .http
        .get(instance.url("/console/secret.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.headers().contains_key("content-security-policy"));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let bare = no_redirects
        .get(instance.url("/console"))
        .send()
        .await
        .unwrap();
    assert!(bare.status().is_redirection());
    assert_eq!(bare.headers()["location"], "/console/");
}

/// Sessions whose refresh token ran out are not listed: nobody can refresh them and their
/// access tokens died long before. A refresh moves a session's expiry on.
#[tokio::test]
async fn sessions_whose_refresh_token_expired_are_not_listed() {
    const TTL: Duration = Duration::from_secs(8);
    let instance = TestInstance::start_with(|c| c.limits.refresh_token_ttl = TTL).await;
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let lapsed = instance.login().await;
    // The console code is minted now (by another login, which lapses too) and exchanged
    // after the others expired.
    let owner = instance.owner_token().await;
    let code = mint(&instance, &owner, None).await;
    let kept = instance.login().await;
    // `kept` is the last of the first logins: none of them expires after it.
    let first_logins_expire = kept["refreshTokenExpiresAt"].as_i64().unwrap();
    tokio::time::sleep(TTL / 2).await;
    let (status, refreshed) = instance
        .post(
            "/api/v1/auth/refresh",
            None,
            None,
            json!({ "refreshToken": kept["refreshToken"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    // Wait, by the server's own clock figures (whole seconds), until the first logins'
    // refresh tokens have expired; `kept` was refreshed half-way and lives on.
    while unix_now() < first_logins_expire {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, console) = exchange(&instance, code["code"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{console}");
    let (status, list) = instance
        .get("/api/v1/console/sessions", Some(access(&console)), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let refreshed_expires = refreshed["refreshTokenExpiresAt"].as_i64().unwrap();
    assert!(
        unix_now() < refreshed_expires,
        "the machine was too slow for this test's timing: the refreshed session expired too"
    );
    let listed = list["sessions"].as_array().unwrap();
    let expiries: Vec<&Value> = listed.iter().map(|s| &s["expiresAt"]).collect();
    assert!(
        expiries.contains(&&refreshed["refreshTokenExpiresAt"]),
        "the refreshed session, until its new expiry: {list}"
    );
    assert!(
        expiries.contains(&&console["refreshTokenExpiresAt"]),
        "the console's own session: {list}"
    );
    assert!(
        !expiries.contains(&&lapsed["refreshTokenExpiresAt"]),
        "the lapsed session is gone: {list}"
    );
    // The login that minted the code lapsed too: exactly the two above are left.
    assert_eq!(listed.len(), 2, "{list}");
}

/// `GET path` as the owner: the answer, which must be 200.
async fn listed(instance: &TestInstance, owner: &str, path: &str) -> Value {
    let (status, body) = instance.get(path, Some(owner), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// A read of `notes` by an owner token acting as [`APP`].
async fn read_as_app(instance: &TestInstance, owner: &str) -> StatusCode {
    instance
        .post(
            "/api/v1/data/read",
            Some(owner),
            Some(APP),
            json!({ "collection": "notes" }),
        )
        .await
        .0
}

/// A sync request with a device's credentials.
async fn sync_as(instance: &TestInstance, device: &str, secret: &str) -> StatusCode {
    instance
        .http
        .get(instance.url("/api/v1/sync/"))
        .basic_auth(device, Some(secret))
        .send()
        .await
        .unwrap()
        .status()
}

/// Issue 19: the Apps and Devices lists say when each app and device was last seen (a
/// request authenticated as it), stored at most once a minute each, in the system
/// database, so a restarted process still knows.
#[tokio::test]
async fn apps_and_devices_are_shown_as_last_seen_across_a_restart() {
    const OTHER: &str = "https://other.example";
    let mut instance = TestInstance::start().await;
    let owner = instance.owner_token().await;
    for app in [APP, OTHER] {
        instance
            .upsert_app(&owner, app, &[("read:notes", "always")])
            .await;
    }
    let (status, device) = instance
        .post(
            "/api/v1/devices",
            Some(&owner),
            None,
            json!({ "name": "Phone" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    assert_eq!(device["lastSeenAt"], Value::Null, "{device}");
    let device_id = device["deviceId"].as_str().unwrap().to_string();
    let secret = device["credentials"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    let apps = listed(&instance, &owner, "/api/v1/apps").await;
    assert!(
        apps["apps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["lastSeenAt"].is_null()),
        "never seen: {apps}"
    );

    // The app (an owner token acting as it) and the device make requests.
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    assert_eq!(read_as_app(&instance, &owner).await, StatusCode::OK);
    assert_eq!(
        sync_as(&instance, &device_id, &secret).await,
        StatusCode::OK
    );
    let after = chrono::Utc::now();
    let seen_at = |value: &Value| {
        let at = chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
            .expect("RFC 3339")
            .to_utc();
        assert!(before <= at && at <= after, "{at} within the requests");
        at
    };
    let apps = listed(&instance, &owner, "/api/v1/apps").await;
    let app_seen = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["appId"] == APP)
        .map(|a| a["lastSeenAt"].clone())
        .unwrap();
    seen_at(&app_seen);
    let other = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["appId"] == OTHER);
    assert_eq!(other.unwrap()["lastSeenAt"], Value::Null, "{apps}");
    let (_, status) = instance
        .get(
            &format!("/api/v1/apps/status?appId={APP}"),
            Some(&owner),
            None,
        )
        .await;
    assert_eq!(status["lastSeenAt"], app_seen, "{status}");
    let devices = listed(&instance, &owner, "/api/v1/devices").await;
    let device_seen = devices["devices"][0]["lastSeenAt"].clone();
    seen_at(&device_seen);

    // Stored once each (in the background); more requests within the minute write
    // nothing more.
    let db = instance.state.system_db().await.unwrap();
    let stored = |id: String| {
        let db = db.clone();
        async move {
            for _ in 0..100 {
                if let Some(doc) = db.get(&id).await.unwrap() {
                    return doc;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{id} was never stored");
        }
    };
    let app_doc = format!("last-seen/app/{APP}");
    let device_doc = format!("last-seen/device/{device_id}");
    for id in [&app_doc, &device_doc] {
        let doc = stored(id.clone()).await;
        assert!(doc["_rev"].as_str().unwrap().starts_with("1-"), "{doc}");
    }
    for _ in 0..5 {
        assert_eq!(read_as_app(&instance, &owner).await, StatusCode::OK);
        assert_eq!(
            sync_as(&instance, &device_id, &secret).await,
            StatusCode::OK
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in [&app_doc, &device_doc] {
        let doc = stored(id.clone()).await;
        assert!(
            doc["_rev"].as_str().unwrap().starts_with("1-"),
            "written again within a minute: {doc}"
        );
    }

    // A restarted process reads the stored times.
    instance.restart(|_| {}).await;
    let owner = instance.owner_token().await;
    let apps = listed(&instance, &owner, "/api/v1/apps").await;
    let restarted = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["appId"] == APP)
        .map(|a| a["lastSeenAt"].clone())
        .unwrap();
    assert_eq!(seen_at(&restarted), seen_at(&app_seen), "{apps}");
    let devices = listed(&instance, &owner, "/api/v1/devices").await;
    assert_eq!(
        seen_at(&devices["devices"][0]["lastSeenAt"]),
        seen_at(&device_seen)
    );
}

/// `POST /api/v1/apps/grant` as `token`: one permission of [`APP`] set to `setting`, with
/// `expected` as the precondition when given.
async fn set_grant(
    instance: &TestInstance,
    token: &str,
    permission: &str,
    setting: &str,
    expected: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = json!({ "appId": APP, "permission": permission, "setting": setting });
    if let Some(expected) = expected {
        body["expected"] = json!(expected);
    }
    instance
        .post("/api/v1/apps/grant", Some(token), None, body)
        .await
}

/// [`APP`]'s grants as `GET /api/v1/apps` lists them.
async fn grants_of(instance: &TestInstance, owner: &str) -> Value {
    let apps = listed(instance, owner, "/api/v1/apps").await;
    apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["appId"] == APP)
        .map(|a| a["grants"].clone())
        .unwrap_or_else(|| panic!("{APP} is listed: {apps}"))
}

/// Issue 19 and issue 15's promise: a click in a console page loaded before a grant was
/// revoked elsewhere (the CLI's upsert here) changes only the permission clicked, so the
/// revoked grant stays revoked; and a click on a permission changed since the page loaded
/// changes nothing (409), so a page can never undo a change it has not shown.
#[tokio::test]
async fn a_grant_click_changes_one_permission_and_never_undoes_a_change_made_elsewhere() {
    let instance = TestInstance::start().await;
    let owner = instance.owner_token().await;
    let page = access(&console_session(&instance).await).to_string();
    let granted = [
        ("read:x", "always"),
        ("write:x", "ask"),
        ("read:notes", "always"),
        ("write:notes", "ask"),
    ];
    instance.upsert_app(&owner, APP, &granted).await;
    // The page loads the apps.
    let shown = grants_of(&instance, &page).await;
    assert_eq!(shown["read:x"], "always");

    // Meanwhile the owner revokes `read:x` with the CLI (a whole-set upsert).
    let revoked = [
        ("read:x", "never"),
        ("write:x", "ask"),
        ("read:notes", "always"),
        ("write:notes", "ask"),
    ];
    instance.upsert_app(&owner, APP, &revoked).await;
    // The page, still showing `read:x` granted, grants `write:x`.
    let (status, answer) = set_grant(&instance, &page, "write:x", "always", Some("ask")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["appId"], APP);
    assert_eq!(answer["grants"]["write:x"], "always", "{answer}");
    assert_eq!(answer["grants"]["read:x"], "never", "{answer}");
    let now = grants_of(&instance, &owner).await;
    assert_eq!(
        now,
        json!({"read:x": "never", "write:x": "always", "read:notes": "always", "write:notes": "ask"})
    );
    // The app: `read:x` refused, `write:x` allowed.
    let (status, _) = instance
        .post(
            "/api/v1/data/read",
            Some(&owner),
            Some(APP),
            json!({ "collection": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "read:x stays revoked");
    let (status, written) = instance
        .post(
            "/api/v1/data/write",
            Some(&owner),
            Some(APP),
            json!({ "collection": "x", "data": { "n": 1 } }),
        )
        .await;
    assert!(status.is_success(), "{status} {written}");

    // A click on what changed since the page loaded: `read:x` shown granted, revoked by
    // the CLI; the page's "Revoke" (expected always) and a "Grant" of `write:notes` that
    // the CLI refused meanwhile (expected ask, now never) change nothing.
    let (status, answer) = set_grant(&instance, &page, "read:x", "never", Some("always")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("is no longer always"),
        "{answer}"
    );
    instance
        .upsert_app(
            &owner,
            APP,
            &[
                ("read:x", "never"),
                ("write:x", "always"),
                ("read:notes", "always"),
                ("write:notes", "never"),
            ],
        )
        .await;
    let (status, answer) = set_grant(&instance, &page, "write:notes", "always", Some("ask")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(grants_of(&instance, &owner).await["write:notes"], "never");
    // A permission with no setting counts as `ask`; one the app never asked for can be
    // set (the page lists requested and set ones alike); setting what is already so is fine.
    let (status, answer) = set_grant(&instance, &page, "blob:read:x", "always", Some("ask")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = set_grant(&instance, &page, "blob:read:x", "always", None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        grants_of(&instance, &owner).await,
        json!({
            "read:x": "never",
            "write:x": "always",
            "read:notes": "always",
            "write:notes": "never",
            "blob:read:x": "always"
        })
    );

    // Refused: an app not registered (404), a made-up permission or setting, a field the
    // route does not know (400) — each changing nothing.
    let (status, answer) = instance
        .post(
            "/api/v1/apps/grant",
            Some(&page),
            None,
            json!({ "appId": "https://stranger.example", "permission": "read:x", "setting": "always" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    for body in [
        json!({ "appId": APP, "permission": "delete:x", "setting": "always" }),
        json!({ "appId": APP, "permission": "read:x", "setting": "sometimes" }),
        json!({ "appId": APP, "permission": "read:x", "setting": "always", "grants": {} }),
        json!({ "appId": APP, "permission": "read:x" }),
    ] {
        let (status, answer) = instance
            .post("/api/v1/apps/grant", Some(&page), None, body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    assert_eq!(grants_of(&instance, &owner).await["read:x"], "never");
}

/// Issue 19: changes to different permissions of one app made at the same moment (two
/// pages, the CLI, another replica) all survive: each is written at the revision it read,
/// and read again on a conflict.
#[tokio::test]
async fn concurrent_changes_to_different_permissions_all_survive() {
    let instance = TestInstance::start().await;
    let owner = instance.owner_token().await;
    let permissions: Vec<String> = (0..8).map(|i| format!("read:c{i}")).collect();
    let asked: Vec<(&str, &str)> = permissions.iter().map(|p| (p.as_str(), "ask")).collect();
    instance.upsert_app(&owner, APP, &asked).await;
    let mut pages = Vec::new();
    for _ in 0..2 {
        pages.push(access(&console_session(&instance).await).to_string());
    }
    for (round, (from, to)) in [("ask", "always"), ("always", "never"), ("never", "always")]
        .into_iter()
        .enumerate()
    {
        let answers =
            futures::future::join_all(permissions.iter().enumerate().map(|(i, permission)| {
                set_grant(&instance, &pages[i % 2], permission, to, Some(from))
            }))
            .await;
        for (permission, (status, answer)) in permissions.iter().zip(answers) {
            assert_eq!(
                status,
                StatusCode::OK,
                "round {round}, {permission}: {answer}"
            );
        }
        let grants = grants_of(&instance, &owner).await;
        for permission in &permissions {
            assert_eq!(grants[permission], to, "round {round}: {grants}");
        }
    }
}
