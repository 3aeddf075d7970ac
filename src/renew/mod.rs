//! Keys that renew themselves through Digdir's self-service API: `portvakt rotate` (one pass of the
//! plan per client), `portvakt keys status` and `portvakt keys adopt`.
//!
//! The keyset file is the source of truth for which key signs; Digdir's set is brought in line with
//! it, keys someone else registered left alone. A new key is stored before it is registered, signs
//! only once Digdir lists it, `activate_after` has passed and a grant with it got a token, and the
//! key it replaces stays registered for `overlap` (see `plan.rs` for the order of steps).

pub mod api;
pub mod background;
pub mod command;
pub mod kubernetes;
pub mod pass;
pub mod plan;
pub mod store;

use crate::config::{Config, Renewal};
use crate::keys::keyset::{Entry, Keyset, State};
use crate::support::secret::Secret;
use api::Api;
pub use pass::{Faults, Outcome, Uncut};

/// The self-service API client and Maskinporten's token endpoint, built from the configuration.
/// One endpoint (one circuit breaker, as for the proxy's clients) serves the administration
/// client's token and the grant that proves a new key.
pub fn connect(
    config: &Config,
) -> anyhow::Result<(Api, std::sync::Arc<crate::token::TokenEndpoint>)> {
    let Some(selfservice) = &config.selfservice else {
        anyhow::bail!("the configuration has no selfservice section: renewal needs Digdir's self-service API and an administration client");
    };
    let roots: Vec<_> = config
        .maskinporten
        .ca_file
        .iter()
        .flat_map(|ca| ca.certs.iter().cloned())
        .collect();
    let tls = crate::build::tls_config(&roots)?;
    let http = crate::token::client::http_client(
        tls.clone(),
        config.maskinporten.timeout,
        config.maskinporten.connect_timeout,
        &config.maskinporten.proxy,
    )?;
    let endpoint = std::sync::Arc::new(crate::build::token_endpoint(config, &tls)?);
    Ok((
        Api::new(selfservice, http, std::sync::Arc::clone(&endpoint)),
        endpoint,
    ))
}

/// The clients a command is about: all with `renew`, or the one named.
pub fn chosen<'c>(config: &'c Config, client: Option<&str>) -> anyhow::Result<Vec<&'c Renewal>> {
    let all: Vec<&Renewal> = config.renewals.iter().collect();
    match client {
        None if all.is_empty() => anyhow::bail!("no client has a renew section"),
        None => Ok(all),
        Some(name) => match all.iter().find(|r| r.client == name) {
            Some(r) => Ok(vec![*r]),
            None => anyhow::bail!(
                "client `{name}` has no renew section (clients with one: {})",
                all.iter()
                    .map(|r| r.client.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

/// The scopes of the first route that uses `client`: the grant that proves a new key asks for them.
pub fn verify_scopes(config: &Config, client: &str) -> Option<Vec<String>> {
    config
        .routes
        .iter()
        .find(|r| r.client == client)
        .map(|r| r.scopes.clone())
}

pub fn now() -> i64 {
    crate::support::time::unix_now() as i64
}

/// One line per key: the keyset against Digdir's set.
pub fn status(keyset: &Keyset, registered: &[api::Registered], now: i64) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<44} {:<10} {:>8}  {}",
        "kid", "state", "age", "registered exp"
    )];
    let exp = |kid: &str| match registered.iter().find(|r| r.kid == kid) {
        Some(r) => r.exp.map_or("registered, no exp".to_string(), |e| {
            format!(
                "{} ({} days)",
                crate::support::time::date(e),
                (e - now + 43_200).div_euclid(86_400)
            )
        }),
        None => "NOT REGISTERED".into(),
    };
    for e in &keyset.keys {
        lines.push(format!(
            "{:<44} {:<10} {:>7}d  {}",
            e.kid,
            e.state.as_str(),
            (now - e.created).div_euclid(86_400),
            exp(&e.kid)
        ));
    }
    for r in registered {
        if !keyset.keys.iter().any(|e| e.kid == r.kid) {
            lines.push(format!(
                "{:<44} {:<10} {:>8}  {}",
                r.kid,
                "foreign",
                "-",
                exp(&r.kid)
            ));
        }
    }
    if let Some(t) = keyset.last_success {
        lines.push(format!(
            "last renewal pass: {}",
            crate::support::time::datetime(t)
        ));
    }
    lines
}

/// The keyset a key registered earlier becomes: that key alone, active. `keys adopt` writes it into
/// the client's (empty) store, so that an installation moves to renewal without a new registration.
pub fn adopted(
    renewal: &Renewal,
    key: &crate::keys::SigningKey,
    private_jwk: serde_json::Value,
    now: i64,
) -> anyhow::Result<Keyset> {
    let Some(kid) = key.kid() else {
        anyhow::bail!("the key has no kid: only a registered key can be adopted");
    };
    let mut keyset = Keyset::new(&renewal.client_id);
    keyset.keys.push(Entry {
        kid: kid.to_string(),
        state: State::Active,
        created: crate::keys::client_key::created(key).unwrap_or(now),
        registered: None,
        activated: Some(now),
        retire_after: None,
        exp: None,
        jwk: Secret::new(private_jwk),
    });
    Ok(keyset)
}
