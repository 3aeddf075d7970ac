//! The fast lane: a plain HTTP/1.1 caller's requests with no body, or one small enough to keep for
//! the 401 retry (`retry_body_max_bytes`), to a plain-HTTP upstream
//! reached directly, served on the caller's own connection and an upstream connection of its own,
//! without hyper. hyper's server and client, with a future, a header map and a body wrapper per
//! request, cost several times the proxying itself (docs/performance.md).
//!
//! The lane reads a head, and only when it is one the lane serves (a route with a local target,
//! a caller let in, a body of known length within the route's limits, no upgrade) does it do
//! anything. Every other connection goes to
//! hyper and the general path (`proxy.rs`) with the bytes read so far, before anything was done
//! for it: refusals, bodies, HTTP/2 and every answer of the general path hold unchanged. The
//! token, the header rules, the 401 retry, the metrics and the access line are the general path's.

mod head;
mod response;
mod rewind;

pub use rewind::Rewind;

use crate::affinity::{LocalTarget, ParkTicket};
use crate::error::ProxyError;
use crate::metrics::RetryLabels;
use crate::proxy::Proxy;
use crate::request_id;
use crate::route::{self, Route};
use crate::token::cache::TokenSlot;
use crate::upstream::Fault;
use head::Parsed;
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method};
use response::{Answer, Framing, Rewrite};
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{timeout, timeout_at, Instant};

/// How long a caller may take to send a request head, idle keep-alive time included: hyper's
/// `header_read_timeout` in `server.rs`.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head the lane reads; a larger one goes to hyper and its configured limit.
const MAX_HEAD: usize = 16 * 1024;
/// The largest answer head the lane takes from an upstream (cookies and the like); larger is a 502.
const MAX_ANSWER_HEAD: usize = 64 * 1024;
const BUF: usize = 8 * 1024;
/// What a long body streams through.
const STREAM_BUF: usize = 64 * 1024;

/// How a connection left the lane.
pub enum Outcome {
    Closed,
    /// hyper serves the rest of the connection, starting with the bytes the lane read.
    Hyper(Rewind),
}

/// Serves `stream` until it closes or portvakt stops, or hands it to hyper. `max_head` is
/// `inbound.max_header_bytes` (0 for hyper's default).
pub async fn serve(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    max_head: usize,
    mut shutdown: watch::Receiver<bool>,
) -> Outcome {
    let max_head = if max_head == 0 {
        MAX_HEAD
    } else {
        max_head.min(MAX_HEAD)
    };
    let mut caller = Caller {
        stream,
        buf: Vec::new(),
    };
    let mut upstream: Option<Upstream> = None;
    let mut buffers = Buffers::default();
    loop {
        let deadline = Instant::now() + HEAD_TIMEOUT;
        // How far the buffer was searched for the head's end: a head sent a byte at a time is
        // parsed once, not once per byte.
        let mut searched = 0;
        let (started, request) = loop {
            if !caller.buf.is_empty() {
                let started = std::time::Instant::now();
                let prepared = if head::ends(&caller.buf, searched) {
                    buffers.ready();
                    prepare(&proxy, &caller.buf, peer.ip(), &mut buffers.request)
                } else {
                    Prepared::Partial
                };
                searched = caller.buf.len();
                match prepared {
                    Prepared::Ready(request) => break (started, request),
                    Prepared::Partial if caller.buf.len() < max_head => {}
                    Prepared::Partial | Prepared::Hyper => {
                        return Outcome::Hyper(Rewind::new(caller.buf, caller.stream));
                    }
                }
            } else {
                // An idle connection holds no buffers; ten thousand idle callers cost little.
                buffers.give_back();
                pool::give(std::mem::take(&mut caller.buf));
                if *shutdown.borrow() {
                    return Outcome::Closed;
                }
            }
            let idle = caller.buf.is_empty();
            tokio::select! {
                biased;
                ready = timeout_at(deadline, caller.stream.readable()) => match ready {
                    Ok(Ok(())) => {}
                    // A caller that sends no complete head in time, or a broken socket: closed.
                    Ok(Err(_)) | Err(_) => return Outcome::Closed,
                },
                _ = shutdown.changed(), if idle => return Outcome::Closed,
            }
            if caller.buf.capacity() == 0 {
                caller.buf = pool::take();
            }
            caller
                .buf
                .reserve(BUF.min(max_head + 1 - caller.buf.len()).max(1));
            let read = if idle {
                // tokio takes a new socket for readable before it knows: a read that would wait
                // gives its buffer back and waits for real readiness without one.
                let mut reading = std::pin::pin!(read(&mut caller.stream, &mut caller.buf));
                match std::future::poll_fn(|cx| Poll::Ready(reading.as_mut().poll(cx))).await {
                    Poll::Ready(read) => read,
                    Poll::Pending => continue,
                }
            } else {
                match timeout_at(deadline, read(&mut caller.stream, &mut caller.buf)).await {
                    Ok(read) => read,
                    Err(_) => return Outcome::Closed,
                }
            };
            if !matches!(read, Ok(1..)) {
                return Outcome::Closed;
            }
        };
        caller.buf.drain(..request.head_len);
        let close = !request.keep_alive || *shutdown.borrow();
        let exchange = Exchange {
            proxy: &proxy,
            request: &request,
            close,
            started,
        };
        if request.body_len > 0 {
            let idle = request.route.idle_timeout;
            match read_body(&mut caller, request.body_len, idle, &mut buffers.body).await {
                Ok(()) => {}
                Err(None) => return Outcome::Closed,
                Err(Some(error)) => {
                    // What is left of the body cannot be told from a next request: closed after.
                    let exchange = Exchange {
                        close: true,
                        ..exchange
                    };
                    exchange
                        .refuse(&mut caller, &mut buffers.answer, &error)
                        .await;
                    let _ = caller.stream.shutdown().await;
                    return Outcome::Closed;
                }
            }
        }
        let kept = exchange.run(&mut caller, &mut upstream, &mut buffers).await;
        if !kept || close {
            let _ = caller.stream.shutdown().await;
            return Outcome::Closed;
        }
    }
}

