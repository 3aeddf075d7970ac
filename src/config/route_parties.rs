//! A route's parties: whom its token may be for (a consumer organisation by delegation, an Altinn
//! system user), the headers a caller names one in, and what else a grant asks for (resource,
//! authorization_details). Checked with their YAML paths.

use super::headers::RESERVED_HEADERS;
use super::reader::{index, join, Reader};
use super::values::http_url;
use super::SystemUser;
use crate::consent::{ConsentRule, CONSENT_TYPE};
use crate::support::identifiers::is_org_number;
use http::HeaderName;
use serde_json::{Map, Value};

/// The consent tokens a route keeps when it sets no `consent_tokens_max`.
pub const DEFAULT_CONSENT_TOKENS_MAX: usize = 10_000;

/// The party fields of one route.
pub(super) struct Parties {
    pub consumer_org: Option<String>,
    pub consumer_orgs: Vec<String>,
    pub systemuser: Option<SystemUser>,
    pub systemusers: Vec<SystemUser>,
    pub consumer_org_header: HeaderName,
    pub systemuser_org_header: HeaderName,
}

/// The route's parties; `own_org` is the client's organisation where its key is a
/// virksomhetssertifikat (it cannot delegate to itself).
pub(super) fn parties(
    r: &mut Reader,
    m: &Map<String, Value>,
    path: &str,
    own_org: Option<&String>,
) -> Parties {
    let p = |k: &str| join(path, k);
    let consumer_org = r
        .string(m.get("consumer_org"), &p("consumer_org"))
        .and_then(|org| consumer(r, org, &p("consumer_org"), own_org));
    let consumer_orgs: Vec<String> = r
        .string_list(m.get("consumer_orgs"), &p("consumer_orgs"))
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, org)| consumer(r, org, &index(&p("consumer_orgs"), i), own_org))
        .collect();
    let systemuser = m
        .get("systemuser_org")
        .and_then(|v| systemuser(r, v, &p("systemuser_org")))
        .map(|mut user| {
            user.external_ref = r.string(m.get("externalRef"), &p("externalRef"));
            user
        });
    if m.contains_key("externalRef") && !m.contains_key("systemuser_org") {
        r.issue(
            &p("externalRef"),
            "goes with systemuser_org: it names the system user's external reference",
        );
    }
    let systemusers = systemusers(r, m.get("systemuser_orgs"), &p("systemuser_orgs"));
    if !consumer_orgs.is_empty() && !systemusers.is_empty() {
        r.issue(
            path,
            "has both consumer_orgs and systemuser_orgs: a route picks one kind of party per call; make two routes",
        );
    }
    let consumer_org_header = selector_header(
        r,
        m.get("consumer_org_header"),
        &p("consumer_org_header"),
        "portvakt-consumer-org",
    );
    let systemuser_org_header = selector_header(
        r,
        m.get("systemuser_org_header"),
        &p("systemuser_org_header"),
        "portvakt-systemuser-org",
    );
    Parties {
        consumer_org,
        consumer_orgs,
        systemuser,
        systemusers,
        consumer_org_header,
        systemuser_org_header,
    }
}

