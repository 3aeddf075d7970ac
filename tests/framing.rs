//! What reaches the upstream is what the caller sent: one request for one request, under the
//! route's base, with portvakt's token and none of the caller's credentials. Hostile requests go
//! in as raw bytes; a recording upstream parses everything it gets strictly, and each case is
//! judged by the exact bytes it received.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::wire::{closed, read_answer, Received, Recorder};
use common::{config_yaml, mock_and_upstream, proxy_to_recorder, spawn_proxy, SCOPE};
use portvakt::app::Running;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The body a case's request carries, and its framing.
#[derive(Clone, Copy, Debug)]
enum Body {
    None,
    Length,
    Chunked,
}

const BODY: &[u8] = b"hello";

impl Body {
    fn framing(self) -> &'static str {
        match self {
            Body::None => "",
            Body::Length => "Content-Length: 5\r\n",
            Body::Chunked => "Transfer-Encoding: chunked\r\n",
        }
    }

    fn bytes(self) -> &'static [u8] {
        match self {
            Body::None => b"",
            Body::Length => BODY,
            Body::Chunked => b"5\r\nhello\r\n0\r\n\r\n",
        }
    }

    fn sent(self) -> &'static [u8] {
        match self {
            Body::None => b"",
            _ => BODY,
        }
    }
}

/// What must become of a case.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Answered with this status; nothing of it reaches the upstream.
    Refused(u16),
    /// Sent once, to this upstream target, with the body as the caller sent it.
    Sent(&'static str),
}

/// Every request the upstream got obeys the promise, whatever the case.
fn promise_kept(up: &Recorder) {
    assert_eq!(
        up.violations(),
        Vec::<String>::new(),
        "the upstream got malformed bytes"
    );
    for r in up.received() {
        let raw = String::from_utf8_lossy(&r.raw);
        assert!(r.target.starts_with("/api/"), "left the base: {raw}");
        assert!(!r.target.contains("SMUGGLED"), "a smuggled request: {raw}");
        let auth = r.all("authorization");
        assert_eq!(auth.len(), 1, "{raw}");
        assert!(auth[0].starts_with("Bearer ey"), "{raw}");
        for (name, value) in &r.headers {
            assert!(
                !matches!(name.as_str(), "cookie" | "proxy-authorization" | "host" if value.contains("caller")),
                "{raw}"
            );
            assert!(
                !value.contains("Y2FsbGVy"),
                "the caller's credentials went upstream: {raw}"
            );
        }
    }
}

/// Framed once, from the body portvakt sent: a length of exactly that body, or chunked (a body
/// whose length was not known when it started), never both, none without a body.
fn framed_once(r: &Received, sent: &[u8], label: &str) {
    let (lengths, codings) = (r.all("content-length"), r.all("transfer-encoding"));
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) | (["0"], []) => assert!(sent.is_empty(), "{label}: {r:?}"),
        ([len], []) => assert_eq!(*len, sent.len().to_string(), "{label}"),
        ([], ["chunked"]) => assert!(!sent.is_empty(), "{label}: {r:?}"),
        _ => panic!("{label}: framed twice: {r:?}"),
    }
}

