//! What every request leaves behind: its metrics (`portvakt_requests_total`, its duration), its
//! access line, and for a refusal a warning and the status page's entry. A refusal becomes its
//! problem+json answer here, the one place portvakt answers for itself.

use crate::observe::metrics::{self, CutLabels, Metrics, RequestLabels};
use crate::observe::recent::{RecentError, RecentErrors};
use crate::observe::request_id;
use crate::pipeline::{Refused, Served};
use crate::proxy::Peer;
use crate::request::body::Body;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::time::Instant;
use tower::{Layer, Service};

#[derive(Clone)]
pub struct AccessLogLayer {
    log: Arc<Log>,
}

/// Where requests are counted and remembered.
struct Log {
    metrics: Arc<Metrics>,
    recent: Arc<RecentErrors>,
    /// The route label of a request that found none.
    no_route: Arc<String>,
}

impl AccessLogLayer {
    pub fn new(metrics: &Arc<Metrics>, recent: &Arc<RecentErrors>) -> Self {
        AccessLogLayer {
            log: Arc::new(Log {
                metrics: Arc::clone(metrics),
                recent: Arc::clone(recent),
                no_route: Arc::new(String::new()),
            }),
        }
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            log: Arc::clone(&self.log),
        }
    }
}

#[derive(Clone)]
pub struct AccessLog<S> {
    inner: S,
    log: Arc<Log>,
}

impl<S, B> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Served, Error = Refused>,
    S::Future: Unpin,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            // The services below are always ready; one that is not is told at its request.
            Err(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: Request<B>) -> Logged<S::Future> {
        let seen = Seen {
            started: Instant::now(),
            method: request.method().clone(),
            peer: Peer::of(&request),
        };
        Logged {
            inner: self.inner.call(request),
            seen,
            log: Arc::clone(&self.log),
        }
    }
}

/// What the access line says of a request, taken as it arrived.
struct Seen {
    started: Instant,
    method: Method,
    peer: IpAddr,
}

pub struct Logged<F> {
    inner: F,
    seen: Seen,
    log: Arc<Log>,
}

impl<F> Future for Logged<F>
where
    F: Future<Output = Result<Served, Refused>> + Unpin,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = ready!(Pin::new(&mut self.inner).poll(cx));
        // The request's id, from the task (the request id layer set it), not by a second look
        // through the headers.
        let id = request_id::current().unwrap_or(HeaderValue::from_static("-"));
        Poll::Ready(Ok(self.log.finish(&self.seen, &id, outcome)))
    }
}

impl Log {
    /// The request's metrics and access line, and for a refusal its warning, its status page
    /// entry and its answer.
    fn finish(
        &self,
        seen: &Seen,
        id: &HeaderValue,
        outcome: Result<Served, Refused>,
    ) -> Response<Body> {
        let request_id = request_id::as_str(id);
        let (route, status, answer) = match outcome {
            Ok(Served { route, response }) => (Some(route), response.status(), Ok(response)),
            Err(Refused { route, error }) => {
                let status = self.refused(route.as_ref(), seen, request_id, &error);
                (route, status, Err(error))
            }
        };
        let route_label = route.as_ref().map_or("-", |s| s.as_str());
        let elapsed = seen.started.elapsed();
        let labels = RequestLabels {
            route: route
                .as_ref()
                .map_or_else(|| Arc::clone(&self.no_route), Arc::clone),
            method: metrics::method_class(&seen.method),
            status: status.as_u16(),
        };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        // The path and query may carry personal data (national identity numbers): not logged at info.
        tracing::info!(
            target: "portvakt::access",
            route = route_label,
            method = %seen.method,
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            request_id,
            "request"
        );
        answer.unwrap_or_else(|error| error.to_response(route.as_deref().map(String::as_str)))
    }

