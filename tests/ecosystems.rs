//! What NAV, KS Fiks and Altinn need beyond a Bearer token, end to end on loopback: delegation with
//! the consumer picked per call, Altinn system users, Altinn's token exchange, the single retry
//! after an upstream 401, and errors an operator can act on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portvakt::mock::{EchoUpstream, MockAltinn, MockMaskinporten};
use serde_json::{json, Value};
use std::time::Duration;

/// The `consumer` (or another actor claim) of the token the upstream saw last, as an org number.
fn actor(record: &portvakt::mock::upstream::Recorded, claim: &str) -> String {
    record.token_claims.as_ref().unwrap()[claim]["ID"]
        .as_str()
        .unwrap()
        .trim_start_matches("0192:")
        .to_string()
}

fn jti(record: &portvakt::mock::upstream::Recorded) -> String {
    record.token_claims.as_ref().unwrap()["jti"]
        .as_str()
        .unwrap()
        .to_string()
}

const SUPPLIER_ROUTE: &str = r#"  - name: samtykke
    prefix: /samtykke/
    upstream: {upstream}forsikring/
    client: vendor
    scopes: [nav:forsikring/samtykke]
    consumer_orgs: ["910753614", "889640782"]
"#;

#[tokio::test]
async fn the_caller_picks_a_listed_consumer_and_each_gets_its_own_token() {
    let h = Harness::start(SUPPLIER_ROUTE, 600).await;
    let call = |org: Option<&str>| {
        let mut request = h
            .http
            .get(h.url("/samtykke/api/v1/samtykke"))
            .header("NAV-Samtykke-Token", "samtykke.jwt.fra-altinn")
            .header("NAV-PersonIdent", "12345678901");
        if let Some(org) = org {
            request = request.header("Portvakt-Consumer-Org", org);
        }
        request.send()
    };

    let first = call(Some(CUSTOMER_ORG)).await.unwrap();
    assert_eq!(first.status(), 200);
    let record = h.upstream.records().pop().unwrap();
    assert!(record.token_valid, "{:?}", record.token_error);
    assert_eq!(actor(&record, "consumer"), CUSTOMER_ORG);
    assert_eq!(actor(&record, "supplier"), SUPPLIER_ORG);
    assert!(
        record.headers.get("portvakt-consumer-org").is_none(),
        "the party header is portvakt's and is removed"
    );
    // The consent token and the person are the caller's: passed through untouched.
    assert_eq!(
        record.headers["nav-samtykke-token"],
        "samtykke.jwt.fra-altinn"
    );
    assert_eq!(record.headers["nav-personident"], "12345678901");

    assert_eq!(call(Some(OTHER_CUSTOMER_ORG)).await.unwrap().status(), 200);
    let other = h.upstream.records().pop().unwrap();
    assert_eq!(actor(&other, "consumer"), OTHER_CUSTOMER_ORG);
    assert_ne!(jti(&record), jti(&other), "one token per consumer");
    assert_eq!(h.mock.token_requests(), 2);

    assert_eq!(call(Some(CUSTOMER_ORG)).await.unwrap().status(), 200);
    let again = h.upstream.records().pop().unwrap();
    assert_eq!(jti(&again), jti(&record), "each consumer's token is cached");
    assert_eq!(h.mock.token_requests(), 2);

    // Off the list: refused before Maskinporten or the upstream hear of it.
    let upstream_calls = h.upstream.records().len();
    let refused = call(Some(STRANGER_ORG)).await.unwrap();
    assert_eq!(refused.status(), 403);
    let body = problem(refused).await;
    assert_eq!(body["type"], "urn:portvakt:problem:party-not-allowed");
    assert_eq!(body["allowed"], json!([CUSTOMER_ORG, OTHER_CUSTOMER_ORG]));
    assert!(
        body["detail"].as_str().unwrap().contains(STRANGER_ORG),
        "{body}"
    );
    // No header and no route default: refused too.
    let missing = call(None).await.unwrap();
    assert_eq!(missing.status(), 400);
    let body = problem(missing).await;
    assert_eq!(body["type"], "urn:portvakt:problem:party-missing");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("portvakt-consumer-org"),
        "{body}"
    );
    assert_eq!(h.mock.token_requests(), 2);
    assert_eq!(h.upstream.records().len(), upstream_calls);
    let grants = h.mock.grants();
    assert!(grants
        .iter()
        .all(|g| g.claims["consumer_org"] != json!(STRANGER_ORG)));

    let ready: Value = h.admin_get("/readyz").await.json().await.unwrap();
    let tokens = ready["routes"][0]["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{ready}");
    assert_eq!(tokens[0]["party"]["org"], CUSTOMER_ORG);
    assert_eq!(tokens[0]["state"]["state"], "valid");
}

