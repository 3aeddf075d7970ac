//! A panic in the service (a bug) answers its request 500 with a problem and leaves an error line
//! naming the request, instead of dropping the caller's connection with no word. The caller's
//! other requests and every other connection go on; the places and tokens the request held are
//! given back as the panic unwinds.

use crate::pipeline::{Refused, Served};
use crate::request::error::ProxyError;
use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::{Layer, Service};

#[derive(Clone, Copy)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

#[derive(Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, R> Service<R> for CatchPanic<S>
where
    S: Service<R, Response = Served, Error = Refused>,
    S::Future: Unpin,
{
    type Response = Served;
    type Error = Refused;
    type Future = Caught<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Refused>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Caught<S::Future> {
        // Unwind safety: a panicking request's future is dropped and never polled again, and the
        // state it shares with others (token slots, places, pools) is behind locks that recover.
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(inner) => Caught::Running(inner),
            Err(panic) => Caught::Panicked(Some(panic)),
        }
    }
}

pub enum Caught<F> {
    Running(F),
    /// Panicked in `call`, to be told at the first poll.
    Panicked(Option<Box<dyn Any + Send>>),
    Done,
}

impl<F> Future for Caught<F>
where
    F: Future<Output = Result<Served, Refused>> + Unpin,
{
    type Output = Result<Served, Refused>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let panic = match &mut *self {
            Caught::Running(inner) => {
                match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
                    Ok(poll) => return poll,
                    Err(panic) => panic,
                }
            }
            Caught::Panicked(panic) => panic.take().unwrap_or_else(|| Box::new("")),
            Caught::Done => return Poll::Pending,
        };
        // The panicked future is dropped here, inside the request's scope.
        *self = Caught::Done;
        Poll::Ready(Err(refusal(panic.as_ref())))
    }
}

/// The panic's message on an error line, and the 500 the caller gets (which does not repeat it:
/// a bug's words are for the operator).
fn refusal(panic: &(dyn Any + Send)) -> Refused {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let request_id = crate::observe::request_id::current();
    tracing::error!(
        panic = message,
        request_id = request_id
            .as_ref()
            .map_or("-", crate::observe::request_id::as_str),
        "request handler panicked; answered 500"
    );
    Refused {
        route: None,
        error: ProxyError::Internal(
            "the request's handler failed (a bug; see portvakt's log)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::access_log::AccessLogLayer;
    use crate::layers::testing::own;
    use crate::observe::metrics::Metrics;
    use crate::observe::recent::RecentErrors;
    use http::{Request, StatusCode};
    use std::sync::Arc;
    use tower::{service_fn, ServiceExt as _};

    #[tokio::test]
    async fn a_panic_while_serving_is_a_500_problem() {
        let inner = service_fn(|request: Request<()>| {
            Box::pin(async move {
                tokio::task::yield_now().await;
                if request.uri().path() == "/boom" {
                    panic!("a bug");
                }
                Ok::<_, Refused>(Served {
                    route: Arc::new("nav".into()),
                    response: own(StatusCode::OK, "fine"),
                })
            })
        });
        let recent = Arc::new(RecentErrors::default());
        let service = AccessLogLayer::new(&Arc::new(Metrics::new()), &recent)
            .layer(CatchPanicLayer.layer(inner));
        let boom = Request::builder().uri("/boom").body(()).unwrap();
        let answer = service.clone().oneshot(boom).await.unwrap();
        assert_eq!(answer.status(), 500);
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
        assert_eq!(recent.list()[0].problem, "internal");
        // The service goes on serving.
        let fine = Request::builder().uri("/fine").body(()).unwrap();
        assert_eq!(service.oneshot(fine).await.unwrap().status(), 200);
    }

    #[tokio::test]
    async fn a_panic_before_the_future_is_made_is_caught_too() {
        let inner = service_fn(
            |_: Request<()>| -> std::future::Ready<Result<Served, Refused>> { panic!("in call") },
        );
        let refused = CatchPanicLayer
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .err()
            .unwrap();
        assert_eq!(refused.error.status(), 500);
        assert!(refused.route.is_none());
    }
}
