//! Composition root: builds the proxy from a validated [`Config`] and starts its listeners.

use crate::admin::Admin;
use crate::config::{Config, Egress, Inbound, Maskinporten, RouteConfig, SystemUser};
use crate::error::Body;
use crate::keys::rotation::{self, Watched};
use crate::keys::ClientKey;
use crate::keys::KeySource;
use crate::metrics::Metrics;
use crate::party::{Parties, PartyKind, Selector};
use crate::proxy::Proxy;
use crate::proxy::{Peer, Snapshot};
use crate::reload::Reloader;
use crate::route::{Route, RouteTable, Target};
use crate::server::Limits;
use crate::token::TokenSource;
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
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceBuilder, ServiceExt as _};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};

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
    let http = client::http_client(
        token_tls,
        config.maskinporten.timeout,
        config.maskinporten.connect_timeout,
        &config.maskinporten.proxy,
    )
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

/// What a build keeps for the next reload, so that what did not change keeps its state: clients
/// their keys (and so their cached tokens), the token cache its slots, the endpoint its breaker.
pub struct Kept {
    maskinporten: Maskinporten,
    endpoint: Arc<TokenEndpoint>,
    cache: TokenCache,
    clients: HashMap<String, KeptClient>,
}

struct KeptClient {
    client_id: String,
    source: KeySource,
    identity: Arc<ClientIdentity>,
}

/// What `build` makes from a config: the request pipeline's snapshot, the clients whose key files
/// are watched for rotation, and what the next reload keeps.
pub struct Built {
    pub snapshot: Snapshot,
    pub keys: Vec<Watched>,
    pub kept: Kept,
}

/// Builds the request pipeline from a new config. With `previous`, clients whose client_id and
/// key source did not change keep their identity, and routes asking for the same token as before
/// keep its slot, cached token included.
pub fn assemble(
    config: &Config,
    metrics: &Arc<Metrics>,
    previous: Option<&Kept>,
) -> anyhow::Result<Built> {
    let tls = tls_config(&[])?;
    // Tokens from another Maskinporten (environment, endpoint, proxy) are never carried over.
    let previous = previous.filter(|p| p.maskinporten == config.maskinporten);
    let endpoint = match previous {
        Some(p) => Arc::clone(&p.endpoint),
        None => Arc::new(token_endpoint(config, &tls)?.with_metrics(
            metrics.clock_skew.clone(),
            metrics.token_endpoint_open.clone(),
        )),
    };
    let mut cache = TokenCache::new(
        Arc::clone(&endpoint) as Arc<dyn TokenSource>,
        Arc::clone(metrics),
        config.maskinporten.timeout,
    );
    if let Some(p) = previous {
        cache.inherit(&p.cache);
    }
    let mut keys = Vec::with_capacity(config.clients.len());
    let mut clients: HashMap<String, KeptClient> = HashMap::new();
    for c in &config.clients {
        let same = previous
            .and_then(|p| p.clients.get(&c.name))
            .filter(|k| k.client_id == c.client_id && k.source == c.source);
        let identity = match same {
            Some(kept) => {
                // The files may have changed since the key watcher last looked.
                if !kept.identity.key.current().1.same_identity(&c.key) {
                    kept.identity.key.replace(Arc::clone(&c.key));
                }
                Arc::clone(&kept.identity)
            }
            None => Arc::new(ClientIdentity {
                name: Arc::new(c.name.clone()),
                client_id: c.client_id.clone(),
                key: Arc::new(ClientKey::new(Arc::clone(&c.key))),
            }),
        };
        rotation::publish(&identity.name, &identity.key.current().1, metrics);
        keys.push(Watched {
            name: Arc::clone(&identity.name),
            source: c.source.clone(),
            key: Arc::clone(&identity.key),
        });
        clients.insert(
            c.name.clone(),
            KeptClient {
                client_id: c.client_id.clone(),
                source: c.source.clone(),
                identity,
            },
        );
    }
    let altinn_http = client::http_client(
        tls.clone(),
        config.maskinporten.timeout,
        config.maskinporten.connect_timeout,
        &config.maskinporten.proxy,
    )
    .context("building the Altinn exchange client")?;
    let mut exchanges: HashMap<&str, Arc<AltinnExchange>> = HashMap::new();
    let mut upstreams = UpstreamClients::new(tls);
    let mut routes = Vec::with_capacity(config.routes.len());
    for r in &config.routes {
        let client = &clients
            .get(&r.client)
            .with_context(|| format!("route {} names unknown client {}", r.name, r.client))?
            .identity;
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
        let upstream = Target::from_uri(&r.upstream)
            .with_context(|| format!("route {}: upstream has no scheme or host", r.name))?;
        let (http, tls) = upstreams
            .get(r)
            .with_context(|| format!("route {}", r.name))?;
        let local = crate::upstream::local_target(r, &tls);
        if let Some(local) = &local {
            local.probe();
        }
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
            local,
            allow: r.allow.clone(),
            api_keys: r.api_keys.clone(),
            api_key_header: r.api_key_header.clone(),
            max_body_bytes: r.max_body_bytes,
            idle_timeout: r.idle_timeout,
        }));
    }
    let kept_tokens = cache.settle();
    if previous.is_some() {
        tracing::info!(
            kept_tokens,
            "token slots carried over from the previous configuration"
        );
    }
    Ok(Built {
        snapshot: Snapshot {
            routes: RouteTable::new(routes),
            allow: config.inbound.allow.clone(),
        },
        keys,
        kept: Kept {
            maskinporten: config.maskinporten.clone(),
            endpoint,
            cache,
            clients,
        },
    })
}

