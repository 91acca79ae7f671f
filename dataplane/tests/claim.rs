//! The owner claim (`POST /api/v1/admin/claim`): every case of the original
//! `tests/auth.test.ts`, with its status codes and error strings, plus persistence of the
//! claimed owner across restarts.

mod common;

use common::TestInstance;
use reqwest::StatusCode;
use serde_json::{Value, json};
use vibe_dataplane::config::{ClaimCodeConfig, Config};
use vibe_identity::Keypair;

const CODE: &str = "TESTCODE-7f3c9a51-claim";

fn claimable(config: &mut Config) {
    config.owner = None;
    config.claim_code = Some(ClaimCodeConfig {
        code: CODE.into(),
        expires_at: None,
        for_did: None,
    });
}

fn claim_body(key: &Keypair, code: &str) -> Value {
    json!({
        "did": key.did().to_string(),
        "claimCode": code,
        "signature": key.sign_base64(&vibe_identity::signed::admin_claim_message(code)),
    })
}

async fn claim_doc(t: &TestInstance) -> Value {
    let db = t.state.system_db().await.unwrap();
    db.get("claim/owner")
        .await
        .unwrap()
        .expect("claim state stored")
}

#[tokio::test]
async fn claim_flow_as_the_original_tests_and_persistence() {
    let mut t = TestInstance::start_with(claimable).await;
    let admin = Keypair::generate();

    // Nobody can log in before the claim.
    let body = t.login_body(&admin).await;
    let (s, b) = t.post("/api/v1/auth/login", None, None, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");

    // Unknown code.
    let (s, b) = t
        .post(
            "/api/v1/admin/claim",
            None,
            None,
            claim_body(&admin, "WRONG-CODE-123"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b, json!({"error": "Invalid or unknown claim code."}));

    // Signature by another key: refused, and the code stays unspent.
    let mut body = claim_body(&admin, CODE);
    body["signature"] = json!(Keypair::generate().sign_base64(CODE));
    let (s, b) = t.post("/api/v1/admin/claim", None, None, body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b, json!({"error": "Invalid signature."}));
    assert!(claim_doc(&t).await["spentAt"].is_null());

    // Success: 201, userDid echoed, code spent, stored only as a hash.
    let (s, b) = t
        .post("/api/v1/admin/claim", None, None, claim_body(&admin, CODE))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["userDid"], admin.did().to_string());
    let doc = claim_doc(&t).await;
    assert!(doc["spentAt"].is_i64());
    assert_eq!(doc["claimedByDid"], admin.did().to_string());
    assert!(
        !doc.to_string().contains(CODE),
        "claim code stored in clear"
    );

    // The claimer is the owner now.
    let body = t.login_body(&admin).await;
    let (s, b) = t.post("/api/v1/auth/login", None, None, body).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Reused code, or any other: once there is an owner the claim is over (409, which the
    // OpenAPI document promises for any well-formed claim then).
    let other = Keypair::generate();
    let (s, b) = t
        .post("/api/v1/admin/claim", None, None, claim_body(&other, CODE))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b, json!({"error": "This instance already has an owner."}));
    let (s, b) = t
        .post(
            "/api/v1/admin/claim",
            None,
            None,
            claim_body(&other, "WRONG-CODE-123"),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b, json!({"error": "This instance already has an owner."}));

    // After a restart (still without TARGET_USER_DID, same code configured) the owner is
    // loaded from the system database and the code stays spent.
    t.restart(claimable).await;
    let body = t.login_body(&admin).await;
    let (s, b) = t.post("/api/v1/auth/login", None, None, body).await;
    assert_eq!(s, StatusCode::OK, "owner persisted: {b}");
    let (s, b) = t
        .post("/api/v1/admin/claim", None, None, claim_body(&other, CODE))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"], "This instance already has an owner.");
    let doc = claim_doc(&t).await;
    assert_eq!(
        doc["claimedByDid"],
        admin.did().to_string(),
        "claim unchanged"
    );
    // The claimed owner's data database is the one named after the claimer's DID.
    let db = t.state.data_db().await.expect("data db");
    assert_eq!(db.name(), t.state.config.data_db_name(&admin.did()));
    assert_eq!(
        db.name(),
        format!(
            "{}{}",
            t.couch.db_prefix(),
            vibe_dataplane::dbnames::user_db_name(&admin.did())
        )
    );
}

#[tokio::test]
async fn expired_claim_code_is_refused() {
    let t = TestInstance::start_with(|c| {
        claimable(c);
        c.claim_code.as_mut().unwrap().expires_at =
            Some(chrono::Utc::now() - chrono::Duration::hours(1));
    })
    .await;
    let admin = Keypair::generate();
    let (s, b) = t
        .post("/api/v1/admin/claim", None, None, claim_body(&admin, CODE))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b, json!({"error": "Claim code has expired."}));
}

