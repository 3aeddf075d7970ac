//! Upstream connections owned by the caller's connection. For a plain-HTTP upstream reached
//! directly, each inbound connection keeps its own keep-alive HTTP/1.1 connection to the upstream
//! and drives it inside its own task: a proxied request then wakes no other task. The pooled
//! client (`upstream.rs`) hands every request to a separate connection task and back, and on a
//! loaded machine those wake-ups cost more than the proxying itself. HTTPS, HTTP/2 and egress
//! proxies keep using the pooled client here (the lane serves HTTPS/1.1 itself). A caller's
//! connection parks one idle upstream connection; when the caller leaves, or calls another
//! upstream, that one goes to its route's idle set (`direct::IdleConns`) for other callers.

use crate::direct::{IdleConns, LocalTarget, ParkTicket, Stream};
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use http::header::HOST;
use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::client::conn::TrySendError;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

type Conn = Connection<TokioIo<Stream>, UpstreamBody>;

/// One upstream connection: the handle requests are sent on, and the future that does its I/O.
struct LocalConn {
    authority: Authority,
    sender: SendRequest<UpstreamBody>,
    io: Pin<Box<Conn>>,
    /// The I/O future has finished: the connection is closed and is never polled again.
    closed: bool,
    /// Where the connection goes when its caller leaves while it waits.
    home: Arc<IdleConns>,
}

impl LocalConn {
    /// Lets the connection read and write what it can, in the caller's task.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if !self.closed && self.io.as_mut().poll(cx).is_ready() {
            self.closed = true;
        }
    }

    /// Leaves the parked connection to other callers, when hyper would send another request on
    /// it and nothing of an answer is unread; any other is closed.
    fn release(mut self, ticket: ParkTicket) {
        self.drive(&mut Context::from_waker(std::task::Waker::noop()));
        if self.closed || !self.sender.is_ready() {
            return;
        }
        let parts = Pin::into_inner(self.io).into_parts();
        if parts.read_buf.is_empty() {
            self.home.put(parts.io.into_inner(), ticket);
        }
    }
}

/// The upstream connections of one inbound connection, put into each of its requests'
/// extensions by the listener.
#[derive(Clone, Default)]
pub struct Affinity {
    parked: Arc<Mutex<Option<Parked>>>,
}

/// An idle connection, counted in [`PARKED`] for as long as it exists here: taken back, replaced,
/// or closed with its caller's connection.
struct Parked {
    conn: Option<LocalConn>,
    ticket: Option<ParkTicket>,
}

impl Drop for Parked {
    /// The caller left, or parked another connection in its place.
    fn drop(&mut self) {
        if let (Some(conn), Some(ticket)) = (self.conn.take(), self.ticket.take()) {
            conn.release(ticket);
        }
    }
}

impl Affinity {
    /// The parked connection, when it goes to `authority`. One to another upstream stays parked
    /// until a new one takes its place, and is then left to other callers.
    fn take(&self, authority: &Authority) -> Option<LocalConn> {
        let mut parked = crate::sync::lock(&self.parked);
        if parked.as_ref()?.conn.as_ref()?.authority != *authority {
            return None;
        }
        parked.take()?.conn.take()
    }

    fn park(&self, conn: LocalConn) {
        if conn.closed {
            return;
        }
        let Some(ticket) = ParkTicket::take() else {
            return;
        };
        let previous = crate::sync::lock(&self.parked).replace(Parked {
            conn: Some(conn),
            ticket: Some(ticket),
        });
        drop(previous);
    }
}

/// Why a request on a caller-owned connection failed, in the terms `proxy.rs` answers with.
pub enum SendError {
    /// No connection could be made; nothing was sent.
    Connect(std::io::Error),
    Http(hyper::Error),
}