/// Sends `request` on a new connection, or on one that first carried a normal call, and checks
/// the answer and what reached the upstream.
async fn run_case(
    proxy: &Running,
    up: &Recorder,
    what: &str,
    request: &[u8],
    want: Want,
    sent: &[u8],
    kept: bool,
) {
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    if kept {
        caller
            .write_all(b"GET /nav/warm HTTP/1.1\r\nHost: p\r\n\r\n")
            .await
            .unwrap();
        let a = read_answer(&mut caller, &mut buf, false).await.unwrap();
        assert_eq!(
            (a.status, a.body.as_slice()),
            (200, &b"/api/warm"[..]),
            "{what}: warm-up"
        );
    }
    let before = up.received().len();
    caller.write_all(request).await.unwrap();
    let answer = read_answer(&mut caller, &mut buf, false).await;
    // Whatever a refusal leaves unread is never sent anywhere: give it time to show up if it were.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let new: Vec<Received> = up.received().split_off(before);
    let label = format!(
        "{what} ({}, kept-alive: {kept})",
        String::from_utf8_lossy(request).escape_debug()
    );
    match want {
        Want::Refused(status) => {
            let answer = answer.unwrap_or_else(|| panic!("{label}: no answer"));
            assert_eq!(answer.status, status, "{label}");
            assert!(new.is_empty(), "{label}: reached the upstream: {new:?}");
        }
        Want::Sent(target) => {
            let answer = answer.unwrap_or_else(|| panic!("{label}: no answer"));
            assert_eq!(
                answer.status,
                200,
                "{label}: {}",
                String::from_utf8_lossy(&answer.body)
            );
            assert_eq!(
                answer.body,
                target.as_bytes(),
                "{label}: another request's answer"
            );
            assert_eq!(new.len(), 1, "{label}: {new:?}");
            let r = &new[0];
            assert_eq!(r.target, target, "{label}");
            assert_eq!(r.body, sent, "{label}");
            framed_once(r, sent, &label);
        }
    }
    promise_kept(up);
}