/// One pooled upstream client per distinct TLS trust, connect timeout and proxy; routes that
/// agree on all three share one, and its connections.
struct UpstreamClients {
    tls: rustls::ClientConfig,
    made: Vec<(UpstreamKind, UpstreamClient, rustls::ClientConfig)>,
}

/// What sets two routes' upstream clients apart: extra CA file, connect timeout, proxy, HTTP/2.
type UpstreamKind = (Option<PathBuf>, Duration, Egress, bool);

impl UpstreamClients {
    fn new(tls: rustls::ClientConfig) -> Self {
        UpstreamClients {
            tls,
            made: Vec::new(),
        }
    }

    /// The route's pooled client, and the TLS configuration it verifies upstreams with.
    fn get(&mut self, r: &RouteConfig) -> anyhow::Result<(UpstreamClient, rustls::ClientConfig)> {
        let key = (
            r.ca_file.as_ref().map(|c| c.path.clone()),
            r.connect_timeout,
            r.proxy.clone(),
            r.upstream_http2,
        );
        if let Some((_, client, tls)) = self.made.iter().find(|(k, _, _)| *k == key) {
            return Ok((client.clone(), tls.clone()));
        }
        let tls = match &r.ca_file {
            None => self.tls.clone(),
            Some(ca) => tls_config(&ca.certs).with_context(|| ca.path.display().to_string())?,
        };
        let client =
            crate::upstream::client(tls.clone(), r.connect_timeout, &r.proxy, r.upstream_http2);
        self.made.push((key, client.clone(), tls.clone()));
        Ok((client, tls))
    }
}

/// What `build` makes from a config: the request pipeline, and the clients whose key files are
/// watched for rotation.
pub struct App {
    pub proxy: Arc<Proxy>,
    pub keys: Vec<Watched>,
    pub kept: Kept,
    pub watch_interval: Duration,
    pub inbound: Inbound,
    pub shutdown_grace: Duration,
}

/// Builds the request pipeline: route table, token cache slots and upstream clients.
pub fn build(config: &Config) -> anyhow::Result<App> {
    let metrics = Arc::new(Metrics::new());
    let built = assemble(config, &metrics, None)?;
    Ok(App {
        proxy: Arc::new(Proxy::new(
            built.snapshot,
            metrics,
            config.inbound.max_concurrent_requests,
        )),
        keys: built.keys,
        kept: built.kept,
        watch_interval: config.watch_interval,
        inbound: config.inbound.clone(),
        shutdown_grace: config.shutdown_grace,
    })
}

/// A started portvakt: its bound addresses and the handle to stop it.
pub struct Running {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub proxy: Arc<Proxy>,
    shutdown: watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    reloader: Arc<Reloader>,
    grace: Duration,
}

impl Running {
    /// Stops accepting and drains in-flight requests (up to the grace period), then returns.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        self.reloader.stop();
        let tasks = std::mem::take(&mut *crate::sync::lock(&self.tasks));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Reloads from `path` on SIGHUP and whenever the file changes; a new config that does not
    /// load is logged and the running one keeps serving.
    pub fn reload_from(&self, path: PathBuf) {
        let task = tokio::spawn(crate::reload::watch(Arc::clone(&self.reloader), path));
        self.reloader.add_task(task);
    }

    /// Loads `path` now, as SIGHUP does; the error when it does not load (and nothing changed).
    pub async fn reload(&self, path: &std::path::Path) -> Result<(), String> {
        self.reloader.reload(path).await
    }

    /// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
    pub async fn until_signal(self) {
        wait_for_signal().await;
        tracing::info!(
            grace_seconds = self.grace.as_secs(),
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
    let running = start_on(app, listener, admin_listener)?;
    running.reloader.remember(config);
    Ok(running)
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
    let reloader = Arc::new(Reloader::new(
        Arc::clone(&proxy),
        app.kept,
        app.keys,
        app.watch_interval,
    ));
    let service = stack(Arc::clone(&proxy));
    let limits = Limits {
        max_header_bytes: app.inbound.max_header_bytes,
        tls: app
            .inbound
            .tls
            .as_ref()
            .map(|t| TlsAcceptor::from(Arc::clone(&t.server))),
        lane: Some(Arc::clone(&proxy)),
    };
    tasks.push(tokio::spawn(crate::server::serve(
        listener,
        limits,
        move |mut req: Request<Incoming>, peer| {
            req.extensions_mut().insert(Peer(peer));
            let service = service.clone();
            async move {
                match service.oneshot(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        },
        stop.clone(),
        app.shutdown_grace,
    )));
    let admin = match admin_listener {
        Some(l) => {
            let addr = l.local_addr()?;
            let admin = Arc::new(Admin {
                proxy: Arc::clone(&proxy),
            });
            tasks.push(tokio::spawn(crate::server::serve(
                l,
                Limits::default(),
                move |req, _peer| Arc::clone(&admin).handle(req),
                stop,
                app.shutdown_grace,
            )));
            Some(addr)
        }
        None => None,
    };
    tracing::info!(%listen, admin = ?admin, tls = app.inbound.tls.is_some(), routes = proxy.snapshot().routes.iter().count(), "portvakt listening");
    Ok(Running {
        listen,
        admin,
        proxy,
        shutdown,
        tasks: std::sync::Mutex::new(tasks),
        reloader,
        grace: app.shutdown_grace,
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
