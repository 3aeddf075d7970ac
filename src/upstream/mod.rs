//! The one way to an upstream: hyper's client connections (HTTP/1.1, or HTTP/2 by ALPN, over
//! rustls), straight or through an outbound proxy, kept in a [`Pool`] per upstream, within the
//! route's time limit.

mod abandoned;
mod answer;
mod egress;
mod error;
mod gate;
mod pool;
mod target;

pub use answer::Answer;
pub use egress::{basic_auth, EgressConnector};
pub use pool::{Exchange, Pool, SendError};
pub use target::Target;

use crate::config::Egress;
use http::uri::{Authority, Scheme};
use http::{Request, Response};
use hyper::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What a request's body must be to go upstream: hyper's bounds for a client connection's body.
pub trait Outgoing:
    Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<T> Outgoing for T where
    T: Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

/// TCP (straight or tunnelled), then TLS for `https` upstreams.
pub type Connector = HttpsConnector<EgressConnector>;

/// What routes with the same TLS trust, connect timeout, proxy and HTTP/2 setting share: how to
/// connect, and one [`Pool`] per upstream, handed to each route when it is built.
pub struct Client<B: Outgoing> {
    connector: Connector,
    connect_timeout: Duration,
    http2: bool,
    pools: Vec<Kept<B>>,
}

struct Kept<B: Outgoing> {
    scheme: Scheme,
    authority: Authority,
    pool: Arc<Pool<B>>,
}

impl<B> Client<B>
where
    B: Outgoing,
{
    pub fn new(
        tls: rustls::ClientConfig,
        connect_timeout: Duration,
        egress: &Egress,
        http2: bool,
    ) -> Self {
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
        let connector = if http2 {
            https.enable_http2().wrap_connector(connector)
        } else {
            https.wrap_connector(connector)
        };
        Client {
            connector,
            connect_timeout,
            http2,
            pools: Vec::new(),
        }
    }

    /// The pool for `upstream`'s scheme and authority, shared by every route that goes there.
    pub fn pool(&mut self, upstream: &Target) -> Result<Arc<Pool<B>>, http::Error> {
        let found = self
            .pools
            .iter()
            .find(|p| p.scheme == upstream.scheme && p.authority == upstream.authority);
        if let Some(p) = found {
            return Ok(Arc::clone(&p.pool));
        }
        let pool = Arc::new(Pool::new(
            self.connector.clone(),
            self.connect_timeout,
            self.http2,
            &upstream.scheme,
            &upstream.authority,
        )?);
        self.pools.push(Kept {
            scheme: upstream.scheme.clone(),
            authority: upstream.authority.clone(),
            pool: Arc::clone(&pool),
        });
        Ok(pool)
    }
}

/// Sends one request through `pool`, waiting at most `timeout` for the answer's head.
pub fn send<B>(
    pool: &Arc<Pool<B>>,
    timeout: Duration,
    request: Request<B>,
) -> impl Future<Output = Result<Response<Answer<B>>, SendError>> + Send
where
    B: Outgoing,
{
    let exchange = pool.send(request);
    async move {
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(SendError::Timeout(timeout)))
    }
}
