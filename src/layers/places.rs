//! A place among the requests served at once (`inbound.max_concurrent_requests`), within the
//! caller address's share (`inbound.max_concurrent_per_address`), taken before anything else is
//! done for the request and held to the answer's last byte. A request without a place is refused
//! 503 at once: places are never waited for, so a flood is answered, not queued.

use crate::pipeline::{Refused, Served};
use crate::proxy::Peer;
use crate::request::error::ProxyError;
use crate::request::permits::{Full, Permit, Permits};
use http::Request;
use http_body_util::Either;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower::{Layer, Service};

/// The route a path would take, to label a request refused here (its metrics and problem name
/// the route it was for, as every refusal's do).
pub type RouteOf = Arc<dyn Fn(&str) -> Option<Arc<String>> + Send + Sync>;

#[derive(Clone)]
pub struct PlacesLayer {
    permits: Arc<Permits>,
    route_of: RouteOf,
}

impl PlacesLayer {
    pub fn new(permits: &Arc<Permits>, route_of: RouteOf) -> Self {
        PlacesLayer {
            permits: Arc::clone(permits),
            route_of,
        }
    }
}

impl<S> Layer<S> for PlacesLayer {
    type Service = Places<S>;

    fn layer(&self, inner: S) -> Places<S> {
        Places {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Places<S> {
    inner: S,
    layer: PlacesLayer,
}

impl<S, B> Service<Request<B>> for Places<S>
where
    S: Service<Request<B>, Response = Served, Error = Refused>,
    S::Future: Unpin,
{
    type Response = Served;
    type Error = Refused;
    type Future = Placed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Refused>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Placed<S::Future> {
        match self.layer.permits.take(Peer::of(&request)) {
            Ok(permit) => Placed::Admitted {
                inner: self.inner.call(request),
                permit: Some(permit),
            },
            Err(full) => Placed::Refused(Some(Refused {
                route: (self.layer.route_of)(request.uri().path()),
                error: match full {
                    Full::All(max) => ProxyError::Overloaded(max),
                    Full::Address(share) => ProxyError::AddressOverloaded(share),
                },
            })),
        }
    }
}

pub enum Placed<F> {
    Admitted { inner: F, permit: Option<Permit> },
    Refused(Option<Refused>),
}

impl<F> Future for Placed<F>
where
    F: Future<Output = Result<Served, Refused>> + Unpin,
{
    type Output = Result<Served, Refused>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            Placed::Admitted { inner, permit } => {
                let Served { route, response } = ready!(Pin::new(inner).poll(cx))?;
                // The place goes with the answer's body; a refusal gives it back here.
                let permit = permit.take();
                let response = response.map(|body| match body {
                    Either::Left(mut streamed) => {
                        streamed.hold(permit);
                        Either::Left(streamed)
                    }
                    own => own,
                });
                Poll::Ready(Ok(Served { route, response }))
            }
            Placed::Refused(refused) => match refused.take() {
                Some(refused) => Poll::Ready(Err(refused)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::testing::own;
    use http::StatusCode;
    use std::net::SocketAddr;
    use tokio::sync::Semaphore;
    use tower::{service_fn, ServiceExt as _};

    fn from(address: &str) -> Request<()> {
        let mut request = Request::builder().uri("/nav/x").body(()).unwrap();
        let peer: SocketAddr = format!("{address}:4000").parse().unwrap();
        request.extensions_mut().insert(Peer(peer));
        request
    }

    #[tokio::test]
    async fn places_are_held_while_served_and_refused_beyond() {
        let permits = Arc::new(Permits::new(2, 1));
        let route_of: RouteOf = Arc::new(|path: &str| {
            path.starts_with("/nav/")
                .then(|| Arc::new("nav".to_string()))
        });
        let open = Arc::new(Semaphore::new(0));
        let inner = {
            let open = Arc::clone(&open);
            service_fn(move |_: Request<()>| {
                let open = Arc::clone(&open);
                Box::pin(async move {
                    let _ = open.acquire().await;
                    Ok::<_, Refused>(Served {
                        route: Arc::new("nav".into()),
                        response: own(StatusCode::OK, "done"),
                    })
                })
            })
        };
        let service = PlacesLayer::new(&permits, route_of).layer(inner);
        let first = tokio::spawn(service.clone().oneshot(from("10.0.0.1")));
        while permits.in_flight() < 1 {
            tokio::task::yield_now().await;
        }
        // The same address again: its share (1) is taken.
        let refused = service
            .clone()
            .oneshot(from("10.0.0.1"))
            .await
            .err()
            .unwrap();
        assert!(matches!(refused.error, ProxyError::AddressOverloaded(1)));
        assert_eq!(refused.route.as_deref().map(String::as_str), Some("nav"));
        let second = tokio::spawn(service.clone().oneshot(from("10.0.0.2")));
        while permits.in_flight() < 2 {
            tokio::task::yield_now().await;
        }
        // Another address: every place (2) is taken.
        let refused = service
            .clone()
            .oneshot(from("10.0.0.3"))
            .await
            .err()
            .unwrap();
        assert!(matches!(refused.error, ProxyError::Overloaded(2)));
        assert_eq!(refused.error.status(), 503);
        open.add_permits(2);
        assert_eq!(first.await.unwrap().ok().unwrap().response.status(), 200);
        assert_eq!(second.await.unwrap().ok().unwrap().response.status(), 200);
        // portvakt's own answers give their place back when they are made.
        assert_eq!(permits.in_flight(), 0);
    }
}