#[tokio::test]
async fn claim_code_locked_to_a_did() {
    let intended = Keypair::generate();
    let intended_did = intended.did();
    let t = TestInstance::start_with(move |c| {
        claimable(c);
        c.claim_code.as_mut().unwrap().for_did = Some(intended_did);
    })
    .await;
    let (s, b) = t
        .post(
            "/api/v1/admin/claim",
            None,
            None,
            claim_body(&Keypair::generate(), CODE),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b,
        json!({"error": "Claim code is not valid for the provided DID."})
    );
    let (s, b) = t
        .post(
            "/api/v1/admin/claim",
            None,
            None,
            claim_body(&intended, CODE),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

#[tokio::test]
async fn instance_with_a_configured_owner_cannot_be_claimed() {
    let t = TestInstance::start().await;
    let (s, b) = t
        .post(
            "/api/v1/admin/claim",
            None,
            None,
            claim_body(&Keypair::generate(), CODE),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"], "This instance already has an owner.");
    // A malformed body is told as such first.
    let (s, b) = t
        .post("/api/v1/admin/claim", None, None, json!({"did": "x"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"], "Validation failed");
    let mut body = claim_body(&Keypair::generate(), CODE);
    body["did"] = json!("did:vibe:zNotAKey");
    let (s, b) = t.post("/api/v1/admin/claim", None, None, body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["details"], "'did' must be a did:vibe DID.");
}

/// The OpenAPI document's DID pattern (`did:vibe:z6Mk` + 44 base58btc characters) is what the
/// server takes as well-formed: a DID of that shape which names no Ed25519 key is a wrong
/// identity or signature (401 at login, `Invalid signature.` at claim), never 400
/// `Validation failed`; anything else is.
#[tokio::test]
async fn dids_of_the_documented_shape_are_well_formed() {
    let doc: Value = serde_json::from_str(vibe_dataplane::openapi::OPENAPI_JSON).unwrap();
    let pattern = "^did:vibe:z6Mk[1-9A-HJ-NP-Za-km-z]{44}$";
    assert_eq!(
        doc["components"]["schemas"]["LoginRequest"]["properties"]["did"]["pattern"],
        pattern
    );
    assert_eq!(
        doc["paths"]["/api/v1/admin/claim"]["post"]["requestBody"]["content"]["application/json"]["schema"]
            ["$ref"],
        "#/components/schemas/ClaimRequest"
    );
    assert_eq!(
        doc["components"]["schemas"]["ClaimRequest"]["properties"]["did"]["pattern"],
        pattern
    );
    // Of the shape, but not keys: all `1`s decodes to the wrong multicodec, all `z`s too.
    let not_keys = [
        format!("did:vibe:z6Mk{}", "1".repeat(44)),
        format!("did:vibe:z6Mk{}", "z".repeat(44)),
    ];
    let malformed = [
        format!("did:vibe:z6Mk{}", "1".repeat(40)),
        format!("did:vibe:z6Mk{}", "1".repeat(45)),
        format!("did:vibe:z6Mk{}0", "1".repeat(43)),
        format!("did:key:z6Mk{}", "1".repeat(44)),
    ];

    let t = TestInstance::start_with(claimable).await;
    let admin = Keypair::generate();
    for did in &not_keys {
        let mut body = claim_body(&admin, CODE);
        body["did"] = json!(did);
        let (s, b) = t.post("/api/v1/admin/claim", None, None, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{did}: {b}");
        assert_eq!(b, json!({"error": "Invalid signature."}), "{did}");
    }
    for did in &malformed {
        let mut body = claim_body(&admin, CODE);
        body["did"] = json!(did);
        let (s, b) = t.post("/api/v1/admin/claim", None, None, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{did}: {b}");
        assert_eq!(b["error"], "Validation failed", "{did}");
    }
    assert!(claim_doc(&t).await["spentAt"].is_null());
    let (s, b) = t
        .post("/api/v1/admin/claim", None, None, claim_body(&admin, CODE))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    for did in &not_keys {
        let mut body = t.login_body(&admin).await;
        body["did"] = json!(did);
        let (s, b) = t.post("/api/v1/auth/login", None, None, body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{did}: {b}");
        assert_eq!(b["error"], "Identity is not the owner of this instance.");
    }
    for did in &malformed {
        let mut body = t.login_body(&admin).await;
        body["did"] = json!(did);
        let (s, b) = t.post("/api/v1/auth/login", None, None, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{did}: {b}");
        assert_eq!(b["details"], "'did' must be a did:vibe DID.");
    }
    let body = t.login_body(&admin).await;
    let (s, b) = t.post("/api/v1/auth/login", None, None, body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn a_broken_claim_record_stops_start_up_at_the_claim_step_until_it_is_repaired() {
    // A start-up step that fails for a reason other than CouchDB being down is named (logs,
    // status), answers a plain 500 without details, and is retried: once the record is
    // repaired the next request's attempt succeeds.
    let couch = vibe_test_support::CouchServer::start()
        .await
        .expect("couch");
    let system = couch.db_name("vibe_system");
    couch.create_db(&system).await.expect("system database");
    let record = |claimed: &str| json!({"codeHash": "x", "claimedByDid": claimed, "createdAt": 1});
    let put = couch
        .request(reqwest::Method::PUT, &format!("/{system}/claim%2Fowner"))
        .json(&record("did:key:not-a-key"))
        .send()
        .await
        .expect("store a broken claim record");
    assert!(put.status().is_success(), "{}", put.status());
    let owner = Keypair::generate();
    let t = TestInstance::start_on(couch, owner.clone(), Keypair::generate(), |_| {}).await;

    let (s, b) = t
        .post("/api/v1/auth/challenge", None, None, json!({}))
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{b}");
    assert_eq!(b, json!({"error": "An internal server error occurred."}));
    let status = t.state.startup.status();
    assert!(
        matches!(
            status.outcome,
            vibe_dataplane::startup::Outcome::Failed {
                step: "claim",
                store_unreachable: false
            }
        ),
        "{status:?}"
    );

    let stored: Value = t
        .couch
        .request(reqwest::Method::GET, &format!("/{system}/claim%2Fowner"))
        .send()
        .await
        .expect("read the record")
        .json()
        .await
        .expect("record");
    let mut repaired = record(&owner.did().to_string());
    repaired["_rev"] = stored["_rev"].clone();
    let put = t
        .couch
        .request(reqwest::Method::PUT, &format!("/{system}/claim%2Fowner"))
        .json(&repaired)
        .send()
        .await
        .expect("repair the record");
    assert!(put.status().is_success(), "{}", put.status());
    let (s, b) = t
        .post("/api/v1/auth/challenge", None, None, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(t.state.owner(), Some(owner.did()));
}
