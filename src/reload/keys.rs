//! The key watcher: it swaps a client's key when its files change on disk (an edited file, a
//! replaced file, or Kubernetes' atomic `..data` symlink swap).
//!
//! The watcher polls: it reads the key's files every interval and reloads when their bytes change.
//! Reading through the path follows symlinks, so a secret volume's swap is seen like any other
//! change, and it works the same on every filesystem (inotify misses changes on some network and
//! overlay filesystems). Key files are a few kilobytes, so reading them every few seconds is free.

use crate::keys::client_key::{expiry_warning, publish, Watched};
use crate::keys::{keyset, load, KeySource};
use crate::observe::metrics::{Metrics, ReloadLabels};
use std::sync::Arc;
use std::time::Duration;

/// Polls every client's key files each `interval`, reloads a changed key and swaps it in, keeps the
/// old key when the new files do not load (a half-written file is tried again on the next change),
/// and keeps the expiry metrics and warnings current. Runs until the task is dropped.
pub async fn watch(clients: Vec<Watched>, metrics: Arc<Metrics>, interval: Duration) {
    let mut fingerprints: Vec<Option<Vec<u8>>> =
        clients.iter().map(|c| fingerprint(&c.source)).collect();
    let mut last_warning: Vec<Option<tokio::time::Instant>> = vec![None; clients.len()];
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for (i, client) in clients.iter().enumerate() {
            let now = fingerprint(&client.source);
            if now.is_some() && now != fingerprints[i] {
                fingerprints[i] = now;
                reload(client, &metrics).await;
            }
            let (_, key) = client.key.current();
            publish(&client.name, &key, &metrics);
            // Once at startup and then daily, not on every tick.
            let due = last_warning[i].is_none_or(|t| t.elapsed() >= Duration::from_secs(86_400));
            if due {
                if let Some(warning) = expiry_warning(&key, crate::support::time::unix_now() as i64)
                {
                    tracing::warn!(client = %client.name, key = %key.label(), "{warning}");
                }
                last_warning[i] = Some(tokio::time::Instant::now());
            }
        }
    }
}

async fn reload(client: &Watched, metrics: &Metrics) {
    let source = client.source.clone();
    // PKCS#12 key derivation is CPU work: keep it off the proxy's worker threads. A keyset is
    // read once for its active key, its retiring keys and its gauges.
    let loaded = tokio::task::spawn_blocking(move || match &source {
        KeySource::Keyset { path } => keyset::read_active(path).map(|(set, k)| (k, Some(set))),
        other => load(other).map(|k| (k, None)),
    })
    .await;
    let (_, old) = client.key.current();
    let keyset = match &loaded {
        Ok(Ok((_, Some(set)))) => {
            set.publish(metrics, &client.name);
            Some(set)
        }
        _ => None,
    };
    let retiring = keyset.is_some_and(|set| set.retiring(old.kid()));
    let result = match loaded.map(|r| r.map(|(key, _)| key)) {
        Ok(Ok(key)) if key.same_identity(&old) => {
            // The same key, with news of its registration (its `exp` read back from Digdir).
            if key.registration() != old.registration() {
                client.key.succeed(Arc::new(key));
            }
            "unchanged"
        }
        Ok(Ok(key)) if retiring => {
            tracing::info!(client = %client.name, from = %old.label(), to = %key.label(), thumbprint = key.thumbprint(), "key renewed: new tokens are signed with the new key; tokens already fetched keep serving, since the previous key stays registered while it retires");
            client.key.succeed(Arc::new(key));
            "rotated"
        }
        Ok(Ok(key)) => {
            tracing::info!(client = %client.name, from = %old.label(), to = %key.label(), thumbprint = key.thumbprint(), "key rotated: new tokens are signed with the new key");
            client.key.replace(Arc::new(key));
            "rotated"
        }
        Ok(Err(e)) => {
            tracing::error!(client = %client.name, error = %e, "the changed key files do not load; still signing with the previous key");
            "error"
        }
        Err(_) => "error",
    };
    metrics
        .key_reloads
        .get_or_create(&ReloadLabels {
            client: Arc::clone(&client.name),
            result,
        })
        .inc();
}

/// A digest of the bytes of every file the key is read from; `None` when one cannot be read
/// (mid-swap), which is not taken for a change.
fn fingerprint(source: &KeySource) -> Option<Vec<u8>> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for file in source.files() {
        let bytes = std::fs::read(file).ok()?;
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(&bytes);
    }
    Some(ctx.finish().as_ref().to_vec())
}
