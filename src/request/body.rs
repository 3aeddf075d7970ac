//! Bodies streamed through portvakt, in either direction, with the limits a proxy needs: a pause
//! longer than the route's idle timeout ends the stream (a stalled peer never holds a connection
//! forever), a caller's body that comes slower than the minimum rate or past its deadline ends it
//! (a slow caller cannot hold a place), a request body past the route's size limit ends it, and
//! the place of the request it belongs to is held until the body is done.

use crate::observe::metrics::Metrics;
use crate::request::permits::Permit;
use crate::server::CallerBody;
use crate::support::fault::{BodyError, Fault};
use crate::upstream::Answer;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// How a body must keep coming: its longest pause and, for a caller's body, a minimum average rate
/// (once a grace period is over, counting only the time portvakt waits for data, so an upstream
/// that reads slowly never counts against the caller) and an overall deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub idle: Duration,
    /// Bytes a second; 0 for none.
    pub min_rate: u64,
    pub grace: Duration,
    pub deadline: Option<Duration>,
}

impl Pace {
    /// No pause longer than `idle`, and nothing else.
    pub fn idle(idle: Duration) -> Pace {
        Pace {
            idle,
            min_rate: 0,
            grace: Duration::ZERO,
            deadline: None,
        }
    }
}

/// A streamed body under its [`Pace`], with an optional size limit and the request's place: the
/// caller's body ([`CallerBody`]) or the upstream's answer ([`Answer`]).
pub struct Guarded<B = CallerBody> {
    inner: B,
    pace: Pace,
    /// Armed while waiting, for the earliest moment the pace is broken.
    timer: Option<Pin<Box<Sleep>>>,
    /// The first poll, the last frame, the wait under way, and the time waited before it.
    started: Option<Instant>,
    last: Option<Instant>,
    waiting_since: Option<Instant>,
    waited: Duration,
    limit: Option<u64>,
    seen: u64,
    /// Data already read from `inner` (while portvakt tried to keep the body), sent first.
    prefix: Option<Bytes>,
    _permit: Option<Permit>,
    faults: Option<FaultCount>,
}

/// Where a response body the upstream breaks off is counted.
pub struct FaultCount {
    pub metrics: Arc<Metrics>,
    pub route: Arc<String>,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, pace: Pace) -> Self {
        Guarded {
            inner,
            pace,
            timer: None,
            started: None,
            last: None,
            waiting_since: None,
            waited: Duration::ZERO,
            limit: None,
            seen: 0,
            prefix: None,
            _permit: None,
            faults: None,
        }
    }

    /// The body with `data`, already read from it, put back in front.
    pub fn with_prefix(mut self, data: Bytes) -> Self {
        self.prefix = (!data.is_empty()).then_some(data);
        self
    }

    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    pub fn counting_faults(mut self, faults: FaultCount) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Holds the request's place until the body is done.
    pub fn hold(&mut self, permit: Option<Permit>) {
        self._permit = permit;
    }

    /// When the wait under way breaks the pace, and how: the earliest of the idle timeout, the
    /// deadline, and the waiting time at which the average rate falls below the minimum.
    fn due(&self, since: Instant) -> (Instant, BodyError) {
        let pace = &self.pace;
        let mut due = (
            self.last.unwrap_or(since) + pace.idle,
            BodyError::Idle(pace.idle),
        );
        if let (Some(deadline), Some(started)) = (pace.deadline, self.started) {
            if started + deadline < due.0 {
                due = (started + deadline, BodyError::Deadline(deadline));
            }
        }
        if pace.min_rate > 0 {
            let earned = Duration::from_secs_f64(self.seen as f64 / pace.min_rate as f64);
            let at = since + earned.max(pace.grace).saturating_sub(self.waited);
            if at < due.0 {
                due = (at, BodyError::TooSlow(pace.min_rate));
            }
        }
        due
    }
}

impl<B> HttpBody for Guarded<B>
where
    B: HttpBody<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(data) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let now = Instant::now();
                this.started.get_or_insert(now);
                if let Some(since) = this.waiting_since.take() {
                    this.waited += now - since;
                }
                this.last = Some(now);
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(max) = this.limit.filter(|max| this.seen > *max) {
                        return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge(max)))));
                    }
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
                let since = match this.waiting_since {
                    Some(since) => since,
                    None => {
                        let now = Instant::now();
                        this.started.get_or_insert(now);
                        this.waiting_since = Some(now);
                        now
                    }
                };
                let (at, broken) = this.due(since);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        if let Some(f) = &this.faults {
                            f.metrics.count_upstream_error(&f.route, Fault::Timeout);
                        }
                        Poll::Ready(Some(Err(Box::new(broken))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + prefix);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + prefix);
        }
        hint
    }
}

/// What goes upstream: the caller's body streamed through, or kept in memory so the request can be
/// sent again after a 401.
pub type UpstreamBody = Either<Guarded, Full<Bytes>>;

/// An answer's body: streamed from the upstream, or one of portvakt's own small answers. The
/// streamed one is boxed: the answer moves through every layer of the stack and through hyper,
/// and a pointer moves for less than the body's few hundred bytes of state.
pub type Body = Either<Box<Guarded<Answer<UpstreamBody>>>, Full<Bytes>>;

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
