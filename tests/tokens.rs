//! Tokens end to end: single flight, refresh, the grant's claims, and Maskinporten's failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portvakt::mock::Mode;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn two_hundred_concurrent_requests_on_a_cold_cache_make_one_token_request() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    h.mock.set_delay(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (http, url) = (h.http.clone(), h.url(&format!("/nav/c/{i}")));
        tasks.push(tokio::spawn(async move {
            http.get(url).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(h.mock.token_requests(), 1);
    let records = h.upstream.records();
    assert_eq!(records.len(), 200);
    assert!(records.iter().all(|r| r.token_valid));
}

#[tokio::test]
async fn a_waiting_caller_that_leaves_does_not_cancel_the_fetch_for_others() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    h.mock.set_delay(Duration::from_millis(500));
    let quitter = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    assert!(quitter.get(h.url("/nav/a")).send().await.is_err());
    let response = h.get("/nav/b").await;
    assert_eq!(response.status(), 200);
    assert_eq!(h.mock.token_requests(), 1);
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_and_never_reach_the_upstream_expired() {
    let h = Harness::start(ONE_ROUTE, 3).await;
    let started = tokio::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let status = h.get(&format!("/nav/tick/{n}")).await.status();
        assert_eq!(status, 200);
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let records = h.upstream.records();
    assert_eq!(records.len(), n);
    for r in &records {
        assert!(r.token_valid, "{}: {:?}", r.target, r.token_error);
    }
    // A 3 s token is served for 2 s, so 10 s need about 5 fetches; never one per request.
    let fetches = h.mock.token_requests();
    assert!(
        (4..=8).contains(&fetches),
        "{fetches} token requests for {n} calls"
    );
    let distinct: std::collections::HashSet<_> = records
        .iter()
        .map(|r| r.headers["authorization"].clone())
        .collect();
    assert_eq!(distinct.len(), fetches);
}

#[tokio::test]
async fn grant_carries_exactly_the_documented_claims_as_configured() {
    let routes = r#"  - name: delegated
    prefix: /delegated/
    upstream: {upstream}
    client: vendor
    scopes: [nav:forsikring/samtykke]
    consumer_org: "910753614"
    resource: https://api.nav.no/
    authorization_details:
      - type: urn:altinn:systemuser
        systemuser_org: { authority: iso6523-actorid-upis, ID: "0192:889640782" }
        externalRef: kunde-42
  - name: listed
    prefix: /listed/
    upstream: {upstream}
    client: vendor
    scopes: [ks:fiks, nav:forsikring/samtykke]
    resource: [https://a.example/, https://b.example/]
"#;
    let h = Harness::start(routes, 120).await;
    assert_eq!(h.get("/delegated/x").await.status(), 200);
    assert_eq!(h.get("/listed/x").await.status(), 200);
    let grants = h.mock.grants();
    assert_eq!(grants.len(), 2);
    for g in &grants {
        assert_eq!(g.rejected, None);
        assert_eq!(g.header["alg"], "RS256");
        assert_eq!(g.header["kid"], KID);
        assert!(g.header.get("x5c").is_none_or(Value::is_null));
        let iat = g.claims["iat"].as_u64().unwrap();
        let exp = g.claims["exp"].as_u64().unwrap();
        assert!(exp > iat && exp - iat <= 120);
        let now = portvakt::token::grant::unix_now();
        assert!(iat.abs_diff(now) <= 5);
        assert_eq!(g.claims["aud"], h.mock.issuer());
        assert_eq!(g.claims["iss"], CLIENT_ID);
        assert_eq!(
            uuid::Uuid::parse_str(g.claims["jti"].as_str().unwrap())
                .unwrap()
                .get_version_num(),
            4
        );
    }
    let delegated = grants
        .iter()
        .find(|g| g.claims.contains_key("consumer_org"))
        .unwrap();
    let mut keys: Vec<&str> = delegated.claims.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "aud",
            "authorization_details",
            "consumer_org",
            "exp",
            "iat",
            "iss",
            "jti",
            "resource",
            "scope"
        ]
    );
    assert_eq!(delegated.claims["scope"], SCOPE);
    assert_eq!(delegated.claims["consumer_org"], CUSTOMER_ORG);
    assert_eq!(delegated.claims["resource"], "https://api.nav.no/");
    assert_eq!(
        delegated.claims["authorization_details"],
        json!([{"type": "urn:altinn:systemuser", "systemuser_org": {"authority": "iso6523-actorid-upis", "ID": "0192:889640782"}, "externalRef": "kunde-42"}])
    );
    let listed = grants
        .iter()
        .find(|g| !g.claims.contains_key("consumer_org"))
        .unwrap();
    let mut keys: Vec<&str> = listed.claims.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["aud", "exp", "iat", "iss", "jti", "resource", "scope"]
    );
    assert_eq!(listed.claims["scope"], "ks:fiks nav:forsikring/samtykke");
    assert_eq!(
        listed.claims["resource"],
        json!(["https://a.example/", "https://b.example/"])
    );
    assert_ne!(grants[0].claims["jti"], grants[1].claims["jti"]);

    // The upstream sees delegation in the token: the customer as consumer, the vendor as supplier.
    let seen = h.upstream.records();
    let token = seen[0].token_claims.as_ref().unwrap();
    assert_eq!(token["consumer"]["ID"], format!("0192:{CUSTOMER_ORG}"));
    assert_eq!(token["supplier"]["ID"], format!("0192:{SUPPLIER_ORG}"));
}

