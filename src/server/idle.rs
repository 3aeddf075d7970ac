//! What a keep-alive connection costs while its caller is silent.
//!
//! hyper keeps an HTTP/1.1 connection's read and write buffers and the last request's header map
//! for as long as the connection lives: about 20 KB a connection, 200 MB for 10,000 callers that
//! keep their connections open between calls. As nginx frees its buffers while a connection idles,
//! portvakt ends hyper's part of a connection once it has been idle a moment ([`PARK_AFTER`]), keeps
//! only the socket, and gives the socket to a new hyper connection when the caller sends again.
//!
//! hyper still frames every byte: [`Idling`] only tells hyper that nothing more comes (a read of
//! zero bytes) at a point where hyper has answered every request it read, has written all it had
//! to write, and the caller has sent nothing since. hyper then ends the connection cleanly (its
//! shutdown of the socket is skipped) and gives back any bytes it had read and not used; the
//! connection is parked only when there are none. Any other outcome closes the connection as
//! hyper would have.

use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a connection idles before hyper's buffers are let go. Short enough that an idle
/// caller soon costs only its socket; long enough that a busy caller's next request comes first.
pub const PARK_AFTER: Duration = Duration::from_millis(50);

/// Requests begun and answers finished on one hyper connection.
#[derive(Default)]
pub struct Activity {
    begun: AtomicU64,
    finished: AtomicU64,
}

impl Activity {
    pub fn begin(&self) {
        self.begun.fetch_add(1, Ordering::AcqRel);
    }

    fn finished(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }

    /// Every request begun has been answered, and at least one was.
    fn at_rest(&self) -> Option<u64> {
        let finished = self.finished();
        (finished > 0 && self.begun.load(Ordering::Acquire) == finished).then_some(finished)
    }
}

/// An answer's body that tells [`Activity`] when hyper is done with it (sent, or dropped).
pub struct Answered<B> {
    inner: B,
    activity: Option<Arc<Activity>>,
}

impl<B> Answered<B> {
    pub fn new(inner: B, activity: Arc<Activity>) -> Self {
        Answered {
            inner,
            activity: Some(activity),
        }
    }
}

impl<B> Drop for Answered<B> {
    fn drop(&mut self) {
        if let Some(activity) = self.activity.take() {
            activity.finished.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl<B: Body + Unpin> Body for Answered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper's HTTP/1.1 connection sees it, with an end of input once the connection
/// has rested [`PARK_AFTER`] (when `parks`).
pub struct Idling<I> {
    inner: I,
    parks: bool,
    activity: Arc<Activity>,
    /// The count of finished answers when the caller last sent bytes: no rest until another
    /// answer is finished, since those bytes may be the start of a request hyper holds.
    sent_at: Option<u64>,
    /// The count of finished answers whose rest is being timed.
    resting: Option<u64>,
    /// The rest's timer, kept and reset from one rest to the next: a busy caller's connection
    /// rests for a moment after every answer, and a new timer each time would cost an allocation.
    timer: Option<Pin<Box<Sleep>>>,
    /// The last write could not finish: hyper may still hold bytes to send.
    write_blocked: bool,
    parked: bool,
}

impl<I> Idling<I> {
    pub fn new(inner: I, parks: bool, activity: Arc<Activity>) -> Self {
        Idling {
            inner,
            parks,
            activity,
            sent_at: Some(0),
            resting: None,
            timer: None,
            write_blocked: false,
            parked: false,
        }
    }

    /// Whether this side ended hyper's connection because it rested.
    pub fn parked(&self) -> bool {
        self.parked
    }

    pub fn into_inner(self) -> I {
        self.inner
    }

    /// Pending, or ready once the connection has rested long enough to be parked.
    fn rest(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(finished) = self.activity.at_rest().filter(|_| self.parks) else {
            self.resting = None;
            return Poll::Pending;
        };
        if self.write_blocked || self.sent_at.is_some_and(|at| at >= finished) {
            return Poll::Pending;
        }
        if self.resting != Some(finished) {
            self.resting = Some(finished);
            let deadline = Instant::now() + PARK_AFTER;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Idling<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.sent_at = Some(this.activity.finished());
                this.resting = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => match this.rest(cx) {
                Poll::Ready(()) => {
                    this.parked = true;
                    // Zero bytes: the caller has sent nothing, and hyper has nothing half read.
                    Poll::Ready(Ok(()))
                }
                Poll::Pending => Poll::Pending,
            },
        }
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
        this.write_blocked = result.is_pending();
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_blocked = result.is_pending();
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_blocked = result.is_pending();
        result
    }

    /// hyper shuts the socket down when its connection ends; a parked socket stays open.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
