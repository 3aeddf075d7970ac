//! Composition root: builds the proxy from a validated [`Config`] and starts its listeners.

use crate::admin::Admin;
use crate::config::{Config, RouteConfig, SystemUser};
use crate::error::Body;
use crate::keys::rotation::{self, Watched};
use crate::keys::ClientKey;
use crate::metrics::Metrics;
use crate::party::{Parties, PartyKind, Selector};
use crate::proxy::Proxy;
use crate::route::{Route, RouteTable, Target};
use crate::token::{
    client, AltinnExchange, ClientIdentity, GrantSpec, TokenCache, TokenEndpoint, TokenKey,
    TokenSlot,
};
use crate::upstream::UpstreamClient;
use anyhow::Context as _;
use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use http::{Request, Response};
use hyper::body::Incoming;
use rustls_pki_types::CertificateDer;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::{Service, ServiceBuilder, ServiceExt as _};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};

/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The TLS configuration for outbound connections: rustls with the Mozilla roots, plus the CA
/// certificates in `extra_roots` (a route's `ca_file`).
pub fn tls_config(extra_roots: &[CertificateDer<'static>]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .context("a ca_file certificate is not a usable CA certificate")?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The configured Maskinporten token endpoint, over `tls` (plus `maskinporten.ca_file`).
pub fn token_endpoint(
    config: &Config,
    tls: &rustls::ClientConfig,
) -> anyhow::Result<TokenEndpoint> {
    let token_tls = match &config.maskinporten.ca_file {
        Some(ca) => tls_config(&ca.certs)
            .with_context(|| format!("maskinporten.ca_file: {}", ca.path.display()))?,
        None => tls.clone(),
    };
    let http = client::http_client(token_tls, config.maskinporten.timeout)
        .context("building the token endpoint client")?;
    Ok(TokenEndpoint::new(
        http,
        config.maskinporten.token_endpoint.clone(),
        config.maskinporten.issuer.clone(),
    ))
}

/// What a route asks Maskinporten for when acting for `consumer_org` (delegation) and as
/// `systemuser` (an Altinn system user).
pub fn grant_spec(
    route: &RouteConfig,
    consumer_org: Option<&str>,
    systemuser: Option<&SystemUser>,
) -> GrantSpec {
    let mut details = route.authorization_details.clone();
    if let Some(user) = systemuser {
        details.push(user.authorization_detail());
    }
    GrantSpec::new(
        &route.scopes,
        route.resource.as_ref(),
        consumer_org,
        &details,
    )
}

/// The grant for the party `org` (or the route's default party), as `portvakt token` asks for it.
pub fn party_grant_spec(route: &RouteConfig, org: Option<&str>) -> Result<GrantSpec, String> {
    let (consumer, user) = (route.consumer_org.as_deref(), route.systemuser.as_ref());
    let (consumers, users) = (route.allowed_consumers(), route.allowed_systemusers());
    let allowed: Vec<&str> = consumers
        .clone()
        .chain(users.clone().map(|u| u.org.as_str()))
        .collect();
    match org {
        None if route.needs_party() => Err(format!(
            "route {} acts for one of {} per call: name one with --party",
            route.name,
            allowed.join(", ")
        )),
        None => Ok(grant_spec(route, consumer, user)),
        Some(org) => {
            let org = org.strip_prefix("0192:").unwrap_or(org);
            if let Some(c) = consumers.clone().find(|c| *c == org) {
                Ok(grant_spec(route, Some(c), user))
            } else if let Some(u) = users.clone().find(|u| u.org == org) {
                Ok(grant_spec(route, consumer, Some(u)))
            } else if allowed.is_empty() {
                Err(format!(
                    "route {} does not act for other organisations",
                    route.name
                ))
            } else {
                Err(format!(
                    "route {} may act for {}, not {org}",
                    route.name,
                    allowed.join(", ")
                ))
            }
        }
    }
}

/// A route's token slots, one per party it may act for.
fn parties(route: &RouteConfig, slot: &dyn Fn(GrantSpec) -> Arc<TokenSlot>) -> Parties {
    let (consumer, user) = (route.consumer_org.as_deref(), route.systemuser.as_ref());
    let default = (!route.needs_party()).then(|| slot(grant_spec(route, consumer, user)));
    let mut consumers = Selector::new(PartyKind::ConsumerOrg, route.consumer_org_header.clone());
    for org in route.allowed_consumers() {
        consumers.allow(org, slot(grant_spec(route, Some(org), user)));
    }
    let mut users = Selector::new(PartyKind::SystemUser, route.systemuser_org_header.clone());
    for u in route.allowed_systemusers() {
        users.allow(&u.org, slot(grant_spec(route, consumer, Some(u))));
    }
    Parties::new(default, vec![consumers, users])
}

/// What `build` makes from a config: the request pipeline, and the clients whose key files are
/// watched for rotation.
pub struct App {
    pub proxy: Arc<Proxy>,
    pub keys: Vec<Watched>,
    pub watch_interval: Duration,
}

/// Builds the request pipeline: route table, token cache slots and upstream client.
pub fn build(config: &Config) -> anyhow::Result<App> {
    let tls = tls_config(&[])?;
    let default_upstream = crate::upstream::client(tls.clone());
    // One pooled client per distinct ca_file; routes without one share the default.
    let mut upstream_clients: HashMap<PathBuf, UpstreamClient> = HashMap::new();
    let metrics = Arc::new(Metrics::new());
    let endpoint = Arc::new(token_endpoint(config, &tls)?);
    let cache = TokenCache::new(endpoint, Arc::clone(&metrics), config.maskinporten.timeout);
    let mut keys = Vec::with_capacity(config.clients.len());
    let mut clients: HashMap<&str, Arc<ClientIdentity>> = HashMap::new();
    for c in &config.clients {
        let identity = Arc::new(ClientIdentity {
            name: Arc::new(c.name.clone()),
            client_id: c.client_id.clone(),
            key: Arc::new(ClientKey::new(Arc::clone(&c.key))),
        });
        rotation::publish(&identity.name, &c.key, &metrics);
        keys.push(Watched {
            name: Arc::clone(&identity.name),
            source: c.source.clone(),
            key: Arc::clone(&identity.key),
        });
        clients.insert(c.name.as_str(), identity);
    }
    let altinn_http = client::http_client(tls.clone(), config.maskinporten.timeout)
        .context("building the Altinn exchange client")?;
    let mut exchanges: HashMap<&str, Arc<AltinnExchange>> = HashMap::new();
    let mut routes = Vec::with_capacity(config.routes.len());
    for r in &config.routes {
        let client = clients
            .get(r.client.as_str())
            .with_context(|| format!("route {} names unknown client {}", r.name, r.client))?;
        let exchange = r.altinn_exchange.as_ref().map(|a| {
            Arc::clone(exchanges.entry(a.url.as_str()).or_insert_with(|| {
                Arc::new(AltinnExchange::new(altinn_http.clone(), a.url.clone()))
            }))
        });
        let slot = |grant: GrantSpec| {
            let key = TokenKey {
                client: Arc::clone(&client.name),
                grant,
            };
            match &exchange {
                Some(exchange) => cache.altinn_slot(key, client, exchange),
                None => cache.slot(key, client),
            }
        };
        let http = match &r.ca_file {
            None => default_upstream.clone(),
            Some(ca) => match upstream_clients.get(&ca.path) {
                Some(client) => client.clone(),
                None => {
                    let client = crate::upstream::client(
                        tls_config(&ca.certs)
                            .with_context(|| format!("route {}: {}", r.name, ca.path.display()))?,
                    );
                    upstream_clients.insert(ca.path.clone(), client.clone());
                    client
                }
            },
        };
        let upstream = Target::from_uri(&r.upstream)
            .with_context(|| format!("route {}: upstream has no scheme or host", r.name))?;
        routes.push(Arc::new(Route {
            name: Arc::new(r.name.clone()),
            prefix: r.prefix.clone(),
            upstream,
            client: Arc::clone(&client.name),
            parties: parties(r, &slot),
            headers: r
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), v.expose().clone()))
                .collect(),
            timeout: r.timeout,
            retry_body_max: r.retry_on_401.then_some(r.retry_body_max_bytes),
            http,
        }));
    }
    Ok(App {
        proxy: Arc::new(Proxy::new(RouteTable::new(routes), metrics)),
        keys,
        watch_interval: config.watch_interval,
    })
}

