//! One token's cache entry: the token while it serves, and the single flight that fills it (one
//! fetch at a time however many requests wait, refresh ahead of expiry while the current token
//! keeps serving, backoff after failures). The fetch itself is in `fetch.rs`.

use super::altinn::AltinnExchange;
use super::client::Issued;
use super::fetch_error::FetchError;
use super::policy::Schedule;
use super::{ClientIdentity, TokenKey, TokenSource};
use crate::observe::metrics::{ClientLabels, Metrics};
use arc_swap::ArcSwapOption;
use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A token the upstream refused is dropped at most this often per slot, so an upstream that
/// refuses every token cannot turn each request into a Maskinporten call.
const MIN_INVALIDATION_INTERVAL: Duration = Duration::from_secs(10);

/// A cached access token. The `Authorization` value is built once per token, not per request.
pub struct Token {
    pub(super) bearer: HeaderValue,
    /// The client key generation that signed the grant for this token.
    pub(super) key_generation: u64,
    pub expires_in: u64,
    pub schedule: Schedule,
}

impl Token {
    /// A token for tests of the steps after the decision, which never look inside it.
    #[cfg(test)]
    pub fn for_test(bearer: &'static str) -> Arc<Token> {
        let now = tokio::time::Instant::now();
        Arc::new(Token {
            bearer: HeaderValue::from_static(bearer),
            key_generation: 0,
            expires_in: 60,
            schedule: super::policy::schedule(now, std::time::Duration::from_secs(60)),
        })
    }

    /// `Bearer <token>`, marked sensitive so it is never printed by hyper or tracing.
    pub fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("bearer", &"***")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why a request gets no token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The last fetch failed; the next attempt is not before `retry_after` from now.
    #[error("{error}")]
    Failed {
        error: FetchError,
        retry_after: Duration,
    },
    /// A fetch is under way but did not finish within the waiting bound.
    #[error("no token from Maskinporten within {} s", .0.as_secs())]
    WaitTimeout(Duration),
}

#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) error: FetchError,
    /// A failure with an earlier key says nothing about the current one: a rotated key is tried at once.
    pub(super) key_generation: u64,
    pub(super) since: std::time::SystemTime,
    pub(super) retry_at: Instant,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) token: Option<Arc<Token>>,
    pub(super) fetching: bool,
    pub(super) failures: u32,
    pub(super) failure: Option<Failure>,
    pub(super) last_invalidated: Option<Instant>,
}

impl State {
    /// Until when `token` may go out. Normally up to the safety margin before it expires; while
    /// Maskinporten is unavailable, to its hard expiry, since no fresher token can be had.
    fn usable_until(&self, token: &Token) -> Instant {
        match &self.failure {
            Some(f) if f.error.is_transient() => token.schedule.expires_at,
            _ => token.schedule.serve_until,
        }
    }
}

/// Where a slot's tokens come from.
pub(super) enum Origin {
    /// A fresh grant to Maskinporten's token endpoint.
    Maskinporten(Arc<dyn TokenSource>),
    /// The token of another slot, exchanged at Altinn.
    Altinn {
        maskinporten: Arc<TokenSlot>,
        exchange: Arc<AltinnExchange>,
    },
}

/// What one fetch produced, with the client key generation it was made with.
pub(super) struct Fetched {
    pub(super) result: Result<(Issued, Instant), FetchError>,
    pub(super) key_generation: u64,
    pub(super) key_label: String,
}

/// What `/readyz` shows about one slot; never the token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotStatus {
    /// `valid`, `empty` (not fetched yet), `refreshing`, `fetching`, `failing`, or `stale` (past
    /// its refresh margin, still served because Maskinporten is unavailable).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Maskinporten's MP code for the last failure, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What to do about the last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_unix: Option<u64>,
}

/// One token's cache entry and the single flight that fills it.
pub struct TokenSlot {
    pub(super) key: TokenKey,
    pub(super) client: Arc<ClientIdentity>,
    pub(super) origin: Origin,
    pub(super) metrics: Arc<Metrics>,
    /// This client's cache counters, resolved once so a request never looks them up.
    pub(super) hits: Counter,
    pub(super) misses: Counter,
    pub(super) wait_timeout: Duration,
    pub(super) state: Mutex<State>,
    /// The current token while it needs neither a refresh nor a second look: what a request
    /// takes without the lock. Set and cleared with `state.token`, under the lock.
    pub(super) fresh: ArcSwapOption<Token>,
    pub(super) changed: watch::Sender<u64>,
}

impl TokenSlot {
    pub(super) fn new(
        key: TokenKey,
        client: &Arc<ClientIdentity>,
        origin: Origin,
        metrics: &Arc<Metrics>,
        wait_timeout: Duration,
    ) -> Arc<TokenSlot> {
        let (changed, _) = watch::channel(0);
        let labels = ClientLabels {
            client: Arc::clone(&client.name),
        };
        Arc::new(TokenSlot {
            key,
            client: Arc::clone(client),
            origin,
            hits: metrics.token_cache_hits.get_or_create(&labels).clone(),
            misses: metrics.token_cache_misses.get_or_create(&labels).clone(),
            metrics: Arc::clone(metrics),
            wait_timeout,
            state: Mutex::new(State::default()),
            fresh: ArcSwapOption::empty(),
            changed,
        })
    }

