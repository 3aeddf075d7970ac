//! The request's id (`x-request-id`): the caller's when it is sane, else a new one, written into
//! the request's headers (so it goes upstream), set for the work the request causes (so a token
//! fetch it starts names it), and put on the answer. With trace export or debug logging, the
//! request also gets its span here, continuing the caller's trace.

use crate::observe::request_id::{self, Scoped, HEADER};
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tower::{Layer, Service};
use tracing::instrument::{Instrument as _, Instrumented};

#[derive(Clone, Copy)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner }
    }
}

#[derive(Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = WithId<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> WithId<S::Future> {
        let id = request_id::of(request.headers_mut());
        // A span per request costs several percent of throughput (docs/performance.md), so there
        // is one only for trace export and debug logging; the lines a request causes at info and
        // above name its id themselves.
        let span =
            if crate::observe::telemetry::exporting() || tracing::enabled!(tracing::Level::DEBUG) {
                let span = tracing::info_span!("request", request_id = request_id::as_str(&id));
                crate::observe::telemetry::continue_trace(&span, request.headers());
                span
            } else {
                tracing::Span::none()
            };
        // The layers' `call`s only make futures; what they log, they log as they are polled,
        // inside the scope.
        let inner = self.inner.call(request).instrument(span);
        WithId {
            inner: request_id::scope(id.clone(), inner),
            id,
        }
    }
}

pin_project! {
    /// The inner future, polled as work of its request (and in its span), its answer given the id.
    pub struct WithId<F> {
        #[pin]
        inner: Scoped<Instrumented<F>>,
        id: HeaderValue,
    }
}

impl<F, R, E> Future for WithId<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut answer = ready!(this.inner.poll(cx));
        if let Ok(response) = &mut answer {
            response.headers_mut().insert(HEADER, this.id.clone());
        }
        Poll::Ready(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{service_fn, ServiceExt as _};

    /// What the inner service saw: the id in the headers and the task's id.
    async fn seen(request: Request<()>) -> Result<Response<String>, ()> {
        let header = request.headers()[HEADER].to_str().unwrap().to_string();
        let current = request_id::current().unwrap();
        tokio::task::yield_now().await;
        assert_eq!(request_id::current().unwrap(), current, "kept across polls");
        Ok(Response::new(format!(
            "{header} {}",
            current.to_str().unwrap()
        )))
    }

    #[tokio::test]
    async fn keeps_a_callers_id_everywhere() {
        let request = Request::builder()
            .header("x-request-id", "abc-123")
            .body(())
            .unwrap();
        let answer = RequestIdLayer
            .layer(service_fn(|r| Box::pin(seen(r))))
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(answer.headers()[HEADER], "abc-123");
        assert_eq!(answer.body(), "abc-123 abc-123");
    }

    #[tokio::test]
    async fn makes_one_for_a_request_without_a_sane_id() {
        for caller in [None, Some("has space")] {
            let mut request = Request::new(());
            if let Some(id) = caller {
                request
                    .headers_mut()
                    .insert(HEADER, HeaderValue::from_static(id));
            }
            let answer = RequestIdLayer
                .layer(service_fn(|r| Box::pin(seen(r))))
                .oneshot(request)
                .await
                .unwrap();
            let id = answer.headers()[HEADER].to_str().unwrap().to_string();
            assert_eq!(id.len(), 32);
            assert_eq!(answer.body(), &format!("{id} {id}"));
        }
    }
}
