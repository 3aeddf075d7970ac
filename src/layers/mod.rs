//! The inbound service as a tower stack: each concern every request meets is a layer of its own,
//! and [`stack`] shows them all, outermost first, around the two steps that decide and send
//! (`proxy.rs`). Each layer is tested alone with `oneshot`; the whole, through sockets, in
//! `tests/`.

pub mod access_log;
pub mod body_limits;
pub mod panics;
pub mod places;
pub mod request_id;
#[cfg(test)]
mod testing;

use crate::proxy::forward::Forward;
use crate::proxy::{Decide, Proxy};
use crate::request::body::Body;
use crate::server::CallerBody;
use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use http::{HeaderName, Request, Response};
use std::convert::Infallible;
use std::sync::Arc;
use tower::layer::layer_fn;
use tower::{Service, ServiceBuilder};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};

/// The inbound service: a request in, an answer out, never an error.
pub fn stack(
    proxy: &Arc<Proxy>,
) -> impl Service<Request<CallerBody>, Response = Response<Body>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + Sync
       + 'static {
    let decide = Arc::clone(proxy);
    let route_of = Arc::clone(proxy);
    ServiceBuilder::new()
        // The caller's credentials (replaced before forwarding), cookies both ways and the person
        // a consent is from are marked sensitive first, so no later layer or line can print them.
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            PROXY_AUTHORIZATION,
            COOKIE,
            HeaderName::from_static("portvakt-consent-from"),
        ]))
        .layer(SetSensitiveResponseHeadersLayer::new([SET_COOKIE]))
        // The caller's x-request-id, or a new one: on every line the request causes, upstream,
        // and on the answer.
        .layer(request_id::RequestIdLayer)
        // The metrics and access line of every request, and the one problem answer of a refusal.
        .layer(access_log::AccessLogLayer::new(
            &proxy.metrics,
            &proxy.recent,
        ))
        // A panic below is a 500 problem answer and an error line, not a dropped connection.
        .layer(panics::CatchPanicLayer)
        // A place among the requests served at once, and in the caller address's share, held to
        // the answer's last byte.
        .layer(places::PlacesLayer::new(
            &proxy.permits,
            Arc::new(move |path: &str| route_of.route_of(path)),
        ))
        // Whether and how the request is sent: pipeline::decide.
        .layer(layer_fn(move |inner| {
            Decide::new(Arc::clone(&decide), inner)
        }))
        // The route's limits on both bodies: size, pace, deadline; upstream faults counted.
        .layer(body_limits::BodyLimitsLayer::new(&proxy.metrics))
        .service(Forward::new(Arc::clone(&proxy.metrics)))
}
