//! The fast lane (`src/lane/`): what it relays byte for byte, and how a connection moves to hyper.
//! Callers are raw sockets, so every byte on the wire is seen; upstreams are scripted raw servers
//! or the echo upstream, which verifies each token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portvakt::app::Running;
use portvakt::mock::{EchoUpstream, MockMaskinporten};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An answer read off a raw socket: status, head (lower-cased), body as sent.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one answer: by Content-Length, chunked (the raw chunked bytes), or to the close. `buf`
/// keeps what arrived beyond it.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Answer {
    let mut chunk = [0u8; 4096];
    let (status, head_len, headers) = loop {
        let mut h = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut h);
        if let httparse::Status::Complete(n) = r.parse(buf).unwrap() {
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).to_string(),
                    )
                })
                .collect();
            break (r.code.unwrap(), n, headers);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head: String = headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    buf.drain(..head_len);
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let body_len = if head_request || status == 204 || status == 304 {
        Some(0)
    } else if get("transfer-encoding").is_some() {
        None
    } else {
        get("content-length").map(|v| v.parse::<usize>().unwrap())
    };
    let chunked = get("transfer-encoding").is_some();
    loop {
        let done = match body_len {
            Some(n) => buf.len() >= n,
            None if chunked => buf.windows(5).any(|w| w == b"0\r\n\r\n") || ends_chunked(buf),
            None => false,
        };
        if done {
            break;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let n = body_len.unwrap_or(buf.len()).min(buf.len());
    let body = buf.drain(..n).collect();
    Answer { status, head, body }
}

/// A chunked body that ended with trailers.
fn ends_chunked(buf: &[u8]) -> bool {
    buf.windows(3).any(|w| w == b"\n0\r") && buf.ends_with(b"\r\n\r\n")
}

/// An upstream that answers each request with the raw bytes its path names, and keeps each
/// request head it read. `/close` answers and closes; every other answer keeps the connection.
struct Scripted {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
    /// For each head in `heads`, the number of the connection it came on (1 for the first).
    conns: Arc<Mutex<Vec<usize>>>,
    /// Over TLS, the connections whose client offered HTTP/2 by ALPN.
    offered_h2: Arc<Mutex<Vec<usize>>>,
}

const CHUNKED: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";

async fn scripted() -> Scripted {
    scripted_on("127.0.0.1:0").await
}

async fn scripted_on(addr: &str) -> Scripted {
    scripted_with(addr, None, Duration::ZERO).await
}

/// As [`scripted_on`], over TLS with `tls` (its `url` then https://), the first connection's
/// handshake held back `first_handshake_after`.
async fn scripted_with(
    addr: &str,
    tls: Option<tokio_rustls::TlsAcceptor>,
    first_handshake_after: Duration,
) -> Scripted {
    let listener = TcpListener::bind(addr).await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(Mutex::new(Vec::new()));
    let offered_h2 = Arc::new(Mutex::new(Vec::new()));
    let (kept, count, on) = (
        Arc::clone(&heads),
        Arc::clone(&accepted),
        Arc::clone(&conns),
    );
    let h2 = Arc::clone(&offered_h2);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let seen = Seen {
                heads: Arc::clone(&kept),
                conns: Arc::clone(&on),
                conn: n,
            };
            match &tls {
                None => drop(tokio::spawn(script(stream, seen))),
                Some(tls) => {
                    let (config, h2) = (Arc::clone(tls.config()), Arc::clone(&h2));
                    tokio::spawn(async move {
                        if n == 1 {
                            tokio::time::sleep(first_handshake_after).await;
                        }
                        let acceptor = rustls::server::Acceptor::default();
                        let Ok(start) =
                            tokio_rustls::LazyConfigAcceptor::new(acceptor, stream).await
                        else {
                            return;
                        };
                        if start
                            .client_hello()
                            .alpn()
                            .is_some_and(|mut p| p.any(|p| p == b"h2"))
                        {
                            h2.lock().unwrap().push(n);
                        }
                        if let Ok(stream) = start.into_stream(config).await {
                            script(stream, seen).await;
                        }
                    });
                }
            }
        }
    });
    Scripted {
        url,
        heads,
        accepted,
        conns,
        offered_h2,
    }
}

/// Where a scripted connection records the heads it reads.
struct Seen {
    heads: Arc<Mutex<Vec<String>>>,
    conns: Arc<Mutex<Vec<usize>>>,
    conn: usize,
}

