//! End to end through real sockets: caller -> portvakt -> mock Maskinporten / echo upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portvakt::mock::upstream::pattern_byte;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn injects_a_token_the_upstream_accepts_and_drops_the_callers_credentials() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    let response = h
        .http
        .get(h.url("/nav/samtykke/v1?fnr=1&x=%20"))
        .header("Authorization", "Basic c2VjcmV0OnNlY3JldA==")
        .header("Proxy-Authorization", "Basic eA==")
        .header("Connection", "X-Hop")
        .header("X-Hop", "must-not-pass")
        .header("NAV-Samtykke-Token", "consent-token")
        .header("X-Correlation-Id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let records = h.upstream.records();
    assert_eq!(records.len(), 1);
    let seen = &records[0];
    assert!(
        seen.token_valid,
        "upstream rejected the token: {:?}",
        seen.token_error
    );
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/forsikring/samtykke/v1?fnr=1&x=%20");
    let auth = seen
        .headers
        .get_all("authorization")
        .iter()
        .collect::<Vec<_>>();
    assert_eq!(auth.len(), 1, "exactly one Authorization header");
    assert!(auth[0].to_str().unwrap().starts_with("Bearer ey"));
    assert!(seen.headers.get("proxy-authorization").is_none());
    assert!(seen.headers.get("x-hop").is_none());
    assert_eq!(seen.headers["nav-samtykke-token"], "consent-token");
    assert_eq!(seen.headers["x-correlation-id"], "abc");
    assert_eq!(seen.headers["host"], h.upstream.addr().to_string().as_str());
    let claims = seen.token_claims.as_ref().unwrap();
    assert_eq!(claims["scope"], SCOPE);
    assert_eq!(claims["client_id"], CLIENT_ID);
    assert_eq!(claims["consumer"]["ID"], format!("0192:{SUPPLIER_ORG}"));
    assert_eq!(h.mock.token_requests(), 1);

    // A second call reuses the cached token.
    assert_eq!(h.get("/nav/x").await.status(), 200);
    assert_eq!(h.mock.token_requests(), 1);
}

#[tokio::test]
async fn maps_prefixes_on_whole_segments_keeping_query_and_escapes() {
    let routes = r#"  - name: api
    prefix: /api
    upstream: {upstream}base/
    client: vendor
    scopes: [nav:forsikring/samtykke]
  - name: api-v2
    prefix: /api/v2/
    upstream: {upstream}v2base
    client: vendor
    scopes: [nav:forsikring/samtykke]
  - name: root
    prefix: /
    upstream: {upstream}rooted/
    client: vendor
    scopes: [ks:fiks]
"#;
    let h = Harness::start(routes, 120).await;
    let cases = [
        (
            "/api/a%20b/%C3%A6?q=a%2Fb&x=1&x=2",
            "/base/a%20b/%C3%A6?q=a%2Fb&x=1&x=2",
        ),
        ("/api", "/base"),
        ("/api/", "/base/"),
        ("/api/v2/items?page=2", "/v2base/items?page=2"),
        ("/api/v2", "/v2base"),
        ("/api/v20", "/base/v20"),
        ("/apix/y", "/rooted/apix/y"),
        ("/", "/rooted/"),
    ];
    for (path, _) in &cases {
        let status = h.get(path).await.status();
        assert_eq!(status, 200, "{path}");
    }
    let seen: Vec<String> = h.upstream.records().into_iter().map(|r| r.target).collect();
    let want: Vec<String> = cases.iter().map(|(_, t)| t.to_string()).collect();
    assert_eq!(seen, want);
    // Two scopes, two tokens: one per distinct grant, not per route.
    assert_eq!(h.mock.token_requests(), 2);
}

#[tokio::test]
async fn refuses_paths_that_would_leave_the_prefix() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    for path in [
        "/nav/%2e%2e/admin",
        "/nav/../admin",
        "/nav/a%2Fb",
        "/nav/..%2fx",
        "/nav/a\\b",
        "/nav/x/./y",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: portvakt\r\nConnection: close\r\n\r\n");
        assert_eq!(raw_status(h.proxy.listen, &request).await, 400, "{path}");
    }
    // The answer is problem+json naming the route.
    let response = h.get("/nav/a%2Fb").await;
    assert_eq!(response.status(), 400);
    assert_eq!(problem(response).await["route"], "nav");
    assert!(h.upstream.records().is_empty());
    assert_eq!(h.mock.token_requests(), 0);
}

