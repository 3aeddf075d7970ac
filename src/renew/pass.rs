//! One renewal pass for one client: read the keyset and Digdir's set, plan the next step, take it,
//! and plan again, until nothing is left to do now. Each step is one write (the keyset, or Digdir's
//! set); a pass cut between any two starts the next one from what was written.

use super::api::{Api, ApiError};
use super::plan::{describe, plan, Facts, Step};
use super::store::{Store, StoreError};
use crate::config::Renewal;
use crate::keys::keyset::{Entry, Keyset, State};
use crate::support::secret::Secret;
use crate::token::{FetchError, GrantSpec, TokenEndpoint};
use serde_json::Value;

/// Steps one pass takes at most (a bootstrap with no wait takes five).
const MAX_STEPS: usize = 10;

/// Where a test may cut a pass, as a crash would: called after each write.
pub trait Faults: Send + Sync {
    fn after(&self, point: &str) -> Result<(), String>;
}

/// No faults: what `portvakt rotate` uses.
pub struct Uncut;

impl Faults for Uncut {
    fn after(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due.
    Nothing,
    /// Something changed; what, in order.
    Done,
    /// A pending key is registered but may not sign yet: why, and when to try again (Unix seconds).
    Waiting(String, i64),
    Failed(String),
}

pub struct Options<'a> {
    pub force: bool,
    pub dry_run: bool,
    /// The renewer's clock (Unix seconds); tests move it on.
    pub now: &'a (dyn Fn() -> i64 + Sync),
}

/// What a pass needs besides the client.
pub struct Context<'a> {
    pub api: &'a mut Api,
    /// Maskinporten's token endpoint, for the grant that proves a new key.
    pub endpoint: &'a TokenEndpoint,
    /// The scopes of that grant: those of a route using the client.
    pub verify_scopes: Option<Vec<String>>,
    pub faults: &'a dyn Faults,
    /// What was done and why, a line each, for the operator.
    pub report: Vec<String>,
}

/// Why a step stopped the pass: an outcome, or a write refused because another writer came first,
/// after which the pass reads again and plans afresh.
enum Halt {
    Replan,
    Stop(Outcome),
}

impl From<Outcome> for Halt {
    fn from(o: Outcome) -> Halt {
        Halt::Stop(o)
    }
}