#[tokio::test]
async fn missing_scope_is_a_502_with_the_mp_code_and_a_hint() {
    let routes = r#"  - name: altinn
    prefix: /altinn/
    upstream: {upstream}
    client: vendor
    scopes: [altinn:correspondence.write]
"#;
    let h = Harness::start(routes, 120).await;
    let response = h.get("/altinn/x").await;
    assert_eq!(response.status(), 502);
    let body = problem(response).await;
    assert_eq!(body["route"], "altinn");
    assert_eq!(body["maskinporten_error"], "invalid_scope");
    assert_eq!(body["maskinporten_code"], "MP-200");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("lacks scope altinn:correspondence.write: ask the API owner for access"),
        "{detail}"
    );
    // Further calls get the same answer without hammering Maskinporten.
    let again = h.get("/altinn/y").await;
    assert_eq!(again.status(), 502);
    assert_eq!(h.mock.token_requests(), 1);
    assert!(h.upstream.records().is_empty());
}

#[tokio::test]
async fn undelegated_consumer_is_refused_with_its_hint() {
    let routes = r#"  - name: fiks-for-customer
    prefix: /fiks/
    upstream: {upstream}
    client: vendor
    scopes: [ks:fiks]
    consumer_org: "910753614"
"#;
    let h = Harness::start(routes, 120).await;
    let response = h.get("/fiks/x").await;
    assert_eq!(response.status(), 502);
    let body = problem(response).await;
    assert_eq!(body["maskinporten_code"], "MP-251");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("no delegation in Altinn from consumer 910753614 to this client's organisation (the supplier) for scope ks:fiks"));
    assert!(h.upstream.records().is_empty());
}

#[tokio::test]
async fn maskinporten_down_is_503_with_retry_after_and_recovers() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    h.mock.set_mode(Mode::Failing(503));
    let response = h.get("/nav/x").await;
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body = problem(response).await;
    assert_eq!(body["route"], "nav");
    assert!(body["detail"].as_str().unwrap().contains("unavailable"));
    // Three quick attempts, then backoff: no retry storm.
    assert_eq!(h.mock.token_requests(), 3);
    assert!(h.upstream.records().is_empty());

    h.mock.set_mode(Mode::Normal);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = h.get("/nav/x").await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(tokio::time::Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(h.upstream.records().len(), 1);
}

#[tokio::test]
async fn unreachable_token_endpoint_is_503() {
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream = portvakt::mock::EchoUpstream::start(None).await.unwrap();
    let yaml = config_yaml(
        &format!("http://{closed}/"),
        &format!("http://{closed}/token"),
        &ONE_ROUTE.replace("{upstream}", &upstream.url()),
    );
    let proxy = spawn_proxy(&yaml, &[]).await;
    let response = get(&proxy, "/nav/x").await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body = problem(response).await;
    assert_eq!(body["title"], "Maskinporten token unavailable");
    assert!(upstream.records().is_empty());
}

#[tokio::test]
async fn the_token_endpoint_is_reached_over_verified_tls() {
    let mock = tls_mock().await;
    assert!(mock.issuer().starts_with("https://127.0.0.1:"));
    let upstream = portvakt::mock::EchoUpstream::start(Some(mock.decoding_key()))
        .await
        .unwrap();
    let routes = ONE_ROUTE.replace("{upstream}", &upstream.url());
    let trusted = config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes).replace(
        "  timeout_seconds: 5\n",
        "  timeout_seconds: 5\n  ca_file: test-ca.pem\n",
    );
    let proxy = spawn_proxy(&trusted, &[]).await;
    let response = get(&proxy, "/nav/x").await;
    assert_eq!(response.status(), 200);
    assert!(upstream.records()[0].token_valid);

    // Without the CA the handshake fails: Maskinporten is unavailable, the call is not forwarded.
    let untrusted = config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes);
    let proxy = spawn_proxy(&untrusted, &[]).await;
    let response = get(&proxy, "/nav/x").await;
    assert_eq!(response.status(), 503);
    assert_eq!(upstream.records().len(), 1);
    assert_eq!(
        mock.token_requests(),
        1,
        "the untrusted proxy never completed a request"
    );
}
