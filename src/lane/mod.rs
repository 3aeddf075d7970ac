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

mod exchange;
mod head;
mod pool;
mod response;
mod rewind;
mod upstream;

pub use rewind::Rewind;

use exchange::{read_body, Exchange};
use upstream::Upstream;

use crate::proxy::Proxy;
use crate::request_id;
use crate::route::{self, Route};
use crate::token::cache::TokenSlot;
use head::Parsed;
use http::{HeaderMap, HeaderValue, Method};
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
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
    let mut upstream = Kept(None);
    let upstream = &mut upstream.0;
    let mut buffers = Buffers::default();
    loop {
        let deadline = Instant::now() + HEAD_TIMEOUT;
        // How far the buffer was searched for the head's end: a head sent a byte at a time is
        // parsed once, not once per byte.
        let mut searched = 0;
        // Whether this head waited for its upstream's probe already: once is enough.
        let mut waited = false;
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
                    Prepared::Learning(route) if !waited => {
                        if let Some(target) = &route.local {
                            // Boxed: rare, and inline it would grow every caller's task.
                            Box::pin(target.probe_ended()).await;
                        }
                        (waited, searched) = (true, 0);
                        continue;
                    }
                    Prepared::Partial if caller.buf.len() < max_head => {}
                    Prepared::Partial | Prepared::Hyper | Prepared::Learning(_) => {
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
        let kept = exchange.run(&mut caller, upstream, &mut buffers).await;
        if !kept || close {
            let _ = caller.stream.shutdown().await;
            return Outcome::Closed;
        }
    }
}

/// The caller's upstream connection between requests. When the caller leaves, or its
/// connection goes to hyper, a connection that waits for a next request is left to other callers.
struct Kept(Option<Upstream>);

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.release();
        }
    }
}

struct Caller {
    stream: TcpStream,
    /// What the caller sent and the lane has not used yet.
    buf: Vec<u8>,
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
    /// The route's upstream is being asked whether it offers HTTP/2: ask again once it has said.
    Learning(Arc<Route>),
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
    if target.probing() {
        return Prepared::Learning(Arc::clone(route));
    }
    if !target.speaks_http1_only() {
        return Prepared::Hyper;
    }
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
        id: request_id::from_caller(head.get(request_id::HEADER.as_str())),
        slot: Arc::clone(slot),
        route: Arc::clone(route),
        _permit: permit,
    })
}

/// Reads what is there into `buf`'s spare room, waiting until something is. A short read tells
/// tokio the socket is drained, so no read is spent on finding that out.
async fn read(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> io::Result<usize> {
    stream.read_buf(buf).await
}

async fn write(stream: &mut TcpStream, bytes: &[u8], idle: Duration) -> Result<(), ()> {
    match timeout(idle, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
