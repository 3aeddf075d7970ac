//! Key rotation: each client's current key, and the watcher that swaps it when its files change on
//! disk (an edited file, a replaced file, or Kubernetes' atomic `..data` symlink swap).
//!
//! The watcher polls: it reads the key's files every interval and reloads when their bytes change.
//! Reading through the path follows symlinks, so a secret volume's swap is seen like any other
//! change, and it works the same on every filesystem (inotify misses changes on some network and
//! overlay filesystems). Key files are a few kilobytes, so reading them every few seconds is free.

use super::{load, KeySource, SigningKey};
use crate::observe::metrics::{ClientLabels, Metrics, ReloadLabels};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Warn this long before a certificate (or a registered key's year) runs out.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);
/// Maskinporten removes a registered key one year after upload.
pub const REGISTERED_KEY_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

/// A client's current signing key. Every key it has held gets a generation number, so the token
/// cache can tell with one atomic load whether a cached token was fetched with the current key.
#[derive(Debug)]
pub struct ClientKey {
    current: RwLock<(u64, Arc<SigningKey>)>,
    generation: AtomicU64,
}

impl ClientKey {
    pub fn new(key: Arc<SigningKey>) -> Self {
        ClientKey {
            current: RwLock::new((0, key)),
            generation: AtomicU64::new(0),
        }
    }

    /// The current key and its generation, read together.
    pub fn current(&self) -> (u64, Arc<SigningKey>) {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        (guard.0, Arc::clone(&guard.1))
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Makes `key` the current one while tokens fetched with the previous key keep serving until
    /// they are due for a refresh: for a renewal, where the previous key stays registered.
    pub fn succeed(&self, key: Arc<SigningKey>) {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        guard.1 = key;
    }

    /// Makes `key` the current one; tokens fetched with earlier keys are no longer served.
    pub fn replace(&self, key: Arc<SigningKey>) -> u64 {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        let generation = guard.0 + 1;
        *guard = (generation, key);
        self.generation.store(generation, Ordering::Release);
        generation
    }
}

/// When the key stops being usable: a certificate's not-after, or, for a registered key whose kid
/// carries its creation date (as `portvakt keygen` and Altinn's tool name them), a year after that.
pub fn not_after(key: &SigningKey) -> Option<i64> {
    if let Some(exp) = key.registration().and_then(|r| r.exp) {
        return Some(exp);
    }
    match key.certificate() {
        Some(cert) => Some(cert.not_after),
        None => created(key).map(|c| c + REGISTERED_KEY_LIFETIME.as_secs() as i64),
    }
}

/// When the key was made, where that is known: a certificate's not-before, or a date at the end of
/// the kid (`NAME-TEST.2026-11-21`).
pub fn created(key: &SigningKey) -> Option<i64> {
    if let Some(cert) = key.certificate() {
        return Some(cert.not_before);
    }
    if let Some(r) = key.registration() {
        return Some(r.created);
    }
    let date = key.kid()?.rsplit('.').next()?;
    let mut parts = date.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    crate::support::time::from_civil(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?, 0, 0, 0)
}

/// A warning when the key runs out within [`EXPIRY_WARNING`], worded for the operator.
pub fn expiry_warning(key: &SigningKey, now_unix: i64) -> Option<String> {
    let end = not_after(key)?;
    let days = (end - now_unix).div_euclid(86_400);
    if end - now_unix > EXPIRY_WARNING.as_secs() as i64 {
        return None;
    }
    let date = crate::support::time::date(end);
    if key.registration().is_some() {
        return Some(format!("Digdir's registration of this key ends on {date} ({days} days left): `portvakt rotate` renews it before then, so check that its runs succeed (`portvakt keys status`)"));
    }
    Some(match key.certificate() {
        Some(_) if days < 0 => format!("the certificate expired on {date}"),
        Some(_) => format!("the certificate expires on {date} ({days} days left): order the renewed virksomhetssertifikat and install it"),
        None => format!("the key was created {} and Maskinporten removes registered keys a year after upload (about {date}, {days} days left): make a new key with `portvakt keygen`, register it, then switch", crate::support::time::date(created(key).unwrap_or(end))),
    })
}

/// One client the watcher looks after.
pub struct Watched {
    pub name: Arc<String>,
    pub source: KeySource,
    pub key: Arc<ClientKey>,
}

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
        KeySource::Keyset { path } => {
            super::keyset::read_active(path).map(|(set, k)| (k, Some(set)))
        }
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

/// Sets the client's key gauges: certificate not-after and key age, where known. (A keyset's own
/// gauges change only with its file: they are set where it is read, at start and on reload.)
pub fn publish(client: &Arc<String>, key: &SigningKey, metrics: &Metrics) {
    let labels = ClientLabels {
        client: Arc::clone(client),
    };
    if let Some(cert) = key.certificate() {
        metrics
            .certificate_not_after
            .get_or_create(&labels)
            .set(cert.not_after);
    }
    if let Some(created) = created(key) {
        let age = crate::support::time::unix_now() as i64 - created;
        metrics.key_age.get_or_create(&labels).set(age.max(0));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str) -> SigningKey {
        SigningKey::from_pem(crate::mock::DEMO_CLIENT_KEY_PEM.as_bytes(), kid).unwrap()
    }

    fn day(y: i64, m: u8, d: u8) -> i64 {
        crate::support::time::from_civil(y, m, d, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_dated_kid_tells_the_key_s_age() {
        assert_eq!(
            created(&key("vendor-TEST.2026-11-21")),
            Some(day(2026, 11, 21))
        );
        assert_eq!(created(&key("vendor-TEST.2026-11")), None);
        assert_eq!(created(&key("vendor")), None);
        assert_eq!(created(&key("vendor-TEST.2026-13-01")), None);
    }

    #[test]
    fn registered_keys_warn_a_month_before_their_year_is_up() {
        let k = key("vendor-PROD.2025-12-01");
        assert_eq!(expiry_warning(&k, day(2026, 10, 1)), None);
        let warning = expiry_warning(&k, day(2026, 11, 21)).unwrap();
        assert!(warning.contains("10 days left"), "{warning}");
        assert!(warning.contains("portvakt keygen"), "{warning}");
        assert_eq!(expiry_warning(&key("undated"), day(2026, 11, 21)), None);
    }

    #[test]
    fn generations_count_replacements() {
        let current = ClientKey::new(Arc::new(key("a")));
        assert_eq!(current.generation(), 0);
        assert_eq!(current.replace(Arc::new(key("b"))), 1);
        let (generation, k) = current.current();
        assert_eq!((generation, k.kid()), (1, Some("b")));
        assert_eq!(current.generation(), 1);
    }
}
