//! Owner login, tokens, refresh rotation and logout against a real CouchDB-compatible
//! server, through the real router.

mod common;

use common::{TestInstance, signed_login};
use reqwest::StatusCode;
use serde_json::json;
use vibe_identity::{Keypair, TokenIssuer, TokenKind, TokenSpec};

#[tokio::test]
async fn login_issues_tokens_and_nonces_are_single_use() {
    let t = TestInstance::start().await;

    let (s, challenge) = t
        .post("/api/v1/auth/challenge", None, None, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let nonce = challenge["nonce"].as_str().unwrap().to_string();
    let now = chrono::Utc::now().timestamp();
    let expires = challenge["expiresAt"].as_i64().unwrap();
    assert!(expires > now && expires <= now + 301, "{challenge}");

    let body = signed_login(&t.owner, &nonce, &chrono::Utc::now().to_rfc3339());
    let (s, tokens) = t.post("/api/v1/auth/login", None, None, body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["tokenType"], "Bearer");
    let access_exp = tokens["accessTokenExpiresIn"].as_i64().unwrap();
    assert!(
        (now + 14 * 60..=now + 16 * 60).contains(&access_exp),
        "absolute expiry, 15 minutes"
    );
    assert!(tokens["refreshTokenExpiresAt"].as_i64().unwrap() > now + 29 * 24 * 3600);
    assert!(tokens["refreshToken"].as_str().unwrap().len() >= 40);

    // The access token works (owner route).
    let access = tokens["accessToken"].as_str().unwrap();
    let (s, _) = t.get("/api/v1/apps", Some(access), None).await;
    assert_eq!(s, StatusCode::OK);

    // Replaying the same signed login is refused: the nonce is spent.
    let (s, b) = t.post("/api/v1/auth/login", None, None, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b["error"].as_str().unwrap().contains("nonce"), "{b}");

    // An unknown nonce (never issued by the server) is refused.
    let body = signed_login(
        &t.owner,
        "client-chosen-nonce",
        &chrono::Utc::now().to_rfc3339(),
    );
    let (s, b) = t.post("/api/v1/auth/login", None, None, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
}

#[tokio::test]
async fn login_refusals_have_clear_messages() {
    let t = TestInstance::start().await;

    // Bad signature (signed by another key but claiming the owner's DID).
    let mut body = t.login_body(&t.owner).await;
    let forged = Keypair::generate().sign_base64("whatever");
    body["signature"] = json!(forged);
    let (s, b) = t.post("/api/v1/auth/login", None, None, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["error"], "Invalid signature or authentication failed.");

    // A foreign DID, correctly signed.
    let stranger = Keypair::generate();
    let body = t.login_body(&stranger).await;
    let (s, b) = t.post("/api/v1/auth/login", None, None, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["error"], "Identity is not the owner of this instance.");

    // Timestamp outside the allowed skew: the original's 400.
    let (_, challenge) = t
        .post("/api/v1/auth/challenge", None, None, json!({}))
        .await;
    let old = (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339();
    let body = signed_login(&t.owner, challenge["nonce"].as_str().unwrap(), &old);
    let (s, b) = t.post("/api/v1/auth/login", None, None, body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b,
        json!({"error": "Request timestamp is invalid or expired."})
    );

    // Missing fields: validation error.
    let (s, b) = t
        .post(
            "/api/v1/auth/login",
            None,
            None,
            json!({"did": t.owner.did().to_string()}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "Validation failed");
}

#[tokio::test]
async fn tokens_of_other_instances_or_kinds_are_refused() {
    let t = TestInstance::start().await;
    let owner = t.owner.did().to_string();
    let lifetime = chrono::Duration::minutes(5);

    // Same signing key, other audience: another instance's token.
    let foreign = TokenIssuer::new(
        &t.signing_key,
        "https://other.example",
        "https://other.example",
    )
    .issue(TokenSpec::new(&owner, TokenKind::Access, lifetime))
    .unwrap();
    let (s, b) = t.get("/api/v1/apps", Some(&foreign.token), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        b,
        json!({"error": "Unauthorized: Invalid or missing user token."})
    );

    // Right issuer and audience, other key.
    let forged = TokenIssuer::new(&Keypair::generate(), &t.base, &t.base)
        .issue(TokenSpec::new(&owner, TokenKind::Access, lifetime))
        .unwrap();
    let (s, _) = t.get("/api/v1/apps", Some(&forged.token), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A refresh-kind JWT is not an access token.
    let ours = TokenIssuer::new(&t.signing_key, &t.base, &t.base);
    let refresh_kind = ours
        .issue(TokenSpec::new(&owner, TokenKind::Refresh, lifetime))
        .unwrap();
    let (s, _) = t.get("/api/v1/apps", Some(&refresh_kind.token), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Expired.
    let expired = ours
        .issue(
            TokenSpec::new(&owner, TokenKind::Access, lifetime)
                .issued_at(chrono::Utc::now().timestamp() - 3600),
        )
        .unwrap();
    let (s, _) = t.get("/api/v1/apps", Some(&expired.token), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Valid token for another subject: the original's 403.
    let other = ours
        .issue(TokenSpec::new(
            Keypair::generate().did().to_string(),
            TokenKind::Access,
            lifetime,
        ))
        .unwrap();
    let (s, b) = t.get("/api/v1/apps", Some(&other.token), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        b["error"],
        "Forbidden: Token identity does not match this instance."
    );

    // Garbage.
    let (s, _) = t.get("/api/v1/apps", Some("not-a-jwt"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let t = TestInstance::start().await;
    let first = t.login().await;
    let r1 = first["refreshToken"].as_str().unwrap().to_string();

    // Rotation: new refresh and access tokens; the old refresh token is spent.
    let (s, second) = t
        .post(
            "/api/v1/auth/refresh",
            None,
            None,
            json!({"refreshToken": r1}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{second}");
    let r2 = second["refreshToken"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    let a2 = second["accessToken"].as_str().unwrap().to_string();
    let (s, _) = t.get("/api/v1/apps", Some(&a2), None).await;
    assert_eq!(s, StatusCode::OK);

    // Presenting the spent r1 again revokes the family: r2 and a2 stop working.
    let (s, b) = t
        .post(
            "/api/v1/auth/refresh",
            None,
            None,
            json!({"refreshToken": r1}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["error"], "Refresh token has been revoked.");
    let (s, b) = t
        .post(
            "/api/v1/auth/refresh",
            None,
            None,
            json!({"refreshToken": r2}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["error"], "Refresh token has been revoked.");
    let (s, _) = t.get("/api/v1/apps", Some(&a2), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Another login (another family) is unaffected.
    let other = t.login().await;
    let (s, _) = t
        .post(
            "/api/v1/auth/refresh",
            None,
            None,
            json!({"refreshToken": other["refreshToken"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // Unknown refresh token.
    let (s, b) = t
        .post(
            "/api/v1/auth/refresh",
            None,
            None,
            json!({"refreshToken": "nope"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["error"], "Invalid refresh token.");

    // Refresh tokens are stored hashed: the secret appears nowhere in the system database.
    let db = t.state.system_db().await.unwrap();
    let all = db.docs_with_prefix("", 10_000).await.unwrap();
    let dump = serde_json::to_string(&all).unwrap();
    assert!(
        !dump.contains(&r2) && !dump.contains(&r1),
        "refresh tokens stored in clear"
    );
    assert!(dump.contains("sha256:"));
}

#[tokio::test]
async fn logout_revokes_the_family_and_its_access_tokens() {
    let t = TestInstance::start().await;
    let tokens = t.login().await;
    let access = tokens["accessToken"].as_str().unwrap();
    let refresh = tokens["refreshToken"].as_str().unwrap();

    // Logout needs the bearer token.
    let (s, _) = t
        .post(
            "/api/v1/auth/logout",
            None,
            None,
            json!({"refreshToken": refresh}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = t
        .post(
            "/api/v1/auth/logout",
            Some(access),
            None,
            json!({"refreshToken": refresh}),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = t
        .post(
            "/api/v1/auth/refresh",
            None,
            None,
            json!({"refreshToken": refresh}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = t.get("/api/v1/apps", Some(access), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn nonces_and_refresh_tokens_survive_a_restart() {
    let mut t = TestInstance::start().await;
    let (_, challenge) = t
        .post("/api/v1/auth/challenge", None, None, json!({}))
        .await;
    let tokens = t.login().await;
    t.restart(|_| {}).await;

    let body = signed_login(
        &t.owner,
        challenge["nonce"].as_str().unwrap(),
        &chrono::Utc::now().to_rfc3339(),
    );
    let (s, b) = t.post("/api/v1/auth/login", None, None, body.clone()).await;
    assert_eq!(s, StatusCode::OK, "nonce issued before the restart: {b}");
    let (s, _) = t.post("/api/v1/auth/login", None, None, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "and still single use");
    let (s, _) = t
        .post(
            "/api/v1/auth/refresh",
            None,
            None,
            json!({"refreshToken": tokens["refreshToken"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn health_reports_the_service() {
    let t = TestInstance::start().await;
    let (s, b) = t.get("/health", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["status"], "ok");
    assert_eq!(b["service"], "vibe-cloud-api");
    assert!(b["version"].is_string());
    let (s, b) = t.get("/ready", None, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}
