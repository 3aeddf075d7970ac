//! A route's consent tokens: one token slot per (party slot, consent), made on first use from the
//! party's slot with the consent added to its grant, so each has the slot's single flight, refresh
//! and backoff. The number kept is bounded: the least recently used slot goes first, so a million
//! persons cannot grow memory without limit. A slot evicted while a request still holds it serves
//! that request and is then gone.

use super::client::Issued;
use super::fetch_error::FetchError;
use super::{GrantSpec, TokenSlot};
use crate::consent::{Consent, CONSENT_TYPE};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

/// The party slot a consent slot was made from, by address: kept alive by the entry's `Weak`, so
/// the address is not reused while the entry lives.
type Key = (usize, Consent);

struct Entry {
    slot: Arc<TokenSlot>,
    base: Weak<TokenSlot>,
    used: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<Key, Entry>,
    /// Last use -> key, oldest first.
    order: BTreeMap<u64, Key>,
    tick: u64,
}

/// The consent slots of one route, at most `max` of them.
pub struct ConsentSlots {
    max: usize,
    lru: Mutex<Lru>,
}

impl ConsentSlots {
    pub fn new(max: usize) -> Self {
        ConsentSlots {
            max: max.max(1),
            lru: Mutex::new(Lru::default()),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// How many consent slots are kept now.
    pub fn len(&self) -> usize {
        crate::support::sync::lock(&self.lru).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot for `consent` on the party slot `base`, made if there is none.
    pub fn slot(&self, base: &Arc<TokenSlot>, consent: &Consent) -> Arc<TokenSlot> {
        let key: Key = (Arc::as_ptr(base) as usize, consent.clone());
        let mut lru = crate::support::sync::lock(&self.lru);
        lru.tick += 1;
        let tick = lru.tick;
        let Lru { entries, order, .. } = &mut *lru;
        if let Some(entry) = entries.get_mut(&key) {
            if Weak::ptr_eq(&entry.base, &Arc::downgrade(base)) {
                order.remove(&entry.used);
                entry.used = tick;
                order.insert(tick, key);
                return Arc::clone(&entry.slot);
            }
        }
        let slot = base.with_detail(consent.authorization_detail());
        let entry = Entry {
            slot: Arc::clone(&slot),
            base: Arc::downgrade(base),
            used: tick,
        };
        if let Some(old) = entries.insert(key.clone(), entry) {
            order.remove(&old.used);
        }
        order.insert(tick, key);
        while entries.len() > self.max {
            let Some((_, oldest)) = order.pop_first() else {
                break;
            };
            entries.remove(&oldest);
        }
        slot
    }
}

/// Whether `grant` names a consent: its token is a consent token.
pub fn names_consent(grant: &GrantSpec) -> bool {
    grant
        .authorization_details
        .as_deref()
        .is_some_and(|d| d.contains(CONSENT_TYPE))
}

/// What a token fetch for `grant` comes to: for a grant that names a consent, a refusal told apart
/// ([`refused`]) and the token's life bounded by the consent ([`bound`]); any other, as it came.
pub fn settle(
    grant: &GrantSpec,
    result: Result<Issued, FetchError>,
    now_unix: i64,
) -> Result<Issued, FetchError> {
    if !names_consent(grant) {
        return result;
    }
    result
        .map_err(refused)
        .and_then(|issued| bound(grant, issued, now_unix))
}

/// A consent token is kept no longer than its consent's `validTo`, which the token carries (a
/// JWT's `authorization_details`, read, not verified: it can only shorten the token's life). A
/// token whose consent has already ended is a refusal.
pub fn bound(grant: &GrantSpec, mut issued: Issued, now_unix: i64) -> Result<Issued, FetchError> {
    if !names_consent(grant) {
        return Ok(issued);
    }
    let Some(valid_to) = valid_to(issued.access_token.expose()) else {
        return Ok(issued);
    };
    let left = valid_to - now_unix;
    if left <= 0 {
        return Err(FetchError::ConsentRefused {
            error: "consent_expired".into(),
            description: Some("the token's consent has passed its validTo".into()),
            code: None,
            hint: hint("expired"),
        });
    }
    issued.expires_in = issued.expires_in.min(left as u64);
    Ok(issued)
}

/// The consent's `validTo` in a JWT access token, as Unix seconds.
fn valid_to(token: &str) -> Option<i64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?,
    )
    .ok()?;
    claims["authorization_details"]
        .as_array()?
        .iter()
        .filter(|d| d["type"] == CONSENT_TYPE)
        .filter_map(|d| crate::support::time::parse_rfc3339(d["validTo"].as_str()?))
        .min()
}

/// A rejected consent grant, told apart from a rejected client: Maskinporten's codes for the
/// client's authentication (MP-0xx, MP-1xx) and scopes (MP-2xx) say nothing of the consent, and
/// keep their own answer; anything else refused a grant that differs from the route's working one
/// only by its consent.
pub fn refused(error: FetchError) -> FetchError {
    let FetchError::Rejected {
        error,
        description,
        code,
        hint: client_hint,
    } = error
    else {
        return error;
    };
    let about_client = code
        .as_deref()
        .is_some_and(|c| c.starts_with("MP-0") || c.starts_with("MP-1") || c.starts_with("MP-2"))
        || matches!(error.as_str(), "invalid_client" | "invalid_scope");
    if about_client {
        return FetchError::Rejected {
            error,
            description,
            code,
            hint: client_hint,
        };
    }
    let said = format!("{error} {}", description.as_deref().unwrap_or_default()).to_lowercase();
    FetchError::ConsentRefused {
        hint: hint(&said),
        error,
        description,
        code,
    }
}

/// What to do about a refused consent, from the words Maskinporten used.
fn hint(said: &str) -> String {
    let has = |words: &[&str]| words.iter().any(|w| said.contains(w));
    if has(&["expired", "utløpt", "validto"]) {
        "the consent has expired: ask the person for a new one (a new consent request in Altinn), then call with its id".into()
    } else if has(&["revoked", "withdrawn", "trukket", "deleted"]) {
        "the person has withdrawn the consent: it cannot be used again; ask for a new one if the person agrees".into()
    } else if has(&[
        "not accepted",
        "not been accepted",
        "pending",
        "rejected",
        "unaccepted",
    ]) {
        "the person has not accepted the consent request (yet): wait for the redirect after the person's approval in Altinn".into()
    } else if has(&[
        "another organi",
        "other organi",
        "annen virksomhet",
        "consumer",
    ]) {
        "the consent was given to another organisation: it must name the data consumer the token is for (with delegation, consumer_org)".into()
    } else if has(&["from", "party", "person"]) {
        "the consent is not from the person or organisation named in the consent-from header: check that the caller sent the right one".into()
    } else {
        "Altinn holds no usable consent with this id from this person: check the consent id and the person, and that the consent request was made for this organisation".into()
    }
}
