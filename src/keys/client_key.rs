//! Each client's current key (swapped by the key watcher, `reload/keys.rs`, when its files
//! change), how long it has left, and its gauges.

use super::{KeySource, SigningKey};
use crate::observe::metrics::{ClientLabels, Metrics};
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