struct Caller {
    stream: TcpStream,
    /// What the caller sent and the lane has not used yet.
    buf: Vec<u8>,
}

/// The caller's own connection to its route's upstream.
struct Upstream {
    authority: Authority,
    stream: TcpStream,
    /// What the upstream sent and the lane has not relayed yet.
    buf: Vec<u8>,
    /// Held while the connection waits for the caller's next request.
    parked: Option<ParkTicket>,
}

/// The request and answer heads being written.
#[derive(Default)]
struct Buffers {
    request: Vec<u8>,
    answer: Vec<u8>,
    /// The request's body, kept for a second send after a 401.
    body: Vec<u8>,
}

impl Buffers {
    /// Empty buffers of the usual size, for the next request.
    fn ready(&mut self) {
        for buf in [&mut self.request, &mut self.answer] {
            if buf.capacity() == 0 {
                *buf = pool::take();
            }
            buf.clear();
        }
        self.body.clear();
    }

    fn give_back(&mut self) {
        pool::give(std::mem::take(&mut self.request));
        pool::give(std::mem::take(&mut self.answer));
        pool::give(std::mem::take(&mut self.body));
    }
}

enum Prepared {
    Partial,
    Hyper,
    Ready(Request),
}

/// A request the lane serves, its upstream head written but for the token and the request id.
struct Request {
    method: Method,
    head_len: usize,
    body_len: usize,
    keep_alive: bool,
    route: Arc<Route>,
    slot: Arc<TokenSlot>,
    id: HeaderValue,
    _permit: OwnedSemaphorePermit,
}

