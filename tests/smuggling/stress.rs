//! The timing stress of issue 27: callers that each play random requests on their connections,
//! with random writes and pauses around the park timer, and a judge of what reached the upstream
//! and what each caller read.

use crate::common::sha256_hex;
use crate::common::wire::{read_answer, Answer, Recorder};
use rustls_pki_types::pem::PemObject as _;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Plain,
    Tls,
}

pub trait Wire: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Wire for T {}

/// A caller's connection to portvakt: plain, or TLS (HTTP/1.1 by ALPN) trusting the test CA.
pub async fn connect(listener: Listener, addr: SocketAddr) -> Box<dyn Wire> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    if listener == Listener::Plain {
        return Box::new(tcp);
    }
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(crate::common::fixtures().join("test-ca.pem")).unwrap();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    Box::new(tls)
}

/// What the callers framed, what they read, and what went wrong.
#[derive(Default)]
pub struct Judge {
    /// Upstream target to the digest of the body its caller framed, for every request a caller
    /// sent whole (each target is used once).
    framed: Mutex<HashMap<String, String>>,
    failures: Mutex<Vec<String>>,
    places: Mutex<HashMap<String, String>>,
    requests: AtomicUsize,
    answers: AtomicUsize,
    attacks: AtomicUsize,
    /// Connections portvakt closed, by what they carried last.
    closes: Mutex<HashMap<String, usize>>,
}

impl Judge {
    fn framed(&self, target: &str, body: &[u8]) {
        self.framed
            .lock()
            .unwrap()
            .insert(target.to_string(), sha256_hex(body));
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Where each caller is, for a caller that hangs.
    fn at(&self, id: &str, kind: u8) {
        let caller = id.split('-').next().unwrap_or(id).to_string();
        self.places
            .lock()
            .unwrap()
            .insert(caller, format!("{id} kind {kind}"));
    }

    pub fn place(&self, caller: usize) -> Option<String> {
        self.places
            .lock()
            .unwrap()
            .get(&format!("c{caller}"))
            .cloned()
    }

    fn fail(&self, why: String) {
        self.failures.lock().unwrap().push(why);
    }

    /// Panics with every failure; else the figures of the run.
    pub fn verdict(&self, up: &Recorder) -> String {
        let framed = self.framed.lock().unwrap().clone();
        let mut failures = self.failures.lock().unwrap().clone();
        let received = up.received();
        let mut seen = HashSet::new();
        for r in &received {
            match framed.get(&r.target) {
                None => failures.push(format!(
                    "the upstream got a request no caller framed: {} {}",
                    r.method, r.target
                )),
                Some(digest) if *digest != sha256_hex(&r.body) => failures.push(format!(
                    "{} reached the upstream with another body",
                    r.target
                )),
                Some(_) => {}
            }
            if !seen.insert(r.target.clone()) {
                failures.push(format!("{} reached the upstream twice", r.target));
            }
        }
        failures.extend(up.violations());
        assert!(
            failures.is_empty(),
            "{} failures, first ones: {:#?}",
            failures.len(),
            &failures[..failures.len().min(20)]
        );
        let closes = self.closes.lock().unwrap().clone();
        format!(
            "{} requests framed, {} answers checked, {} cut bodies with a request after them, {} connections closed by portvakt {:?}, {} requests upstream, {} aborted upstream, 0 failures",
            self.requests.load(Ordering::Relaxed),
            self.answers.load(Ordering::Relaxed),
            self.attacks.load(Ordering::Relaxed),
            closes.values().sum::<usize>(),
            closes,
            received.len(),
            up.aborted.lock().unwrap().len(),
        )
    }
}

/// Where a request goes upstream: answered 200 with its target, 404 on its head, or too late.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Echo,
    Early404,
    Late,
}

impl Target {
    fn path(self, id: &str) -> String {
        match self {
            Target::Echo => id.to_string(),
            Target::Early404 => format!("early404/{id}"),
            Target::Late => format!("late/{id}"),
        }
    }

    fn status(self) -> u16 {
        match self {
            Target::Echo => 200,
            Target::Early404 => 404,
            Target::Late => 504,
        }
    }
}

/// How a body is framed.
#[derive(Clone, Copy)]
enum Framing {
    None,
    Length,
    /// Chunks of one byte when true.
    Chunked(bool),
}

