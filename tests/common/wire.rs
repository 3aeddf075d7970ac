//! Both ends of the wire, as raw bytes: a recording upstream that parses every request strictly and
//! keeps the exact bytes it got on each connection, and a reader for portvakt's answers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the upstream read it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The connection it came on, 1 for the first.
    pub conn: usize,
    /// Every byte of it, head and framed body, exactly as sent.
    pub raw: Vec<u8>,
    pub method: String,
    pub target: String,
    /// Names lower-cased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body with its framing taken off.
    pub body: Vec<u8>,
}

impl Received {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }
}

/// A recording upstream. Anything not strictly HTTP/1.1 (a bare LF or CR, a length beside a
/// coding, two lengths, a coding other than chunked, a malformed chunk) is a violation: recorded
/// with the bytes that showed it, and the connection is closed. A connection that ends inside a
/// request is recorded as aborted.
#[derive(Clone)]
pub struct Recorder {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub violations: Arc<Mutex<Vec<String>>>,
    /// Requests whose connection ended before they were whole.
    pub aborted: Arc<Mutex<Vec<String>>>,
    pub accepted: Arc<AtomicUsize>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Recorder {
        let listener = TcpListener::bind(addr).await.unwrap();
        let recorder = Recorder {
            url: format!("http://{}/", listener.local_addr().unwrap()),
            received: Arc::default(),
            violations: Arc::default(),
            aborted: Arc::default(),
            accepted: Arc::default(),
        };
        let r = recorder.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = r.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(r.clone().serve(stream, conn));
            }
        });
        recorder
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn serve(self, mut stream: impl AsyncRead + AsyncWrite + Unpin, conn: usize) {
        let mut buf = Vec::new();
        loop {
            let request = match read_request(&mut stream, &mut buf, conn).await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                // A connection that ends mid-request is an abort (portvakt gives up a call whose
                // caller broke off its body), not a malformed request.
                Err(problem) if problem.starts_with("aborted: ") => {
                    self.aborted.lock().unwrap().push(problem);
                    return;
                }
                Err(violation) => {
                    self.violations.lock().unwrap().push(violation);
                    return;
                }
            };
            let target = request.target.clone();
            self.received.lock().unwrap().push(request);
            if target.contains("/early404") {
                // Answered as soon as its head was read (read_request).
                continue;
            }
            let answer = answer_for(&target).await;
            if stream.write_all(&answer).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            if matches!(target.as_str(), "/close" | "/bad" | "/bye") {
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// What the upstream answers: by the target, else 200 with the target as its body, so that every
/// caller can tell its own answer.
async fn answer_for(target: &str) -> Vec<u8> {
    let fixed: &[u8] = match target {
        "/chunked" => CHUNKED.as_bytes(),
        "/close" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
        "/early" => b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\nX-Up: 2\r\n\r\n",
        "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        "/bad" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "/bye" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye",
        "/twice" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        "/401" => b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
        _ => b"",
    };
    if !fixed.is_empty() {
        return fixed.to_vec();
    }
    if target.starts_with("/slow") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if target.contains("/unasked") {
        // Right behind the answer, in the same write: an answer no request asked for.
        let own = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{target}",
            target.len()
        );
        return format!("{own}HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale").into_bytes();
    }
    if target.contains("/late") {
        // Past a route's one-second timeout: the caller gets 504, and portvakt reads this answer
        // of an abandoned exchange.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        target.len()
    )
    .into_bytes();
    answer.extend_from_slice(target.as_bytes());
    answer
}

pub const CHUNKED: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";

/// Reads more into `buf`; false at the end of the stream.
async fn fill(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

/// Reads one request, strictly. `Ok(None)`: the connection ended cleanly between requests. A
/// target with `/early404` is answered 404 as soon as its head is read, and its body is then read
/// and dropped, as Tomcat, Go's net/http and nginx do after an early answer.
async fn read_request(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    buf: &mut Vec<u8>,
    conn: usize,
) -> Result<Option<Received>, String> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(stream, buf).await {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(format!(
                    "connection {conn} ended inside a head: {:?}",
                    lossy(buf)
                ))
            };
        }
    };
    let head = buf[..head_end].to_vec();
    let bad = |why: &str| Err(format!("{why}: {:?}", lossy(&head)));
    // CRLF only: every LF follows a CR, every CR comes before an LF.
    for (i, b) in head.iter().enumerate() {
        if (*b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
            || (*b == b'\r' && head.get(i + 1) != Some(&b'\n'))
        {
            return bad("a bare CR or LF in the head");
        }
    }
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(n)) if n == head_end => {}
        _ => return bad("not a valid request head"),
    }
    if parsed.version != Some(1) {
        return bad("not HTTP/1.1");
    }
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let (method, target) = (
        parsed.method.unwrap_or_default().to_string(),
        parsed.path.unwrap_or_default().to_string(),
    );
    let lengths: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    let codings: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v.as_str())
        .collect();
    if target.contains("/early404") {
        let early = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found";
        if stream.write_all(early).await.is_err() || stream.flush().await.is_err() {
            return Err(format!(
                "aborted: the early answer to {target} could not be sent"
            ));
        }
    }
    let mut at = head_end;
    let body = match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Vec::new(),
        ([len], []) => {
            let Some(len) = len
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| len.parse::<usize>().ok())
                .flatten()
            else {
                return bad("a Content-Length that is not a number");
            };
            while buf.len() < head_end + len {
                if !fill(stream, buf).await {
                    return bad("aborted: the body ended before its length");
                }
            }
            at = head_end + len;
            buf[head_end..at].to_vec()
        }
        ([], ["chunked"]) => {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                        break at + i;
                    }
                    if !fill(stream, buf).await {
                        return bad("aborted: the chunked body ended early");
                    }
                };
                let size_text = std::str::from_utf8(&buf[at..line_end]).unwrap_or("?");
                let Ok(size) = usize::from_str_radix(size_text, 16) else {
                    return Err(format!(
                        "a malformed chunk size {size_text:?} after {:?}",
                        lossy(&head)
                    ));
                };
                at = line_end + 2;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        let end = loop {
                            if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                                break at + i;
                            }
                            if !fill(stream, buf).await {
                                return bad("aborted: the trailers ended early");
                            }
                        };
                        let empty = end == at;
                        at = end + 2;
                        if empty {
                            break;
                        }
                    }
                    break body;
                }
                while buf.len() < at + size + 2 {
                    if !fill(stream, buf).await {
                        return bad("aborted: a chunk ended early");
                    }
                }
                if &buf[at + size..at + size + 2] != b"\r\n" {
                    return bad("a chunk not ended by CRLF");
                }
                body.extend_from_slice(&buf[at..at + size]);
                at += size + 2;
            }
        }
        _ => return bad("framed twice, or by a coding other than chunked"),
    };
    let raw: Vec<u8> = buf.drain(..at).collect();
    Ok(Some(Received {
        conn,
        raw,
        method,
        target,
        headers,
        body,
    }))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An answer read off a raw socket: status, head (names lower-cased, `name: value\n` lines), body
