//! Prometheus metrics, served on the admin listener. Labels never carry a token, key or header value.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Empty when no route matched.
    pub route: Arc<String>,
    /// The method, or `other` for one outside RFC 9110's list (bounded, so callers cannot make
    /// new series).
    pub method: &'static str,
    pub status: u16,
}

/// The label for a request method: the standard ones by name, anything else `other`.
pub fn method_class(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub route: Arc<String>,
    /// connect, timeout, reset, tls or protocol.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub client: Arc<String>,
    /// maskinporten, or altinn for an exchanged Altinn token.
    pub kind: &'static str,
    pub scopes: String,
    /// The consumer or system user organisation the token acts for; empty for the client's own.
    pub party: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub client: Arc<String>,
    /// ok, rejected, consent_refused, unavailable, invalid_answer, signing_failed,
    /// hsm_unavailable or exchange_failed.
    pub result: &'static str,
    /// Maskinporten's MP code (or Altinn's status) for a failure that has one; empty otherwise.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Arc<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    pub client: Arc<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeysetKeyLabels {
    pub client: Arc<String>,
    pub kid: String,
    /// pending, active or retiring.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    pub client: Arc<String>,
    /// nothing, done, waiting or failed: how a background renewal pass ended.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub client: Arc<String>,
    /// rotated, unchanged or error.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CutLabels {
    /// idle (no body data for the idle timeout), too_slow (below the minimum rate), deadline (the
    /// body not whole in time), answer_stall (the caller read nothing of its answer).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub route: Arc<String>,
    /// retried, not_replayable (the body was streamed, not kept) or suppressed (a fresh token was
    /// refused too, within the last 10 s).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// ok or error.
    pub result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    declared: Vec<String>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<RequestLabels>,
    pub token_fetches: Family<FetchLabels, Counter>,
    pub token_fetch_duration: HistogramFamily<ClientLabels>,
    pub certificate_not_after: Family<ClientLabels, Gauge>,
    pub key_age: Family<ClientLabels, Gauge>,
    pub key_reloads: Family<ReloadLabels, Counter>,
    /// Each keyset key's registered `exp`, as a Unix timestamp.
    pub registered_key_expiry: Family<KeysetKeyLabels, Gauge>,
    pub renewer_last_success: Family<ClientLabels, Gauge>,
    pub key_rotations: Family<RotationLabels, Counter>,
    /// The keyset series last published per client, so that a key gone from the keyset loses its.
    keyset_series: std::sync::Mutex<std::collections::HashMap<Arc<String>, Vec<KeysetKeyLabels>>>,
    pub altinn_exchanges: Family<FetchLabels, Counter>,
    pub unauthorized_retries: Family<RetryLabels, Counter>,
    pub slow_callers_cut: Family<CutLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// Requests holding a concurrency permit, set when scraped.
    pub in_flight: Gauge,
    /// Seconds until each cached token expires, set when scraped.
    pub token_expires_in: Family<TokenLabels, Gauge>,
    pub token_cache_hits: Family<ClientLabels, Counter>,
    /// Consent tokens kept per route, set when scraped (counted, never listed).
    pub consent_tokens: Family<RouteLabels, Gauge>,
    pub token_cache_misses: Family<ClientLabels, Counter>,
    /// Seconds Maskinporten's clock is ahead of this machine's (negative: behind).
    pub clock_skew: Gauge,
    /// 1 while the circuit breaker keeps token requests from the token endpoint.
    pub token_endpoint_open: Gauge,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// One metric's declaration: its name (after `portvakt_`), its help text, and whether it counts
/// seconds (the unit suffix).
struct Def {
    name: &'static str,
    help: &'static str,
    seconds: bool,
}

const REQUESTS: Def = Def {
    name: "requests",
    help: "Requests answered, by route, method and status",
    seconds: false,
};
const REQUEST_DURATION: Def = Def {
    name: "request_duration",
    help: "Time from request received to response headers sent, by route, method and status",
    seconds: true,
};
const UPSTREAM_ERRORS: Def = Def {
    name: "upstream_errors",
    help: "Upstream calls that failed, by route and kind (connect, timeout, reset, tls, protocol)",
    seconds: false,
};
const IN_FLIGHT: Def = Def {
    name: "in_flight_requests",
    help: "Requests being served now, from admission to the last body byte",
    seconds: false,
};
const SLOW_CALLERS_CUT: Def = Def {
    name: "slow_callers_cut",
    help: "Connections and request bodies portvakt cut because the caller was too slow, by reason",
    seconds: false,
};
const UNAUTHORIZED_RETRIES: Def = Def {
    name: "upstream_unauthorized",
    help: "Upstream 401 answers to requests that carried a token, by route and what portvakt did",
    seconds: false,
};
const TOKEN_FETCHES: Def = Def {
    name: "token_fetches",
    help: "Token requests to Maskinporten, by client, result and MP code",
    seconds: false,
};
const TOKEN_FETCH_DURATION: Def = Def {
    name: "token_fetch_duration",
    help: "Time one token request to Maskinporten took, by client",
    seconds: true,
};
const TOKEN_EXPIRES_IN: Def = Def {
    name: "token_expires_in",
    help: "Seconds until each cached token expires; absent while a slot holds no usable token",
    seconds: true,
};
const CONSENT_TOKENS: Def = Def {
    name: "consent_tokens",
    help: "Consent token slots a route keeps (at most its consent_tokens_max), by route",
    seconds: false,
};
const TOKEN_CACHE_HITS: Def = Def {
    name: "token_cache_hits",
    help: "Requests served with a cached token, by client",
    seconds: false,
};
const TOKEN_CACHE_MISSES: Def = Def {
    name: "token_cache_misses",
    help: "Requests that had to wait for a token fetch (or found none), by client",
    seconds: false,
};
const TOKEN_ENDPOINT_OPEN: Def = Def {
    name: "token_endpoint_circuit_open",
    help: "1 while token requests are held back after repeated failures of the token endpoint",
    seconds: false,
};
const CLOCK_SKEW: Def = Def {
    name: "clock_skew",
    help: "How far Maskinporten's clock (its Date header) is ahead of this machine's; Maskinporten refuses grants more than 10 s off",
    seconds: true,
};
const ALTINN_EXCHANGES: Def = Def {
    name: "altinn_exchanges",
    help: "Maskinporten tokens exchanged for Altinn tokens, by client and result",
    seconds: false,
};
const CERTIFICATE_NOT_AFTER: Def = Def {
    name: "certificate_not_after",
    help: "When the client's virksomhetssertifikat expires, as a Unix timestamp",
    seconds: true,
};
const KEY_AGE: Def = Def {
    name: "key_age",
    help: "Age of the client's key, where known (certificate not-before, the keyset's record, or the date in the kid)",
    seconds: true,
};
const KEY_RELOADS: Def = Def {
    name: "key_reloads",
    help: "Key files that changed on disk and were reloaded, by client and result",
    seconds: false,
};
const REGISTERED_KEY_EXPIRY: Def = Def {
    name: "registered_key_expiry",
    help: "When Digdir's registration of each key of a keyset ends (its exp), as a Unix timestamp, by client, kid and state",
    seconds: true,
};
const RENEWER_LAST_SUCCESS: Def = Def {
    name: "renewer_last_success_timestamp",
    help: "When a renewal pass for the client's keyset last reached its end, as a Unix timestamp",
    seconds: true,
};
const KEY_ROTATIONS: Def = Def {
    name: "key_rotations",
    help: "Renewal passes made by portvakt run (renew.background), by client and result",
    seconds: false,
};
const CONFIG_RELOADS: Def = Def {
    name: "config_reloads",
    help: "Configuration reloads (SIGHUP or a changed file), by result",
    seconds: false,
};

impl Metrics {
    pub fn new() -> Self {
        let mut r = Declare {
            registry: Registry::with_prefix("portvakt"),
            names: Vec::new(),
        };
        Metrics {
            requests: r.add(&REQUESTS),
            request_duration: r.add_with(
                &REQUEST_DURATION,
                Family::new_with_constructor(latency_histogram),
            ),
            upstream_errors: r.add(&UPSTREAM_ERRORS),
            in_flight: r.add(&IN_FLIGHT),
            slow_callers_cut: r.add(&SLOW_CALLERS_CUT),
            unauthorized_retries: r.add(&UNAUTHORIZED_RETRIES),
            token_fetches: r.add(&TOKEN_FETCHES),
            token_fetch_duration: r.add_with(
                &TOKEN_FETCH_DURATION,
                Family::new_with_constructor(latency_histogram),
            ),
            token_expires_in: r.add(&TOKEN_EXPIRES_IN),
            consent_tokens: r.add(&CONSENT_TOKENS),
            token_cache_hits: r.add(&TOKEN_CACHE_HITS),
            token_cache_misses: r.add(&TOKEN_CACHE_MISSES),
            token_endpoint_open: r.add(&TOKEN_ENDPOINT_OPEN),
            clock_skew: r.add(&CLOCK_SKEW),
            altinn_exchanges: r.add(&ALTINN_EXCHANGES),
            certificate_not_after: r.add(&CERTIFICATE_NOT_AFTER),
            key_age: r.add(&KEY_AGE),
            key_reloads: r.add(&KEY_RELOADS),
            registered_key_expiry: r.add(&REGISTERED_KEY_EXPIRY),
            renewer_last_success: r.add(&RENEWER_LAST_SUCCESS),
            key_rotations: r.add(&KEY_ROTATIONS),
            config_reloads: r.add(&CONFIG_RELOADS),
            keyset_series: std::sync::Mutex::new(std::collections::HashMap::new()),
            declared: r.names,
            registry: r.registry,
        }
    }

    /// Every metric's name as `# TYPE` declares it (counters without `_total`), whether or not
    /// it has a series yet.
    pub fn declared(&self) -> &[String] {
        &self.declared
    }

    pub fn count_upstream_error(&self, route: &Arc<String>, fault: crate::support::fault::Fault) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                route: Arc::clone(route),
                kind: fault.as_str(),
            })
            .inc();
    }

    /// The gauges of a client's keyset: each registered key's `exp` by its kid and state, and
    /// the last successful renewal pass. Keys gone since the last call lose their series.
    pub fn publish_keyset(
        &self,
        client: &Arc<String>,
        registered: impl Iterator<Item = (String, &'static str, i64)>,
        last_success: Option<i64>,
    ) {
        let mut now = Vec::new();
        let mut expiry = Vec::new();
        for (kid, state, exp) in registered {
            now.push(KeysetKeyLabels {
                client: Arc::clone(client),
                kid,
                state,
            });
            expiry.push(exp);
        }
        let mut series = crate::support::sync::lock(&self.keyset_series);
        for gone in series.get(client).into_iter().flatten() {
            if !now.contains(gone) {
                self.registered_key_expiry.remove(gone);
            }
        }
        for (labels, exp) in now.iter().zip(expiry) {
            self.registered_key_expiry.get_or_create(labels).set(exp);
        }
        series.insert(Arc::clone(client), now);
        if let Some(t) = last_success {
            self.renewer_last_success
                .get_or_create(&ClientLabels {
                    client: Arc::clone(client),
                })
                .set(t);
        }
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Registers metrics and remembers their names.
struct Declare {
    registry: Registry,
    names: Vec<String>,
}

impl Declare {
    fn add<M: Metric + Clone + Default>(&mut self, def: &Def) -> M {
        self.add_with(def, M::default())
    }

    fn add_with<M: Metric + Clone>(&mut self, def: &Def, metric: M) -> M {
        let Def {
            name,
            help,
            seconds,
        } = *def;
        if seconds {
            self.names.push(format!("portvakt_{name}_seconds"));
            self.registry
                .register_with_unit(name, help, Unit::Seconds, metric.clone());
        } else {
            self.names.push(format!("portvakt_{name}"));
            self.registry.register(name, help, metric.clone());
        }
        metric
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
