//! Hot reload: SIGHUP or a changed config file loads the new configuration and puts it in force
//! for new requests. A configuration that does not load is logged and the running one keeps
//! serving; clients and tokens that did not change are kept (see [`crate::build::assemble`]).
//! [`keys`] watches the key files themselves.

pub mod keys;

use crate::build::{assemble, Kept};
use crate::config::Config;
use crate::keys::client_key::Watched;
use crate::observe::metrics::ResultLabels;
use crate::proxy::Proxy;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Settings bound when the listeners started: a reload that changes them says a restart is needed.
#[derive(Debug, Clone, PartialEq)]
struct Fixed {
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    max_header_bytes: usize,
    max_concurrent_requests: usize,
    max_concurrent_per_address: usize,
    answer_stall: Duration,
    shutdown_grace: Duration,
}

impl Fixed {
    fn of(config: &Config) -> Self {
        Fixed {
            listen: config.listen,
            admin_listen: config.admin_listen,
            tls_cert: config.inbound.tls.as_ref().map(|t| t.cert.clone()),
            client_ca: config
                .inbound
                .tls
                .as_ref()
                .and_then(|t| t.client_ca.clone()),
            max_header_bytes: config.inbound.max_header_bytes,
            max_concurrent_requests: config.inbound.max_concurrent_requests,
            max_concurrent_per_address: config.inbound.max_concurrent_per_address,
            answer_stall: config.inbound.answer_stall,
            shutdown_grace: config.shutdown_grace,
        }
    }
}

/// Swaps configurations into a running proxy, one at a time.
pub struct Reloader {
    proxy: Arc<Proxy>,
    kept: Mutex<Kept>,
    fixed: Mutex<Option<Fixed>>,
    watch_interval: Duration,
    key_watcher: Mutex<Option<JoinHandle<()>>>,
    /// The background key renewers (`renew.background`), started anew by each configuration.
    renewers: Mutex<Vec<JoinHandle<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        proxy: Arc<Proxy>,
        kept: Kept,
        keys: Vec<Watched>,
        watch_interval: Duration,
    ) -> Self {
        let reloader = Reloader {
            proxy,
            kept: Mutex::new(kept),
            fixed: Mutex::new(None),
            watch_interval,
            key_watcher: Mutex::new(None),
            renewers: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
            one_at_a_time: tokio::sync::Mutex::new(()),
        };
        reloader.watch_keys(keys);
        reloader
    }

    /// The settings the listeners were started with.
    pub fn remember(&self, config: &Config) {
        *crate::support::sync::lock(&self.fixed) = Some(Fixed::of(config));
    }

    pub fn add_task(&self, task: JoinHandle<()>) {
        crate::support::sync::lock(&self.tasks).push(task);
    }

    pub fn stop(&self) {
        if let Some(t) = crate::support::sync::lock(&self.key_watcher).take() {
            t.abort();
        }
        for t in crate::support::sync::lock(&self.tasks).drain(..) {
            t.abort();
        }
        for t in crate::support::sync::lock(&self.renewers).drain(..) {
            t.abort();
        }
    }

    /// Starts the background key renewers of `config`, in place of those running.
    pub fn renew(&self, config: &Config) {
        let started = crate::renew::background::spawn(config, &self.proxy.metrics);
        for old in std::mem::replace(&mut *crate::support::sync::lock(&self.renewers), started) {
            old.abort();
        }
    }

    fn watch_keys(&self, keys: Vec<Watched>) {
        let task = tokio::spawn(keys::watch(
            keys,
            Arc::clone(&self.proxy.metrics),
            self.watch_interval,
        ));
        if let Some(old) = crate::support::sync::lock(&self.key_watcher).replace(task) {
            old.abort();
        }
    }

    /// Loads `path` and puts it in force, or leaves everything as it was and says why.
    pub async fn reload(&self, path: &Path) -> Result<(), String> {
        let _one = self.one_at_a_time.lock().await;
        let file = path.to_path_buf();
        // Loading keys (PKCS#12 key derivation) is CPU work: off the proxy's worker threads.
        let loaded = tokio::task::spawn_blocking(move || crate::config::load(&file))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let result = loaded.and_then(|config| self.apply(&config).map(|()| config));
        let label = if result.is_ok() { "ok" } else { "error" };
        self.proxy
            .metrics
            .config_reloads
            .get_or_create(&ResultLabels { result: label })
            .inc();
        match result {
            Ok(config) => {
                tracing::info!(file = %path.display(), routes = config.routes.len(), "configuration reloaded");
                Ok(())
            }
            Err(e) => {
                // Config errors name fields and files, never secret values.
                for line in e.lines() {
                    tracing::error!(file = %path.display(), "{line}");
                }
                tracing::error!(file = %path.display(), "the new configuration was not loaded: still serving the previous one");
                Err(e)
            }
        }
    }

    fn apply(&self, config: &Config) -> Result<(), String> {
        let mut kept = crate::support::sync::lock(&self.kept);
        let built =
            assemble(config, &self.proxy.metrics, Some(&kept)).map_err(|e| format!("{e:#}"))?;
        let fixed = Fixed::of(config);
        if let Some(old) = crate::support::sync::lock(&self.fixed).as_ref() {
            if *old != fixed {
                tracing::warn!("listen, admin_listen, inbound.tls, inbound.max_header_bytes, inbound.max_concurrent_requests, inbound.max_concurrent_per_address, inbound.answer_stall_seconds and shutdown_grace_seconds take effect at the next restart; everything else is in force now");
            }
        }
        self.proxy.replace(built.snapshot);
        *kept = built.kept;
        drop(kept);
        self.watch_keys(built.keys);
        self.renew(config);
        Ok(())
    }
}

/// Reloads on SIGHUP, and when the file's content changes (checked every `watch_interval`, which
/// also sees a Kubernetes ConfigMap swapped under it). Runs until aborted.
pub async fn watch(reloader: Arc<Reloader>, path: PathBuf) {
    let mut last = std::fs::read(&path).ok();
    let mut ticker = tokio::time::interval(reloader.watch_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hangup = hangup();
    loop {
        tokio::select! {
            _ = next_hangup(&mut hangup) => {
                tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration");
                last = std::fs::read(&path).ok();
                let _ = reloader.reload(&path).await;
            }
            _ = ticker.tick() => {
                let now = std::fs::read(&path).ok();
                // A file that cannot be read right now (being replaced) is looked at again next tick.
                if now.is_some() && now != last {
                    last = now;
                    tracing::info!(file = %path.display(), "the configuration file changed: reloading");
                    let _ = reloader.reload(&path).await;
                }
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(h: &mut Hangup) {
    match h {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending::<()>().await
}
