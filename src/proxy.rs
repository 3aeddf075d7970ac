//! The request's path through portvakt, as one chain read top to bottom:
//! route match -> path check -> token (cache) -> header injection -> upstream call -> streamed response.

use crate::error::{Body, ProxyError};
use crate::metrics::{Metrics, RequestLabels};
use crate::route::{self, Route, RouteTable};
use crate::upstream;
use http::header::{AUTHORIZATION, HOST};
use http::{Request, Response, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

/// Everything the request path needs, shared by all connections.
pub struct Proxy {
    pub routes: RouteTable,
    pub metrics: Arc<Metrics>,
    no_route: Arc<String>,
}

impl Proxy {
    pub fn new(routes: RouteTable, metrics: Arc<Metrics>) -> Self {
        Proxy {
            routes,
            metrics,
            no_route: Arc::new(String::new()),
        }
    }

    /// Serves one inbound request. Never fails: errors become problem+json answers here, in one place.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let method = request.method().clone();
        let matched = self
            .routes
            .find(request.uri().path())
            .map(|(route, rest)| (Arc::clone(route), rest.len()));
        let (route_name, result) = match matched {
            None => {
                let error = ProxyError::NoRoute {
                    path: request.uri().path().to_string(),
                    prefixes: self
                        .routes
                        .prefixes()
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                };
                (None, Err(error))
            }
            Some((route, rest_len)) => {
                let name = Arc::clone(&route.name);
                (Some(name), self.forward(&route, rest_len, request).await)
            }
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(route = route_name.as_deref().map_or("-", |s| s.as_str()), %method, status = error.status().as_u16(), %error, "request not forwarded");
                error.to_response(route_name.as_deref().map(String::as_str))
            }
        };
        let elapsed = started.elapsed();
        let labels = RequestLabels {
            route: route_name
                .clone()
                .unwrap_or_else(|| Arc::clone(&self.no_route)),
            status: response.status().as_u16(),
        };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        // The path and query may carry personal data (national identity numbers): not logged at info.
        tracing::info!(
            route = route_name.as_deref().map_or("-", |s| s.as_str()),
            %method,
            status = response.status().as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        response
    }

    async fn forward(
        &self,
        route: &Route,
        rest_len: usize,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, ProxyError> {
        let path = request.uri().path();
        let remainder = &path[path.len() - rest_len..];
        // Checked before the token so a hostile path costs no Maskinporten call.
        if route::escapes_prefix(remainder) {
            return Err(ProxyError::PathEscapes);
        }
        let uri = route
            .upstream
            .uri(remainder, request.uri().query())
            .map_err(|e| ProxyError::Internal(format!("building the upstream URI failed: {e}")))?;

        // No token, no call: the request is never forwarded without one.
        let token = route.token.get().await?;

        let (mut parts, body) = request.into_parts();
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        upstream::strip_hop_by_hop(&mut parts.headers);
        // The client sets Host from the upstream URI; the caller's own credentials never travel on.
        parts.headers.remove(HOST);
        parts.headers.insert(AUTHORIZATION, token.bearer().clone());
        for (name, value) in &route.headers {
            parts.headers.insert(name.clone(), value.clone());
        }

        let call = route.http.request(Request::from_parts(parts, body));
        let mut response = match tokio::time::timeout(route.timeout, call).await {
            Err(_) => {
                return Err(ProxyError::UpstreamTimeout {
                    upstream: route.upstream.to_string(),
                    after: route.timeout,
                })
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(ProxyError::UpstreamUnreachable {
                    upstream: route.upstream.to_string(),
                    reason: crate::error::chain(&e),
                })
            }
            Ok(Err(e)) => {
                return Err(ProxyError::UpstreamFailed {
                    upstream: route.upstream.to_string(),
                    reason: crate::error::chain(&e),
                })
            }
            Ok(Ok(response)) => response,
        };
        upstream::strip_hop_by_hop(response.headers_mut());
        *response.version_mut() = Version::HTTP_11;
        Ok(response.map(Either::Left))
    }
}
