//! Who gets in and where requests may go: hostile requests, allow-lists, API keys, inbound TLS,
//! redirects and outbound proxies. Every refusal is checked at the upstream too: it saw nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::faults::{ConnectProxy, Fault, FaultServer};
use common::*;

const CALLER_KEY: &str = "caller-key-0123456789-abcdef";

fn routes() -> String {
    format!(
        r#"  - name: nav
    prefix: /nav/
    upstream: {{upstream}}forsikring/
    client: vendor
    scopes: [{SCOPE}]
    max_body_bytes: 1024
  - name: keyed
    prefix: /keyed/
    upstream: {{upstream}}keyed/
    client: vendor
    scopes: [{SCOPE}]
    api_keys: ["${{CALLER_KEY}}"]
  - name: internal
    prefix: /internal/
    upstream: {{upstream}}internal/
    client: vendor
    scopes: [{SCOPE}]
    allow: [10.0.0.0/8, "fd00::/8"]
"#
    )
}

#[tokio::test]
async fn hostile_requests_are_refused_and_reach_neither_maskinporten_nor_the_upstream() {
    let h = Harness::start_with_env(&routes(), 120, &[("CALLER_KEY", CALLER_KEY)]).await;
    let big_header = "x".repeat(70 * 1024);
    let table: Vec<(&str, String, u16)> = vec![
        ("dot-dot", "GET /nav/../admin HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("encoded dot-dot", "GET /nav/%2e%2e/admin HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("mixed-case encoded dot-dot", "GET /nav/%2E%2e/admin HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("half-encoded dot-dot", "GET /nav/.%2e/admin HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("encoded slash", "GET /nav/a%2f..%2fb HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("encoded backslash", "GET /nav/a%5c..%5cb HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("backslash", "GET /nav/a\\..\\b HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("double slash", "GET /nav//admin HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("NUL", "GET /nav/a%00.json HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("servlet path parameter", "GET /nav/..;/admin HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("double-encoded dot-dot", "GET /nav/%252e%252e/admin HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("overlong UTF-8 dots", "GET /nav/%c0%ae%c0%ae/admin HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("absolute-form target", "GET http://evil.example/nav/x HTTP/1.1\r\nHost: evil.example\r\n\r\n".into(), 400),
        ("absolute-form to a route path on another host", "GET http://127.0.0.1:1/nav/x HTTP/1.1\r\nHost: p\r\n\r\n".into(), 400),
        ("CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".into(), 405),
        ("oversized header", format!("GET /nav/x HTTP/1.1\r\nHost: p\r\nX-Big: {big_header}\r\n\r\n"), 431),
        ("Transfer-Encoding other than chunked", "POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: gzip\r\n\r\n".into(), 400),
        ("two Content-Lengths", "POST /nav/x HTTP/1.1\r\nHost: p\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".into(), 400),
        ("control byte in a header value", "GET /nav/x HTTP/1.1\r\nHost: p\r\nX-Bad: a\x01b\r\n\r\n".into(), 400),
        ("space in a header name", "GET /nav/x HTTP/1.1\r\nHost: p\r\nX Bad: 1\r\n\r\n".into(), 400),
        ("body over the route's limit", "POST /nav/x HTTP/1.1\r\nHost: p\r\nContent-Length: 2048\r\n\r\n".into(), 413),
        ("caller outside the route's allow", "GET /internal/x HTTP/1.1\r\nHost: p\r\n\r\n".into(), 403),
        ("missing API key", "GET /keyed/x HTTP/1.1\r\nHost: p\r\n\r\n".into(), 401),
        ("wrong API key", "GET /keyed/x HTTP/1.1\r\nHost: p\r\nPortvakt-Api-Key: caller-key-0123456789-abcdeX\r\n\r\n".into(), 401),
        ("API key of another length", "GET /keyed/x HTTP/1.1\r\nHost: p\r\nPortvakt-Api-Key: short\r\n\r\n".into(), 401),
    ];
    for (what, request, want) in &table {
        let got = raw_status(h.proxy.listen, request).await;
        assert_eq!(got, *want, "{what}");
    }
    assert!(
        h.upstream.records().is_empty(),
        "the upstream saw a hostile request"
    );
    assert_eq!(h.mock.token_requests(), 0, "a hostile request cost a token");

    // The refusals portvakt makes itself are problem+json and say why.
    let r = h.get("/keyed/x").await;
    assert_eq!(r.status(), 401);
    let p = problem(r).await;
    assert_eq!(p["type"], "urn:portvakt:problem:api-key-missing");
    assert!(p["detail"].as_str().unwrap().contains("portvakt-api-key"));
    let p = problem(h.get("/internal/x").await).await;
    assert_eq!(p["type"], "urn:portvakt:problem:caller-not-allowed");
    let log = logs::text();
    let audit = log
        .lines()
        .find(|l| l.contains("caller refused") && l.contains("internal"))
        .expect("no audit line for the refused caller");
    assert!(
        audit.contains("peer=127.0.0.1") && audit.contains("portvakt::audit"),
        "{audit}"
    );

    // The same routes serve honest requests; a Host header changes nothing about where they go.
    let ok = raw_status(
        h.proxy.listen,
        "GET /nav/x HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    )
    .await;
    assert_eq!(ok, 200);
    let r = h
        .get_with("/keyed/y", &[("Portvakt-Api-Key", CALLER_KEY)])
        .await;
    assert_eq!(r.status(), 200);
    let records = h.upstream.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].target, "/forsikring/x");
    assert_ne!(records[0].headers["host"], "evil.example");
    assert_eq!(records[1].target, "/keyed/y");
    assert!(
        records[1].headers.get("portvakt-api-key").is_none(),
        "the caller's key went upstream"
    );
    assert!(records.iter().all(|r| r.token_valid));
}

#[tokio::test]
async fn inbound_allow_refuses_other_addresses_before_any_route() {
    let (mock, upstream) = mock_and_upstream().await;
    let yaml = config_yaml(
        &mock.issuer(),
        &mock.token_endpoint(),
        &ONE_ROUTE.replace("{upstream}", &upstream.url()),
    )
    .replace(
        "admin_listen: 127.0.0.1:0\n",
        "admin_listen: 127.0.0.1:0\ninbound:\n  allow: [192.168.0.0/16]\n",
    );
    let proxy = spawn_proxy(&yaml, &[]).await;
    for path in ["/nav/x", "/nowhere"] {
        let r = get(&proxy, path).await;
        assert_eq!(r.status(), 403, "{path}");
        let p = problem(r).await;
        assert_eq!(p["type"], "urn:portvakt:problem:caller-not-allowed");
    }
    assert!(upstream.records().is_empty());
    assert_eq!(mock.token_requests(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_redirects_go_back_to_the_caller_and_are_never_followed_with_the_token() {
    let mock = portvakt::mock::MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let elsewhere = portvakt::mock::EchoUpstream::start(None).await.unwrap();
    let redirecting =
        FaultServer::start(Fault::Redirect(format!("{}steal", elsewhere.url()))).await;
    let yaml = config_yaml(
        &mock.issuer(),
        &mock.token_endpoint(),
        &ONE_ROUTE.replace("{upstream}", &redirecting.url()),
    );
    let proxy = spawn_proxy(&yaml, &[]).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(format!("http://{}/nav/x", proxy.listen))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], format!("{}steal", elsewhere.url()));
    assert!(
        elsewhere.records().is_empty(),
        "portvakt followed the redirect"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn inbound_tls_requires_a_client_certificate_from_the_configured_ca() {
    let (mock, upstream) = mock_and_upstream().await;
    let yaml = config_yaml(
        &mock.issuer(),
        &mock.token_endpoint(),
        &ONE_ROUTE.replace("{upstream}", &upstream.url()),
    )
    .replace(
        "admin_listen: 127.0.0.1:0\n",
        "admin_listen: 127.0.0.1:0\ninbound:\n  tls:\n    cert: upstream.pem\n    key: upstream.key\n    client_ca: pki/test-ca.pem\n",
    );
    let proxy = spawn_proxy(&yaml, &[]).await;
    let root =
        reqwest::Certificate::from_pem(&std::fs::read(fixtures().join("test-ca.pem")).unwrap())
            .unwrap();
    let url = format!("https://localhost:{}/nav/x", proxy.listen.port());

    let mut identity = std::fs::read(fixtures().join("pki/virksomhet.pem")).unwrap();
    identity.extend(std::fs::read(fixtures().join("pki/virksomhet.key")).unwrap());
    let with_cert = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(root.clone())
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap();
    let r = with_cert.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(upstream.records().len(), 1);

    let without = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(root)
        .build()
        .unwrap();
    assert!(
        without.get(&url).send().await.is_err(),
        "served a caller without a certificate"
    );
    let plain = http_client()
        .get(format!("http://{}/nav/x", proxy.listen))
        .send()
        .await;
    assert!(plain.is_err(), "answered plain HTTP on the TLS listener");
    assert_eq!(
        upstream.records().len(),
        1,
        "a caller without a certificate got through"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn token_requests_and_upstream_calls_tunnel_through_the_configured_egress_proxy() {
    // Both over HTTPS, as in production: the proxy sees CONNECT host:port and ciphertext only.
    let (cert, key) = tls_files();
    let mock = tls_mock().await;
    let upstream = portvakt::mock::EchoUpstream::start_tls(Some(mock.decoding_key()), &cert, &key)
        .await
        .unwrap();
    let direct = portvakt::mock::EchoUpstream::start(Some(mock.decoding_key()))
        .await
        .unwrap();
    let expected = portvakt::upstream::basic_auth("svc-portvakt", "proxy-passord-42")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let corp = ConnectProxy::start(Some(expected.clone())).await;
    let routes = format!(
        "  - name: nav\n    prefix: /nav/\n    upstream: https://127.0.0.1:{}/forsikring/\n    client: vendor\n    scopes: [{SCOPE}]\n    ca_file: test-ca.pem\n  - name: direct\n    prefix: /direct/\n    upstream: {}\n    client: vendor\n    scopes: [{SCOPE}]\n    proxy: none\n",
        upstream.addr().port(),
        direct.url()
    );
    let yaml = config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes)
        .replace("  timeout_seconds: 5\n", "  timeout_seconds: 5\n  ca_file: test-ca.pem\n")
        .replace(
            "admin_listen: 127.0.0.1:0\n",
            &format!(
                "admin_listen: 127.0.0.1:0\negress_proxy:\n  url: http://{}\n  username: svc-portvakt\n  password: ${{PROXY_PASSWORD}}\n",
                corp.addr
            ),
        );
    let proxy = spawn_proxy(&yaml, &[("PROXY_PASSWORD", "proxy-passord-42")]).await;
    let r = get(&proxy, "/nav/x").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(get(&proxy, "/direct/y").await.status(), 200);
    let targets = corp.targets();
    assert!(
        targets.contains(&mock.addr().to_string()),
        "the token request did not use the proxy: {targets:?}"
    );
    assert!(
        targets.contains(&upstream.addr().to_string()),
        "the upstream call did not use the proxy: {targets:?}"
    );
    assert!(
        !targets.contains(&direct.addr().to_string()),
        "proxy: none still used the proxy"
    );
    assert!(corp
        .tunnels
        .lock()
        .unwrap()
        .iter()
        .all(|(_, auth)| auth.as_deref() == Some(expected.as_str())));
    assert_eq!(upstream.records().len(), 1);
    assert!(upstream.records()[0].token_valid);
    logs::secret(&expected["Basic ".len()..]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_wrong_proxy_password_is_a_clear_error_and_nothing_is_sent_around_the_proxy() {
    let mock = tls_mock().await;
    let upstream = portvakt::mock::EchoUpstream::start(Some(mock.decoding_key()))
        .await
        .unwrap();
    let corp = ConnectProxy::start(Some("Basic bm9ib2R5Om5vdGhpbmc=".into())).await;
    let yaml = config_yaml(&mock.issuer(), &mock.token_endpoint(), &ONE_ROUTE.replace("{upstream}", &upstream.url()))
        .replace("  timeout_seconds: 5\n", &format!("  timeout_seconds: 5\n  ca_file: test-ca.pem\n  proxy:\n    url: http://{}\n    username: svc\n    password: wrong-passord-1\n", corp.addr));
    let proxy = spawn_proxy(&yaml, &[]).await;
    let r = get(&proxy, "/nav/x").await;
    assert_eq!(r.status(), 503);
    let p = problem(r).await;
    assert_eq!(p["type"], "urn:portvakt:problem:token-unavailable");
    assert!(!p["detail"].as_str().unwrap().contains("wrong-passord-1"));
    assert_eq!(
        mock.token_requests(),
        0,
        "the token request went around the proxy"
    );
    assert!(upstream.records().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn ambiguous_framing_is_read_by_transfer_encoding_alone_and_nothing_is_smuggled() {
    // hyper reads a request with both Content-Length and Transfer-Encoding by the latter (RFC 9112
    // 6.3) and closes the connection after it; portvakt frames the upstream request itself, so the
    // request hidden in the body never becomes a request of its own.
    let h = Harness::start(ONE_ROUTE, 120).await;
    let smuggled = "GET /nav/smuggled HTTP/1.1\r\nHost: p\r\n\r\n";
    let request = format!(
        "POST /nav/x HTTP/1.1\r\nHost: p\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let status = raw_status(h.proxy.listen, &request).await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let records = h.upstream.records();
    assert_eq!(
        records.len(),
        1,
        "{:?}",
        records.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    assert_eq!(records[0].target, "/forsikring/x");
    assert_eq!(records[0].body_len, 0);
}
