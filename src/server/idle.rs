//! What a keep-alive connection costs while its caller is silent.
//!
//! hyper keeps an HTTP/1.1 connection's read and write buffers and the last request's header map
//! for as long as the connection lives: about 20 KB a connection, 200 MB for 10,000 callers that
//! keep their connections open between calls. As nginx frees its buffers while a connection idles,
//! portvakt ends hyper's part of a connection once it has rested a moment, keeps only the socket,
//! and gives the socket to a new hyper connection when the caller sends again: it parks it.
//!
//! hyper frames every byte, and is shown only the socket's truth: [`Idling`] passes every read and
//! write through unchanged and only notes them in the connection's [`Activity`]. The park itself
//! is hyper's own `graceful_shutdown`, which ends a connection at once only when hyper's keep-alive
//! state is idle (between messages both ways); the rules the park must then pass are in
//! [`Park::keeps`], and the argument in docs/security.md ("Idle connections, parked").

use super::activity::Activity;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The socket as hyper's HTTP/1.1 connection sees it: the caller's bytes as they come, each read
/// and write noted in [`Activity`].
pub struct Idling<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> Idling<I> {
    pub fn new(inner: I, activity: Arc<Activity>) -> Self {
        Idling { inner, activity }
    }

    pub fn into_inner(self) -> I {
        self.inner
    }

    fn wrote<T>(&self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        // Open until a flush finishes: hyper may hold, or the socket may not yet have taken, bytes
        // of an answer.
        self.activity.write_open(true);
        result
    }
}

/// A park asked of hyper at one point of a connection's activity.
pub struct Park {
    /// The connection's event count when hyper was asked.
    pub at: u64,
}

impl Park {
    /// Whether the socket may be kept for a new hyper connection once hyper ended: hyper ended
    /// without error, nothing happened since the park was asked (no request begun, no body or
    /// answer ended, no byte read), the connection is still at rest (every body ended, every answer
    /// taken whole, every write flushed), and hyper holds no byte it read and did not use.
    pub fn keeps<I>(&self, ended: &hyper::Result<()>, idling: &Idling<I>, unread: usize) -> bool {
        ended.is_ok()
            && idling.activity.parking()
            && idling.activity.changes() == self.at
            && idling.activity.at_rest()
            && unread == 0
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Idling<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read_some();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Idling<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.activity
            .write_open(!matches!(result, Poll::Ready(Ok(()))));
        result
    }

    /// hyper shuts the socket down when its connection ends; a socket being parked stays open.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.parking() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
