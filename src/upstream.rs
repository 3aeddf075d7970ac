//! The pooled client for upstream APIs (HTTP/1.1 or HTTP/2 by ALPN, rustls) and the header rules
//! for what crosses a proxy.

use crate::body::Guarded;
use crate::config::{Egress, RouteConfig};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION};
use http::Uri;
use http_body_util::{Either, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tower::{Service, ServiceExt as _};

/// What goes upstream: the caller's body streamed through, or kept in memory so the request can be
/// sent again after a 401.
pub type UpstreamBody = Either<Guarded, Full<Bytes>>;

pub type UpstreamClient = Client<HttpsConnector<EgressConnector>, UpstreamBody>;

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
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https)
}

/// Where calls to `upstream` can go on a connection portvakt holds itself (`direct.rs`): an
/// upstream that no egress proxy intercepts. An https:// one is verified with `tls`, and takes
/// the pooled client (HTTP/2 by ALPN, shared TLS sessions) until it is known to speak HTTP/1.1
/// only.
pub fn local_target(
    route: &RouteConfig,
    tls: &rustls::ClientConfig,
) -> Option<crate::direct::LocalTarget> {
    let direct = match &route.proxy {
        Egress::Direct => true,
        Egress::Environment => Matcher::from_env().intercept(&route.upstream).is_none(),
        Egress::Proxy(_) => false,
    };
    if !direct {
        return None;
    }
    crate::direct::LocalTarget::new(
        &route.upstream,
        route.connect_timeout,
        tls,
        route.upstream_http2,
    )
}

/// Opens TCP connections to upstreams, straight or through an outbound proxy with CONNECT (the
/// TLS to the upstream then runs inside the tunnel, so the proxy never sees the token).
#[derive(Clone)]
pub struct EgressConnector {
    http: HttpConnector,
    proxy: Option<Arc<ProxyRule>>,
}

struct ProxyRule {
    matcher: Matcher,
    /// `Proxy-Authorization` from the config; otherwise the environment URL's own credentials.
    auth: Option<HeaderValue>,
}

impl EgressConnector {
    pub fn new(http: HttpConnector, egress: &Egress) -> Self {
        let proxy = match egress {
            Egress::Direct => None,
            Egress::Environment => Some(ProxyRule {
                matcher: Matcher::from_env(),
                auth: None,
            }),
            Egress::Proxy(server) => Some(ProxyRule {
                matcher: Matcher::builder()
                    .all(server.url.to_string())
                    .no(server.no_proxy.clone().unwrap_or_default())
                    .build(),
                auth: match (&server.username, &server.password) {
                    (Some(user), Some(password)) => basic_auth(user, password.expose()),
                    _ => None,
                },
            }),
        };
        EgressConnector {
            http,
            proxy: proxy.map(Arc::new),
        }
    }
}

/// `Basic base64(user:password)`, marked sensitive.
pub fn basic_auth(user: &str, password: &str) -> Option<HeaderValue> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::try_from(format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Uri> for EgressConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let via = self.proxy.as_ref().and_then(|rule| {
            let intercept = rule.matcher.intercept(&dst)?;
            let auth = rule
                .auth
                .clone()
                .or_else(|| intercept.basic_auth().cloned());
            Some((intercept.uri().clone(), auth))
        });
        let http = self.http.clone();
        Box::pin(async move {
            match via {
                None => http.oneshot(dst).await.map_err(Into::into),
                Some((proxy, auth)) => {
                    let mut tunnel = Tunnel::new(proxy, http);
                    if let Some(auth) = auth {
                        tunnel = tunnel.with_auth(auth);
                    }
                    tunnel.oneshot(dst).await.map_err(Into::into)
                }
            }
        })
    }
}

/// Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Whether a header (by name, any case) belongs to one connection: hop-by-hop, or `Upgrade`.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) || name.eq_ignore_ascii_case("upgrade")
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(http::header::UPGRADE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eA=="),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ] {
            h.insert(HeaderName::from_static(k), v.parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }
}

/// Why an upstream call failed, as the `kind` of `portvakt_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No connection: refused, unresolvable, unroutable.
    Connect,
    /// No connection, headers or body data within the route's time limits.
    Timeout,
    /// The upstream closed or reset the connection before the exchange was done.
    Reset,
    /// The TLS handshake failed: certificate, name or protocol.
    Tls,
    /// Anything else: a malformed answer, an HTTP-level error.
    Protocol,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Connect => "connect",
            Fault::Timeout => "timeout",
            Fault::Reset => "reset",
            Fault::Tls => "tls",
            Fault::Protocol => "protocol",
        }
    }

    /// Reads the kind off an error's chain of causes; `connecting` when it happened before a
    /// connection was made.
    pub fn of(e: &(dyn std::error::Error + 'static), connecting: bool) -> Fault {
        use std::io::ErrorKind;
        let mut fallback = if connecting {
            Fault::Connect
        } else {
            Fault::Protocol
        };
        for cause in crate::error::causes(e) {
            if cause.downcast_ref::<rustls::Error>().is_some() {
                return Fault::Tls;
            }
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                // rustls reports handshake failures as an io::Error wrapping its own (hyper-util
                // wraps that once more), and io::Error's source() skips the wrapped error.
                let mut inner = io.get_ref();
                while let Some(err) = inner {
                    if err.is::<rustls::Error>() {
                        return Fault::Tls;
                    }
                    inner = err
                        .downcast_ref::<std::io::Error>()
                        .and_then(std::io::Error::get_ref);
                }
                match io.kind() {
                    ErrorKind::TimedOut => return Fault::Timeout,
                    ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
                        if !connecting =>
                    {
                        return Fault::Reset
                    }
                    _ => {}
                }
            }
            if cause.downcast_ref::<crate::body::BodyError>().is_some() {
                return Fault::Timeout;
            }
            if let Some(h) = cause.downcast_ref::<hyper::Error>() {
                if !connecting && (h.is_incomplete_message() || h.is_canceled()) {
                    fallback = Fault::Reset;
                }
            }
        }
        fallback
    }
}