#[tokio::test]
async fn a_route_default_consumer_serves_calls_without_the_header() {
    let routes = r#"  - name: samtykke
    prefix: /samtykke/
    upstream: {upstream}
    client: vendor
    scopes: [nav:forsikring/samtykke]
    consumer_org: "910753614"
    consumer_orgs: ["889640782"]
    consumer_org_header: X-Kunde
"#;
    let h = Harness::start(routes, 600).await;
    assert_eq!(h.get("/samtykke/x").await.status(), 200);
    assert_eq!(
        actor(&h.upstream.records().pop().unwrap(), "consumer"),
        CUSTOMER_ORG
    );
    let picked = h
        .get_with("/samtykke/x", &[("X-Kunde", OTHER_CUSTOMER_ORG)])
        .await;
    assert_eq!(picked.status(), 200);
    let record = h.upstream.records().pop().unwrap();
    assert_eq!(actor(&record, "consumer"), OTHER_CUSTOMER_ORG);
    assert!(record.headers.get("x-kunde").is_none());
}

#[tokio::test]
async fn a_route_without_parties_refuses_a_caller_naming_one() {
    let h = Harness::start(ONE_ROUTE, 600).await;
    let response = h
        .get_with("/nav/x", &[("Portvakt-Consumer-Org", CUSTOMER_ORG)])
        .await;
    assert_eq!(response.status(), 403);
    let body = problem(response).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("does not act for other organisations"),
        "{body}"
    );
    assert_eq!(h.mock.token_requests(), 0);
    assert!(h.upstream.records().is_empty());
}

#[tokio::test]
async fn an_undelegated_consumer_gets_mp_251_with_a_hint_naming_both_parties() {
    let routes = r#"  - name: samtykke
    prefix: /samtykke/
    upstream: {upstream}
    client: vendor
    scopes: [nav:forsikring/samtykke]
    consumer_orgs: ["974760673"]
"#;
    let h = Harness::start(routes, 600).await;
    let response = h
        .get_with("/samtykke/x", &[("Portvakt-Consumer-Org", STRANGER_ORG)])
        .await;
    assert_eq!(response.status(), 502);
    let body = problem(response).await;
    assert_eq!(body["maskinporten_code"], "MP-251");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "no delegation in Altinn from consumer {STRANGER_ORG}"
        )),
        "{detail}"
    );
    assert!(h.upstream.records().is_empty());
    let ready: Value = h.admin_get("/readyz").await.json().await.unwrap();
    let state = &ready["routes"][0]["tokens"][0]["state"];
    assert_eq!(state["state"], "failing", "{ready}");
    assert_eq!(state["code"], "MP-251");
    assert!(state["hint"].as_str().unwrap().contains("delegat"));
}

#[tokio::test]
async fn system_users_go_into_the_grant_fixed_or_picked_per_call() {
    let routes = r#"  - name: altinn
    prefix: /altinn/
    upstream: {upstream}
    client: vendor
    scopes: [altinn:instances.read]
    systemuser_org: "910753614"
    systemuser_orgs:
      - org: "0192:889640782"
        externalRef: kunde-42
"#;
    let h = Harness::start(routes, 600).await;
    assert_eq!(h.get("/altinn/x").await.status(), 200);
    let record = h.upstream.records().pop().unwrap();
    let details = &record.token_claims.as_ref().unwrap()["authorization_details"];
    assert_eq!(details[0]["type"], "urn:altinn:systemuser");
    assert_eq!(
        details[0]["systemuser_org"],
        json!({"authority": "iso6523-actorid-upis", "ID": "0192:910753614"})
    );
    assert!(details[0]["systemuser_id"][0].is_string());
    assert!(details[0].get("externalRef").is_none());

    let picked = h
        .get_with(
            "/altinn/x",
            &[("Portvakt-Systemuser-Org", "0192:889640782")],
        )
        .await;
    assert_eq!(picked.status(), 200);
    let record = h.upstream.records().pop().unwrap();
    assert!(record.headers.get("portvakt-systemuser-org").is_none());
    let grant = h.mock.grants().pop().unwrap();
    assert_eq!(
        grant.claims["authorization_details"],
        json!([{
            "type": "urn:altinn:systemuser",
            "systemuser_org": {"authority": "iso6523-actorid-upis", "ID": "0192:889640782"},
            "externalRef": EXTERNAL_REF,
        }])
    );
    assert_eq!(grant.rejected, None);

    let refused = h
        .get_with("/altinn/x", &[("Portvakt-Systemuser-Org", STRANGER_ORG)])
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(h.mock.token_requests(), 2);
}

