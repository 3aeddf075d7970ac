//! Altinn 3 consent per call, end to end on loopback: the caller names a person's consent in two
//! headers, portvakt checks them, gets a token for that consent alone from the mock Maskinporten
//! (which checks the consent against the mock Altinn's store), and the upstream gets a token that
//! carries it. Refusals come back as 403 with Maskinporten's reason; no fødselsnummer is logged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashSet;

const ROUTE: &str = r#"  - name: samtykke
    prefix: /samtykke/
    upstream: {upstream}forsikring/
    client: vendor
    scopes: [nav:forsikring/samtykke]
    consent_per_call: true
"#;

const ID: &str = "portvakt-consent-id";
const FROM: &str = "portvakt-consent-from";

/// The `n`th synthetic fødselsnummer with both check digits right (never a real person's: the
/// month digits are Tenor's synthetic +80).
fn person(n: u32) -> String {
    let mut k = n;
    loop {
        let base = format!(
            "{:02}{:02}{:02}{:03}",
            1 + k % 28,
            81 + k / 28 % 12,
            70 + k / 336 % 30,
            k % 1000
        );
        if let Some(number) = portvakt::support::identifiers::person_number(&base) {
            // Every number this test sends is a secret for the log check.
            common::logs::secret(&number);
            return number;
        }
        k += 7919;
    }
}

fn consent_id(n: u32) -> String {
    format!("5a1d0c3e-0000-4000-8000-{n:012}")
}

fn year_ahead() -> i64 {
    portvakt::support::time::unix_now() as i64 + 365 * 86_400
}

