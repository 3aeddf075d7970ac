//! `portvakt rotate`, `portvakt keys status` and `portvakt keys adopt`: what they print and how
//! they exit. Exit 0: done or nothing to do; 2: waiting for a pending key; 1: an error, explained;
//! 64: the configuration cannot be used.

use super::pass::{self, Context, Options, Outcome};
use super::store::Store;
use crate::config::{Config, Renewal};
use std::path::Path;

pub const EXIT_CONFIG: u8 = 64;
pub const EXIT_WAITING: u8 = 2;

/// What every renewal command starts from: the configuration, the clients it is about (all with
/// `renew`, or the one named), and Digdir's self-service API with Maskinporten's token endpoint.
struct Opened {
    config: Config,
    renewals: Vec<Renewal>,
    api: super::api::Api,
    endpoint: std::sync::Arc<crate::token::TokenEndpoint>,
}

/// Opens what `command` needs; a configuration that cannot be used is said on stderr, exit 64.
fn open(config: &Path, client: Option<&str>, command: &str) -> Result<Opened, u8> {
    let config = crate::config::load_for_renewal(config).map_err(|e| {
        eprintln!("{e}");
        EXIT_CONFIG
    })?;
    let opened = super::chosen(&config, client)
        .map(|r| r.into_iter().cloned().collect())
        .and_then(|renewals| Ok((renewals, super::connect(&config)?)));
    match opened {
        Ok((renewals, (api, endpoint))) => Ok(Opened {
            config,
            renewals,
            api,
            endpoint,
        }),
        Err(e) => {
            eprintln!("portvakt {command}: {e:#}");
            Err(EXIT_CONFIG)
        }
    }
}

/// Flags of `portvakt rotate`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub force: bool,
    pub dry_run: bool,
    /// Wait for a pending key to become usable and finish its rotation in this run (as a CronJob
    /// wants, where exit 2 would count as a failed Job), for at most `activate_after` + 15 minutes.
    pub wait: bool,
}

/// Longest wait past `activate_after` that `--wait` allows (Digdir's propagation, a slow grant).
const WAIT_MARGIN: i64 = 900;

/// One pass of the renewal plan for each chosen client.
pub async fn rotate(config: &Path, client: Option<&str>, flags: Flags) -> u8 {
    rotate_with(config, client, flags, &pass::Uncut, &super::now).await
}

/// [`rotate`] with a clock and a place to cut the pass, for tests.
pub async fn rotate_with(
    config: &Path,
    client: Option<&str>,
    flags: Flags,
    faults: &dyn pass::Faults,
    now: &(dyn Fn() -> i64 + Sync),
) -> u8 {
    let Opened {
        config,
        renewals,
        mut api,
        endpoint,
    } = match open(config, client, "rotate") {
        Ok(o) => o,
        Err(code) => return code,
    };
    let mut code = 0;
    for renewal in &renewals {
        let mut cx = Context {
            api: &mut api,
            endpoint: &endpoint,
            verify_scopes: super::verify_scopes(&config, &renewal.client),
            faults,
            report: Vec::new(),
        };
        let options = Options {
            force: flags.force,
            dry_run: flags.dry_run,
            now,
        };
        let started = now();
        let mut outcome = pass::run(renewal, &mut cx, &options).await;
        let deadline = started + renewal.renew.activate_after.as_secs() as i64 + WAIT_MARGIN;
        while let (true, Outcome::Waiting(why, at)) = (flags.wait && !flags.dry_run, &outcome) {
            if *at > deadline {
                break;
            }
            println!("{}: waiting: {why}", renewal.client);
            let pause = (*at - now()).clamp(1, WAIT_MARGIN) as u64;
            tokio::time::sleep(std::time::Duration::from_secs(pause)).await;
            let again = Options {
                force: false,
                ..options
            };
            outcome = pass::run(renewal, &mut cx, &again).await;
        }
        for line in &cx.report {
            println!("{}: {line}", renewal.client);
        }
        match outcome {
            Outcome::Nothing => println!("{}: nothing to do", renewal.client),
            Outcome::Done => println!("{}: done", renewal.client),
            Outcome::Waiting(why, _) => {
                println!("{}: waiting: {why}", renewal.client);
                if code == 0 {
                    code = EXIT_WAITING;
                }
            }
            Outcome::Failed(why) => {
                eprintln!("portvakt rotate: {}: {why}", renewal.client);
                tracing::error!(client = %renewal.client, "key renewal failed: {why}");
                code = 1;
            }
        }
    }
    code
}

