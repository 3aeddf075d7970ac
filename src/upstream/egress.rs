//! The connector under the pooled client: TCP straight to the upstream, or a CONNECT tunnel through
//! an outbound proxy.

use crate::config::Egress;
use base64::Engine as _;
use http::header::HeaderValue;
use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tower::{Service, ServiceExt as _};

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