#[tokio::test]
async fn maskinporten_refuses_a_missing_external_ref_and_an_unknown_system_user() {
    let routes = r#"  - name: no-ref
    prefix: /no-ref/
    upstream: {upstream}
    client: vendor
    scopes: [altinn:instances.read]
    systemuser_org: "889640782"
  - name: unknown
    prefix: /unknown/
    upstream: {upstream}
    client: vendor
    scopes: [altinn:instances.read]
    systemuser_org: "974760673"
"#;
    let h = Harness::start(routes, 600).await;
    let response = h.get("/no-ref/x").await;
    assert_eq!(response.status(), 502);
    let body = problem(response).await;
    assert_eq!(body["maskinporten_code"], "MP-303");
    assert!(
        body["detail"].as_str().unwrap().contains("externalRef"),
        "{body}"
    );
    let body = problem(h.get("/unknown/x").await).await;
    assert_eq!(body["maskinporten_code"], "MP-302");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("974760673 has no system user"),
        "{body}"
    );
    assert!(h.upstream.records().is_empty());
}

/// Mock Maskinporten, mock Altinn and an upstream that accepts only Altinn's tokens.
async fn altinn_setup(
    mp_expires_in: u64,
    altinn_lifetime: u64,
) -> (
    MockMaskinporten,
    MockAltinn,
    EchoUpstream,
    portvakt::app::Running,
) {
    let mock = MockMaskinporten::start(vec![registered_client()], mp_expires_in)
        .await
        .unwrap();
    let altinn = MockAltinn::start(mock.decoding_key(), altinn_lifetime)
        .await
        .unwrap();
    let upstream = EchoUpstream::start(Some(altinn.decoding_key()))
        .await
        .unwrap();
    let routes = format!(
        r#"  - name: altinn-apps
    prefix: /apps/
    upstream: {}ttd/app/
    client: vendor
    scopes: [altinn:instances.read]
    altinn_exchange: {}
"#,
        upstream.url(),
        altinn.url()
    );
    let yaml = config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes);
    let proxy = spawn_proxy(&yaml, &[]).await;
    (mock, altinn, upstream, proxy)
}

#[tokio::test]
async fn the_altinn_token_is_injected_and_cached_by_its_own_exp() {
    // Maskinporten's token lives an hour, Altinn's 3 s: the Altinn token is renewed on its own clock.
    let (mock, altinn, upstream, proxy) = altinn_setup(3600, 3).await;
    let url = format!("http://{}/apps/instances", proxy.listen);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (http, url) = (http_client(), url.clone());
            tokio::spawn(async move { http.get(url).send().await.unwrap().status() })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(
        altinn.exchanges(),
        1,
        "one exchange for ten concurrent calls"
    );
    assert_eq!(mock.token_requests(), 1);
    let record = upstream.records().pop().unwrap();
    assert!(record.token_valid, "{:?}", record.token_error);
    let claims = record.token_claims.unwrap();
    assert_eq!(claims["token_type"], "altinn");
    assert_eq!(claims["urn:altinn:orgNumber"], SUPPLIER_ORG);
    assert_eq!(record.target, "/ttd/app/instances");
    assert_eq!(altinn.seen()[0]["scope"], ALTINN_SCOPE);

    // Past the Altinn token's serving window (lifetime minus a third): exchanged again, this time
    // answered as a JSON string in quotes, with the same Maskinporten token.
    altinn.set_quoted(true);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(get(&proxy, "/apps/instances").await.status(), 200);
    assert_eq!(altinn.exchanges(), 2);
    assert_eq!(mock.token_requests(), 1);
    let renewed = upstream.records().pop().unwrap();
    assert!(renewed.token_valid, "{:?}", renewed.token_error);
    assert_ne!(renewed.token_claims.unwrap()["jti"], claims["jti"]);
}

