//! The renewal plan: from the keyset and what Digdir lists, the one next step. Pure, so that every
//! step is planned afresh and a pass interrupted anywhere finishes on the next one.

use super::api::Registered;
use crate::config::Renew;
use crate::keys::keyset::{Entry, Keyset, State};
use serde_json::Value;

/// Digdir keeps at most this many keys per client.
pub const MAX_KEYS: usize = 5;

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Post `set`: the active or pending key is missing from Digdir (a crash after storing it, or
    /// someone removed it).
    Register {
        why: String,
        set: Vec<Value>,
    },
    /// A key for the next rotation, made and stored as pending, then registered.
    NewKey {
        why: String,
    },
    /// The pending key has been registered long enough: prove it with a grant, then make it active.
    Activate {
        kid: String,
    },
    /// The pending key is registered but not yet old enough to sign.
    Wait {
        kid: String,
        until: i64,
    },
    /// No room for another key: the active key is posted again with a new `exp`.
    RenewInPlace {
        why: String,
        set: Vec<Value>,
    },
    /// Retiring keys past their overlap leave Digdir's set.
    Retire {
        kids: Vec<String>,
        set: Vec<Value>,
    },
    /// Keys no longer registered leave the keyset.
    Forget {
        kids: Vec<String>,
    },
    Nothing,
    Refuse(String),
}

/// What the renewer knows when it plans.
pub struct Facts<'a> {
    pub keyset: &'a Keyset,
    pub registered: &'a [Registered],
    pub now: i64,
    pub renew: &'a Renew,
    pub force: bool,
}

impl Facts<'_> {
    fn is_registered(&self, kid: &str) -> bool {
        self.registered.iter().any(|r| r.kid == kid)
    }

    fn exp_of(&self, kid: &str) -> Option<i64> {
        self.registered
            .iter()
            .find(|r| r.kid == kid)
            .and_then(|r| r.exp)
    }

    /// The set to post: every registered key portvakt does not own (a break-glass key) unchanged,
    /// then the keyset's keys that stay, each with the `exp` Digdir gave it (so a post does not move
    /// another key's expiry), or a new one where it has none yet. `leave` are left out.
    pub fn set(&self, leave: &[&str], fresh: &[&str]) -> Vec<Value> {
        let new_exp = self.now + self.renew.key_lifetime.as_secs() as i64;
        let mut set: Vec<Value> = self
            .registered
            .iter()
            .filter(|r| !self.keyset.keys.iter().any(|e| e.kid == r.kid))
            .filter(|r| !leave.contains(&r.kid.as_str()))
            .map(|r| {
                let mut jwk = r.jwk.clone();
                if let Value::Object(m) = &mut jwk {
                    // Keys registered before Digdir made `use` required must get it when re-posted.
                    m.entry("use").or_insert_with(|| "sig".into());
                    m.entry("alg").or_insert_with(|| "RS256".into());
                }
                jwk
            })
            .collect();
        for entry in &self.keyset.keys {
            if leave.contains(&entry.kid.as_str()) {
                continue;
            }
            let mut jwk = entry.public_jwk();
            let exp = match self.exp_of(&entry.kid) {
                Some(exp) if !fresh.contains(&entry.kid.as_str()) => exp,
                _ => new_exp,
            };
            jwk["exp"] = exp.into();
            set.push(jwk);
        }
        set
    }

    fn foreign(&self) -> usize {
        self.registered
            .iter()
            .filter(|r| !self.keyset.keys.iter().any(|e| e.kid == r.kid))
            .count()
    }
}

/// Step 1: a Register (or a refusal, Digdir's set being full) for the active or pending key
/// that is not in Digdir's set.
fn unregistered(f: &Facts, active: Option<&Entry>, pending: Option<&Entry>) -> Option<Step> {
    for (entry, what) in [(active, "active"), (pending, "pending")] {
        if let Some(e) = entry {
            if !f.is_registered(&e.kid) {
                let set = f.set(&[], &[]);
                if set.len() > MAX_KEYS {
                    return Some(Step::Refuse(format!(
                        "the {what} key {} is not registered and Digdir's set is full ({} keys, {MAX_KEYS} at most); remove a key you do not use in Samarbeidsportalen",
                        e.kid,
                        f.registered.len()
                    )));
                }
                return Some(Step::Register {
                    why: format!("the {what} key {} is not in Digdir's set", e.kid),
                    set,
                });
            }
        }
    }
    None
}