/// Reads the head in `bytes` and runs the general path's checks on it. Whatever the lane does
/// not serve, or would refuse, is hyper's, so the refusal is the general path's own.
fn prepare(proxy: &Proxy, bytes: &[u8], peer: IpAddr, out: &mut Vec<u8>) -> Prepared {
    // Exported traces (a span per request, `traceparent` upstream) are the general path's. The
    // lane's own lines name their request id, so its requests need no span at debug either.
    if crate::telemetry::exporting() {
        return Prepared::Hyper;
    }
    let mut headers = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
    let head = match head::parse(bytes, &mut headers) {
        Parsed::Partial => return Prepared::Partial,
        Parsed::Hyper => return Prepared::Hyper,
        Parsed::Lane(head) => head,
    };
    let snapshot = proxy.snapshot();
    if snapshot.allow.as_ref().is_some_and(|a| !a.contains(peer)) {
        return Prepared::Hyper;
    }
    let Some((route, remainder)) = snapshot.routes.find(head.path) else {
        return Prepared::Hyper;
    };
    let Some(target) = &route.local else {
        return Prepared::Hyper;
    };
    if route.allow.as_ref().is_some_and(|a| !a.contains(peer)) || route::escapes_prefix(remainder) {
        return Prepared::Hyper;
    }
    if !route.api_keys.is_empty() {
        let key = head
            .get(route.api_key_header.as_str())
            .and_then(|v| HeaderValue::from_bytes(v).ok());
        if route.check_api_key(key.as_ref()).is_err() {
            return Prepared::Hyper;
        }
    }
    let mut party = HeaderMap::new();
    for name in route.parties.headers() {
        for h in head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name.as_str()))
        {
            let Ok(value) = HeaderValue::from_bytes(h.value) else {
                return Prepared::Hyper;
            };
            party.append(name.clone(), value);
        }
    }
    let Ok(slot) = route.parties.select(&party) else {
        return Prepared::Hyper;
    };
    // A body the lane holds whole, to send again after a 401. A larger one, or one over the
    // route's limit, streams on the general path, which answers 413 over the limit.
    if head.body_len > 0
        && (route.retry_body_max.is_none_or(|max| head.body_len > max)
            || route
                .max_body_bytes
                .is_some_and(|limit| head.body_len > limit))
    {
        return Prepared::Hyper;
    }
    let (Ok(method), Ok(permit)) = (Method::from_bytes(head.method.as_bytes()), proxy.permit())
    else {
        return Prepared::Hyper;
    };
    head::write_upstream(
        out,
        &head,
        &head::Outgoing {
            route,
            remainder,
            host: target.host.as_bytes(),
        },
    );
    Prepared::Ready(Request {
        method,
        head_len: head.len,
        // Within retry_body_max, checked above.
        body_len: usize::try_from(head.body_len).unwrap_or(usize::MAX),
        keep_alive: head.keep_alive,
        id: request_id::from_caller(head.get("x-request-id")),
        slot: Arc::clone(slot),
        route: Arc::clone(route),
        _permit: permit,
    })
}

/// One request on its way through the lane.
struct Exchange<'a> {
    proxy: &'a Proxy,
    request: &'a Request,
    /// The caller's connection closes after the answer.
    close: bool,
    started: std::time::Instant,
}