    /// A slot of its own for this slot's grant with `detail` added to its `authorization_details`
    /// (a consent), from the same source: for an Altinn slot, an Altinn slot over a Maskinporten
    /// slot that has the detail too.
    pub fn with_detail(&self, detail: serde_json::Value) -> Arc<TokenSlot> {
        let key = TokenKey {
            client: Arc::clone(&self.key.client),
            grant: self.key.grant.with_detail(detail.clone()),
        };
        let origin = match &self.origin {
            Origin::Maskinporten(source) => Origin::Maskinporten(Arc::clone(source)),
            Origin::Altinn {
                maskinporten,
                exchange,
            } => Origin::Altinn {
                maskinporten: maskinporten.with_detail(detail),
                exchange: Arc::clone(exchange),
            },
        };
        TokenSlot::new(key, &self.client, origin, &self.metrics, self.wait_timeout)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        crate::support::sync::lock(&self.state)
    }

    pub fn key(&self) -> &TokenKey {
        &self.key
    }

    /// The client (and its current key) this slot's grants are signed for.
    pub fn client(&self) -> &Arc<ClientIdentity> {
        &self.client
    }

    /// `maskinporten`, or `altinn` for a slot of exchanged Altinn tokens.
    pub fn kind(&self) -> &'static str {
        match self.origin {
            Origin::Maskinporten(_) => "maskinporten",
            Origin::Altinn { .. } => "altinn",
        }
    }

    /// The Altinn exchange endpoint, for a slot that holds Altinn tokens.
    pub fn altinn_exchange(&self) -> Option<&str> {
        match &self.origin {
            Origin::Altinn { exchange, .. } => Some(exchange.url()),
            Origin::Maskinporten(_) => None,
        }
    }

    /// Drops `token` because an upstream (or Altinn) refused it, so the next `get` fetches a fresh
    /// one. Returns whether a fresh token is worth asking for: true when this call dropped it or
    /// another request already replaced it; false when `token` is still current because a token of
    /// this slot was dropped less than [`MIN_INVALIDATION_INTERVAL`] ago.
    pub fn invalidate(&self, token: &Arc<Token>) -> bool {
        let mut st = self.lock();
        let current = st.token.as_ref().is_some_and(|t| Arc::ptr_eq(t, token));
        if !current {
            return true;
        }
        let now = Instant::now();
        if st
            .last_invalidated
            .is_some_and(|at| now < at + MIN_INVALIDATION_INTERVAL)
        {
            return false;
        }
        st.last_invalidated = Some(now);
        st.token = None;
        self.fresh.store(None);
        true
    }

    /// A token with enough life left, waiting for a fetch if there is none. Starts a background
    /// refresh when the token is due for one. The fetch runs in its own task, so a caller that goes
    /// away does not cancel it for the others.
    pub async fn get(self: &Arc<Self>) -> Result<Arc<Token>, TokenError> {
        // Every request asks: a token not yet due for a refresh, for the client's current key, is
        // taken without the lock (a refresh is due before the token's end: policy::schedule).
        if let Some(token) = self.fresh.load_full() {
            if Instant::now() < token.schedule.refresh_at
                && token.key_generation == self.client.key.generation()
            {
                self.hits.inc();
                return Ok(token);
            }
        }
        let deadline = Instant::now() + self.wait_timeout;
        let mut changed = self.changed.subscribe();
        let mut waited = false;
        loop {
            {
                let mut st = self.lock();
                let now = Instant::now();
                let generation = self.client.key.generation();
                let may_fetch = st
                    .failure
                    .as_ref()
                    .is_none_or(|f| now >= f.retry_at || f.key_generation != generation);
                if let Some(token) = st.token.clone() {
                    if now < st.usable_until(&token) && token.key_generation == generation {
                        if now >= token.schedule.refresh_at && !st.fetching && may_fetch {
                            self.start_fetch(&mut st);
                        }
                        if waited { &self.misses } else { &self.hits }.inc();
                        return Ok(token);
                    }
                }
                if !st.fetching {
                    match &st.failure {
                        Some(f) if !may_fetch => {
                            self.misses.inc();
                            return Err(TokenError::Failed {
                                error: f.error.clone(),
                                retry_after: f.retry_at - now,
                            });
                        }
                        _ => self.start_fetch(&mut st),
                    }
                }
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                self.misses.inc();
                return Err(TokenError::WaitTimeout(self.wait_timeout));
            }
            waited = true;
        }
    }

    pub fn status(&self) -> SlotStatus {
        let st = self.lock();
        let now = Instant::now();
        let generation = self.client.key.generation();
        let valid = st
            .token
            .as_ref()
            .filter(|t| now < st.usable_until(t) && t.key_generation == generation);
        let state = match (valid, st.fetching, &st.failure) {
            (Some(t), _, Some(_)) if now >= t.schedule.serve_until => "stale",
            (Some(_), true, _) => "refreshing",
            (Some(_), false, _) => "valid",
            (None, true, _) => "fetching",
            (None, false, Some(_)) => "failing",
            (None, false, None) => "empty",
        };
        SlotStatus {
            state,
            expires_in_seconds: valid.map(|t| {
                t.schedule
                    .expires_at
                    .saturating_duration_since(now)
                    .as_secs()
            }),
            error: st.failure.as_ref().map(|f| f.error.to_string()),
            code: st
                .failure
                .as_ref()
                .and_then(|f| f.error.code().map(str::to_string)),
            hint: st
                .failure
                .as_ref()
                .and_then(|f| f.error.hint().map(str::to_string)),
            failing_since_unix: st
                .failure
                .as_ref()
                .and_then(|f| f.since.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
        }
    }
}
