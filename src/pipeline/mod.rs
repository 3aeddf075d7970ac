//! The one place that decides a request. [`decide`] reads the caller's head and either refuses it
//! or returns the [`Plan`] it is sent by: its form, who is calling, the route, the path kept under
//! the route's base, the party and the consent, and the token. Nothing reaches an upstream or
//! Maskinporten before this has said yes, and every protocol path (HTTP/1.1, HTTP/2, TLS or not)
//! comes through it. (Its place among the requests served at once is taken before, by the stack's
//! `places` layer, so that a request waiting for a token holds one.)
//!
//! What is done to the request on its way is in [`headers`] (the one header policy) and [`retry`]
//! (the 401 rule); `proxy/forward.rs` carries it out.

pub mod access;
pub mod form;
pub mod headers;
pub mod retry;

use crate::config::AllowList;
use crate::request::body::Body;
use crate::request::error::ProxyError;
use crate::request::route::{self, Route, RouteTable};
use crate::token::slot::{Token, TokenSlot};
use crate::upstream::Target;
use http::request::Parts;
use http::{Request, Response, Uri};
use hyper::body::SizeHint;
use std::net::IpAddr;
use std::sync::Arc;

/// What a (re)loaded configuration decides about requests: the routes and who may call.
pub struct Snapshot {
    pub routes: RouteTable,
    /// `inbound.allow`; `None` lets every address in.
    pub allow: Option<AllowList>,
}

/// A request portvakt will send: where, for whom, with which token.
pub struct Plan {
    pub route: Arc<Route>,
    /// The upstream URI: the route's base, the remainder of the caller's path, its query.
    pub uri: Uri,
    pub slot: Arc<TokenSlot>,
    pub token: Arc<Token>,
}

/// A decided request on its way: the plan, and the request as the caller sent it (its body `B`
/// wrapped by the layers it passes).
pub struct Routed<B> {
    pub plan: Plan,
    pub request: Request<B>,
}

/// A request portvakt will not send, and the route it was refused on, if it got that far.
pub struct Refused {
    pub route: Option<Arc<String>>,
    pub error: ProxyError,
}

/// A request portvakt sent, the route it went by, and the upstream's answer as it goes back.
pub struct Served {
    pub route: Arc<String>,
    pub response: Response<Body>,
}

/// Decides a request from its head (`body` is what its framing says of the body's size).
pub async fn decide(
    snapshot: &Snapshot,
    head: &Parts,
    body: &SizeHint,
    peer: IpAddr,
) -> Result<Plan, Refused> {
    let refused = |error| Refused { route: None, error };
    form::check(head).map_err(refused)?;
    access::inbound(snapshot.allow.as_ref(), peer).map_err(refused)?;
    let path = head.uri.path();
    let Some((route, rest)) = snapshot.routes.find(path) else {
        return Err(refused(ProxyError::NoRoute {
            path: path.to_string(),
            prefixes: snapshot
                .routes
                .prefixes()
                .into_iter()
                .map(str::to_string)
                .collect(),
        }));
    };
    let on_route = |error| Refused {
        route: Some(Arc::clone(&route.name)),
        error,
    };
    access::route(route, &head.headers, peer).map_err(on_route)?;
    // Checked before the token so that a hostile path costs no Maskinporten call.
    let uri = confine(&route.upstream, rest, head.uri.query()).map_err(on_route)?;
    if let Some(limit) = route.max_body_bytes.filter(|limit| body.lower() > *limit) {
        return Err(on_route(ProxyError::BodyTooLarge { limit }));
    }
    // A party off the route's list, or a consent that is not one, is refused here, before any
    // Maskinporten call.
    let slot = route
        .parties
        .select(&head.headers)
        .map_err(|e| on_route(e.into()))?;
    let consent = route
        .consent
        .named(&head.headers)
        .map_err(|e| on_route(e.into()))?;
    let slot = match (consent, &route.consent_slots) {
        (Some(consent), Some(slots)) => slots.slot(slot, &consent),
        _ => Arc::clone(slot),
    };
    // No token, no call: the request is never forwarded without one.
    let token = slot.get().await.map_err(|e| on_route(e.into()))?;
    Ok(Plan {
        route: Arc::clone(route),
        uri,
        slot,
        token,
    })
}

/// The upstream URI for a path's remainder after its route's prefix, and the caller's query: the
/// route's base, then the remainder and query byte for byte, as long as the remainder cannot climb
/// out of the base however the upstream decodes it (`route::escapes_prefix`).
pub fn confine(base: &Target, rest: &str, query: Option<&str>) -> Result<Uri, ProxyError> {
    if route::escapes_prefix(rest) {
        return Err(ProxyError::PathEscapes);
    }
    base.uri(rest, query)
        .map_err(|e| ProxyError::Internal(format!("building the upstream URI failed: {e}")))
}
