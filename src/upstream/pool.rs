//! The connections to one upstream, made and kept with hyper's own client connections: HTTP/1.1
//! connections idle in a stack, each carrying one request at a time; HTTP/2 connections (when the
//! upstream chooses it by ALPN) shared by every request, a few of them so that each core's work is
//! written on a connection of its own.
//!
//! hyper frames every byte; this module only chooses the connection. A connection comes back to
//! the stack when its answer's last byte has been read ([`Answer`]), so no task is started per
//! request to wait for that, and a route knows its pool when it is built, so no map is looked up
//! per request.

use super::abandoned::{Draining, Home, Unanswered};
use super::answer::Answer;
use super::gate::Gate;
use super::{Connector, Outgoing};
use http::header::HOST;
use http::uri::Scheme;
use http::{HeaderValue, Request, Response, Uri};
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::rt::TokioExecutor;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;
use tower::ServiceExt as _;

/// How long an HTTP/1.1 connection may sit unused. Callers that open a connection per request
/// still share these, so no upstream connection is opened per request.
const IDLE_FOR: Duration = Duration::from_secs(90);

/// At most this many unused HTTP/1.1 connections are kept: enough for a busy hour's callers,
/// while a burst of hundreds does not leave hundreds of idle connections (about 30 KB each) behind.
const MAX_IDLE: usize = 128;

/// How often idle connections past [`IDLE_FOR`] are closed when no request comes to do it.
const REAP_EVERY: Duration = Duration::from_secs(30);

/// A request taken by a connection that closed before writing it goes on another, up to this many
/// tries in all (a request that failed on a fresh connection is not tried again).
const ATTEMPTS: usize = 4;

pub use super::error::SendError;

/// A request on its way: the answer's head, or why there is none.
pub type Exchange<B> = Pin<Box<dyn Future<Output = Result<Response<Answer<B>>, SendError>> + Send>>;

/// The connections to one upstream (scheme and authority).
pub struct Pool<B: Outgoing> {
    connector: Connector,
    /// Whether a new connection may turn out to be HTTP/2: HTTPS, with h2 offered by ALPN.
    may_speak_h2: bool,
    /// `scheme://authority/`, what the connector is asked for.
    origin: Uri,
    /// What HTTP/1.1 requests carry as `Host`.
    host: HeaderValue,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// How many HTTP/2 connections requests are spread over.
    h2_connections: usize,
    state: Mutex<State<B>>,
    /// Everything up to a usable connection (TCP, an outbound proxy's `CONNECT`, TLS, ALPN,
    /// hyper's handshake) must be done within this.
    connect_timeout: Duration,
    /// A few places for connects that may be HTTP/2, so that a burst of requests makes a few
    /// connections and shares them.
    connecting: Gate,
    next: AtomicUsize,
    draining: Draining,
}

struct State<B: Outgoing> {
    /// Unused HTTP/1.1 connections, the most recently used last.
    idle: VecDeque<(http1::SendRequest<B>, Instant)>,
    h2: Vec<http2::SendRequest<B>>,
    /// Whether the upstream chose HTTP/2 on the last connection made; `None` before the first.
    speaks_h2: Option<bool>,
    /// Another HTTP/2 connection is being made beside the requests.
    making_h2: bool,
    reaping: bool,
}

enum Sender<B: Outgoing> {
    H1(http1::SendRequest<B>),
    H2(http2::SendRequest<B>),
}