impl Exchange<'_> {
    /// Forwards the request and relays the answer, or answers with the error. False when the
    /// caller's connection cannot carry another request.
    async fn run(
        &self,
        caller: &mut Caller,
        upstream: &mut Option<Upstream>,
        buffers: &mut Buffers,
    ) -> bool {
        let (route, id) = (&self.request.route, &self.request.id);
        let id_str = request_id::as_str(id);
        // A caller that goes away while the answer is awaited takes its request with it, as
        // under hyper: the upstream call is dropped and the concurrency permit freed.
        let forwarded = tokio::select! {
            biased;
            forwarded = self.forward(upstream, buffers) => forwarded,
            () = gone(&caller.stream) => {
                *upstream = None;
                return false;
            }
        };
        let mut answer = match forwarded {
            Ok(answer) => answer,
            Err(error) => {
                *upstream = None;
                return self.refuse(caller, &mut buffers.answer, &error).await;
            }
        };
        self.proxy.finish(
            Some(&route.name),
            &self.request.method,
            self.started,
            id_str,
            Ok(http::StatusCode::from_u16(answer.status).unwrap_or(http::StatusCode::BAD_GATEWAY)),
        );
        let Some(mut conn) = upstream.take() else {
            return false;
        };
        match relay(
            caller,
            &mut conn,
            &mut answer,
            &mut buffers.answer,
            route.idle_timeout,
        )
        .await
        {
            Ok(()) => {}
            Err(Broken::Upstream(fault)) => {
                self.proxy.metrics.count_upstream_error(&route.name, fault);
                return false;
            }
            Err(Broken::Caller) => return false,
        }
        // Kept for the caller's next request, if the upstream keeps it and there is room.
        if answer.reusable && conn.buf.is_empty() {
            conn.parked = ParkTicket::take();
            if conn.parked.is_some() {
                pool::give(std::mem::take(&mut conn.buf));
                *upstream = Some(conn);
            }
        }
        !answer.close
    }

    /// Answers with `error`, as the general path would, and records it. False when the caller is
    /// gone.
    async fn refuse(&self, caller: &mut Caller, out: &mut Vec<u8>, error: &ProxyError) -> bool {
        let (route, id) = (&self.request.route, &self.request.id);
        write_problem(out, error, route, id.as_bytes(), self.close);
        self.proxy.finish(
            Some(&route.name),
            &self.request.method,
            self.started,
            request_id::as_str(id),
            Err(error),
        );
        write(&mut caller.stream, out, route.idle_timeout)
            .await
            .is_ok()
    }

    /// Gets the token, sends the request and reads the answer's head; after a 401, once more with
    /// a fresh token, as the general path does.
    async fn forward(
        &self,
        upstream: &mut Option<Upstream>,
        buffers: &mut Buffers,
    ) -> Result<Answer, ProxyError> {
        let Request {
            route, slot, id, ..
        } = self.request;
        let target = route
            .local
            .as_ref()
            .ok_or_else(|| ProxyError::Internal("the route has no local upstream target".into()))?;
        let token = request_id::scope(id.clone(), slot.get()).await?;
        let unsigned = buffers.request.len();
        head::finish_upstream(
            &mut buffers.request,
            token.bearer().as_bytes(),
            id.as_bytes(),
        );
        buffers.request.extend_from_slice(&buffers.body);
        let how = Rewrite {
            head_request: self.request.method == Method::HEAD,
            request_id: id.as_bytes(),
            close: self.close,
        };
        let answer = self
            .send(
                upstream,
                target,
                &buffers.request,
                &how,
                &mut buffers.answer,
            )
            .await?;
        if answer.status != 401 || route.retry_body_max.is_none() {
            return Ok(answer);
        }
        // The upstream no longer accepts the token (revoked, rotated, clock): drop it for everyone.
        let retried = slot.invalidate(&token);
        let result = if retried { "retried" } else { "suppressed" };
        self.proxy
            .metrics
            .unauthorized_retries
            .get_or_create(&RetryLabels {
                route: Arc::clone(&route.name),
                result,
            })
            .inc();
        let request_id = request_id::as_str(id);
        if !retried {
            tracing::warn!(route = %route.name, result, request_id, "upstream answered 401: not retried");
            return Ok(answer);
        }
        tracing::info!(route = %route.name, request_id, "upstream answered 401: retrying once with a fresh token");
        // The 401's body is not read: its connection goes.
        *upstream = None;
        let token = request_id::scope(id.clone(), slot.get()).await?;
        buffers.request.truncate(unsigned);
        head::finish_upstream(
            &mut buffers.request,
            token.bearer().as_bytes(),
            id.as_bytes(),
        );
        buffers.request.extend_from_slice(&buffers.body);
        buffers.answer.clear();
        self.send(
            upstream,
            target,
            &buffers.request,
            &how,
            &mut buffers.answer,
        )
        .await
    }

    /// Sends `request` on the caller's upstream connection (or a new one) and reads the answer's
    /// head, within the route's time limit. A kept connection the upstream closed meanwhile is
    /// replaced once, for a method that may be sent twice.
    async fn send(
        &self,
        upstream: &mut Option<Upstream>,
        target: &LocalTarget,
        request: &[u8],
        how: &Rewrite<'_>,
        answer_head: &mut Vec<u8>,
    ) -> Result<Answer, ProxyError> {
        let route = &self.request.route;
        let deadline = Instant::now() + route.timeout;
        let timed_out = || ProxyError::UpstreamTimeout {
            upstream: route.upstream.to_string(),
            after: route.timeout,
        };
        let kept = upstream
            .take()
            .filter(|conn| conn.authority == target.authority && !conn.stirred());
        let (mut conn, mut reused) = match kept {
            Some(conn) => (conn, true),
            None => (
                timeout_at(deadline, connect(target))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| unreachable(route, &e))?,
                false,
            ),
        };
        conn.parked = None;
        loop {
            let result = timeout_at(
                deadline,
                exchange_head(&mut conn, request, how, answer_head),
            )
            .await;
            match result {
                Err(_) => return Err(timed_out()),
                Ok(Ok(answer)) => {
                    *upstream = Some(conn);
                    return Ok(answer);
                }
                Ok(Err(HeadError::Unanswered(_))) if reused && idempotent(&self.request.method) => {
                    reused = false;
                    answer_head.clear();
                    conn = timeout_at(deadline, connect(target))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| unreachable(route, &e))?;
                }
                Ok(Err(HeadError::Unanswered(e) | HeadError::Io(e))) => {
                    return Err(ProxyError::UpstreamFailed {
                        upstream: route.upstream.to_string(),
                        reason: crate::error::chain(&e),
                        fault: Fault::of(&e, false),
                    })
                }
                Ok(Err(HeadError::Invalid(e))) => {
                    return Err(ProxyError::UpstreamFailed {
                        upstream: route.upstream.to_string(),
                        reason: e.to_string(),
                        fault: Fault::Protocol,
                    })
                }
            }
        }
    }
}