/// A started portvakt: its bound addresses and the handle to stop it.
pub struct Running {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    key_watcher: JoinHandle<()>,
}

impl Running {
    /// Stops accepting and drains in-flight requests (up to the grace period), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.key_watcher.abort();
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn until_signal(self) {
        wait_for_signal().await;
        tracing::info!(
            grace_seconds = SHUTDOWN_GRACE.as_secs(),
            "shutting down: draining in-flight requests"
        );
        self.shutdown().await;
    }
}

/// The inbound service: cross-cutting layers, outermost first, around the pipeline in `proxy.rs`.
fn stack(
    proxy: Arc<Proxy>,
) -> impl Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + Sync
       + 'static {
    ServiceBuilder::new()
        // The caller's credentials (replaced before forwarding) and cookies both ways are marked
        // sensitive first, so no later layer or log line can print them.
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            PROXY_AUTHORIZATION,
            COOKIE,
        ]))
        .layer(SetSensitiveResponseHeadersLayer::new([SET_COOKIE]))
        .service_fn(move |request| {
            let proxy = Arc::clone(&proxy);
            async move { Ok::<_, Infallible>(proxy.handle(request).await) }
        })
}

/// Binds both listeners (before anything is served, so a port in use fails the start) and serves.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let app = build(config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin_listener = match config.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (admin_listen)"))?,
        ),
        None => None,
    };
    start_on(app, listener, admin_listener)
}

/// Serves on listeners the caller already bound (the demo picks free ports this way).
pub fn start_on(
    app: App,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
) -> anyhow::Result<Running> {
    let proxy = app.proxy;
    let (shutdown, stop) = watch::channel(false);
    let listen = listener.local_addr()?;
    let mut tasks = Vec::new();
    let key_watcher = tokio::spawn(rotation::watch(
        app.keys,
        Arc::clone(&proxy.metrics),
        app.watch_interval,
    ));
    let service = stack(Arc::clone(&proxy));
    tasks.push(tokio::spawn(crate::server::serve(
        listener,
        None,
        move |req, _peer| {
            let service = service.clone();
            async move {
                match service.oneshot(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        },
        stop.clone(),
        SHUTDOWN_GRACE,
    )));
    let admin = match admin_listener {
        Some(l) => {
            let addr = l.local_addr()?;
            let admin = Arc::new(Admin {
                proxy: Arc::clone(&proxy),
            });
            tasks.push(tokio::spawn(crate::server::serve(
                l,
                None,
                move |req, _peer| Arc::clone(&admin).handle(req),
                stop,
                SHUTDOWN_GRACE,
            )));
            Some(addr)
        }
        None => None,
    };
    tracing::info!(%listen, admin = ?admin, routes = proxy.routes.iter().count(), "portvakt listening");
    Ok(Running {
        listen,
        admin,
        shutdown,
        tasks,
        key_watcher,
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
