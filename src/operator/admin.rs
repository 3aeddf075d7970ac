//! The admin listener: `/` (the status page for people), `/healthz` (alive), `/readyz` (serving, with each route's token state),
//! `/metrics` (Prometheus). Nothing here ever shows a token or secret.

use crate::observe::metrics::TokenLabels;
use crate::proxy::Proxy;
use crate::request::body::Body;
use crate::request::route::RouteTable;
use crate::server::CallerBody;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Either;
use serde_json::json;
use std::sync::Arc;

/// Reads the running proxy's routes, token slots and metrics; holds nothing of its own.
pub struct Admin {
    pub proxy: Arc<Proxy>,
}

impl Admin {
    pub async fn handle(self: Arc<Self>, request: Request<CallerBody>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match request.uri().path() {
            "/" => text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                crate::operator::status_page::render(&self.proxy),
            ),
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => text(
                StatusCode::OK,
                "application/json",
                readiness(&self.proxy.snapshot().routes).to_string(),
            ),
            "/metrics" => {
                refresh_gauges(&self.proxy);
                text(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    self.proxy.metrics.encode(),
                )
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: try /, /healthz, /readyz or /metrics\n".into(),
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
            let mut route = json!({
                "name": r.name.as_str(),
                "prefix": r.prefix,
                "upstream": r.upstream.to_string(),
                "client": r.client.as_str(),
                "scopes": first.map(|s| s.key().grant.scope.clone()),
                "consumer_org": first.and_then(|s| s.key().grant.consumer_org.clone()),
                "token": first.map(|s| s.status()),
                "tokens": tokens,
            });
            // Consent tokens are counted, never listed: each names a person.
            if let Some(consents) = &r.consent_slots {
                route["consent_tokens"] = json!(consents.len());
                route["consent_tokens_max"] = json!(consents.max());
            }
            route
        })
        .collect();
    json!({ "status": "ready", "routes": routes })
}

/// The gauges read off the live state when scraped, so the request path never updates them.
fn refresh_gauges(proxy: &Proxy) {
    let metrics = &proxy.metrics;
    metrics.in_flight.set(proxy.in_flight() as i64);
    // Rebuilt from the slots in force, so a slot a reload removed leaves no series behind.
    metrics.token_expires_in.clear();
    metrics.consent_tokens.clear();
    for route in proxy.snapshot().routes.iter() {
        if let Some(consents) = &route.consent_slots {
            let labels = crate::observe::metrics::RouteLabels {
                route: Arc::clone(&route.name),
            };
            let count = i64::try_from(consents.len()).unwrap_or(i64::MAX);
            metrics.consent_tokens.get_or_create(&labels).set(count);
        }
        for (party, slot) in route.parties.slots() {
            let Some(seconds) = slot.status().expires_in_seconds else {
                continue;
            };
            let key = slot.key();
            let labels = TokenLabels {
                client: Arc::clone(&slot.client().name),
                kind: slot.kind(),
                scopes: key.grant.scope.clone(),
                party: party
                    .map(|(_, org)| org.to_string())
                    .or_else(|| key.grant.consumer_org.clone())
                    .unwrap_or_default(),
            };
            metrics
                .token_expires_in
                .get_or_create(&labels)
                .set(i64::try_from(seconds).unwrap_or(i64::MAX));
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    crate::request::body::full(status, content_type, body).map(Either::Right)
}