fn unreachable(route: &Route, e: &io::Error) -> ProxyError {
    ProxyError::UpstreamUnreachable {
        upstream: route.upstream.to_string(),
        reason: crate::error::chain(e),
        fault: Fault::of(e, true),
    }
}

/// Methods a client may repeat without changing the outcome (RFC 9110 9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

async fn connect(target: &LocalTarget) -> io::Result<Upstream> {
    let addr = (
        target.authority.host(),
        target.authority.port_u16().unwrap_or(80),
    );
    let stream = match timeout(target.connect_timeout, TcpStream::connect(addr)).await {
        Ok(stream) => stream?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
    };
    let _ = stream.set_nodelay(true);
    Ok(Upstream {
        authority: target.authority.clone(),
        stream,
        buf: Vec::new(),
        parked: None,
    })
}

impl Upstream {
    /// Whether the kept connection became readable while it waited: the upstream closed it (or
    /// sent what it should not have). Read off tokio's readiness, without a system call; a
    /// request on such a connection would fail, and one that is not idempotent cannot be sent
    /// again.
    fn stirred(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.stream.poll_read_ready(&mut cx).is_ready()
    }
}

enum HeadError {
    /// Not a byte of an answer came back.
    Unanswered(io::Error),
    Io(io::Error),
    Invalid(response::Invalid),
}

/// Writes the request and reads the answer's head (skipping 1xx answers), writing the caller's
/// head into `out`. The answer's first body bytes stay in the connection's buffer.
async fn exchange_head(
    conn: &mut Upstream,
    request: &[u8],
    how: &Rewrite<'_>,
    out: &mut Vec<u8>,
) -> Result<Answer, HeadError> {
    conn.stream
        .write_all(request)
        .await
        .map_err(HeadError::Unanswered)?;
    if conn.buf.capacity() == 0 {
        conn.buf = pool::take();
    }
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            match response::parse(&conn.buf, how, out).map_err(HeadError::Invalid)? {
                response::Parsed::Answer(answer) => {
                    conn.buf.drain(..answer.len);
                    return Ok(answer);
                }
                response::Parsed::Informational(len) => {
                    conn.buf.drain(..len);
                    continue;
                }
                response::Parsed::Partial if conn.buf.len() >= MAX_ANSWER_HEAD => {
                    return Err(HeadError::Invalid(response::Invalid("head too large")));
                }
                response::Parsed::Partial => {}
            }
        }
        conn.buf.reserve(BUF);
        match read(&mut conn.stream, &mut conn.buf).await {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection before it answered",
                );
                return Err(if answered {
                    HeadError::Io(e)
                } else {
                    HeadError::Unanswered(e)
                });
            }
            Ok(_) => answered = true,
            Err(e) if answered => return Err(HeadError::Io(e)),
            Err(e) => return Err(HeadError::Unanswered(e)),
        }
    }
}

