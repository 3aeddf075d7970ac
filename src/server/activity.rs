//! What one hyper HTTP/1.1 connection has begun and finished, counted from hyper's own signals:
//! a request's body reaching its end of stream ([`CallerBody`]), an answer's body taken whole by
//! hyper ([`Answered`]), a request handed to the service, a byte read from the caller, a write that
//! could not finish. [`super::idle`] parks a connection only when these say that hyper is between
//! messages in both directions (docs/security.md, "Idle connections, parked").

use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a connection rests before hyper is asked to end it. Short enough that an idle caller
/// soon costs only its socket; long enough that a busy caller's next request comes first. It
/// decides only when the question is asked, never the answer: hyper ends the connection only if
/// it is between messages ([`super::connection`]).
pub const PARK_AFTER: Duration = Duration::from_millis(50);

/// The counts of one hyper connection. Shared by the service (requests begun), the bodies both
/// ways and the socket's wrapper, all in the connection's task or hyper's.
#[derive(Default)]
pub struct Activity {
    begun: AtomicU64,
    /// Request bodies that reached their end of stream.
    bodies_ended: AtomicU64,
    /// Answers whose body hyper took to its end.
    answered: AtomicU64,
    /// A request body dropped before its end, or an answer dropped before its end: hyper's part
    /// of this connection is never parked (hyper drains the body or closes by its own rules).
    spoiled: AtomicBool,
    /// `answered` when the caller last sent a byte, plus one; 0 before it ever did.
    sent_at: AtomicU64,
    /// A write or flush said it could not finish, or wrote without a flush yet.
    write_open: AtomicBool,
    /// Moves on every event: a rest is one during which it did not move.
    changes: AtomicU64,
    /// Woken when an event may have brought the connection to rest.
    settled: Notify,
    /// hyper was asked to end the connection for a park: its shutdown of the socket is skipped,
    /// so that the socket stays open if the park is kept.
    parking: AtomicBool,
}

impl Activity {
    /// A request was handed to the service.
    pub fn begin(&self) {
        self.begun.fetch_add(1, Ordering::AcqRel);
        self.changed();
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    fn settle(&self) {
        self.changed();
        self.settled.notify_one();
    }

    pub(super) fn read_some(&self) {
        let answered = self.answered.load(Ordering::Acquire);
        self.sent_at.store(answered + 1, Ordering::Release);
        self.changed();
    }

    pub(super) fn write_open(&self, open: bool) {
        if self.write_open.swap(open, Ordering::AcqRel) != open {
            if open {
                self.changed();
            } else {
                self.settle();
            }
        }
    }

    fn spoil(&self) {
        self.spoiled.store(true, Ordering::Release);
        self.changed();
    }

    /// hyper is about to be asked to end the connection for a park.
    pub(super) fn ask_park(&self) {
        self.parking.store(true, Ordering::Release);
    }

    pub(super) fn parking(&self) -> bool {
        self.parking.load(Ordering::Acquire)
    }

    /// A count that moves with every event, for telling whether anything happened since.
    pub(super) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Every request begun has its body ended and its answer taken whole, at least one was, the
    /// caller has sent nothing since the last answer ended, and every write finished.
    pub(super) fn at_rest(&self) -> bool {
        let answered = self.answered.load(Ordering::Acquire);
        answered > 0
            && !self.spoiled.load(Ordering::Acquire)
            && !self.write_open.load(Ordering::Acquire)
            && self.begun.load(Ordering::Acquire) == answered
            && self.bodies_ended.load(Ordering::Acquire) == answered
            && self.sent_at.load(Ordering::Acquire) <= answered
    }

    /// Resolves once the connection has been at rest for [`PARK_AFTER`] with no event in between;
    /// gives the event count it rested at.
    pub(super) async fn rested(&self) -> u64 {
        loop {
            let seen = self.changes();
            if !self.at_rest() {
                self.settled.notified().await;
                continue;
            }
            tokio::time::sleep(PARK_AFTER).await;
            if self.changes() == seen && self.at_rest() {
                return seen;
            }
        }
    }
}

/// A caller's request body: hyper's [`Incoming`], counted to its end of stream where its
/// connection may be parked. Every handler behind [`super::serve`] receives this.
pub struct CallerBody {
    inner: Incoming,
    /// Taken once the end (or the drop before it) is counted.
    activity: Option<Arc<Activity>>,
}

impl CallerBody {
    pub(crate) fn new(inner: Incoming, activity: Option<Arc<Activity>>) -> Self {
        let mut body = CallerBody { inner, activity };
        body.note_end();
        body
    }

    /// Counts the end of stream once hyper says it came.
    fn note_end(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(activity) = self.activity.take() {
                activity.bodies_ended.fetch_add(1, Ordering::AcqRel);
                activity.settle();
            }
        }
    }
}

impl Drop for CallerBody {
    fn drop(&mut self) {
        self.note_end();
        if let Some(activity) = self.activity.take() {
            activity.spoil();
        }
    }
}

impl Body for CallerBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            // hyper ends the stream only at the body's end (a sender dropped before it sends
            // `IncompleteBody`); a length not reached all the same is no end.
            Poll::Ready(None) if this.inner.size_hint().exact().unwrap_or(0) == 0 => {
                if let Some(activity) = this.activity.take() {
                    activity.bodies_ended.fetch_add(1, Ordering::AcqRel);
                    activity.settle();
                }
            }
            Poll::Ready(None) => {}
            Poll::Ready(Some(Ok(_))) => this.note_end(),
            // A body that failed (cut, or broken framing) never ends: the drop spoils the count.
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl std::fmt::Debug for CallerBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerBody")
            .field("size_hint", &self.inner.size_hint())
            .finish()
    }
}

/// An answer's body that tells [`Activity`] whether hyper took it to its end or dropped it before.
pub struct Answered<B: Body> {
    inner: B,
    activity: Option<Arc<Activity>>,
    ended: bool,
}

impl<B: Body> Answered<B> {
    pub fn new(inner: B, activity: Option<Arc<Activity>>) -> Self {
        Answered {
            inner,
            activity,
            ended: false,
        }
    }
}

impl<B: Body> Drop for Answered<B> {
    fn drop(&mut self) {
        let Some(activity) = self.activity.take() else {
            return;
        };
        if self.ended || self.inner.is_end_stream() {
            activity.answered.fetch_add(1, Ordering::AcqRel);
            activity.settle();
        } else {
            activity.spoil();
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
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
