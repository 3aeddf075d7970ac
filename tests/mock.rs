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

/// A token for an administration client of SUPPLIER_ORG with `scopes`, from the mock itself.
async fn admin_token(mock: &MockMaskinporten, scopes: &[&str]) -> String {
    let admin_id = "ad000000-0000-4000-8000-0000000000ad";
    mock.add_client(
        portvakt::mock::MockClient::new(admin_id, SUPPLIER_ORG)
            .public_jwk(
                &SigningKey::from_pem(
                    &std::fs::read(fixtures().join("client-a.pem")).unwrap(),
                    "admin",
                )
                .unwrap()
                .public_jwk(),
            )
            .scopes(scopes.iter().copied()),
    );
    let key = SigningKey::from_pem(
        &std::fs::read(fixtures().join("client-a.pem")).unwrap(),
        "admin",
    )
    .unwrap();
    let spec = GrantSpec::new(
        &scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        None,
        None,
        &[],
    );
    let assertion = grant::sign(&mock.issuer(), admin_id, &key, &spec, unix_now())
        .await
        .unwrap();
    let (status, body) = post(mock, &assertion).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn jwks(mock: &MockMaskinporten, token: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("http://{}/api/v1/clients/{CLIENT_ID}/jwks", mock.addr());
    let request = match &body {
        Some(b) => http_client().post(&url).json(b),
        None => http_client().get(&url),
    };
    let answer = request.bearer_auth(token).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_self_service_api_keeps_digdir_s_rules_for_keys() {
    let mock = MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let token = admin_token(&mock, &["idporten:dcr.read", "idporten:dcr.modify"]).await;
    let public = |kid: &str| {
        let k = portvakt::keys::generate(2048, kid).unwrap();
        k.public_jwks["keys"][0].clone()
    };
    let error = |body: &Value| {
        body["errors"][0]["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // The listing: the registered key, with Digdir's exp (a year).
    let (status, listed) = jwks(&mock, &token, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["keys"][0]["kid"], KID);
    let exp = listed["keys"][0]["exp"].as_i64().unwrap();
    assert!((exp - unix_now() as i64 - 365 * 86_400).abs() < 60);
    // Six keys, a key without `use`, a private part, an exp past a year: 400 with Digdir's errors[].
    let six: Vec<Value> = (0..6).map(|i| public(&format!("k{i}"))).collect();
    let (status, body) = jwks(&mock, &token, Some(json!({"keys": six}))).await;
    assert_eq!(
        (status, error(&body).contains("Maks 5")),
        (400, true),
        "{body}"
    );
    let mut no_use = public("no-use");
    no_use.as_object_mut().unwrap().remove("use");
    let (status, body) = jwks(&mock, &token, Some(json!({"keys": [no_use]}))).await;
    assert_eq!(
        (status, error(&body).contains("use")),
        (400, true),
        "{body}"
    );
    let private = portvakt::keys::generate(2048, "private")
        .unwrap()
        .private_jwk
        .expose()
        .clone();
    let (status, _) = jwks(&mock, &token, Some(json!({"keys": [private]}))).await;
    assert_eq!(status, 400);
    let mut far = public("far");
    far["exp"] = json!(unix_now() + 400 * 86_400);
    assert_eq!(
        jwks(&mock, &token, Some(json!({"keys": [far]}))).await.0,
        400
    );
    // The same kid twice: 409.
    let (status, _) = jwks(
        &mock,
        &token,
        Some(json!({"keys": [public("twice"), public("twice")]})),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(
        mock.registered_kids(CLIENT_ID),
        vec![KID.to_string()],
        "a refused post changed the set"
    );
    // A good post replaces the whole set; a new kid has a year unless exp says less.
    let (status, body) = jwks(&mock, &token, Some(json!({"keys": [public("new-1")]}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(mock.registered_kids(CLIENT_ID), vec!["new-1".to_string()]);
    // Reading needs dcr.read; changing needs dcr.modify (or .write); another organisation's client is 403.
    let reader = admin_token(&mock, &["idporten:dcr.read"]).await;
    assert_eq!(
        jwks(&mock, &reader, Some(json!({"keys": [public("x")]})))
            .await
            .0,
        403
    );
    assert_eq!(jwks(&mock, "not-a-token", None).await.0, 401);
}

#[tokio::test]
async fn a_new_kid_waits_out_the_propagation_and_an_expired_one_is_mp_121() {
    let mock = MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let token = admin_token(&mock, &["idporten:dcr.read", "idporten:dcr.modify"]).await;
    mock.set_key_propagation(std::time::Duration::from_secs(4));
    let key = portvakt::keys::generate(2048, "fresh").unwrap();
    let signing = portvakt::keys::keyset::Entry::signing_key_of(key.private_jwk.expose()).unwrap();
    let mut public = key.public_jwks["keys"][0].clone();
    // Whole seconds on both sides, with room for a loaded machine: exp 7 s ahead leaves the key
    // usable after the 4 s delay, and past its exp 7.5 s on, wherever in a second the test starts.
    public["exp"] = json!(unix_now() + 7);
    assert_eq!(
        jwks(&mock, &token, Some(json!({"keys": [public]}))).await.0,
        201
    );
    let grant = || async {
        let spec = GrantSpec::new(&[SCOPE.to_string()], None, None, &[]);
        let a = grant::sign(&mock.issuer(), CLIENT_ID, &signing, &spec, unix_now())
            .await
            .unwrap();
        let (_, body) = post(&mock, &a).await;
        body["error_description"]
            .as_str()
            .unwrap_or("ok")
            .to_string()
    };
    assert!(
        grant().await.contains("Unknown key identifier"),
        "before the propagation delay"
    );
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    assert_eq!(grant().await, "ok");
    tokio::time::sleep(std::time::Duration::from_millis(3400)).await;
    assert!(grant().await.contains("MP-121"), "past its exp");
}