/// A body that carries text that would parse as requests, were its framing lost.
fn hostile_body(rng: &mut fastrand::Rng, id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..rng.usize(1..=4) {
        body.extend_from_slice(
            match rng.u8(0..4) {
                0 => format!("GET /nav/smuggled-{id} HTTP/1.1\r\nHost: p\r\n\r\n"),
                1 => format!("0\r\n\r\nPOST /nav/smuggled-{id} HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\n\r\n"),
                2 => "\r\n\r\n".to_string(),
                _ => "x".repeat(rng.usize(1..300)),
            }
            .as_bytes(),
        );
    }
    body
}

/// The body as framed on the wire.
fn frame(body: &[u8], framing: Framing, rng: &mut fastrand::Rng) -> (String, Vec<u8>) {
    match framing {
        Framing::None => (String::new(), Vec::new()),
        Framing::Length => (format!("Content-Length: {}\r\n", body.len()), body.to_vec()),
        Framing::Chunked(one_byte) => {
            let mut wire = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                let n = if one_byte {
                    1
                } else {
                    rng.usize(1..=rest.len().min(700))
                };
                wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            ("Transfer-Encoding: chunked\r\n".to_string(), wire)
        }
    }
}

/// A pause around the park timer (50 ms): none, a little, near it, or past it.
fn pause(rng: &mut fastrand::Rng) -> Duration {
    Duration::from_millis(match rng.u8(0..4) {
        0 => 0,
        1 => rng.u64(1..=10),
        2 => rng.u64(40..=60),
        _ => rng.u64(100..=150),
    })
}

/// Writes `bytes` at once, or in up to four pieces with pauses between them.
async fn send(s: &mut Box<dyn Wire>, bytes: &[u8], rng: &mut fastrand::Rng) -> bool {
    let pieces = if rng.bool() { 1 } else { rng.usize(2..=4) };
    let mut at = 0;
    for piece in 0..pieces {
        let end = if piece + 1 == pieces {
            bytes.len()
        } else {
            rng.usize(at..=bytes.len())
        };
        if s.write_all(&bytes[at..end]).await.is_err() || s.flush().await.is_err() {
            return false;
        }
        at = end;
        if piece + 1 < pieces {
            tokio::time::sleep(pause(rng)).await;
        }
    }
    true
}

/// The longest a caller waits for an answer before it counts as lost: far past the slowest
/// answer here (a route timeout of 1 s), so that a busy machine does not fail the run.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// What came back for a request.
enum Got {
    Answer(Answer),
    /// portvakt closed the connection before an answer's head (a legitimate end of a keep-alive
    /// connection, RFC 9112 section 9.3.1: the caller may send the request again).
    Closed,
    /// Nothing within the bound.
    Silent,
}

/// The next answer, within a bound.
async fn answer(conn: &mut Conn, within: Duration) -> Got {
    match timeout(within, read_answer(&mut conn.s, &mut conn.buf, false)).await {
        Ok(Some(a)) => Got::Answer(a),
        Ok(None) => Got::Closed,
        Err(_) => Got::Silent,
    }
}

struct Conn {
    s: Box<dyn Wire>,
    buf: Vec<u8>,
    /// What the connection carried before, and carries now, for telling why portvakt closed it.
    last: &'static str,
    now: &'static str,
}

/// What the caller does after a request.
enum Next {
    Go,
    /// The connection is done with (closed, or left with a cut body).
    Stop,
}

/// One caller: connections of one to four random requests each, until `run` is over.
pub async fn caller(n: usize, listener: Listener, addr: SocketAddr, run: Duration, judge: &Judge) {
    let mut rng = fastrand::Rng::new();
    let deadline = Instant::now() + run;
    let mut seq = 0;
    while Instant::now() < deadline {
        let mut conn = Conn {
            s: connect(listener, addr).await,
            buf: Vec::new(),
            last: "nothing",
            now: "nothing",
        };
        for _ in 0..rng.usize(1..=4) {
            seq += 1;
            let id = format!("c{n}-r{seq}");
            if let Next::Stop = play(&mut conn, &id, &mut rng, judge).await {
                break;
            }
            if rng.u8(0..3) == 0 {
                tokio::time::sleep(pause(&mut rng)).await;
            }
        }
    }
}

