//! The `routes` list: each route's fields, checked with their YAML paths.

use super::egress::check_plain_http;
use super::headers::headers;
use super::inbound::{allow_list, api_keys};
use super::reader::{index, join, Reader};
use super::route_parties::{
    authorization_details, consent, is_systemuser_detail, parties, resource, selector_header,
    Parties,
};
use super::route_transport::transport;
use super::values::http_url;
use super::{AllowList, AltinnExchange, ApiKey, Egress, Environment, RouteConfig};
use crate::consent::ConsentRule;
use crate::support::secret::Secret;
use http::{HeaderName, HeaderValue, Uri};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Altinn's token exchange, by environment (maskinporten.md section 6).
const ALTINN_EXCHANGE_PATH: &str = "authentication/api/v1/exchange/maskinporten";
const ALTINN_TT02: &str = "https://platform.tt02.altinn.no/";
const ALTINN_PROD: &str = "https://platform.altinn.no/";

/// What routes are checked against: the declared clients (with the organisation of those that
/// sign with a virksomhetssertifikat), the Maskinporten environment and the config file's folder.
pub(super) struct Context<'c> {
    pub clients: &'c [&'c str],
    pub client_orgs: HashMap<String, String>,
    pub environment: Option<Environment>,
    /// The top-level `egress_proxy`, for routes without their own `proxy`.
    pub egress_proxy: &'c Egress,
    pub base: &'c Path,
}

pub(super) fn routes(r: &mut Reader, v: Option<&Value>, cx: &Context) -> Vec<RouteConfig> {
    let Some(v) = v else {
        r.issue(
            "routes",
            "is required: at least one route with name, prefix, upstream, client and scopes",
        );
        return Vec::new();
    };
    let Value::Array(items) = v else {
        r.issue("routes", "expected a list of routes");
        return Vec::new();
    };
    if items.is_empty() {
        r.issue("routes", "is empty: add at least one route");
    }
    let mut out = Vec::new();
    let (mut names, mut prefixes) = (HashSet::new(), HashSet::new());
    for (i, item) in items.iter().enumerate() {
        let path = index("routes", i);
        let Some(route) = route(r, item, &path, cx) else {
            continue;
        };
        if !names.insert(route.name.clone()) {
            r.issue(
                &join(&path, "name"),
                format!(
                    "`{}` is used by an earlier route: names must be unique",
                    route.name
                ),
            );
        }
        if !prefixes.insert(route.prefix.clone()) {
            r.issue(
                &join(&path, "prefix"),
                format!(
                    "`{}` is used by an earlier route: prefixes must be unique",
                    route.prefix
                ),
            );
        }
        out.push(route);
    }
    out
}

fn route(r: &mut Reader, v: &Value, path: &str, cx: &Context) -> Option<RouteConfig> {
    let (clients, base) = (cx.clients, cx.base);
    let m = r.mapping(v, path, &super::schema::ROUTE.keys())?;
    let p = |k: &str| join(path, k);
    let name = r.required_string(m.get("name"), &p("name"));
    let prefix = r
        .required_string(m.get("prefix"), &p("prefix"))
        .and_then(|s| prefix(r, &s, &p("prefix")));
    let upstream = r
        .required_string(m.get("upstream"), &p("upstream"))
        .and_then(|s| upstream(r, &s, &p("upstream")));
    let client = r
        .required_string(m.get("client"), &p("client"))
        .and_then(|c| known_client(r, c, clients, &p("client")));
    let scopes = scopes(r, m.get("scopes"), &p("scopes"));
    let own_org = client.as_deref().and_then(|c| cx.client_orgs.get(c));
    let parties = parties(r, m, path, own_org);
    let altinn_exchange = r
        .string(m.get("altinn_exchange"), &p("altinn_exchange"))
        .and_then(|s| altinn_exchange(r, &s, &p("altinn_exchange"), cx.environment));
    let resource = resource(r, m.get("resource"), &p("resource"));
    let authorization_details = authorization_details(
        r,
        m.get("authorization_details"),
        &p("authorization_details"),
    );
    let headers = headers(r, m.get("headers"), &p("headers"), base);
    let (consent, consent_tokens_max) = consent(r, m, path, &parties, &authorization_details);
    clashes(
        r,
        path,
        &parties,
        &consent,
        &authorization_details,
        &headers,
    );
    plain_http(r, m, path, upstream.as_ref(), altinn_exchange.as_ref());
    let (allow, api_keys, api_key_header) =
        callers(r, m, path, base, &headers, (&parties, &consent));
    let t = transport(r, m, path, base, cx.egress_proxy);
    Some(RouteConfig {
        name: name?,
        prefix: prefix?,
        upstream: upstream?,
        client: client?,
        scopes: scopes?,
        consumer_org: parties.consumer_org,
        consumer_orgs: parties.consumer_orgs,
        consumer_org_header: parties.consumer_org_header,
        systemuser: parties.systemuser,
        systemusers: parties.systemusers,
        systemuser_org_header: parties.systemuser_org_header,
        resource,
        authorization_details,
        headers,
        timeout: t.timeout,
        ca_file: t.ca_file,
        altinn_exchange,
        retry_on_401: t.retry_on_401,
        retry_body_max_bytes: t.retry_body_max_bytes,
        allow,
        api_keys,
        api_key_header,
        max_body_bytes: t.max_body_bytes,
        connect_timeout: t.connect_timeout,
        idle_timeout: t.idle_timeout,
        proxy: t.proxy,
        upstream_http2: t.upstream_http2,
        min_body_rate: t.min_body_rate,
        body_rate_grace: t.body_rate_grace,
        body_deadline: t.body_deadline,
        forward_caller_address: t.forward_caller_address,
        consent,
        consent_tokens_max,
    })
}