impl<B> Pool<B>
where
    B: Outgoing,
{
    pub fn new(
        connector: Connector,
        connect_timeout: Duration,
        offers_h2: bool,
        scheme: &Scheme,
        authority: &http::uri::Authority,
    ) -> Result<Self, http::Error> {
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()?;
        let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_string(),
        };
        Ok(Pool {
            connector,
            may_speak_h2: offers_h2 && *scheme == Scheme::HTTPS,
            origin,
            host: HeaderValue::try_from(host)?,
            http1: http1::Builder::new(),
            http2: http2::Builder::new(TokioExecutor::new()),
            h2_connections: h2_connections(),
            state: Mutex::new(State {
                idle: VecDeque::new(),
                h2: Vec::new(),
                speaks_h2: None,
                making_h2: false,
                reaping: false,
            }),
            connect_timeout,
            connecting: Gate::default(),
            next: AtomicUsize::new(0),
            draining: Draining::default(),
        })
    }

    /// Sends `request` (its URI absolute) and returns the answer's head; the body streams after.
    /// The exchange's future is boxed here, once: it holds the request, and every layer that
    /// awaited it would otherwise copy it as it moves it into its own state.
    pub fn send(self: &Arc<Self>, request: Request<B>) -> Exchange<B> {
        Box::pin(Arc::clone(self).exchange(request))
    }

    async fn exchange(
        self: Arc<Self>,
        mut request: Request<B>,
    ) -> Result<Response<Answer<B>>, SendError> {
        let absolute = request.uri().clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (sender, reused) = self.checkout().await?;
            let (sent, back) = match sender {
                Sender::H2(mut tx) => {
                    *request.uri_mut() = absolute.clone();
                    (tx.try_send_request(request).await, None)
                }
                Sender::H1(tx) => {
                    *request.uri_mut() = origin_form(&absolute);
                    request.headers_mut().insert(HOST, self.host.clone());
                    let (sent, tx) = Unanswered::new(tx, request, self.home()).await;
                    (sent, Some(tx))
                }
            };
            match sent {
                Ok(response) => {
                    let back = back.map(|tx| (self.home(), tx));
                    return Ok(response.map(|body| Answer::new(body, back)));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the connection closed as it was taken. Another may serve.
                    Some(unsent) if reused && attempt < ATTEMPTS => {
                        tracing::debug!(error = %e.error(), "upstream connection closed before the request went; trying another");
                        request = unsent;
                    }
                    _ => return Err(SendError::Send(e.into_error())),
                },
            }
        }
    }

    /// Where an answer gives its connection back (`answer.rs`, `abandoned.rs`).
    fn home(self: &Arc<Self>) -> Weak<dyn Home<B>> {
        Arc::downgrade(self) as Weak<Self>
    }

    /// A connection to send on, and whether it carried requests before.
    async fn checkout(self: &Arc<Self>) -> Result<(Sender<B>, bool), SendError> {
        if let Some(h2) = self.shared_h2() {
            return Ok((h2, true));
        }
        if let Some(h1) = self.idle_h1() {
            return Ok((Sender::H1(h1), true));
        }
        // Nothing to take: make a connection. One that may be HTTP/2 takes one of a few places,
        // so that a burst of requests makes a few and shares them.
        let h2 =
            self.may_speak_h2 && crate::support::sync::lock(&self.state).speaks_h2 != Some(false);
        if !h2 {
            // Boxed: making a connection (TCP, TLS, handshake) takes kilobytes of state, which
            // every request's future would otherwise carry and copy as it moves.
            return Box::pin(self.connect()).await.map(|s| (s, false));
        }
        let place = self.connecting.enter().await?;
        if let Some(h2) = self.shared_h2() {
            return Ok((h2, true));
        }
        place.failed_meanwhile()?;
        let made = Box::pin(self.connect()).await;
        place.outcome(made).map(|s| (s, false))
    }

    /// One of the open HTTP/2 connections, in turn. While fewer than `h2_connections` are open,
    /// another is made beside the requests, which go on the open ones meanwhile.
    fn shared_h2(self: &Arc<Self>) -> Option<Sender<B>> {
        let mut state = crate::support::sync::lock(&self.state);
        state.h2.retain(|tx| !tx.is_closed());
        let open = state.h2.len();
        if open == 0 {
            return None;
        }
        if open < self.h2_connections && !state.making_h2 {
            state.making_h2 = true;
            let pool = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = Box::pin(pool.connect()).await {
                    tracing::debug!(error = %e, "another HTTP/2 connection to the upstream failed");
                }
                crate::support::sync::lock(&pool.state).making_h2 = false;
            });
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % open;
        Some(Sender::H2(state.h2[i].clone()))
    }

    /// The most recently used idle HTTP/1.1 connection that is still open and not too old.
    fn idle_h1(&self) -> Option<http1::SendRequest<B>> {
        let mut state = crate::support::sync::lock(&self.state);
        let now = Instant::now();
        while let Some((tx, since)) = state.idle.pop_back() {
            if tx.is_ready() && now.duration_since(since) < IDLE_FOR {
                return Some(tx);
            }
        }
        None
    }

    /// A new connection, ready for requests, within the connect timeout.
    async fn connect(self: &Arc<Self>) -> Result<Sender<B>, SendError> {
        let timeout = self.connect_timeout;
        tokio::time::timeout(timeout, self.handshake())
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Connect(
                    format!(
                        "no connection within {} s (connect_timeout_seconds)",
                        timeout.as_secs()
                    )
                    .into(),
                ))
            })
    }

    async fn handshake(self: &Arc<Self>) -> Result<Sender<B>, SendError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            // Boxed: hyper starts a task per HTTP/2 request whose future has room for the whole
            // connection, the TLS state included; boxing it keeps that room a pointer.
            let (tx, connection) = self
                .http2
                .handshake(Box::new(io))
                .await
                .map_err(SendError::Handshake)?;
            run(connection);
            let mut state = crate::support::sync::lock(&self.state);
            state.speaks_h2 = Some(true);
            state.h2.push(tx.clone());
            return Ok(Sender::H2(tx));
        }
        let (tx, connection) = self
            .http1
            .handshake(io)
            .await
            .map_err(SendError::Handshake)?;
        run(connection);
        crate::support::sync::lock(&self.state).speaks_h2 = Some(false);
        Ok(Sender::H1(tx))
    }

    /// Keeps an HTTP/1.1 connection whose answer was read to the end, once hyper says it can
    /// take the next request (at once, unless the request's body is still being sent).
    fn give_back(self: Arc<Self>, mut tx: http1::SendRequest<B>) {
        if !tx.is_ready() {
            if tx.is_closed() {
                return;
            }
            let pool = Arc::downgrade(&self);
            tokio::spawn(async move {
                if tx.ready().await.is_ok() {
                    if let Some(pool) = pool.upgrade() {
                        pool.keep(tx);
                    }
                }
            });
            return;
        }
        self.keep(tx);
    }

    fn keep(self: Arc<Self>, tx: http1::SendRequest<B>) {
        let mut state = crate::support::sync::lock(&self.state);
        if state.idle.len() >= MAX_IDLE {
            state.idle.pop_front();
        }
        state.idle.push_back((tx, Instant::now()));
        if !state.reaping {
            state.reaping = true;
            drop(state);
            tokio::spawn(reap(Arc::downgrade(&self)));
        }
    }
}

