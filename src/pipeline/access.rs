//! Who may call: `inbound.allow` for every route, then the route's own `allow` and API keys. Each
//! refusal leaves one `portvakt::audit` line.

use crate::config::AllowList;
use crate::request::error::ProxyError;
use crate::request::route::Route;
use http::HeaderMap;
use std::net::IpAddr;

/// `inbound.allow`: `None` lets every address in.
pub fn inbound(allow: Option<&AllowList>, peer: IpAddr) -> Result<(), ProxyError> {
    if allow.is_some_and(|a| !a.contains(peer)) {
        audit(peer, "-", "address not in inbound.allow");
        return Err(ProxyError::CallerNotAllowed {
            peer,
            on_route: false,
        });
    }
    Ok(())
}

/// The route's own callers: its `allow` and `api_keys`.
pub fn route(route: &Route, headers: &HeaderMap, peer: IpAddr) -> Result<(), ProxyError> {
    if route.allow.as_ref().is_some_and(|a| !a.contains(peer)) {
        audit(peer, &route.name, "address not in the route's allow");
        return Err(ProxyError::CallerNotAllowed {
            peer,
            on_route: true,
        });
    }
    route
        .check_api_key(headers.get(&route.api_key_header))
        .map_err(|missing| {
            let reason = if missing {
                "API key missing"
            } else {
                "API key wrong"
            };
            audit(peer, &route.name, reason);
            ProxyError::ApiKey {
                missing,
                header: route.api_key_header.clone(),
            }
        })
}

/// One line per refused caller, under its own target so it can be routed to an audit log.
/// The request's id is the task's (`observe::request_id`), read only when a line is written.
fn audit(peer: IpAddr, route: &str, reason: &str) {
    let id = crate::observe::request_id::current();
    let request_id = id.as_ref().map_or("-", crate::observe::request_id::as_str);
    tracing::warn!(target: "portvakt::audit", %peer, route, reason, request_id, "caller refused");
}
