//! The request's path through portvakt, as one chain read top to bottom:
//! route match -> path check -> party -> token (cache) -> header injection -> upstream call
//! -> on 401, one retry with a fresh token -> streamed response.

use crate::error::{Body, ProxyError};
use crate::metrics::{Metrics, RequestLabels, RetryLabels};
use crate::route::{self, Route, RouteTable};
use crate::upstream::{self, UpstreamBody};
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::{Body as _, Incoming};
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
        // A party off the route's list is refused here, before any Maskinporten call.
        let slot = route.parties.select(request.headers())?;

        // No token, no call: the request is never forwarded without one.
        let token = slot.get().await?;

        let (mut parts, body) = request.into_parts();
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        upstream::strip_hop_by_hop(&mut parts.headers);
        // The client sets Host from the upstream URI; the caller's own credentials and portvakt's
        // party headers never travel on.
        parts.headers.remove(HOST);
        for header in route.parties.headers() {
            parts.headers.remove(header);
        }
        for (name, value) in &route.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        let body = match route.retry_body_max {
            Some(max) => keep_if_small(body, max).await?,
            None => Either::Left(body),
        };
        // A request whose body portvakt holds can be sent again with a fresh token after a 401.
        let replay = match &body {
            Either::Right(kept) => Some(Replay {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: parts.headers.clone(),
                body: kept.clone(),
            }),
            Either::Left(_) => None,
        };
        parts.headers.insert(AUTHORIZATION, token.bearer().clone());
        let response = send(route, Request::from_parts(parts, body)).await?;
        if response.status() != StatusCode::UNAUTHORIZED || route.retry_body_max.is_none() {
            return Ok(relay(response));
        }

        // The upstream no longer accepts the token (revoked, rotated, clock): drop it for everyone.
        let (result, replay) = match (slot.invalidate(&token), replay) {
            (false, _) => ("suppressed", None),
            (true, None) => ("not_replayable", None),
            (true, Some(replay)) => ("retried", Some(replay)),
        };
        self.metrics
            .unauthorized_retries
            .get_or_create(&RetryLabels {
                route: Arc::clone(&route.name),
                result,
            })
            .inc();
        let Some(replay) = replay else {
            tracing::warn!(route = %route.name, result, "upstream answered 401: not retried");
            return Ok(relay(response));
        };
        drop(response);
        tracing::info!(route = %route.name, "upstream answered 401: retrying once with a fresh token");
        let token = slot.get().await?;
        Ok(relay(send(route, replay.with(token.bearer())).await?))
    }
}

/// A request as it went upstream, minus its token, with the body portvakt kept: enough to send it
/// again after a 401.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Full<Bytes>,
}

impl Replay {
    fn with(self, bearer: &HeaderValue) -> Request<UpstreamBody> {
        let mut request = Request::new(Either::Right(self.body));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.headers_mut() = self.headers;
        request.headers_mut().insert(AUTHORIZATION, bearer.clone());
        request
    }
}

/// Keeps a body of known size up to `max` bytes in memory (so the request can be replayed), and
/// streams anything larger or of unknown size.
async fn keep_if_small(body: Incoming, max: u64) -> Result<UpstreamBody, ProxyError> {
    if body.is_end_stream() {
        return Ok(Either::Right(Full::new(Bytes::new())));
    }
    match body.size_hint().exact() {
        Some(len) if len <= max => {
            let bytes = body
                .collect()
                .await
                .map_err(|e| ProxyError::RequestBody(e.to_string()))?
                .to_bytes();
            Ok(Either::Right(Full::new(bytes)))
        }
        _ => Ok(Either::Left(body)),
    }
}

/// Sends one request upstream within the route's time limit for response headers.
async fn send(
    route: &Route,
    request: Request<UpstreamBody>,
) -> Result<Response<Incoming>, ProxyError> {
    match tokio::time::timeout(route.timeout, route.http.request(request)).await {
        Err(_) => Err(ProxyError::UpstreamTimeout {
            upstream: route.upstream.to_string(),
            after: route.timeout,
        }),
        Ok(Err(e)) if e.is_connect() => Err(ProxyError::UpstreamUnreachable {
            upstream: route.upstream.to_string(),
            reason: crate::error::chain(&e),
        }),
        Ok(Err(e)) => Err(ProxyError::UpstreamFailed {
            upstream: route.upstream.to_string(),
            reason: crate::error::chain(&e),
        }),
        Ok(Ok(response)) => Ok(response),
    }
}

/// The upstream's answer as it goes back to the caller: streamed, without hop-by-hop headers.
fn relay(mut response: Response<Incoming>) -> Response<Body> {
    upstream::strip_hop_by_hop(response.headers_mut());
    *response.version_mut() = Version::HTTP_11;
    response.map(Either::Left)
}
