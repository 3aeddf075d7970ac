//! The upstream pool (`src/upstream/pool.rs`): which connection each request goes on. Callers are
//! raw sockets; the echo upstream records the connecting side's address of every request, so a
//! reused connection shows as one address for many requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::wire::{read_answer, Answer};
use common::*;
use portvakt::mock::{EchoUpstream, MockMaskinporten};
use std::collections::HashSet;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `calls` GETs in a row on one kept connection, each answered 200.
async fn caller(proxy: std::net::SocketAddr, who: usize, calls: usize) {
    let mut caller = TcpStream::connect(proxy).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..calls {
        let call = format!("GET /nav/{who}/{i} HTTP/1.1\r\nHost: p\r\n\r\n");
        caller.write_all(call.as_bytes()).await.unwrap();
        let a: Answer = read_answer(&mut caller, &mut buf, false)
            .await
            .expect("an answer");
        assert_eq!(a.status, 200, "caller {who}, call {i}");
    }
}

/// The distinct upstream connections the echo upstream saw, after checking every token.
fn connections(echo: &EchoUpstream, want_requests: usize) -> HashSet<std::net::SocketAddr> {
    let records = echo.records();
    assert_eq!(records.len(), want_requests);
    for r in &records {
        assert!(r.token_valid, "{}: {:?}", r.target, r.token_error);
    }
    records.iter().map(|r| r.peer).collect()
}

#[tokio::test]
async fn concurrent_callers_use_a_connection_each_and_later_callers_reuse_them() {
    let (mock, echo) = mock_and_upstream().await;
    let proxy = proxy_to(&mock, &echo.url(), "").await;
    caller(proxy.listen, 0, 1).await; // the token, fetched once
    let callers: Vec<_> = (1..=4)
        .map(|who| tokio::spawn(caller(proxy.listen, who, 5)))
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    let used = connections(&echo, 21);
    assert!(
        (1..=4).contains(&used.len()),
        "4 callers at once need at most 4 upstream connections: {used:?}"
    );
    // A caller arriving later takes a kept connection: no new one is made for it.
    caller(proxy.listen, 9, 3).await;
    let after = connections(&echo, 24);
    assert_eq!(after, used, "the late caller reused a kept connection");
    assert_eq!(mock.token_requests(), 1);
}

