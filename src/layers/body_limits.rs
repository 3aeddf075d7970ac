//! The route's limits on both bodies. The caller's body is held to the route's size limit
//! (`max_body_bytes`) and pace (`body_min_rate`, `body_timeout_seconds`, idle pauses), so a slow
//! or endless caller cannot hold a place; the upstream's answer to the route's idle timeout, its
//! breaks counted as upstream errors. A decided request's refusals get its route here.

use crate::observe::metrics::Metrics;
use crate::pipeline::{Refused, Routed, Served};
use crate::proxy::forward::Upstream;
use crate::request::body::{FaultCount, Guarded, Pace};
use crate::request::error::ProxyError;
use crate::request::route::Route;
use crate::server::CallerBody;
use http_body_util::Either;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower::{Layer, Service};

#[derive(Clone)]
pub struct BodyLimitsLayer {
    metrics: Arc<Metrics>,
}

impl BodyLimitsLayer {
    pub fn new(metrics: &Arc<Metrics>) -> Self {
        BodyLimitsLayer {
            metrics: Arc::clone(metrics),
        }
    }
}

impl<S> Layer<S> for BodyLimitsLayer {
    type Service = BodyLimits<S>;

    fn layer(&self, inner: S) -> BodyLimits<S> {
        BodyLimits {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Clone)]
pub struct BodyLimits<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Routed<CallerBody>> for BodyLimits<S>
where
    S: Service<Routed<Guarded>, Response = Upstream, Error = ProxyError>,
    S::Future: Unpin,
{
    type Response = Served;
    type Error = Refused;
    type Future = Limited<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Refused>> {
        self.inner
            .poll_ready(cx)
            .map_err(|error| Refused { route: None, error })
    }

    fn call(&mut self, routed: Routed<CallerBody>) -> Limited<S::Future> {
        let Routed { plan, request } = routed;
        let route = Arc::clone(&plan.route);
        let request =
            request.map(|body| Guarded::new(body, route.pace).with_limit(route.max_body_bytes));
        Limited {
            inner: self.inner.call(Routed { plan, request }),
            route,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

pub struct Limited<F> {
    inner: F,
    route: Arc<Route>,
    metrics: Arc<Metrics>,
}

impl<F> Future for Limited<F>
where
    F: Future<Output = Result<Upstream, ProxyError>> + Unpin,
{
    type Output = Result<Served, Refused>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = ready!(Pin::new(&mut self.inner).poll(cx));
        let route = &self.route;
        Poll::Ready(match answer {
            Ok(response) => {
                let faults = FaultCount {
                    metrics: Arc::clone(&self.metrics),
                    route: Arc::clone(&route.name),
                };
                let response = response.map(|body| {
                    Either::Left(Box::new(
                        Guarded::new(body, Pace::idle(route.idle_timeout)).counting_faults(faults),
                    ))
                });
                Ok(Served {
                    route: Arc::clone(&route.name),
                    response,
                })
            }
            Err(error) => Err(Refused {
                route: Some(Arc::clone(&route.name)),
                error,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testing::{framed, plan, snapshot};
    use http_body_util::BodyExt as _;
    use tower::{service_fn, ServiceExt as _};

    /// Reads the body as the upstream client would, and refuses with what reading it said.
    fn reader() -> impl Service<
        Routed<Guarded>,
        Response = Upstream,
        Error = ProxyError,
        Future = Pin<Box<dyn Future<Output = Result<Upstream, ProxyError>> + Send>>,
    > + Clone {
        service_fn(|routed: Routed<Guarded>| {
            Box::pin(async move {
                let read = routed.request.into_body().collect().await;
                Err(match read {
                    Ok(all) => ProxyError::Internal(format!("read {} bytes", all.to_bytes().len())),
                    Err(e) => ProxyError::Internal(format!("cut: {e}")),
                })
            }) as Pin<Box<dyn Future<Output = _> + Send>>
        })
    }

    async fn outcome(route: &str, body: &[u8]) -> Refused {
        let snapshot = snapshot(route);
        let request = framed("/nav/x", body.len(), body).await;
        let routed = Routed {
            plan: plan(&snapshot, "/nav/x"),
            request,
        };
        let limits = BodyLimitsLayer::new(&Arc::new(Metrics::new())).layer(reader());
        limits.oneshot(routed).await.err().unwrap()
    }

    #[tokio::test]
    async fn the_callers_body_is_held_to_the_routes_size_limit() {
        let refused = outcome("    max_body_bytes: 8\n", b"0123456789").await;
        assert_eq!(refused.route.as_deref().map(String::as_str), Some("nav"));
        assert!(
            refused.error.to_string().contains("cut:"),
            "{}",
            refused.error
        );
        let refused = outcome("    max_body_bytes: 10\n", b"0123456789").await;
        assert!(
            refused.error.to_string().contains("read 10 bytes"),
            "{}",
            refused.error
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_stops_sending_is_cut_at_the_routes_deadline() {
        let snapshot = snapshot("    body_deadline_seconds: 5\n");
        // The head promises ten bytes, and only four come.
        let routed = Routed {
            plan: plan(&snapshot, "/nav/x"),
            request: framed("/nav/x", 10, b"0123").await,
        };
        let limits = BodyLimitsLayer::new(&Arc::new(Metrics::new())).layer(reader());
        let refused = limits.oneshot(routed).await.err().unwrap();
        assert!(
            refused.error.to_string().contains("cut:"),
            "{}",
            refused.error
        );
        assert!(refused.error.to_string().contains('5'), "{}", refused.error);
    }
}
