//! The proxy's state (the routes in force, the places, the metrics) and the innermost steps of the
//! stack (`layers::stack`): [`Decide`] asks [`pipeline::decide`] whether and how a request is sent,
//! and [`forward::Forward`] sends it.

pub mod forward;

use crate::observe::metrics::Metrics;
use crate::observe::recent::RecentErrors;
use crate::pipeline::{self, Refused, Routed, Served, Snapshot};
use crate::request::permits::Permits;
use crate::server::CallerBody;
use arc_swap::ArcSwap;
use http::Request;
use hyper::body::Body as _;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;

/// The future of a request inside the stack, boxed once, where it is made ([`Decide`]).
pub type Inner = Pin<Box<dyn Future<Output = Result<Served, Refused>> + Send>>;

/// Everything the request path needs, shared by all connections. A reload swaps the snapshot;
/// requests under way finish on the one they started with.
pub struct Proxy {
    current: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub permits: Arc<Permits>,
    /// The last requests answered with an error, for the status page.
    pub recent: Arc<RecentErrors>,
}

/// The caller's address, put into each request's extensions by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Peer {
    /// The address of the caller who sent `request` (unspecified when no listener said).
    pub fn of<B>(request: &Request<B>) -> IpAddr {
        request
            .extensions()
            .get::<Peer>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip())
    }
}

impl Proxy {
    /// `max_in_flight` requests at once, `per_address` of them from one caller address.
    pub fn new(
        snapshot: Snapshot,
        metrics: Arc<Metrics>,
        max_in_flight: usize,
        per_address: usize,
    ) -> Self {
        Proxy {
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            permits: Arc::new(Permits::new(max_in_flight, per_address)),
            recent: Arc::default(),
        }
    }

    /// The routes and rules in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Requests admitted and not yet finished (their place is held to the last body byte).
    pub fn in_flight(&self) -> usize {
        self.permits.in_flight()
    }

    /// Puts a reloaded configuration in force for the requests that arrive from now on.
    pub fn replace(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// The name of the route a path would take now, for labelling a request refused before it
    /// was decided.
    pub fn route_of(&self, path: &str) -> Option<Arc<String>> {
        let snapshot = self.current.load();
        snapshot
            .routes
            .find(path)
            .map(|(route, _)| Arc::clone(&route.name))
    }
}

/// The step that decides: [`pipeline::decide`] on the request's head, under the routes in force
/// when it arrived; a request it says yes to goes on to `inner` with its plan.
#[derive(Clone)]
pub struct Decide<S> {
    proxy: Arc<Proxy>,
    inner: S,
}

impl<S> Decide<S> {
    pub fn new(proxy: Arc<Proxy>, inner: S) -> Self {
        Decide { proxy, inner }
    }
}

impl<S> Service<Request<CallerBody>> for Decide<S>
where
    S: Service<Routed<CallerBody>, Response = Served, Error = Refused> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Served;
    type Error = Refused;
    type Future = Inner;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Refused>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<CallerBody>) -> Inner {
        let (proxy, mut inner) = (Arc::clone(&self.proxy), self.inner.clone());
        // The request's future is boxed here, once: it is kilobytes, and every layer above
        // (hyper, tower, the server) would otherwise copy it as it moves it into its own state.
        Box::pin(async move {
            let peer = Peer::of(&request);
            let (head, body) = request.into_parts();
            let snapshot = proxy.snapshot();
            let plan = pipeline::decide(&snapshot, &head, &body.size_hint(), peer).await?;
            let request = Request::from_parts(head, body);
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            inner.call(Routed { plan, request }).await
        })
    }
}
