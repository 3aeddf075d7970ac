//! Fault injection: Maskinporten down, slow, failing, throttling or answering garbage; upstreams
//! refusing, resetting and stalling; callers going away mid-upload. Each ends with the right answer,
//! and with the runtime's task count back where it was (no connection or task left behind).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::faults::{alive_tasks, settle_to, Fault, FaultServer};
use common::*;
use portvakt::mock::maskinporten::Mode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client that keeps no idle connections, so its own pool does not count as a leak.
fn one_shot_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test]
async fn token_endpoint_faults_give_clear_answers_and_service_resumes_by_itself() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    let http = one_shot_client();
    let call = || http.get(h.url("/nav/x")).send();

    // 500: retried inside the fetch, then 503 with Retry-After.
    h.mock.set_mode(Mode::Failing(500));
    let r = call().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        problem(r).await["type"],
        "urn:portvakt:problem:token-unavailable"
    );
    assert_eq!(
        h.mock.token_requests(),
        3,
        "three quick attempts in one fetch"
    );

    // Back up: the next request after the backoff gets a token, with nobody resetting anything.
    h.mock.set_mode(Mode::Normal);
    let mut status = 0;
    for _ in 0..40 {
        status = call().await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "service did not resume");
    assert!(h.upstream.records().iter().all(|r| r.token_valid));
}