#[tokio::test]
async fn an_answer_the_caller_abandons_takes_its_connection_with_it() {
    let (mock, echo) = mock_and_upstream().await;
    let proxy = proxy_to(&mock, &echo.url(), "").await;
    // 64 MiB: far more than any socket buffer holds, so the upstream is still sending when the
    // caller goes.
    let mut abandoned = TcpStream::connect(proxy.listen).await.unwrap();
    abandoned
        .write_all(b"GET /nav/bytes/67108864 HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 1024];
    let n = abandoned.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    drop(abandoned);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next calls go on a connection whose last answer was read to its end, never on the
    // one with an answer half sent.
    for who in 1..=3 {
        caller(proxy.listen, who, 2).await;
    }
    let records = echo.records();
    assert_eq!(records.len(), 7);
    let first = records[0].peer;
    for r in &records[1..] {
        assert_ne!(
            r.peer, first,
            "{}: went on the abandoned answer's connection",
            r.target
        );
        assert_eq!(
            r.peer, records[1].peer,
            "{}: the calls after share one",
            r.target
        );
    }
}

/// Waits (bounded) until the echo upstream has seen `n` requests.
async fn seen(echo: &EchoUpstream, n: usize) {
    for _ in 0..500 {
        if echo.records().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the upstream never saw {n} requests");
}

/// A caller asks for `target` and leaves before its answer has come or been read (after the first
/// bytes, for a `/bytes/` answer); a caller after it must go on the same upstream connection, which
/// portvakt kept by reading the rest of the answer itself.
async fn leaving_early_keeps_the_connection(target: &str) {
    let (mock, echo) = mock_and_upstream().await;
    let proxy = proxy_to(&mock, &echo.url(), "").await;
    // The token, on a connection that is then kept; the caller below takes it.
    caller(proxy.listen, 0, 1).await;
    let mut gone = TcpStream::connect(proxy.listen).await.unwrap();
    let call = format!("GET /nav{target} HTTP/1.1\r\nHost: p\r\n\r\n");
    gone.write_all(call.as_bytes()).await.unwrap();
    seen(&echo, 2).await;
    if target.contains("/bytes/") {
        let mut some = [0u8; 1024];
        let n = gone.read(&mut some).await.unwrap();
        assert!(some[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &some[..n]);
    }
    drop(gone);
    // The rest of the answer comes within 300 ms; then the next caller goes on the connection.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    caller(proxy.listen, 1, 2).await;
    let records = echo.records();
    assert_eq!(records.len(), 4);
    assert_eq!(records[1].target, target);
    assert!(
        records.iter().all(|r| r.peer == records[0].peer),
        "one upstream connection for all: {records:?}"
    );
}

#[tokio::test]
async fn a_caller_that_leaves_before_the_answer_does_not_cost_the_connection() {
    // The upstream answers 200 ms after the request reached it; the caller is gone by then.
    leaving_early_keeps_the_connection("/delay/200/x").await;
}

#[tokio::test]
async fn a_caller_that_leaves_mid_answer_does_not_cost_the_connection_when_little_is_left() {
    // 300,000 bytes, the upstream stopping after the first 64 KiB until 300 ms after the head:
    // the caller leaves with 230 KB unread, below the 1 MiB that portvakt reads to keep a
    // connection.
    leaving_early_keeps_the_connection("/pause/300/bytes/300000").await;
}

#[tokio::test]
async fn a_burst_over_http2_makes_a_few_connections_and_shares_them() {
    let mock = MockMaskinporten::start(vec![registered_client()], 120)
        .await
        .unwrap();
    let (cert, key) = tls_files();
    let echo = EchoUpstream::start_tls_offering(
        Some(mock.decoding_key()),
        &cert,
        &key,
        &[b"h2", b"http/1.1"],
    )
    .await
    .unwrap();
    let proxy = proxy_to(&mock, &echo.url(), "    ca_file: test-ca.pem\n").await;
    let callers: Vec<_> = (0..24)
        .map(|who| tokio::spawn(caller(proxy.listen, who, 4)))
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    let used = connections(&echo, 96);
    // One per core (at most 4) are opened, one at a time however many requests wait.
    let wanted = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 4);
    assert!(
        (1..=wanted).contains(&used.len()),
        "24 callers at once over HTTP/2: {} connections",
        used.len()
    );
    // The others are made beside the requests; later calls are spread over all of them.
    let mut calls = 96;
    for round in 0..40 {
        if connections(&echo, calls).len() == wanted {
            break;
        }
        assert!(
            round < 39,
            "{wanted} HTTP/2 connections never came into use"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        caller(proxy.listen, 100 + round, 2).await;
        calls += 2;
    }
    assert!(
        echo.records()
            .iter()
            .all(|r| r.version == http::Version::HTTP_2),
        "every request over HTTP/2"
    );
    assert_eq!(mock.token_requests(), 1);
}

#[tokio::test]
async fn an_answer_no_request_asked_for_never_reaches_a_caller() {
    let (up, proxy, _mock) = common::proxy_to_recorder().await;
    let http = http_client();
    // The token first, then answers followed, in the same write, by one nobody asked for; each
    // next call must get its own answer, never that one.
    for round in 0..20 {
        let unasked = http
            .get(format!("http://{}/nav/unasked/{round}", proxy.listen))
            .send()
            .await
            .unwrap();
        assert_eq!(unasked.status(), 200);
        assert_eq!(
            unasked.text().await.unwrap(),
            format!("/api/unasked/{round}")
        );
        let next = http
            .get(format!("http://{}/nav/next/{round}", proxy.listen))
            .send()
            .await
            .unwrap();
        assert_eq!(next.status(), 200, "round {round}");
        assert_eq!(next.text().await.unwrap(), format!("/api/next/{round}"));
    }
    assert!(up.violations().is_empty(), "{:?}", up.violations());
}

#[tokio::test]
async fn an_abandoned_answer_slower_than_the_drain_takes_its_connection_with_it() {
    let (mock, echo) = mock_and_upstream().await;
    let proxy = proxy_to(&mock, &echo.url(), "").await;
    caller(proxy.listen, 0, 1).await;
    let mut gone = TcpStream::connect(proxy.listen).await.unwrap();
    // The answer comes after 6 s; portvakt reads an abandoned answer for 5 s at most.
    gone.write_all(b"GET /nav/delay/6000/x HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    seen(&echo, 2).await;
    drop(gone);
    tokio::time::sleep(Duration::from_millis(5500)).await;
    caller(proxy.listen, 1, 1).await;
    let records = echo.records();
    assert_eq!(records.len(), 3);
    assert_eq!(
        records[1].peer, records[0].peer,
        "the abandoned call took the kept connection"
    );
    assert_ne!(
        records[2].peer, records[1].peer,
        "a call went on the connection whose drain was cut"
    );
}