#[tokio::test]
async fn hostile_heads_with_every_body_on_fresh_and_kept_connections() {
    let (up, proxy, mock) = proxy_to_recorder().await;
    let table: Vec<(&str, &[u8], Want)> = vec![
        ("an honest call with the caller's credentials", b"POST /nav/x HTTP/1.1\r\nHost: p\r\nAuthorization: Basic Y2FsbGVyOnNlY3JldA==\r\nCookie: caller=Y2FsbGVy\r\nProxy-Authorization: Basic Y2FsbGVy\r\nPortvakt-Api-Key: Y2FsbGVy-key\r\nPortvakt-Anything: Y2FsbGVy\r\n", Want::Sent("/api/x")),
        ("no Host", b"POST /nav/x HTTP/1.1\r\n", Want::Refused(400)),
        ("two Hosts", b"POST /nav/x HTTP/1.1\r\nHost: p\r\nHost: q\r\n", Want::Refused(400)),
        ("Host with user info", b"POST /nav/x HTTP/1.1\r\nHost: caller@p\r\n", Want::Refused(400)),
        // The http crate drops a fragment before portvakt sees the target: it never travels.
        ("a fragment", b"POST /nav/x#y?z HTTP/1.1\r\nHost: p\r\n", Want::Sent("/api/x")),
        ("dot-dot behind a fragment", b"POST /nav/..#x HTTP/1.1\r\nHost: p\r\n", Want::Refused(400)),
        ("encoded dot-dot behind a fragment", b"POST /nav/%2e%2e#x HTTP/1.1\r\nHost: p\r\n", Want::Refused(400)),
        ("dot-dot and a query", b"POST /nav/..?x HTTP/1.1\r\nHost: p\r\n", Want::Refused(400)),
        ("a quote in the target", b"POST /nav/a\"b HTTP/1.1\r\nHost: p\r\n", Want::Refused(400)),
        ("braces in the target", b"POST /nav/{x} HTTP/1.1\r\nHost: p\r\n", Want::Refused(400)),
        ("a pipe in the target", b"POST /nav/a|b HTTP/1.1\r\nHost: p\r\n", Want::Refused(400)),
        ("raw UTF-8 in the target", b"POST /nav/\xc3\xa6 HTTP/1.1\r\nHost: p\r\n", Want::Refused(400)),
        ("raw UTF-8 in the query", b"POST /nav/x?q=\xc3\xa6 HTTP/1.1\r\nHost: p\r\n", Want::Refused(400)),
        ("a stray percent", b"POST /nav/100% HTTP/1.1\r\nHost: p\r\n", Want::Refused(400)),
        ("a backslash", b"POST /nav/a\\..\\b HTTP/1.1\r\nHost: p\r\n", Want::Refused(400)),
        ("obs-fold", b"POST /nav/x HTTP/1.1\r\nHost: p\r\nX-A: a\r\n b\r\n", Want::Refused(400)),
        ("a bare CR in a value", b"POST /nav/x HTTP/1.1\r\nHost: p\r\nX-A: a\rb\r\n", Want::Refused(400)),
        ("a bare LF ending a line (RFC 9112 2.2 lets a recipient take it; CRLF goes upstream)", b"POST /nav/x HTTP/1.1\r\nHost: p\nX-A: b\r\n", Want::Sent("/api/x")),
        ("NUL in a value", b"POST /nav/x HTTP/1.1\r\nHost: p\r\nX-A: a\x00b\r\n", Want::Refused(400)),
        ("a space before the colon", b"POST /nav/x HTTP/1.1\r\nHost: p\r\nX-A : b\r\n", Want::Refused(400)),
        ("Connection names Content-Length", b"POST /nav/x HTTP/1.1\r\nHost: p\r\nConnection: Content-Length\r\n", Want::Sent("/api/x")),
        ("Connection names Transfer-Encoding", b"POST /nav/x HTTP/1.1\r\nHost: p\r\nConnection: keep-alive, Transfer-Encoding\r\n", Want::Sent("/api/x")),
        ("Connection: keep-alive, content-length", b"POST /nav/x HTTP/1.1\r\nHost: p\r\nConnection: keep-alive, content-length\r\n", Want::Sent("/api/x")),
        ("Connection names Host and Authorization", b"POST /nav/x HTTP/1.1\r\nHost: p\r\nConnection: Host, Authorization\r\n", Want::Sent("/api/x")),
        ("CONNECT", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n", Want::Refused(405)),
        ("absolute form", b"POST http://evil.example/nav/x HTTP/1.1\r\nHost: evil.example\r\n", Want::Refused(400)),
        ("no route", b"POST /other/x HTTP/1.1\r\nHost: p\r\n", Want::Refused(404)),
    ];
    for (what, head, want) in &table {
        for body in [Body::None, Body::Length, Body::Chunked] {
            for kept in [false, true] {
                let mut request = head.to_vec();
                request.extend_from_slice(body.framing().as_bytes());
                request.extend_from_slice(b"\r\n");
                request.extend_from_slice(body.bytes());
                let what = format!("{what}, body {body:?}");
                run_case(&proxy, &up, &what, &request, *want, body.sent(), kept).await;
            }
        }
    }
    assert_eq!(mock.token_requests(), 1);
}

#[tokio::test]
async fn framing_tricks_are_refused_or_sent_framed_once() {
    let (up, proxy, _mock) = proxy_to_recorder().await;
    let chunk = "5\r\nhello\r\n0\r\n\r\n";
    let table: Vec<(&str, String, Want)> = vec![
        ("two different lengths", "POST /nav/x HTTP/1.1\r\nHost: p\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello".into(), Want::Refused(400)),
        ("a list of lengths", "POST /nav/x HTTP/1.1\r\nHost: p\r\nContent-Length: 5, 5\r\n\r\nhello".into(), Want::Refused(400)),
        ("a signed length", "POST /nav/x HTTP/1.1\r\nHost: p\r\nContent-Length: +5\r\n\r\nhello".into(), Want::Refused(400)),
        ("two equal lengths", "POST /nav/x HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\nhello".into(), Want::Sent("/api/x")),
        ("gzip, chunked", format!("POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{chunk}"), Want::Refused(501)),
        ("gzip then chunked on two lines", format!("POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"), Want::Refused(501)),
        ("chunked twice", format!("POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"), Want::Refused(501)),
        ("chunked, chunked", format!("POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked, chunked\r\n\r\n{chunk}"), Want::Refused(501)),
        ("identity", "POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello".into(), Want::Refused(400)),
        ("chunked, identity", format!("POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked, identity\r\n\r\n{chunk}"), Want::Refused(400)),
        ("xchunked", format!("POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: xchunked\r\n\r\n{chunk}"), Want::Refused(400)),
        ("a space before the colon", format!("POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding : chunked\r\n\r\n{chunk}"), Want::Refused(400)),
        ("a coding in HTTP/1.0", format!("POST /nav/x HTTP/1.0\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"), Want::Refused(400)),
        ("a tab before the coding", format!("POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding:\tchunked\r\n\r\n{chunk}"), Want::Sent("/api/x")),
        ("upper case", format!("POST /nav/x HTTP/1.1\r\nHost: p\r\nTRANSFER-ENCODING: CHUNKED\r\n\r\n{chunk}"), Want::Sent("/api/x")),
        ("chunk extensions and trailers", "POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n2;a=b\r\nhe\r\n3\r\nllo\r\n0\r\nX-Trailer: t\r\n\r\n".into(), Want::Sent("/api/x")),
        ("the lane's smuggling finding", "POST /nav/x HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\nContent-Length: 38\r\n\r\nGET /api/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n".into(), Want::Sent("/api/x")),
    ];
    for (what, request, want) in &table {
        for kept in [false, true] {
            let sent: &[u8] = match *what {
                // Its length is one short: the last LF is left over, and read as an empty line.
                "the lane's smuggling finding" => b"GET /api/SMUGGLED HTTP/1.1\r\nHost: x\r\n\r",
                _ => BODY,
            };
            // The recorder's promise check reads "SMUGGLED" in a body as smuggled: this one is a body.
            if *what == "the lane's smuggling finding" {
                let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
                caller.write_all(request.as_bytes()).await.unwrap();
                let mut buf = Vec::new();
                let a = read_answer(&mut caller, &mut buf, false).await.unwrap();
                assert_eq!((a.status, a.body.as_slice()), (200, &b"/api/x"[..]));
                let last = up.received().pop().unwrap();
                assert_eq!(
                    (last.target.as_str(), last.body.as_slice()),
                    ("/api/x", sent)
                );
                assert_eq!(last.all("content-length"), ["38"]);
                assert_eq!(
                    up.received()
                        .iter()
                        .filter(|r| r.target.contains("SMUGGLED"))
                        .count(),
                    0
                );
                continue;
            }
            run_case(&proxy, &up, what, request.as_bytes(), *want, sent, kept).await;
        }
    }
}

#[tokio::test]
async fn a_length_beside_a_coding_is_framed_by_the_coding_and_ends_the_connection() {
    // hyper reads such a body by its coding and drops the length (RFC 9112 6.3), and closes the
    // caller's connection after answering (6.1): what followed on it is never read as a request.
    let (up, proxy, _mock) = proxy_to_recorder().await;
    for (what, framing) in [
        (
            "length first",
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "coding first",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        ),
    ] {
        let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
        let request = format!(
            "POST /nav/x HTTP/1.1\r\nHost: p\r\n{framing}\r\n5\r\nhello\r\n0\r\n\r\nGET /nav/SMUGGLED HTTP/1.1\r\nHost: p\r\n\r\n"
        );
        let before = up.received().len();
        caller.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let a = read_answer(&mut caller, &mut buf, false).await.unwrap();
        assert_eq!(a.status, 200, "{what}");
        assert!(
            closed(&mut caller).await,
            "{what}: the connection stayed open"
        );
        let new = up.received().split_off(before);
        assert_eq!(new.len(), 1, "{what}: {new:?}");
        assert_eq!(new[0].body, BODY, "{what}");
        framed_once(&new[0], BODY, what);
        promise_kept(&up);
    }
}

#[tokio::test]
async fn an_unsupported_coding_is_answered_with_a_problem_and_the_connection_closes() {
    let (up, proxy, _mock) = proxy_to_recorder().await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    caller
        .write_all(b"POST /nav/x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /nav/SMUGGLED HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let a = read_answer(&mut caller, &mut buf, false).await.unwrap();
    assert_eq!(a.status, 501);
    assert_eq!(a.header("content-type"), Some("application/problem+json"));
    assert_eq!(a.header("connection"), Some("close"));
    let problem: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        problem["type"],
        "urn:portvakt:problem:transfer-coding-unsupported"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("gzip, chunked"),
        "{problem}"
    );
    assert!(closed(&mut caller).await);
    assert!(up.received().is_empty());
    // Own refusals of the form are problem+json too.
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    caller
        .write_all(b"GET /nav/{x} HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, false).await.unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        (a.status, problem["type"].as_str().unwrap()),
        (400, "urn:portvakt:problem:target-invalid")
    );
    caller
        .write_all(b"GET /nav/x HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, false).await.unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        (a.status, problem["type"].as_str().unwrap()),
        (400, "urn:portvakt:problem:host-invalid")
    );
}

#[tokio::test]
async fn pipelined_requests_and_one_byte_writes_each_go_once() {
    let (up, proxy, _mock) = proxy_to_recorder().await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    caller
        .write_all(b"POST /nav/one HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\n\r\nhelloPOST /nav/two HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /nav/three HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    for target in ["/api/one", "/api/two", "/api/three"] {
        let a = read_answer(&mut caller, &mut buf, false).await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, target.as_bytes()));
    }
    let request = b"POST /nav/bytes HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n";
    for byte in request {
        caller.write_all(&[*byte]).await.unwrap();
        caller.flush().await.unwrap();
    }
    let a = read_answer(&mut caller, &mut buf, false).await.unwrap();
    assert_eq!((a.status, a.body.as_slice()), (200, &b"/api/bytes"[..]));
    let got = up.received();
    let targets: Vec<&str> = got.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        ["/api/one", "/api/two", "/api/three", "/api/bytes"]
    );
    for r in &got[..2] {
        assert_eq!(r.body, BODY);
    }
    assert_eq!(got[3].body, BODY);
    assert!(got[2].body.is_empty() && got[2].header("content-length").is_none());
    promise_kept(&up);
}