/// Answers each request on `stream` with the bytes its path names.
async fn script(mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, seen: Seen) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
        buf.drain(..end + 4);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        seen.heads.lock().unwrap().push(head);
        seen.conns.lock().unwrap().push(seen.conn);
        let answer: &[u8] = match path.as_str() {
            "/chunked" => CHUNKED.as_bytes(),
            "/close" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
            "/early" => b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\nX-Up: 2\r\n\r\n",
            "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            "/bad" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            "/bye" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        };
        if stream.write_all(answer).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        // `/bye` closes without saying so, as at a keep-alive timeout (over TLS, with a
        // close_notify).
        if path == "/close" || path == "/bad" || path == "/bye" {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// portvakt with one route, `/nav/` to `upstream`, plus the route lines in `extra`.
async fn lane_proxy(mock: &MockMaskinporten, upstream: &str, extra: &str) -> Running {
    let routes = format!(
        "  - name: nav\n    prefix: /nav/\n    upstream: {upstream}\n    client: vendor\n    scopes: [{SCOPE}]\n{extra}"
    );
    spawn_proxy(
        &config_yaml(&mock.issuer(), &mock.token_endpoint(), &routes),
        &[],
    )
    .await
}

#[tokio::test]
async fn chunked_early_hints_head_and_close_delimited_answers_pass_through() {
    let (up, (mock, _echo)) = (scripted().await, mock_and_upstream().await);
    let proxy = lane_proxy(&mock, &up.url, "").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();

    // Chunked: the body's bytes go through as they are, extensions and trailers included.
    caller
        .write_all(b"GET /nav/chunked HTTP/1.1\r\nHost: p\r\nX-Request-Id: lane-1\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, false).await;
    assert_eq!(a.status, 200);
    assert!(
        a.head.contains("transfer-encoding: chunked\n"),
        "{}",
        a.head
    );
    assert!(a.head.contains("x-up: 1\n") && a.head.contains("x-request-id: lane-1\n"));
    let sent = CHUNKED.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(String::from_utf8(a.body).unwrap(), sent);

    // A 103 is not relayed; the 204 after it is.
    caller
        .write_all(b"GET /nav/early HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, false).await;
    assert_eq!((a.status, a.body.len()), (204, 0));
    assert!(a.head.contains("x-up: 2\n"), "{}", a.head);

    // HEAD: the length is the GET's, and no body follows.
    caller
        .write_all(b"HEAD /nav/head HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, true).await;
    assert_eq!(a.status, 200);
    assert!(a.head.contains("content-length: 100\n"), "{}", a.head);

    // Two requests in one write are answered in order.
    caller
        .write_all(b"GET /nav/a HTTP/1.1\r\nHost: p\r\n\r\nGET /nav/b HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..2 {
        let a = read_answer(&mut caller, &mut buf, false).await;
        assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));
    }
    // All of it on one upstream connection, kept alive.
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);

    // Until the close: relayed, and the caller's connection closes after it.
    caller
        .write_all(b"GET /nav/close HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, false).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, b"until the close");
    assert!(a.head.contains("connection: close\n"), "{}", a.head);
    let mut rest = [0u8; 16];
    assert_eq!(caller.read(&mut rest).await.unwrap(), 0, "closed after");

    let heads = up.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 6);
    for head in &heads {
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("authorization: bearer "), "{head}");
        assert_eq!(lower.matches("x-request-id: ").count(), 1, "{head}");
    }
    assert!(heads[0].contains("x-request-id: lane-1\r\n"));
    assert!(heads[2].starts_with("HEAD /head HTTP/1.1\r\n"));
}

#[tokio::test]
async fn an_invalid_answer_is_502_and_counted_as_a_protocol_error() {
    let (up, (mock, _echo)) = (scripted().await, mock_and_upstream().await);
    let proxy = lane_proxy(&mock, &up.url, "").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    caller
        .write_all(b"GET /nav/bad HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, false).await;
    assert_eq!(a.status, 502);
    assert!(a.head.contains("content-type: application/problem+json\n"));
    let problem: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(problem["type"], "urn:portvakt:problem:upstream-failed");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("conflicting Content-Length"),
        "{problem}"
    );
    // The same to HEAD: the length of the problem, and no body, so the connection carries on.
    caller
        .write_all(b"HEAD /nav/bad HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, true).await;
    assert_eq!(a.status, 502);
    assert!(a.head.contains("content-length: "), "{}", a.head);
    caller
        .write_all(b"GET /nav/x HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, false).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));
    let m = metrics_text(&proxy).await;
    assert_eq!(
        metric_value(
            &m,
            r#"portvakt_upstream_errors_total{route="nav",kind="protocol"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &m,
            r#"portvakt_requests_total{route="nav",method="GET",status="502"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_connection_moves_to_hyper_when_a_body_comes_and_every_call_carries_a_valid_token() {
    let (mock, echo) = mock_and_upstream().await;
    let proxy = lane_proxy(&mock, &echo.url(), "").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    // The lane, then a body (hyper's from here on), then plain calls again on the same socket.
    caller
        .write_all(b"GET /nav/one HTTP/1.1\r\nHost: p\r\nAuthorization: Basic eA==\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut caller, &mut buf, false).await.status, 200);
    caller
        .write_all(b"POST /nav/two HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\nabc")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut caller, &mut buf, false).await.status, 200);
    caller
        .write_all(b"GET /nav/three HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let last = read_answer(&mut caller, &mut buf, false).await;
    assert_eq!(last.status, 200);
    assert!(last.head.contains("connection: close\n"), "{}", last.head);

    let records = echo.records();
    assert_eq!(records.len(), 3);
    for (r, path) in records.iter().zip(["/one", "/two", "/three"]) {
        assert_eq!(r.target, path);
        assert!(r.token_valid, "{path}: {:?}", r.token_error);
        assert!(r.headers.get("x-hop").is_none() && r.headers.get("connection").is_none());
    }
    assert_eq!(
        (records[1].method.as_str(), records[1].body_len),
        ("POST", 3)
    );
    assert_eq!(mock.token_requests(), 1);
}

#[tokio::test]
async fn a_head_sent_in_pieces_is_served_once_it_is_whole() {
    let (up, (mock, _echo)) = (scripted().await, mock_and_upstream().await);
    let proxy = lane_proxy(&mock, &up.url, "").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    for piece in ["GET /nav/pie", "ces HTTP/1.1\r\nHost: p\r", "\n\r", "\n"] {
        caller.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut buf = Vec::new();
    let a = read_answer(&mut caller, &mut buf, false).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));
    assert!(up.heads.lock().unwrap()[0].starts_with("GET /pieces HTTP/1.1\r\n"));
}

#[tokio::test]
async fn a_small_body_goes_through_the_lane_and_is_sent_again_after_a_401() {
    let (mock, echo) = mock_and_upstream().await;
    let proxy = lane_proxy(&mock, &echo.url(), "    idle_timeout_seconds: 1\n").await;
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
        assert_eq!(read_answer(&mut caller, &mut buf, false).await.status, 200);
    }
    // The upstream stops taking the token: the lane fetches a new one and sends the body again.
    echo.revoke_seen_tokens();
    caller.write_all(&post("third")).await.unwrap();
    assert_eq!(read_answer(&mut caller, &mut buf, false).await.status, 200);

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
    assert_eq!(
        metric_value(
            &metrics_text(&proxy).await,
            r#"portvakt_upstream_unauthorized_total{route="nav",result="retried"}"#
        ),
        Some(1.0)
    );

    // A body that stops coming: 408 within the route's idle timeout, and the connection closes.
    caller
        .write_all(b"PUT /nav/slow HTTP/1.1\r\nHost: p\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, false).await;
    assert_eq!(a.status, 408);
    assert!(a.head.contains("connection: close\n"), "{}", a.head);
    let problem: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(problem["type"], "urn:portvakt:problem:request-body-timeout");
    assert_eq!(
        echo.records().len(),
        4,
        "nothing of the stalled request went upstream"
    );
}

/// Three times on one caller connection: `/bye`, which the upstream answers and then closes the
/// connection the lane keeps, and a POST, which must not go on that connection since a POST
/// cannot be sent twice.
async fn bye_then_post(proxy: &Running) {
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..3 {
        caller
            .write_all(b"GET /nav/bye HTTP/1.1\r\nHost: p\r\n\r\n")
            .await
            .unwrap();
        let a = read_answer(&mut caller, &mut buf, false).await;
        assert_eq!((a.status, a.body.as_slice()), (200, &b"bye"[..]));
        tokio::time::sleep(Duration::from_millis(50)).await;
        caller
            .write_all(b"POST /nav/x HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\nhi")
            .await
            .unwrap();
        let a = read_answer(&mut caller, &mut buf, false).await;
        assert_eq!(
            (a.status, a.body.as_slice()),
            (200, &b"ok"[..]),
            "round {i}"
        );
    }
}

#[tokio::test]
async fn a_post_never_meets_a_kept_connection_the_upstream_closed() {
    let (up, (mock, _echo)) = (scripted().await, mock_and_upstream().await);
    let proxy = lane_proxy(&mock, &up.url, "").await;
    bye_then_post(&proxy).await;
    // Each `/bye` closes the connection the POST before it left kept: four in all.
    assert_eq!(up.accepted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn an_upstream_at_an_ipv6_literal_is_reached() {
    let (up, (mock, _echo)) = (scripted_on("[::1]:0").await, mock_and_upstream().await);
    assert!(up.url.starts_with("http://[::1]:"), "{}", up.url);
    let proxy = lane_proxy(&mock, &up.url, "").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    caller
        .write_all(b"GET /nav/v6 HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, false).await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));
    let head = up.heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        head.contains(&format!("host: {}\r\n", &up.url[7..up.url.len() - 1])),
        "{head}"
    );
}

/// Sends `request` on a new connection that closes after it, as a caller without keep-alive
/// does, and returns the answer once portvakt has closed the connection.
async fn call_once(proxy: &Running, request: &[u8]) -> Answer {
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    caller.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut caller, &mut buf, false).await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), caller.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    // portvakt leaves the upstream connection to the next caller just after it closes this one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    answer
}

#[tokio::test]
async fn callers_that_close_their_connections_share_upstream_connections() {
    let (mock, echo) = mock_and_upstream().await;
    let proxy = lane_proxy(&mock, &echo.url(), "").await;
    // The lane (GET, small POST) and hyper (HTTP/1.0, a chunked body) alike, each call on a
    // connection of its own.
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
async fn a_connection_left_by_a_caller_is_not_used_once_the_upstream_closed_it() {
    let (up, (mock, _echo)) = (scripted().await, mock_and_upstream().await);
    let proxy = lane_proxy(&mock, &up.url, "").await;
    // `/bye` answers and then closes the upstream connection, which its caller leaves to the
    // next; a POST after it, on the lane or through hyper, must go on a new connection.
    let posts: [&[u8]; 2] = [
        b"POST /nav/x HTTP/1.1\r\nHost: p\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
        b"POST /nav/x HTTP/1.0\r\nHost: p\r\nContent-Length: 2\r\n\r\nhi",
    ];
    for (i, post) in posts.iter().enumerate() {
        let a = call_once(
            &proxy,
            b"GET /nav/bye HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!((a.status, a.body.as_slice()), (200, &b"bye"[..]));
        let a = call_once(&proxy, post).await;
        assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]), "post {i}");
    }
    // The first POST's connection went on to the second `/bye`, which closed it: three in all.
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
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
    let proxy = lane_proxy(&mock, &echo.url(), extra).await;
    (mock, echo, proxy)
}

const TRUSTED: &str = "    ca_file: test-ca.pem\n";

/// Two callers, each keeping its connection, call in turns: on each caller's own upstream
/// connection (the lane), or all on one (the pooled client, one call at a time).
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
            assert_eq!(read_answer(caller, &mut buf, false).await.status, 200);
        }
    }
}

