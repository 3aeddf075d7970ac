//! Config -> running snapshot: the route table, one token slot per distinct grant, the upstream
//! clients, and the clients' keys; on a reload, what did not change keeps its state. Used by
//! `app.rs` at start and by `reload.rs`.

mod clients;

use clients::UpstreamClients;
pub use clients::{tls_config, tls_config_trusting, token_endpoint};

use crate::config::{BodyPace, Config, Maskinporten, RouteConfig, SystemUser};
use crate::keys::client_key::{self, Watched};
use crate::keys::ClientKey;
use crate::keys::KeySource;
use crate::observe::metrics::Metrics;
use crate::pipeline::Snapshot;
use crate::request::body::Pace;
use crate::request::party::{Parties, PartyKind, Selector};
use crate::request::route::{Route, RouteTable};
use crate::token::{
    client, AltinnExchange, ClientIdentity, GrantSpec, TokenCache, TokenEndpoint, TokenKey,
    TokenSlot,
};
use crate::token::{ConsentSlots, TokenSource};
use crate::upstream::Target;
use anyhow::Context as _;
use std::collections::HashMap;
use std::sync::Arc;

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
    /// Each consent route's consent slots, by route name.
    consents: HashMap<String, Arc<ConsentSlots>>,
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
    let (endpoint, mut cache) = token_cache(config, metrics, previous, &tls)?;
    let (keys, clients) = identities(config, metrics, previous);
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
    let mut consents = HashMap::new();
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
        let consent_slots = consent_slots(r, previous, &mut consents);
        routes.push(Arc::new(route(
            r,
            config,
            client,
            parties(r, &slot),
            &mut upstreams,
            consent_slots,
        )?));
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
            consents,
        },
    })
}

/// The token endpoint and a token cache over it: the previous ones' when Maskinporten is the same,
/// the cache taking over the previous slots that are asked for again.
fn token_cache(
    config: &Config,
    metrics: &Arc<Metrics>,
    previous: Option<&Kept>,
    tls: &rustls::ClientConfig,
) -> anyhow::Result<(Arc<TokenEndpoint>, TokenCache)> {
    let endpoint = match previous {
        Some(p) => Arc::clone(&p.endpoint),
        None => Arc::new(token_endpoint(config, tls)?.with_metrics(
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
    Ok((endpoint, cache))
}

/// Each client's identity and key, kept from `previous` when its client_id and key source did not
/// change (its key replaced if the files did), with the key gauges published; and what the key
/// watcher watches.
fn identities(
    config: &Config,
    metrics: &Arc<Metrics>,
    previous: Option<&Kept>,
) -> (Vec<Watched>, HashMap<String, KeptClient>) {
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
        client_key::publish(&identity.name, &identity.key.current().1, metrics);
        if let KeySource::Keyset { path } = &c.source {
            if let Ok((set, _)) = crate::keys::keyset::read_active(path) {
                set.publish(metrics, &identity.name);
            }
        }
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
    (keys, clients)
}

/// A consent route's consent token slots: those of `previous` (consent tokens outlive a reload,
/// as party slots do; each remembers the party slot it was made from, and is made again if that
/// slot was replaced), unless the bound changed.
fn consent_slots(
    r: &RouteConfig,
    previous: Option<&Kept>,
    consents: &mut HashMap<String, Arc<ConsentSlots>>,
) -> Option<Arc<ConsentSlots>> {
    r.consent.per_call.then(|| {
        let kept = previous
            .and_then(|p| p.consents.get(&r.name))
            .filter(|s| s.max() == r.consent_tokens_max);
        let slots = kept.map_or_else(
            || Arc::new(ConsentSlots::new(r.consent_tokens_max)),
            Arc::clone,
        );
        consents.insert(r.name.clone(), Arc::clone(&slots));
        slots
    })
}

/// One route as requests meet it: its upstream and pool, parties, headers and limits.
fn route(
    r: &RouteConfig,
    config: &Config,
    client: &ClientIdentity,
    parties: Parties,
    upstreams: &mut UpstreamClients,
    consent_slots: Option<Arc<ConsentSlots>>,
) -> anyhow::Result<Route> {
    let upstream = Target::from_uri(&r.upstream)
        .with_context(|| format!("route {}: upstream has no scheme or host", r.name))?;
    let http = upstreams
        .get(r)
        .with_context(|| format!("route {}", r.name))?
        .pool(&upstream)
        .with_context(|| format!("route {}: upstream {upstream}", r.name))?;
    Ok(Route {
        name: Arc::new(r.name.clone()),
        prefix: r.prefix.clone(),
        upstream,
        client: Arc::clone(&client.name),
        parties,
        headers: r
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.expose().clone()))
            .collect(),
        timeout: r.timeout,
        retry_body_max: r.retry_on_401.then_some(r.retry_body_max_bytes),
        http,
        allow: r.allow.clone(),
        api_keys: r.api_keys.clone(),
        api_key_header: r.api_key_header.clone(),
        max_body_bytes: r.max_body_bytes,
        idle_timeout: r.idle_timeout,
        pace: pace(r, &config.inbound.body),
        forward_caller_address: r.forward_caller_address,
        consent: r.consent.clone(),
        consent_slots,
    })
}

/// The route's pace for a caller's body: its own settings, else `inbound`'s; zero turns one off.
fn pace(r: &RouteConfig, inbound: &BodyPace) -> Pace {
    let deadline = r.body_deadline.unwrap_or(inbound.deadline);
    Pace {
        idle: r.idle_timeout,
        min_rate: r.min_body_rate.unwrap_or(inbound.min_rate),
        grace: r.body_rate_grace.unwrap_or(inbound.grace),
        deadline: (!deadline.is_zero()).then_some(deadline),
    }
}
