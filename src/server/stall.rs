//! A connection whose writes may wait only so long for the caller to read.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A connection whose writes may wait at most `limit` for the caller to read; past that the write
/// fails and hyper closes the connection. Only the wait is timed: the timer exists while a write
/// is blocked.
pub(super) struct Stalling<S> {
    inner: S,
    limit: Option<Duration>,
    blocked: Option<Pin<Box<Sleep>>>,
    peer: SocketAddr,
    on_stall: Option<Arc<dyn Fn(SocketAddr) + Send + Sync>>,
}

impl<S> Stalling<S> {
    pub(super) fn new(
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

    pub(super) fn get_ref(&self) -> &S {
        &self.inner
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