/// Checks one answer against what its request expects.
fn check(judge: &Judge, id: &str, got: &Answer, status: u16, path: &str) -> bool {
    judge.answers.fetch_add(1, Ordering::Relaxed);
    let mut wrong = Vec::new();
    if got.status != status {
        wrong.push(format!("status {} (expected {status})", got.status));
    }
    if got.header("x-request-id") != Some(id) {
        wrong.push(format!("x-request-id {:?}", got.header("x-request-id")));
    }
    if status == 200 && got.body != format!("/api/{path}").as_bytes() {
        wrong.push(format!("body {:?}", String::from_utf8_lossy(&got.body)));
    }
    if wrong.is_empty() {
        return true;
    }
    judge.fail(format!(
        "{id} ({path}) got another answer: {}; {}",
        wrong.join(", "),
        got.head
    ));
    false
}

async fn play(conn: &mut Conn, id: &str, rng: &mut fastrand::Rng, judge: &Judge) -> Next {
    let kind = rng.u8(0..16);
    judge.at(id, kind);
    conn.last = conn.now;
    conn.now = ["whole", "pipelined", "too large", "cut"][match kind {
        0..=7 => 0,
        8 | 9 => 1,
        10 | 11 => 2,
        _ => 3,
    }];
    match kind {
        0..=7 => whole(conn, id, rng, judge).await,
        8 | 9 => pipelined(conn, id, rng, judge).await,
        10 | 11 => too_large(conn, id, rng, judge).await,
        _ => cut(conn, id, rng, judge).await,
    }
}

/// One request sent whole, its body streamed with pauses, perhaps after `Expect: 100-continue`.
async fn whole(conn: &mut Conn, id: &str, rng: &mut fastrand::Rng, judge: &Judge) -> Next {
    let target = match rng.u8(0..8) {
        0 | 1 => Target::Early404,
        2 => Target::Late,
        _ => Target::Echo,
    };
    let framing = match rng.u8(0..4) {
        0 => Framing::None,
        1 => Framing::Length,
        _ => Framing::Chunked(rng.bool()),
    };
    let body = match framing {
        Framing::None => Vec::new(),
        _ => hostile_body(rng, id),
    };
    let path = target.path(id);
    let (framing_line, wire) = frame(&body, framing, rng);
    let expect = !wire.is_empty() && rng.u8(0..4) == 0;
    let method = if wire.is_empty() { "GET" } else { "POST" };
    let head =
        format!(
        "{method} /nav/{path} HTTP/1.1\r\nHost: p\r\nx-request-id: {id}\r\n{framing_line}{}\r\n",
        if expect { "Expect: 100-continue\r\n" } else { "" }
    );
    judge.framed(&format!("/api/{path}"), &body);
    if expect {
        if !send(&mut conn.s, head.as_bytes(), rng).await {
            return closed(judge, conn);
        }
        match answer(conn, Duration::from_secs(3)).await {
            Got::Answer(a) if a.status == 100 => {}
            Got::Answer(a) => {
                // A final answer before the body was asked for: the body is never sent.
                check(judge, id, &a, target.status(), &path);
                return Next::Stop;
            }
            Got::Closed => return closed(judge, conn),
            Got::Silent => {
                judge.fail(format!("{id}: no 100 Continue nor an answer"));
                return Next::Stop;
            }
        }
        if !send(&mut conn.s, &wire, rng).await {
            return closed(judge, conn);
        }
    } else {
        let mut all = head.into_bytes();
        all.extend_from_slice(&wire);
        if !send(&mut conn.s, &all, rng).await {
            return closed(judge, conn);
        }
    }
    match answer(conn, ANSWER_WITHIN).await {
        Got::Answer(a) => match check(judge, id, &a, target.status(), &path) {
            true => Next::Go,
            false => Next::Stop,
        },
        Got::Closed => closed(judge, conn),
        Got::Silent => {
            judge.fail(format!("{id} ({path}): no answer"));
            Next::Stop
        }
    }
}

/// Two requests in one stream of writes; two answers, in order.
async fn pipelined(conn: &mut Conn, id: &str, rng: &mut fastrand::Rng, judge: &Judge) -> Next {
    let mut all = Vec::new();
    let mut ids = Vec::new();
    for k in 0..2 {
        let id = format!("{id}-p{k}");
        let body = if rng.bool() {
            hostile_body(rng, &id)
        } else {
            Vec::new()
        };
        let framing = if body.is_empty() {
            Framing::None
        } else if rng.bool() {
            Framing::Length
        } else {
            Framing::Chunked(rng.bool())
        };
        let (line, wire) = frame(&body, framing, rng);
        let method = if body.is_empty() { "GET" } else { "POST" };
        all.extend_from_slice(
            format!("{method} /nav/{id} HTTP/1.1\r\nHost: p\r\nx-request-id: {id}\r\n{line}\r\n")
                .as_bytes(),
        );
        all.extend_from_slice(&wire);
        judge.framed(&format!("/api/{id}"), &body);
        ids.push(id);
    }
    if !send(&mut conn.s, &all, rng).await {
        return closed(judge, conn);
    }
    for id in &ids {
        match answer(conn, ANSWER_WITHIN).await {
            Got::Answer(a) if check(judge, id, &a, 200, id) => {}
            Got::Answer(_) => return Next::Stop,
            Got::Closed => return closed(judge, conn),
            Got::Silent => {
                judge.fail(format!("{id}: no answer to a pipelined request"));
                return Next::Stop;
            }
        }
    }
    Next::Go
}

