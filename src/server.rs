//! Accept loop (plain or TLS) and graceful shutdown, shared by the proxy, the admin listener and
//! the mocks. hyper reads and writes every byte; this module knows no routes and no domain types.

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    pub on_stall: Option<Arc<dyn Fn(SocketAddr) + Send + Sync>>,
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
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // A caller that never finishes its headers does not hold a connection forever.
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    if limits.max_header_bytes > 0 {
        builder.http1().max_buf_size(limits.max_header_bytes);
        builder
            .http2()
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    }
    let (tls, stall, on_stall) = (limits.tls, limits.answer_stall, limits.on_stall);
    let graceful = GracefulShutdown::new();
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
                let stream = Stalling::new(stream, stall, peer, on_stall.clone());
                let handler = handler.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request, peer).await) }
                });
                // Errors while serving are a caller or peer going away mid-request: nothing to answer.
                let Some(acceptor) = &tls else {
                    let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                    continue;
                };
                // The handshake runs in the connection's task so a slow client cannot stall the accept loop.
                let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    if let Err(e) = watcher.watch(connection).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!(grace_seconds = grace.as_secs(), "grace period over, closing remaining connections"),
    }
}

/// Resolves once `shutdown` is true (or its sender is gone, which also means stop).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A connection whose writes may wait at most `limit` for the caller to read; past that the write
/// fails and hyper closes the connection. Only the wait is timed: the timer exists while a write
/// is blocked.
struct Stalling<S> {
    inner: S,
    limit: Option<Duration>,
    blocked: Option<Pin<Box<Sleep>>>,
    peer: SocketAddr,
    on_stall: Option<Arc<dyn Fn(SocketAddr) + Send + Sync>>,
}

impl<S> Stalling<S> {
    fn new(
        inner: S,
        limit: Option<Duration>,
        peer: SocketAddr,
        on_stall: Option<Arc<dyn Fn(SocketAddr) + Send + Sync>>,
    ) -> Self {
        Stalling {
            inner,
            limit,
            blocked: None,
            peer,
            on_stall,
        }
    }

    /// After the inner write said Pending: pending still, or the stall's error once it lasted.
    fn wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        let timer = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        tracing::warn!(peer = %self.peer, stall_seconds = limit.as_secs(), "closing a connection whose caller read nothing of its answer");
        if let Some(on_stall) = &self.on_stall {
            on_stall(self.peer);
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the caller read nothing of its answer",
        )))
    }

    fn progressed<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.wait(cx),
            ready => {
                self.blocked = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stalling<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stalling<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progressed(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.progressed(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