#[tokio::test]
async fn streams_20_mb_up_and_down_intact() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    const SIZE: usize = 20 * 1024 * 1024;
    let upload: Vec<u8> = (0..SIZE as u64)
        .map(|i| (i * 7 + (i >> 11)) as u8)
        .collect();
    let want = sha256_hex(&upload);
    let response = h
        .http
        .post(h.url("/nav/upload"))
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["body"]["bytes"], SIZE as u64);
    assert_eq!(echoed["body"]["sha256"], want);

    let response = h.get(&format!("/nav/bytes/{SIZE}")).await;
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), SIZE);
    let expected: Vec<u8> = (0..SIZE as u64).map(pattern_byte).collect();
    assert_eq!(sha256_hex(&body), sha256_hex(&expected));
    assert_eq!(
        h.upstream.records()[1].target,
        format!("/forsikring/bytes/{SIZE}")
    );
}

#[tokio::test]
async fn unknown_route_is_404_and_contacts_nobody() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    let response = h.get("/unknown/x?y=1").await;
    assert_eq!(response.status(), 404);
    let body = problem(response).await;
    assert_eq!(body["status"], 404);
    assert!(body["title"].is_string());
    assert!(body["detail"].as_str().unwrap().contains("/nav"), "{body}");
    assert!(h.upstream.records().is_empty());
    assert_eq!(h.mock.token_requests(), 0);
}

#[tokio::test]
async fn upstream_unreachable_is_502_and_slow_upstream_is_504() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let routes = format!(
        r#"  - name: gone
    prefix: /gone/
    upstream: http://{closed}/
    client: vendor
    scopes: [ks:fiks]
  - name: slow
    prefix: /slow/
    upstream: http://{silent_addr}/
    client: vendor
    scopes: [ks:fiks]
    timeout_seconds: 1
"#
    );
    let h = Harness::start(&routes, 120).await;
    let response = h.get("/gone/x").await;
    assert_eq!(response.status(), 502);
    assert_eq!(problem(response).await["route"], "gone");
    let response = h.get("/slow/x").await;
    assert_eq!(response.status(), 504);
    assert_eq!(problem(response).await["route"], "slow");
}

#[tokio::test]
async fn admin_endpoints_show_state_and_metrics_but_no_token() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    assert_eq!(h.admin_get("/healthz").await.status(), 200);
    let ready: Value = h.admin_get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["routes"][0]["name"], "nav");
    assert_eq!(ready["routes"][0]["token"]["state"], "empty");

    assert_eq!(h.get("/nav/x").await.status(), 200);
    assert_eq!(h.get("/nope").await.status(), 404);
    let token = token_seen(&h.upstream, 0);

    let ready = h.admin_get("/readyz").await.text().await.unwrap();
    let ready_json: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready_json["routes"][0]["token"]["state"], "valid");
    assert!(
        ready_json["routes"][0]["token"]["expires_in_seconds"]
            .as_u64()
            .unwrap()
            > 100
    );
    let metrics = h.admin_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"portvakt_requests_total{route="nav",method="GET",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portvakt_requests_total{route="",method="GET",status="404"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portvakt_token_fetches_total{client="vendor",result="ok",code=""} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("portvakt_request_duration_seconds_bucket"),
        "{metrics}"
    );
    for text in [&ready, &metrics] {
        assert!(!text.contains(&token));
        assert!(!text.contains("Bearer"));
    }
}

