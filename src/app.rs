//! Composition root: builds the proxy from a validated [`Config`] and starts its listeners.

use crate::build::{assemble, Kept};
use crate::config::{Config, Inbound};
use crate::keys::client_key::Watched;
use crate::observe::metrics::Metrics;
use crate::operator::admin::Admin;
use crate::proxy::{Peer, Proxy};
use crate::reload::Reloader;
use crate::server::CallerBody;
use crate::server::Limits;
use anyhow::Context as _;
use http::Request;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

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
            config.inbound.max_concurrent_per_address,
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
        let tasks = std::mem::take(&mut *crate::support::sync::lock(&self.tasks));
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
    // Key renewal inside the proxy, where a client asks for it (renew.background).
    running.reloader.renew(config);
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
    let service = crate::layers::stack(&proxy);
    let limits = Limits {
        max_header_bytes: app.inbound.max_header_bytes,
        tls: app
            .inbound
            .tls
            .as_ref()
            .map(|t| TlsAcceptor::from(Arc::clone(&t.server))),
        answer_stall: Some(app.inbound.answer_stall),
        on_stall: Some({
            let metrics = Arc::clone(&proxy.metrics);
            Arc::new(move |_peer| {
                metrics
                    .slow_callers_cut
                    .get_or_create(&crate::observe::metrics::CutLabels {
                        reason: "answer_stall",
                    })
                    .inc();
            })
        }),
    };
    tasks.push(tokio::spawn(crate::server::serve(
        listener,
        limits,
        move |mut req: Request<CallerBody>, peer| {
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