/// Closes idle connections past [`IDLE_FOR`] while the pool lives, so that a quiet route does not
/// hold sockets open at the upstream.
impl<B: Outgoing> Home<B> for Pool<B> {
    fn checkin(self: Arc<Self>, tx: http1::SendRequest<B>) {
        self.give_back(tx);
    }

    fn draining(&self) -> &Draining {
        &self.draining
    }
}

async fn reap<B: Outgoing>(pool: Weak<Pool<B>>) {
    let mut every = tokio::time::interval(REAP_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let mut state = crate::support::sync::lock(&pool.state);
        let now = Instant::now();
        state
            .idle
            .retain(|(tx, since)| !tx.is_closed() && now.duration_since(*since) < IDLE_FOR);
    }
}

/// `/path?query` of an absolute URI, as an HTTP/1.1 request line carries it.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()))
}

/// HTTP/2 connections per upstream: one per core, at most 4. Read once: on Linux it reads the
/// cgroup's CPU limit.
fn h2_connections() -> usize {
    static CONNECTIONS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CONNECTIONS.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 4)
    })
}

/// Runs a connection's future until it ends; hyper moves its requests and answers there.
fn run(connection: impl Future<Output = Result<(), hyper::Error>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_carries_path_and_query_only() {
        for (uri, want) in [
            ("https://api.nav.no/a/b?x=1", "/a/b?x=1"),
            ("http://127.0.0.1:8/", "/"),
            ("http://127.0.0.1:8", "/"),
            ("https://h/%2e?q=%2F", "/%2e?q=%2F"),
        ] {
            assert_eq!(origin_form(&uri.parse().unwrap()).to_string(), want);
        }
    }
}