/// The keyset of each chosen client, read where its renewer writes it (the file, or the Secret),
/// against Digdir's set.
pub async fn status(config: &Path, client: Option<&str>) -> u8 {
    let mut opened = match open(config, client, "keys status") {
        Ok(o) => o,
        Err(code) => return code,
    };
    let mut code = 0;
    for renewal in &opened.renewals {
        println!(
            "{} (client_id {}, keyset {})",
            renewal.client,
            renewal.client_id,
            renewal.keyset.display()
        );
        let read = match Store::for_renewal(renewal) {
            Ok(mut store) => store.read().await,
            Err(e) => Err(e),
        };
        let keyset = match read {
            Ok(k) => k,
            Err(e) => {
                eprintln!("portvakt keys status: {}: {e}", renewal.client);
                code = 1;
                continue;
            }
        };
        match opened.api.registered(&renewal.client_id).await {
            Ok(registered) => {
                for line in super::status(&keyset, &registered, super::now()) {
                    println!("  {line}");
                }
            }
            Err(e) => {
                eprintln!("portvakt keys status: {}: {e}", renewal.client);
                code = 1;
            }
        }
    }
    code
}

/// Takes a registered key into the client's (new) keyset as its active key, after checking that
/// Digdir lists it.
pub async fn adopt(config: &Path, client: &str, from: &Path, kid: Option<&str>) -> u8 {
    let Opened {
        renewals, mut api, ..
    } = match open(config, Some(client), "keys adopt") {
        Ok(o) => o,
        Err(code) => return code,
    };
    let renewal = &renewals[0];
    let read = std::fs::read(from)
        .map_err(|e| format!("cannot read {}: {e}", from.display()))
        .and_then(|text| {
            crate::keys::adoptable(&text, kid).map_err(|e| format!("{}: {e}", from.display()))
        });
    let (jwk, key) = match read {
        Ok(x) => x,
        Err(e) => {
            eprintln!("portvakt keys adopt: {e}");
            return 1;
        }
    };
    let listed = api.registered(&renewal.client_id).await;
    let kid = key.kid().unwrap_or_default().to_string();
    match listed {
        Ok(keys) if keys.iter().any(|k| k.kid == kid) => {}
        Ok(keys) => {
            eprintln!(
                "portvakt keys adopt: Digdir does not list kid {kid} for client {} (it lists: {}): adopt the key that is registered",
                renewal.client_id,
                keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>().join(", ")
            );
            return 1;
        }
        Err(e) => {
            eprintln!("portvakt keys adopt: {e}");
            return 1;
        }
    }
    let keyset = match super::adopted(renewal, &key, jwk, super::now()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("portvakt keys adopt: {e:#}");
            return 1;
        }
    };
    let written = async {
        let mut store = Store::for_renewal(renewal)?;
        store.begin()?;
        if !store.read().await?.keys.is_empty() {
            return Err(super::store::StoreError::Failed(
                "the keyset already holds keys: adopt only into a new keyset".into(),
            ));
        }
        store.write(&keyset).await
    };
    match written.await {
        Ok(()) => {
            let at = match &renewal.renew.kubernetes_secret {
                Some(s) => format!("Secret {}/{} key {}", s.namespace, s.name, s.key),
                None => renewal.keyset.display().to_string(),
            };
            println!(
                "{}: adopted {kid} as the active key of {at}; point key.keyset at it, and `portvakt rotate` renews it from now on",
                renewal.client
            );
            0
        }
        Err(e) => {
            eprintln!("portvakt keys adopt: {e}");
            1
        }
    }
}
