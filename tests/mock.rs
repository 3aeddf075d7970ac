//! The mock Maskinporten enforces the real rules: every test that relies on it relies on these.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portvakt::keys::{KeySource, SigningKey};
use portvakt::mock::MockMaskinporten;
use portvakt::token::grant::{self, unix_now, GrantSpec};
use serde_json::{json, Value};

async fn post(mock: &MockMaskinporten, assertion: &str) -> (u16, Value) {
    let response = http_client()
        .post(mock.token_endpoint())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// A grant with arbitrary claims, signed with `key` under `kid`.
fn signed(key: &SigningKey, kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key.encoding_key().unwrap()).unwrap()
}

fn claims(mock: &MockMaskinporten) -> Value {
    let now = unix_now();
    json!({
        "aud": mock.issuer(),
        "iss": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": uuid::Uuid::new_v4().to_string(),
        "scope": SCOPE,
    })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

#[tokio::test]
async fn accepts_a_good_grant_and_answers_like_maskinporten() {
    let mock = MockMaskinporten::start(vec![registered_client()], 599)
        .await
        .unwrap();
    let spec = GrantSpec::new(&[SCOPE.to_string()], None, None, &[]);
    let assertion = grant::sign(&mock.issuer(), CLIENT_ID, &client_key(), &spec, unix_now())
        .await
        .unwrap();
    let (status, body) = post(&mock, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 599);
    assert_eq!(body["scope"], SCOPE);
    let token: Value =
        jsonwebtoken::dangerous::insecure_decode_claims(body["access_token"].as_str().unwrap())
            .unwrap();
    assert_eq!(
        token["consumer"],
        json!({"authority": "iso6523-actorid-upis", "ID": format!("0192:{SUPPLIER_ORG}")})
    );
    assert_eq!(token["client_amr"], "private_key_jwt");
    assert!(token.get("supplier").is_none());
    // The same grant again is a replay.
    let (status, body) = post(&mock, &assertion).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "invalid_grant")
    );
    assert!(body["error_uri"].as_str().unwrap().ends_with("MP-012"));
}

#[tokio::test]
async fn refuses_grants_that_break_the_rules() {
    let mock = MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let key = client_key();
    // A real key, but not the one registered under KID.
    let stranger = portvakt::keys::load(&KeySource::Jwk {
        path: fixtures().join("client-b.jwk.json"),
    })
    .unwrap();
    let now = unix_now();
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "wrong aud",
            signed(
                &key,
                KID,
                &with(claims(&mock), "aud", json!(mock.token_endpoint())),
            ),
            "invalid_grant",
            "MP-110",
        ),
        (
            "aud as a list",
            signed(
                &key,
                KID,
                &with(claims(&mock), "aud", json!([mock.issuer()])),
            ),
            "invalid_grant",
            "MP-110",
        ),
        (
            "unknown client",
            signed(
                &key,
                KID,
                &with(claims(&mock), "iss", json!("no-such-client")),
            ),
            "invalid_grant",
            "MP-100",
        ),
        (
            "unknown kid",
            signed(&key, "not-registered", &claims(&mock)),
            "invalid_grant",
            "MP-124",
        ),
        (
            "signed with another key",
            signed(&stranger, KID, &claims(&mock)),
            "invalid_grant",
            "MP-124",
        ),
        (
            "lives too long",
            // iat set here too: `claims` reads the clock again, and a second may pass in between.
            signed(
                &key,
                KID,
                &with(
                    with(claims(&mock), "iat", json!(now)),
                    "exp",
                    json!(now + 121),
                ),
            ),
            "invalid_grant",
            "MP-130",
        ),
        (
            "issued 30 s ago",
            signed(
                &key,
                KID,
                &with(
                    with(claims(&mock), "iat", json!(now - 30)),
                    "exp",
                    json!(now + 60),
                ),
            ),
            "invalid_grant",
            "MP-130",
        ),
        (
            "issued in the future",
            signed(
                &key,
                KID,
                &with(
                    with(claims(&mock), "iat", json!(now + 30)),
                    "exp",
                    json!(now + 100),
                ),
            ),
            "invalid_grant",
            "MP-130",
        ),
        (
            "undocumented claim",
            signed(&key, KID, &with(claims(&mock), "sub", json!(CLIENT_ID))),
            "invalid_grant",
            "MP-000",
        ),
        (
            "no jti",
            signed(&key, KID, &with(claims(&mock), "jti", json!(""))),
            "invalid_grant",
            "MP-012",
        ),
        (
            "unregistered scope",
            signed(&key, KID, &with(claims(&mock), "scope", json!("altinn:x"))),
            "invalid_scope",
            "MP-200",
        ),
        (
            "no delegation",
            signed(
                &key,
                KID,
                &with(
                    with(claims(&mock), "consumer_org", json!(CUSTOMER_ORG)),
                    "scope",
                    json!(OTHER_SCOPE),
                ),
            ),
            "forbidden",
            "MP-251",
        ),
        (
            "own org as consumer",
            signed(
                &key,
                KID,
                &with(claims(&mock), "consumer_org", json!(SUPPLIER_ORG)),
            ),
            "invalid_request",
            "MP-250",
        ),
    ];
    for (what, assertion, error, code) in cases {
        let (status, body) = post(&mock, &assertion).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"], error, "{what}: {body}");
        assert!(
            body["error_uri"].as_str().unwrap().ends_with(code),
            "{what}: {body}"
        );
        assert!(body["error_description"].is_string(), "{what}");
    }
    assert!(mock.grants().iter().all(|g| g.rejected.is_some()));
}

