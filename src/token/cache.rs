//! The token cache: one slot per [`TokenKey`], one fetch at a time per slot however many requests
//! wait, refresh ahead of expiry while the current token keeps serving, backoff after failures.
//! An Altinn token is a slot of its own, filled by exchanging its Maskinporten slot's token, with
//! the same rules and its own lifetime.

use super::altinn::AltinnExchange;
use super::client::{FetchError, Issued};
use super::consents;
use super::policy::{self, Schedule};
use super::{ClientIdentity, TokenKey, TokenSource};
use crate::observe::metrics::{ClientLabels, FetchLabels, Metrics};
use arc_swap::ArcSwapOption;
use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument as _;

/// Quick attempts inside one fetch when Maskinporten is unreachable or answers 5xx/429.
const ATTEMPTS_PER_FETCH: u32 = 3;
/// The longest `Retry-After` waited out inside one fetch, while requests wait for it.
const MAX_IN_FETCH_WAIT: Duration = Duration::from_secs(2);
/// A token the upstream refused is dropped at most this often per slot, so an upstream that
/// refuses every token cannot turn each request into a Maskinporten call.
const MIN_INVALIDATION_INTERVAL: Duration = Duration::from_secs(10);

/// A cached access token. The `Authorization` value is built once per token, not per request.
pub struct Token {
    bearer: HeaderValue,
    /// The client key generation that signed the grant for this token.
    key_generation: u64,
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
struct Failure {
    error: FetchError,
    /// A failure with an earlier key says nothing about the current one: a rotated key is tried at once.
    key_generation: u64,
    since: std::time::SystemTime,
    retry_at: Instant,
}

#[derive(Default)]
struct State {
    token: Option<Arc<Token>>,
    fetching: bool,
    failures: u32,
    failure: Option<Failure>,
    last_invalidated: Option<Instant>,
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
enum Origin {
    /// A fresh grant to Maskinporten's token endpoint.
    Maskinporten(Arc<dyn TokenSource>),
    /// The token of another slot, exchanged at Altinn.
    Altinn {
        maskinporten: Arc<TokenSlot>,
        exchange: Arc<AltinnExchange>,
    },
}

/// What one fetch produced, with the client key generation it was made with.
struct Fetched {
    result: Result<(Issued, Instant), FetchError>,
    key_generation: u64,
    key_label: String,
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
    key: TokenKey,
    client: Arc<ClientIdentity>,
    origin: Origin,
    metrics: Arc<Metrics>,
    /// This client's cache counters, resolved once so a request never looks them up.
    hits: Counter,
    misses: Counter,
    wait_timeout: Duration,
    state: Mutex<State>,
    /// The current token while it needs neither a refresh nor a second look: what a request
    /// takes without the lock. Set and cleared with `state.token`, under the lock.
    fresh: ArcSwapOption<Token>,
    changed: watch::Sender<u64>,
}

impl TokenSlot {
    fn new(
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

    fn lock(&self) -> MutexGuard<'_, State> {
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

    fn start_fetch(self: &Arc<Self>, st: &mut State) {
        st.fetching = true;
        let slot = Arc::clone(self);
        // Under the span of the request that needed the token, so its id and trace show the fetch.
        let trigger = crate::observe::request_id::current();
        let span = tracing::info_span!(
            "token_fetch",
            request_id = trigger.as_ref().map(crate::observe::request_id::as_str),
            client = %self.client.name,
            kind = self.kind(),
            scopes = %self.key.grant.scope,
        );
        tokio::spawn(async move { slot.fetch().await }.instrument(span));
    }

    async fn fetch(self: Arc<Self>) {
        let Fetched {
            result,
            key_generation,
            key_label,
        } = match &self.origin {
            Origin::Maskinporten(source) => self.fetch_from_maskinporten(source.as_ref()).await,
            Origin::Altinn {
                maskinporten,
                exchange,
            } => self.exchange_at_altinn(maskinporten, exchange).await,
        };
        let what = match self.origin {
            Origin::Maskinporten(_) => "token fetched",
            Origin::Altinn { .. } => "altinn token exchanged",
        };
        let consumer_org = self.key.grant.consumer_org.as_deref().unwrap_or("-");
        let mut st = self.lock();
        match result {
            Ok((issued, requested_at)) => {
                tracing::info!(client = %self.client.name, key = %key_label, scopes = %self.key.grant.scope, consumer_org, expires_in = issued.expires_in, result = "ok", "{what}");
                match bearer(issued.access_token.expose()) {
                    Some(bearer) => {
                        let schedule =
                            policy::schedule(requested_at, Duration::from_secs(issued.expires_in));
                        let token = Arc::new(Token {
                            bearer,
                            key_generation,
                            expires_in: issued.expires_in,
                            schedule,
                        });
                        self.fresh.store(Some(Arc::clone(&token)));
                        st.token = Some(token);
                        st.failures = 0;
                        st.failure = None;
                    }
                    None => self.record_failure(
                        &mut st,
                        FetchError::InvalidAnswer(
                            "access_token is not a valid header value".into(),
                        ),
                        key_generation,
                    ),
                }
            }
            Err(error) => {
                let (code, hint) = (error.code().unwrap_or("-"), error.hint().unwrap_or("-"));
                tracing::warn!(client = %self.client.name, key = %key_label, scopes = %self.key.grant.scope, consumer_org, result = error.result_label(), code, hint, %error, "{what}: failed");
                self.record_failure(&mut st, error, key_generation);
            }
        }
        st.fetching = false;
        drop(st);
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// A fresh grant, signed with the client's current key, for a Maskinporten token.
    async fn fetch_from_maskinporten(&self, source: &dyn TokenSource) -> Fetched {
        let (key_generation, key) = self.client.key.current();
        let client = ClientLabels {
            client: self.client.name.clone(),
        };
        let result = with_retries(&self.client.name, &self.key.grant.scope, || async {
            let requested_at = Instant::now();
            let started = Instant::now();
            let result = source
                .fetch(&self.client.client_id, &key, &self.key.grant)
                .await;
            let result = consents::settle(&self.key.grant, result, super::grant::unix_now() as i64);
            self.metrics
                .token_fetch_duration
                .get_or_create(&client)
                .observe(started.elapsed().as_secs_f64());
            self.count(&self.metrics.token_fetches, &result);
            result.map(|issued| (issued, requested_at))
        })
        .await;
        Fetched {
            result,
            key_generation,
            key_label: key.label(),
        }
    }

    /// The Maskinporten slot's token, exchanged at Altinn. The Altinn token carries the key
    /// generation of the Maskinporten token it came from, so a key rotation retires both.
    async fn exchange_at_altinn(
        &self,
        maskinporten: &Arc<TokenSlot>,
        exchange: &AltinnExchange,
    ) -> Fetched {
        let token = match maskinporten.get().await {
            Ok(token) => token,
            Err(e) => {
                let error = match e {
                    TokenError::Failed { error, .. } => error,
                    TokenError::WaitTimeout(after) => FetchError::Unavailable(format!(
                        "no token from Maskinporten within {} s",
                        after.as_secs()
                    )),
                };
                return Fetched {
                    result: Err(error),
                    key_generation: self.client.key.generation(),
                    key_label: "-".into(),
                };
            }
        };
        let result = with_retries(&self.client.name, &self.key.grant.scope, || async {
            let requested_at = Instant::now();
            let result = exchange.exchange(token.bearer()).await.map(|mut issued| {
                if consents::names_consent(&self.key.grant) {
                    // An Altinn token lives by its own exp; one made from a consent token lives
                    // no longer than that token, which lives no longer than the consent.
                    let left = token
                        .schedule
                        .expires_at
                        .saturating_duration_since(Instant::now());
                    issued.expires_in = issued.expires_in.min(left.as_secs().max(1));
                }
                issued
            });
            self.count(&self.metrics.altinn_exchanges, &result);
            result.map(|issued| (issued, requested_at))
        })
        .await;
        if let Err(FetchError::Exchange {
            status: Some(401), ..
        }) = &result
        {
            // Altinn no longer accepts this Maskinporten token: the next attempt gets a fresh one.
            maskinporten.invalidate(&token);
        }
        Fetched {
            result,
            key_generation: token.key_generation,
            key_label: self.client.key.current().1.label(),
        }
    }

    fn count<T>(&self, family: &Family<FetchLabels, Counter>, result: &Result<T, FetchError>) {
        let (result, code) = match result {
            Ok(_) => ("ok", String::new()),
            Err(e) => (e.result_label(), e.code_label()),
        };
        family
            .get_or_create(&FetchLabels {
                client: self.client.name.clone(),
                result,
                code,
            })
            .inc();
    }

    fn record_failure(&self, st: &mut State, error: FetchError, key_generation: u64) {
        if st
            .failure
            .as_ref()
            .is_some_and(|f| f.key_generation != key_generation)
        {
            st.failures = 0;
        }
        st.failures += 1;
        let wait = policy::backoff(st.failures, fastrand::f64())
            .max(error.retry_after().unwrap_or_default());
        let retry_at = Instant::now() + wait;
        let since = match &st.failure {
            Some(f) => f.since,
            None => std::time::SystemTime::now(),
        };
        st.failure = Some(Failure {
            error,
            key_generation,
            since,
            retry_at,
        });
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

/// Runs `attempt` up to [`ATTEMPTS_PER_FETCH`] times while it fails transiently, with a short
/// jittered pause between attempts.
async fn with_retries<T, F, Fut>(
    client: &str,
    scopes: &str,
    mut attempt: F,
) -> Result<T, FetchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, FetchError>>,
{
    let mut n = 0;
    loop {
        match attempt().await {
            // A Retry-After longer than a quick pause ends this fetch; the slot's next attempt
            // waits for it.
            Err(e)
                if e.is_transient()
                    && n + 1 < ATTEMPTS_PER_FETCH
                    && e.retry_after()
                        .is_none_or(|after| after <= MAX_IN_FETCH_WAIT) =>
            {
                tracing::warn!(client, scopes, attempt = n + 1, reason = %e, "token request failed, retrying");
                let pause = e
                    .retry_after()
                    .unwrap_or_else(|| policy::retry_delay(n, fastrand::f64()));
                tokio::time::sleep(pause).await;
                n += 1;
            }
            other => return other,
        }
    }
}

fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// All slots, so routes that need the same token share one.
pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    metrics: Arc<Metrics>,
    wait_timeout: Duration,
    slots: Mutex<HashMap<TokenKey, Arc<TokenSlot>>>,
    altinn_slots: Mutex<HashMap<(TokenKey, String), Arc<TokenSlot>>>,
    /// The previous configuration's slots, while a reload builds: reused when asked for again by
    /// the same client identity.
    inherited: HashMap<TokenKey, Arc<TokenSlot>>,
    inherited_altinn: HashMap<(TokenKey, String), Arc<TokenSlot>>,
}

impl TokenCache {
    /// `wait_timeout` bounds how long a request waits for a fetch under way.
    pub fn new(
        source: Arc<dyn TokenSource>,
        metrics: Arc<Metrics>,
        wait_timeout: Duration,
    ) -> Self {
        TokenCache {
            source,
            metrics,
            wait_timeout,
            slots: Mutex::new(HashMap::new()),
            altinn_slots: Mutex::new(HashMap::new()),
            inherited: HashMap::new(),
            inherited_altinn: HashMap::new(),
        }
    }

    /// Offers `previous`'s slots (with their cached tokens) to the slots this cache hands out.
    pub fn inherit(&mut self, previous: &TokenCache) {
        self.inherited = crate::support::sync::lock(&previous.slots).clone();
        self.inherited_altinn = crate::support::sync::lock(&previous.altinn_slots).clone();
    }

    /// Forgets the slots no route asked for again; returns how many were asked for again.
    pub fn settle(&mut self) -> usize {
        let slots = crate::support::sync::lock(&self.slots);
        let altinn = crate::support::sync::lock(&self.altinn_slots);
        let reused = slots
            .iter()
            .filter(|(k, s)| self.inherited.get(*k).is_some_and(|o| Arc::ptr_eq(o, s)))
            .count()
            + altinn
                .iter()
                .filter(|(k, s)| {
                    self.inherited_altinn
                        .get(*k)
                        .is_some_and(|o| Arc::ptr_eq(o, s))
                })
                .count();
        drop((slots, altinn));
        self.inherited.clear();
        self.inherited_altinn.clear();
        reused
    }

    /// The slot for `key`, created on first use.
    pub fn slot(&self, key: TokenKey, client: &Arc<ClientIdentity>) -> Arc<TokenSlot> {
        let mut slots = crate::support::sync::lock(&self.slots);
        Arc::clone(slots.entry(key.clone()).or_insert_with(|| {
            match self
                .inherited
                .get(&key)
                .filter(|s| Arc::ptr_eq(&s.client, client))
            {
                Some(old) => Arc::clone(old),
                None => self.new_slot(key, client, Origin::Maskinporten(Arc::clone(&self.source))),
            }
        }))
    }

    /// The slot for Altinn tokens exchanged from `key`'s Maskinporten tokens at `exchange`.
    pub fn altinn_slot(
        &self,
        key: TokenKey,
        client: &Arc<ClientIdentity>,
        exchange: &Arc<AltinnExchange>,
    ) -> Arc<TokenSlot> {
        let maskinporten = self.slot(key.clone(), client);
        let mut slots = crate::support::sync::lock(&self.altinn_slots);
        let id = (key.clone(), exchange.url().to_string());
        let inherited = self.inherited_altinn.get(&id).filter(|s| match &s.origin {
            Origin::Altinn {
                maskinporten: m, ..
            } => Arc::ptr_eq(m, &maskinporten),
            Origin::Maskinporten(_) => false,
        });
        if let Some(old) = inherited {
            return Arc::clone(slots.entry(id).or_insert_with(|| Arc::clone(old)));
        }
        Arc::clone(slots.entry(id).or_insert_with(|| {
            let origin = Origin::Altinn {
                maskinporten,
                exchange: Arc::clone(exchange),
            };
            self.new_slot(key, client, origin)
        }))
    }

    fn new_slot(
        &self,
        key: TokenKey,
        client: &Arc<ClientIdentity>,
        origin: Origin,
    ) -> Arc<TokenSlot> {
        TokenSlot::new(key, client, origin, &self.metrics, self.wait_timeout)
    }
}