/// Step 3: keys gone from Digdir's set are forgotten; retiring keys past their overlap are taken
/// out of it (while there is an active key).
fn leaving(f: &Facts, has_active: bool) -> Option<Step> {
    let gone: Vec<String> = f
        .keyset
        .keys
        .iter()
        .filter(|e| e.state == State::Retiring && !f.is_registered(&e.kid))
        .map(|e| e.kid.clone())
        .collect();
    if !gone.is_empty() {
        return Some(Step::Forget { kids: gone });
    }
    let due: Vec<&str> = f
        .keyset
        .keys
        .iter()
        .filter(|e| e.state == State::Retiring && e.retire_after.is_some_and(|t| f.now >= t))
        .map(|e| e.kid.as_str())
        .collect();
    if !due.is_empty() && has_active {
        return Some(Step::Retire {
            kids: due.iter().map(|k| k.to_string()).collect(),
            set: f.set(&due, &[]),
        });
    }
    None
}

/// Step 4's reason for a new key: none yet, asked for, or the active one old or near its `exp`.
fn why_new(f: &Facts, active: Option<&Entry>) -> Option<String> {
    match active {
        None => Some("the keyset has no key yet (bootstrap)".to_string()),
        Some(_) if f.force => Some("asked for with --force".to_string()),
        Some(a) => {
            let age = f.now - a.created;
            let left = f.exp_of(&a.kid).map(|exp| exp - f.now);
            if age >= f.renew.rotate_after.as_secs() as i64 {
                Some(format!(
                    "the active key {} is {} days old",
                    a.kid,
                    age / 86_400
                ))
            } else if left.is_some_and(|l| l <= f.renew.renew_before.as_secs() as i64) {
                Some(format!(
                    "Digdir's exp for the active key {} is {} days away",
                    a.kid,
                    left.unwrap_or(0) / 86_400
                ))
            } else {
                None
            }
        }
    }
}

pub fn plan(f: &Facts) -> Step {
    let ks = f.keyset;
    let active = ks.active();
    let pending = ks.pending();
    // 1. What portvakt signs with, or is about to, must be registered.
    if let Some(step) = unregistered(f, active, pending) {
        return step;
    }
    // 2. A registered pending key becomes active once it has been registered long enough.
    if let Some(p) = pending {
        let since = p.registered.unwrap_or(f.now);
        let until = since + f.renew.activate_after.as_secs() as i64;
        return if f.now >= until {
            Step::Activate { kid: p.kid.clone() }
        } else {
            Step::Wait {
                kid: p.kid.clone(),
                until,
            }
        };
    }
    // 3. Keys that have left Digdir's set leave the keyset; retiring keys past their overlap leave Digdir's.
    if let Some(step) = leaving(f, active.is_some()) {
        return step;
    }
    // 4. A new key when there is none, when asked, or when the active one is old or near its `exp`.
    let why = why_new(f, active);
    let Some(why) = why else {
        return Step::Nothing;
    };
    let kept = f.foreign() + ks.keys.len();
    if kept < MAX_KEYS {
        return Step::NewKey { why };
    }
    match active {
        Some(a) => Step::RenewInPlace {
            why: format!(
                "{why}, but Digdir's set is full ({kept} keys, {} of them not portvakt's): the active key {} is posted again with a new exp; remove a key you do not use in Samarbeidsportalen so that it can be rotated",
                f.foreign(),
                a.kid
            ),
            set: f.set(&[], &[a.kid.as_str()]),
        },
        None => Step::Refuse(format!(
            "{why}, but Digdir's set is full ({kept} keys): remove a key you do not use in Samarbeidsportalen"
        )),
    }
}

/// The step as `--dry-run` prints it: what would be done and how Digdir's set would change.
pub fn describe(step: &Step, f: &Facts) -> String {
    let kids = |set: &[Value]| {
        set.iter()
            .filter_map(|k| k["kid"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let now: Vec<String> = f.registered.iter().map(|r| r.kid.clone()).collect();
    let change = |set: &[Value]| format!("Digdir's set: [{}] -> [{}]", now.join(", "), kids(set));
    match step {
        Step::Nothing => "nothing to do".into(),
        Step::Wait { kid, until } => format!(
            "wait: {kid} may sign from {}",
            crate::support::time::datetime(*until)
        ),
        Step::Refuse(why) => format!("cannot go on: {why}"),
        Step::Register { why, set } => format!("would register ({why}); {}", change(set)),
        Step::NewKey { why } => format!(
            "would make a {}-bit key, store it as pending and register it ({why}); Digdir's set: [{}] -> [{}, <new>]",
            f.renew.bits,
            now.join(", "),
            kids(&f.set(&[], &[]))
        ),
        Step::Activate { kid } => {
            format!("would prove {kid} with a grant and make it the active key")
        }
        Step::RenewInPlace { why, set } => format!("would renew in place ({why}); {}", change(set)),
        Step::Retire { kids: k, set } => format!("would retire {}; {}", k.join(", "), change(set)),
        Step::Forget { kids: k } => format!("would forget {} (no longer registered)", k.join(", ")),
    }
}
