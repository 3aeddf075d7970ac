//! One caller's connection: HTTP/2 or HTTP/1.1, and for HTTP/1.1 over plain TCP a hyper
//! connection that is ended while the caller idles and begun again when it sends
//! ([`super::idle`]).

use super::activity::{Activity, Answered, CallerBody, PARK_AFTER};
use super::idle::{Idling, Park};
use hyper::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulConnection;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

/// What an HTTP/2 connection starts with (RFC 9113, section 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How each connection is served.
pub struct Protocols {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
    /// How long a caller may stay silent before its first request and between requests (as
    /// hyper's header read timeout, which begins when hyper waits for a request).
    pub idle: Duration,
}

/// A caller's transport, as far as the connection needs to know it.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether the caller speaks HTTP/2: by ALPN, or by the preface it sends (waiting for its
    /// first bytes, without taking them). `None`: it closed or sent nothing.
    fn http2(&self) -> impl Future<Output = io::Result<Option<bool>>> + Send;
    /// Whether hyper's connection may be ended while the caller idles: the socket alone can tell
    /// when the caller sends again.
    fn parks(&self) -> bool;
    /// Waits until the caller sends again (or closes), without taking what it sends.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

/// Serves one connection until it ends, the caller stays silent for `idle`, or `shutdown` turns
/// true (then an idle connection closes at once and a busy one after its answer).
pub async fn serve<I, H, F, B>(
    io: I,
    protocols: Arc<Protocols>,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    I: Socket,
    H: Fn(Request<CallerBody>) -> F + Clone + Send + Sync + Unpin + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let first = within(Instant::now() + protocols.idle, &mut shutdown, io.http2()).await;
    let Some(Ok(Some(http2))) = first else {
        return;
    };
    if http2 {
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let request = request.map(|body| CallerBody::new(body, None));
            let handler = handler.clone();
            // The handler's future is made inside this one, where it stays: it is several
            // kilobytes, and every move of it is a copy.
            async move { Ok::<_, Infallible>(handler(request).await) }
        });
        let connection = protocols.http2.serve_connection(TokioIo::new(io), service);
        return to_the_end(connection, &mut shutdown).await;
    }
    if !io.parks() {
        // No parking here: hyper serves the connection to its end.
        let connection = protocols
            .http1
            .serve_connection(TokioIo::new(io), http1_service(handler, None));
        return to_the_end(connection, &mut shutdown).await;
    }
    let mut io = io;
    loop {
        // One hyper connection, until the caller rests and the park is taken, or it ends.
        let Some(idling) = until_parked(io, &protocols, handler.clone(), &mut shutdown).await
        else {
            return;
        };
        io = idling;
        tracing::trace!(
            "keep-alive connection parked: hyper's buffers released until the caller sends"
        );
        // Parked: only the socket is kept, until the caller sends or has been silent for `idle`.
        let deadline = Instant::now() + protocols.idle.saturating_sub(PARK_AFTER);
        match within(deadline, &mut shutdown, io.readable()).await {
            Some(Ok(())) => {}
            _ => return,
        }
    }
}

/// hyper's HTTP/1.1 service for one connection: each request's body counted by `activity` (when
/// the connection may park), and its answer noted when taken whole.
fn http1_service<H, F, B>(
    handler: H,
    activity: Option<Arc<Activity>>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Answered<B>>,
    Error = Infallible,
    Future: Send,
>
where
    H: Fn(Request<CallerBody>) -> F + Clone + Send + Sync + Unpin + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    hyper::service::service_fn(move |request: Request<Incoming>| {
        if let Some(activity) = &activity {
            activity.begin();
        }
        let request = request.map(|body| CallerBody::new(body, activity.clone()));
        let (handler, activity) = (handler.clone(), activity.clone());
        // The handler's future (several kilobytes) is made inside this one, which hyper
        // boxes: every move of it would be a copy.
        async move {
            let answer = handler(request).await;
            Ok::<_, Infallible>(answer.map(|b| Answered::new(b, activity)))
        }
    })
}

/// Serves HTTP/1.1 on `io` with one hyper connection until the caller has rested and hyper ended
/// the connection between messages (a park), and returns the socket then; `None` when the
/// connection ended for any other reason or portvakt shuts down (the socket is closed).
async fn until_parked<I, H, F, B>(
    io: I,
    protocols: &Protocols,
    handler: H,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<I>
where
    I: Socket,
    H: Fn(Request<CallerBody>) -> F + Clone + Send + Sync + Unpin + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::default());
    let service = http1_service(handler, Some(Arc::clone(&activity)));
    let idling = Idling::new(io, Arc::clone(&activity));
    // Boxed: hyper's connection state (over a kilobyte) lives in the task only while hyper
    // serves, not while the caller is silent or the connection parked.
    let mut connection = Box::new(
        protocols
            .http1
            .serve_connection(TokioIo::new(idling), service),
    );
    let mut park = None;
    let ended = loop {
        tokio::select! {
            ended = &mut *connection => break Some(ended),
            at = activity.rested(), if park.is_none() => {
                // hyper ends the connection now only if it is between messages both ways;
                // otherwise it closes after the message in hand, and the park is refused.
                park = Some(Park { at });
                activity.ask_park();
                Pin::new(&mut *connection).graceful_shutdown();
            }
            _ = super::stopped(shutdown) => break None,
        }
    };
    let Some(ended) = ended else {
        // Close once the request in hand is answered; hyper closes at once if there is none.
        Pin::new(&mut *connection).graceful_shutdown();
        let _ = connection.await;
        return None;
    };
    // The rest of the parts goes here: even empty, hyper's read buffer as `Bytes` keeps its
    // 8 KiB allocation alive.
    let parts = connection.into_parts();
    let idling = parts.io.into_inner();
    // The caller closed, hyper ended the connection for a reason of its own, a body was cut,
    // something happened after the park was asked, or hyper holds bytes it did not use: nothing
    // is resumed. Dropping the socket closes it.
    let kept = park.is_some_and(|park| park.keeps(&ended, &idling, parts.read_buf.len()));
    kept.then(|| idling.into_inner())
}

/// Serves `connection` until it ends; once portvakt shuts down, hyper closes it after the request
/// in hand (at once if there is none).
async fn to_the_end<C: GracefulConnection>(connection: C, shutdown: &mut watch::Receiver<bool>) {
    // Boxed: a connection's task holds hyper's state only while hyper serves it.
    let mut connection = Box::pin(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = super::stopped(shutdown) => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// `work`'s result, unless `deadline` passes or portvakt shuts down first.
async fn within<T>(
    deadline: Instant,
    shutdown: &mut watch::Receiver<bool>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        _ = tokio::time::sleep_until(deadline) => None,
        _ = super::stopped(shutdown) => None,
    }
}

/// Whether `first` (what a plain-TCP caller sent first) is, or may yet become, HTTP/2's preface.
pub fn may_be_http2(first: &[u8]) -> bool {
    let n = first.len().min(PREFACE.len());
    first[..n] == PREFACE[..n]
}
