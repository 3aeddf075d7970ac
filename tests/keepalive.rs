//! Keep-alive callers that go quiet: hyper's part of their connection is ended after a moment
//! of rest and begun again when they send (src/server/idle.rs). Nothing a caller sends may be
//! lost, read twice or read differently across that: judged by the exact bytes the upstream got.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::proxy_to_recorder;
use common::wire::{closed, read_answer};
use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Longer than the rest after which a connection is parked (PARK_AFTER, 50 ms).
const PAST_THE_PARK: Duration = Duration::from_millis(600);

fn parks() -> usize {
    logs::text().matches("keep-alive connection parked").count()
}

#[tokio::test]
async fn a_caller_quiet_between_calls_keeps_its_connection_and_every_byte() {
    let (up, proxy, _mock) = proxy_to_recorder().await;
    let parked_before = parks();
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    let requests: [&[u8]; 4] = [
        b"GET /nav/one HTTP/1.1\r\nHost: p\r\n\r\n",
        b"POST /nav/two HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /nav/three HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET /nav/four?x=1 HTTP/1.1\r\nHost: p\r\n\r\n",
    ];
    for request in requests {
        s.write_all(request).await.unwrap();
        let answer = read_answer(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.head);
        tokio::time::sleep(PAST_THE_PARK).await;
    }
    let got = up.received();
    let targets: Vec<&str> = got.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        ["/api/one", "/api/two", "/api/three", "/api/four?x=1"]
    );
    assert_eq!(got[1].body, b"hello");
    assert_eq!(got[2].body, b"abc");
    assert!(up.violations().is_empty(), "{:?}", up.violations());
    assert!(
        parks() >= parked_before + 4,
        "the connection was not parked after each call"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_begun_before_the_rest_and_finished_after_it_is_read_whole() {
    let (up, proxy, _mock) = proxy_to_recorder().await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /nav/first HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut s, &mut buf, false).await.unwrap().status,
        200
    );
    // Half a head at once, the rest long after the rest would have parked an idle connection.
    s.write_all(b"POST /nav/second HTTP/1.1\r\nHo")
        .await
        .unwrap();
    tokio::time::sleep(PAST_THE_PARK).await;
    s.write_all(b"st: p\r\nContent-Length: 3\r\n\r\nabc")
        .await
        .unwrap();
    let answer = read_answer(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.head);
    let got = up.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].target, "/api/second");
    assert_eq!(got[1].body, b"abc");
    assert!(up.violations().is_empty(), "{:?}", up.violations());
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_body_sent_slowly_is_never_taken_for_a_rest() {
    let (up, proxy, _mock) = proxy_to_recorder().await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"POST /nav/slow-body HTTP/1.1\r\nHost: p\r\nContent-Length: 6\r\n\r\nab")
        .await
        .unwrap();
    tokio::time::sleep(PAST_THE_PARK).await;
    s.write_all(b"cd").await.unwrap();
    tokio::time::sleep(PAST_THE_PARK).await;
    s.write_all(b"ef").await.unwrap();
    let answer = read_answer(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.head);
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"abcdef");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_pipelined_request_cut_by_a_rest_is_closed_never_misread() {
    let (up, proxy, _mock) = proxy_to_recorder().await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    // A second request's start arrives with the first; the caller then pauses past the rest.
    s.write_all(b"GET /nav/c HTTP/1.1\r\nHost: p\r\n\r\nGET /nav/d HTTP/1.1\r\nHo")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut s, &mut buf, false).await.unwrap().status,
        200
    );
    tokio::time::sleep(PAST_THE_PARK).await;
    let _ = s.write_all(b"st: p\r\n\r\n").await;
    // Answered whole, or the connection closed unanswered (RFC 9112, 9.3.2: a pipelining client
    // retries); never an error answer, never a request the caller did not send.
    match read_answer(&mut s, &mut buf, false).await {
        Some(answer) => assert_eq!(answer.status, 200, "{}", answer.head),
        None => assert!(closed(&mut s).await || buf.is_empty()),
    }
    let got = up.received();
    assert!(got
        .iter()
        .all(|r| r.target == "/api/c" || r.target == "/api/d"));
    assert_eq!(got[0].target, "/api/c");
    assert!(up.violations().is_empty(), "{:?}", up.violations());
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_parked_connections_at_once() {
    let (_up, proxy, _mock) = proxy_to_recorder().await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /nav/x HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut s, &mut buf, false).await.unwrap().status,
        200
    );
    tokio::time::sleep(PAST_THE_PARK).await;
    // Bounded: a parked connection must not hold the shutdown for its grace period.
    tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
        .await
        .expect("shutdown waited for a parked connection");
    assert!(closed(&mut s).await);
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_still_served() {
    let (up, proxy, _mock) = proxy_to_recorder().await;
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for i in 0..3 {
        let response = http
            .get(format!("http://{}/nav/h2-{i}", proxy.listen))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        tokio::time::sleep(PAST_THE_PARK).await;
    }
    assert_eq!(up.received().len(), 3);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_first_byte_that_could_begin_http2_s_preface_waits_for_the_rest() {
    let (up, proxy, _mock) = proxy_to_recorder().await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    // `P` may begin `PRI * HTTP/2.0`; `POST` tells it is HTTP/1.1 once it comes.
    s.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    s.write_all(b"OST /nav/split HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\nok")
        .await
        .unwrap();
    let answer = read_answer(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.head);
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, "/api/split");
    assert_eq!(got[0].body, b"ok");
    proxy.shutdown().await;
}
