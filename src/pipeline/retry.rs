//! The 401 rule: when the upstream answers 401 the token is dropped for everyone, and a request
//! whose body portvakt kept goes once more with a fresh token; never twice.

use crate::observe::metrics::{Metrics, RetryLabels};
use crate::request::body::{Guarded, UpstreamBody};
use crate::request::error::ProxyError;
use crate::request::route::Route;
use crate::token::slot::{Token, TokenSlot};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::Body as _;
use std::sync::Arc;

/// A request as it went upstream, minus its token, with the body portvakt kept: enough to send it
/// again after a 401.
pub struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Full<Bytes>,
}

impl Replay {
    /// The request's copy for a second send, when its body was kept.
    pub fn of(request: &Request<UpstreamBody>) -> Option<Replay> {
        let Either::Right(kept) = request.body() else {
            return None;
        };
        Some(Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
            body: kept.clone(),
        })
    }

    /// The request once more, its headers as they were (the token aside).
    pub fn into_request(self) -> Request<UpstreamBody> {
        let mut request = Request::new(Either::Right(self.body));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.headers_mut() = self.headers;
        request
    }
}

/// Keeps a body of up to `max` bytes in memory, so the request can be replayed: one of known size
/// at once, a chunked one by reading up to `max` bytes of it. A larger body is streamed (what was
/// read of it first). Trailers end a kept body: portvakt forwards none (it drops `Trailer`).
pub async fn keep_if_small(mut body: Guarded, max: u64) -> Result<UpstreamBody, ProxyError> {
    if body.is_end_stream() {
        return Ok(Either::Right(Full::new(Bytes::new())));
    }
    if body.size_hint().exact().is_some_and(|len| len > max) {
        return Ok(Either::Left(body));
    }
    let mut kept = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::request_body(e.as_ref()))?;
        match frame.into_data() {
            Ok(data) => kept.extend_from_slice(&data),
            Err(_trailers) => break,
        }
        if kept.len() as u64 > max {
            return Ok(Either::Left(body.with_prefix(kept.freeze())));
        }
    }
    Ok(Either::Right(Full::new(kept.freeze())))
}

/// After an upstream 401: the upstream no longer accepts the token (revoked, rotated, clock), so it
/// is dropped for everyone; the outcome is counted and logged. True when the request goes once more
/// with a fresh token, which it can only if portvakt kept it (`replayable`) and no other request
/// dropped a token of this slot just now.
pub fn unauthorized(
    metrics: &Metrics,
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
    metrics
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