/// Plain http:// to another machine only where the route says the network is trusted
/// (`insecure_http`): its upstream and its Altinn exchange.
fn plain_http(
    r: &mut Reader,
    m: &Map<String, Value>,
    path: &str,
    upstream: Option<&Uri>,
    altinn_exchange: Option<&AltinnExchange>,
) {
    let p = |k: &str| join(path, k);
    let insecure = r
        .boolean(m.get("insecure_http"), &p("insecure_http"))
        .unwrap_or(false);
    if let Some(u) = upstream {
        check_plain_http(r, u, &p("upstream"), insecure, "insecure_http");
    }
    if let Some(a) = altinn_exchange {
        if let Ok(u) = a.url.parse::<Uri>() {
            check_plain_http(r, &u, &p("altinn_exchange"), insecure, "insecure_http");
        }
    }
}

/// `c` when it names a declared client (loaded or not).
fn known_client(r: &mut Reader, c: String, clients: &[&str], path: &str) -> Option<String> {
    if clients.contains(&c.as_str()) {
        return Some(c);
    }
    let known = if clients.is_empty() {
        "none".to_string()
    } else {
        clients.join(", ")
    };
    r.issue(path, format!("unknown client \"{c}\" (known: {known})"));
    None
}

/// What two of a route's settings would each do alone: a system user both in
/// `authorization_details` and built from `systemuser_org(s)`, and a route header named like a
/// header portvakt removes (the party and consent headers).
fn clashes(
    r: &mut Reader,
    path: &str,
    parties: &Parties,
    consent: &ConsentRule,
    authorization_details: &[Value],
    headers: &[(HeaderName, Secret<HeaderValue>)],
) {
    let p = |k: &str| join(path, k);
    if parties.systemuser.is_some() || !parties.systemusers.is_empty() {
        if let Some(i) = authorization_details.iter().position(is_systemuser_detail) {
            r.issue(
                &index(&p("authorization_details"), i),
                "is a urn:altinn:systemuser entry, and systemuser_org or systemuser_orgs builds one too: keep one of them",
            );
        }
    }
    for (name, _) in headers {
        for (selector, field) in [
            (&parties.consumer_org_header, "consumer_org_header"),
            (&parties.systemuser_org_header, "systemuser_org_header"),
            (&consent.id_header, "consent_id_header"),
            (&consent.from_header, "consent_from_header"),
        ] {
            if name == selector {
                r.issue(
                    &join(&p("headers"), name.as_str()),
                    format!("is the route's {field}, which portvakt removes before forwarding"),
                );
            }
        }
    }
}

