//! Bodies streamed through portvakt, in either direction, with the limits a proxy needs: a pause
//! longer than the route's idle timeout ends the stream (a stalled peer never holds a connection
//! forever), a request body past the route's size limit ends it, and the concurrency permit of the
//! request it belongs to is held until the body is done.

use crate::fault::{BodyError, Fault};
use crate::metrics::Metrics;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// A streamed body with an idle timeout, an optional size limit and an optional permit.
pub struct Guarded {
    inner: Incoming,
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
    pub fn new(inner: Incoming, idle: Duration) -> Self {
        Guarded {
            inner,
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

impl HttpBody for Guarded {
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

/// An answer's body: streamed from the upstream, or one of portvakt's own small answers.
pub type Body = Either<Guarded, Full<Bytes>>;

/// A small, complete answer: portvakt's own, the admin listener's and the mocks'.
pub fn full(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
