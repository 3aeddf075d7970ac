//! The one way upstream (the pool over hyper's client connections): what it relays, how it reuses
//! connections, HTTP/1.1 and HTTP/2 upstreams, and the 401 retry. Callers are raw sockets, so every
//! byte on the wire is seen; upstreams are the recording raw server or the echo upstream, which
//! verifies each token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::wire::{read_answer, Answer, Recorder};
use common::*;
use portvakt::app::Running;
use portvakt::mock::{EchoUpstream, MockMaskinporten};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn answer(caller: &mut TcpStream, buf: &mut Vec<u8>) -> Answer {
    read_answer(caller, buf, false).await.expect("no answer")
}

#[tokio::test]
async fn chunked_early_hints_head_and_close_delimited_answers_pass_through() {
    let (up, (mock, _echo)) = (Recorder::start().await, mock_and_upstream().await);
    let proxy = proxy_to(&mock, &up.url, "").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();

    // Chunked: the data goes through, framed anew by hyper.
    caller
        .write_all(b"GET /nav/chunked HTTP/1.1\r\nHost: p\r\nX-Request-Id: up-1\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut caller, &mut buf).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hello world"[..]));
    assert_eq!(a.header("transfer-encoding"), Some("chunked"), "{}", a.head);
    assert!(a.head.contains("x-up: 1\n") && a.head.contains("x-request-id: up-1\n"));

    // A 103 is not relayed; the 204 after it is.
    caller
        .write_all(b"GET /nav/early HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut caller, &mut buf).await;
    assert_eq!((a.status, a.body.len()), (204, 0));
    assert!(a.head.contains("x-up: 2\n"), "{}", a.head);

    // HEAD: the length is the GET's, and no body follows.
    caller
        .write_all(b"HEAD /nav/head HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, true).await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-length"), Some("100"), "{}", a.head);

    // Two requests in one write are answered in order.
    caller
        .write_all(b"GET /nav/a HTTP/1.1\r\nHost: p\r\n\r\nGET /nav/b HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    for want in ["/a", "/b"] {
        let a = answer(&mut caller, &mut buf).await;
        assert_eq!((a.status, a.body.as_slice()), (200, want.as_bytes()));
    }
    // An answer framed by both a length and a coding reaches the caller framed once.
    caller
        .write_all(b"GET /nav/twice HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut caller, &mut buf).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hi"[..]));
    assert!(
        a.header("content-length").is_none() || a.header("transfer-encoding").is_none(),
        "{}",
        a.head
    );

    // Until the close: relayed whole, framed for the caller, whose connection carries on.
    caller
        .write_all(b"GET /nav/close HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut caller, &mut buf).await;
    assert_eq!(
        (a.status, a.body.as_slice()),
        (200, &b"until the close"[..])
    );
    caller
        .write_all(b"GET /nav/after HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(answer(&mut caller, &mut buf).await.body, b"/after");

    let got = up.received();
    assert_eq!(got.len(), 8);
    for r in &got {
        assert_eq!(r.all("authorization").len(), 1, "{r:?}");
        assert_eq!(r.all("x-request-id").len(), 1, "{r:?}");
    }
    assert_eq!(got[0].header("x-request-id"), Some("up-1"));
    assert_eq!(got[2].method, "HEAD");
    assert_eq!(up.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn an_invalid_answer_is_502_and_counted_as_a_protocol_error() {
    let (up, (mock, _echo)) = (Recorder::start().await, mock_and_upstream().await);
    let proxy = proxy_to(&mock, &up.url, "").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    caller
        .write_all(b"GET /nav/bad HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut caller, &mut buf).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.header("content-type"), Some("application/problem+json"));
    let problem: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(problem["type"], "urn:portvakt:problem:upstream-failed");
    // The same to HEAD: the length of the problem, and no body, so the connection carries on.
    caller
        .write_all(b"HEAD /nav/bad HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, true).await.unwrap();
    assert_eq!(a.status, 502);
    assert!(a.head.contains("content-length: "), "{}", a.head);
    caller
        .write_all(b"GET /nav/x HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut caller, &mut buf).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"/x"[..]));
    let m = metrics_text(&proxy).await;
    let series = r#"portvakt_upstream_errors_total{route="nav",kind="protocol"}"#;
    assert_eq!(metric_value(&m, series), Some(2.0));
    let series = r#"portvakt_requests_total{route="nav",method="GET",status="502"}"#;
    assert_eq!(metric_value(&m, series), Some(1.0));
}

#[tokio::test]
async fn a_small_body_is_sent_again_after_a_401_and_a_stalled_one_is_408() {
    let (mock, echo) = mock_and_upstream().await;
    let proxy = proxy_to(&mock, &echo.url(), "    idle_timeout_seconds: 1\n").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    let body = br#"{"fnr":"not logged"}"#;
    let post = |path: &str| {
        let mut r = format!(
            "POST /nav/{path} HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    // A POST and a GET in one write: the body ends where its length says.
    let mut two = post("first");
    two.extend_from_slice(b"GET /nav/second HTTP/1.1\r\nHost: p\r\n\r\n");
    caller.write_all(&two).await.unwrap();
    for _ in 0..2 {
        assert_eq!(answer(&mut caller, &mut buf).await.status, 200);
    }
    // The upstream stops taking the token: portvakt fetches a new one and sends the body again.
    echo.revoke_seen_tokens();
    caller.write_all(&post("third")).await.unwrap();
    assert_eq!(answer(&mut caller, &mut buf).await.status, 200);

    let records = echo.records();
    let posts: Vec<_> = records.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 3, "first, third refused, third again");
    for r in &posts {
        assert_eq!(r.body_len, body.len() as u64);
        assert_eq!(r.body_sha256, sha256_hex(body));
    }
    let token = |r: &&portvakt::mock::upstream::Recorded| r.headers["authorization"].clone();
    assert!(posts.iter().all(|r| r.token_valid));
    assert_eq!(token(&posts[0]), token(&posts[1]), "the revoked token");
    assert_ne!(token(&posts[1]), token(&posts[2]), "a fresh one");
    assert_eq!(records[1].target, "/second");
    assert_eq!(mock.token_requests(), 2);
    let series = r#"portvakt_upstream_unauthorized_total{route="nav",result="retried"}"#;
    assert_eq!(metric_value(&metrics_text(&proxy).await, series), Some(1.0));

    // A body that stops coming: 408 within the route's idle timeout.
    caller
        .write_all(b"PUT /nav/slow HTTP/1.1\r\nHost: p\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let a = answer(&mut caller, &mut buf).await;
    assert_eq!(a.status, 408);
    let problem: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(problem["type"], "urn:portvakt:problem:request-body-timeout");
    assert_eq!(
        echo.records().len(),
        4,
        "nothing of the stalled request went upstream"
    );
}

#[tokio::test]
async fn an_upstream_at_an_ipv6_literal_is_reached() {
    let (up, (mock, _echo)) = (
        Recorder::start_on("[::1]:0").await,
        mock_and_upstream().await,
    );
    assert!(up.url.starts_with("http://[::1]:"), "{}", up.url);
    let proxy = proxy_to(&mock, &up.url, "").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    caller
        .write_all(b"GET /nav/v6 HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut caller, &mut buf).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"/v6"[..]));
    let host = &up.url[7..up.url.len() - 1];
    assert_eq!(up.received()[0].all("host"), [host]);
}

/// Sends `request` on a new connection that closes after it, as a caller without keep-alive
/// does, and returns the answer once portvakt has closed the connection.
async fn call_once(proxy: &Running, request: &[u8]) -> Answer {
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    caller.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let answer = answer(&mut caller, &mut buf).await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), caller.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    answer
}

#[tokio::test]
async fn callers_that_close_their_connections_share_upstream_connections() {
    let (mock, echo) = mock_and_upstream().await;
    let proxy = proxy_to(&mock, &echo.url(), "").await;
    // Each call on a connection of its own: the pool keeps the upstream connection between them.
    let calls: [&[u8]; 5] = [
        b"GET /nav/1 HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
        b"GET /nav/2 HTTP/1.0\r\nHost: p\r\n\r\n",
        b"POST /nav/3 HTTP/1.1\r\nHost: p\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
        b"POST /nav/4 HTTP/1.1\r\nHost: p\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"GET /nav/5 HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    ];
    for call in calls {
        let answer = call_once(&proxy, call).await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(call));
    }
    let records = echo.records();
    assert_eq!(records.len(), 5);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.target, format!("/{}", i + 1));
        assert!(r.token_valid, "{}: {:?}", r.target, r.token_error);
        assert_eq!(
            r.peer, records[0].peer,
            "{}: every call on the first upstream connection",
            r.target
        );
    }
    assert_eq!(
        (records[3].method.as_str(), records[3].body_len),
        ("POST", 2)
    );
}

#[tokio::test]
async fn a_post_never_meets_a_pooled_connection_the_upstream_closed() {
    let (up, (mock, _echo)) = (Recorder::start().await, mock_and_upstream().await);
    let proxy = proxy_to(&mock, &up.url, "").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..3 {
        // `/bye` is answered, then the upstream closes that connection without saying so.
        caller
            .write_all(b"GET /nav/bye HTTP/1.1\r\nHost: p\r\n\r\n")
            .await
            .unwrap();
        let a = answer(&mut caller, &mut buf).await;
        assert_eq!((a.status, a.body.as_slice()), (200, &b"bye"[..]));
        tokio::time::sleep(Duration::from_millis(50)).await;
        caller
            .write_all(b"POST /nav/x HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\nhi")
            .await
            .unwrap();
        let a = answer(&mut caller, &mut buf).await;
        assert_eq!(
            (a.status, a.body.as_slice()),
            (200, &b"/x"[..]),
            "round {i}"
        );
    }
    let posts = up.received().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 3, "each POST sent once");
}

/// An HTTPS echo upstream offering `alpn`, and portvakt with a route `/nav/` to it, plus the
/// route lines in `extra` (`TRUSTED` to trust the test CA).
async fn https_upstream(alpn: &[&[u8]], extra: &str) -> (MockMaskinporten, EchoUpstream, Running) {
    let mock = MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let (cert, key) = tls_files();
    let echo = EchoUpstream::start_tls_offering(Some(mock.decoding_key()), &cert, &key, alpn)
        .await
        .unwrap();
    let proxy = proxy_to(&mock, &echo.url(), extra).await;
    (mock, echo, proxy)
}

const TRUSTED: &str = "    ca_file: test-ca.pem\n";

/// Two callers, each keeping its connection, call in turns.
async fn two_callers_in_turns(proxy: &Running) {
    let mut callers = [
        TcpStream::connect(proxy.listen).await.unwrap(),
        TcpStream::connect(proxy.listen).await.unwrap(),
    ];
    let mut buf = Vec::new();
    for round in 0..2 {
        for (who, caller) in callers.iter_mut().enumerate() {
            let call = format!("GET /nav/{who}/{round} HTTP/1.1\r\nHost: p\r\n\r\n");
            caller.write_all(call.as_bytes()).await.unwrap();
            assert_eq!(answer(caller, &mut buf).await.status, 200);
        }
    }
}

/// Five calls, each with a valid token, over `version`, with the upstream's own Host.
async fn all_over(echo: &EchoUpstream, proxy: &Running, version: http::Version) {
    let post = call_once(proxy, b"POST /nav/chunked HTTP/1.1\r\nHost: p\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n").await;
    assert_eq!(post.status, 200);
    two_callers_in_turns(proxy).await;
    let records = echo.records();
    assert_eq!(records.len(), 5);
    for r in &records {
        assert!(r.token_valid, "{}: {:?}", r.target, r.token_error);
        assert_eq!(r.version, version, "{}", r.target);
    }
    assert_eq!(
        (records[0].method.as_str(), records[0].body_len),
        ("POST", 2)
    );
}

#[tokio::test]
async fn an_https_upstream_that_speaks_http1_only_is_reached_over_it() {
    let (mock, echo, proxy) = https_upstream(&[b"http/1.1"], TRUSTED).await;
    all_over(&echo, &proxy, http::Version::HTTP_11).await;
    assert_eq!(echo.records()[1].headers["host"], echo.addr().to_string());
    assert_eq!(mock.token_requests(), 1);
}

#[tokio::test]
async fn upstream_http2_false_keeps_http1_with_an_upstream_that_offers_http2() {
    let extra = format!("{TRUSTED}    upstream_http2: false\n");
    let (_mock, echo, proxy) = https_upstream(&[b"h2", b"http/1.1"], &extra).await;
    all_over(&echo, &proxy, http::Version::HTTP_11).await;
}

#[tokio::test]
async fn an_https_upstream_that_offers_http2_is_reached_over_it() {
    let (_mock, echo, proxy) = https_upstream(&[b"h2", b"http/1.1"], TRUSTED).await;
    all_over(&echo, &proxy, http::Version::HTTP_2).await;
}

#[tokio::test]
async fn an_untrusted_upstream_is_502_and_counted_as_tls() {
    let (_mock, echo, proxy) = https_upstream(&[b"http/1.1"], "").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    caller
        .write_all(b"GET /nav/x HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = answer(&mut caller, &mut buf).await;
    assert_eq!(a.status, 502);
    let problem: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("certificate"),
        "{problem}"
    );
    assert!(echo.records().is_empty(), "nothing reached the upstream");
    let series = r#"portvakt_upstream_errors_total{route="nav",kind="tls"}"#;
    assert_eq!(metric_value(&metrics_text(&proxy).await, series), Some(1.0));
}