/// Who may call the route besides `inbound.allow`: its `allow`, its `api_keys` and the header they
/// come in, which may not clash with the route's own headers or its party headers.
fn callers(
    r: &mut Reader,
    m: &Map<String, Value>,
    path: &str,
    base: &Path,
    headers: &[(HeaderName, Secret<HeaderValue>)],
    (parties, consent): (&Parties, &ConsentRule),
) -> (Option<AllowList>, Vec<ApiKey>, HeaderName) {
    let p = |k: &str| join(path, k);
    let allow = allow_list(r, m.get("allow"), &p("allow"));
    let api_keys = api_keys(r, m.get("api_keys"), &p("api_keys"), base);
    let api_key_header = selector_header(
        r,
        m.get("api_key_header"),
        &p("api_key_header"),
        "portvakt-api-key",
    );
    if m.contains_key("api_key_header") && api_keys.is_empty() {
        r.issue(
            &p("api_key_header"),
            "goes with api_keys: list the keys callers must send",
        );
    }
    for (name, _) in headers {
        if *name == api_key_header && !api_keys.is_empty() {
            r.issue(
                &join(&p("headers"), name.as_str()),
                "is the route's api_key_header, which portvakt removes before forwarding",
            );
        }
    }
    if !api_keys.is_empty()
        && (api_key_header == parties.consumer_org_header
            || api_key_header == parties.systemuser_org_header)
    {
        r.issue(
            &p("api_key_header"),
            "is also a party header: pick another name",
        );
    }
    let consent_header = [&consent.id_header, &consent.from_header].contains(&&api_key_header);
    if !api_keys.is_empty() && consent_header {
        r.issue(
            &p("api_key_header"),
            "is also a consent header: pick another name",
        );
    }
    (allow, api_keys, api_key_header)
}

/// `tt02`, `prod`, or the URL of an exchange endpoint (its origin alone gets Altinn's path).
/// Altinn accepts only tokens from the matching Maskinporten: TT02 from test, prod from prod.
fn altinn_exchange(
    r: &mut Reader,
    s: &str,
    path: &str,
    environment: Option<Environment>,
) -> Option<AltinnExchange> {
    let (url, needs) = match s {
        "tt02" => (
            format!("{ALTINN_TT02}{ALTINN_EXCHANGE_PATH}"),
            Some(Environment::Test),
        ),
        "prod" => (
            format!("{ALTINN_PROD}{ALTINN_EXCHANGE_PATH}"),
            Some(Environment::Prod),
        ),
        url => {
            let uri = http_url(r, url, path)?;
            let full = if uri.path() == "/" && uri.query().is_none() {
                format!("{}/{ALTINN_EXCHANGE_PATH}", url.trim_end_matches('/'))
            } else {
                url.to_string()
            };
            (full, None)
        }
    };
    if let (Some(needs), Some(have)) = (needs, environment) {
        if needs != have {
            r.issue(
                path,
                format!(
                    "Altinn {s} accepts only tokens from Maskinporten {}, but maskinporten.environment is {}",
                    needs.as_str(),
                    have.as_str()
                ),
            );
            return None;
        }
    }
    Some(AltinnExchange {
        name: s.to_string(),
        url,
    })
}

fn prefix(r: &mut Reader, s: &str, path: &str) -> Option<String> {
    let bad = if !s.starts_with('/') {
        Some("must start with `/`")
    } else if s.contains(['?', '#', '%', '\\']) || s.chars().any(char::is_whitespace) {
        Some("must be a plain path: no query, fragment, percent-escapes, backslashes or spaces")
    } else if s.contains("//") || s.split('/').any(|seg| seg == "." || seg == "..") {
        Some("must not contain empty, `.` or `..` segments")
    } else {
        None
    };
    if let Some(why) = bad {
        r.issue(path, format!("`{s}` {why}"));
        return None;
    }
    let trimmed = s.trim_end_matches('/');
    Some(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

fn upstream(r: &mut Reader, s: &str, path: &str) -> Option<Uri> {
    let uri = http_url(r, s, path)?;
    if uri.query().is_some() {
        r.issue(
            path,
            format!("`{s}` must not have a query string: the caller's query is passed on"),
        );
        return None;
    }
    Some(uri)
}

fn scopes(r: &mut Reader, v: Option<&Value>, path: &str) -> Option<Vec<String>> {
    let Some(list) = r.string_list(v, path) else {
        if v.is_none() {
            r.issue(path, "is required: the Maskinporten scopes this route's token needs, e.g. [nav:forsikring/samtykke]");
        }
        return None;
    };
    if list.is_empty() {
        r.issue(path, "is empty: name at least one scope");
        return None;
    }
    let mut ok = true;
    for (i, s) in list.iter().enumerate() {
        if s.contains(char::is_whitespace) {
            r.issue(
                &index(path, i),
                format!("`{s}` has a space: list each scope as its own item"),
            );
            ok = false;
        }
    }
    ok.then_some(list)
}