/// Reads the request's body of `len` bytes into `body`: what came with the head first, then
/// from the socket, each read within the route's idle timeout. `Err(None)`: the caller left.
async fn read_body(
    caller: &mut Caller,
    len: usize,
    idle: Duration,
    body: &mut Vec<u8>,
) -> Result<(), Option<ProxyError>> {
    let have = caller.buf.len().min(len);
    body.extend_from_slice(&caller.buf[..have]);
    caller.buf.drain(..have);
    while body.len() < len {
        let left = len - body.len();
        body.reserve(left);
        // Never past the body: what follows it is the caller's next request.
        let mut rest = (&mut caller.stream).take(left as u64);
        match timeout(idle, rest.read_buf(body)).await {
            Err(_) => return Err(Some(ProxyError::RequestBodyTimeout(idle))),
            Ok(Ok(0) | Err(_)) => return Err(None),
            Ok(Ok(_)) => {}
        }
    }
    Ok(())
}

/// Reads what is there into `buf`'s spare room, waiting until something is. A short read tells
/// tokio the socket is drained, so no read is spent on finding that out.
async fn read(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    stream.read_buf(buf).await
}

/// Resolves when the caller closes its connection (or it breaks). Bytes it sends meanwhile (a
/// pipelined request) are left for later, and then closing can no longer be told here.
async fn gone(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    if let Ok(1..) = stream.peek(&mut byte).await {
        std::future::pending::<()>().await;
    }
}

async fn write(stream: &mut TcpStream, bytes: &[u8], idle: Duration) -> Result<(), ()> {
    match timeout(idle, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Which side broke a body off.
enum Broken {
    Upstream(Fault),
    Caller,
}

/// Sends the caller the answer's head (in `out`) and its body as it comes, each read and write
/// within the route's idle timeout.
async fn relay(
    caller: &mut Caller,
    conn: &mut Upstream,
    answer: &mut Answer,
    out: &mut Vec<u8>,
    idle: Duration,
) -> Result<(), Broken> {
    let (n, mut done) = answer
        .framing
        .take(&conn.buf)
        .map_err(|_| Broken::Upstream(Fault::Protocol))?;
    // A small answer goes in one write with its head.
    out.extend_from_slice(&conn.buf[..n]);
    conn.buf.drain(..n);
    write(&mut caller.stream, out, idle)
        .await
        .map_err(|()| Broken::Caller)?;
    while !done {
        if conn.buf.capacity() < STREAM_BUF {
            conn.buf.reserve(STREAM_BUF);
        }
        let got = match timeout(idle, read(&mut conn.stream, &mut conn.buf)).await {
            Err(_) => return Err(Broken::Upstream(Fault::Timeout)),
            Ok(Err(e)) => return Err(Broken::Upstream(Fault::of(&e, false))),
            Ok(Ok(got)) => got,
        };
        if got == 0 {
            return match answer.framing {
                Framing::UntilClose => Ok(()),
                _ => Err(Broken::Upstream(Fault::Reset)),
            };
        }
        let (n, end) = answer
            .framing
            .take(&conn.buf)
            .map_err(|_| Broken::Upstream(Fault::Protocol))?;
        done = end;
        write(&mut caller.stream, &conn.buf[..n], idle)
            .await
            .map_err(|()| Broken::Caller)?;
        conn.buf.drain(..n);
    }
    Ok(())
}

/// One of portvakt's own answers, as the general path would write it.
fn write_problem(out: &mut Vec<u8>, error: &ProxyError, route: &Route, id: &[u8], close: bool) {
    let problem = error.problem(Some(&route.name));
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(problem.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(problem.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    head::line(out, b"content-type", b"application/problem+json");
    if let Some(secs) = problem.retry_after {
        head::line(out, b"retry-after", secs.to_string().as_bytes());
    }
    head::line(
        out,
        b"content-length",
        problem.body.len().to_string().as_bytes(),
    );
    head::line(out, b"x-request-id", id);
    head::line(
        out,
        b"date",
        httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes(),
    );
    if close {
        head::line(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(problem.body.as_bytes());
}

/// Buffers kept per worker thread between requests, so a busy connection allocates none and an
/// idle one holds none.
mod pool {
    use super::BUF;
    use std::cell::RefCell;

    const KEPT: usize = 64;

    thread_local! {
        static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub fn take() -> Vec<u8> {
        FREE.with(|free| free.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(BUF))
    }

    /// Keeps `buf` for another request, if it is of the usual size and there is room.
    pub fn give(mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > 2 * BUF {
            return;
        }
        buf.clear();
        FREE.with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < KEPT {
                free.push(buf);
            }
        });
    }
}
