//! The hyper service: one request in, one answer out. [`pipeline::decide`] says whether and how a
//! request is sent; this module carries it out (the header policy, the body under its limits, the
//! one upstream client, the 401 rule), streams the answer back, and leaves each request's metrics
//! and access line. Every answer portvakt makes itself comes from [`ProxyError`], here.

use crate::body::{Body, FaultCount, Guarded, Pace, UpstreamBody};
use crate::error::ProxyError;
use crate::metrics::{self, Metrics, RequestLabels};
use crate::permits::{Permit, Permits};
use crate::pipeline::headers::{self, Framing};
use crate::pipeline::{self, retry, Plan, Refused, Snapshot};
use crate::recent::{RecentError, RecentErrors};
use crate::request_id;
use crate::route::Route;
use crate::server::CallerBody;
use crate::token::cache::Token;
use crate::upstream::{self, Answer};
use arc_swap::ArcSwap;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::Either;
use hyper::body::Body as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;

/// Everything the request path needs, shared by all connections. A reload swaps the snapshot;
/// requests under way finish on the one they started with.
pub struct Proxy {
    current: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    permits: Permits,
    no_route: Arc<String>,
    /// The last requests answered with an error, for the status page.
    pub recent: RecentErrors,
}

/// The caller's address, put into each request's extensions by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Proxy {
    /// `max_in_flight` requests at once, `per_address` of them from one caller address.
    pub fn new(
        snapshot: Snapshot,
        metrics: Arc<Metrics>,
        max_in_flight: usize,
        per_address: usize,
    ) -> Self {
        Proxy {
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            permits: Permits::new(max_in_flight, per_address),
            no_route: Arc::new(String::new()),
            recent: RecentErrors::default(),
        }
    }

    /// The routes and rules in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Requests admitted and not yet finished (their place is held to the last body byte).
    pub fn in_flight(&self) -> usize {
        self.permits.in_flight()
    }

    /// Puts a reloaded configuration in force for the requests that arrive from now on.
    pub fn replace(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Serves one inbound request under its request id: the caller's `x-request-id`, or a new one.
    /// The id is on every log line the request causes, goes upstream, and comes back in the answer.
    pub async fn handle(self: Arc<Self>, mut request: Request<CallerBody>) -> Response<Body> {
        let id = request_id::of(request.headers_mut());
        // A span per request costs several percent of throughput (docs/performance.md), so there
        // is one only for trace export and debug logging; the lines a request causes at info and
        // above name its id themselves, and a token fetch it starts takes the id from the task.
        // The request's future is boxed here, once: it is kilobytes, and every layer above
        // (hyper, tower, the server) would otherwise copy it as it moves it into its own state.
        let mut response =
            if crate::telemetry::exporting() || tracing::enabled!(tracing::Level::DEBUG) {
                let span = tracing::info_span!("request", request_id = request_id::as_str(&id));
                crate::telemetry::continue_trace(&span, request.headers());
                let work = Box::pin(self.serve(request, &id).instrument(span));
                request_id::scope(id.clone(), work).await
            } else {
                request_id::scope(id.clone(), Box::pin(self.serve(request, &id))).await
            };
        response.headers_mut().insert(request_id::HEADER, id);
        response
    }

    /// Never fails: a refusal becomes its problem+json answer here, in one place.
    async fn serve(
        self: Arc<Self>,
        request: Request<CallerBody>,
        id: &HeaderValue,
    ) -> Response<Body> {
        let started = Instant::now();
        let request_id = request_id::as_str(id);
        let peer = request
            .extensions()
            .get::<Peer>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip());
        let (head, body) = request.into_parts();
        let method = head.method.clone();
        let snapshot = self.current.load_full();
        let decided = pipeline::decide(
            &snapshot,
            &self.permits,
            &head,
            &body.size_hint(),
            peer,
            request_id,
        )
        .await;
        let (route, outcome) = match decided {
            Ok(plan) => {
                let route = Arc::clone(&plan.route.name);
                (
                    Some(route),
                    self.forward(plan, head, body, peer, request_id).await,
                )
            }
            Err(Refused { route, error }) => (route, Err(error)),
        };
        self.finish(
            route.as_ref(),
            &method,
            peer,
            started,
            request_id,
            outcome.as_ref().map(Response::status),
        );
        outcome.unwrap_or_else(|error| error.to_response(route.as_deref().map(String::as_str)))
    }

    /// Sends a decided request: the header policy, the body under the route's limits (kept when
    /// small, for the 401 rule), the one upstream client, and the answer streamed back.
    async fn forward(
        &self,
        plan: Plan,
        mut head: http::request::Parts,
        body: CallerBody,
        peer: IpAddr,
        request_id: &str,
    ) -> Result<Response<Body>, ProxyError> {
        let Plan {
            route,
            uri,
            slot,
            token,
            permit,
        } = plan;
        let declared = head.headers.contains_key(CONTENT_LENGTH);
        let body = Guarded::new(body, route.pace).with_limit(route.max_body_bytes);
        let body: UpstreamBody = match route.retry_body_max {
            Some(max) => retry::keep_if_small(body, max).await?,
            None => Either::Left(body),
        };
        let framing = Framing::of(&body.size_hint(), body.is_end_stream(), declared);
        head.uri = uri;
        head.version = Version::HTTP_11;
        head.extensions = http::Extensions::new();
        headers::to_upstream(&mut head.headers, &route, framing, peer);
        let request = Request::from_parts(head, body);
        let replay = retry::Replay::of(&request);
        let response = send(&route, request, &token).await?;
        if response.status() != StatusCode::UNAUTHORIZED || route.retry_body_max.is_none() {
            return self.relay(&route, response, permit);
        }
        let again = retry::unauthorized(
            &self.metrics,
            &route,
            &slot,
            &token,
            replay.is_some(),
            request_id,
        );
        let Some(replay) = replay.filter(|_| again) else {
            return self.relay(&route, response, permit);
        };
        drop(response);
        let token = slot.get().await?;
        let response = send(&route, replay.into_request(), &token).await?;
        self.relay(&route, response, permit)
    }

    /// The upstream's answer as it goes back to the caller: streamed, under the header policy, its
    /// body under the route's idle timeout and holding the request's place to the end. A body the
    /// upstream breaks off counts as an upstream error.
    fn relay(
        &self,
        route: &Route,
        mut response: Response<Answer<UpstreamBody>>,
        permit: Permit,
    ) -> Result<Response<Body>, ProxyError> {
        if let Err(reason) = headers::from_upstream(response.headers_mut()) {
            return Err(ProxyError::UpstreamFailed {
                upstream: route.upstream.to_string(),
                reason: reason.to_string(),
                fault: crate::fault::Fault::Protocol,
            });
        }
        *response.version_mut() = Version::HTTP_11;
        let faults = FaultCount {
            metrics: Arc::clone(&self.metrics),
            route: Arc::clone(&route.name),
        };
        Ok(response.map(|b| {
            Either::Left(
                Guarded::new(b, Pace::idle(route.idle_timeout))
                    .with_permit(Some(permit))
                    .counting_faults(faults),
            )
        }))
    }

    /// What every answered request leaves behind: its metrics, its access line, and for an error
    /// the warning and the status page's entry.
    fn finish(
        &self,
        route: Option<&Arc<String>>,
        method: &Method,
        peer: IpAddr,
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
                if let Some(reason) = error.body_cut() {
                    let labels = crate::metrics::CutLabels { reason };
                    self.metrics.slow_callers_cut.get_or_create(&labels).inc();
                }
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
}

/// One upstream call with the token, under its own span when traces are exported.
async fn send(
    route: &Route,
    mut request: Request<UpstreamBody>,
    token: &Token,
) -> Result<Response<Answer<UpstreamBody>>, ProxyError> {
    let span = upstream_span(route);
    crate::telemetry::propagate(&span, request.headers_mut());
    headers::with_token(request.headers_mut(), token.bearer());
    upstream::send(&route.http, route.timeout, request)
        .instrument(span)
        .await
        .map_err(|e| ProxyError::from_upstream(e, &route.upstream))
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