#[tokio::test]
async fn an_exchange_failure_is_a_502_naming_altinn_s_status() {
    let (_mock, altinn, upstream, proxy) = altinn_setup(3600, 1800).await;
    altinn.set_failing(Some(401));
    let response = get(&proxy, "/apps/x").await;
    assert_eq!(response.status(), 502);
    let body = problem(response).await;
    assert_eq!(body["type"], "urn:portvakt:problem:altinn-exchange-failed");
    assert_eq!(body["altinn_status"], 401);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("HTTP 401") && detail.contains("TT02 takes tokens from Maskinporten test"),
        "{detail}"
    );
    assert!(
        upstream.records().is_empty(),
        "never forwarded without its token"
    );
}

const BODY: &str = "{\"sak\": 42}";

/// A proxy on `routes` whose token has been used once and is then revoked by the upstream.
async fn with_revoked_token(routes: &str) -> Harness {
    let h = Harness::start(routes, 600).await;
    assert_eq!(h.get("/nav/warm").await.status(), 200);
    h.upstream.revoke_seen_tokens();
    h
}

/// POSTs BODY (with its Content-Length) through the proxy.
async fn post(h: &Harness) -> reqwest::Response {
    h.http
        .post(h.url("/nav/sak"))
        .body(BODY)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_upstream_401_gets_a_fresh_token_and_one_retry_with_the_kept_body() {
    let h = with_revoked_token(ONE_ROUTE).await;
    let old = jti(&h.upstream.records()[0]);
    let response = post(&h).await;
    assert_eq!(response.status(), 200, "the caller never saw the 401");
    let records = h.upstream.records();
    assert_eq!(records.len(), 3);
    let (refused, retried) = (&records[1], &records[2]);
    assert_eq!((refused.status, retried.status), (401, 200));
    assert_eq!(jti(refused), old);
    assert_ne!(jti(retried), old, "retried with a fresh token");
    assert_eq!(retried.body_sha256, sha256_hex(BODY.as_bytes()));
    assert_eq!(retried.body_sha256, refused.body_sha256);
    assert_eq!(retried.method, "POST");
    assert_eq!(h.mock.token_requests(), 2);
    assert!(metrics_text(&h.proxy)
        .await
        .contains(r#"portvakt_upstream_unauthorized_total{route="nav",result="retried"} 1"#));
}

/// An 11-byte JSON body sent chunked, without Content-Length.
const CHUNKED_SAK: &str = "POST /nav/sak HTTP/1.1\r\nHost: portvakt\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\n{\"sak\"\r\n5\r\n: 42}\r\n0\r\n\r\n";

#[tokio::test]
async fn a_small_chunked_body_is_kept_and_retried() {
    let h = with_revoked_token(ONE_ROUTE).await;
    // Chunked, without Content-Length, within retry_body_max_bytes: kept, so sent again.
    let status = raw_status(h.proxy.listen, CHUNKED_SAK).await;
    assert_eq!(status, 200, "the caller never saw the 401");
    let records = h.upstream.records();
    assert_eq!(records.len(), 3, "refused, then sent again");
    assert_eq!(records[2].body_sha256, sha256_hex(b"{\"sak\": 42}"));
    assert_eq!(
        records[2].headers["content-length"], "11",
        "the kept body goes with its length"
    );
}

#[tokio::test]
async fn a_streamed_body_is_not_retried_but_the_token_is_still_replaced() {
    let routes = ONE_ROUTE.to_string() + "    retry_body_max_bytes: 4\n";
    let h = with_revoked_token(&routes).await;
    // Chunked and larger than retry_body_max_bytes: portvakt streams it and keeps nothing to send again.
    let status = raw_status(h.proxy.listen, CHUNKED_SAK).await;
    assert_eq!(status, 401, "the upstream's answer is passed back");
    let records = h.upstream.records();
    assert_eq!(records.len(), 2, "sent once");
    assert_eq!(
        records[1].body_sha256,
        sha256_hex(b"{\"sak\": 42}"),
        "the part read first went too"
    );
    assert!(metrics_text(&h.proxy).await.contains(
        r#"portvakt_upstream_unauthorized_total{route="nav",result="not_replayable"} 1"#
    ));

    // The refused token was dropped: the next call fetches a fresh one and gets through.
    assert_eq!(h.get("/nav/next").await.status(), 200);
    assert_eq!(h.mock.token_requests(), 2);
}

#[tokio::test]
async fn a_body_above_the_kept_size_is_not_retried() {
    let routes = ONE_ROUTE.to_string() + "    retry_body_max_bytes: 4\n";
    let h = with_revoked_token(&routes).await;
    let response = post(&h).await;
    assert_eq!(response.status(), 401);
    assert_eq!(h.upstream.records().len(), 2);
    // A bodiless call is still retried.
    h.upstream.revoke_seen_tokens();
    assert_eq!(h.get("/nav/again").await.status(), 200);
}

#[tokio::test]
async fn an_upstream_refusing_every_token_gets_one_retry_never_two() {
    let h = Harness::start(ONE_ROUTE, 600).await;
    assert_eq!(h.get("/nav/warm").await.status(), 200);
    h.upstream.set_reject_all(true);

    assert_eq!(h.get("/nav/a").await.status(), 401);
    assert_eq!(h.upstream.records().len(), 3, "the call and one retry");
    assert_eq!(h.mock.token_requests(), 2);

    // The fresh token was refused too: no more tokens or retries for a while.
    assert_eq!(h.get("/nav/b").await.status(), 401);
    assert_eq!(h.upstream.records().len(), 4);
    assert_eq!(h.mock.token_requests(), 2);
    let m = metrics_text(&h.proxy).await;
    assert!(
        m.contains(r#"portvakt_upstream_unauthorized_total{route="nav",result="retried"} 1"#)
            && m.contains(
                r#"portvakt_upstream_unauthorized_total{route="nav",result="suppressed"} 1"#
            ),
        "{m}"
    );
}

#[tokio::test]
async fn retry_on_401_false_passes_the_401_back_and_keeps_the_token() {
    let routes = ONE_ROUTE.to_string() + "    retry_on_401: false\n";
    let h = with_revoked_token(&routes).await;
    assert_eq!(h.get("/nav/a").await.status(), 401);
    assert_eq!(h.upstream.records().len(), 2);
    assert_eq!(h.mock.token_requests(), 1);
}

#[tokio::test]
async fn a_clock_off_by_a_minute_is_named_in_the_hint() {
    let h = Harness::start(ONE_ROUTE, 600).await;
    // Maskinporten's clock a minute ahead: this machine's grants look a minute old.
    h.mock.set_clock_offset(60);
    let response = h.get("/nav/x").await;
    assert_eq!(response.status(), 502);
    let body = problem(response).await;
    assert_eq!(body["maskinporten_code"], "MP-130");
    let detail = body["detail"].as_str().unwrap();
    let seconds: i64 = detail
        .split("this machine's clock is ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{detail}"));
    assert!((59..=61).contains(&seconds), "{detail}");
    assert!(detail.contains("behind Maskinporten's"), "{detail}");
}

#[tokio::test]
async fn an_expired_key_and_a_client_from_another_environment_are_explained() {
    let h = Harness::start(ONE_ROUTE, 600).await;
    // A key uploaded more than a year ago: Maskinporten refuses it.
    h.mock.add_client(registered_client().expired(KID));
    let body = problem(h.get("/nav/x").await).await;
    assert_eq!(body["maskinporten_code"], "MP-121");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("keys live at most one year after upload")
            && detail.contains("portvakt keygen"),
        "{detail}"
    );

    // The client exists in the other environment only: this Maskinporten does not know it.
    let mock = MockMaskinporten::start(vec![], 600).await.unwrap();
    let routes = ONE_ROUTE.replace("{upstream}", &h.upstream.url());
    let proxy = spawn_proxy(
        &config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes),
        &[],
    )
    .await;
    let body = problem(get(&proxy, "/nav/x").await).await;
    assert_eq!(body["maskinporten_code"], "MP-100");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("maskinporten.environment is the one the client was created in"),
        "{body}"
    );
    assert!(h.upstream.records().is_empty());
}