#[tokio::test]
async fn delegation_makes_the_customer_consumer_and_the_vendor_supplier() {
    let mock = MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let assertion = signed(
        &client_key(),
        KID,
        &with(claims(&mock), "consumer_org", json!(CUSTOMER_ORG)),
    );
    let (status, body) = post(&mock, &assertion).await;
    assert_eq!(status, 200, "{body}");
    let token: Value =
        jsonwebtoken::dangerous::insecure_decode_claims(body["access_token"].as_str().unwrap())
            .unwrap();
    assert_eq!(token["consumer"]["ID"], format!("0192:{CUSTOMER_ORG}"));
    assert_eq!(token["supplier"]["ID"], format!("0192:{SUPPLIER_ORG}"));
}

/// A grant signed with the fixture virksomhetssertifikat's key, with `x5c` as given.
fn certificate_grant(mock: &MockMaskinporten, x5c: Vec<String>, sign_with: &SigningKey) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5c = Some(x5c);
    jsonwebtoken::encode(&header, &claims(mock), sign_with.encoding_key().unwrap()).unwrap()
}

fn virksomhet() -> SigningKey {
    let p12 = std::fs::read(fixtures().join("pki/virksomhet-aes.p12")).unwrap();
    SigningKey::from_pkcs12(&p12, "test-passord-1234", None, true, unix_now() as i64).unwrap()
}

#[tokio::test]
async fn checks_virksomhetssertifikat_grants() {
    let certificate_client =
        portvakt::mock::MockClient::new(CLIENT_ID, SUPPLIER_ORG).scopes([SCOPE]);
    let mock = MockMaskinporten::start(vec![certificate_client], 60)
        .await
        .unwrap();
    mock.trust_ca_pem(&std::fs::read(fixtures().join("pki/test-ca.pem")).unwrap())
        .unwrap();
    let key = virksomhet();
    let x5c = key.x5c().unwrap().to_vec();
    assert_eq!(x5c.len(), 2, "leaf and the test CA");

    let (status, body) = post(&mock, &certificate_grant(&mock, x5c.clone(), &key)).await;
    assert_eq!(status, 200, "{body}");
    // The leaf alone is enough.
    let (status, _) = post(&mock, &certificate_grant(&mock, x5c[..1].to_vec(), &key)).await;
    assert_eq!(status, 200);

    // base64url instead of standard base64 is malformed.
    let url_safe: Vec<String> = x5c
        .iter()
        .map(|c| c.replace('+', "-").replace('/', "_"))
        .collect();
    if url_safe != x5c {
        let (status, body) = post(&mock, &certificate_grant(&mock, url_safe, &key)).await;
        assert_eq!(
            (
                status,
                body["error_uri"].as_str().unwrap().ends_with("MP-123")
            ),
            (400, true),
            "{body}"
        );
    }
    // Signed with another key than the certificate's.
    let (status, body) = post(&mock, &certificate_grant(&mock, x5c.clone(), &client_key())).await;
    assert_eq!(status, 400);
    assert!(
        body["error_uri"].as_str().unwrap().ends_with("MP-124"),
        "{body}"
    );
    // The CA itself is not a client certificate.
    let (status, body) = post(&mock, &certificate_grant(&mock, x5c[1..].to_vec(), &key)).await;
    assert_eq!(status, 400);
    assert!(
        body["error_uri"].as_str().unwrap().ends_with("MP-120"),
        "{body}"
    );
}

#[tokio::test]
async fn a_client_with_registered_keys_must_send_kid() {
    let mock = MockMaskinporten::start(vec![registered_client()], 60)
        .await
        .unwrap();
    mock.trust_ca_pem(&std::fs::read(fixtures().join("pki/test-ca.pem")).unwrap())
        .unwrap();
    let key = virksomhet();
    let (status, body) = post(
        &mock,
        &certificate_grant(&mock, key.x5c().unwrap().to_vec(), &key),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error_uri"].as_str().unwrap().ends_with("MP-120"),
        "{body}"
    );
}