#[tokio::test]
async fn an_https_upstream_that_speaks_http1_only_is_served_on_each_callers_own_connection() {
    let (mock, echo, proxy) = https_upstream(&[b"http/1.1"], TRUSTED).await;
    each_caller_on_its_own_connection(&mock, &echo, &proxy).await;
}

#[tokio::test]
async fn upstream_http2_false_keeps_http1_with_an_upstream_that_offers_http2() {
    let (mock, echo, proxy) = https_upstream(
        &[b"h2", b"http/1.1"],
        &format!("{TRUSTED}    upstream_http2: false\n"),
    )
    .await;
    each_caller_on_its_own_connection(&mock, &echo, &proxy).await;
    // A chunked body goes through hyper and the pooled client: HTTP/1.1 there too.
    let post = call_once(&proxy, b"POST /nav/chunked HTTP/1.1\r\nHost: p\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n").await;
    assert_eq!(post.status, 200);
    let last = echo.records().pop().unwrap();
    assert_eq!(
        (last.target.as_str(), last.version),
        ("/chunked", http::Version::HTTP_11)
    );
}

/// A first call, then two callers in turns, each on its own HTTP/1.1 upstream connection.
async fn each_caller_on_its_own_connection(
    mock: &MockMaskinporten,
    echo: &EchoUpstream,
    proxy: &Running,
) {
    // However the first call goes, it (or the handshake at start) shows the upstream offers no
    // HTTP/2; the calls after it take the lane.
    let first = call_once(
        proxy,
        b"GET /nav/first HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(first.status, 200);
    two_callers_in_turns(proxy).await;
    let records = echo.records();
    assert_eq!(records.len(), 5);
    for r in &records {
        assert!(r.token_valid, "{}: {:?}", r.target, r.token_error);
        assert_eq!(r.version, http::Version::HTTP_11);
        assert_eq!(r.headers["host"], echo.addr().to_string());
    }
    let peer = |target: &str| records.iter().find(|r| r.target == target).unwrap().peer;
    assert_eq!(peer("/0/0"), peer("/0/1"), "caller 0 keeps its connection");
    assert_eq!(peer("/1/0"), peer("/1/1"), "caller 1 keeps its connection");
    assert_ne!(peer("/0/0"), peer("/1/0"), "each caller has its own");
    assert_eq!(mock.token_requests(), 1);
}

#[tokio::test]
async fn an_https_upstream_that_offers_http2_is_still_reached_over_it() {
    let (_mock, echo, proxy) = https_upstream(&[b"h2", b"http/1.1"], TRUSTED).await;
    let first = call_once(
        &proxy,
        b"GET /nav/first HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(first.status, 200);
    two_callers_in_turns(&proxy).await;
    let records = echo.records();
    assert_eq!(records.len(), 5);
    for r in &records {
        assert!(r.token_valid, "{}: {:?}", r.target, r.token_error);
        assert_eq!(r.version, http::Version::HTTP_2, "{}", r.target);
    }
}

#[tokio::test]
async fn a_post_never_meets_a_kept_tls_connection_the_upstream_closed() {
    let (cert, key) = tls_files();
    let tls = portvakt::mock::tls_acceptor_offering(&cert, &key, &[b"http/1.1"]).unwrap();
    let (up, (mock, _echo)) = (
        scripted_with("127.0.0.1:0", Some(tls), Duration::ZERO).await,
        mock_and_upstream().await,
    );
    let proxy = lane_proxy(&mock, &up.url, "    ca_file: test-ca.pem\n").await;
    let first = call_once(
        &proxy,
        b"GET /nav/first HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(first.status, 200);
    // As over plain TCP, the close coming as a close_notify.
    bye_then_post(&proxy).await;
    let posts = up
        .heads
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.starts_with("POST /x "))
        .count();
    assert_eq!(posts, 3, "each POST sent once");
}

#[tokio::test]
async fn the_lanes_tls_verifies_the_upstream_as_the_pooled_client_does() {
    // `upstream_http2: false` puts the route on the lane from the start; without `ca_file`, the
    // test CA is not trusted, so the lane's own handshake must fail as the pooled client's does.
    let (_mock, echo, proxy) = https_upstream(&[b"http/1.1"], "    upstream_http2: false\n").await;
    let mut caller = TcpStream::connect(proxy.listen).await.unwrap();
    let mut buf = Vec::new();
    caller
        .write_all(b"GET /nav/x HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut caller, &mut buf, false).await;
    assert_eq!(a.status, 502);
    let problem: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("certificate"),
        "{problem}"
    );
    assert!(echo.records().is_empty(), "nothing reached the upstream");
    let m = metrics_text(&proxy).await;
    assert_eq!(
        metric_value(
            &m,
            r#"portvakt_upstream_errors_total{route="nav",kind="tls"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn callers_that_come_while_the_upstream_is_asked_about_http2_wait_and_take_the_lane() {
    let (cert, key) = tls_files();
    let tls = portvakt::mock::tls_acceptor_offering(&cert, &key, &[b"http/1.1"]).unwrap();
    // The handshake portvakt makes at start to learn whether the upstream offers HTTP/2 is held
    // back a second; the callers come at once.
    let (up, (mock, _echo)) = (
        scripted_with("127.0.0.1:0", Some(tls), Duration::from_secs(1)).await,
        mock_and_upstream().await,
    );
    let proxy = lane_proxy(&mock, &up.url, "    ca_file: test-ca.pem\n").await;
    two_callers_in_turns(&proxy).await;
    // They waited for it and took the lane: the first caller on the probe's connection (which
    // offered HTTP/2, and got HTTP/1.1), the second on one of the lane's, which offer HTTP/1.1
    // only. The pooled client's connections offer HTTP/2 as well.
    let conns = up.conns.lock().unwrap().clone();
    assert_eq!(conns, [1, 2, 1, 2]);
    assert_eq!(
        *up.offered_h2.lock().unwrap(),
        [1],
        "only the probe offered HTTP/2"
    );
}
