//! The body of an upstream's answer, which gives its HTTP/1.1 connection back to the pool when it
//! has been read to the end, or hands the rest to be read when the caller leaves before.

use super::abandoned::{self, Home, Rest};
use super::Outgoing;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};

/// An answer's body from the upstream. Read to its end, it gives its HTTP/1.1 connection back
/// to the pool; dropped before, the rest is read in the background (`abandoned.rs`).
pub struct Answer<B>
where
    B: Outgoing,
{
    /// `None` only once dropped.
    body: Option<Incoming>,
    back: Option<(Weak<dyn Home<B>>, http1::SendRequest<B>)>,
    ended: bool,
}

impl<B> Answer<B>
where
    B: Outgoing,
{
    pub(super) fn new(
        body: Incoming,
        back: Option<(Weak<dyn Home<B>>, http1::SendRequest<B>)>,
    ) -> Self {
        let ended = body.is_end_stream();
        Answer {
            body: Some(body),
            back,
            ended,
        }
    }
}

impl<B> Drop for Answer<B>
where
    B: Outgoing,
{
    fn drop(&mut self) {
        let Some((pool, tx)) = self.back.take() else {
            return;
        };
        match (self.ended, self.body.take()) {
            (false, Some(rest)) => abandoned::drain(&pool, tx, Rest::Body(rest)),
            _ => {
                if let Some(pool) = pool.upgrade() {
                    pool.checkin(tx);
                }
            }
        }
    }
}

impl<B> Body for Answer<B>
where
    B: Outgoing,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Ok(_))) => {
                self.ended = self.body.as_ref().is_none_or(Body::is_end_stream)
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
