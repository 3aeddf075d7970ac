//! Accept loop (plain or TLS) and graceful shutdown, shared by the proxy, the admin listener and
//! the mocks. hyper reads and writes every byte; this module knows no routes and no domain types.

mod activity;
mod connection;
mod idle;
mod stall;

pub use activity::CallerBody;
use connection::{Protocols, Socket};
use hyper::body::Body;
use hyper::server::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use stall::Stalling;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller may be silent: before its first request, between requests, and while
/// sending a request's head.
const IDLE: Duration = Duration::from_secs(30);

/// Told of each connection closed because its caller stopped reading.
pub type OnStall = Arc<dyn Fn(SocketAddr) + Send + Sync>;

/// What a listener enforces before a request reaches the handler.
#[derive(Default)]
pub struct Limits {
    /// The largest request head read; larger gets 431. 0 keeps hyper's default.
    pub max_header_bytes: usize,
    pub tls: Option<TlsAcceptor>,
    /// How long a write may wait for the caller to read before its connection is closed, so a
    /// caller that reads nothing of its answer cannot hold a place forever.
    pub answer_stall: Option<Duration>,
    /// Told of each connection closed that way.
    pub on_stall: Option<OnStall>,
}

/// Serves HTTP/1.1 and HTTP/2 (h2c, or by ALPN under `tls`) on `listener`, handing each request to
/// `handler` with the peer's address, until `shutdown` turns true; then stops accepting and lets
/// in-flight requests finish for up to `grace`.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    limits: Limits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Request<CallerBody>, SocketAddr) -> F + Clone + Send + Sync + Unpin + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // A caller that never finishes its headers does not hold a connection forever.
        .header_read_timeout(IDLE)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2.timer(TokioTimer::new());
    if limits.max_header_bytes > 0 {
        // The head's own limit, and the buffer's: however the bytes arrive, a larger head is 431.
        http1
            .max_header_size(limits.max_header_bytes)
            .max_buf_size(limits.max_header_bytes.max(8192));
        http2.max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    }
    let protocols = Arc::new(Protocols {
        http1,
        http2,
        idle: IDLE,
    });
    let (tls, stall, on_stall) = (limits.tls, limits.answer_stall, limits.on_stall);
    // Each connection holds a sender; all are gone once every connection has ended.
    let (alive, mut all_ended) = mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let handler = move |request: Request<CallerBody>| handler(request, peer);
                let connection = Connection {
                    protocols: Arc::clone(&protocols),
                    shutdown: shutdown.clone(),
                    stall: (stall, on_stall.clone()),
                    alive: alive.clone(),
                };
                connection.spawn(stream, peer, tls.clone(), handler);
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    drop(alive);
    tokio::select! {
        _ = all_ended.recv() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!(grace_seconds = grace.as_secs(), "grace period over, closing remaining connections"),
    }
}

/// What each accepted connection's task needs of the listener.
struct Connection {
    protocols: Arc<Protocols>,
    shutdown: watch::Receiver<bool>,
    stall: (Option<Duration>, Option<OnStall>),
    /// Dropped when the connection ends; the listener waits for all of them at shutdown.
    alive: mpsc::Sender<()>,
}

impl Connection {
    /// Serves `stream` in a task of its own: the TLS handshake (when `tls`) runs there too, so a
    /// slow client cannot stall the accept loop.
    fn spawn<H, F, B>(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        handler: H,
    ) where
        H: Fn(Request<CallerBody>) -> F + Clone + Send + Sync + Unpin + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Connection {
            protocols,
            shutdown,
            stall: (stall, on_stall),
            alive,
        } = self;
        let Some(acceptor) = tls else {
            let stream = Stalling::new(stream, stall, peer, on_stall);
            tokio::spawn(async move {
                connection::serve(stream, protocols, handler, shutdown).await;
                drop(alive);
            });
            return;
        };
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                };
            let stream = Stalling::new(stream, stall, peer, on_stall);
            connection::serve(stream, protocols, handler, shutdown).await;
            drop(alive);
        });
    }
}

impl Socket for Stalling<TcpStream> {
    async fn http2(&self) -> io::Result<Option<bool>> {
        let mut first = [0u8; connection::PREFACE.len()];
        let mut wait = Duration::from_millis(5);
        loop {
            let n = self.get_ref().peek(&mut first).await?;
            if n == 0 {
                return Ok(None);
            }
            let may_be = connection::may_be_http2(&first[..n]);
            if !may_be || n == first.len() {
                return Ok(Some(may_be));
            }
            // The start of the preface, and the rest not here yet: a peek cannot wait for more
            // bytes, so look again later, less and less often (bounded by the idle timeout).
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    fn parks(&self) -> bool {
        true
    }

    async fn readable(&self) -> io::Result<()> {
        self.get_ref().readable().await
    }
}

impl Socket for Stalling<TlsStream<TcpStream>> {
    async fn http2(&self) -> io::Result<Option<bool>> {
        Ok(Some(
            self.get_ref().get_ref().1.alpn_protocol() == Some(b"h2"),
        ))
    }

    /// rustls may hold what the caller sent, which the socket cannot tell: no parking.
    fn parks(&self) -> bool {
        false
    }

    async fn readable(&self) -> io::Result<()> {
        self.get_ref().get_ref().0.readable().await
    }
}

/// Resolves once `shutdown` is true (or its sender is gone, which also means stop).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
