//! Who may call: `inbound.allow` for every route, then the route's own `allow` and API keys. Each
//! refusal leaves one `portvakt::audit` line.

use crate::config::AllowList;
use crate::request::error::ProxyError;
use crate::request::route::Route;
use http::HeaderMap;
use std::net::IpAddr;

/// `inbound.allow`: `None` lets every address in.
pub fn inbound(
    allow: Option<&AllowList>,
    peer: IpAddr,
    request_id: &str,
) -> Result<(), ProxyError> {
    if allow.is_some_and(|a| !a.contains(peer)) {
        audit(peer, "-", "address not in inbound.allow", request_id);
        return Err(ProxyError::CallerNotAllowed {
            peer,
            on_route: false,
        });
    }
    Ok(())
}

/// The route's own callers: its `allow` and `api_keys`.
pub fn route(
    route: &Route,
    headers: &HeaderMap,
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
        .check_api_key(headers.get(&route.api_key_header))
        .map_err(|missing| {
            let reason = if missing {
                "API key missing"
            } else {
                "API key wrong"
            };
            audit(peer, &route.name, reason, request_id);
            ProxyError::ApiKey {
                missing,
                header: route.api_key_header.clone(),
            }
        })
}

/// One line per refused caller, under its own target so it can be routed to an audit log.
fn audit(peer: IpAddr, route: &str, reason: &str, request_id: &str) {
    tracing::warn!(target: "portvakt::audit", %peer, route, reason, request_id, "caller refused");
}
