//! `renew.background: true`: `portvakt run` makes the renewal passes itself, every
//! `background_interval_seconds` (with a tenth of jitter), on one replica at a time: the one that
//! holds the lock file beside a file keyset, or the Kubernetes Lease beside a Secret keyset.
//! The pass is the one `portvakt rotate` makes; the proxy picks the result up through its key
//! watcher like any other change of the keyset file.

use super::kubernetes::Kubernetes;
use super::pass::{self, Context, Options, Outcome};
use crate::config::{Config, Renewal};
use crate::observe::metrics::{Metrics, RotationLabels};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a replica holds the Lease for one pass at most.
const LEASE_SECONDS: u64 = 600;

/// Starts one task per client with `renew.background`. They run until aborted (by a reload, which
/// starts them anew with its configuration, or by shutdown); a pass cut anywhere is finished by the
/// next one, as after a crash.
pub fn spawn(config: &Config, metrics: &Arc<Metrics>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for renewal in config.renewals.iter().filter(|r| r.renew.background) {
        let (api, endpoint) = match super::connect(config) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(client = %renewal.client, "background key renewal cannot start: {e:#}");
                continue;
            }
        };
        let renewal = renewal.clone();
        let scopes = super::verify_scopes(config, &renewal.client);
        let metrics = Arc::clone(metrics);
        tasks.push(tokio::spawn(async move {
            let mut api = api;
            let mut replica = Replica {
                seen: None,
                holder: std::env::var("HOSTNAME")
                    .unwrap_or_else(|_| format!("portvakt-{:08x}", fastrand::u32(..))),
            };
            // The first pass soon after start, so that a fresh installation gets its first key.
            let mut wait = jittered(
                renewal
                    .renew
                    .background_interval
                    .min(Duration::from_secs(60)),
            );
            loop {
                tokio::time::sleep(wait).await;
                once(
                    &renewal,
                    &mut api,
                    &endpoint,
                    &scopes,
                    &mut replica,
                    &metrics,
                )
                .await;
                wait = jittered(renewal.renew.background_interval);
            }
        }));
    }
    tasks
}

/// This replica in the renewal Lease: its name, and the other holder's record as last seen.
struct Replica {
    holder: String,
    seen: Option<super::kubernetes::Observed>,
}

fn jittered(interval: Duration) -> Duration {
    let tenth = interval.as_millis() as u64 / 10;
    interval.saturating_sub(Duration::from_millis(tenth))
        + Duration::from_millis(fastrand::u64(0..=2 * tenth))
}

/// The renewal lease, for a keyset kept in a Kubernetes Secret: `Ok(Some)` when this replica
/// holds it, `Ok(None)` for a keyset in a file (its lock file decides), `Err` when another replica
/// holds it or it cannot be had (counted as a failed pass).
async fn lease(
    renewal: &Renewal,
    replica: &mut Replica,
    metrics: &Metrics,
) -> Result<Option<(Kubernetes, String, String)>, ()> {
    Ok(match &renewal.renew.kubernetes_secret {
        Some(at) => match Kubernetes::new(&at.api) {
            Ok(kube) => {
                let name = format!("{}-renewer", at.name);
                match kube
                    .take_lease(
                        &at.namespace,
                        &name,
                        &replica.holder,
                        LEASE_SECONDS,
                        &mut replica.seen,
                    )
                    .await
                {
                    Ok(true) => Some((kube, at.namespace.clone(), name)),
                    Ok(false) => {
                        tracing::debug!(client = %renewal.client, "another replica holds the renewal lease");
                        return Err(());
                    }
                    Err(e) => {
                        tracing::error!(client = %renewal.client, "background key renewal: the lease: {e}");
                        count(metrics, renewal, "failed");
                        return Err(());
                    }
                }
            }
            Err(e) => {
                tracing::error!(client = %renewal.client, "background key renewal: {e}");
                count(metrics, renewal, "failed");
                return Err(());
            }
        },
        None => None,
    })
}

async fn once(
    renewal: &Renewal,
    api: &mut super::api::Api,
    endpoint: &crate::token::TokenEndpoint,
    scopes: &Option<Vec<String>>,
    replica: &mut Replica,
    metrics: &Metrics,
) {
    // With a Secret, the replica holding the Lease renews; with a file, the lock file decides.
    let Ok(lease) = lease(renewal, replica, metrics).await else {
        return;
    };
    let mut cx = Context {
        api,
        endpoint,
        verify_scopes: scopes.clone(),
        faults: &pass::Uncut,
        report: Vec::new(),
    };
    let options = Options {
        force: false,
        dry_run: false,
        now: &super::now,
    };
    let outcome = pass::run(renewal, &mut cx, &options).await;
    for line in &cx.report {
        tracing::info!(client = %renewal.client, "key renewal: {line}");
    }
    let result = match &outcome {
        Outcome::Nothing => "nothing",
        Outcome::Done => "done",
        Outcome::Waiting(why, _) => {
            tracing::info!(client = %renewal.client, "key renewal waits: {why}");
            "waiting"
        }
        Outcome::Failed(why) if why.starts_with("another renewer") => {
            tracing::debug!(client = %renewal.client, "{why}");
            return;
        }
        Outcome::Failed(why) => {
            tracing::error!(client = %renewal.client, "key renewal failed: {why}");
            "failed"
        }
    };
    count(metrics, renewal, result);
    if let Some((kube, namespace, name)) = lease {
        if let Err(e) = kube.release_lease(&namespace, &name, &replica.holder).await {
            tracing::warn!(client = %renewal.client, "the renewal lease was not given back (it runs out by itself): {e}");
        }
    }
}

/// Counts a pass. (When it last succeeded is the keyset's `last_success`, which the key watcher
/// publishes on every replica, this one included.)
fn count(metrics: &Metrics, renewal: &Renewal, result: &'static str) {
    metrics
        .key_rotations
        .get_or_create(&RotationLabels {
            client: Arc::new(renewal.client.clone()),
            result,
        })
        .inc();
}