/// Sends `request` on the caller's parked connection to `target`, or a new one, and drives that
/// connection in this task until the response headers arrive. A parked connection the upstream
/// closed meanwhile is replaced, and the request sent on the new one, when nothing of it was sent.
pub async fn send(
    affinity: &Affinity,
    target: &LocalTarget,
    mut request: Request<UpstreamBody>,
) -> Result<Response<LocalBody>, SendError> {
    // On a connection of its own, a request carries its target in origin form and its Host.
    let origin = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    *request.uri_mut() = origin;
    request.headers_mut().insert(HOST, target.host.clone());
    let mut reused = affinity.take(&target.authority);
    let mut retried = false;
    loop {
        let (mut conn, fresh) = match reused.take() {
            Some(conn) => (conn, false),
            // After a parked connection failed, a new one: not another that waited as long.
            None => connect(target, !retried).await?,
        };
        match Drive::new(&mut conn, request).await {
            Ok(response) => {
                let (parts, inner) = response.into_parts();
                let mut body = LocalBody {
                    inner,
                    conn: Some(conn),
                    affinity: affinity.clone(),
                };
                // hyper never polls a body with nothing in it: its connection is free now.
                if body.inner.is_end_stream() {
                    body.release();
                }
                return Ok(Response::from_parts(parts, body));
            }
            Err(Unsent::Again(back)) if !fresh => {
                request = *back;
                retried = true;
            }
            Err(Unsent::Again(_)) => {
                return Err(SendError::Connect(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the upstream closed a new connection before the request was sent",
                )))
            }
            Err(Unsent::Failed(e)) => return Err(SendError::Http(e)),
        }
    }
}

/// A connection to `target`: one another caller left idle (when `idle` allows it), or a new one.
/// True with a new one.
async fn connect(target: &LocalTarget, idle: bool) -> Result<(LocalConn, bool), SendError> {
    let (stream, reused) = target.connection(idle).await.map_err(SendError::Connect)?;
    let (sender, io) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Http)?;
    let conn = LocalConn {
        authority: target.authority.clone(),
        sender,
        io: Box::pin(io),
        closed: false,
        home: Arc::clone(&target.idle),
    };
    Ok((conn, !reused))
}

enum Unsent {
    /// The connection was closed before the request went out; here it is back.
    Again(Box<Request<UpstreamBody>>),
    Failed(hyper::Error),
}

/// Waits for the connection to be ready, sends the request and waits for the response headers,
/// polling the connection's I/O all along in this task.
struct Drive<'c> {
    conn: &'c mut LocalConn,
    request: Option<Request<UpstreamBody>>,
    response: Option<Pin<Box<Sending>>>,
}

type Sending =
    dyn Future<Output = Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>>> + Send;

impl<'c> Drive<'c> {
    fn new(conn: &'c mut LocalConn, request: Request<UpstreamBody>) -> Self {
        Drive {
            conn,
            request: Some(request),
            response: None,
        }
    }
}

impl Future for Drive<'_> {
    type Output = Result<Response<Incoming>, Unsent>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // The connection's own future does the reading and writing; when it ends, the connection
        // is closed, and what it was sending or awaiting fails through the handles below.
        this.conn.drive(cx);
        if let Some(request) = this.request.take() {
            match this.conn.sender.poll_ready(cx) {
                Poll::Pending => {
                    this.request = Some(request);
                    return Poll::Pending;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Unsent::Again(Box::new(request)))),
                Poll::Ready(Ok(())) => {
                    this.response = Some(Box::pin(this.conn.sender.try_send_request(request)));
                    // The connection must see the new request in this same turn.
                    this.conn.drive(cx);
                }
            }
        }
        match this.response.as_mut() {
            Some(response) => response
                .as_mut()
                .poll(cx)
                .map_err(|mut e| match e.take_message() {
                    Some(request) => Unsent::Again(Box::new(request)),
                    None => Unsent::Failed(e.into_error()),
                }),
            None => Poll::Pending,
        }
    }
}

/// The upstream's response body, read by driving its connection in the caller's task. At its
/// end the connection is parked for the caller's next request; a body dropped early takes its
/// connection with it.
pub struct LocalBody {
    inner: Incoming,
    conn: Option<LocalConn>,
    affinity: Affinity,
}

impl LocalBody {
    /// Parks the connection for the caller's next request; the next request polls its I/O
    /// first, which readies it.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.affinity.park(conn);
        }
    }
}

impl Body for LocalBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(conn) = &mut this.conn {
            conn.drive(cx);
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        // hyper stops polling a body once it says it has ended, so the connection is parked
        // with the last frame, not after a final `None` that may never be asked for.
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