#[tokio::test]
async fn route_headers_are_added_and_replace_the_callers() {
    let routes = r#"  - name: fiks
    prefix: /fiks/
    upstream: {upstream}
    client: vendor
    scopes: [ks:fiks]
    headers:
      IntegrasjonId: ${FIKS_ID}
      IntegrasjonPassord: ${FIKS_PASSWORD}
"#;
    let env = [
        ("FIKS_ID", "3f1b-integration"),
        ("FIKS_PASSWORD", "s3cret-passord"),
    ];
    let h = Harness::start_with_env(routes, 120, &env).await;
    let response = h
        .http
        .get(h.url("/fiks/mottak"))
        .header("IntegrasjonPassord", "callers-own")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = &h.upstream.records()[0];
    assert_eq!(seen.headers["integrasjonid"], "3f1b-integration");
    assert_eq!(
        seen.headers
            .get_all("integrasjonpassord")
            .iter()
            .collect::<Vec<_>>(),
        ["s3cret-passord"]
    );
    assert!(seen.token_valid);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    h.mock.set_delay(Duration::from_millis(700));
    let (http, url) = (h.http.clone(), h.url("/nav/in-flight"));
    let in_flight = tokio::spawn(async move { http.get(url).send().await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let listen = h.proxy.listen;
    h.proxy.shutdown().await;
    assert_eq!(in_flight.await.unwrap(), 200);
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    for i in 0..20 {
        let status = h.get(&format!("/nav/seq/{i}")).await.status();
        assert_eq!(status, 200);
    }
    let peers: std::collections::HashSet<_> = h.upstream.records().iter().map(|r| r.peer).collect();
    assert_eq!(
        peers.len(),
        1,
        "sequential calls should share one pooled upstream connection"
    );
}

#[tokio::test]
async fn https_upstreams_are_verified_and_reached_over_http2_by_alpn() {
    let mock = portvakt::mock::MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let upstream = portvakt::mock::EchoUpstream::start_tls(
        Some(mock.decoding_key()),
        &fixtures().join("upstream.pem"),
        &fixtures().join("upstream.key"),
    )
    .await
    .unwrap();
    let base = format!("https://127.0.0.1:{}/api/", upstream.addr().port());
    let routes = format!(
        "  - name: trusted\n    prefix: /trusted/\n    upstream: {base}\n    client: vendor\n    scopes: [ks:fiks]\n    ca_file: test-ca.pem\n  - name: untrusted\n    prefix: /untrusted/\n    upstream: {base}\n    client: vendor\n    scopes: [ks:fiks]\n"
    );
    let proxy = spawn_proxy(
        &config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes),
        &[],
    )
    .await;

    let response = get(&proxy, "/trusted/x?y=1").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_11,
        "the caller keeps HTTP/1.1"
    );
    let seen = upstream.records();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, http::Version::HTTP_2);
    assert_eq!(seen[0].target, "/api/x?y=1");
    assert!(seen[0].token_valid, "{:?}", seen[0].token_error);

    // The same server without its CA in the trust store: refused, and nothing was sent.
    let response = get(&proxy, "/untrusted/x").await;
    assert_eq!(response.status(), 502);
    let body = problem(response).await;
    assert_eq!(body["route"], "untrusted");
    assert!(
        body["detail"].as_str().unwrap().contains("certificate"),
        "{body}"
    );
    assert_eq!(upstream.records().len(), 1);
}

/// An upstream that answers each request on a connection and then closes it, without saying so
/// (no `Connection: close`), as a server does when its keep-alive timeout strikes. It keeps each
/// request line it read.
async fn closing_upstream() -> (String, Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (lines, accepted) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(AtomicUsize::new(0)),
    );
    let (kept, count) = (Arc::clone(&lines), Arc::clone(&accepted));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                kept.lock().unwrap().push(head);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Gone as soon as the answer is out.
            });
        }
    });
    (url, lines, accepted)
}

#[tokio::test]
async fn a_kept_upstream_connection_the_upstream_closed_is_replaced_without_an_error() {
    let (mock, _echo) = mock_and_upstream().await;
    let (url, heads, accepted) = closing_upstream().await;
    let routes = format!(
        "  - name: nav\n    prefix: /nav/\n    upstream: {url}base/\n    client: vendor\n    scopes: [{SCOPE}]\n"
    );
    let proxy = spawn_proxy(
        &config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes),
        &[],
    )
    .await;
    // One caller connection, several calls in a row: each finds its upstream connection closed.
    let http = http_client();
    for i in 0..5 {
        let r = http
            .get(format!("http://{}/nav/call/{i}", proxy.listen))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "call {i}");
        assert_eq!(r.text().await.unwrap(), "ok");
        // Let the upstream's close arrive before the next call.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    let heads = heads.lock().unwrap().clone();
    for (i, head) in heads.iter().enumerate() {
        // Origin form, with the upstream's Host, as the pooled client sends it.
        assert!(
            head.starts_with(&format!("GET /base/call/{i} HTTP/1.1\r\n")),
            "{head}"
        );
        let host = url.trim_start_matches("http://").trim_end_matches('/');
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: {host}\r\n")),
            "{head}"
        );
    }
}
