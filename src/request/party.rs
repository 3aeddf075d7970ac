//! Whom a route's token is for: the client's own organisation, a consumer it acts for (delegation,
//! `consumer_org`) or an Altinn system user (`systemuser_org`). The route fixes a default, and may
//! let the caller pick from an allow-list per call with a header. Each party has its own token slot,
//! so every consumer gets its own cached token, and a party off the list never costs a
//! Maskinporten call.

use crate::token::TokenSlot;
use http::{HeaderMap, HeaderName};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The two kinds of party a caller can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartyKind {
    ConsumerOrg,
    SystemUser,
}

impl PartyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PartyKind::ConsumerOrg => "consumer_org",
            PartyKind::SystemUser => "systemuser_org",
        }
    }
}

/// A party named per call: its kind and org number.
pub type Party<'a> = (PartyKind, &'a str);

/// One kind of party a caller may name in `header`, and the token slot for each allowed org.
pub struct Selector {
    pub kind: PartyKind,
    pub header: HeaderName,
    /// Org number -> slot.
    choices: HashMap<String, Arc<TokenSlot>>,
    /// The allowed org numbers in configured order, for answers that list them.
    allowed: Vec<String>,
}

impl Selector {
    pub fn new(kind: PartyKind, header: HeaderName) -> Self {
        Selector {
            kind,
            header,
            choices: HashMap::new(),
            allowed: Vec::new(),
        }
    }

    pub fn allow(&mut self, org: &str, slot: Arc<TokenSlot>) {
        if self.choices.insert(org.to_string(), slot).is_none() {
            self.allowed.push(org.to_string());
        }
    }

    fn pick(&self, value: &[u8]) -> Option<&Arc<TokenSlot>> {
        let value = std::str::from_utf8(value).ok()?.trim();
        let org = match self.kind {
            PartyKind::SystemUser => value.strip_prefix("0192:").unwrap_or(value),
            PartyKind::ConsumerOrg => value,
        };
        self.choices.get(org)
    }
}

/// Why a request names no party this route can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartyError {
    /// The header names an organisation not on the route's list.
    NotAllowed {
        header: HeaderName,
        /// The caller's value, shown only when it is a plausible org number.
        value: Option<String>,
        allowed: Vec<String>,
    },
    /// The route has no default party and the caller named none.
    Missing {
        headers: Vec<HeaderName>,
        allowed: Vec<String>,
    },
    /// Both a consumer and a system user were named.
    Conflict { headers: Vec<HeaderName> },
}

impl fmt::Display for PartyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartyError::NotAllowed {
                header,
                value,
                allowed,
            } => {
                let value = value.as_deref().unwrap_or("the value");
                if allowed.is_empty() {
                    write!(f, "{header}: this route does not act for other organisations; {value} was refused")
                } else {
                    write!(
                        f,
                        "{header}: {value} is not among the organisations this route may act for ({})",
                        allowed.join(", ")
                    )
                }
            }
            PartyError::Missing { headers, allowed } => write!(
                f,
                "this route acts for one of {} per call: name it in the {} header",
                allowed.join(", "),
                join(headers)
            ),
            PartyError::Conflict { headers } => {
                write!(f, "name only one of the {} headers", join(headers))
            }
        }
    }
}

impl std::error::Error for PartyError {}

fn join(headers: &[HeaderName]) -> String {
    headers
        .iter()
        .map(HeaderName::as_str)
        .collect::<Vec<_>>()
        .join(" / ")
}

/// A route's token slots by party.
pub struct Parties {
    /// The slot when the caller names no party; `None` when the route requires one.
    default: Option<Arc<TokenSlot>>,
    selectors: Vec<Selector>,
}

impl Parties {
    pub fn new(default: Option<Arc<TokenSlot>>, selectors: Vec<Selector>) -> Self {
        Parties { default, selectors }
    }

    /// The token slot for this request, from the party header the caller sent, if any.
    pub fn select(&self, headers: &HeaderMap) -> Result<&Arc<TokenSlot>, PartyError> {
        let mut named = self
            .selectors
            .iter()
            .filter_map(|s| headers.get(&s.header).map(|v| (s, v)));
        let Some((selector, value)) = named.next() else {
            return self.default.as_ref().ok_or_else(|| PartyError::Missing {
                headers: self
                    .selectors
                    .iter()
                    .filter(|s| !s.allowed.is_empty())
                    .map(|s| s.header.clone())
                    .collect(),
                allowed: self.allowed(),
            });
        };
        if named.next().is_some() {
            return Err(PartyError::Conflict {
                headers: self.headers().cloned().collect(),
            });
        }
        selector
            .pick(value.as_bytes())
            .ok_or_else(|| PartyError::NotAllowed {
                header: selector.header.clone(),
                value: value
                    .to_str()
                    .ok()
                    .map(str::trim)
                    .filter(|v| v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit() || b == b':'))
                    .map(str::to_string),
                allowed: selector.allowed.clone(),
            })
    }

    /// The inbound headers a caller names parties with: removed before forwarding.
    pub fn headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.selectors.iter().map(|s| &s.header)
    }

    /// Every slot with the party it serves (`None` for the route's default), for `/readyz`.
    pub fn slots(&self) -> Vec<(Option<Party<'_>>, &Arc<TokenSlot>)> {
        let mut out: Vec<_> = self.default.iter().map(|slot| (None, slot)).collect();
        for s in &self.selectors {
            for org in &s.allowed {
                if let Some(slot) = s.choices.get(org) {
                    if !self.default.as_ref().is_some_and(|d| Arc::ptr_eq(d, slot)) {
                        out.push((Some((s.kind, org.as_str())), slot));
                    }
                }
            }
        }
        out
    }

    fn allowed(&self) -> Vec<String> {
        self.selectors
            .iter()
            .flat_map(|s| s.allowed.iter().cloned())
            .collect()
    }
}