/// A body over the route's 4,096 bytes: 413, by its length or once its chunks pass the limit.
/// portvakt may close the connection after it (it need not read what it refused).
async fn too_large(conn: &mut Conn, id: &str, rng: &mut fastrand::Rng, judge: &Judge) -> Next {
    let mut body = hostile_body(rng, id);
    body.extend(std::iter::repeat_n(b'y', 4200));
    let framing = if rng.bool() {
        Framing::Length
    } else {
        Framing::Chunked(false)
    };
    let (line, wire) = frame(&body, framing, rng);
    let mut all =
        format!("POST /small/{id} HTTP/1.1\r\nHost: p\r\nx-request-id: {id}\r\n{line}\r\n")
            .into_bytes();
    all.extend_from_slice(&wire);
    judge.framed(&format!("/api/{id}"), &body);
    let sent = send(&mut conn.s, &all, rng).await;
    match answer(conn, ANSWER_WITHIN).await {
        Got::Answer(a) => match check(judge, id, &a, 413, id) && sent {
            true => Next::Go,
            false => Next::Stop,
        },
        // Closed with unread bytes, the answer may be lost to the reset.
        Got::Closed | Got::Silent => closed(judge, conn),
    }
}

/// Issue 27's attack at a random moment: a body that never ends, its answer (early 404 or 504),
/// a pause, then what would be a request if the body's framing were lost. It must get no answer.
async fn cut(conn: &mut Conn, id: &str, rng: &mut fastrand::Rng, judge: &Judge) -> Next {
    judge.attacks.fetch_add(1, Ordering::Relaxed);
    let target = if rng.u8(0..3) == 0 {
        Target::Late
    } else {
        Target::Early404
    };
    let path = target.path(id);
    let body = hostile_body(rng, id);
    let chunked = rng.bool();
    let mut all = if chunked {
        let (line, mut wire) = frame(&body, Framing::Chunked(rng.bool()), rng);
        wire.truncate(wire.len() - 5);
        let mut all =
            format!("POST /nav/{path} HTTP/1.1\r\nHost: p\r\nx-request-id: {id}\r\n{line}\r\n")
                .into_bytes();
        all.extend_from_slice(&wire);
        all
    } else {
        let mut all = format!(
            "POST /nav/{path} HTTP/1.1\r\nHost: p\r\nx-request-id: {id}\r\nContent-Length: {}\r\n\r\n",
            body.len() + 100_000
        )
        .into_bytes();
        all.extend_from_slice(&body);
        all
    };
    if !send(&mut conn.s, &all, rng).await {
        return closed(judge, conn);
    }
    match answer(conn, ANSWER_WITHIN).await {
        Got::Answer(a) => {
            check(judge, id, &a, target.status(), &path);
        }
        Got::Closed => return closed(judge, conn),
        Got::Silent => {
            judge.fail(format!("{id} ({path}): no answer before the cut"));
            return Next::Stop;
        }
    }
    tokio::time::sleep(Duration::from_millis(rng.u64(0..=300))).await;
    all = format!(
        "GET /nav/smuggled-{id} HTTP/1.1\r\nHost: p\r\nx-request-id: smuggled-{id}\r\n\r\n"
    )
    .into_bytes();
    if !send(&mut conn.s, &all, rng).await {
        return Next::Stop;
    }
    if let Got::Answer(a) = answer(conn, Duration::from_millis(700)).await {
        judge.fail(format!(
            "{id}: the rest of a cut body was answered as a request: {} {}",
            a.status, a.head
        ));
    }
    Next::Stop
}

fn closed(judge: &Judge, conn: &Conn) -> Next {
    let key = format!("{} then {}", conn.last, conn.now);
    *judge.closes.lock().unwrap().entry(key).or_default() += 1;
    Next::Stop
}
