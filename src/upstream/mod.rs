//! The one way to an upstream: hyper-util's pooled client (HTTP/1.1, or HTTP/2 by ALPN, over
//! rustls), straight or through an outbound proxy, within the route's time limit.

mod egress;
mod target;

pub use egress::{basic_auth, EgressConnector};
pub use target::Target;

use crate::body::Guarded;
use crate::config::Egress;
use crate::error::ProxyError;
use crate::fault::Fault;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// What goes upstream: the caller's body streamed through, or kept in memory so the request can be
/// sent again after a 401.
pub type UpstreamBody = Either<Guarded, Full<Bytes>>;

pub type UpstreamClient = Client<HttpsConnector<EgressConnector>, UpstreamBody>;

/// How long an upstream connection may sit unused in the pool. Callers that open a connection per
/// request still share the pool's connections, so no upstream connection is opened per request.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// At most this many unused connections are kept per upstream: enough for the callers of a busy
/// hour, while a burst of hundreds does not leave hundreds of idle connections (about 30 KB each)
/// behind it for the next 90 s.
const POOL_MAX_IDLE: usize = 128;

/// Keep-alive pooled client, shared by routes with the same TLS trust, connect timeout, proxy and
/// HTTP/2 setting.
pub fn client(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
    egress: &Egress,
    http2: bool,
) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    let connector = EgressConnector::new(http, egress);
    let https = if http2 {
        https.enable_http2().wrap_connector(connector)
    } else {
        https.wrap_connector(connector)
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .build(https)
}

/// Sends one request to `upstream` through `client`, waiting at most `timeout` for the answer's
/// head. Every failure comes back as the [`ProxyError`] the caller is answered with.
pub async fn send(
    client: &UpstreamClient,
    upstream: &Target,
    timeout: Duration,
    request: Request<UpstreamBody>,
) -> Result<Response<Incoming>, ProxyError> {
    let e = match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => return Ok(response),
        Err(_) => {
            return Err(ProxyError::UpstreamTimeout {
                upstream: upstream.to_string(),
                after: timeout,
            })
        }
        Ok(Err(e)) => e,
    };
    let connecting = e.is_connect();
    let e: &(dyn std::error::Error + 'static) = &e;
    // The caller's body failed on the way (too large, stalled, caller gone): not the upstream's fault.
    if let Some(error) = ProxyError::in_request_body(e) {
        return Err(error);
    }
    let (upstream, reason, fault) = (
        upstream.to_string(),
        crate::cause::chain(e),
        Fault::of(e, connecting),
    );
    Err(if connecting {
        ProxyError::UpstreamUnreachable {
            upstream,
            reason,
            fault,
        }
    } else {
        ProxyError::UpstreamFailed {
            upstream,
            reason,
            fault,
        }
    })
}