#[tokio::test]
async fn retry_after_from_maskinporten_is_honoured_by_every_request() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    h.mock.set_mode(Mode::Throttling(429, 30));
    let http = one_shot_client();
    let r = http.get(h.url("/nav/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((25..=30).contains(&after), "Retry-After {after}");
    for _ in 0..10 {
        let r = http.get(h.url("/nav/x")).send().await.unwrap();
        assert_eq!(r.status(), 503);
    }
    assert_eq!(
        h.mock.token_requests(),
        1,
        "a 429 with Retry-After: 30 was retried at once"
    );
    assert!(h.upstream.records().is_empty());
}

#[tokio::test]
async fn an_outage_opens_the_circuit_instead_of_a_retry_storm() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    h.mock.set_mode(Mode::Failing(503));
    let http = one_shot_client();
    for _ in 0..30 {
        let r = http.get(h.url("/nav/x")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = h.mock.token_requests();
    assert!(
        requests <= 6,
        "{requests} token requests for 30 calls in 3 s"
    );
    assert_eq!(
        metric_value(
            &metrics_text(&h.proxy).await,
            "portvakt_token_endpoint_circuit_open"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn down_slow_garbage_and_tokenless_answers_each_get_their_own_answer() {
    // Garbage and a JSON answer without access_token: 502, nothing sent upstream.
    for (mode, kind) in [
        (Mode::Garbage, "token-invalid-answer"),
        (Mode::NoAccessToken, "token-invalid-answer"),
    ] {
        let h = Harness::start(ONE_ROUTE, 120).await;
        h.mock.set_mode(mode);
        let r = h.get("/nav/x").await;
        assert_eq!(r.status(), 502, "{mode:?}");
        assert_eq!(
            problem(r).await["type"],
            format!("urn:portvakt:problem:{kind}")
        );
        assert!(h.upstream.records().is_empty());
    }
    // Slow past the timeout (1 s here), and down: 503 with Retry-After.
    let mock = portvakt::mock::MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    mock.set_delay(Duration::from_secs(3));
    let upstream = portvakt::mock::EchoUpstream::start(None).await.unwrap();
    let yaml = config_yaml(
        &mock.issuer(),
        &mock.token_endpoint(),
        &ONE_ROUTE.replace("{upstream}", &upstream.url()),
    )
    .replace("  timeout_seconds: 5\n", "  timeout_seconds: 1\n");
    let proxy = spawn_proxy(&yaml, &[]).await;
    let r = get(&proxy, "/nav/x").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    mock.stop();
    proxy.shutdown().await;
    let closed = free_port();
    let yaml = config_yaml(
        &format!("http://127.0.0.1:{closed}/"),
        &format!("http://127.0.0.1:{closed}/token"),
        &ONE_ROUTE.replace("{upstream}", &upstream.url()),
    );
    let proxy = spawn_proxy(&yaml, &[]).await;
    let r = get(&proxy, "/nav/x").await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        problem(r).await["type"],
        "urn:portvakt:problem:token-unavailable"
    );
    assert!(upstream.records().is_empty());
    proxy.shutdown().await;
}

#[tokio::test]
async fn while_maskinporten_is_down_the_cached_token_serves_until_it_expires() {
    // A 6 s token: normally served until 4 s (its safety margin), refreshed from 4 s.
    let h = Harness::start(ONE_ROUTE, 6).await;
    let started = tokio::time::Instant::now();
    assert_eq!(h.get("/nav/x").await.status(), 200);
    h.mock.set_mode(Mode::Failing(503));
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(started.elapsed())).await;
    // 5 s: past the margin, the refresh failing, still within the token's life.
    let r = h.get("/nav/x").await;
    assert_eq!(
        r.status(),
        200,
        "the still valid token was not served during the outage"
    );
    tokio::time::sleep(Duration::from_millis(6500).saturating_sub(started.elapsed())).await;
    let r = h.get("/nav/x").await;
    assert_eq!(r.status(), 503, "an expired token was served");
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        h.upstream.records().iter().all(|r| r.token_valid),
        "an expired token reached the upstream"
    );
}

#[tokio::test]
async fn clock_skew_is_exported_and_warned_about() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    h.mock.set_clock_offset(-8);
    assert_eq!(h.get("/nav/x").await.status(), 200);
    let skew = metric_value(&metrics_text(&h.proxy).await, "portvakt_clock_skew_seconds").unwrap();
    assert!((-9.0..=-7.0).contains(&skew), "skew {skew}");
    assert!(logs::text().contains("fix NTP on this machine"));
}

#[tokio::test]
async fn upstream_faults_end_in_clear_answers_and_leave_nothing_behind() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    let http = one_shot_client();
    // Warm up: the token and the echo upstream's pooled connection exist before the baseline.
    assert_eq!(
        http.get(h.url("/nav/x")).send().await.unwrap().status(),
        200
    );
    let faults = [
        (Fault::ResetBeforeHeaders, "reset before headers"),
        (Fault::ResetMidBody, "reset mid-body"),
        (Fault::StallBeforeHeaders, "stall before headers"),
        (Fault::StallMidBody, "stall mid-body"),
    ];
    let mut servers = Vec::new();
    let mut routes = String::new();
    for (i, (fault, _)) in faults.iter().enumerate() {
        let server = FaultServer::start(fault.clone()).await;
        routes.push_str(&format!(
            "  - name: f{i}\n    prefix: /f{i}/\n    upstream: {}\n    client: vendor\n    scopes: [{SCOPE}]\n    timeout_seconds: 1\n    idle_timeout_seconds: 1\n",
            server.url()
        ));
        servers.push(server);
    }
    let closed = free_port();
    routes.push_str(&format!(
        "  - name: refused\n    prefix: /refused/\n    upstream: http://127.0.0.1:{closed}/\n    client: vendor\n    scopes: [{SCOPE}]\n"
    ));
    // An HTTPS upstream whose certificate the route does not trust (no `ca`).
    let (cert, key) = tls_files();
    let untrusted = portvakt::mock::EchoUpstream::start_tls(None, &cert, &key)
        .await
        .unwrap();
    routes.push_str(&format!(
        "  - name: untrusted\n    prefix: /untrusted/\n    upstream: {}\n    client: vendor\n    scopes: [{SCOPE}]\n",
        untrusted.url()
    ));
    let yaml = config_yaml(&h.mock.issuer(), &h.mock.token_endpoint(), &routes);
    let proxy = spawn_proxy(&yaml, &[]).await;
    let url = |p: &str| format!("http://{}{}", proxy.listen, p);
    for path in ["/refused/x", "/untrusted/x"] {
        assert_eq!(http.get(url(path)).send().await.unwrap().status(), 502);
    }
    let baseline = settle_to(0).await;

    // Before headers: 502 for the reset, 504 for the stall.
    let r = http.get(url("/f0/x")).send().await.unwrap();
    assert_eq!(r.status(), 502, "{}", faults[0].1);
    assert_eq!(
        problem(r).await["type"],
        "urn:portvakt:problem:upstream-failed"
    );
    let r = http.get(url("/f2/x")).send().await.unwrap();
    assert_eq!(r.status(), 504, "{}", faults[2].1);
    // After headers: the caller's body ends in an error instead of hanging.
    for i in [1, 3] {
        let r = http.get(url(&format!("/f{i}/x"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.bytes().await.is_err(),
            "{}: a truncated body looked complete",
            faults[i].1
        );
    }
    let left = settle_to(baseline).await;
    assert!(
        left <= baseline,
        "{left} tasks alive, {baseline} before the faults"
    );
    for (server, (_, what)) in servers.iter().zip(&faults) {
        assert_eq!(
            server.open.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{what}: connection left open"
        );
    }
    assert!(alive_tasks() > 0);

    // Each failure is counted once, by its kind, whether it came before or after the headers.
    let metrics = metrics_text(&proxy).await;
    for (route, kind) in [
        ("f0", "reset"),
        ("f1", "reset"),
        ("f2", "timeout"),
        ("f3", "timeout"),
        ("refused", "connect"),
        ("untrusted", "tls"),
    ] {
        let line =
            format!("portvakt_upstream_errors_total{{route=\"{route}\",kind=\"{kind}\"}} 1\n");
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }
    assert_eq!(
        metrics.matches("portvakt_upstream_errors_total{").count(),
        6
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_aborts_mid_upload_frees_the_upstream_connection() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    let stall = FaultServer::start(Fault::StallBeforeHeaders).await;
    let routes = format!(
        "  - name: up\n    prefix: /up/\n    upstream: {}\n    client: vendor\n    scopes: [{SCOPE}]\n    retry_body_max_bytes: 0\n  - name: echo\n    prefix: /echo/\n    upstream: {}\n    client: vendor\n    scopes: [{SCOPE}]\n",
        stall.url(),
        h.upstream.url()
    );
    let yaml = config_yaml(&h.mock.issuer(), &h.mock.token_endpoint(), &routes);
    let proxy = spawn_proxy(&yaml, &[]).await;
    // Warm up: the token (and the token endpoint's pooled connection) exist before the baseline.
    let r = one_shot_client()
        .get(format!("http://{}/echo/x", proxy.listen))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let baseline = settle_to(0).await;
    let mut caller = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    caller
        .write_all(b"POST /up/x HTTP/1.1\r\nHost: p\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    caller.write_all(&[b'a'; 10_000]).await.unwrap();
    // Wait until the upload reached the upstream, then go away.
    for _ in 0..100 {
        if stall.accepted.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stall.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(caller);
    let refused = logs::text()
        .lines()
        .any(|l| l.contains("route=\"up\"") && l.contains("status=400"));
    let left = settle_to(baseline).await;
    assert!(
        left <= baseline,
        "{left} tasks alive, {baseline} before the upload"
    );
    assert_eq!(
        stall.open.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the upstream connection was kept"
    );
    assert!(
        refused
            || logs::text()
                .lines()
                .any(|l| l.contains("route=\"up\"") && l.contains("status=400"))
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn beyond_max_concurrent_requests_callers_get_503_and_chunked_bodies_over_the_limit_413() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    let stall = FaultServer::start(Fault::StallBeforeHeaders).await;
    let routes = format!(
        "  - name: slow\n    prefix: /slow/\n    upstream: {}\n    client: vendor\n    scopes: [{SCOPE}]\n  - name: small\n    prefix: /small/\n    upstream: {}\n    client: vendor\n    scopes: [{SCOPE}]\n    max_body_bytes: 1000\n",
        stall.url(),
        h.upstream.url()
    );
    let yaml = config_yaml(&h.mock.issuer(), &h.mock.token_endpoint(), &routes).replace(
        "admin_listen: 127.0.0.1:0\n",
        "admin_listen: 127.0.0.1:0\ninbound:\n  max_concurrent_requests: 2\n  max_concurrent_per_address: 2\n",
    );
    let proxy = spawn_proxy(&yaml, &[]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
        s.write_all(b"GET /slow/x HTTP/1.1\r\nHost: p\r\n\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    for _ in 0..100 {
        if stall.accepted.load(std::sync::atomic::Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = get(&proxy, "/small/x").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(problem(r).await["type"], "urn:portvakt:problem:overloaded");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A chunked upload (no Content-Length) past max_body_bytes is cut and answered 413.
    let mut request =
        String::from("POST /small/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..10 {
        request.push_str(&format!("1f4\r\n{}\r\n", "x".repeat(500)));
    }
    request.push_str("0\r\n\r\n");
    assert_eq!(raw_status(proxy.listen, &request).await, 413);
    assert_eq!(get(&proxy, "/small/y").await.status(), 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_waits_only_the_configured_grace_for_stuck_requests() {
    let h = Harness::start(ONE_ROUTE, 120).await;
    let stall = FaultServer::start(Fault::StallBeforeHeaders).await;
    let routes = format!(
        "  - name: slow\n    prefix: /slow/\n    upstream: {}\n    client: vendor\n    scopes: [{SCOPE}]\n    timeout_seconds: 600\n",
        stall.url()
    );
    let yaml = config_yaml(&h.mock.issuer(), &h.mock.token_endpoint(), &routes).replace(
        "admin_listen: 127.0.0.1:0\n",
        "admin_listen: 127.0.0.1:0\nshutdown_grace_seconds: 1\n",
    );
    let proxy = spawn_proxy(&yaml, &[]).await;
    let mut s = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    s.write_all(b"GET /slow/x HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..100 {
        if stall.accepted.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // With the default 30 s this would not return within 10 s.
    let done = tokio::time::timeout(Duration::from_secs(10), proxy.shutdown()).await;
    assert!(done.is_ok(), "shutdown ignored shutdown_grace_seconds");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
}

/// 50 calls at once, cold, to an HTTPS upstream that accepts TCP and never answers the TLS
/// handshake: each gets 502 `upstream-unreachable` within the 2 s connect timeout and a margin,
/// not 504 after the route's 30 s (issue 28, finding 6).
async fn a_cold_burst_to_a_stuck_handshake_fails_fast(through_proxy: bool) {
    let (mock, _upstream) = mock_and_upstream().await;
    let stuck = FaultServer::start(Fault::StallBeforeHeaders).await;
    let corp = common::faults::ConnectProxy::start(None).await;
    let proxy_line = match through_proxy {
        true => format!("    proxy:\n      url: http://{}\n", corp.addr),
        false => String::new(),
    };
    let routes = format!(
        "  - name: nav\n    prefix: /nav/\n    upstream: https://localhost:{}/\n    client: vendor\n    scopes: [{SCOPE}]\n    ca_file: test-ca.pem\n    connect_timeout_seconds: 2\n    timeout_seconds: 30\n{proxy_line}",
        stuck.addr.port()
    );
    let proxy = spawn_proxy(
        &config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes),
        &[],
    )
    .await;
    let http = http_client();
    let started = tokio::time::Instant::now();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let (http, url) = (http.clone(), format!("http://{}/nav/{i}", proxy.listen));
            tokio::spawn(async move {
                let r = http.get(url).send().await.unwrap();
                let status = r.status().as_u16();
                (
                    status,
                    problem(r).await["type"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    started.elapsed(),
                )
            })
        })
        .collect();
    for call in calls {
        let (status, kind, after) = call.await.unwrap();
        assert_eq!(status, 502, "{kind}");
        assert!(kind.ends_with("upstream-unreachable"), "{kind}");
        assert!(
            after < Duration::from_millis(3500),
            "answered after {after:?}"
        );
    }
    if through_proxy {
        assert!(
            !corp.targets().is_empty(),
            "the connects did not go through the proxy"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_to_a_stuck_tls_handshake_answers_502_within_the_connect_timeout() {
    a_cold_burst_to_a_stuck_handshake_fails_fast(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_burst_through_the_outbound_proxy_answers_502_within_the_connect_timeout() {
    a_cold_burst_to_a_stuck_handshake_fails_fast(true).await;
}