/// The consent entry of a token that reached the upstream.
fn consent_of(record: &portvakt::mock::upstream::Recorded) -> (String, String) {
    let claims = record.token_claims.as_ref().expect("a verified token");
    let details = claims["authorization_details"].as_array().unwrap();
    let consent = details
        .iter()
        .find(|d| d["type"] == "urn:altinn:consent")
        .unwrap();
    (
        consent["id"].as_str().unwrap().to_string(),
        consent["from"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_callers_naming_fifty_consents_cost_fifty_grants() {
    let h = Harness::start(ROUTE, 600).await;
    let store = h.mock.consents();
    let people: Vec<String> = (0..50).map(person).collect();
    for (n, p) in people.iter().enumerate() {
        store.give(&consent_id(n as u32), p, SUPPLIER_ORG, year_ahead());
    }
    // Slow answers, so that callers of one consent pile onto one fetch.
    h.mock.set_delay(std::time::Duration::from_millis(300));
    let calls = (0..200u32).map(|i| {
        let n = i % 50;
        let request = h
            .http
            .get(h.url(&format!("/samtykke/caller/{i}")))
            .header(ID, consent_id(n))
            .header(FROM, &people[n as usize]);
        async move { (i, request.send().await.unwrap().status().as_u16()) }
    });
    let answers = futures_join_all(calls).await;
    assert!(answers.iter().all(|(_, s)| *s == 200), "{answers:?}");
    assert_eq!(h.mock.token_requests(), 50, "one grant per consent");
    let records = h.upstream.records();
    assert_eq!(records.len(), 200);
    for record in &records {
        let i: u32 = record.target.rsplit('/').next().unwrap().parse().unwrap();
        let n = i % 50;
        let (id, from) = consent_of(record);
        assert_eq!(id, consent_id(n), "caller {i} got another consent's token");
        assert_eq!(
            from,
            format!("urn:altinn:person:identifier-no:{}", people[n as usize]),
            "caller {i} got another person's token"
        );
        assert!(record.headers.get(ID).is_none() && record.headers.get(FROM).is_none());
    }
    let tokens: HashSet<String> = records
        .iter()
        .map(|r| r.token_claims.as_ref().unwrap()["jti"].to_string())
        .collect();
    assert_eq!(
        tokens.len(),
        50,
        "one token per consent, shared by its callers"
    );
    // Counted, never listed.
    let ready: Value = h.admin_get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["routes"][0]["consent_tokens"], 50, "{ready}");
    let metrics = metrics_text(&h.proxy).await;
    assert_eq!(
        metric_value(&metrics, "portvakt_consent_tokens{route=\"samtykke\"}"),
        Some(50.0)
    );
    assert_no_person_in(&h, &people).await;
}

async fn futures_join_all<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// No fødselsnummer of `people` in the status page, `/readyz` or the metrics (the log lines are
/// checked by the harness on drop: each number is a registered secret).
async fn assert_no_person_in(h: &Harness, people: &[String]) {
    for page in ["/", "/readyz", "/metrics"] {
        let text = h.admin_get(page).await.text().await.unwrap();
        for p in people {
            assert!(!text.contains(p.as_str()), "{page} shows a fødselsnummer");
        }
    }
}

#[tokio::test]
async fn a_consent_token_is_never_used_for_another_consent_or_person() {
    let h = Harness::start(ROUTE, 600).await;
    let (anna, bjorn) = (person(101), person(102));
    let store = h.mock.consents();
    store.give(&consent_id(1), &anna, SUPPLIER_ORG, year_ahead());
    store.give(&consent_id(2), &bjorn, SUPPLIER_ORG, year_ahead());
    let call = |id: String, from: String| {
        h.http
            .get(h.url("/samtykke/inntekt"))
            .header(ID, id)
            .header(FROM, from)
            .send()
    };
    assert_eq!(
        call(consent_id(1), anna.clone()).await.unwrap().status(),
        200
    );
    // The same consent named for another person: its own grant, refused by Maskinporten.
    let crossed = call(consent_id(1), bjorn.clone()).await.unwrap();
    assert_eq!(crossed.status(), 403);
    let body = problem(crossed).await;
    assert_eq!(body["type"], "urn:portvakt:problem:consent-refused");
    assert!(
        body["maskinporten_error_description"]
            .as_str()
            .unwrap()
            .contains("is not from the party named in from"),
        "{body}"
    );
    // Anna's person number, urn form: the same consent as the first call, so its token.
    let urn = format!("urn:altinn:person:identifier-no:{anna}");
    assert_eq!(call(consent_id(1), urn).await.unwrap().status(), 200);
    assert_eq!(
        call(consent_id(2), bjorn.clone()).await.unwrap().status(),
        200
    );
    assert_eq!(
        h.mock.token_requests(),
        3,
        "anna's token served her second call"
    );
    let records = h.upstream.records();
    assert_eq!(records.len(), 3, "nothing went upstream for the refusal");
    let seen: Vec<(String, String)> = records.iter().map(consent_of).collect();
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[2].0, consent_id(2));
    assert!(seen[2].1.ends_with(&bjorn));
    assert_no_person_in(&h, &[anna, bjorn]).await;
}

#[tokio::test]
async fn expired_foreign_revoked_and_unknown_consents_get_403_with_maskinporten_reason() {
    let h = Harness::start(ROUTE, 600).await;
    let store = h.mock.consents();
    let people: Vec<String> = (200..205).map(person).collect();
    let now = portvakt::support::time::unix_now() as i64;
    store.give(&consent_id(10), &people[0], SUPPLIER_ORG, now - 60);
    store.give(&consent_id(11), &people[1], CUSTOMER_ORG, year_ahead());
    store.give(&consent_id(12), &people[2], SUPPLIER_ORG, year_ahead());
    store.revoke(&consent_id(12));
    let cases = [
        (10, 0, "has expired", "expired"),
        (
            11,
            1,
            "was given to another organisation",
            "another organisation",
        ),
        (12, 2, "has been revoked", "withdrawn"),
        (13, 3, "was not found", "check the consent id"),
    ];
    for (id, who, said, hint) in cases {
        let response = h
            .get_with(
                "/samtykke/inntekt",
                &[(ID, &consent_id(id)), (FROM, &people[who])],
            )
            .await;
        assert_eq!(response.status(), 403, "{said}");
        let body = problem(response).await;
        assert_eq!(
            body["type"], "urn:portvakt:problem:consent-refused",
            "{body}"
        );
        assert_eq!(body["maskinporten_error"], "invalid_authorization_details");
        let description = body["maskinporten_error_description"].as_str().unwrap();
        assert!(description.contains(said), "{body}");
        assert!(body["detail"].as_str().unwrap().contains(hint), "{body}");
    }
    assert!(h.upstream.records().is_empty(), "nothing went upstream");
    assert_eq!(h.mock.token_requests(), 4);
    let metrics = metrics_text(&h.proxy).await;
    assert_eq!(
        metric_value(
            &metrics,
            "portvakt_token_fetches_total{client=\"vendor\",result=\"consent_refused\",code=\"invalid_authorization_details\"}"
        ),
        Some(4.0),
        "{metrics}"
    );
    // A refusal is not cached as a token: once the person accepts, the consent serves.
    store.give(&consent_id(13), &people[3], SUPPLIER_ORG, year_ahead());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let response = h
        .get_with(
            "/samtykke/inntekt",
            &[(ID, &consent_id(13)), (FROM, &people[3])],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_no_person_in(&h, &people).await;
}

#[tokio::test]
async fn consent_headers_are_checked_before_any_maskinporten_call() {
    let routes = format!(
        "{ROUTE}  - name: plain\n    prefix: /plain/\n    upstream: {{upstream}}\n    client: vendor\n    scopes: [nav:forsikring/samtykke]\n"
    );
    let h = Harness::start(&routes, 600).await;
    let anna = person(300);
    let id = consent_id(30);
    // (path, headers, status, problem type)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("/samtykke/x", vec![], 400, "consent-missing"),
        ("/samtykke/x", vec![(ID, &id)], 400, "consent-missing"),
        (
            "/samtykke/x",
            vec![(ID, "not-a-uuid"), (FROM, &anna)],
            400,
            "consent-invalid",
        ),
        (
            "/samtykke/x",
            vec![(ID, &id), (FROM, "01010012357")],
            400,
            "consent-invalid",
        ),
        (
            "/samtykke/x",
            vec![
                (ID, &id),
                (FROM, "urn:altinn:person:identifier-no:910753614"),
            ],
            400,
            "consent-invalid",
        ),
        (
            "/plain/x",
            vec![(ID, &id), (FROM, &anna)],
            403,
            "consent-not-allowed",
        ),
    ];
    for (path, headers, status, kind) in cases {
        let response = h.get_with(path, &headers).await;
        assert_eq!(response.status().as_u16(), status, "{path} {headers:?}");
        let body = problem(response).await;
        assert_eq!(
            body["type"],
            format!("urn:portvakt:problem:{kind}"),
            "{body}"
        );
        assert!(!body.to_string().contains(&anna));
    }
    // Two consents in one call: which one would be meant is not portvakt's guess.
    let twice = h
        .http
        .get(h.url("/samtykke/x"))
        .header(ID, &id)
        .header(ID, consent_id(31))
        .header(FROM, &anna)
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    assert!(problem(twice).await["detail"]
        .as_str()
        .unwrap()
        .contains("is given more than once"));
    assert_eq!(h.mock.token_requests(), 0);
    assert!(h.upstream.records().is_empty());
    // An organisation may give consent too.
    h.mock
        .consents()
        .give(&id, STRANGER_ORG, SUPPLIER_ORG, year_ahead());
    let org = format!("urn:altinn:organization:identifier-no:{STRANGER_ORG}");
    let response = h.get_with("/samtykke/x", &[(ID, &id), (FROM, &org)]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(consent_of(&h.upstream.records()[0]).1, org);
}

#[tokio::test]
async fn the_cache_keeps_at_most_its_bound_and_lets_the_least_recently_used_go() {
    let routes = format!("{ROUTE}    consent_tokens_max: 20\n");
    let h = Harness::start(&routes, 600).await;
    let store = h.mock.consents();
    let people: Vec<String> = (0..100).map(|n| person(1000 + n)).collect();
    for (n, p) in people.iter().enumerate() {
        store.give(&consent_id(1000 + n as u32), p, SUPPLIER_ORG, year_ahead());
    }
    let call = |n: usize| {
        let (id, from) = (consent_id(1000 + n as u32), people[n].clone());
        let h = &h;
        async move { h.get_with("/samtykke/x", &[(ID, &id), (FROM, &from)]).await }
    };
    for n in 0..100 {
        assert_eq!(call(n).await.status(), 200);
        // Consent 0 is used all along: it stays.
        assert_eq!(call(0).await.status(), 200);
    }
    assert_eq!(h.mock.token_requests(), 100);
    let ready: Value = h.admin_get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["routes"][0]["consent_tokens"], 20, "{ready}");
    assert_eq!(ready["routes"][0]["consent_tokens_max"], 20);
    // The most recent ones are still cached; the first ones were let go and cost a new grant.
    assert_eq!(call(99).await.status(), 200);
    assert_eq!(h.mock.token_requests(), 100);
    assert_eq!(call(1).await.status(), 200);
    assert_eq!(h.mock.token_requests(), 101);
}

#[tokio::test]
async fn a_consent_token_lives_no_longer_than_its_consent() {
    let h = Harness::start(ROUTE, 600).await;
    let anna = person(400);
    // Valid for 3 more seconds: the 600 s token is kept for less than that.
    let valid_to = portvakt::support::time::unix_now() as i64 + 3;
    h.mock
        .consents()
        .give(&consent_id(40), &anna, SUPPLIER_ORG, valid_to);
    let id = consent_id(40);
    let headers = [(ID, id.as_str()), (FROM, anna.as_str())];
    let call = || h.get_with("/samtykke/x", &headers);
    assert_eq!(call().await.status(), 200);
    let ready: Value = h.admin_get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["routes"][0]["consent_tokens"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let response = call().await;
    assert_eq!(
        response.status(),
        403,
        "the consent ended; its token is not served"
    );
    assert_eq!(h.mock.token_requests(), 2);
    assert_eq!(h.upstream.records().len(), 1);
}

#[tokio::test]
async fn consent_on_behalf_of_a_customer_goes_with_delegation_and_the_altinn_exchange() {
    let altinn_route = |exchange: &str| {
        format!(
            "  - name: samtykke\n    prefix: /samtykke/\n    upstream: {{upstream}}\n    client: vendor\n    scopes: [nav:forsikring/samtykke]\n    consumer_org: \"{CUSTOMER_ORG}\"\n    consent_per_call: true\n    altinn_exchange: {exchange}\n    insecure_http: true\n    consent_id_header: X-Samtykke-Id\n    consent_from_header: X-Samtykke-Fra\n"
        )
    };
    let (mock, upstream) = mock_and_upstream().await;
    let altinn = portvakt::mock::MockAltinn::start(mock.decoding_key(), 1800)
        .await
        .unwrap();
    let upstream_verifying_altinn =
        portvakt::mock::EchoUpstream::start(Some(altinn.decoding_key()))
            .await
            .unwrap();
    drop(upstream);
    let yaml = config_yaml(
        &mock.issuer(),
        &mock.token_endpoint(),
        &altinn_route(&altinn.url()).replace("{upstream}", &upstream_verifying_altinn.url()),
    );
    let proxy = spawn_proxy(&yaml, &[]).await;
    let anna = person(500);
    // The consent is to the customer, the data consumer; the client is the supplier's.
    mock.consents()
        .give(&consent_id(50), &anna, CUSTOMER_ORG, year_ahead());
    let http = http_client();
    let url = format!("http://{}/samtykke/x", proxy.listen);
    let response = http
        .get(&url)
        .header("X-Samtykke-Id", consent_id(50))
        .header("X-Samtykke-Fra", &anna)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let record = upstream_verifying_altinn.records().pop().unwrap();
    assert!(record.token_valid, "{:?}", record.token_error);
    assert!(record.headers.get("x-samtykke-id").is_none());
    assert!(record.headers.get("x-samtykke-fra").is_none());
    // The exchanged token came from the consent token of the customer.
    let seen = altinn.seen().pop().unwrap();
    assert_eq!(seen["consumer"]["ID"], format!("0192:{CUSTOMER_ORG}"));
    assert_eq!(seen["supplier"]["ID"], format!("0192:{SUPPLIER_ORG}"));
    assert_eq!(seen["authorization_details"][0]["id"], consent_id(50));
    assert_eq!(
        seen["authorization_details"][0]["to"]["ID"],
        format!("0192:{CUSTOMER_ORG}")
    );
    // A consent to the supplier itself is not the customer's: refused.
    mock.consents()
        .give(&consent_id(51), &anna, SUPPLIER_ORG, year_ahead());
    let refused = http
        .get(&url)
        .header("X-Samtykke-Id", consent_id(51))
        .header("X-Samtykke-Fra", &anna)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    common::logs::assert_clean();
}

#[tokio::test]
async fn a_consent_request_goes_through_a_portvakt_route_and_the_person_accepts_it() {
    let (mock, upstream) = mock_and_upstream().await;
    drop(upstream);
    mock.add_client(registered_client().scopes(["altinn:consentrequests.write"]));
    let altinn = portvakt::mock::MockAltinn::start(mock.decoding_key(), 1800)
        .await
        .unwrap();
    altinn.serve_consents(mock.consents());
    let echo = portvakt::mock::EchoUpstream::start(Some(mock.decoding_key()))
        .await
        .unwrap();
    let routes = format!(
        "  - name: altinn-samtykke\n    prefix: /altinn/\n    upstream: {altinn}\n    client: vendor\n    scopes: [altinn:consentrequests.write]\n    insecure_http: true\n{}",
        ROUTE.replace("{upstream}", &echo.url()),
        altinn = altinn.url(),
    );
    let proxy = spawn_proxy(
        &config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes),
        &[],
    )
    .await;
    let anna = person(600);
    let id = consent_id(60);
    let request = serde_json::json!({
        "id": id,
        "from": format!("urn:altinn:person:identifier-no:{anna}"),
        "to": format!("urn:altinn:organization:identifier-no:{SUPPLIER_ORG}"),
        "validTo": "2099-01-01T00:00:00+00:00",
        "consentRights": [{"action": ["consent"], "resource": [{"type": "urn:altinn:resource", "value": "standard-samtykke-for-dele-data"}], "metaData": {"inntektsaar": "2025"}}],
        "redirectUrl": "https://forsikring.example/samtykke/ferdig",
    });
    let http = http_client();
    let created = http
        .post(format!(
            "http://{}/altinn/accessmanagement/api/v1/enterprise/consentrequests/",
            proxy.listen
        ))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert!(created["viewUri"].as_str().unwrap().contains(&id));
    let call = || {
        http.get(format!("http://{}/samtykke/x", proxy.listen))
            .header(ID, &id)
            .header(FROM, &anna)
            .send()
    };
    // Not accepted yet.
    let pending = call().await.unwrap();
    assert_eq!(pending.status(), 403);
    assert!(problem(pending).await["detail"]
        .as_str()
        .unwrap()
        .contains("has not accepted"));
    // The person approves in Altinn.
    let accepted = http
        .post(format!("{}mock/consentrequests/{id}/accept", altinn.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 204);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(call().await.unwrap().status(), 200);
    let (got, _) = consent_of(&echo.records().pop().unwrap());
    assert_eq!(got, id);
    common::logs::assert_clean();
}
