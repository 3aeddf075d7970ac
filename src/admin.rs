//! The admin listener: `/healthz` (alive), `/readyz` (serving, with each route's token state),
//! `/metrics` (Prometheus). Nothing here ever shows a token or secret.

use crate::error::Body;
use crate::proxy::Proxy;
use crate::route::RouteTable;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use serde_json::json;
use std::sync::Arc;

/// Reads the running proxy's routes, token slots and metrics; holds nothing of its own.
pub struct Admin {
    pub proxy: Arc<Proxy>,
}

impl Admin {
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => text(
                StatusCode::OK,
                "application/json",
                readiness(&self.proxy.snapshot().routes).to_string(),
            ),
            "/metrics" => text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.proxy.metrics.encode(),
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /healthz, /readyz or /metrics\n".into(),
            ),
        }
    }
}

/// Ready means the configuration is loaded and both listeners accept; token states are shown, not
/// required, so a Maskinporten outage does not take every replica out of service at once.
fn readiness(routes: &RouteTable) -> serde_json::Value {
    let routes: Vec<_> = routes
        .iter()
        .map(|r| {
            let slots = r.parties.slots();
            let tokens: Vec<_> = slots
                .iter()
                .map(|(party, slot)| {
                    let key = slot.key();
                    let mut token = json!({
                        "scopes": key.grant.scope,
                        "consumer_org": key.grant.consumer_org,
                        "state": slot.status(),
                    });
                    if let Some((kind, org)) = *party {
                        token["party"] = json!({ "kind": kind.as_str(), "org": org });
                    }
                    if let Some(url) = slot.altinn_exchange() {
                        token["altinn_exchange"] = json!(url);
                    }
                    token
                })
                .collect();
            // `scopes`, `consumer_org` and `token` describe the route's first token (its default
            // party's, when it has one), as before per-call parties; `tokens` lists them all.
            let first = slots.first().map(|(_, slot)| slot);
            json!({
                "name": r.name.as_str(),
                "prefix": r.prefix,
                "upstream": r.upstream.to_string(),
                "client": r.client.as_str(),
                "scopes": first.map(|s| s.key().grant.scope.clone()),
                "consumer_org": first.and_then(|s| s.key().grant.consumer_org.clone()),
                "token": first.map(|s| s.status()),
                "tokens": tokens,
            })
        })
        .collect();
    json!({ "status": "ready", "routes": routes })
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    crate::error::full(status, content_type, body).map(Either::Right)
}
