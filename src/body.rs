//! Bodies streamed through portvakt, in either direction, with the limits a proxy needs: a pause
//! longer than the route's idle timeout ends the stream (a stalled peer never holds a connection
//! forever), a request body past the route's size limit ends it, and the concurrency permit of the
//! request it belongs to is held until the body is done.

use crate::metrics::Metrics;
use crate::upstream::Fault;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// Why portvakt cut a body short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// No data for this long.
    Idle(Duration),
    /// More than this many bytes.
    TooLarge(u64),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Idle(d) => write!(f, "no data for {} s", d.as_secs()),
            BodyError::TooLarge(max) => write!(f, "the body is larger than {max} bytes"),
        }
    }
}

impl std::error::Error for BodyError {}

/// A body as hyper delivers it: the caller's or a pooled upstream connection's, or one read from
/// an upstream connection the caller's connection drives itself (`affinity.rs`).
pub enum Inner {
    Incoming(Incoming),
    Local(crate::affinity::LocalBody),
}

impl From<Incoming> for Inner {
    fn from(body: Incoming) -> Self {
        Inner::Incoming(body)
    }
}

impl Body for Inner {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Inner::Incoming(b) => Pin::new(b).poll_frame(cx),
            Inner::Local(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inner::Incoming(b) => b.is_end_stream(),
            Inner::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inner::Incoming(b) => b.size_hint(),
            Inner::Local(b) => b.size_hint(),
        }
    }
}

/// A streamed body with an idle timeout, an optional size limit and an optional permit.
pub struct Guarded {
    inner: Inner,
    idle: Duration,
    /// Armed on the first wait, pushed back on every frame.
    timer: Option<Pin<Box<Sleep>>>,
    limit: Option<u64>,
    seen: u64,
    _permit: Option<OwnedSemaphorePermit>,
    faults: Option<FaultCount>,
}

/// Where a response body the upstream breaks off is counted.
pub struct FaultCount {
    pub metrics: Arc<Metrics>,
    pub route: Arc<String>,
}

impl Guarded {
    pub fn new(inner: impl Into<Inner>, idle: Duration) -> Self {
        Guarded {
            inner: inner.into(),
            idle,
            timer: None,
            limit: None,
            seen: 0,
            _permit: None,
            faults: None,
        }
    }

    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    pub fn counting_faults(mut self, faults: FaultCount) -> Self {
        self.faults = Some(faults);
        self
    }

    pub fn with_permit(mut self, permit: Option<OwnedSemaphorePermit>) -> Self {
        self._permit = permit;
        self
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(max) = this.limit.filter(|max| this.seen > *max) {
                        return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge(max)))));
                    }
                }
                if let Some(timer) = &mut this.timer {
                    timer.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(f) = &this.faults {
                    f.metrics
                        .count_upstream_error(&f.route, Fault::of(&e, false));
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        if let Some(f) = &this.faults {
                            f.metrics.count_upstream_error(&f.route, Fault::Timeout);
                        }
                        Poll::Ready(Some(Err(Box::new(BodyError::Idle(idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The [`BodyError`] somewhere in an error's chain of causes, if portvakt cut the body.
pub fn cut_by_portvakt(e: &(dyn std::error::Error + 'static)) -> Option<BodyError> {
    crate::error::causes(e).find_map(|err| err.downcast_ref::<BodyError>().copied())
}