    /// A refusal's warning, status page entry and fault counts; its status.
    fn refused(
        &self,
        route: Option<&Arc<String>>,
        seen: &Seen,
        request_id: &str,
        error: &crate::request::error::ProxyError,
    ) -> StatusCode {
        let route_label = route.map_or("-", |s| s.as_str());
        if let (Some(fault), Some(route)) = (error.upstream_fault(), route) {
            self.metrics.count_upstream_error(route, fault);
        }
        if let Some(reason) = error.body_cut() {
            self.metrics
                .slow_callers_cut
                .get_or_create(&CutLabels { reason })
                .inc();
        }
        let (method, peer) = (&seen.method, seen.peer);
        tracing::warn!(route = route_label, %method, status = error.status().as_u16(), %error, %peer, request_id, "request not forwarded");
        self.recent.push(RecentError {
            at: std::time::SystemTime::now(),
            route: route_label.to_string(),
            status: error.status().as_u16(),
            problem: error.slug(),
            message: error.to_string(),
            request_id: request_id.to_string(),
        });
        error.status()
    }
}

#[cfg(test)]
// The stubs return what the layer below returns, a refusal by value, as the real ones do.
#[allow(clippy::result_large_err, clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::layers::testing::own;
    use crate::request::error::ProxyError;
    use http_body_util::BodyExt as _;
    use std::future::{ready, Ready};
    use tower::{service_fn, ServiceExt as _};

    fn logged(
        outcome: fn() -> Result<Served, Refused>,
    ) -> (
        AccessLog<
            impl Service<
                Request<()>,
                Response = Served,
                Error = Refused,
                Future = Ready<Result<Served, Refused>>,
            >,
        >,
        Arc<Metrics>,
        Arc<RecentErrors>,
    ) {
        let (metrics, recent) = (Arc::new(Metrics::new()), Arc::new(RecentErrors::default()));
        let inner = service_fn(move |_: Request<()>| ready(outcome()));
        (
            AccessLogLayer::new(&metrics, &recent).layer(inner),
            metrics,
            recent,
        )
    }

    fn request() -> Request<()> {
        Request::builder().method("POST").body(()).unwrap()
    }

    #[tokio::test]
    async fn a_refusal_is_answered_counted_and_remembered() {
        let (service, metrics, recent) = logged(|| {
            Err(Refused {
                route: Some(Arc::new("nav".into())),
                error: ProxyError::PathEscapes,
            })
        });
        let id = HeaderValue::from_static("id-1");
        let answer = request_id::scope(id, service.oneshot(request()))
            .await
            .unwrap();
        assert_eq!(answer.status(), 400);
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["type"], "urn:portvakt:problem:path-escapes-route");
        assert_eq!(problem["route"], "nav");
        let remembered = recent.list();
        assert_eq!(remembered.len(), 1);
        assert_eq!(remembered[0].request_id, "id-1");
        assert_eq!(remembered[0].route, "nav");
        let text = metrics.encode();
        assert!(
            text.contains(r#"portvakt_requests_total{route="nav",method="POST",status="400"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_answer_goes_back_as_it_is_and_is_counted() {
        let (service, metrics, recent) = logged(|| {
            Ok(Served {
                route: Arc::new("nav".into()),
                response: own(StatusCode::CREATED, "made"),
            })
        });
        let answer = service.oneshot(request()).await.unwrap();
        assert_eq!(answer.status(), 201);
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"made");
        assert!(recent.list().is_empty());
        let text = metrics.encode();
        assert!(
            text.contains(r#"portvakt_requests_total{route="nav",method="POST",status="201"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_request_without_a_route_is_counted_without_one() {
        let (service, metrics, _) = logged(|| {
            Err(Refused {
                route: None,
                error: ProxyError::NoRoute {
                    path: "/x".into(),
                    prefixes: vec!["/nav/".into()],
                },
            })
        });
        assert_eq!(service.oneshot(request()).await.unwrap().status(), 404);
        let text = metrics.encode();
        assert!(
            text.contains(r#"portvakt_requests_total{route="",method="POST",status="404"} 1"#),
            "{text}"
        );
    }
}