pub async fn run(renewal: &Renewal, cx: &mut Context<'_>, options: &Options<'_>) -> Outcome {
    let mut store = match Store::for_renewal(renewal) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if !options.dry_run {
        if let Err(e) = store.begin() {
            return Outcome::Failed(e.to_string());
        }
    }
    let mut done = false;
    let mut force = options.force;
    for _ in 0..MAX_STEPS {
        let now = (options.now)();
        let mut keyset = match store.read().await {
            Ok(k) => k,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        // --force asks for one new key: a pending one, found or made, is it.
        if keyset.pending().is_some() {
            force = false;
        }
        let registered = match cx.api.registered(&renewal.client_id).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let seen = observe(&mut keyset, &registered, now);
        if seen && !options.dry_run {
            match write(&mut store, &keyset, cx, "observed").await {
                Ok(()) => {}
                Err(Halt::Replan) => continue,
                Err(Halt::Stop(o)) => return o,
            }
        }
        let facts = Facts {
            keyset: &keyset,
            registered: &registered,
            now,
            renew: &renewal.renew,
            force,
        };
        let step = plan(&facts);
        if options.dry_run {
            cx.report.push(describe(&step, &facts));
            return planned(step);
        }
        let result = match &step {
            Step::Nothing => {
                match note_success(&mut store, &mut keyset, cx, now).await {
                    Ok(()) => {}
                    Err(Halt::Replan) => continue,
                    Err(Halt::Stop(o)) => return o,
                }
                return if done {
                    Outcome::Done
                } else {
                    Outcome::Nothing
                };
            }
            Step::Wait { kid, until } => {
                let _ = note_success(&mut store, &mut keyset, cx, now).await;
                return waiting(kid, *until, now);
            }
            Step::Refuse(why) => return Outcome::Failed(why.clone()),
            step => take(step, cx, renewal, &mut store, &mut keyset, &registered, now).await,
        };
        match result {
            Ok(()) => done = true,
            Err(Halt::Replan) => {}
            Err(Halt::Stop(outcome)) => return outcome,
        }
    }
    Outcome::Failed(format!(
        "the pass took {MAX_STEPS} steps without settling; run it again"
    ))
}

/// Notes what Digdir says of portvakt's keys: their `exp`, and when each was first seen listed.
/// Whether anything changed.
fn observe(keyset: &mut Keyset, registered: &[super::api::Registered], now: i64) -> bool {
    let mut seen = false;
    for entry in &mut keyset.keys {
        if let Some(r) = registered.iter().find(|r| r.kid == entry.kid) {
            if entry.registered.is_none() || entry.exp != r.exp {
                entry.registered.get_or_insert(now);
                entry.exp = r.exp;
                seen = true;
            }
        }
    }
    seen
}

/// A pass that ends waiting for a new key's registration to settle.
fn waiting(kid: &str, until: i64, now: i64) -> Outcome {
    Outcome::Waiting(
        format!(
            "the new key {kid} signs once it has been registered {} s more (at {})",
            until - now,
            crate::support::time::datetime(until)
        ),
        until,
    )
}

/// What a dry run reports: the outcome the step would lead to.
fn planned(step: Step) -> Outcome {
    match step {
        Step::Nothing => Outcome::Nothing,
        Step::Wait { kid, until } => Outcome::Waiting(kid, until),
        Step::Refuse(why) => Outcome::Failed(why),
        _ => Outcome::Done,
    }
}

/// Takes one step that writes: to Digdir's set, or to the keyset.
async fn take(
    step: &Step,
    cx: &mut Context<'_>,
    renewal: &Renewal,
    store: &mut Store,
    keyset: &mut Keyset,
    registered: &[super::api::Registered],
    now: i64,
) -> Result<(), Halt> {
    match step {
        Step::Register { why, set } => {
            cx.report.push(format!("register: {why}"));
            post(cx, renewal, keyset, set, "registered").await
        }
        Step::NewKey { why } => new_key(cx, renewal, store, keyset, registered, now, why).await,
        Step::Activate { kid } => activate(cx, renewal, store, keyset, kid, now).await,
        Step::RenewInPlace { why, set } => {
            cx.report.push(format!("renew in place: {why}"));
            if let Err(Halt::Stop(o)) = post(cx, renewal, keyset, set, "renewed").await {
                return Err(Halt::Stop(o));
            }
            Err(Halt::Stop(Outcome::Failed(format!(
                "renewed in place, not rotated: {why}"
            ))))
        }
        Step::Retire { kids, set } => {
            cx.report
                .push(format!("retire {}: their overlap is over", kids.join(", ")));
            post(cx, renewal, keyset, set, "retired").await
        }
        Step::Forget { kids } => {
            cx.report
                .push(format!("forget {}: no longer registered", kids.join(", ")));
            keyset.keys.retain(|e| !kids.contains(&e.kid));
            write(store, keyset, cx, "forgotten").await
        }
        // These write nothing: `run` ends the pass on them.
        Step::Nothing | Step::Wait { .. } | Step::Refuse(_) => Ok(()),
    }
}

async fn write(
    store: &mut Store,
    keyset: &Keyset,
    cx: &Context<'_>,
    point: &str,
) -> Result<(), Halt> {
    match store.write(keyset).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => return Err(Halt::Replan),
        Err(e) => return Err(Outcome::Failed(e.to_string()).into()),
    }
    cut(cx, point)
}

/// Where a test may cut the pass, after a write.
fn cut(cx: &Context<'_>, point: &str) -> Result<(), Halt> {
    cx.faults
        .after(point)
        .map_err(|e| Halt::Stop(Outcome::Failed(e)))
}

/// Posts a set, never an empty one and never one without the active key.
async fn post(
    cx: &mut Context<'_>,
    renewal: &Renewal,
    keyset: &Keyset,
    set: &[Value],
    point: &str,
) -> Result<(), Halt> {
    let has = |kid: &str| set.iter().any(|k| k["kid"] == kid);
    if set.is_empty() || keyset.active().is_some_and(|a| !has(&a.kid)) {
        return Err(Outcome::Failed("refusing to post a set without the active key".into()).into());
    }
    cx.api
        .replace(&renewal.client_id, set)
        .await
        .map_err(|e: ApiError| Outcome::Failed(e.to_string()))?;
    cut(cx, point)
}

