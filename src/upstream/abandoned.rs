//! An HTTP/1.1 exchange whose caller left before the answer was read. hyper closes a connection
//! whose answer nobody waits for, so every caller that gives up (a legacy client's short timeout
//! against a slow NAV call) would cost a connection, and the next request a new TCP and TLS
//! handshake. Instead, the rest of the answer is read and dropped in a task of its own, within
//! bounds of time, size and number, and the connection goes back to the pool. The request itself
//! was sent either way: reading its answer changes nothing the upstream sees.
//!
//! HTTP/2 needs none of this: hyper resets the abandoned stream and the connection carries on.

use super::Outgoing;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::{http1, TrySendError};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

/// How long an abandoned answer may take to arrive and be read to its end.
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// An abandoned answer with more left than this closes its connection instead: reading it would
/// cost more than a new connection.
const DRAIN_MAX: u64 = 1 << 20;

/// At most this many abandoned answers are read at once per upstream; beyond, connections close.
/// It bounds what callers that come and go can make portvakt hold open towards an upstream.
const MAX_DRAINING: usize = 64;

/// The answer's head as hyper will deliver it, boxed so that it can be handed to a task.
type Head<B> =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, TrySendError<Request<B>>>> + Send>>;

/// What is left of an abandoned exchange.
pub(super) enum Rest<B> {
    /// The answer's head has not come yet.
    Head(Head<B>),
    /// The head came, and this much of the body is unread.
    Body(Incoming),
}

/// Where an HTTP/1.1 connection goes back once its answer is read: the pool, which this file and
/// `answer.rs` know only through this.
pub(super) trait Home<B>: Send + Sync {
    fn checkin(self: Arc<Self>, tx: http1::SendRequest<B>);
    /// How many abandoned answers are being read.
    fn draining(&self) -> &Draining;
}

/// How many abandoned answers of one upstream are being read now.
#[derive(Default)]
pub(super) struct Draining(AtomicUsize);

/// Waits for the answer's head of a request sent on `tx`. Dropped before the head came (the
/// caller left), it hands the rest of the exchange to [`drain`].
pub(super) struct Unanswered<B: Outgoing> {
    waiting: Option<(Head<B>, http1::SendRequest<B>)>,
    pool: Weak<dyn Home<B>>,
}

impl<B: Outgoing> Unanswered<B> {
    pub(super) fn new(
        mut tx: http1::SendRequest<B>,
        request: Request<B>,
        pool: Weak<dyn Home<B>>,
    ) -> Self {
        let head: Head<B> = Box::pin(tx.try_send_request(request));
        Unanswered {
            waiting: Some((head, tx)),
            pool,
        }
    }
}

impl<B: Outgoing> Future for Unanswered<B> {
    type Output = (
        Result<Response<Incoming>, TrySendError<Request<B>>>,
        http1::SendRequest<B>,
    );

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some((head, _)) = self.waiting.as_mut() else {
            return Poll::Pending;
        };
        let answered = ready!(head.as_mut().poll(cx));
        match self.waiting.take() {
            Some((_, tx)) => Poll::Ready((answered, tx)),
            None => Poll::Pending,
        }
    }
}

impl<B: Outgoing> Drop for Unanswered<B> {
    fn drop(&mut self) {
        if let Some((head, tx)) = self.waiting.take() {
            drain(&self.pool, tx, Rest::Head(head));
        }
    }
}

/// Reads the rest of an abandoned exchange in a task of its own and gives its connection back to
/// the pool, if it ends within the bounds; else the connection closes, as hyper would have.
pub(super) fn drain<B: Outgoing>(
    pool: &Weak<dyn Home<B>>,
    tx: http1::SendRequest<B>,
    rest: Rest<B>,
) {
    let Some(strong) = pool.upgrade() else {
        return;
    };
    let draining = &strong.draining().0;
    if draining.fetch_add(1, Ordering::Relaxed) >= MAX_DRAINING {
        draining.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    drop(strong);
    let pool = Weak::clone(pool);
    tokio::spawn(async move {
        let read = tokio::time::timeout(DRAIN_FOR, read_to_end(rest)).await;
        if let Some(pool) = pool.upgrade() {
            pool.draining().0.fetch_sub(1, Ordering::Relaxed);
            if matches!(read, Ok(true)) {
                pool.checkin(tx);
            }
        }
    });
}

/// Whether the answer arrived and was read to its end, within [`DRAIN_MAX`] bytes.
async fn read_to_end<B>(rest: Rest<B>) -> bool {
    let mut body = match rest {
        Rest::Head(head) => match head.await {
            Ok(answer) => answer.into_body(),
            Err(_) => return false,
        },
        Rest::Body(body) => body,
    };
    if body.size_hint().lower() > DRAIN_MAX {
        return false;
    }
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return false;
        };
        read += frame.data_ref().map_or(0, |data| data.len() as u64);
        if read > DRAIN_MAX {
            return false;
        }
    }
    true
}
