//! The request's path through portvakt, as one chain read top to bottom:
//! route match -> path check -> party -> token (cache) -> header injection -> upstream call
//! -> on 401, one retry with a fresh token -> streamed response.

use crate::affinity::{self, Affinity};
use crate::body::{self, BodyError, Guarded};
use crate::config::AllowList;
use crate::error::{Body, ProxyError};
use crate::metrics::{self, Metrics, RequestLabels, RetryLabels};
use crate::recent::{RecentError, RecentErrors};
use crate::request_id;
use crate::route::{self, Route, RouteTable};
use crate::token::cache::{Token, TokenSlot};
use crate::upstream::{self, Fault, UpstreamBody};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::{Body as _, Incoming};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

/// What a (re)loaded configuration decides about requests: the routes and who may call.
pub struct Snapshot {
    pub routes: RouteTable,
    /// `inbound.allow`; `None` lets every address in.
    pub allow: Option<AllowList>,
}

/// Everything the request path needs, shared by all connections. A reload swaps the snapshot;
/// requests under way finish on the one they started with.
pub struct Proxy {
    current: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    no_route: Arc<String>,
    /// The last requests answered with an error, for the status page.
    pub recent: RecentErrors,
}

/// The caller's address, put into each request's extensions by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Proxy {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>, max_in_flight: usize) -> Self {
        Proxy {
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            no_route: Arc::new(String::new()),
            recent: RecentErrors::default(),
        }
    }

    /// The routes and rules in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Requests admitted and not yet finished (their permit is held to the last body byte).
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }

    /// A place among the requests served at once, held to the answer's last byte.
    pub(crate) fn permit(&self) -> Result<OwnedSemaphorePermit, ProxyError> {
        Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| ProxyError::Overloaded(self.max_in_flight))
    }

    /// Puts a reloaded configuration in force for the requests that arrive from now on.
    pub fn replace(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Serves one inbound request under its request id: the caller's `x-request-id`, or a new one.
    /// The id is on every log line the request causes, goes upstream, and comes back in the answer.
    pub async fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> Response<Body> {
        let id = request_id::of(request.headers_mut());
        // A span per request costs several percent of throughput (docs/performance.md), so there
        // is one only for trace export and debug logging; the lines a request causes at info and
        // above name its id themselves, and a token fetch it starts takes the id from the task.
        let mut response =
            if crate::telemetry::exporting() || tracing::enabled!(tracing::Level::DEBUG) {
                let span = tracing::info_span!("request", request_id = request_id::as_str(&id));
                crate::telemetry::continue_trace(&span, request.headers());
                request_id::scope(id.clone(), self.serve(request, &id).instrument(span)).await
            } else {
                request_id::scope(id.clone(), self.serve(request, &id)).await
            };
        response.headers_mut().insert(request_id::HEADER, id);
        response
    }

    /// Never fails: errors become problem+json answers here, in one place.
    async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
        id: &HeaderValue,
    ) -> Response<Body> {
        let started = Instant::now();
        let method = request.method().clone();
        let peer = request
            .extensions()
            .get::<Peer>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip());
        let snapshot = self.current.load_full();
        let request_id = request_id::as_str(id);
        let (route_name, result) = match self.admit(&snapshot, &request, peer, request_id) {
            Err(error) => (None, Err(error)),
            Ok(None) => {
                let error = ProxyError::NoRoute {
                    path: request.uri().path().to_string(),
                    prefixes: snapshot
                        .routes
                        .prefixes()
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                };
                (None, Err(error))
            }
            Ok(Some((route, rest_len))) => {
                let name = Arc::clone(&route.name);
                let result = match self.check_route(&route, &request, peer, request_id) {
                    Err(e) => Err(e),
                    Ok(()) => match self.permit() {
                        Err(e) => Err(e),
                        Ok(permit) => {
                            self.forward(&route, rest_len, request, permit, request_id)
                                .await
                        }
                    },
                };
                (Some(name), result)
            }
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let response = error.to_response(route_name.as_deref().map(String::as_str));
                self.finish(
                    route_name.as_ref(),
                    &method,
                    started,
                    request_id,
                    Err(&error),
                );
                return response;
            }
        };
        self.finish(
            route_name.as_ref(),
            &method,
            started,
            request_id,
            Ok(response.status()),
        );
        response
    }

    /// What every answered request leaves behind, whichever way it was served: its metrics, its
    /// access line, and for an error the warning and the status page's entry.
    pub(crate) fn finish(
        &self,
        route: Option<&Arc<String>>,
        method: &Method,
        started: Instant,
        request_id: &str,
        outcome: Result<StatusCode, &ProxyError>,
    ) {
        let route_label = route.map_or("-", |s| s.as_str());
        let status = match outcome {
            Ok(status) => status,
            Err(error) => {
                if let (Some(fault), Some(route)) = (error.upstream_fault(), route) {
                    self.metrics.count_upstream_error(route, fault);
                }
                tracing::warn!(route = route_label, %method, status = error.status().as_u16(), %error, request_id, "request not forwarded");
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
        };
        let elapsed = started.elapsed();
        let labels = RequestLabels {
            route: route.map_or_else(|| Arc::clone(&self.no_route), Arc::clone),
            method: metrics::method_class(method),
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
            %method,
            status = status.as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            request_id,
            "request"
        );
    }

    /// After an upstream 401, whichever path sent the request: the upstream no longer accepts
    /// the token (revoked, rotated, clock), so it is dropped for everyone; the outcome is counted
    /// and logged. True when the request goes once more with a fresh token, which it can only if
    /// portvakt kept it (`replayable`) and no other request dropped a token of this slot just now.
    pub(crate) fn unauthorized(
        &self,
        route: &Route,
        slot: &TokenSlot,
        token: &Arc<Token>,
        replayable: bool,
        request_id: &str,
    ) -> bool {
        let result = match (slot.invalidate(token), replayable) {
            (false, _) => "suppressed",
            (true, false) => "not_replayable",
            (true, true) => "retried",
        };
        self.metrics
            .unauthorized_retries
            .get_or_create(&RetryLabels {
                route: Arc::clone(&route.name),
                result,
            })
            .inc();
        if result != "retried" {
            tracing::warn!(route = %route.name, result, request_id, "upstream answered 401: not retried");
            return false;
        }
        tracing::info!(route = %route.name, request_id, "upstream answered 401: retrying once with a fresh token");
        true
    }

    /// The checks that need no route: a proxy's own request forms, and `inbound.allow`. Then the
    /// route for the path, with the length of the path's remainder after its prefix.
    fn admit(
        &self,
        snapshot: &Snapshot,
        request: &Request<Incoming>,
        peer: IpAddr,
        request_id: &str,
    ) -> Result<Option<(Arc<Route>, usize)>, ProxyError> {
        if request.method() == Method::CONNECT {
            return Err(ProxyError::Connect);
        }
        // HTTP/2 always carries scheme and authority; in HTTP/1 a full URL means the caller takes
        // portvakt for a forward proxy, and the URL's host must never choose where a call goes.
        if request.version() <= Version::HTTP_11 && request.uri().authority().is_some() {
            return Err(ProxyError::AbsoluteForm);
        }
        if snapshot.allow.as_ref().is_some_and(|a| !a.contains(peer)) {
            audit(peer, "-", "address not in inbound.allow", request_id);
            return Err(ProxyError::CallerNotAllowed {
                peer,
                on_route: false,
            });
        }
        Ok(snapshot
            .routes
            .find(request.uri().path())
            .map(|(route, rest)| (Arc::clone(route), rest.len())))
    }

    /// The route's own callers: its `allow` and `api_keys`.
    fn check_route(
        &self,
        route: &Route,
        request: &Request<Incoming>,
        peer: IpAddr,
        request_id: &str,
    ) -> Result<(), ProxyError> {
        if route.allow.as_ref().is_some_and(|a| !a.contains(peer)) {
            audit(
                peer,
                &route.name,
                "address not in the route's allow",
                request_id,
            );
            return Err(ProxyError::CallerNotAllowed {
                peer,
                on_route: true,
            });
        }
        route
            .check_api_key(request.headers().get(&route.api_key_header))
            .map_err(|missing| {
                audit(
                    peer,
                    &route.name,
                    if missing {
                        "API key missing"
                    } else {
                        "API key wrong"
                    },
                    request_id,
                );
                ProxyError::ApiKey {
                    missing,
                    header: route.api_key_header.clone(),
                }
            })
    }

    async fn forward(
        &self,
        route: &Route,
        rest_len: usize,
        request: Request<Incoming>,
        permit: OwnedSemaphorePermit,
        request_id: &str,
    ) -> Result<Response<Body>, ProxyError> {
        let path = request.uri().path();
        let remainder = &path[path.len() - rest_len..];
        // Checked before the token so a hostile path costs no Maskinporten call.
        if route::escapes_prefix(remainder) {
            return Err(ProxyError::PathEscapes);
        }
        if let Some(limit) = route.max_body_bytes {
            if request.body().size_hint().lower() > limit {
                return Err(ProxyError::BodyTooLarge { limit });
            }
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
        // party and key headers never travel on.
        parts.headers.remove(HOST);
        for header in route.parties.headers() {
            parts.headers.remove(header);
        }
        if !route.api_keys.is_empty() {
            parts.headers.remove(&route.api_key_header);
        }
        for (name, value) in &route.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        let upstream = upstream_span(route);
        crate::telemetry::propagate(&upstream, &mut parts.headers);
        let body = Guarded::new(body, route.idle_timeout).with_limit(route.max_body_bytes);
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
        let response = send(route, Request::from_parts(parts, body))
            .instrument(upstream)
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED || route.retry_body_max.is_none() {
            return Ok(self.relay(route, response, permit));
        }

        let retry = self.unauthorized(route, slot, &token, replay.is_some(), request_id);
        let Some(replay) = replay.filter(|_| retry) else {
            return Ok(self.relay(route, response, permit));
        };
        drop(response);
        let token = slot.get().await?;
        let retry = upstream_span(route);
        let mut request = replay.with(token.bearer());
        crate::telemetry::propagate(&retry, request.headers_mut());
        let response = send(route, request).instrument(retry).await?;
        Ok(self.relay(route, response, permit))
    }
}

/// The upstream call, as a child of the request's span, when traces are exported. Without export
/// the request's own span carries every line, and a second span per request would only cost.
fn upstream_span(route: &Route) -> tracing::Span {
    if crate::telemetry::exporting() {
        tracing::info_span!("upstream", route = %route.name, upstream = %route.upstream)
    } else {
        tracing::Span::none()
    }
}

/// One line per refused caller, under its own target so it can be routed to an audit log.
fn audit(peer: IpAddr, route: &str, reason: &str, request_id: &str) {
    tracing::warn!(target: "portvakt::audit", %peer, route, reason, request_id, "caller refused");
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
async fn keep_if_small(body: Guarded, max: u64) -> Result<UpstreamBody, ProxyError> {
    if body.is_end_stream() {
        return Ok(Either::Right(Full::new(Bytes::new())));
    }
    match body.size_hint().exact() {
        Some(len) if len <= max => {
            let bytes = body
                .collect()
                .await
                .map_err(|e| request_body_error(e.as_ref()))?
                .to_bytes();
            Ok(Either::Right(Full::new(bytes)))
        }
        _ => Ok(Either::Left(body)),
    }
}

/// What went wrong with the caller's body: portvakt's own limits, or the caller.
fn request_body_error(e: &(dyn std::error::Error + 'static)) -> ProxyError {
    match body::cut_by_portvakt(e) {
        Some(BodyError::TooLarge(limit)) => ProxyError::BodyTooLarge { limit },
        Some(BodyError::Idle(after)) => ProxyError::RequestBodyTimeout(after),
        None => ProxyError::RequestBody(crate::error::chain(e)),
    }
}

/// Sends one request upstream within the route's time limit for response headers: on the
/// caller's own upstream connection where the route allows it, else through the pooled client.
async fn send(
    route: &Route,
    request: Request<UpstreamBody>,
) -> Result<Response<body::Inner>, ProxyError> {
    /// How the call failed, whichever way it went.
    enum Failed {
        Timeout,
        Connecting(BoxError),
        Exchanging(BoxError),
    }
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let affinity = request.extensions().get::<Affinity>().cloned();
    let sent = match (&route.local, affinity) {
        // A connection of the caller's own is plain TCP; TLS takes the pooled client.
        (Some(target), Some(affinity)) if !target.is_tls() => {
            let sending = affinity::send(&affinity, target, request);
            match tokio::time::timeout(route.timeout, sending).await {
                Err(_) => Err(Failed::Timeout),
                Ok(Ok(response)) => Ok(response.map(body::Inner::Local)),
                Ok(Err(affinity::SendError::Connect(e))) => Err(Failed::Connecting(e.into())),
                Ok(Err(affinity::SendError::Http(e))) => Err(Failed::Exchanging(e.into())),
            }
        }
        _ => match tokio::time::timeout(route.timeout, route.http.request(request)).await {
            Err(_) => Err(Failed::Timeout),
            Ok(Ok(response)) => {
                if let Some(target) = &route.local {
                    target.learn(response.version());
                }
                Ok(response.map(body::Inner::Incoming))
            }
            Ok(Err(e)) if e.is_connect() => Err(Failed::Connecting(e.into())),
            Ok(Err(e)) => Err(Failed::Exchanging(e.into())),
        },
    };
    let e = match sent {
        Ok(response) => return Ok(response),
        Err(Failed::Timeout) => {
            return Err(ProxyError::UpstreamTimeout {
                upstream: route.upstream.to_string(),
                after: route.timeout,
            })
        }
        Err(Failed::Connecting(e)) => {
            return Err(ProxyError::UpstreamUnreachable {
                upstream: route.upstream.to_string(),
                reason: crate::error::chain(e.as_ref()),
                fault: Fault::of(e.as_ref(), true),
            })
        }
        Err(Failed::Exchanging(e)) => e,
    };
    let e: &(dyn std::error::Error + 'static) = e.as_ref();
    // The caller's body failed on the way (too large, stalled, caller gone): not the upstream's fault.
    if body::cut_by_portvakt(e).is_some() || is_caller_body_error(e) {
        return Err(request_body_error(e));
    }
    Err(ProxyError::UpstreamFailed {
        upstream: route.upstream.to_string(),
        reason: crate::error::chain(e),
        fault: Fault::of(e, false),
    })
}

/// Whether the error is the caller's request body failing (hyper reports it as a user body error).
fn is_caller_body_error(e: &(dyn std::error::Error + 'static)) -> bool {
    crate::error::causes(e).any(|err| {
        err.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
    })
}

impl Proxy {
    /// The upstream's answer as it goes back to the caller: streamed, without hop-by-hop headers,
    /// its body under the route's idle timeout and holding the request's concurrency permit to the
    /// end. A body the upstream breaks off counts as an upstream error.
    fn relay(
        &self,
        route: &Route,
        mut response: Response<body::Inner>,
        permit: OwnedSemaphorePermit,
    ) -> Response<Body> {
        upstream::strip_hop_by_hop(response.headers_mut());
        *response.version_mut() = Version::HTTP_11;
        let faults = body::FaultCount {
            metrics: Arc::clone(&self.metrics),
            route: Arc::clone(&route.name),
        };
        response.map(|b| {
            Either::Left(
                Guarded::new(b, route.idle_timeout)
                    .with_permit(Some(permit))
                    .counting_faults(faults),
            )
        })
    }
}