/// A new key: stored as pending first, then registered.
async fn new_key(
    cx: &mut Context<'_>,
    renewal: &Renewal,
    store: &mut Store,
    keyset: &mut Keyset,
    registered: &[super::api::Registered],
    now: i64,
    why: &str,
) -> Result<(), Halt> {
    let kid = format!(
        "{}.{}.{:08x}",
        renewal.renew.kid_prefix,
        crate::support::time::date(now),
        fastrand::u32(..)
    );
    let bits = renewal.renew.bits;
    let made = {
        let kid = kid.clone();
        tokio::task::spawn_blocking(move || crate::keys::generate(bits, &kid)).await
    };
    let key = match made {
        Ok(Ok(key)) => key,
        Ok(Err(e)) => return Err(Outcome::Failed(e.to_string()).into()),
        Err(e) => return Err(Outcome::Failed(format!("key generation failed: {e}")).into()),
    };
    cx.report
        .push(format!("new key {kid} ({bits} bits): {why}"));
    keyset.keys.push(Entry {
        kid: kid.clone(),
        state: State::Pending,
        created: now,
        registered: None,
        activated: None,
        retire_after: None,
        exp: None,
        jwk: Secret::new(key.private_jwk.expose().clone()),
    });
    write(store, keyset, cx, "stored").await?;
    let facts = Facts {
        keyset,
        registered,
        now,
        renew: &renewal.renew,
        force: false,
    };
    let set = facts.set(&[], &[kid.as_str()]);
    post(cx, renewal, keyset, &set, "registered").await
}

/// Proves the pending key with a real grant, then makes it the active one.
async fn activate(
    cx: &mut Context<'_>,
    renewal: &Renewal,
    store: &mut Store,
    keyset: &mut Keyset,
    kid: &str,
    now: i64,
) -> Result<(), Halt> {
    let Some(scopes) = cx.verify_scopes.clone() else {
        return Err(Outcome::Failed(format!(
            "no route uses client {}, so no grant can prove the new key {kid}",
            renewal.client
        ))
        .into());
    };
    let key = keyset
        .keys
        .iter()
        .find(|e| e.kid == kid)
        .map(Entry::signing_key);
    let key = match key {
        Some(Ok(key)) => key,
        Some(Err(e)) => return Err(Outcome::Failed(e.to_string()).into()),
        None => return Err(Outcome::Failed(format!("{kid} left the keyset")).into()),
    };
    let spec = GrantSpec::new(&scopes, None, None, &[]);
    match cx.endpoint.request(&renewal.client_id, &key, &spec).await {
        Ok(_) => {}
        Err(FetchError::Rejected { code, .. }) if code.as_deref() == Some("MP-124") => {
            return Err(Outcome::Waiting(
                format!("Maskinporten does not know the new key {kid} yet"),
                now + 30,
            )
            .into())
        }
        Err(e) => {
            return Err(Outcome::Failed(format!(
                "a grant signed with the new key {kid} got no token: {e}"
            ))
            .into())
        }
    }
    cut(cx, "verified")?;
    let overlap = renewal.renew.overlap.as_secs() as i64;
    for entry in &mut keyset.keys {
        if entry.kid == kid {
            entry.state = State::Active;
            entry.activated = Some(now);
        } else if entry.state == State::Active {
            entry.state = State::Retiring;
            entry.retire_after = Some(now + overlap);
        }
    }
    cx.report.push(format!(
        "activate {kid}: registered, {} s passed, and a grant signed with it got a token",
        renewal.renew.activate_after.as_secs()
    ));
    write(store, keyset, cx, "activated").await
}

/// A pass that reached its end records when, for the status and the alert on a stalled renewer.
async fn note_success(
    store: &mut Store,
    keyset: &mut Keyset,
    cx: &Context<'_>,
    now: i64,
) -> Result<(), Halt> {
    if keyset.keys.is_empty() {
        return Ok(());
    }
    keyset.last_success = Some(now);
    write(store, keyset, cx, "noted").await
}
