//! The innermost step: a decided request goes upstream under the one header policy, with the
//! route's token, through the one upstream client, and once more after a 401 when its body was
//! kept (the 401 rule); the answer's head comes back under the same policy.

use crate::observe::metrics::Metrics;
use crate::observe::request_id;
use crate::pipeline::headers::{self, Framing};
use crate::pipeline::{retry, Plan, Routed};
use crate::proxy::Peer;
use crate::request::body::{Guarded, UpstreamBody};
use crate::request::error::ProxyError;
use crate::request::route::Route;
use crate::token::slot::Token;
use crate::upstream::{self, Answer};
use http::header::CONTENT_LENGTH;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Either;
use hyper::body::Body as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;
use tracing::Instrument as _;

/// The upstream's answer, its head checked, its body streaming.
pub type Upstream = Response<Answer<UpstreamBody>>;

/// Sends decided requests (see the module's docs).
#[derive(Clone)]
pub struct Forward {
    metrics: Arc<Metrics>,
}

impl Forward {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Forward { metrics }
    }
}

impl Service<Routed<Guarded>> for Forward {
    type Response = Upstream;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Upstream, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed<Guarded>) -> Self::Future {
        Box::pin(forward(Arc::clone(&self.metrics), routed))
    }
}

/// The request with its body kept when small (for the 401 rule), its head under the header
/// policy, sent; after a 401, sent once more with a fresh token when the rule says so.
async fn forward(metrics: Arc<Metrics>, routed: Routed<Guarded>) -> Result<Upstream, ProxyError> {
    let Routed { plan, request } = routed;
    let Plan {
        route,
        uri,
        slot,
        token,
    } = plan;
    let peer = Peer::of(&request);
    let (mut head, body) = request.into_parts();
    let declared = head.headers.contains_key(CONTENT_LENGTH);
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
    let mut response = send(&route, request, &token).await?;
    if response.status() == StatusCode::UNAUTHORIZED && route.retry_body_max.is_some() {
        let id = request_id::current();
        let id = id.as_ref().map_or("-", request_id::as_str);
        let again = retry::unauthorized(&metrics, &route, &slot, &token, replay.is_some(), id);
        if let Some(replay) = replay.filter(|_| again) {
            drop(response);
            let token = slot.get().await?;
            response = send(&route, replay.into_request(), &token).await?;
        }
    }
    if let Err(reason) = headers::from_upstream(response.headers_mut()) {
        return Err(ProxyError::UpstreamFailed {
            upstream: route.upstream.to_string(),
            reason: reason.to_string(),
            fault: crate::support::fault::Fault::Protocol,
        });
    }
    *response.version_mut() = Version::HTTP_11;
    Ok(response)
}

/// One upstream call with the token, under its own span when traces are exported.
async fn send(
    route: &Route,
    mut request: Request<UpstreamBody>,
    token: &Token,
) -> Result<Upstream, ProxyError> {
    let span = upstream_span(route);
    crate::observe::telemetry::propagate(&span, request.headers_mut());
    headers::with_token(request.headers_mut(), token.bearer());
    upstream::send(&route.http, route.timeout, request)
        .instrument(span)
        .await
        .map_err(|e| ProxyError::from_upstream(e, &route.upstream))
}

/// The upstream call, as a child of the request's span, when traces are exported. Without export
/// the request's own span carries every line, and a second span per request would only cost.
fn upstream_span(route: &Route) -> tracing::Span {
    if crate::observe::telemetry::exporting() {
        tracing::info_span!("upstream", route = %route.name, upstream = %route.upstream)
    } else {
        tracing::Span::none()
    }
}