/// The capture scenario: an attacker's request, then another caller's on the same route. The
/// second caller's bytes never appear inside another request, and each gets its own answer.
#[tokio::test]
async fn no_caller_captures_another_callers_request_or_answer() {
    let (up, proxy, _mock) = proxy_to_recorder().await;
    let smuggle = |connection: &str, inner: &str| {
        format!(
            "POST /nav/x HTTP/1.1\r\nHost: a\r\nConnection: {connection}\r\nContent-Length: {}\r\n\r\n{inner}",
            inner.len()
        )
    };
    let attacks: [String; 4] = [
        // A smuggled slow request whose answer would go to the next caller.
        smuggle("Content-Length", "GET /api/slow-SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"),
        // A smuggled unfinished POST that would swallow the next caller's request as its body.
        smuggle("close, Content-Length", "POST /api/SMUGGLED HTTP/1.1\r\nHost: x\r\nContent-Length: 250\r\n\r\nstart"),
        // The same with the length beside a coding, and with an unsupported coding.
        "POST /nav/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /api/SMUGGLED HTTP/1.1\r\nHost: x\r\nContent-Length: 250\r\n\r\n".into(),
        "POST /nav/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\nPOST /api/SMUGGLED HTTP/1.1\r\nHost: x\r\nContent-Length: 250\r\n\r\n".into(),
    ];
    for (i, attack) in attacks.iter().enumerate() {
        let mut attacker = TcpStream::connect(proxy.listen).await.unwrap();
        attacker.write_all(attack.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let a = read_answer(&mut attacker, &mut buf, false).await.unwrap();
        assert!(
            a.status == 200 || a.status == 501,
            "attack {i}: {}",
            a.status
        );
        if a.status == 200 {
            assert_eq!(a.body.as_slice(), b"/api/x", "attack {i}");
        }
        // The victim, on a connection of its own, as soon as the attacker has its answer.
        let mut victim = TcpStream::connect(proxy.listen).await.unwrap();
        let victim_request =
            format!("GET /nav/victim-{i} HTTP/1.1\r\nHost: p\r\nX-Victim: secret-{i}\r\n\r\n");
        victim.write_all(victim_request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let v = read_answer(&mut victim, &mut buf, false).await.unwrap();
        assert_eq!(
            (v.status, String::from_utf8_lossy(&v.body).into_owned()),
            (200, format!("/api/victim-{i}"))
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = up.received();
    for r in &got {
        let raw = String::from_utf8_lossy(&r.raw);
        for i in 0..attacks.len() {
            let inside = raw.contains(&format!("secret-{i}"));
            assert!(
                !inside || r.target == format!("/api/victim-{i}"),
                "a victim's bytes inside {raw}"
            );
        }
        if r.target.starts_with("/api/victim") {
            assert!(r.body.is_empty(), "{raw}");
        }
    }
    assert!(got.iter().all(|r| !r.target.contains("SMUGGLED")));
    // Smuggled text travels only as the body of the request that carried it.
    for r in got.iter().filter(|r| r.target == "/api/x") {
        assert!(String::from_utf8_lossy(&r.body).contains("SMUGGLED") || r.body.is_empty());
    }
    assert_eq!(up.violations(), Vec::<String>::new());
}

/// Headers that would make the upstream see another path, method or caller (issue 28, finding 4).
const REWRITING: &str = "X-Original-URL: /admin\r\nX-Original-URI: /admin\r\nX-Rewrite-URL: /admin\r\nX-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\nForwarded: for=10.0.0.1;host=internal\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Host: internal\r\nX-Forwarded-Prefix: /admin\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 10.0.0.1\r\nTrue-Client-IP: 10.0.0.1\r\nX-Client-IP: 10.0.0.1\r\nX-Cluster-Client-IP: 10.0.0.1\r\n";

#[tokio::test]
async fn headers_that_rewrite_the_path_method_or_caller_never_reach_the_upstream() {
    let (mock, _echo) = mock_and_upstream().await;
    let up = Recorder::start().await;
    let route = |name: &str, extra: &str| {
        format!(
            "  - name: {name}\n    prefix: /{name}/\n    upstream: {}api/\n    client: vendor\n    scopes: [{SCOPE}]\n{extra}",
            up.url
        )
    };
    let routes = format!(
        "{}{}{}",
        route("nav", ""),
        route("fwd", "    forward_caller_address: forwarded\n"),
        route("xff", "    forward_caller_address: x-forwarded-for\n"),
    );
    let proxy = spawn_proxy(
        &config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes),
        &[],
    )
    .await;
    let mut s = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    for name in ["nav", "fwd", "xff"] {
        let request = format!("GET /{name}/x HTTP/1.1\r\nHost: p\r\n{REWRITING}\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let answer = read_answer(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.head);
    }
    let got = up.received();
    assert_eq!(got.len(), 3);
    for r in &got {
        let raw = String::from_utf8_lossy(&r.raw).to_ascii_lowercase();
        for sent in REWRITING
            .to_ascii_lowercase()
            .split("\r\n")
            .filter(|l| !l.is_empty())
        {
            assert!(!raw.contains(sent), "{sent:?} reached the upstream: {raw}");
        }
        assert!(
            !raw.contains("10.0.0.1") && !raw.contains("/admin") && !raw.contains("delete"),
            "{raw}"
        );
        assert!(r.raw.starts_with(b"GET /api/x HTTP/1.1\r\n"), "{raw}");
    }
    // Only portvakt's own line, from the peer address, where the route asks for it.
    let address_lines = |r: &common::wire::Received| {
        let mut lines: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(n, _)| n.contains("forward") || n.ends_with("-ip"))
            .cloned()
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(address_lines(&got[0]), []);
    assert_eq!(
        address_lines(&got[1]),
        [("forwarded".to_string(), "for=127.0.0.1".to_string())]
    );
    assert_eq!(
        address_lines(&got[2]),
        [("x-forwarded-for".to_string(), "127.0.0.1".to_string())]
    );
    assert!(up.violations().is_empty(), "{:?}", up.violations());
    proxy.shutdown().await;
}