/// as sent on the wire.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }
}

/// Reads one answer: by Content-Length, chunked (decoded), or to the close. `buf` keeps what
/// arrived beyond it. None when the connection closed before a head.
pub async fn read_answer(
    s: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    head_request: bool,
) -> Option<Answer> {
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
        if !fill(s, buf).await {
            return None;
        }
    };
    let head: String = headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    buf.drain(..head_len);
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    if head_request || status < 200 || status == 204 || status == 304 {
        return Some(Answer {
            status,
            head,
            body: Vec::new(),
        });
    }
    if get("transfer-encoding").is_some() {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(fill(s, buf).await, "the answer's chunks ended early");
            };
            let size = std::str::from_utf8(&buf[..line_end]).unwrap();
            let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
            buf.drain(..line_end + 2);
            if size == 0 {
                while !buf.starts_with(b"\r\n") {
                    let end = buf.windows(2).position(|w| w == b"\r\n");
                    match end {
                        Some(end) => drop(buf.drain(..end + 2)),
                        None => assert!(fill(s, buf).await, "the answer's trailers ended early"),
                    }
                }
                buf.drain(..2);
                return Some(Answer { status, head, body });
            }
            while buf.len() < size + 2 {
                assert!(fill(s, buf).await, "a chunk of the answer ended early");
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
        }
    }
    let body = match get("content-length") {
        Some(n) => {
            let n: usize = n.parse().unwrap();
            while buf.len() < n {
                assert!(fill(s, buf).await, "the answer ended before its length");
            }
            buf.drain(..n).collect()
        }
        None => {
            while fill(s, buf).await {}
            std::mem::take(buf)
        }
    };
    Some(Answer { status, head, body })
}

/// Whether portvakt closed `s` (nothing more comes, the end is read) within a second.
pub async fn closed(s: &mut TcpStream) -> bool {
    let mut rest = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read(&mut rest)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}