/// Whether the route takes an Altinn consent per call, the headers it comes in, and how many
/// consent tokens are kept.
pub(super) fn consent(
    r: &mut Reader,
    m: &Map<String, Value>,
    path: &str,
    parties: &Parties,
    details: &[Value],
) -> (ConsentRule, usize) {
    let p = |k: &str| join(path, k);
    let per_call = r
        .boolean(m.get("consent_per_call"), &p("consent_per_call"))
        .unwrap_or(false);
    let id_header = selector_header(
        r,
        m.get("consent_id_header"),
        &p("consent_id_header"),
        "portvakt-consent-id",
    );
    let from_header = selector_header(
        r,
        m.get("consent_from_header"),
        &p("consent_from_header"),
        "portvakt-consent-from",
    );
    let max = r
        .positive_u64(m.get("consent_tokens_max"), &p("consent_tokens_max"))
        .map_or(DEFAULT_CONSENT_TOKENS_MAX, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    for field in [
        "consent_id_header",
        "consent_from_header",
        "consent_tokens_max",
    ] {
        if m.contains_key(field) && !per_call {
            r.issue(
                &p(field),
                "goes with consent_per_call: true (a route that takes a consent per call)",
            );
        }
    }
    if id_header == from_header {
        r.issue(
            &p("consent_from_header"),
            "is the same header as consent_id_header: the consent's id and whom it is from come in two headers",
        );
    }
    for (field, name) in [
        ("consent_id_header", &id_header),
        ("consent_from_header", &from_header),
    ] {
        if *name == parties.consumer_org_header || *name == parties.systemuser_org_header {
            r.issue(&p(field), "is also a party header: pick another name");
        }
    }
    if per_call {
        if let Some(i) = details
            .iter()
            .position(|d| d.get("type").and_then(Value::as_str) == Some(CONSENT_TYPE))
        {
            r.issue(
                &index(&p("authorization_details"), i),
                "is a fixed urn:altinn:consent entry, and consent_per_call takes the consent from each call: keep one of them",
            );
        }
    }
    let rule = ConsentRule {
        per_call,
        id_header,
        from_header,
    };
    (rule, max)
}

/// A consumer organisation for delegation: a valid org number that is not the client's own.
fn consumer(r: &mut Reader, org: String, path: &str, own_org: Option<&String>) -> Option<String> {
    if !is_org_number(&org) {
        r.issue(
            path,
            format!("`{org}` is not an organisation number: 9 digits with a valid check digit"),
        );
        return None;
    }
    if own_org == Some(&org) {
        r.issue(
            path,
            format!("`{org}` is the client's own organisation (from its virksomhetssertifikat): delegation is for acting on behalf of another organisation; leave it out"),
        );
        return None;
    }
    Some(org)
}

/// An org number as written for Altinn: bare, or with the ISO 6523 `0192:` prefix.
fn systemuser_org(r: &mut Reader, raw: &str, path: &str) -> Option<String> {
    let org = raw.strip_prefix("0192:").unwrap_or(raw);
    if is_org_number(org) {
        Some(org.to_string())
    } else {
        r.issue(
            path,
            format!("`{raw}` is not an organisation number: 9 digits with a valid check digit (the 0192: prefix is optional)"),
        );
        None
    }
}

/// `systemuser_orgs` entries: an org number, or `{org, externalRef}`.
fn systemuser(r: &mut Reader, v: &Value, path: &str) -> Option<SystemUser> {
    match v {
        Value::Object(_) => {
            let m = r.mapping(v, path, &super::schema::SYSTEMUSER.keys())?;
            let org = r.required_string(m.get("org"), &join(path, "org"))?;
            Some(SystemUser {
                org: systemuser_org(r, &org, &join(path, "org"))?,
                external_ref: r.string(m.get("externalRef"), &join(path, "externalRef")),
            })
        }
        _ => {
            let org = r.required_string(Some(v), path)?;
            Some(SystemUser {
                org: systemuser_org(r, &org, path)?,
                external_ref: None,
            })
        }
    }
}

fn systemusers(r: &mut Reader, v: Option<&Value>, path: &str) -> Vec<SystemUser> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let users: Vec<SystemUser> = items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| systemuser(r, item, &index(path, i)))
                .collect();
            if items.is_empty() {
                r.issue(path, "is empty: list the organisations whose system users this route may act as, or leave it out");
            }
            users
        }
        Some(_) => {
            r.issue(
                path,
                "expected a list of organisation numbers (or {org, externalRef} mappings)",
            );
            Vec::new()
        }
    }
}

pub(super) fn is_systemuser_detail(detail: &Value) -> bool {
    detail.get("type").and_then(Value::as_str) == Some("urn:altinn:systemuser")
}

/// The inbound header a caller picks a party with; removed before forwarding.
pub(super) fn selector_header(
    r: &mut Reader,
    v: Option<&Value>,
    path: &str,
    default: &'static str,
) -> HeaderName {
    let fallback = HeaderName::from_static(default);
    let Some(name) = r.string(v, path) else {
        return fallback;
    };
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) => {
            r.issue(
                path,
                format!("`{name}` is a header portvakt manages itself: pick another name"),
            );
            fallback
        }
        Ok(h) => h,
        Err(_) => {
            r.issue(path, format!("`{name}` is not a valid HTTP header name"));
            fallback
        }
    }
}

pub(super) fn resource(r: &mut Reader, v: Option<&Value>, path: &str) -> Option<Value> {
    let check = |r: &mut Reader, s: &str, p: &str| http_url(r, s, p).is_some();
    match v? {
        Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let p = index(path, i);
                if let Some(s) = r.required_string(Some(item), &p) {
                    if check(r, &s, &p) {
                        out.push(Value::String(s));
                    }
                }
            }
            if items.is_empty() {
                r.issue(
                    path,
                    "is an empty list: leave it out or name the API's audience URI",
                );
            }
            Some(Value::Array(out))
        }
        Value::Null => None,
        single => {
            let s = r.string(Some(single), path)?;
            check(r, &s, path).then_some(Value::String(s))
        }
    }
}

pub(super) fn authorization_details(r: &mut Reader, v: Option<&Value>, path: &str) -> Vec<Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let p = index(path, i);
                match item {
                    Value::Object(o) if o.get("type").is_some_and(Value::is_string) => {
                        Some(r.expand_tree(item, &p))
                    }
                    _ => {
                        r.issue(
                            &p,
                            "must be a mapping with a string `type` (e.g. urn:altinn:systemuser)",
                        );
                        None
                    }
                }
            })
            .collect(),
        Some(_) => {
            r.issue(
                path,
                "expected a list of RFC 9396 authorization_details objects",
            );
            Vec::new()
        }
    }
}
