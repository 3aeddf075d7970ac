//! How a slot's fetch runs: a grant to Maskinporten (a few quick attempts), or an exchange at
//! Altinn of another slot's token; its outcome settled under the slot's lock.

use super::altinn::AltinnExchange;
use super::consents;
use super::fetch_error::FetchError;
use super::policy;
use super::slot::{Failure, Fetched, Origin, State, Token, TokenError, TokenSlot};
use super::TokenSource;
use crate::observe::metrics::{ClientLabels, FetchLabels};
use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument as _;

/// Quick attempts inside one fetch when Maskinporten is unreachable or answers 5xx/429.
const ATTEMPTS_PER_FETCH: u32 = 3;
/// The longest `Retry-After` waited out inside one fetch, while requests wait for it.
const MAX_IN_FETCH_WAIT: Duration = Duration::from_secs(2);

impl TokenSlot {
    pub(super) fn start_fetch(self: &Arc<Self>, st: &mut State) {
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
}

fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
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
